"""BERT pre-training data: raw text in, padded batches of masked sentence pairs out.

The pipeline follows google-research/bert's create_pretraining_data.py (called "the
reference" below):

1. read_documents() reads plain-text or gzip corpora. Documents are separated by blank
   lines, and each line inside a document is split into sentences by split_sentences().
2. split_documents() holds out a fixed share of documents for validation, chosen by a
   hash of each document's text, so the split never depends on order or seed.
3. PretrainingData tokenizes every sentence once, then for each epoch packs consecutive
   sentences into pairs [CLS] A [SEP] B [SEP] of up to max_seq_length tokens. Half of
   the B segments are replaced by text from another document (the next-sentence label).
4. Masked LM: 15% of the maskable tokens of each pair (at most max_predictions_per_seq)
   become prediction targets. Of those, 80% are replaced by [MASK], 10% by a random token and
   10% stay unchanged, so the model cannot rely on seeing [MASK] at every target.
   Masking is vectorised with NumPy over the whole epoch.
5. batches() sorts instances by length inside large random chunks, cuts batches, shuffles
   the batch order and pads each batch to its longest instance only.

Everything an epoch produces depends only on (seed, epoch, documents, settings), so a
run can resume mid-epoch by regenerating the epoch and skipping the batches it has seen.

Imports: NumPy and the standard library; the tokenizer object is passed in (tokenizer.py).
Usage:   from data import read_documents, split_documents, PretrainingData
         python data.py --vocab testdata/bert-base-uncased-vocab.txt -n 3
Follows: Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers for
         Language Understanding", and create_pretraining_data.py in google-research/bert.

Limitations:
- Sentence splitting is rule-based (abbreviation list, initials, dotted acronyms): it
  does not split after a single capital letter ("vitamin C. It"), and after an acronym
  such as "U.S." it splits only before a common sentence opener ("The", "It", ...).
- The masked share is 15% of the maskable tokens of a pair, not of all its tokens as in
  the reference script, which counts [CLS] and [SEP] too.
- A chunk of one sentence cannot be cut between sentences. The reference then always
  draws a random B, which skews the next-sentence labels on corpora of short documents
  (65% random on wiki-vital-en.txt.gz at 128 tokens). Here, when the draw gives "B
  follows A", such a sentence is cut at a random token instead, so labels stay 50/50.
- With a single document there is no other document to draw B from, so every pair is
  labelled "B follows A".
- Whole-word masking groups a token with the "##" continuation pieces that follow it.

Shapes: B batch (instances), T sequence length (longest instance in the batch),
M masked positions in the batch, V vocabulary size.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- reading text

# Titles that precede a name, so their period never ends a sentence ("Dr. Smith").
TITLES = frozenset(
    """mr mrs ms dr prof st mt ft sr gen col lt sgt capt cmdr adm maj rev hon sen rep gov
    pres messrs mme mlle fr""".split()
)
# Abbreviations that precede a number: their period ends no sentence when a digit
# follows ("No. 5", "Jan. 1990", "ca. 1500", "pp. 3-7").
NUMBER_PREFIXES = frozenset(
    """no nos vol vols fig figs pp ch sec art op ca approx est jan feb mar apr jun jul aug
    sep sept oct nov dec""".split()
)
# Abbreviations that never end a sentence, whatever follows ("e.g. Paris").
NEVER_FINAL = frozenset({"e.g", "i.e", "viz", "cf", "vs", "al"})
# After an acronym such as "U.S." a sentence only ends if one of these words follows:
# "the U.S. Army" goes on, "moved to the U.S. The next year" ends.
SENTENCE_OPENERS = frozenset(
    """a an the he she it its they their there these those this that his her we i in on
    at as by for from after before during however when while since although but and
    many most some several one two both each all other another following today later
    if what which who""".split()
)

# A candidate boundary: end punctuation, optional closing quotes or brackets, spaces,
# then optional opening quotes or brackets and a word character, which must be an
# upper-case letter or a digit (checked in the loop, because \w has no case class).
_BOUNDARY = re.compile(
    r"""([.!?\u2026]+)(["'\u201d\u2019)\]]*)(\s+)(?=["'\u201c\u2018(\[]*(\w))"""
)
_DOTTED = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")


def split_sentences(text: str) -> list[str]:
    """Split a line of text into sentences, keeping abbreviations and decimals intact.

    A sentence ends at ".", "!", "?" or an ellipsis (with any closing quotes or
    brackets) followed by white space and an upper-case letter or a digit, which may
    come after an opening quote or bracket. A period does not end a sentence after a
    title ("Dr."), after "No." or a month before a number, after "e.g." or "i.e.",
    after a single letter (initials such as "J. R. R. Tolkien"), or after a dotted
    acronym ("U.S.") unless a common sentence opener follows. "3.14" and "1,000" never
    match because no white space follows the period or comma.
    """
    sentences = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        next_letter = match.group(4)
        if not (next_letter.isupper() or next_letter.isdigit()):
            continue
        punctuation = match.group(1)
        if punctuation == "." and not _period_ends_sentence(text, match):
            continue
        end = match.start(3)
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def _period_ends_sentence(text: str, match: re.Match) -> bool:
    """Decide whether the single period of a boundary match ends its sentence."""
    before = text[: match.start(1)].rsplit(None, 1)
    word = before[-1].lstrip("\"'\u201c\u2018([") if before else ""
    if not word:
        return True
    lower = word.lower()
    following = text[match.end() :]
    if lower in TITLES or lower in NEVER_FINAL:
        return False
    if lower in NUMBER_PREFIXES and following[:1].isdigit():
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "John F. Kennedy"
    if _DOTTED.match(word):
        words = following.split(None, 1)
        next_word = words[0].strip("\"'\u201c\u2018([,;:").lower() if words else ""
        return next_word in SENTENCE_OPENERS
    return True


def _corpus_files(path: Path) -> list[Path]:
    """List the corpus files of one path: the file itself, or a folder's text files."""
    if not path.exists():
        raise FileNotFoundError(
            f"corpus path {str(path)!r} not found: "
            "pass an existing text or .gz file or a folder"
        )
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and p.suffix in (".txt", ".gz")
    )
    if not files:
        raise ValueError(
            f"corpus folder {str(path)!r} contains no .txt or .gz files: "
            "add text files or pass a file instead"
        )
    return files


def _read_text(path: Path) -> str:
    """Read one corpus file as UTF-8 text, decompressing gzip files."""
    raw = path.read_bytes()
    is_gzip = raw[:2] == b"\x1f\x8b"
    if path.suffix == ".gz" and not is_gzip:
        raise ValueError(
            f"corpus file {str(path)!r} ends in .gz but is not gzip data: "
            "compress it with gzip or rename it"
        )
    if is_gzip:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(
                f"corpus file {str(path)!r} is a corrupt or truncated gzip file ({error}): "
                "download or compress it again"
            ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"corpus file {str(path)!r} is not UTF-8 text (invalid byte at offset "
            f"{error.start}): convert it to UTF-8"
        ) from None


def read_documents(paths) -> list[list[str]]:
    """Read documents from one path, several paths or folders; each a list of sentences.

    Files may be plain UTF-8 text or gzip-compressed. Folders are searched recursively
    for .txt and .gz files (hidden ones skipped), in sorted order. Blank lines separate documents, and
    every other line is split into sentences by split_sentences().
    Raises FileNotFoundError for a missing path and ValueError for an empty corpus,
    an unreadable file or a corrupt gzip file, naming the path.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no corpus paths given: pass at least one file or folder")
    files = [f for p in paths for f in _corpus_files(p)]
    documents = []
    for file in files:
        document = []
        for line in _read_text(file).splitlines():
            if line.strip():
                document.extend(split_sentences(line))
            elif document:
                documents.append(document)
                document = []
        if document:
            documents.append(document)
    if not documents:
        names = ", ".join(repr(str(f)) for f in files)
        raise ValueError(f"corpus {names} is empty: it contains no text, only blank lines")
    return documents


def _document_hash(document: list[str]) -> float:
    """Map a document's text to a number in [0, 1) that is the same on every run."""
    digest = hashlib.blake2b("\n".join(document).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_documents(
    documents: list[list[str]], valid_fraction: float = 0.02, salt: str = ""
) -> tuple[list[list[str]], list[list[str]]]:
    """Split documents into (train, valid) by a stable hash of each document's text.

    A document goes to validation when the hash of salt + its text falls below
    valid_fraction, so the split is independent of document order and of any seed, and
    duplicate documents land on the same side. With at least two documents neither side
    is empty: the document with the lowest (or highest) hash moves over if needed.
    Both lists keep the input order.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(
            f"valid_fraction={valid_fraction} is invalid: pass a share between 0 and 1, "
            "such as 0.02"
        )
    if len(documents) < 2:
        raise ValueError(
            f"cannot split {len(documents)} document(s) into training and validation: "
            "the corpus needs at least 2 documents separated by a blank line"
        )
    keys = [_document_hash([salt] + d if salt else d) for d in documents]
    is_valid = [k < valid_fraction for k in keys]
    if not any(is_valid):
        is_valid[min(range(len(keys)), key=keys.__getitem__)] = True
    if all(is_valid):
        is_valid[max(range(len(keys)), key=keys.__getitem__)] = False
    train = [d for d, v in zip(documents, is_valid) if not v]
    valid = [d for d, v in zip(documents, is_valid) if v]
    return train, valid


# ---------------------------------------------------------------- instances


@dataclass
class Batch:
    """One padded batch of pre-training instances, all arrays int64.

    mlm_positions index the flattened (B * T) positions, so the MLM head runs only on
    hidden.reshape(B * T, C)[mlm_positions]. nsp_labels use 0 for "B follows A" and 1
    for "B is random", as BERT and Hugging Face transformers do.
    """

    input_ids: np.ndarray  # (B, T) token ids after masking, [PAD] after each instance
    token_type_ids: np.ndarray  # (B, T) 0 for [CLS] A [SEP], 1 for B [SEP], 0 for padding
    attention_mask: np.ndarray  # (B, T) 1 for real tokens, 0 for padding
    mlm_positions: np.ndarray  # (M,) flat indices into B * T, ascending
    mlm_labels: np.ndarray  # (M,) original token ids at those positions
    nsp_labels: np.ndarray  # (B,) 0 = B follows A, 1 = B is random
    num_tokens: int  # real (non-padding) tokens in the batch

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EpochInstances:
    """All pairs of one epoch, before and after masking, stored flat.

    Instance i occupies input_ids[offsets[i] : offsets[i] + lengths[i]]. Sentence
    pairs are [CLS] A [SEP] B [SEP] with A of a_lengths[i] tokens.
    """

    original_ids: np.ndarray  # (N,) token ids of all instances, concatenated
    input_ids: np.ndarray  # (N,) the same after masking
    token_type_ids: np.ndarray  # (N,)
    offsets: np.ndarray  # (n,) start of each instance in the flat arrays
    lengths: np.ndarray  # (n,) tokens per instance, [CLS] and [SEP] included
    a_lengths: np.ndarray  # (n,) tokens of segment A
    # Document indices count only documents with tokens, in input order.
    a_documents: np.ndarray  # (n,) document index of segment A
    b_documents: np.ndarray  # (n,) document index of segment B
    nsp_labels: np.ndarray  # (n,) 0 = B follows A, 1 = B is random
    masked_positions: np.ndarray  # (P,) flat positions of MLM targets, ascending
    masked_labels: np.ndarray  # (P,) original ids there

    def __len__(self) -> int:
        return len(self.offsets)


def _concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate arange(s, s + n) for every (s, n) pair, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _stream(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    """Return an independent generator for one (seed, epoch, purpose) triple."""
    return np.random.default_rng([seed, epoch, purpose])


_PAIRS, _MASKS, _ORDER = 0, 1, 2  # purposes of the per-epoch random streams


class PretrainingData:
    """Sentence-pair instances with masked LM targets, regenerated per epoch.

    Every sentence is tokenized once when the object is built. Each call of batches()
    (or instances()) for an epoch draws new pairs and new masks from (seed, epoch), so
    the same arguments always give the same batches. A fixed validation set is a second
    PretrainingData on the held-out documents, always read with batches(0, batch_size).
    """

    def __init__(
        self,
        documents: list[list[str]],
        tokenizer,
        max_seq_length: int = 128,
        short_seq_prob: float = 0.1,
        masked_lm_prob: float = 0.15,
        max_predictions_per_seq: int | None = None,
        whole_word_mask: bool = False,
        seed: int = 0,
    ):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid: pass a whole number of 0 or more")
        if max_seq_length < 5:
            raise ValueError(
                f"max_seq_length={max_seq_length} is too small: a pair needs [CLS] A [SEP] "
                "B [SEP], so pass at least 5"
            )
        if not 0.0 <= short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob={short_seq_prob} is invalid: pass 0 to 1")
        if not 0.0 < masked_lm_prob < 1.0:
            raise ValueError(
                f"masked_lm_prob={masked_lm_prob} is invalid: pass a share above 0 and "
                "below 1, such as 0.15"
            )
        if max_predictions_per_seq is None:
            # BERT uses 20 for 128 tokens: the 15% share rounded up.
            max_predictions_per_seq = max(1, int(np.ceil(max_seq_length * masked_lm_prob)))
        if max_predictions_per_seq < 1:
            raise ValueError(
                f"max_predictions_per_seq={max_predictions_per_seq} is invalid: pass 1 or more"
            )
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.short_seq_prob = float(short_seq_prob)
        self.masked_lm_prob = float(masked_lm_prob)
        self.max_predictions_per_seq = int(max_predictions_per_seq)
        self.whole_word_mask = bool(whole_word_mask)
        self.seed = int(seed)
        self._cache: dict[int, EpochInstances] = {}

        self._tokenize(documents)
        self._build_vocabulary_tables()

    # ------------------------------------------------------------ setup

    def _tokenize(self, documents: list[list[str]]) -> None:
        """Tokenize every sentence once and store all ids in one flat array."""
        tokenizer = self.tokenizer
        # tokenizer.py offers text_to_ids() as a faster path than the two calls below.
        text_to_ids = getattr(tokenizer, "text_to_ids", None)
        # Special tokens typed in the text ("[SEP]") would break the pair layout.
        dropped = set(tokenizer.special_ids) - {tokenizer.unk_token_id}
        cache: dict[str, list[int]] = {}
        ids: list[int] = []
        sentence_starts = [0]
        document_starts = [0]  # index of each document's first sentence
        for document in documents:
            for sentence in document:
                sentence_ids = cache.get(sentence)
                if sentence_ids is None:
                    if text_to_ids is not None:
                        sentence_ids = text_to_ids(sentence)
                    else:
                        tokens = tokenizer.tokenize(sentence)
                        sentence_ids = tokenizer.convert_tokens_to_ids(tokens)
                    sentence_ids = [i for i in sentence_ids if i not in dropped]
                    cache[sentence] = sentence_ids
                if sentence_ids:
                    ids.extend(sentence_ids)
                    sentence_starts.append(len(ids))
            num_sentences = len(sentence_starts) - 1
            if num_sentences > document_starts[-1]:
                document_starts.append(num_sentences)
        # Documents without tokens were skipped above, so every document has a sentence.
        self.token_ids = np.asarray(ids, dtype=np.int64)  # all sentences, concatenated
        # Sentence s is token_ids[sentence_starts[s] : sentence_starts[s + 1]], and
        # document d is sentences document_starts[d] to document_starts[d + 1] - 1.
        self.sentence_starts = sentence_starts
        self.document_starts = document_starts
        if self.num_documents == 0 or len(ids) < 2:
            raise ValueError(
                f"no usable documents: {len(documents)} document(s) gave {len(ids)} "
                "token(s) after tokenization, and a pair needs at least 2; pass a corpus "
                "with text the vocabulary covers"
            )

    def _build_vocabulary_tables(self) -> None:
        """Find the maskable ids, the ids a random replacement may use, and "##" pieces."""
        tokenizer = self.tokenizer
        tokens = list(tokenizer.ids_to_tokens)
        vocab_size = len(tokens)
        if int(self.token_ids.max()) >= vocab_size:
            raise ValueError(
                f"token id {int(self.token_ids.max())} is outside the vocabulary of "
                f"{vocab_size}: the tokenizer and its ids_to_tokens disagree"
            )
        special = set(tokenizer.special_ids)
        # [UNK] stays a prediction target, as in the reference. [CLS], [SEP], [PAD] and
        # [MASK] never are.
        never_masked = special - {tokenizer.unk_token_id}
        self._never_masked = np.zeros(vocab_size, dtype=bool)
        self._never_masked[list(never_masked)] = True
        # A random replacement is an ordinary token: no special token and no reserved
        # bracketed entry such as "[unused0]".
        self._replacement_ids = np.array(
            [
                i
                for i, t in enumerate(tokens)
                if i not in special and not (t.startswith("[") and t.endswith("]"))
            ],
            dtype=np.int64,
        )
        if len(self._replacement_ids) == 0:
            raise ValueError("the vocabulary has no ordinary tokens to use as replacements")
        self._is_continuation = np.array([t.startswith("##") for t in tokens], dtype=bool)

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens of all documents, before [CLS] and [SEP] are added."""
        return len(self.token_ids)

    # ------------------------------------------------------------ pairs

    def _create_pairs(self, epoch: int) -> tuple[np.ndarray, ...]:
        """Pack each document's sentences into (A, B) spans of token_ids for one epoch.

        Follows create_instances_from_document() of the reference. Sentences accumulate
        up to a target length, and the chunk is cut at a random sentence into A and B.
        Half of the time B is replaced by text from another document, and the unused
        sentences go back to start the next chunk. Then the longer segment is truncated
        from a random end.
        Returns arrays (a_start, a_end, b_start, b_end, a_document, b_document, label).
        """
        seed = int(_stream(self.seed, epoch, _PAIRS).integers(2**63))
        # random.Random, because its scalar draws are faster than NumPy's in a Python loop.
        rng = random.Random(seed)
        starts = self.sentence_starts
        doc_starts = self.document_starts
        num_documents = self.num_documents
        max_tokens = self.max_seq_length - 3  # room for [CLS], [SEP], [SEP]
        rows = []
        for document in range(num_documents):
            first, last = doc_starts[document], doc_starts[document + 1]
            # Mostly fill the sequence, but sometimes aim shorter, so the model also sees
            # the short sequences that fine-tuning tasks give it.
            target = max_tokens
            if rng.random() < self.short_seq_prob:
                target = rng.randint(2, max_tokens)
            chunk_first = first
            i = first
            while i < last:
                chunk_length = starts[i + 1] - starts[chunk_first]
                if i < last - 1 and chunk_length < target:
                    i += 1
                    continue
                row, i = self._make_pair(rng, document, chunk_first, i + 1, target)
                if row is not None:
                    rows.append(row)
                i += 1
                chunk_first = i
        if not rows:
            raise ValueError(
                "no usable documents: no document has 2 tokens to form a sentence pair"
            )
        return tuple(np.array(column, dtype=np.int64) for column in zip(*rows))

    def _make_pair(self, rng, document, chunk_first, chunk_end, target):
        """Make one (A, B) pair from sentences [chunk_first, chunk_end) of a document.

        Returns the row and the index of the last sentence used, so that the caller
        puts unused sentences back when B came from another document.
        """
        starts = self.sentence_starts
        num_sentences = chunk_end - chunk_first
        a_sentences = 1 if num_sentences == 1 else rng.randint(1, num_sentences - 1)
        a_start = starts[chunk_first]
        a_end = starts[chunk_first + a_sentences]
        chunk_stop = starts[chunk_end]
        last_used = chunk_end - 1
        can_draw_random = self.num_documents > 1
        is_random = can_draw_random and rng.random() < 0.5
        if num_sentences == 1 and not is_random:
            # One sentence cannot be cut between sentences: cut it at a random token
            # (see Limitations), or draw a random B when it has a single token.
            if chunk_stop - a_start >= 2:
                a_end = a_start + rng.randint(1, chunk_stop - a_start - 1)
            elif can_draw_random:
                is_random = True
            else:
                return None, last_used
        if is_random:
            a_length = a_end - a_start
            other = rng.randrange(self.num_documents - 1)
            other += other >= document  # never the document of A
            other_first = self.document_starts[other]
            other_last = self.document_starts[other + 1]
            sentence = rng.randint(other_first, other_last - 1)
            b_start = starts[sentence]
            target_b = target - a_length
            while sentence < other_last - 1 and starts[sentence + 1] - b_start < target_b:
                sentence += 1
            b_end = starts[sentence + 1]
            b_document = other
            # The sentences after A were not used: they start the next chunk.
            last_used = chunk_first + a_sentences - 1
        else:
            b_start, b_end, b_document = a_end, chunk_stop, document
        spans = self._truncate_pair(rng, a_start, a_end, b_start, b_end)
        row = (*spans, document, b_document, int(is_random))
        return row, last_used

    def _truncate_pair(self, rng, a_start, a_end, b_start, b_end):
        """Trim the pair to max_seq_length - 3 tokens, one token at a time from the longer.

        The reference removes tokens one by one from the longer segment (B on a tie),
        each from the front or the back with probability 1/2. The count per segment
        follows from the lengths, and the front count is Binomial(count, 1/2).
        """
        a_length, b_length = a_end - a_start, b_end - b_start
        excess = a_length + b_length - (self.max_seq_length - 3)
        if excess <= 0:
            return a_start, a_end, b_start, b_end
        gap = min(excess, abs(a_length - b_length))
        remove_a = gap if a_length > b_length else 0
        remove_b = gap - remove_a
        rest = excess - gap  # equal lengths from here on: B, A, B, A, ...
        remove_b += (rest + 1) // 2
        remove_a += rest // 2
        front_a = bin(rng.getrandbits(remove_a)).count("1") if remove_a else 0
        front_b = bin(rng.getrandbits(remove_b)).count("1") if remove_b else 0
        return (
            a_start + front_a,
            a_end - (remove_a - front_a),
            b_start + front_b,
            b_end - (remove_b - front_b),
        )

    # ------------------------------------------------------------ masking

    def instances(self, epoch: int) -> EpochInstances:
        """Return the pairs and masks of one epoch (cached for the two latest epochs)."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} is invalid: pass a whole number of 0 or more")
        epoch = int(epoch)
        if epoch in self._cache:
            return self._cache[epoch]
        columns = self._create_pairs(epoch)
        a_start, a_end, b_start, b_end, a_documents, b_documents, labels = columns
        a_lengths = a_end - a_start
        b_lengths = b_end - b_start
        lengths = a_lengths + b_lengths + 3
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        total = int(lengths.sum())

        # Lay out [CLS] A [SEP] B [SEP] for all instances at once.
        ids = np.empty(total, dtype=np.int64)
        token_types = np.zeros(total, dtype=np.int64)
        ids[offsets] = self.tokenizer.cls_token_id
        ids[_concat_ranges(offsets + 1, a_lengths)] = self.token_ids[
            _concat_ranges(a_start, a_lengths)
        ]
        first_sep = offsets + 1 + a_lengths
        ids[first_sep] = self.tokenizer.sep_token_id
        b_positions = _concat_ranges(first_sep + 1, b_lengths)
        ids[b_positions] = self.token_ids[_concat_ranges(b_start, b_lengths)]
        ids[offsets + lengths - 1] = self.tokenizer.sep_token_id
        token_types[b_positions] = 1
        token_types[offsets + lengths - 1] = 1

        is_special_position = np.zeros(total, dtype=bool)
        is_special_position[offsets] = True
        is_special_position[first_sep] = True
        is_special_position[offsets + lengths - 1] = True
        rng = _stream(self.seed, epoch, _MASKS)
        masked_ids, positions, masked_labels = self._mask(
            rng, ids, is_special_position, offsets, lengths
        )
        result = EpochInstances(
            original_ids=ids,
            input_ids=masked_ids,
            token_type_ids=token_types,
            offsets=offsets,
            lengths=lengths,
            a_lengths=a_lengths,
            a_documents=a_documents,
            b_documents=b_documents,
            nsp_labels=labels,
            masked_positions=positions,
            masked_labels=masked_labels,
        )
        if len(self._cache) >= 2:
            self._cache.pop(next(iter(self._cache)))
        self._cache[epoch] = result
        return result

    def _mask(self, rng, ids, is_special_position, offsets, lengths):
        """Choose the MLM targets of every instance and apply 80/10/10 replacement.

        Per instance, k = min(max_predictions_per_seq, max(1, round(n * masked_lm_prob)))
        tokens are chosen among its n maskable tokens. Words (a token plus its "##"
        pieces with whole_word_mask, else single tokens) are visited in random order,
        and a word is taken when it still fits within k, as in the reference.
        Returns (masked ids, positions ascending, original ids at the positions).
        """
        num_instances = len(offsets)
        instance_of = np.repeat(np.arange(num_instances), lengths)
        eligible = np.flatnonzero(~is_special_position & ~self._never_masked[ids])
        eligible_instance = instance_of[eligible]
        num_eligible = np.bincount(eligible_instance, minlength=num_instances)
        # np.rint rounds half to even, like Python's round() in the reference.
        budget = np.rint(num_eligible * self.masked_lm_prob).astype(np.int64)
        budget = np.minimum(np.maximum(budget, 1), self.max_predictions_per_seq)

        # Group maskable tokens into words. [CLS] and [SEP] are not maskable, so a
        # word never crosses an instance or a segment boundary.
        starts_word = np.ones(len(eligible), dtype=bool)
        if self.whole_word_mask:
            follows_previous = np.zeros(len(eligible), dtype=bool)
            follows_previous[1:] = eligible[1:] == eligible[:-1] + 1
            starts_word = ~(follows_previous & self._is_continuation[ids[eligible]])
        word_first = eligible[starts_word]
        word_length = np.diff(np.append(np.flatnonzero(starts_word), len(eligible)))
        word_instance = eligible_instance[starts_word]

        # Visit each instance's words in random order: sorting instance + uniform [0, 1)
        # keeps instances apart and shuffles within each (one argsort, unlike lexsort).
        order = np.argsort(word_instance + rng.random(len(word_first)))
        words_per_instance = np.bincount(word_instance, minlength=num_instances)
        first_word = np.concatenate([[0], np.cumsum(words_per_instance)[:-1]])
        rank = np.arange(len(order)) - first_word[word_instance[order]]
        if self.whole_word_mask:
            taken = self._take_words(word_instance[order], rank, word_length[order], budget)
        else:
            # Every word is one token, so the first `budget` words in the order fit.
            taken = rank < budget[word_instance[order]]
        chosen = order[taken]
        positions = np.sort(_concat_ranges(word_first[chosen], word_length[chosen]))

        # 80% [MASK]: the target the model learns to fill. 10% a random token and 10%
        # unchanged, so the representation of every input token must stay useful and
        # the model cannot assume that only [MASK] positions are predicted.
        labels = ids[positions]
        masked = ids.copy()
        draw = rng.random(len(positions))
        masked[positions[draw < 0.8]] = self.tokenizer.mask_token_id
        replace = positions[draw >= 0.9]
        masked[replace] = self._replacement_ids[
            rng.integers(len(self._replacement_ids), size=len(replace))
        ]
        return masked, positions, labels

    def _take_words(self, instance, rank, length, budget):
        """Choose words greedily in visiting order, skipping any that overflow the budget.

        instance, rank and length describe each word (in visiting order), and budget
        is the number of tokens to mask per instance. Like the reference, a word that
        does not fit is skipped and shorter words after it may still be taken.
        Returns a bool per word. The loop runs once per visiting step (at most
        max_seq_length times), each step vectorised over all instances.
        """
        if len(rank) == 0:
            return np.zeros(0, dtype=bool)
        max_words = int(rank.max()) + 1
        # (max_words, n) word lengths in visiting order; padding never fits a budget.
        visit_length = np.full((max_words, len(budget)), self.max_seq_length + 1, np.int16)
        visit_length[rank, instance] = length
        taken = np.zeros((max_words, len(budget)), dtype=bool)
        count = np.zeros(len(budget), dtype=np.int64)
        for step in range(max_words):
            fits = count + visit_length[step] <= budget
            taken[step] = fits
            count += np.where(fits, visit_length[step], 0)
        return taken[rank, instance]

    # ------------------------------------------------------------ batches

    def num_instances(self, epoch: int = 0) -> int:
        """Count the instances of an epoch (pairs are drawn per epoch, so it varies)."""
        return len(self.instances(epoch))

    def num_batches(self, batch_size: int, epoch: int = 0) -> int:
        """Count the batches of an epoch: ceil(instances / batch_size)."""
        _check_batch_size(batch_size)
        return -(-self.num_instances(epoch) // batch_size)

    def batches(self, epoch: int, batch_size: int, sort_chunk: int = 64) -> list[Batch]:
        """Return the batches of one epoch, grouped by length and in shuffled order.

        Instances are shuffled, then sorted by length within chunks of sort_chunk
        batches, so a batch holds instances of similar length and little padding, while
        the chunks keep the composition random. The last batch of the epoch may be
        smaller. The result depends only on (seed, epoch, batch_size, sort_chunk), the
        documents and the settings.
        """
        _check_batch_size(batch_size)
        data = self.instances(epoch)
        rng = _stream(self.seed, epoch, _ORDER)
        order = rng.permutation(len(data))
        chunk = batch_size * max(1, int(sort_chunk))
        groups = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(data.lengths[part], kind="stable")]
            groups.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        # Between chunks the batches keep their chunk order, so shuffle them too.
        return [self._collate(data, groups[g]) for g in rng.permutation(len(groups))]

    def _collate(self, data: EpochInstances, indices: np.ndarray) -> Batch:
        """Pad the given instances to the longest of them and gather their targets."""
        lengths = data.lengths[indices]
        offsets = data.offsets[indices]
        num_rows, width = len(indices), int(lengths.max())
        rows = np.repeat(np.arange(num_rows), lengths)
        columns = _concat_ranges(np.zeros(num_rows, dtype=np.int64), lengths)
        source = _concat_ranges(offsets, lengths)

        input_ids = np.full((num_rows, width), self.tokenizer.pad_token_id, dtype=np.int64)
        input_ids[rows, columns] = data.input_ids[source]
        token_type_ids = np.zeros((num_rows, width), dtype=np.int64)
        token_type_ids[rows, columns] = data.token_type_ids[source]
        attention_mask = (np.arange(width) < lengths[:, None]).astype(np.int64)

        # The masked positions of instance i lie in [offsets[i], offsets[i] + lengths[i]).
        first = np.searchsorted(data.masked_positions, offsets)
        count = np.searchsorted(data.masked_positions, offsets + lengths) - first
        taken = _concat_ranges(first, count)
        mask_rows = np.repeat(np.arange(num_rows), count)
        mask_columns = data.masked_positions[taken] - offsets[mask_rows]
        return Batch(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            mlm_positions=mask_rows * width + mask_columns,
            mlm_labels=data.masked_labels[taken],
            nsp_labels=data.nsp_labels[indices].copy(),
            num_tokens=int(lengths.sum()),
        )


def _check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size!r} is invalid: pass a whole number of 1 or more"
        )


# ---------------------------------------------------------------- demo


def format_instance(data: EpochInstances, index: int, tokenizer) -> str:
    """Render one instance: segments on their own lines, targets as {input→label}."""
    start, length = int(data.offsets[index]), int(data.lengths[index])
    stop = start + length
    shown = tokenizer.convert_ids_to_tokens(data.input_ids[start:stop].tolist())
    original = tokenizer.convert_ids_to_tokens(data.original_ids[start:stop].tolist())
    first = np.searchsorted(data.masked_positions, start)
    last = np.searchsorted(data.masked_positions, stop)
    for position in data.masked_positions[first:last] - start:
        shown[position] = f"{{{shown[position]}\u2192{original[position]}}}"
    split = int(data.a_lengths[index]) + 2  # [CLS] A [SEP]
    label = int(data.nsp_labels[index])
    meaning = "B is random, from another document" if label else "B follows A"
    return (
        f"{length} tokens, {last - first} masked, NSP label {label} ({meaning})\n"
        f"  A: {' '.join(shown[:split])}\n"
        f"  B: {' '.join(shown[split:])}"
    )


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2, like the script's other errors."""

    def error(self, message: str):
        self.exit(2, f"data.py: error: {message} (see --help)\n")


def _check_args(parser: argparse.ArgumentParser, args, special_count: int) -> None:
    """Reject invalid flag values before any work starts, naming the flag and the fix."""
    if args.n < 0:
        parser.error(f"-n {args.n} is invalid: pass 0 or more instances to print")
    if args.seed < 0:
        parser.error(f"--seed {args.seed} is invalid: pass 0 or more")
    if args.epoch < 0:
        parser.error(f"--epoch {args.epoch} is invalid: pass 0 or more")
    if args.max_seq_len < 5:
        parser.error(f"--max-seq-len {args.max_seq_len} is too small: a pair needs [CLS] A "
                     "[SEP] B [SEP], so pass at least 5")
    # --vocab-size only matters when no --vocab file is given.
    if not args.vocab and args.vocab_size <= special_count:
        parser.error(f"--vocab-size {args.vocab_size} is too small: pass {special_count + 1} "
                     f"or more (the {special_count} special tokens plus at least one "
                     "character), or a vocabulary file with --vocab")


def _train_demo_tokenizer(tokenization, documents: list[list[str]], vocab_size: int):
    """Train a WordPiece vocabulary of vocab_size tokens on all documents.

    `tokenization` is the tokenizer module, which data.py imports only when run as a script.
    """
    print(f"no --vocab given: training a vocabulary of {vocab_size} tokens on the corpus")
    texts = [" ".join(d) for d in documents]
    try:
        tokens = tokenization.train_vocab(texts, vocab_size)
    except tokenization.VocabSizeError as error:
        # The library's message names limit_alphabet, which has no flag here.
        special_count = len(tokenization.SPECIAL_TOKENS)
        raise ValueError(
            f"--vocab-size {vocab_size} is smaller than the {special_count} special tokens "
            f"plus the {error.alphabet_size}-entry alphabet of this corpus: pass "
            f"--vocab-size {special_count + error.alphabet_size} or more, or a vocabulary "
            "file with --vocab"
        ) from None
    if len(tokens) < vocab_size:
        print(f"note: the corpus yields only {len(tokens)} of the {vocab_size} "
              "tokens of --vocab-size, because no pair of symbols occurs often "
              "enough to merge")
    return tokenization.Tokenizer(tokens)


def main(argv: list[str] | None = None) -> int:
    parser = _ArgumentParser(
        prog="data.py",
        description="Print a few BERT pre-training instances with their masks and labels."
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=[str(Path(__file__).resolve().parent / "wiki-vital-en.txt.gz")],
        help="corpus files or folders, plain text or .gz (default: wiki-vital-en.txt.gz)",
    )
    parser.add_argument(
        "--vocab",
        help="WordPiece vocabulary file, one token per line (default: train one of "
        "--vocab-size tokens on the corpus)",
    )
    parser.add_argument(
        "--vocab-size", type=int, default=8192,
        help="tokens in the vocabulary trained when --vocab is absent, as train.py does "
        "(default: 8192)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--epoch", type=int, default=0, help="epoch to draw (default: 0)")
    parser.add_argument(
        "-n", type=int, default=3, help="number of instances to print (default: 3)"
    )
    parser.add_argument(
        "--max-seq-len", type=int, default=128,
        help="maximum tokens per instance, [CLS] and [SEP] included (default: 128)",
    )
    parser.add_argument(
        "--whole-word-mask", action="store_true",
        help="mask whole words instead of single WordPiece tokens (default: off)",
    )
    args = parser.parse_args(argv)
    import tokenizer as tokenization

    _check_args(parser, args, len(tokenization.SPECIAL_TOKENS))
    try:
        # A vocabulary file is read before the corpus, so a bad --vocab fails at once.
        tokenizer = None
        if args.vocab:
            try:
                tokenizer = tokenization.Tokenizer.from_file(args.vocab)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"--vocab {args.vocab}: {e}; pass a BERT vocab.txt "
                                        "(one token per line), or drop --vocab") from None
        started = time.perf_counter()
        documents = read_documents(args.data)
        print(f"corpus: {len(documents)} documents, "
              f"{sum(map(len, documents))} sentences ({time.perf_counter() - started:.1f} s)")
        if tokenizer is None:
            tokenizer = _train_demo_tokenizer(tokenization, documents, args.vocab_size)
        started = time.perf_counter()
        data = PretrainingData(
            documents, tokenizer, max_seq_length=args.max_seq_len,
            whole_word_mask=args.whole_word_mask, seed=args.seed,
        )
        print(f"tokenized: {data.num_tokens} tokens in {data.num_documents} documents "
              f"({time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        instances = data.instances(args.epoch)
        labels = instances.nsp_labels
        print(f"epoch {args.epoch}: {len(instances)} instances, "
              f"{len(instances.masked_positions)} masked tokens, "
              f"{labels.mean():.1%} random B ({time.perf_counter() - started:.2f} s)")
        print("MLM targets are shown as {input\u2192label}: {[MASK]\u2192x} replaced, "
              "{y\u2192x} random token, {x\u2192x} unchanged")
        shown = np.random.default_rng(args.seed).permutation(len(instances))[: args.n]
        for index in np.sort(shown):
            print(f"\ninstance {index}: " + format_instance(instances, index, tokenizer))
    except BrokenPipeError:
        # The reader of stdout (head, less) quit early. Point stdout at nothing, so the
        # interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, FileNotFoundError) as error:
        print(f"data.py: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"data.py: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("data.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
