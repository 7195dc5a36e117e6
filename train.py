"""Pre-train BERT from scratch: masked language modelling plus next sentence prediction.

    python train.py --epochs 3                    # the shipped corpus, the mini preset
    python train.py --resume bert_model.ckpt.npz  # continue a stopped run exactly
    python train.py --eval-only --model bert_model.npz --json

The loop reads and splits the corpus (data.py), trains a WordPiece vocabulary if none is
given (tokenizer.py) and builds BertForPreTraining (bert.py). Then every batch runs the
forward pass, the MLM + NSP loss, backward(), global-norm gradient clipping and an AdamW step,
with a linear warm-up then linear decay of the learning rate. Each epoch ends with a
validation pass and a checkpoint.

Two files come out. --out (bert_model.npz) is the model for infer.py: weights, config,
vocabulary and training metadata. The checkpoint (--checkpoint, default <out>.ckpt.npz) adds
the AdamW moments, the step and the random generator states, so --resume continues exactly
where a run stopped: the same weights as a run that never stopped.

Imports: NumPy, the standard library, autograd.py, tokenizer.py, bert.py, data.py.
Follows: Devlin et al. 2018 (BERT) for the objective; Loshchilov & Hutter 2019 for AdamW
with decoupled weight decay, implemented as torch.optim.AdamW does.

Limitations:
- One process, CPU only. It uses one thread per core, or as many as OPENBLAS_NUM_THREADS
  (or OMP_NUM_THREADS) requests, split by autograd.py while BLAS runs one thread.
- Ctrl-C saves at the last completed step: the interrupted step's work is redone on resume.
"""

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

# Run as a command, this script lets autograd split matrix products, attention and
# elementwise passes over its own threads: one per core, or as many as
# OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) requests. BLAS itself must then run one thread,
# which it reads from the environment when NumPy loads it, below. Imported as a module,
# the script changes nothing, and main() reads the variables as they are.
THREAD_REQUEST = None
if __name__ == "__main__":
    THREAD_REQUEST = {name: os.environ.get(name, "")
                      for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

import numpy as np  # noqa: E402  (after the lines above, which BLAS reads when it loads)

import autograd
import bert
from autograd import cross_entropy
from bert import BertConfig, BertForPreTraining
from data import PretrainingData, format_instance, read_documents, split_documents
from tokenizer import Tokenizer, VocabSizeError, train_vocab

ROOT = Path(__file__).resolve().parent
DEFAULT_CORPUS = ROOT / "wiki-vital-en.txt.gz"
DEFAULT_MODEL = ROOT / "bert_model.npz"


def _script_path() -> str:
    """Return this file's path as a resume hint should show it: relative to the current
    folder when it lies inside it, else absolute."""
    path = Path(__file__).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class UsageError(ValueError):
    """A bad flag or flag combination."""


# ---------------------------------------------------------------------------- optimizer


class AdamW:
    """Adam with decoupled weight decay, step for step as torch.optim.AdamW.

    Weight decay multiplies a weight by (1 - lr * weight_decay) before the Adam update,
    instead of adding weight_decay * w to the gradient, so it is not rescaled by Adam's
    per-weight step sizes. Biases, LayerNorm weights and the MLM output bias get no decay.
    """

    def __init__(self, named_parameters, lr: float, weight_decay: float,
                 betas=(0.9, 0.999), eps: float = 1e-6):
        self.named_parameters = list(named_parameters)
        self.lr = lr
        self.weight_decay = weight_decay
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step_count = 0
        self.m = {name: np.zeros_like(p.data) for name, p in self.named_parameters}
        self.v = {name: np.zeros_like(p.data) for name, p in self.named_parameters}

    @staticmethod
    def decays(name: str) -> bool:
        return not (name.endswith("bias") or "norm." in name)

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        correction1 = 1 - self.beta1 ** t
        correction2 = 1 - self.beta2 ** t
        for name, p in self.named_parameters:
            if p.grad is None:
                continue
            g, m, v = p.grad, self.m[name], self.v[name]
            if self.weight_decay and self.decays(name):
                p.data *= 1 - self.lr * self.weight_decay
            # m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2, in place.
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            denominator = np.sqrt(v) / math.sqrt(correction2)
            denominator += self.eps
            p.data -= (self.lr / correction1) * (m / denominator)

    def state_arrays(self) -> dict:
        arrays = {f"adam.m.{name}": m for name, m in self.m.items()}
        arrays.update({f"adam.v.{name}": v for name, v in self.v.items()})
        return arrays

    def load_state_arrays(self, arrays: dict, step_count: int, source: str) -> None:
        for name, _ in self.named_parameters:
            for moments, key in ((self.m, f"adam.m.{name}"), (self.v, f"adam.v.{name}")):
                if key not in arrays:
                    raise ValueError(f"{source}: checkpoint has no optimizer state {key}")
                moments[name][...] = arrays[key]
        self.step_count = step_count


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most max_norm.

    Returns the norm before clipping. The scale max_norm / (norm + 1e-6) matches
    torch.nn.utils.clip_grad_norm_.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for g in grads:
            g *= scale
    return norm


def learning_rate(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up from 0 over `warmup` steps, then linear decay to 0 at `total` steps.

    step counts optimizer steps already taken, as transformers' get_linear_schedule_with_warmup
    does, so the very first update uses lr 0 when warmup > 0.
    """
    if step < warmup:
        return base_lr * step / max(1, warmup)
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------------------- loss and eval


def batch_loss(model, batch):
    """Forward one batch; returns (total loss, MLM loss, NSP loss, MLM logits, NSP logits)."""
    mlm_logits, nsp_logits = model(batch.input_ids, batch.token_type_ids,
                                   batch.attention_mask, batch.mlm_positions)
    mlm_loss = cross_entropy(mlm_logits, batch.mlm_labels)
    nsp_loss = cross_entropy(nsp_logits, batch.nsp_labels)
    return mlm_loss + nsp_loss, mlm_loss, nsp_loss, mlm_logits, nsp_logits


def evaluate(model, batches) -> dict:
    """MLM loss, top-1/top-5 accuracy and perplexity, and NSP accuracy over batches."""
    was_training = model.training
    model.eval()
    mlm_loss_sum = top1 = top5 = nsp_correct = 0.0
    masked = pairs = 0
    with autograd.no_grad():
        for batch in batches:
            _, mlm_loss, _, mlm_logits, nsp_logits = batch_loss(model, batch)
            logits, labels = mlm_logits.data, batch.mlm_labels
            n = len(labels)
            mlm_loss_sum += mlm_loss.item() * n
            masked += n
            if n:
                best5 = np.argpartition(-logits, 4, axis=1)[:, :5] if logits.shape[1] > 5 \
                    else np.argsort(-logits, axis=1)
                top1 += float((logits.argmax(1) == labels).sum())
                top5 += float((best5 == labels[:, None]).any(1).sum())
            nsp_correct += float((nsp_logits.data.argmax(1) == batch.nsp_labels).sum())
            pairs += len(batch.nsp_labels)
    model.train(was_training)
    mlm_loss = mlm_loss_sum / max(1, masked)
    return {
        "mlm_loss": mlm_loss,
        "mlm_accuracy": top1 / max(1, masked),
        "mlm_top5_accuracy": top5 / max(1, masked),
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "nsp_accuracy": nsp_correct / max(1, pairs),
        "instances": pairs,
        "masked_tokens": masked,
    }


def format_metrics(metrics: dict) -> str:
    return (f"mlm loss {metrics['mlm_loss']:.4f} | mlm acc {100 * metrics['mlm_accuracy']:.2f}% "
            f"(top-5 {100 * metrics['mlm_top5_accuracy']:.2f}%) | perplexity "
            f"{metrics['perplexity']:.2f} | nsp acc {100 * metrics['nsp_accuracy']:.2f}% | "
            f"{metrics['instances']} instances")


def hardware_description() -> str:
    """CPU model and core count, as /proc/cpuinfo names them (Linux), for the metadata."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, NumPy {np.__version__}"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


# ---------------------------------------------------------------------------- command line


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and a pointer to --help, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(with_defaults: bool = True) -> argparse.ArgumentParser:
    """Build the command line parser.

    with_defaults=False leaves out every flag not given, so parsing with it returns only the
    flags a user typed, which --resume and --eval-only need to tell apart from defaults."""
    parser = ArgumentParser(
        prog="train.py",
        description="Pre-train BERT (MLM + NSP) on a text corpus and save bert_model.npz.",
        epilog="Threads: one per core, or as many as OPENBLAS_NUM_THREADS (or "
               "OMP_NUM_THREADS) requests, e.g. OPENBLAS_NUM_THREADS=1 python train.py.")

    def add(*names, default=None, **kwargs):
        parser.add_argument(*names, default=default if with_defaults else argparse.SUPPRESS,
                            **kwargs)

    add("--epochs", type=int, default=3,
        help="passes over the training documents (default: 3)")
    add("--data", nargs="+", default=[str(DEFAULT_CORPUS)], metavar="PATH",
        help="corpus files or folders: plain text or .gz, documents separated by blank lines "
             "(default: wiki-vital-en.txt.gz beside train.py)")
    add("--out", default="bert_model.npz",
        help="model file written at each epoch's end, replacing an existing one "
             "(default: bert_model.npz)")
    add("--checkpoint", default=None,
        help="training checkpoint (weights and optimizer state) written at each epoch's end "
             "and on Ctrl-C (default: --out with .ckpt.npz in place of .npz)")
    add("--model-size", default=None, choices=list(bert.PRESETS),
        help="size preset, layers/hidden: tiny 2/128, mini 4/256, small 4/512, medium "
             "8/512, base 12/768 (default: mini)")
    add("--num-layers", type=int, help="encoder layers (default: the preset's)")
    add("--hidden-size", type=int, help="hidden size (default: the preset's)")
    add("--num-heads", type=int,
        help="attention heads (default: about one per 64 of the chosen hidden size: the "
             "largest count up to hidden size // 64 that divides it, at least 1)")
    add("--intermediate-size", type=int,
        help="feed-forward size (default: 4 x the chosen hidden size)")
    add("--dropout", type=float, help="hidden and attention dropout probability (default: 0.1)")
    add("--vocab", help="WordPiece vocab.txt to use (default: train one on the corpus)")
    add("--vocab-size", type=int, default=8192,
        help="tokens in a newly trained vocabulary (default: 8192)")
    add("--batch-size", type=int, default=32, help="sentence pairs per batch (default: 32)")
    add("--max-seq-len", type=int, default=128,
        help="tokens per pair, [CLS] and [SEP] included (default: 128)")
    add("--lr", type=float, default=1e-3, help="peak learning rate (default: 0.001)")
    add("--warmup", type=float, default=0.05,
        help="warm-up length: optimizer steps, or a fraction of all steps if below 1 "
             "(default: 0.05)")
    add("--weight-decay", type=float, default=0.01,
        help="AdamW decoupled weight decay, not on biases or LayerNorm weights (default: 0.01)")
    add("--grad-accum", type=int, default=1,
        help="batches whose gradients are averaged into one optimizer step (default: 1)")
    add("--max-steps", type=int,
        help="optimizer steps in the whole run, in place of --epochs (default: none)")
    add("--stop-at", type=int,
        help="save a checkpoint and exit after this optimizer step; the schedule still spans "
             "the whole run, so --resume continues it (default: none)")
    add("--seed", type=int, default=0,
        help="seed of the initial weights, sentence pairs, masks and dropout (default: 0)")
    add("--resume", metavar="CHECKPOINT",
        help="continue the run saved in this .ckpt.npz file, with its settings; a larger "
             "--epochs or --max-steps extends it, --data gives the corpus's new place if it "
             "moved, --out and --checkpoint write elsewhere (default: start a new run)")
    add("--eval-only", action="store_true", default=False,
        help="evaluate --model on the validation documents of --data and exit")
    add("--eval-split", choices=("valid", "all"), default="valid",
        help="with --eval-only: the held-out documents of --data, or all (default: valid)")
    add("--model", default=str(DEFAULT_MODEL),
        help="with --eval-only: the model to evaluate (default: bert_model.npz beside "
             "train.py)")
    add("--json", action="store_true", default=False,
        help="with --eval-only: print one JSON object")
    add("--valid-fraction", type=float, default=0.02,
        help="share of documents held out for validation, chosen by a hash of their text "
             "(default: 0.02)")
    add("--log-every", type=int, default=20,
        help="optimizer steps between progress lines (default: 20)")
    add("--float16", action="store_true", default=False,
        help="store --out weights as float16: half the size, loads back as float32")
    add("--debug", action="store_true", default=False, help="show full tracebacks on errors")
    return parser


# Settings that --eval-only reads. check_args() rejects any other flag given with it.
EVAL_ONLY_SETTINGS = {"eval_only", "model", "data", "eval_split", "json", "valid_fraction",
                      "max_seq_len", "seed", "batch_size", "debug"}


def check_args(args, explicit: set) -> None:
    """Reject invalid flag values before any work starts, naming the flag and the fix."""
    # Flags that do not apply come first: their values do not matter.
    if args.resume and args.eval_only:
        raise UsageError("--resume and --eval-only do not combine; use --model to evaluate")
    training_flags = sorted(explicit - EVAL_ONLY_SETTINGS - {"resume"})
    if training_flags and args.eval_only:
        names = ", ".join("--" + name.replace("_", "-") for name in training_flags)
        verb, pronoun = ("applies", "it") if len(training_flags) == 1 else ("apply", "them")
        raise UsageError(f"{names} {verb} only to training; drop {pronoun} to evaluate with "
                         "--eval-only")
    eval_flags = sorted({"model", "json", "eval_split"} & explicit)
    if eval_flags and not args.eval_only:
        names = ", ".join("--" + name.replace("_", "-") for name in eval_flags)
        verb = "needs" if len(eval_flags) == 1 else "need"
        message = f"{names} {verb} --eval-only; add --eval-only to evaluate a model"
        if "model" in eval_flags:
            message += ("; to continue training a checkpoint, pass --resume CHECKPOINT "
                        "instead of --model")
        raise UsageError(message)
    positive = {"--epochs": args.epochs, "--batch-size": args.batch_size,
                "--max-seq-len": args.max_seq_len, "--grad-accum": args.grad_accum,
                "--log-every": args.log_every, "--vocab-size": args.vocab_size}
    for flag, value in positive.items():
        if value < 1:
            raise UsageError(f"{flag} {value} is invalid; pass a whole number of 1 or more")
    for flag, value in {"--max-steps": args.max_steps, "--stop-at": args.stop_at}.items():
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value} is invalid; pass a whole number of 1 or more")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} is invalid; pass a whole number of 0 or more")
    if {"epochs", "max_steps"} <= explicit:
        raise UsageError(f"--epochs {args.epochs} and --max-steps {args.max_steps} both set the "
                         "length of the run; pass only one of them")
    if args.stop_at is not None and args.max_steps is not None and args.stop_at > args.max_steps:
        raise UsageError(f"--stop-at {args.stop_at} is beyond --max-steps {args.max_steps}, so "
                         f"the run never reaches it; pass a --stop-at of {args.max_steps} or "
                         "less, or drop --stop-at")
    floats = {"--lr": args.lr, "--warmup": args.warmup, "--weight-decay": args.weight_decay,
              "--dropout": args.dropout, "--valid-fraction": args.valid_fraction}
    for flag, value in floats.items():
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{flag} {value} is invalid; pass a finite number")
    if not args.lr > 0:
        raise UsageError(f"--lr {args.lr} is invalid; pass a positive learning rate")
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup} is invalid; pass 0 or more")
    if args.warmup >= 1 and not args.warmup.is_integer():
        raise UsageError(f"--warmup {args.warmup} is invalid; pass a whole number of steps, "
                         "or a fraction of all steps below 1")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay {args.weight_decay} is invalid; pass 0 or more")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout {args.dropout} is invalid; pass a probability in [0, 1)")
    if not 0.0 < args.valid_fraction < 1.0:
        raise UsageError(f"--valid-fraction {args.valid_fraction} is invalid; pass 0 < f < 1")
    if args.max_seq_len < 8:
        raise UsageError(f"--max-seq-len {args.max_seq_len} is too small; pass at least 8")
    if args.max_seq_len > 512 and not (args.resume or args.eval_only):
        raise UsageError(f"--max-seq-len {args.max_seq_len} exceeds the 512 positions "
                         "(max_position_embeddings) of a new model; pass 512 or less")
    if args.resume and not Path(args.resume).exists():
        raise FileNotFoundError(f"--resume {args.resume}: checkpoint not found; pass the "
                                ".ckpt.npz file a training run wrote")
    if args.resume and Path(args.resume).is_dir():
        raise UsageError(f"--resume {args.resume} is a folder; pass the .ckpt.npz file a "
                         "training run wrote")
    # On --resume the checkpoint's vocabulary is used and --vocab is ignored.
    if args.vocab and not args.resume:
        vocab_file = Path(args.vocab)
        if vocab_file.is_dir():  # Tokenizer.from_file reads the vocab.txt inside a folder
            vocab_file = vocab_file / "vocab.txt"
        if not vocab_file.is_file():
            raise FileNotFoundError(f"--vocab {args.vocab}: {vocab_file} not found; pass a "
                                    "WordPiece vocab.txt, or drop --vocab to train one")
    if not args.eval_only:
        check_writable(Path(args.out), "--out")
        if args.checkpoint:
            check_writable(Path(args.checkpoint), "--checkpoint")
            if Path(args.checkpoint).resolve() == Path(args.out).resolve():
                raise UsageError(f"--checkpoint {args.checkpoint} is also the --out file, so the "
                                 "model would overwrite the checkpoint; give them different names")
    if not args.resume and not args.eval_only:
        # A new model's sizes are checked now, not after the vocabulary is trained.
        sizes = argparse.Namespace(**dict(vars(args), model_size=args.model_size or "mini",
                                          dropout=args.dropout or 0.0))
        try:
            config_from_args(sizes, args.vocab_size, 0)
        except ValueError as e:
            if "divisible" in str(e):
                raise UsageError(f"{e}; pass a --num-heads that divides the hidden size") from None
            raise UsageError(f"{e}; check --model-size, --num-layers, --hidden-size, "
                             "--num-heads and --intermediate-size") from None


def check_writable(path: Path, flag: str) -> None:
    """Fail now, not after hours of training, if path cannot be written."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name such as bert_model.npz")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist; create it first")
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write to folder {path.parent} "
                         f"({e.strerror}); choose another folder") from None


def checkpoint_path(args) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    out = Path(args.out)
    stem = out.name[:-len(".npz")] if out.name.endswith(".npz") else out.name
    return out.with_name(stem + ".ckpt.npz")


def usable_batches(data, epoch: int, args) -> int:
    """Batches of an epoch that fill whole optimizer steps (all of them without --grad-accum)."""
    count = data.num_batches(args.batch_size, epoch)
    return count - count % args.grad_accum or count


def load_corpus(paths, valid_fraction: float):
    documents = read_documents(paths)
    return split_documents(documents, valid_fraction)


def run_eval_only(args, explicit: set) -> int:
    """Print validation metrics of --model; settings not given come from its training run."""
    if not Path(args.model).exists():
        where = "" if Path(args.model).is_absolute() else f" in {Path.cwd()}"
        raise FileNotFoundError(f"--model {args.model} not found{where}; pass --model PATH, "
                                "a model file that train.py wrote")
    model, tokenizer, metadata, _ = bert.load_with_metadata(args.model)
    # The numbers stored with a model were measured with its training settings. Using them
    # unless a flag overrides them makes the evaluation reproduce those numbers.
    settings = metadata.get("settings", {})
    for key in ("max_seq_len", "seed", "valid_fraction"):
        if key in settings and key not in explicit:
            setattr(args, key, settings[key])
    if not isinstance(model, BertForPreTraining):
        raise UsageError(f"--model {args.model} has no pre-training heads to evaluate")
    if args.max_seq_len > model.config.max_position_embeddings:
        raise UsageError(
            f"--max-seq-len {args.max_seq_len} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}")
    trained = bert.trained_length(model.config, metadata)
    if args.max_seq_len > trained:
        print(f"note: --max-seq-len {args.max_seq_len} is longer than the {trained} tokens "
              "the model was trained on; its positions beyond them were never trained",
              file=sys.stderr)
    train_docs, valid_docs = load_corpus(args.data, args.valid_fraction)
    documents = valid_docs if args.eval_split == "valid" else train_docs + valid_docs
    data = PretrainingData(documents, tokenizer, max_seq_length=args.max_seq_len,
                           seed=args.seed)
    metrics = evaluate(model, data.batches(0, args.batch_size))
    if args.json:
        keys = ("mlm_accuracy", "mlm_top5_accuracy", "perplexity", "nsp_accuracy", "instances")
        print(json.dumps({k: metrics[k] for k in keys}))
    else:
        print(f"{args.model} on {args.eval_split} split of {' '.join(args.data)}: "
              f"{format_metrics(metrics)}")
    return 0


SIZE_FLAGS = {"model_size": "--model-size", "num_layers": "--num-layers",
              "hidden_size": "--hidden-size", "num_heads": "--num-heads",
              "intermediate_size": "--intermediate-size", "dropout": "--dropout"}


def config_from_args(args, vocab_size: int, pad_token_id: int) -> BertConfig:
    return BertConfig.from_preset(
        args.model_size, vocab_size=vocab_size, num_hidden_layers=args.num_layers,
        hidden_size=args.hidden_size, num_attention_heads=args.num_heads,
        intermediate_size=args.intermediate_size, hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout, pad_token_id=pad_token_id,
        max_position_embeddings=512)


def prepare_model(args, explicit: set):
    """Build a fresh model and tokenizer, or load them from the --resume checkpoint.

    Returns (model, tokenizer, checkpoint metadata or None, checkpoint arrays or None,
    training documents, validation documents). On --resume the run keeps the checkpoint's
    settings, output paths and model size; a larger --epochs or --max-steps extends it.
    """
    if not args.resume:
        args.model_size = args.model_size or "mini"
        args.dropout = 0.1 if args.dropout is None else args.dropout
        train_docs, valid_docs = load_corpus(args.data, args.valid_fraction)
        if args.vocab:
            tokenizer = Tokenizer.from_file(args.vocab)
        else:
            t0 = time.time()
            print(f"training a {args.vocab_size:,}-token WordPiece vocabulary on "
                  f"{len(train_docs):,} documents ...", flush=True)
            texts = (sentence for document in train_docs for sentence in document)
            try:
                tokenizer = Tokenizer(train_vocab(texts, args.vocab_size))
            except VocabSizeError as e:
                raise UsageError(f"--vocab-size {args.vocab_size} is smaller than the special "
                                 f"tokens plus the {e.alphabet_size}-entry alphabet of this "
                                 "corpus; pass a larger --vocab-size") from None
            print(f"  done in {time.time() - t0:.1f} s", flush=True)
            if len(tokenizer) < args.vocab_size:
                print(f"note: the corpus supports only {len(tokenizer):,} tokens, fewer than "
                      f"--vocab-size {args.vocab_size:,}")
        config = config_from_args(args, len(tokenizer), tokenizer.pad_token_id)
        model = BertForPreTraining(config, seed=args.seed)
        return model, tokenizer, None, None, train_docs, valid_docs

    model, tokenizer, state, extra = bert.load_npz(args.resume)
    if "optimizer_step" not in state:
        raise UsageError(f"--resume {args.resume} is a model file, not a training "
                         "checkpoint; pass the .ckpt.npz file")
    saved = state["args"]

    # The model size: given size flags must describe the checkpoint's model.
    given = {key: getattr(args, key) for key in SIZE_FLAGS if key in explicit}
    for key in SIZE_FLAGS:
        setattr(args, key, saved[key])
    if given:
        requested = config_from_args(argparse.Namespace(**dict(saved, **given)),
                                     model.config.vocab_size, model.config.pad_token_id)
        differences = [f"{name} {getattr(requested, name)} (checkpoint: {value})"
                       for name, value in model.config.to_dict().items()
                       if getattr(requested, name) != value]
        if differences:
            raise UsageError(f"--resume {args.resume} contains a model with another config: "
                             f"{', '.join(differences)}; drop those flags to continue "
                             "with the checkpoint's")

    # The run: the checkpoint's settings, except a longer (or shorter) schedule on request.
    # train() prints a note if the new schedule has another step count.
    for key in ("epochs", "max_steps"):
        if key not in explicit:
            setattr(args, key, saved[key])
    if "epochs" in explicit and "max_steps" not in explicit:
        # --epochs without --max-steps plans by epochs, even if the checkpoint's run used
        # --max-steps.
        args.max_steps = None
    # Where to write and how often to log may change on resume; the rest is the run's.
    for key in ("out", "checkpoint", "float16", "log_every"):
        if key not in explicit:
            setattr(args, key, saved[key])
    for key in ("batch_size", "max_seq_len", "lr", "warmup", "weight_decay", "grad_accum",
                "seed", "valid_fraction", "vocab", "vocab_size"):
        if key in explicit and getattr(args, key) != saved[key]:
            print(f"note: --{key.replace('_', '-')} {getattr(args, key)} is ignored; the "
                  f"checkpoint's run uses {saved[key]}")
        setattr(args, key, saved[key])
    # The corpus may have moved since: --data gives its new place.
    if "data" not in explicit:
        args.data = saved["data"]
        for path in args.data:
            if not Path(path).exists():
                raise UsageError(f"--resume {args.resume}: its run's corpus {path} no longer "
                                 "exists; pass --data with its new location")
    elif args.data != saved["data"]:
        print(f"note: --data replaces the checkpoint's {', '.join(saved['data'])}; the run "
              "continues as it would have only if the text is the same")
    train_docs, valid_docs = load_corpus(args.data, args.valid_fraction)
    return model, tokenizer, state, extra, train_docs, valid_docs


def check_stop_at(args, total_steps: int, completed_steps: int) -> None:
    """Reject a --stop-at that this run never reaches, before any step or write."""
    if args.stop_at is None:
        return
    if args.stop_at > total_steps:
        raise UsageError(f"--stop-at {args.stop_at} is beyond the {total_steps:,} steps this "
                         f"run plans; pass a step from {completed_steps + 1} to {total_steps}, "
                         "or drop --stop-at")
    if args.stop_at <= completed_steps:
        raise UsageError(f"--stop-at {args.stop_at} is not after step {completed_steps:,}, "
                         f"where --resume {args.resume} stopped; pass a step from "
                         f"{completed_steps + 1} to {total_steps}")


def print_plan_notes(args, explicit: set, state, total_steps: int, steps_per_epoch: int,
                     ckpt_path: Path, warmup: int) -> None:
    """Print notes on the schedule and on files that the run replaces."""
    if warmup >= total_steps:
        print(f"note: the warm-up of {warmup:,} steps is not shorter than the run's "
              f"{total_steps:,} steps, so the learning rate never reaches --lr {args.lr:g}; "
              "pass a smaller --warmup")
    if state is not None and {"epochs", "max_steps"} & explicit:
        planned_before = state.get("total_steps")
        flag = f"--max-steps {args.max_steps}" if args.max_steps else f"--epochs {args.epochs}"
        if planned_before is None:
            print(f"note: {flag} replaces the checkpoint's schedule; the learning-rate decay "
                  f"is re-planned over {total_steps:,} steps")
        elif planned_before != total_steps:
            print(f"note: {flag} changes the run from the checkpoint's {planned_before:,} "
                  f"steps to {total_steps:,}; the learning-rate decay is re-planned")

    # A resumed run writes the paths its checkpoint records, wherever the file now is.
    if (state is not None and not {"out", "checkpoint"} & explicit
            and ckpt_path.resolve() != Path(args.resume).resolve()):
        print(f"note: --resume {args.resume} is not the checkpoint path its run recorded, so "
              f"this run writes the model to {args.out} and checkpoints to {ckpt_path}, "
              "replacing any files there; to write elsewhere, pass --out and --checkpoint")

    if state is None and ckpt_path.exists():
        print(f"note: {ckpt_path} exists and is replaced by this run's first checkpoint; to "
              f"continue the run it holds instead, pass --resume {ckpt_path}")

    if state is None and Path(args.out).exists():
        first_write = min(steps_per_epoch, total_steps)
        when = "the run" if first_write == total_steps else "the first epoch"
        # --stop-at exits before the save at the end of its step's epoch, unless it is the
        # last step.
        if args.stop_at is not None and args.stop_at <= first_write < total_steps:
            print(f"note: {args.out} exists; this run stops at step {args.stop_at:,} and "
                  "leaves it, but a --resume of this run replaces it; to keep it, choose "
                  "another --out path")
        else:
            print(f"note: {args.out} exists and is replaced after step {first_write:,}, at "
                  f"the end of {when}; to keep it, choose another --out path")


def portable_settings(args) -> dict:
    """Return the settings for a model's metadata, with paths inside the current folder
    made relative to it.

    train() resolves every path, so that a checkpoint resumes from any folder. A model
    file travels, and its metadata should not carry the trainer's folders.
    """
    # The --eval-only settings play no part in training.
    settings = {key: value for key, value in vars(args).items()
                if key not in ("model", "json", "eval_split")}
    current_folder = Path.cwd()

    def portable(path):
        try:
            return str(Path(path).resolve().relative_to(current_folder))
        except ValueError:  # outside the current folder: keep it as it is
            return path

    for key in ("out", "checkpoint", "resume", "vocab"):
        if settings.get(key):
            settings[key] = portable(settings[key])
    settings["data"] = [portable(path) for path in settings.get("data") or []]
    return settings


def train(args, explicit: set) -> int:
    started = time.time()
    # Every step frees and reallocates the same activation buffers. Keeping the freed
    # memory mapped avoids page faults, which otherwise cost a third of a layer's time.
    autograd.reuse_freed_memory()
    # Absolute paths, so that --resume works from any folder.
    args.data = [str(Path(p).resolve()) for p in args.data]
    args.out = str(Path(args.out).resolve())
    if args.checkpoint:
        args.checkpoint = str(Path(args.checkpoint).resolve())

    # 1. Model, tokenizer and optimizer state: fresh or from a checkpoint.
    model, tokenizer, state, extra, train_docs, valid_docs = prepare_model(args, explicit)
    ckpt_path = checkpoint_path(args)
    if state is not None:  # the paths a checkpoint records may no longer be writable
        for path, flag in ((Path(args.out), "--out"), (ckpt_path, "--checkpoint")):
            try:
                check_writable(path, flag)
            except UsageError as e:
                raise UsageError(f"{e} (the path that --resume {args.resume} records; pass "
                                 f"{flag} to write elsewhere)") from None
    config = model.config
    if args.max_seq_len > config.max_position_embeddings:
        raise UsageError(f"--max-seq-len {args.max_seq_len} exceeds the model's "
                         f"max_position_embeddings {config.max_position_embeddings}")

    # 2. Data: pairs and masks are drawn per epoch from (seed, epoch) alone.
    t0 = time.time()
    train_data = PretrainingData(train_docs, tokenizer, max_seq_length=args.max_seq_len,
                                 seed=args.seed)
    valid_data = PretrainingData(valid_docs, tokenizer, max_seq_length=args.max_seq_len,
                                 seed=args.seed)
    valid_batches = valid_data.batches(0, args.batch_size)
    # Pairs are drawn again every epoch, so the batch count varies a little by epoch.
    batches_per_epoch = train_data.num_batches(args.batch_size, 0)
    steps_per_epoch = max(1, batches_per_epoch // args.grad_accum)
    if args.max_steps:
        total_steps = args.max_steps
        # One spare epoch: later epochs may have a few batches fewer than the first.
        epochs = math.ceil(total_steps / steps_per_epoch) + 1
    else:
        epochs = args.epochs
        total_steps = sum(max(1, train_data.num_batches(args.batch_size, e) // args.grad_accum)
                          for e in range(epochs))
    warmup = int(args.warmup * total_steps) if args.warmup < 1 else int(args.warmup)
    print(f"data: {len(train_docs):,} training and {len(valid_docs):,} validation documents, "
          f"{train_data.num_tokens:,} tokens, {batches_per_epoch:,} batches per epoch "
          f"(prepared in {time.time() - t0:.1f} s)", flush=True)

    optimizer = AdamW(model.named_parameters(), args.lr, args.weight_decay)
    autograd.manual_seed(args.seed)
    epoch, batch_index = 0, 0
    if state is not None:
        optimizer.load_state_arrays(extra, state["optimizer_step"], args.resume)
        autograd.set_rng_state(state["rng_state"])
        epoch, batch_index = state["epoch"], state["batch_index"]
        if optimizer.step_count > total_steps:
            raise UsageError(f"--resume {args.resume} already completed "
                             f"{optimizer.step_count:,} steps, more than the {total_steps:,} "
                             f"planned; pass --max-steps above {optimizer.step_count} to "
                             "train longer")
        if optimizer.step_count == total_steps:
            print(f"nothing to do: {args.resume} already completed {optimizer.step_count:,} "
                  f"of {total_steps:,} steps; pass a larger --epochs or --max-steps to train "
                  "longer")
            return 0
    check_stop_at(args, total_steps, optimizer.step_count)

    # 3. What is about to happen, so a log explains itself.
    parameter_count = sum(p.size for p in model.parameters())
    print(f"settings: {json.dumps(vars(args), sort_keys=True)}")
    threads = autograd.get_num_threads()
    if threads > 1 and not autograd.products_use_threads():
        print(f"threads: {threads} for elementwise passes, BLAS's own for products")
    else:
        print(f"threads: {threads}")
    print(f"model: {args.model_size} preset, {config.num_hidden_layers} layers, hidden "
          f"{config.hidden_size}, {config.num_attention_heads} heads, intermediate "
          f"{config.intermediate_size}, vocabulary {config.vocab_size:,}; "
          f"{parameter_count:,} parameters")
    planned_epochs = total_steps / steps_per_epoch if args.max_steps else epochs
    # The epoch count that progress lines show: the loop may plan one spare epoch.
    shown_epochs = math.ceil(planned_epochs)
    print(f"schedule: {total_steps:,} steps over {planned_epochs:.3g} epochs, warm-up "
          f"{warmup} steps, "
          f"peak lr {args.lr:g}, up to {args.batch_size * args.grad_accum * args.max_seq_len:,} "
          f"tokens per step")
    print(f"writing the model to {args.out} and checkpoints to {ckpt_path}")
    print_plan_notes(args, explicit, state, total_steps, steps_per_epoch, ckpt_path, warmup)
    if state is None:
        sample = train_data.instances(0)
        print("the first training instances ({input→label} marks a masked position):")
        for i in range(min(2, len(sample))):
            print(format_instance(sample, i, tokenizer))
    else:
        print(f"resuming at epoch {epoch + 1}, step {optimizer.step_count}")
    sys.stdout.flush()

    def save_checkpoint():
        metadata = {"optimizer_step": optimizer.step_count, "epoch": epoch,
                    "batch_index": batch_index, "rng_state": autograd.get_rng_state(), "args": vars(args),
                    "total_steps": total_steps}
        bert.save(model, tokenizer, ckpt_path, metadata=metadata,
                  extra=optimizer.state_arrays())

    def save_model(metrics):
        metadata = {
            "command": "python train.py " + " ".join(sys.argv[1:]),
            "model_size": args.model_size, "steps": optimizer.step_count,
            "epochs_completed": epoch, "train_seconds": round(time.time() - started, 1),
            "hardware": hardware_description(), "settings": portable_settings(args),
            "numpy": np.__version__, "validation": metrics, "seed": args.seed,
        }
        bert.save(model, tokenizer, args.out, metadata=metadata, float16=args.float16)

    # 4. The loop. Ctrl-C only sets a flag, so the step in progress finishes and the
    # checkpoint is consistent; a second Ctrl-C aborts at once without saving.
    interrupted = []

    def on_interrupt(signum, frame):
        interrupted.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: stopping after this step (press again to abort without saving)",
              file=sys.stderr, flush=True)

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    model.train()
    tokens_per_step = args.batch_size * args.grad_accum * args.max_seq_len
    window_start, window_tokens, window_steps = time.time(), 0, 0
    log = {"loss": 0.0, "mlm": 0.0, "nsp": 0.0, "correct": 0, "masked": 0}
    try:
        while epoch < epochs and optimizer.step_count < total_steps:
            batches = train_data.batches(epoch, args.batch_size)
            usable = usable_batches(train_data, epoch, args)
            while batch_index < usable and optimizer.step_count < total_steps:
                if interrupted:
                    save_checkpoint()
                    print(f"interrupted: saved step {optimizer.step_count} to {ckpt_path}; "
                          f"resume with python {_script_path()} --resume {ckpt_path}",
                          file=sys.stderr)
                    return 130
                model.zero_grad()
                group = batches[batch_index:batch_index + args.grad_accum]
                # The step's loss is the mean over its batches. A group has fewer batches
                # than --grad-accum only in an epoch with fewer batches than that.
                scale = 1.0 / len(group)
                for micro in group:
                    loss, mlm_loss, nsp_loss, mlm_logits, _ = batch_loss(model, micro)
                    if not math.isfinite(loss.item()):
                        print(f"train.py: error: the loss became {loss.item()} at step "
                              f"{optimizer.step_count + 1}; the last good checkpoint is "
                              f"{ckpt_path} (if one was written). Lower --lr or raise "
                              f"--warmup.", file=sys.stderr)
                        return 1
                    (loss * scale).backward()
                    log["loss"] += loss.item() * scale
                    log["mlm"] += mlm_loss.item() * scale
                    log["nsp"] += nsp_loss.item() * scale
                    log["correct"] += int((mlm_logits.data.argmax(1) == micro.mlm_labels).sum())
                    log["masked"] += len(micro.mlm_labels)
                    window_tokens += micro.num_tokens
                clip_grad_norm(model.parameters(), 1.0)
                optimizer.lr = learning_rate(optimizer.step_count, args.lr, warmup, total_steps)
                optimizer.step()
                batch_index += args.grad_accum
                window_steps += 1

                step = optimizer.step_count
                if step % args.log_every == 0 or step == total_steps:
                    now = time.time()
                    elapsed = now - started
                    ms = 1000 * (now - window_start) / window_steps
                    eta = (total_steps - step) * ms / 1000
                    print(f"epoch {epoch + 1}/{shown_epochs} | step {step}/{total_steps} | loss "
                          f"{log['loss'] / window_steps:.4f} (mlm {log['mlm'] / window_steps:.4f}"
                          f", nsp {log['nsp'] / window_steps:.4f}) | mlm acc "
                          f"{100 * log['correct'] / max(1, log['masked']):.1f}% | lr "
                          f"{optimizer.lr:.2e} | {ms:.0f} ms/step | "
                          f"{window_tokens / (now - window_start):,.0f} tok/s | elapsed "
                          f"{format_duration(elapsed)} | eta {format_duration(eta)}",
                          flush=True)
                    window_start, window_tokens, window_steps = now, 0, 0
                    log = dict.fromkeys(log, 0)
                # At the last step, the end of the run below writes both files instead.
                if args.stop_at is not None and args.stop_at <= step < total_steps:
                    save_checkpoint()
                    print(f"stopped after step {step} (--stop-at); resume with "
                          f"python {_script_path()} --resume {ckpt_path}")
                    return 0

            # End of an epoch (or of the step budget): validate and save both files.
            if batch_index >= usable:
                epoch, batch_index = epoch + 1, 0
            metrics = evaluate(model, valid_batches)
            where = f"end of epoch {epoch}" if batch_index == 0 else f"in epoch {epoch + 1}"
            print(f"validation at step {optimizer.step_count} ({where}): "
                  f"{format_metrics(metrics)}", flush=True)
            save_checkpoint()
            save_model(metrics)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    print(f"done in {format_duration(time.time() - started)}: model in {args.out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    autograd.set_num_threads(autograd.thread_count(THREAD_REQUEST))
    explicit = set(vars(build_parser(with_defaults=False).parse_args(argv)))
    try:
        check_args(args, explicit)
        if args.eval_only:
            return run_eval_only(args, explicit)
        return train(args, explicit)
    except (ValueError, FileNotFoundError) as e:
        # Bad flags and bad input files (missing, empty, corrupt): the user can fix them.
        if args.debug:
            raise
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if args.debug:
            raise
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
