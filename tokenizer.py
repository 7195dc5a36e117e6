"""WordPiece tokenizer identical to BERT's, plus WordPiece vocabulary training.

Text becomes BERT input ids in two stages, as in google-research/bert tokenization.py:

1. Basic tokenization: drop NUL, U+FFFD and control characters, put spaces around CJK
   ideographs, NFC-normalize (an addition of Hugging Face's BertTokenizer) and split on
   whitespace. Each word is then lowercased and accent-stripped if uncased (NFD, then drop
   combining marks), and every punctuation character (ASCII symbols, Unicode P*) is split off.
2. WordPiece: each basic token is split greedily, longest match first, into vocabulary
   pieces; pieces after the first carry the '##' prefix. A token that cannot be covered,
   or is longer than 100 characters, becomes a single [UNK].

The special tokens [PAD] [UNK] [CLS] [SEP] [MASK] are cut out of the raw text first and kept
whole, even with no space around them ("of[MASK]." gives of, [MASK], .), as Hugging Face's
tokenizer does. They are case-sensitive: "[mask]" is ordinary text.

The reference is transformers' pure-Python BertTokenizerLegacy (transformers 5.25). Its Rust
BertTokenizer gives the same ids on the whole shipped corpus but differs in corner cases:
on a truncation tie it cuts the first text, and it splits "[MA\x00SK]" into [, mask, ].

Speed comes from caching: the result of stages 1 and 2 depends only on the whitespace-
separated word, so each distinct word is split once and later looked up in a dict. The
per-text work (special-token split, control-character removal, NFC, str.split) runs in C.

Vocabulary training (`train_vocab`) counts the basic tokens of a corpus, starts from their
characters (word-initial and '##'-continuation forms) and repeatedly merges the adjacent
pair with the highest WordPiece score count(ab) / (count(a) * count(b)), the likelihood
gain of Schuster and Nakajima, "Japanese and Korean Voice Search" (ICASSP 2012).

Imports: the Python standard library only, so this file can be copied alone.

Run:
    python tokenizer.py --vocab vocab.txt "Some text."     # prints every stage
    python tokenizer.py train --corpus corpus.txt.gz --vocab-size 8192 --out vocab.txt
Import:
    from tokenizer import Tokenizer
    tok = Tokenizer.from_file("vocab.txt")
    batch = tok.encode_batch(["a text", "another"], padding=True)

Shapes: B batch size, T sequence length (max_length), V vocabulary size. encode() returns
lists of length T, encode_batch() lists of B such lists, ids are in [0, V).

Limitations:
- Only BERT's WordPiece scheme: no byte fallback, so characters missing from the
  vocabulary (many emoji in bert-base-uncased) turn their whole word into [UNK].
- Truncation removes tokens from the end (right side) only, and there is no stride or
  overflow output.
- Training is single-threaded and keeps every distinct word of the corpus in memory.
- decode() cannot restore the original spacing or case. It joins tokens with spaces and
  then removes the spaces before . , ! ? and in contractions, as Hugging Face does.
"""

import argparse
import collections
import gzip
import heapq
import itertools
import numbers
import os
import re
import sys
import tempfile
import time
import unicodedata
import zlib

# BERT's special tokens, in the order train_vocab() puts them at the top of a vocabulary.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS

# google-research/bert splits longer words into a single [UNK] without trying WordPiece.
MAX_INPUT_CHARS_PER_WORD = 100

# Distinct words kept in the word cache; when it is full it is cleared and refilled.
WORD_CACHE_SIZE = 1 << 18

# Characters outside printable ASCII and tab/newline/carriage return. Only these runs need
# the per-character cleaning map, so clean ASCII text is scanned once by the regex engine.
_UNUSUAL_RUN_RE = re.compile(r"[^\t\n\r\x20-\x7e]+")

# ASCII characters that BERT treats as punctuation: every non-letter, non-digit symbol.
_ASCII_PUNCTUATION = "".join(
    chr(c) for c in range(128) if 33 <= c <= 47 or 58 <= c <= 64 or 91 <= c <= 96 or 123 <= c <= 126
)
_ASCII_PUNCT_SPLIT_RE = re.compile(
    "[{0}]|[^{0}]+".format(re.escape(_ASCII_PUNCTUATION))
)


# ---------------------------------------------------------------- character classes


def _is_control(char: str) -> bool:
    # Tab, newline and carriage return are Cc but act as whitespace.
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    # "^", "$" and "`" are not Unicode punctuation, but BERT splits all ASCII symbols.
    if char in _ASCII_PUNCTUATION:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    # The CJK Unified Ideographs blocks and their extensions and compatibility blocks,
    # the ranges google-research/bert uses. Hangul, Hiragana and Katakana are not here.
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class _CleaningMap(dict):
    """str.translate table, filled on first use of each character.

    A character maps to None (deleted: NUL, U+FFFD, control and format characters), to
    itself padded with spaces (CJK ideographs, when split), or to itself.
    """

    def __init__(self, tokenize_chinese_chars: bool):
        super().__init__()
        self.tokenize_chinese_chars = tokenize_chinese_chars

    def __missing__(self, cp: int):
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            value = None
        elif self.tokenize_chinese_chars and _is_chinese_char(cp):
            value = " " + char + " "
        else:
            value = char
        self[cp] = value
        return value


_CLEANING_MAPS = {True: _CleaningMap(True), False: _CleaningMap(False)}


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _split_on_punctuation(word: str) -> list[str]:
    if word.isascii():
        return _ASCII_PUNCT_SPLIT_RE.findall(word)
    pieces = []
    current = []
    for char in word:
        if _is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


class _WordCache(dict):
    """Dict from a word to its split, computing missing entries with `split_word`."""

    def __init__(self, split_word):
        super().__init__()
        self.split_word = split_word

    def __missing__(self, word: str):
        value = self.split_word(word)
        self[word] = value
        return value


# ---------------------------------------------------------------- basic tokenization


class BasicTokenizer:
    """Stage 1: cleaning, CJK splitting, lowercasing, accent stripping, punctuation split.

    strip_accents=None follows `lowercase`, as in Hugging Face's BertTokenizer. A word in
    `never_split` is kept whole, either as written or once lowercased and accent-stripped
    (the reference checks at both points).
    """

    def __init__(
        self,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split=None,
    ):
        self.lowercase = bool(lowercase)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.never_split = frozenset(never_split or ())
        self._cleaning_map = _CLEANING_MAPS[self.tokenize_chinese_chars]
        self._do_strip = self.strip_accents or (self.lowercase and self.strip_accents is None)

    def _clean_run(self, match: re.Match) -> str:
        return match.group().translate(self._cleaning_map)

    def split_whitespace(self, text: str) -> list[str]:
        """Clean `text` and split it on whitespace (the words that the word cache keys on)."""
        if text.isascii():
            # Printable ASCII needs no cleaning and is already NFC.
            if not text.isprintable():
                text = _UNUSUAL_RUN_RE.sub(self._clean_run, text)
            return text.split()
        text = _UNUSUAL_RUN_RE.sub(self._clean_run, text)
        return unicodedata.normalize("NFC", text).split()

    def split_word(self, word: str) -> list[str]:
        """Lowercase, strip accents and split off punctuation in one whitespace-free word."""
        if word in self.never_split:
            return [word]
        if self.lowercase:
            word = word.lower()
        if word.isascii():
            # Fast path: ASCII has no accents and no whitespace inside a word.
            if word.isalnum() or word in self.never_split:
                return [word]
            return _ASCII_PUNCT_SPLIT_RE.findall(word)
        if self._do_strip:
            word = _strip_accents(word)
        if word in self.never_split:
            return [word]
        pieces = []
        for piece in _split_on_punctuation(word):
            # Lowercasing or NFD could in theory produce whitespace, and the reference
            # splits on whitespace once more at the end, so do the same.
            pieces.extend(piece.split())
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Return the basic tokens of `text`; special tokens are not cut out first."""
        tokens = []
        for word in self.split_whitespace(text):
            tokens.extend(self.split_word(word))
        return tokens


# ---------------------------------------------------------------- the tokenizer


def _check_tokens(tokens: list[str], source: str) -> None:
    """Raise ValueError if `tokens` is empty, has duplicates or lacks a special token."""
    if not tokens:
        raise ValueError(
            f"{source} is empty; a vocabulary needs at least {', '.join(SPECIAL_TOKENS)}"
        )
    first_line = {}
    for line, token in enumerate(tokens, start=1):
        if not isinstance(token, str):
            raise ValueError(f"{source}: entry {line} is {token!r}, expected a str token")
        if token == "":
            raise ValueError(f"{source}: line {line} is empty; remove the blank line")
        if token in first_line:
            raise ValueError(
                f"{source}: duplicate token {token!r} on lines {first_line[token]} and {line}; "
                "remove one, because each token's position in the file is its id"
            )
        first_line[token] = line
    missing = [t for t in SPECIAL_TOKENS if t not in first_line]
    if missing:
        raise ValueError(
            f"{source} is missing the special token(s) {', '.join(missing)}; "
            "add them (train_vocab() puts them on the first lines)"
        )


class Tokenizer:
    """BERT's WordPiece tokenizer: text to ids and back, identical to the reference.

    tokens: the vocabulary, id = position in the list. It must contain [PAD] [UNK] [CLS]
    [SEP] [MASK] and no duplicates.
    """

    def __init__(
        self,
        tokens: list[str],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split=None,
        *,
        source: str = "token list",
    ):
        tokens = list(tokens)
        _check_tokens(tokens, source)
        self.tokens = tokens
        self.ids_to_tokens = tokens
        self.vocab = {token: i for i, token in enumerate(tokens)}
        self.user_never_split = frozenset(never_split or ())
        # The reference passes the special tokens to basic tokenization as never_split too.
        # That matters when cleaning joins one ("[MA\x00SK]" gives [MASK]).
        self.basic = BasicTokenizer(
            lowercase, strip_accents, tokenize_chinese_chars,
            self.user_never_split | set(SPECIAL_TOKENS),
        )

        self.pad_token_id = self.vocab[PAD]
        self.unk_token_id = self.vocab[UNK]
        self.cls_token_id = self.vocab[CLS]
        self.sep_token_id = self.vocab[SEP]
        self.mask_token_id = self.vocab[MASK]
        self.special_ids = {self.vocab[t] for t in SPECIAL_TOKENS}

        # No vocabulary piece is longer than this, so longer substrings need no lookup.
        self._max_piece_chars = max(len(t) for t in tokens)
        # Special tokens are cut out of the raw text before cleaning. The capturing group
        # makes re.split keep them; longest first so no token is matched by a prefix.
        by_length = sorted(SPECIAL_TOKENS, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, by_length)) + ")")
        # Caches from a raw word to its ids or tokens, and from a basic token to its
        # WordPiece tokens or ids, which serve raw words that differ in case or punctuation.
        self._piece_cache = _WordCache(self._basic_token_pieces)
        self._piece_id_cache = _WordCache(self._wordpiece_ids)
        self._token_cache = _WordCache(self._split_word_tokens)
        self._id_cache = _WordCache(self._split_word_ids)

    @classmethod
    def from_file(
        cls,
        vocab_path: str,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split=None,
    ) -> "Tokenizer":
        """Load a vocab.txt (one token per line, the line number from 0 is the id).

        A directory is read as the vocab.txt inside it.
        """
        path = os.fspath(vocab_path)
        if os.path.isdir(path):
            path = os.path.join(path, "vocab.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                # Universal newlines, then a split on "\n" only, like the reference's
                # readlines(): a token may contain characters that str.splitlines() splits on.
                lines = f.read().split("\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"vocabulary file {path} is not valid UTF-8: {e}") from None
        if lines and lines[-1] == "":
            lines.pop()
        return cls(
            lines, lowercase, strip_accents, tokenize_chinese_chars, never_split,
            source=f"vocabulary file {path}",
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Tokenizer(V={len(self)}, {self.config()})"

    def config(self) -> dict:
        """Return the options, so that Tokenizer(tok.tokens, **tok.config()) rebuilds tok."""
        return {
            "lowercase": self.basic.lowercase,
            "strip_accents": self.basic.strip_accents,
            "tokenize_chinese_chars": self.basic.tokenize_chinese_chars,
            "never_split": sorted(self.user_never_split),
        }

    def save(self, vocab_path: str) -> None:
        """Write the vocabulary as vocab.txt, atomically (temp file, then rename)."""
        _write_lines_atomic(vocab_path, self.tokens)

    # -------------------------------------------------------------- WordPiece

    def wordpiece(self, word: str) -> list[str]:
        """Split one basic token greedily, longest match first, into vocabulary pieces."""
        n = len(word)
        if n > MAX_INPUT_CHARS_PER_WORD:
            return [UNK]
        vocab = self.vocab
        pieces = []
        start = 0
        while start < n:
            prefix = "##" if start > 0 else ""
            end = min(n, start + self._max_piece_chars)
            while end > start:
                piece = prefix + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                # No prefix of the rest is in the vocabulary: the whole word is unknown.
                return [UNK]
            pieces.append(piece)
            start = end
        return pieces

    def _basic_token_pieces(self, basic_token: str) -> list[str]:
        # The reference skips WordPiece for a user's never_split token, even one that is
        # not in the vocabulary (its id is then [UNK]'s).
        if basic_token in self.user_never_split:
            return [basic_token]
        return self.wordpiece(basic_token)

    def _split_word_tokens(self, word: str) -> tuple:
        pieces = []
        for basic_token in self.basic.split_word(word):
            pieces.extend(self._piece_cache[basic_token])
        return tuple(pieces)

    def _split_word_ids(self, word: str) -> tuple:
        ids = []
        for basic_token in self.basic.split_word(word):
            ids.extend(self._piece_id_cache[basic_token])
        return tuple(ids)

    def _wordpiece_ids(self, basic_token: str) -> tuple:
        vocab = self.vocab
        unk = self.unk_token_id
        return tuple(vocab.get(t, unk) for t in self._piece_cache[basic_token])

    def _limit_caches(self) -> None:
        caches = (self._id_cache, self._token_cache, self._piece_cache, self._piece_id_cache)
        for cache in caches:
            if len(cache) > WORD_CACHE_SIZE:
                cache.clear()

    # -------------------------------------------------------------- text to tokens / ids

    def _split_text(self, text: str, cache: dict) -> list:
        if not isinstance(text, str):
            raise TypeError(f"expected a str to tokenize, got {type(text).__name__}")
        parts = self._special_re.split(text)
        if len(parts) == 1:
            words = self.basic.split_whitespace(text)
            out = list(itertools.chain.from_iterable(map(cache.__getitem__, words)))
        else:
            # Odd positions hold the special tokens matched by the capturing group.
            out = []
            for i, part in enumerate(parts):
                if i % 2:
                    out.extend(cache[part])
                elif part:
                    words = self.basic.split_whitespace(part)
                    out.extend(itertools.chain.from_iterable(map(cache.__getitem__, words)))
        self._limit_caches()
        return out

    def split_special_tokens(self, text: str) -> list[str]:
        """Split raw text around special tokens, which end up at the odd positions."""
        return self._special_re.split(text)

    def basic_tokenize(self, text: str) -> list[str]:
        """Return the tokens of stage 1 (before WordPiece), special tokens kept whole."""
        tokens = []
        for i, part in enumerate(self.split_special_tokens(text)):
            if i % 2:
                tokens.append(part)
                continue
            for word in self.basic.split_whitespace(part):
                tokens.extend(self.basic.split_word(word))
        return tokens

    def tokenize(self, text: str) -> list[str]:
        """Return the WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self._split_text(text, self._token_cache)

    def text_to_ids(self, text: str) -> list[int]:
        """Return the token ids of `text`, without [CLS]/[SEP] (fast path of encode)."""
        return self._split_text(text, self._id_cache)

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        """Map tokens to ids; tokens outside the vocabulary map to [UNK]'s id."""
        vocab = self.vocab
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return vocab.get(tokens, unk)
        return [vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """Map ids to tokens; raise ValueError for an id outside [0, V)."""
        if isinstance(ids, numbers.Integral):
            return self.convert_ids_to_tokens([ids])[0]
        tokens = self.ids_to_tokens
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(tokens):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(tokens)})")
            out.append(tokens[i])
        return out

    # -------------------------------------------------------------- model inputs

    def encode(
        self,
        text: str,
        pair: str | None = None,
        max_length: int | None = None,
        padding=False,
        truncation: bool = True,
    ) -> dict:
        """Build BERT inputs: [CLS] text [SEP] or [CLS] text [SEP] pair [SEP].

        truncation: cut to max_length, longest text first, on a tie from `pair`.
        padding: False, True or "longest" (no effect on one text), or "max_length".
        Returns input_ids, token_type_ids (0 for text, 1 for pair) and attention_mask,
        each a list of T ints.
        """
        _check_padding(padding, max_length)
        ids_a = self.text_to_ids(text)
        ids_b = None if pair is None else self.text_to_ids(pair)
        encoded = self._build_inputs(ids_a, ids_b, max_length, truncation)
        if padding == "max_length":
            self._pad(encoded, max_length)
        return encoded

    def encode_batch(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        max_length: int | None = None,
        padding=False,
        truncation: bool = True,
    ) -> dict:
        """Encode B texts (or text pairs); same options as encode().

        padding=True or "longest" pads every row to the longest row of the batch.
        Returns a dict of lists of B lists.
        """
        _check_padding(padding, max_length)
        if isinstance(texts, str):
            raise TypeError("encode_batch() expects a list of texts; use encode() for one text")
        texts = list(texts)
        if pairs is not None:
            pairs = list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(
                    f"got {len(texts)} texts but {len(pairs)} pairs; pass one pair per text"
                )
        rows = []
        for b, text in enumerate(texts):
            ids_a = self.text_to_ids(text)
            ids_b = None if pairs is None else self.text_to_ids(pairs[b])
            rows.append(self._build_inputs(ids_a, ids_b, max_length, truncation))
        if padding == "max_length":
            target = max_length
        elif padding in (True, "longest"):
            target = max((len(r["input_ids"]) for r in rows), default=0)
        else:
            target = None
        if target is not None:
            for row in rows:
                self._pad(row, target)
        keys = ("input_ids", "token_type_ids", "attention_mask")
        return {key: [row[key] for row in rows] for key in keys}

    def _build_inputs(self, ids_a, ids_b, max_length, truncation) -> dict:
        n_special = 2 if ids_b is None else 3
        if max_length is not None and truncation:
            if max_length < n_special:
                raise ValueError(
                    f"max_length={max_length} leaves no room for the {n_special} special "
                    f"tokens; use max_length >= {n_special}"
                )
            ids_a, ids_b = truncate_longest_first(ids_a, ids_b, max_length - n_special)
        input_ids = [self.cls_token_id, *ids_a, self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if ids_b is not None:
            input_ids += ids_b
            input_ids.append(self.sep_token_id)
            token_type_ids += [1] * (len(ids_b) + 1)
        attention_mask = [1] * len(input_ids)
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
        }

    def _pad(self, encoded: dict, length: int) -> None:
        # Right padding; rows already at or over `length` (truncation=False) stay as they are.
        extra = length - len(encoded["input_ids"])
        if extra > 0:
            encoded["input_ids"] += [self.pad_token_id] * extra
            encoded["token_type_ids"] += [0] * extra
            encoded["attention_mask"] += [0] * extra

    # -------------------------------------------------------------- ids to text

    def decode(
        self,
        ids: list[int],
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = True,
    ) -> str:
        """Turn ids back into text: join tokens with spaces and glue '##' pieces on.

        clean_up_tokenization_spaces removes the space before . ? ! , and in English
        contractions ("don ' t" -> "don't"), as Hugging Face's BertTokenizer does.
        """
        tokens = self.convert_ids_to_tokens(ids)
        if skip_special_tokens:
            specials = set(SPECIAL_TOKENS)
            tokens = [t for t in tokens if t not in specials]
        text = " ".join(tokens).replace(" ##", "").strip()
        if clean_up_tokenization_spaces:
            text = (
                text.replace(" .", ".")
                .replace(" ?", "?")
                .replace(" !", "!")
                .replace(" ,", ",")
                .replace(" ' ", "'")
                .replace(" n't", "n't")
                .replace(" 'm", "'m")
                .replace(" 's", "'s")
                .replace(" 've", "'ve")
                .replace(" 're", "'re")
            )
        return text


def _check_padding(padding, max_length) -> None:
    if padding not in (False, True, "longest", "max_length"):
        raise ValueError(
            f"padding={padding!r} is not supported; use False, True, 'longest' or 'max_length'"
        )
    if padding == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length; pass max_length=T")
    if max_length is not None and max_length < 0:
        raise ValueError(f"max_length={max_length} is negative; pass a positive length")


def truncate_longest_first(ids_a: list[int], ids_b: list[int] | None, budget: int):
    """Cut ids_a and ids_b to at most `budget` tokens in total, removing from the end.

    The longer list loses a token first; on a tie ids_b does, as google-research/bert's
    _truncate_seq_pair and Hugging Face's "longest_first" do. Returns (ids_a, ids_b).
    """
    if ids_b is None:
        return ids_a[:budget], None
    excess = len(ids_a) + len(ids_b) - budget
    if excess <= 0:
        return ids_a, ids_b
    # Closed form of popping one token at a time from the longer list.
    len_a, len_b = len(ids_a), len(ids_b)
    first = min(abs(len_a - len_b), excess)
    rest = excess - first
    if len_a > len_b:
        cut_a, cut_b = first + rest // 2, rest - rest // 2
    else:
        cut_a, cut_b = rest // 2, first + rest - rest // 2
    return ids_a[: len_a - cut_a], ids_b[: len_b - cut_b]


def _write_lines_atomic(path: str, lines: list[str]) -> None:
    """Write one line per entry to `path` through a temporary file in the same folder.

    Raises IsADirectoryError or FileNotFoundError naming `path` when it is a folder or
    its folder does not exist, and any other OSError with `path` (not the temporary
    file) in the message.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a folder; give a file path such as {os.path.join(path, 'vocab.txt')}"
        )
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"cannot write {path}: folder {folder} does not exist; create it first"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".vocab-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise type(e)(
            f"cannot write {path}: {e.strerror or e}; choose a writable folder"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line + "\n")
        # mkstemp creates the file readable by its owner only; give it a normal file's mode.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        # A Ctrl-C that lands just after os.replace() finds the temporary file renamed.
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise type(e)(f"cannot write {path}: {e.strerror or e}") from None
        raise


# ---------------------------------------------------------------- vocabulary training


def count_words(
    texts,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> collections.Counter:
    """Count the basic tokens of `texts` (special tokens in the text are left out)."""
    basic = BasicTokenizer(lowercase, strip_accents, tokenize_chinese_chars)
    special_re = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
    word_counts = collections.Counter()
    for text in texts:
        word_counts.update(basic.split_whitespace(special_re.sub(" ", text)))
    basic_counts = collections.Counter()
    for word, count in word_counts.items():
        for token in basic.split_word(word):
            basic_counts[token] += count
    return basic_counts


class VocabSizeError(ValueError):
    """The error of a vocab_size below the special tokens plus the alphabet.

    `alphabet_size` is the alphabet's entry count, for callers that word their own message.
    """

    def __init__(self, vocab_size: int, special_count: int, alphabet_size: int):
        super().__init__(
            f"vocab_size={vocab_size} is smaller than the {special_count} special tokens "
            f"plus the {alphabet_size}-entry alphabet; raise vocab_size or lower limit_alphabet"
        )
        self.alphabet_size = alphabet_size


def train_vocab(
    texts,
    vocab_size: int,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    special_tokens=SPECIAL_TOKENS,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> list[str]:
    """Learn a WordPiece vocabulary of `vocab_size` tokens from an iterable of texts.

    Layout: special tokens, then the alphabet (the `limit_alphabet` most frequent
    characters, in word-initial and '##' forms as they occur), then merged tokens in the
    order learned. A merge joins the adjacent pair with the highest score
    count(ab) / (count(a) * count(b)) among pairs seen at least `threshold` times. The
    threshold starts at a quarter of the most frequent pair's count and halves whenever no
    pair reaches it, down to `min_frequency`, so frequent words are learned before rare ones.
    The result can be shorter than vocab_size, without a warning: merging stops when no
    pair occurs `min_frequency` times, as on a small corpus, so compare its len() with
    vocab_size. Words with a character outside the alphabet or longer than 100
    characters are not learned from.
    """
    special_tokens = list(special_tokens)
    missing = [t for t in SPECIAL_TOKENS if t not in special_tokens]
    if missing:
        raise ValueError(
            f"special_tokens lacks {', '.join(missing)}; add them, the Tokenizer needs all five"
        )
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens {special_tokens} has duplicates; list each once")
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} is invalid; use 1 or more")
    if limit_alphabet < 1:
        raise ValueError(f"limit_alphabet={limit_alphabet} is invalid; use 1 or more")
    word_counts = count_words(texts, lowercase, strip_accents, tokenize_chinese_chars)
    word_counts = {
        w: c for w, c in word_counts.items() if len(w) <= MAX_INPUT_CHARS_PER_WORD
    }

    # Alphabet: the most frequent characters; ties go to the lower code point.
    char_counts = collections.Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    ranked = sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    alphabet = {char for char, _ in ranked[:limit_alphabet]}
    words = [(w, c) for w, c in word_counts.items() if all(ch in alphabet for ch in w)]

    initial = sorted({w[0] for w, _ in words})
    continuation = sorted({"##" + ch for w, _ in words for ch in w[1:]})
    vocab = list(special_tokens)
    seen = set(vocab)
    for token in initial + continuation:
        if token not in seen:
            vocab.append(token)
            seen.add(token)
    if vocab_size < len(vocab):
        raise VocabSizeError(vocab_size, len(special_tokens), len(vocab) - len(special_tokens))
    merges = _learn_merges(words, vocab_size - len(vocab), min_frequency, seen)
    return vocab + merges


def _learn_merges(words, n_merges: int, min_frequency: int, existing: set) -> list[str]:
    """Run the WordPiece merge loop over (word, count) pairs; return the new tokens.

    Symbols are ints. Each step updates only the words that contain the merged pair.
    The heap contains an entry for every (pair, score) pushed so far. An entry whose score
    differs from the pair's current one is stale and skipped: every change of a pair count
    or of a symbol count pushes a fresh entry for each pair it affects.
    """
    symbol_ids = {}
    names = []

    def symbol(name: str) -> int:
        if name not in symbol_ids:
            symbol_ids[name] = len(names)
            names.append(name)
        return symbol_ids[name]

    seqs = []
    counts = []
    for word, count in words:
        seqs.append([symbol(word[0])] + [symbol("##" + ch) for ch in word[1:]])
        counts.append(count)

    symbol_count = collections.Counter()
    pair_count = collections.Counter()
    pair_words = collections.defaultdict(set)  # pair -> indices of words containing it
    symbol_pairs = collections.defaultdict(set)  # symbol -> pairs it is part of
    for w, seq in enumerate(seqs):
        c = counts[w]
        for s in seq:
            symbol_count[s] += c
        for pair in zip(seq, seq[1:]):
            pair_count[pair] += c
            pair_words[pair].add(w)
    for a, b in pair_count:
        symbol_pairs[a].add((a, b))
        symbol_pairs[b].add((a, b))

    def heap_entry(pair, n):
        # Highest score first, then the higher count, then the names in alphabetical order.
        # Symbol names break ties, so the result does not depend on the order of the texts.
        a, b = pair
        return (-n / (symbol_count[a] * symbol_count[b]), -n, names[a], names[b], pair)

    heap = [heap_entry(p, n) for p, n in pair_count.items() if n >= min_frequency]
    heapq.heapify(heap)

    # The score alone prefers pairs of rare symbols: two letters seen only in one rare word
    # score 1/c, while "t" + "##h" scores far less, so common words would stay spelled out
    # letter by letter. A frequency floor fixes that: only pairs seen at least `threshold`
    # times compete, and the floor halves whenever none is left, down to min_frequency.
    learned = []
    threshold = max(min_frequency, max(pair_count.values(), default=0) // 4)
    deferred = []  # valid entries below the current floor
    while len(learned) < n_merges:
        if not heap:
            if threshold <= min_frequency or not deferred:
                break
            threshold = max(min_frequency, threshold // 2)
            heap = [heap_entry(p, pair_count[p]) for p in {e[-1] for e in deferred}
                    if pair_count.get(p, 0) >= min_frequency]
            heapq.heapify(heap)
            deferred = []
            continue
        entry = heapq.heappop(heap)
        pair = entry[-1]
        n = pair_count.get(pair, 0)
        if n < min_frequency or entry != heap_entry(pair, n):
            continue  # stale: a newer entry for this pair is in the heap
        if n < threshold:
            deferred.append(entry)
            continue
        a, b = pair

        # Name the new symbol; "##" of the right part is dropped ("th" + "##e" -> "the").
        name = names[a] + names[b][2:]
        new = symbol(name)
        if name not in existing:
            existing.add(name)
            learned.append(name)

        # Rewrite every word containing the pair and collect the count changes.
        changed_pairs = set()
        for w in list(pair_words[pair]):
            seq = seqs[w]
            c = counts[w]
            old_pairs = collections.Counter(zip(seq, seq[1:]))
            merged = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    merged.append(new)
                    symbol_count[a] -= c
                    symbol_count[b] -= c
                    symbol_count[new] += c
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            seqs[w] = merged
            new_pairs = collections.Counter(zip(merged, merged[1:]))
            for p in old_pairs.keys() | new_pairs.keys():
                delta = new_pairs[p] - old_pairs[p]
                if delta:
                    pair_count[p] += delta * c
                    changed_pairs.add(p)
                if p not in new_pairs:
                    pair_words[p].discard(w)
                elif p not in old_pairs:
                    pair_words[p].add(w)
                    symbol_pairs[p[0]].add(p)
                    symbol_pairs[p[1]].add(p)

        # Drop pairs that no longer occur, then re-score every pair whose count or whose
        # parts' counts changed: the parts' counts fall, so their other pairs score higher.
        for p in changed_pairs:
            if pair_count[p] <= 0:
                del pair_count[p]
                pair_words.pop(p, None)
                symbol_pairs[p[0]].discard(p)
                symbol_pairs[p[1]].discard(p)
        rescore = set(changed_pairs)
        rescore.update(symbol_pairs[a])
        rescore.update(symbol_pairs[b])
        rescore.update(symbol_pairs[new])
        for p in rescore:
            n = pair_count.get(p, 0)
            if n >= min_frequency:
                heapq.heappush(heap, heap_entry(p, n))
    return learned


# ---------------------------------------------------------------- command line


def corpus_files(path: str) -> list[str]:
    """List the corpus files of one path: the file itself, or a folder's .txt and .gz files.

    A folder is searched recursively, in sorted order, skipping hidden files and folders.
    Raises FileNotFoundError for a missing path and ValueError for a folder without
    .txt or .gz files.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"corpus path {path} not found; pass an existing text or .gz file or a folder"
        )
    files = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        files.extend(
            os.path.join(folder, name) for name in names
            if not name.startswith(".") and name.endswith((".txt", ".gz"))
        )
    if not files:
        raise ValueError(
            f"corpus folder {path} contains no .txt or .gz files; add text files or pass "
            "a file instead"
        )
    return sorted(files)


def read_corpus(path: str):
    """Yield the non-empty lines of a UTF-8 text file, gzip-compressed if it ends in .gz.

    Raises FileNotFoundError for a missing file and ValueError naming the file for text
    that is not UTF-8 and for a .gz file that is not gzip data or is truncated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    is_gzip = path.endswith(".gz")
    if is_gzip:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise ValueError(
                    f"corpus file {path} ends in .gz but is not gzip data; compress it with "
                    "gzip or rename it"
                )
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    yield line
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {path} is not valid UTF-8: {e}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(
            f"corpus file {path} is a corrupt or truncated gzip file ({e}); download or "
            "compress it again"
        ) from None


def unk_rate(tokenizer: Tokenizer, texts) -> float:
    """Fraction of tokens that are [UNK] when `texts` are tokenized."""
    n_tokens = 0
    n_unk = 0
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer.text_to_ids(text)
        n_tokens += len(ids)
        n_unk += ids.count(unk)
    return n_unk / max(n_tokens, 1)


def _default_vocab_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "testdata", "bert-base-uncased-vocab.txt")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2, like the script's other errors."""

    def error(self, message: str):
        self.exit(2, f"tokenizer.py: error: {message} (see --help)\n")


def _train_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="tokenizer.py train",
        description="Train a WordPiece vocabulary on a corpus and save it as vocab.txt.",
    )
    parser.add_argument("--corpus", required=True, nargs="+",
                        help="UTF-8 text files or folders of .txt/.gz files, one text per "
                             "line; .gz files are decompressed")
    parser.add_argument("--vocab-size", type=int, default=8192,
                        help="number of tokens in the vocabulary, special tokens included "
                             "(default: 8192)")
    parser.add_argument("--out", default="vocab.txt",
                        help="output vocab.txt path, in an existing folder, written "
                             "atomically (default: vocab.txt)")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="minimum count of a pair to be merged (default: 2)")
    parser.add_argument("--limit-alphabet", type=int, default=1000,
                        help="maximum number of distinct characters kept (default: 1000)")
    parser.add_argument("--cased", action="store_true",
                        help="keep case and accents (default: lowercase and strip accents)")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="tokenizer.py",
        description="Show how BERT's WordPiece tokenizer turns text into ids, stage by stage.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="To train a vocabulary instead:\n\n" + _train_parser().format_help(),
    )
    parser.add_argument("text", nargs="+", help="text to tokenize (several arguments are joined)")
    parser.add_argument("--vocab", default=None,
                        help="vocab.txt path (default: testdata/bert-base-uncased-vocab.txt "
                             "beside this file)")
    parser.add_argument("--pair", default=None, help="optional second text, encoded as a pair")
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate to this many tokens, specials included (default: none)")
    parser.add_argument("--cased", action="store_true",
                        help="keep case and accents (default: lowercase and strip accents)")
    return parser


def _check_demo_flags(args) -> None:
    """Reject invalid flag values of the demo before the vocabulary is loaded."""
    n_special = 2 if args.pair is None else 3
    if args.max_length is not None and args.max_length < n_special:
        specials = "[CLS] [SEP]" if args.pair is None else "[CLS] [SEP] [SEP] of a pair"
        raise ValueError(
            f"--max-length {args.max_length} is too small for the {n_special} special "
            f"tokens {specials}; pass {n_special} or more"
        )


def _run_demo(args) -> None:
    _check_demo_flags(args)
    vocab_path = args.vocab or _default_vocab_path()
    if not args.vocab and not os.path.exists(vocab_path):
        raise FileNotFoundError(f"vocabulary file not found: {vocab_path}; pass --vocab "
                                "PATH to a BERT vocab.txt (one token per line)")
    try:
        tok = Tokenizer.from_file(vocab_path, lowercase=not args.cased)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--vocab {args.vocab}: {e}; pass a BERT vocab.txt (one "
                                "token per line)") from None
    text = " ".join(args.text)
    print(f"vocabulary: {vocab_path} (V={len(tok)}, {tok.config()})")
    print(f"text:       {text!r}")
    parts = tok.split_special_tokens(text)
    print(f"1. special tokens cut out: {parts}")
    words = []
    for i, part in enumerate(parts):
        words.extend([part] if i % 2 else tok.basic.split_whitespace(part))
    print(f"2. cleaned (controls removed, CJK spaced, NFC), split on whitespace: {words}")
    basic = tok.basic_tokenize(text)
    print(f"3. lowercased, accents stripped, punctuation split: {basic}")
    pieces = tok.tokenize(text)
    print(f"4. WordPiece tokens ({len(pieces)}): {pieces}")
    print(f"5. ids: {tok.convert_tokens_to_ids(pieces)}")
    encoded = tok.encode(text, args.pair, max_length=args.max_length)
    print(f"6. encode() adds [CLS]/[SEP] (T={len(encoded['input_ids'])}):")
    print(f"   tokens:         {tok.convert_ids_to_tokens(encoded['input_ids'])}")
    for key, values in encoded.items():
        print(f"   {key + ':':15} {values}")
    print(f"7. decode(): {tok.decode(encoded['input_ids'])!r}")


def _check_out_path(path: str) -> None:
    """Reject an --out that cannot be written before training spends minutes on it."""
    if os.path.isdir(path):
        raise ValueError(
            f"--out {path} is a folder; give a file path such as "
            f"{os.path.join(path, 'vocab.txt')}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(
            f"--out {path}: folder {folder} does not exist; create it first or choose "
            "another path"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"--out {path}: folder {folder} is not writable; choose another path"
        )


def _check_train_flags(args) -> None:
    """Reject invalid flag values of `train` before the corpus is read."""
    n_special = len(SPECIAL_TOKENS)
    if args.vocab_size <= n_special:
        raise ValueError(
            f"--vocab-size {args.vocab_size} is too small; pass {n_special + 1} or more "
            f"(the {n_special} special tokens plus at least one character)"
        )
    if args.min_frequency < 1:
        raise ValueError(f"--min-frequency {args.min_frequency} is invalid; pass 1 or more")
    if args.limit_alphabet < 1:
        raise ValueError(f"--limit-alphabet {args.limit_alphabet} is invalid; pass 1 or more")


def _run_train(args) -> None:
    _check_train_flags(args)
    files = [f for path in args.corpus for f in corpus_files(path)]
    _check_out_path(args.out)
    print(f"training: corpus={args.corpus} ({len(files)} file{'s' * (len(files) > 1)}) "
          f"vocab_size={args.vocab_size} "
          f"min_frequency={args.min_frequency} limit_alphabet={args.limit_alphabet} "
          f"lowercase={not args.cased}")

    def texts():
        for path in files:
            yield from read_corpus(path)

    start = time.perf_counter()
    try:
        tokens = train_vocab(
            texts(), args.vocab_size, args.min_frequency, args.limit_alphabet,
            lowercase=not args.cased,
        )
    except VocabSizeError as e:
        # The library's message names the arguments vocab_size and limit_alphabet.
        minimum = len(SPECIAL_TOKENS) + e.alphabet_size
        raise ValueError(
            f"--vocab-size {args.vocab_size} is smaller than the {len(SPECIAL_TOKENS)} "
            f"special tokens plus the {e.alphabet_size}-entry alphabet of this corpus; "
            f"pass --vocab-size {minimum} or more, or a lower --limit-alphabet"
        ) from None
    seconds = time.perf_counter() - start
    if len(tokens) == len(SPECIAL_TOKENS):
        raise ValueError(
            f"corpus {', '.join(args.corpus)} is empty: it contains no words, only blank "
            "lines; pass a file with one text per line"
        )
    _write_lines_atomic(args.out, tokens)
    print(f"wrote {args.out}: {len(tokens)} tokens in {seconds:.1f} s")
    if len(tokens) < args.vocab_size:
        print(f"note: the vocabulary has only {len(tokens)} of the {args.vocab_size} tokens "
              f"of --vocab-size, because no pair of symbols is left that occurs "
              f"--min-frequency {args.min_frequency} times or more; use a larger corpus or "
              "a lower --min-frequency")
    tok = Tokenizer(tokens, lowercase=not args.cased)
    print(f"[UNK] rate on the corpus: {100 * unk_rate(tok, texts()):.3f}%")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    training = bool(argv) and argv[0] == "train"
    parser = _train_parser() if training else _demo_parser()
    args = parser.parse_args(argv[1:] if training else argv)
    try:
        _run_train(args) if training else _run_demo(args)
    except BrokenPipeError:
        # The reader of stdout (head, less) quit early. Point stdout at nothing, so the
        # interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"tokenizer.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"tokenizer.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # --out is written through a temporary file that is removed on interruption,
        # so Ctrl-C leaves either the old file or the complete new one.
        print("tokenizer.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
