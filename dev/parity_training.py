"""Learning parity: numpy-bert and transformers trained side by side from the same start.

Our training (bert.py's BertForPreTraining with train.py's AdamW, clip_grad_norm and
learning_rate) must learn as transformers' BertForPreTraining does with
torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and get_linear_schedule_with_warmup.
This script:

1. builds a small BERT (2 layers, hidden 128, 2 heads, intermediate 512, dropout 0) with
   a WordPiece vocabulary trained on the corpus and exports it with bert.export_hf.
   transformers loads that directory, and the script checks that no weight is missing
   or unexpected and that every tensor is bit-identical to ours;
2. draws batches from data.PretrainingData on the shipped corpus and feeds each to both
   models (transformers gets labels of -100 everywhere except at the masked positions);
3. trains each for --steps steps with the same hyperparameters and the same no-decay rule
   (biases and LayerNorm weights). It compares the losses (total, MLM, NSP) and the
   learning rate at every step, the gradient of every parameter after the first backward
   pass, and the weights at the end.

Targets: at every step the relative difference of each loss is within --tolerance (1%)
and the learning rates are equal; the no-decay rule selects the same parameters; each
first-step gradient is within 1e-3 relative L2 difference; each weight tensor ends within
1e-2 relative L2 difference. The loss target alone is loose: Adam's eps at 1e-8 instead
of 1e-6, or weight decay on every parameter, changes the losses by less than 0.2% in 60
steps, so the exact checks on rates, decay rule, gradients and weights are what catch
such bugs. The step times of both sides are printed for information.

Imports: NumPy, torch and transformers (a dev check, never run by the tests), and
autograd.py, bert.py, data.py, tokenizer.py and train.py from the repository root. No
network access: transformers only reads the exported directory.
Run from anywhere (a few minutes on 2 cores with the defaults):

    python dev/parity_training.py [--steps 200] [--batch-size 16] [--max-seq-len 64]

Exit code 0 when every target is met, 1 when one is missed, 2 for usage errors.

Limitations:
- One configuration (small model, float32, CPU, dropout 0): dropout masks are drawn by
  different generators on each side, so training with dropout cannot be compared step by
  step.
- Gradient accumulation and --resume of train.py are not exercised here; the loop below
  repeats train.py's single-batch step.

Shapes: B batch, T sequence length, C hidden size, V vocabulary size, M masked positions.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bert  # noqa: E402
from bert import BertConfig, BertForPreTraining  # noqa: E402
from data import PretrainingData, read_documents, split_documents  # noqa: E402
from tokenizer import Tokenizer, train_vocab  # noqa: E402
from train import AdamW, batch_loss, clip_grad_norm, learning_rate  # noqa: E402

DEFAULT_CORPUS = ROOT / "wiki-vital-en.txt.gz"
# Relative L2 difference of a parameter's gradient (ours vs transformers) after the first
# backward pass above which it is reported as a mismatch. float32 sums in a different
# order differ by about 1e-6 relative, so 1e-3 only flags real errors.
GRADIENT_TOLERANCE = 1e-3
# Some gradients are zero in exact arithmetic: softmax ignores a shift that is the same
# for every key, so the key bias gets only rounding noise (about 1e-11) on both sides.
# Differences are therefore measured relative to at least this share of the global
# gradient norm.
GRADIENT_FLOOR = 1e-6
# Relative L2 difference of any weight tensor after the last step. Rounding alone gives
# about 1e-4 after 200 steps. An optimizer bug that the loss barely shows, such as Adam's
# eps at 1e-8 instead of 1e-6, gives about 0.7 after 60 steps.
WEIGHT_TOLERANCE = 1e-2


class SetupError(Exception):
    """The two sides cannot start from the same weights, so nothing can be compared."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train numpy-bert and transformers' BertForPreTraining from identical "
                    "weights on identical batches and compare the losses step by step.")
    add = parser.add_argument
    add("--steps", type=int, default=200, help="optimizer steps per side (default: 200)")
    add("--batch-size", type=int, default=16, help="sentence pairs per batch (default: 16)")
    add("--max-seq-len", type=int, default=64,
        help="tokens per pair, [CLS] and [SEP] included (default: 64)")
    add("--lr", type=float, default=5e-4, help="peak learning rate (default: 5e-4)")
    add("--warmup", type=int, default=20,
        help="warm-up steps, then linear decay to 0 at --steps (default: 20)")
    add("--weight-decay", type=float, default=0.01,
        help="AdamW decoupled weight decay, not on biases or LayerNorm weights "
             "(default: 0.01)")
    add("--num-layers", type=int, default=2, help="encoder layers (default: 2)")
    add("--hidden-size", type=int, default=128, help="hidden size C (default: 128)")
    add("--num-heads", type=int, default=2, help="attention heads (default: 2)")
    add("--intermediate-size", type=int, default=512,
        help="feed-forward size I (default: 512)")
    add("--vocab", type=Path, default=None,
        help="WordPiece vocab.txt to use, for example testdata/bert-base-uncased-vocab.txt "
             "(default: train one of --vocab-size tokens on the training documents)")
    add("--vocab-size", type=int, default=4096,
        help="tokens in the trained vocabulary (default: 4096)")
    add("--data", type=Path, default=DEFAULT_CORPUS,
        help=f"corpus file or folder (default: {DEFAULT_CORPUS.name} in the repository)")
    add("--seed", type=int, default=0,
        help="seed for the initial weights, pairs and masks (default: 0)")
    add("--threads", type=int, default=os.cpu_count(),
        help="torch threads (default: the CPU count, %(default)s); NumPy uses its BLAS "
             "library's own setting")
    add("--tolerance", type=float, default=0.01,
        help="maximum relative loss difference at any step, as a fraction (default: 0.01)")
    add("--every", type=int, default=10, help="print every N-th step (default: 10)")
    args = parser.parse_args(argv)

    for flag in ("steps", "batch_size", "threads", "every", "vocab_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} is invalid; "
                         "pass 1 or more")
    if not 0 <= args.warmup <= args.steps:
        parser.error(f"--warmup {args.warmup} is invalid; pass 0 to --steps ({args.steps})")
    if args.max_seq_len < 8:
        parser.error(f"--max-seq-len {args.max_seq_len} is too small; pass at least 8")
    if not args.data.exists():
        parser.error(f"--data {args.data} not found")
    if args.vocab is not None and not args.vocab.is_file():
        parser.error(f"--vocab {args.vocab} not found")
    return args


def blas_threads() -> str:
    """Describe NumPy's BLAS thread count, if threadpoolctl is installed to read it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in pools) or "none"


# ---------------------------------------------------------------------------- setup


def build_data(args) -> tuple:
    """Read the corpus, get a tokenizer, and return (tokenizer, PretrainingData)."""
    documents = read_documents(args.data)
    train_docs, _ = split_documents(documents)
    if args.vocab is not None:
        tokenizer = Tokenizer.from_file(args.vocab)
    else:
        texts = (sentence for document in train_docs for sentence in document)
        tokenizer = Tokenizer(train_vocab(texts, args.vocab_size))
    data = PretrainingData(train_docs, tokenizer, max_seq_length=args.max_seq_len,
                           seed=args.seed)
    return tokenizer, data


def take_batches(data: PretrainingData, batch_size: int, count: int) -> list:
    """Return the first `count` batches of epochs 0, 1, ... in training order."""
    batches, epoch = [], 0
    while len(batches) < count:
        batches.extend(data.batches(epoch, batch_size))
        epoch += 1
    return batches[:count]


def to_hf_inputs(batch) -> dict:
    """Convert a data.Batch to the keyword arguments of transformers' BertForPreTraining."""
    import torch

    B, T = batch.input_ids.shape
    # transformers scores every position and ignores label -100, so the flat masked
    # positions become a (B, T) label array.
    labels = np.full(B * T, -100, dtype=np.int64)
    labels[batch.mlm_positions] = batch.mlm_labels
    return {
        "input_ids": torch.from_numpy(batch.input_ids),
        "token_type_ids": torch.from_numpy(batch.token_type_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "labels": torch.from_numpy(labels.reshape(B, T)),
        "next_sentence_label": torch.from_numpy(batch.nsp_labels),
    }


def hf_no_decay(name: str) -> bool:
    """Tell whether a transformers parameter is exempt from weight decay.

    Biases and LayerNorm weights are, as in BERT and transformers' Trainer.
    """
    return "bias" in name or "LayerNorm.weight" in name


def load_reference(model, tokenizer, directory: Path):
    """Export our model, load it with transformers, and check both start identical."""
    from transformers import BertForPreTraining as HFBertForPreTraining

    bert.export_hf(model, tokenizer, directory)
    reference, info = HFBertForPreTraining.from_pretrained(
        directory, output_loading_info=True, local_files_only=True)
    problems = {key: value for key, value in info.items() if value}
    if problems:
        raise SetupError(f"transformers loaded {directory} with problems: {problems}")

    state = {name: tensor.detach().numpy()
             for name, tensor in reference.state_dict().items()}
    differing = [name for name, array in bert.hf_state_dict(model).items()
                 if not np.array_equal(state[name], array)]
    if differing:
        raise SetupError(f"weights differ after export: {differing[:5]}")
    # The tied decoder must be the word embedding matrix itself, not a copy.
    decoder = reference.cls.predictions.decoder.weight
    embeddings = reference.bert.embeddings.word_embeddings.weight
    if decoder.data_ptr() != embeddings.data_ptr():
        raise SetupError("transformers did not tie the MLM decoder to the word embeddings")
    return reference


# ---------------------------------------------------------------------------- training


class OurTrainer:
    """train.py's training step: forward, backward, clip_grad_norm(1.0), lr, AdamW step."""

    def __init__(self, model, args):
        self.model = model.train()
        self.args = args
        self.optimizer = AdamW(model.named_parameters(), args.lr, args.weight_decay)
        self.first_grads = None  # {Hugging Face name: gradient} after the first backward
        self.decays = {bert.hf_name(name): AdamW.decays(name)
                       for name, _ in model.named_parameters()}

    def step(self, batch) -> tuple:
        """Train on one batch; return (total, MLM, NSP loss, lr used, seconds)."""
        model, optimizer = self.model, self.optimizer
        t0 = time.perf_counter()
        model.zero_grad()
        loss, mlm_loss, nsp_loss, _, _ = batch_loss(model, batch)
        loss.backward()
        if self.first_grads is None:
            self.first_grads = {bert.hf_name(name): p.grad.copy()
                                for name, p in model.named_parameters()}
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.lr = learning_rate(optimizer.step_count, self.args.lr, self.args.warmup,
                                     self.args.steps)
        lr = optimizer.lr
        optimizer.step()
        seconds = time.perf_counter() - t0
        return loss.item(), mlm_loss.item(), nsp_loss.item(), lr, seconds


class ReferenceTrainer:
    """The same step with torch.optim.AdamW, clip_grad_norm_ and the linear schedule."""

    def __init__(self, model, args):
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.model = model.train()
        self.named = list(model.named_parameters())
        groups = [
            {"params": [p for n, p in self.named if not hf_no_decay(n)],
             "weight_decay": args.weight_decay},
            {"params": [p for n, p in self.named if hf_no_decay(n)], "weight_decay": 0.0},
        ]
        # betas and eps as train.py's AdamW (eps 1e-6 as BERT, not torch's default 1e-8).
        self.optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-6)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, args.warmup,
                                                         args.steps)
        self.first_grads = None
        self.decays = {n: not hf_no_decay(n) for n, _ in self.named}

    def step(self, batch) -> tuple:
        import torch
        import torch.nn.functional as F

        inputs = to_hf_inputs(batch)
        t0 = time.perf_counter()
        self.optimizer.zero_grad()
        out = self.model(**inputs)
        out.loss.backward()
        if self.first_grads is None:
            self.first_grads = {n: p.grad.detach().numpy().copy() for n, p in self.named}
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        seconds = time.perf_counter() - t0
        # The two parts of the loss, recomputed from the logits of the forward pass.
        with torch.no_grad():
            V = out.prediction_logits.shape[-1]
            mlm = F.cross_entropy(out.prediction_logits.reshape(-1, V),
                                  inputs["labels"].reshape(-1), ignore_index=-100)
            nsp = F.cross_entropy(out.seq_relationship_logits, inputs["next_sentence_label"])
        return out.loss.item(), mlm.item(), nsp.item(), lr, seconds


def train_both(ours: OurTrainer, theirs: ReferenceTrainer, batches) -> tuple:
    """Step both sides batch by batch, so both see the same load on a shared machine."""
    keys = ("total", "mlm", "nsp", "lr", "seconds")
    records = ({key: [] for key in keys}, {key: [] for key in keys})
    for batch in batches:
        for trainer, record in zip((ours, theirs), records):
            for key, value in zip(keys, trainer.step(batch)):
                record[key].append(value)
    return records


# ---------------------------------------------------------------------------- comparison


def compare_gradients(ours: dict, theirs: dict) -> list:
    """Compare first-step gradients by Hugging Face name, in our parameter order.

    Returns (name, relative L2 difference, max abs difference, norm of transformers'
    gradient) per parameter. The relative difference divides by the larger of that norm
    and GRADIENT_FLOOR times the global gradient norm. Our Linear weights are (in, out),
    so they are transposed to PyTorch's (out, in) first.
    """
    global_norm = math.sqrt(sum(float(np.vdot(g, g)) for g in theirs.values()))
    rows = []
    for name, grad in ours.items():
        reference = theirs[name].astype(np.float64)
        if grad.ndim == 2 and "embeddings" not in name:
            grad = grad.T
        norm = float(np.linalg.norm(reference))
        if grad.shape != reference.shape:
            rows.append((name, math.inf, math.inf, norm))
            continue
        difference = grad.astype(np.float64) - reference
        scale = max(norm, GRADIENT_FLOOR * global_norm)
        rows.append((name, float(np.linalg.norm(difference)) / scale,
                     float(np.abs(difference).max()), norm))
    return rows


def compare_weights(model, reference) -> tuple:
    """Return the max abs difference of all weights and the worst relative L2 difference.

    The relative difference skips tensors of norm below 1e-3 (the attention key biases,
    which only rounding noise moves), where it would measure noise.
    """
    state = {name: tensor.detach().numpy().astype(np.float64)
             for name, tensor in reference.state_dict().items()}
    max_abs, worst = 0.0, (0.0, "")
    for name, array in bert.hf_state_dict(model).items():
        difference = array - state[name]
        max_abs = max(max_abs, float(np.abs(difference).max()))
        norm = float(np.linalg.norm(state[name]))
        if norm >= 1e-3:
            worst = max(worst, (float(np.linalg.norm(difference)) / norm, name))
    return max_abs, worst


def relative_difference(ours: list, theirs: list) -> np.ndarray:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return np.abs(ours - theirs) / np.abs(theirs)


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    try:
        return run(args)
    except (OSError, ValueError, SetupError) as error:
        print(f"parity_training.py: error: {error}", file=sys.stderr)
        return 1


def run(args) -> int:
    """Set up both sides, train them and print the tables; return the exit code."""
    import torch

    t0 = time.perf_counter()
    tokenizer, data = build_data(args)
    batches = take_batches(data, args.batch_size, args.steps)
    print(f"data: {data.num_tokens:,} tokens, vocabulary {len(tokenizer):,}, "
          f"{len(batches)} batches of {args.batch_size} x up to {args.max_seq_len} tokens "
          f"(prepared in {time.perf_counter() - t0:.1f} s)")

    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads,
        intermediate_size=args.intermediate_size, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=args.max_seq_len,
        pad_token_id=tokenizer.pad_token_id)
    model = BertForPreTraining(config, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="parity_training_") as directory:
        reference = load_reference(model, tokenizer, Path(directory))
    parameters = sum(p.size for p in model.parameters())
    print(f"model: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, "
          f"dropout 0, {parameters:,} parameters; exported and loaded by transformers "
          f"with no missing or unexpected weights, all bit-identical")
    print(f"transformers attention: {reference.config._attn_implementation}; threads: torch "
          f"{torch.get_num_threads()}, NumPy BLAS {blas_threads()}")
    print(f"training: {args.steps} steps, AdamW lr {args.lr:g} (warm-up {args.warmup}, "
          f"linear decay), betas (0.9, 0.999), eps 1e-6, weight decay {args.weight_decay:g} "
          f"(not on biases and LayerNorm weights), gradient clipping at norm 1.0")

    our_trainer, reference_trainer = OurTrainer(model, args), ReferenceTrainer(reference, args)
    ours, theirs = train_both(our_trainer, reference_trainer, batches)

    # The no-decay rule must pick the same parameters on both sides.
    our_decays, reference_decays = our_trainer.decays, reference_trainer.decays
    decay_mismatch = [n for n in reference_decays
                      if n in our_decays and our_decays[n] != reference_decays[n]]
    missing = [n for n in our_decays if n not in reference_decays]

    # Per-step table.
    differences = {key: relative_difference(ours[key], theirs[key])
                   for key in ("total", "mlm", "nsp")}
    lr_difference = float(np.max(np.abs(np.subtract(ours["lr"], theirs["lr"]))))
    print()
    print("| step | lr       | total ours | total HF | MLM ours | MLM HF  | NSP ours | NSP HF "
          "| max rel diff |")
    print("|-----:|---------:|-----------:|---------:|---------:|--------:|---------:|-------:"
          "|-------------:|")
    for i in range(args.steps):
        step = i + 1
        if step != 1 and step % args.every and step != args.steps:
            continue
        worst = max(differences[key][i] for key in differences)
        print(f"| {step:4d} | {ours['lr'][i]:.2e} | {ours['total'][i]:10.4f} | "
              f"{theirs['total'][i]:8.4f} | {ours['mlm'][i]:8.4f} | {theirs['mlm'][i]:7.4f} | "
              f"{ours['nsp'][i]:8.4f} | {theirs['nsp'][i]:6.4f} | {100 * worst:11.4f}% |")

    # Gradients after the first backward pass, parameter by parameter.
    gradient_rows = compare_gradients(our_trainer.first_grads,
                                      reference_trainer.first_grads)
    worst_gradient = max(gradient_rows, key=lambda row: row[1])
    first_mismatch = next((row for row in gradient_rows if row[1] > GRADIENT_TOLERANCE), None)

    max_weight_difference, worst_weight = compare_weights(model, reference)

    # The first step of each side is left out: it includes one-time allocations.
    ours_seconds = np.array(ours["seconds"][1:] or ours["seconds"])
    theirs_seconds = np.array(theirs["seconds"][1:] or theirs["seconds"])
    print()
    print("| check | measured | target | result |")
    print("|---|---:|---|---|")
    rows = []
    for key, label in (("total", "total loss"), ("mlm", "MLM loss"), ("nsp", "NSP loss")):
        worst = float(differences[key].max())
        step = int(differences[key].argmax()) + 1
        rows.append((f"{label}: max relative difference (step {step})", f"{100 * worst:.1e}%",
                     f"<= {100 * args.tolerance:g}%", worst <= args.tolerance))
    rows.append(("learning rate: max abs difference", f"{lr_difference:.1e}", "<= 1e-12",
                 lr_difference <= 1e-12))
    rows.append(("no-decay rule: parameters that differ", f"{len(decay_mismatch) + len(missing)}",
                 "0", not decay_mismatch and not missing))
    rows.append((f"step-1 gradients: max relative L2 difference ({worst_gradient[0]})",
                 f"{worst_gradient[1]:.1e}", f"<= {GRADIENT_TOLERANCE:g}",
                 first_mismatch is None))
    rows.append((f"weights after {args.steps} steps: max relative L2 difference "
                 f"({worst_weight[1]})", f"{worst_weight[0]:.1e}", f"<= {WEIGHT_TOLERANCE:g}",
                 worst_weight[0] <= WEIGHT_TOLERANCE))
    rows.append((f"weights after {args.steps} steps: max abs difference",
                 f"{max_weight_difference:.1e}", "(information)", True))
    rows.append(("step time median, ours / transformers",
                 f"{1e3 * np.median(ours_seconds):.0f} / {1e3 * np.median(theirs_seconds):.0f} ms",
                 "(information)", True))
    rows.append(("step time mean, ours / transformers",
                 f"{1e3 * ours_seconds.mean():.0f} / {1e3 * theirs_seconds.mean():.0f} ms",
                 "(information)", True))
    for check, measured, target, passed in rows:
        print(f"| {check} | {measured} | {target} | {'pass' if passed else 'FAIL'} |")
    print(f"\nloss after {args.steps} steps: ours {ours['total'][-1]:.4f}, transformers "
          f"{theirs['total'][-1]:.4f} (start {ours['total'][0]:.4f})")

    if decay_mismatch or missing:
        print(f"no-decay rule differs for: {(decay_mismatch + missing)[:10]}")
    if first_mismatch is not None:
        name, relative, absolute, norm = first_mismatch
        print(f"first gradient mismatch after step 1, in our parameter order: {name}: "
              f"relative L2 difference {relative:.3e}, max abs difference {absolute:.3e}, "
              f"transformers' gradient norm {norm:.3e}")
    failed = [check for check, _, _, passed in rows if not passed]
    if failed:
        print(f"parity_training.py: {len(failed)} target(s) missed: {'; '.join(failed)}",
              file=sys.stderr)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
