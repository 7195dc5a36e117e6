"""Fill masks and compute sentence embeddings with a BERT model, from the command line.

Fill-mask: every [MASK] in a text is predicted by the MLM head. For each mask the script
prints the top-k tokens with their probabilities (softmax over the whole vocabulary) and
the sentence with that token filled in, then the sentence with the best token in every
mask. "[mask]" is accepted in any letter case. Several texts may be given as arguments,
and "-" reads one text per line from stdin. Texts run in padded batches, sorted by length
so that a batch carries little padding.

Embeddings (--embed): one vector per text, the mean of the last hidden state over the real
tokens (padding excluded by the attention mask). With --normalize the vector is scaled to
unit L2 length. For all-MiniLM-L6-v2 this is the embedding sentence-transformers computes
(Transformer, mean Pooling, Normalize), and the max_seq_length of its
sentence_bert_config.json is honoured.

Imports: NumPy, the standard library, autograd.py, bert.py and (through bert.py)
tokenizer.py.
Run:
    python infer.py "the [MASK] sat on the mat."
    python infer.py --top-k 3 --json "a [mask] and a [mask]." "the sun is [MASK]."
    cat sentences.txt | python infer.py --embed --normalize --model hf_dir/ -
Follows: the output fields of transformers' fill-mask pipeline (score, token, token_str,
sequence) and the mean pooling of sentence-transformers.

Output format:
- --json in fill-mask mode prints a list with one entry per text, each a list with one
  entry per [MASK] (in text order), each a list of top-k {score, token, token_str,
  sequence} dicts, sorted by score, highest first. The nesting is always three deep:
  unlike the transformers pipeline, a single text with a single mask is not flattened.
- token_str is the decoded single token, so a continuation piece keeps its '##' prefix.
- sequence is the decoded text with that one mask filled. For a text with one [MASK],
  special tokens are dropped, as transformers does. For a text with several [MASK]s, the
  other masks stay visible as [MASK] (transformers then keeps [CLS] and [SEP] too; this
  script drops them).
- --json with --embed prints a list of lists of floats. Plain --embed output is one line
  per text with the numbers separated by spaces. Numbers are the shortest decimal form
  that reads back as the same float32.

Exit codes: 0 success; 2 usage errors and bad input (bad option, empty text, no [MASK],
masks too far apart, encoder-only model in fill-mask mode, model path not found, a damaged
or foreign model file); 1 other failures (a disk error, an unexpected error); 130 Ctrl-C.
Each error is one line on stderr, and --debug shows the traceback instead.

Limitations:
- Blank lines on stdin are skipped (with one warning that counts them), so the output has
  one entry per non-blank line, not per input line.
- A text longer than the model reads is cut to a window ([CLS] and [SEP] included) of the
  length the model was trained on, which train.py records in the model (128 tokens for the
  shipped model: positions beyond it were never trained) and a Hugging Face folder gives as
  model_max_length, or else of max_position_embeddings tokens. In fill-mask mode the window is centred on the span of
  the masks, and if the masks span more than the window the text is rejected. In --embed
  mode the start of the text is kept. The printed sequence is that of the window.
- All texts are read and checked before the first forward pass, and results are printed
  when every batch is done, so stdin input is held in memory as a whole.
- Single texts only: no sentence pairs (token_type_ids are all 0).

Shapes: B batch, T sequence length (longest text in the batch + 2), C hidden size,
V vocabulary size, M masks in a batch, N texts.
"""

import argparse
import json
import os
import re
import sys
import traceback
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
from autograd import no_grad

DEFAULT_MODEL = Path(__file__).resolve().parent / "bert_model.npz"
DEFAULT_TOP_K = 5
# 64 short sentences (about 1500 tokens) per pass keep the matrix products large enough
# for BLAS to run near full speed: on a mini-size model (4 layers, hidden 256) on 2 shared
# cores, 64 gave about 1.5 times the sentences per second of 32, and 128 no more than 64.
DEFAULT_BATCH_SIZE = 64
# A cap on B * T, so that batches of long texts stay small: attention probabilities take
# B * H * T * T floats, 800 MB for 64 texts of 512 tokens with 12 heads.
MAX_BATCH_TOKENS = 8192

# "[mask]", "[Mask]", ... become the tokenizer's [MASK], which it matches case-sensitively.
MASK_PATTERN = re.compile(r"\[mask\]", re.IGNORECASE)
MASK = "[MASK]"


class UsageError(ValueError):
    """A problem with the command line or the input texts (exit code 2)."""


# ---------------------------------------------------------------------------- input texts


def normalize_masks(text: str) -> str:
    """Write every "[mask]" in any letter case as "[MASK]"."""
    return MASK_PATTERN.sub(MASK, text)


def read_stdin_lines(stream) -> tuple[list[str], list[str]]:
    """Read one text per line; return the texts and labels ("stdin line 3") for messages.

    Blank lines are skipped with one warning, so a trailing newline or a spacing line in a
    file does not stop a batch job.
    """
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise UsageError(
                f"stdin is not valid UTF-8 (byte {e.start}); convert the input to UTF-8"
            ) from None
    # Split on "\n" only: str.splitlines() would also split on form feeds and U+2028.
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    texts, labels, blank = [], [], 0
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            blank += 1
            continue
        texts.append(line)
        labels.append(f"stdin line {number}")
    if not texts:
        raise UsageError(f"stdin contains no text ({blank} blank lines); give one text per line")
    if blank:
        warn(f"skipped {blank} blank line{'s' if blank > 1 else ''} on stdin")
    return texts, labels


def collect_texts(arguments: list[str], stdin) -> tuple[list[str], list[str]]:
    """Return the texts of the command line, with "-" replaced by the lines of stdin."""
    if not arguments:
        raise UsageError("no text given; pass one or more texts, or - to read them from stdin")
    if arguments.count("-") > 1:
        raise UsageError("- appears more than once; stdin can be read only once")
    texts, labels = [], []
    for position, argument in enumerate(arguments, start=1):
        if argument == "-":
            stdin_texts, stdin_labels = read_stdin_lines(stdin)
            texts += stdin_texts
            labels += stdin_labels
        else:
            try:
                argument.encode("utf-8")
            except UnicodeEncodeError as e:
                # Python keeps bytes of the command line that are not UTF-8 as lone surrogates.
                raise UsageError(f"text {position} is not valid UTF-8 (character {e.start}); "
                                 "pass UTF-8 text") from None
            texts.append(argument)
            labels.append(f"text {position}")
    return texts, labels


def check_texts(texts: list[str], labels: list[str], fill_mask: bool) -> list[str]:
    """Reject empty texts and, in fill-mask mode, texts without [MASK]; return them normalized."""
    checked = []
    for text, label in zip(texts, labels):
        if not text.strip():
            raise UsageError(f"{label} is empty; give a text with at least one word")
        if fill_mask:
            text = normalize_masks(text)
            if MASK not in text:
                raise UsageError(
                    f"{label} has no [MASK] to fill: {shorten(text)}; put [MASK] where a "
                    "word should be predicted, or use --embed for sentence embeddings"
                )
        checked.append(text)
    return checked


def shorten(text: str, limit: int = 60) -> str:
    """Quote a text for a message, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def warn(message: str) -> None:
    print(f"infer.py: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- the model


def load_model(path: Path) -> tuple:
    """Load (model, tokenizer, max_tokens) from a .npz file or a Hugging Face directory.

    max_tokens is the longest input the model reads, [CLS] and [SEP] included: the length
    it was trained on (bert.trained_length), or a smaller max_seq_length from a
    sentence-transformers sentence_bert_config.json beside the weights.
    """
    if not path.exists():
        raise FileNotFoundError(
            f"model {path} not found; pass --model with a numpy-bert .npz file or a Hugging "
            "Face BERT directory (train.py makes bert_model.npz)"
        )
    model, tokenizer, metadata, _ = bert.load_with_metadata(path)
    max_tokens = bert.trained_length(model.config, metadata)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"{path}: the vocabulary has {len(tokenizer)} tokens but the model only "
            f"{model.config.vocab_size} embeddings; the vocabulary does not belong to the model"
        )

    sentence_config = path / "sentence_bert_config.json" if path.is_dir() else None
    if sentence_config is not None and sentence_config.is_file():
        try:
            values = json.loads(sentence_config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{sentence_config}: not valid JSON ({e})") from None
        max_seq_length = values.get("max_seq_length") if isinstance(values, dict) else None
        # Room for [CLS], [SEP] and one token; a smaller value would leave no text.
        if isinstance(max_seq_length, int) and max_seq_length >= 3:
            max_tokens = min(max_tokens, max_seq_length)
    return model, tokenizer, max_tokens


def encoder_of(model):
    """Return the BertModel inside a model (the model itself when it is one)."""
    return model.bert if isinstance(model, bert.BertForPreTraining) else model


# ---------------------------------------------------------------------------- windows


def mask_window(ids: list[int], mask_id: int, budget: int, label: str) -> tuple[int, int]:
    """Return [start, end) of at most `budget` tokens, centred on the span of the masks."""
    n = len(ids)
    if n <= budget:
        return 0, n
    positions = [i for i, token in enumerate(ids) if token == mask_id]
    first, last = positions[0], positions[-1]
    span = last - first + 1
    if span > budget:
        raise UsageError(
            f"{label}: its [MASK]s span {span} tokens, more than the {budget} the model "
            f"reads at once ({budget + 2} positions with [CLS] and [SEP]); split the text"
        )
    # Equal context on both sides of the masks, moved inward where the text ends.
    start = first - (budget - span) // 2
    start = max(0, min(start, n - budget))
    return start, start + budget


def truncate(rows: list[list[int]], labels: list[str], budget: int, mask_id) -> list:
    """Cut each row to `budget` tokens; in fill-mask mode (mask_id set) keep every mask."""
    out = []
    for ids, label in zip(rows, labels):
        if len(ids) <= budget:
            out.append(ids)
            continue
        if mask_id is None:
            start, end = 0, budget
        else:
            start, end = mask_window(ids, mask_id, budget, label)
        warn(
            f"{label} has {len(ids)} tokens, more than the model's {budget} (plus [CLS] and "
            f"[SEP]); using tokens {start + 1} to {end}"
        )
        out.append(ids[start:end])
    return out


def tokenize(tokenizer, texts: list[str], labels: list[str], max_tokens: int,
             fill_mask: bool) -> list[list[int]]:
    """Return each text's token ids without [CLS]/[SEP], cut to fit the model."""
    rows = [tokenizer.text_to_ids(text) for text in texts]
    for ids, label in zip(rows, labels):
        if not ids:
            raise UsageError(f"{label} has no tokens (only control characters or spaces)")
    mask_id = tokenizer.mask_token_id if fill_mask else None
    return truncate(rows, labels, max_tokens - 2, mask_id)


def batch_order(rows: list[list[int]], batch_size: int) -> list[list[int]]:
    """Split text indices into batches of similar length, so padding stays small.

    A batch has at most batch_size texts and at most MAX_BATCH_TOKENS padded tokens
    ([CLS] and [SEP] included), but always at least one text.
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    batches, batch = [], []
    for index in order:
        # Rows come shortest first, so this row sets the padded length T of the batch.
        T = len(rows[index]) + 2
        if batch and (len(batch) == batch_size or (len(batch) + 1) * T > MAX_BATCH_TOKENS):
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


def pad_batch(rows: list[list[int]], tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Add [CLS] and [SEP] and right-pad; return ids and attention mask, both (B, T) int64."""
    T = max(len(ids) for ids in rows) + 2
    input_ids = np.full((len(rows), T), tokenizer.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), T), dtype=np.int64)
    for b, ids in enumerate(rows):
        n = len(ids) + 2
        input_ids[b, :n] = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
        attention_mask[b, :n] = 1
    return input_ids, attention_mask


# ---------------------------------------------------------------------------- fill-mask


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, so small probabilities keep their digits."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the k largest (M, k) probabilities and their (M, k) token ids, highest first."""
    V = probs.shape[-1]
    if k < V:
        # argpartition finds the k largest in O(V) per row without ordering them, so only
        # those k are sorted.
        ids = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    else:
        ids = np.broadcast_to(np.arange(V), probs.shape)
    picked = np.take_along_axis(probs, ids, axis=-1)
    order = np.argsort(-picked, axis=-1, kind="stable")
    return np.take_along_axis(picked, order, axis=-1), np.take_along_axis(ids, order, axis=-1)


def decode_filled(tokenizer, ids: list[int], fills: dict, single_mask: bool) -> str:
    """Decode a text's ids with the masks at positions `fills` replaced by their token ids.

    With one mask, all special tokens are dropped (transformers' fill-mask pipeline does the
    same). With several, only [CLS], [SEP] and [PAD] are, so unfilled masks stay visible.
    """
    ids = list(ids)
    for position, token_id in fills.items():
        ids[position] = token_id
    if single_mask:
        return tokenizer.decode(ids, skip_special_tokens=True)
    frame = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    return tokenizer.decode([i for i in ids if i not in frame], skip_special_tokens=False)


def predict_masks(model, tokenizer, rows: list[list[int]], k: int,
                  batch_size: int) -> list[list[list[dict]]]:
    """Return, per text, per [MASK], the top-k {score, token, token_str, sequence} dicts."""
    results = [None] * len(rows)
    mask_id = tokenizer.mask_token_id
    for batch in batch_order(rows, batch_size):
        input_ids, attention_mask = pad_batch([rows[i] for i in batch], tokenizer)
        # Flat indices into the B * T positions, in text order, so the MLM head runs on the
        # M masked positions only: (M, C) hidden states -> (M, V) logits.
        is_mask = input_ids == mask_id
        positions = np.flatnonzero(is_mask)
        with no_grad():
            logits, _ = model(input_ids, np.zeros_like(input_ids), attention_mask,
                              masked_positions=positions)
        if not np.isfinite(logits.data).all():
            raise ValueError("the model produced NaN or infinite logits; check its weights")
        # A vocab.txt may be shorter than the embedding table (rows added to round its
        # size): ids without a token are never predicted.
        scores, token_ids = top_k(softmax(logits.data)[:, :len(tokenizer)], k)

        counts = is_mask.sum(axis=1)
        row_starts = np.concatenate([[0], np.cumsum(counts)])
        for b, index in enumerate(batch):
            ids = rows[index]
            # Positions of the masks inside ids (without the leading [CLS]).
            mask_positions = [p - 1 for p in np.flatnonzero(is_mask[b])]
            per_mask = []
            for m, position in enumerate(mask_positions):
                row = row_starts[b] + m
                per_mask.append([
                    {
                        "score": float(score),
                        "token": int(token),
                        "token_str": tokenizer.decode([int(token)], skip_special_tokens=False),
                        "sequence": decode_filled(tokenizer, ids, {position: int(token)},
                                                  len(mask_positions) == 1),
                    }
                    for score, token in zip(scores[row], token_ids[row])
                ])
            results[index] = per_mask
    return results


def best_sequence(tokenizer, ids: list[int], per_mask: list[list[dict]]) -> str:
    """Decode the text with the highest-scoring token in every mask."""
    mask_positions = [p for p, token in enumerate(ids) if token == tokenizer.mask_token_id]
    fills = {p: guesses[0]["token"] for p, guesses in zip(mask_positions, per_mask)}
    return decode_filled(tokenizer, ids, fills, single_mask=True)


def format_fill_mask(text: str, per_mask: list[list[dict]], best: str) -> str:
    """Lay out one text's guesses: a block per mask, a line per guess, then the best text."""
    lines = [f"> {text}"]
    for m, guesses in enumerate(per_mask, start=1):
        lines.append(f"  [MASK] {m} of {len(per_mask)}:")
        width = max(len(g["token_str"]) for g in guesses)
        for g in guesses:
            lines.append(f"    {g['score']:.4f}  {g['token_str']:<{width}}  {g['sequence']}")
    lines.append(f"  best: {best}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- embeddings


def embed(model, tokenizer, rows: list[list[int]], batch_size: int,
          normalize: bool) -> np.ndarray:
    """Return (N, C) float32 sentence embeddings: the mean over real tokens of the last layer."""
    encoder = encoder_of(model)
    out = np.empty((len(rows), encoder.config.hidden_size), dtype=np.float32)
    for batch in batch_order(rows, batch_size):
        input_ids, attention_mask = pad_batch([rows[i] for i in batch], tokenizer)
        with no_grad():
            hidden = encoder.encode(input_ids, np.zeros_like(input_ids),
                                    attention_mask).last_hidden_state.data
        # (B, T, C) * (B, T, 1) summed over T, divided by the (B, 1) count of real tokens.
        weights = attention_mask[:, :, None].astype(hidden.dtype)
        mean = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        if normalize:
            # The floor keeps an all-zero vector at zero instead of NaN, as torch's
            # F.normalize does (eps 1e-12).
            mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        out[batch] = mean
    if not np.isfinite(out).all():
        raise ValueError(
            "the model produced NaN or infinite hidden states; check its weights")
    return out


def format_vector(vector: np.ndarray) -> list[str]:
    # str() of a float32 scalar is the shortest decimal that reads back as the same float32.
    return [str(value) for value in vector]


# ---------------------------------------------------------------------------- command line


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other error of this script."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="infer.py",
        description="Predict the tokens behind [MASK] with a BERT model, or compute sentence "
                    "embeddings (--embed).",
        epilog="Exit codes: 0 success, 2 bad input (bad option, empty text, no [MASK], model "
               "not found or damaged, encoder-only model without --embed), as in train.py and "
               "bert.py; 1 other failure (an unreadable file, an unexpected error). Threads: "
               "one per core, or as many as OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) "
               "requests.")
    parser.add_argument(
        "texts", nargs="*", metavar="TEXT",
        help="texts to process; [MASK] (any letter case) marks each token to predict. "
             "- reads one text per line from stdin (blank lines are skipped)")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, metavar="PATH",
        help="a numpy-bert .npz file or a Hugging Face BERT checkpoint directory "
             "(default: bert_model.npz beside infer.py)")
    parser.add_argument(
        "--top-k", type=positive_int, default=None, metavar="K",
        help=f"number of guesses shown per [MASK], at least 1 (default: {DEFAULT_TOP_K}; "
             "values above the vocabulary size are lowered to it)")
    parser.add_argument(
        "--json", action="store_true",
        help="print JSON: in fill-mask mode a list (per text) of lists (per [MASK]) of the "
             "top-k {score, token, token_str, sequence}, as transformers' fill-mask pipeline "
             "names them; with --embed a list of vectors (default: readable text)")
    parser.add_argument(
        "--embed", action="store_true",
        help="print one sentence embedding per text instead of filling masks: the mean of "
             "the last hidden state over the real tokens; with --normalize this is "
             "sentence-transformers' embedding for all-MiniLM-L6-v2 (default: fill-mask "
             "mode)")
    parser.add_argument(
        "--normalize", action="store_true",
        help="with --embed, scale each embedding to unit L2 length (default: off)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
        help=f"maximum texts per forward pass, at least 1 (default: {DEFAULT_BATCH_SIZE}); "
             f"batches of long texts are cut to {MAX_BATCH_TOKENS} tokens")
    parser.add_argument(
        "--debug", action="store_true",
        help="show the full traceback on errors (default: a one-line message)")
    return parser


def check_options(args) -> None:
    if args.normalize and not args.embed:
        raise UsageError("--normalize applies to --embed only; add --embed or drop --normalize")
    if args.top_k is not None and args.embed:
        raise UsageError("--top-k applies to fill-mask mode only; drop it with --embed")


def run(args, stdin=None, stdout=None) -> None:
    """Read the texts, load the model, and print the guesses or embeddings."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    check_options(args)
    fill_mask = not args.embed

    # The texts are checked before the model is loaded, so input mistakes fail fast.
    texts, labels = collect_texts(args.texts, stdin)
    texts = check_texts(texts, labels, fill_mask)

    model, tokenizer, max_tokens = load_model(args.model)
    if fill_mask and not isinstance(model, bert.BertForPreTraining):
        raise UsageError(
            f"{args.model} is an encoder without an MLM head, so it cannot fill masks; use "
            "--embed for sentence embeddings, or a checkpoint with an MLM head"
        )
    rows = tokenize(tokenizer, texts, labels, max_tokens, fill_mask)

    if args.embed:
        vectors = embed(model, tokenizer, rows, args.batch_size, args.normalize)
        lines = [format_vector(v) for v in vectors]
        if args.json:
            body = ",\n".join("  [" + ", ".join(line) + "]" for line in lines)
            stdout.write("[\n" + body + "\n]\n")
        else:
            stdout.write("".join(" ".join(line) + "\n" for line in lines))
        return

    k = min(args.top_k or DEFAULT_TOP_K, model.config.vocab_size)
    results = predict_masks(model, tokenizer, rows, k, args.batch_size)
    if args.json:
        stdout.write(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        return
    blocks = [
        format_fill_mask(text, per_mask, best_sequence(tokenizer, ids, per_mask))
        for text, ids, per_mask in zip(texts, rows, results)
    ]
    stdout.write("\n\n".join(blocks) + "\n")


def exit_code(error: BaseException) -> int:
    # A missing or damaged model file is bad input, like a bad option (ValueError covers
    # UsageError), as train.py and bert.py count it too.
    return 2 if isinstance(error, (ValueError, FileNotFoundError)) else 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    autograd.set_num_threads(autograd.thread_count(THREAD_REQUEST))
    # Each batch frees and reallocates buffers of the same sizes: keeping the freed memory
    # mapped spares the page faults (MiniLM at 32 x 128: 748 -> 729 ms per batch).
    autograd.reuse_freed_memory()
    try:
        run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of stdout (head, less) quit early. Point stdout at nothing, so the
        # interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("infer.py: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every error becomes one line; --debug shows the traceback
        if args.debug:
            traceback.print_exc()
            return exit_code(e)
        message = " ".join(str(e).split())
        if not isinstance(e, (ValueError, OSError)):
            message = f"{type(e).__name__}: {message} (run with --debug for the traceback)"
        print(f"infer.py: error: {message}", file=sys.stderr)
        return exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
