"""Tests for tokenizer.py: parity with Hugging Face's BertTokenizer, errors, training, CLI.

Reference values come from testdata/make_tokenizer_cases.py (transformers
BertTokenizerLegacy on the bert-base-uncased vocabulary); transformers is not needed here.
"""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "tokenizer.py").is_file())
sys.path.insert(0, str(ROOT))

import tokenizer  # noqa: E402
from tokenizer import Tokenizer, train_vocab, truncate_longest_first  # noqa: E402

TESTDATA = ROOT / "testdata"
VOCAB = TESTDATA / "bert-base-uncased-vocab.txt"


@pytest.fixture(scope="module")
def bert():
    return Tokenizer.from_file(VOCAB)


@pytest.fixture(scope="module")
def cases():
    return json.loads((TESTDATA / "tokenizer_cases.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def corpus_lines():
    with gzip.open(ROOT / "wiki-vital-en.txt.gz", "rt", encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line]


def tiny_vocab(extra=()):
    return list(tokenizer.SPECIAL_TOKENS) + ["a", "b", "##a", "##b", "ab", *extra]


# ---------------------------------------------------------------- parity with the reference


def test_special_token_ids(bert):
    assert (bert.pad_token_id, bert.unk_token_id) == (0, 100)
    assert (bert.cls_token_id, bert.sep_token_id, bert.mask_token_id) == (101, 102, 103)
    assert bert.special_ids == {0, 100, 101, 102, 103}
    assert len(bert) == 30522


def test_hard_case_tokens(cases):
    tokenizers = {}
    text_cases = [c for c in cases if c["kind"] == "text"]
    assert len(text_cases) > 150
    for case in text_cases:
        key = json.dumps(case["options"], sort_keys=True)
        if key not in tokenizers:
            tokenizers[key] = Tokenizer.from_file(VOCAB, **case["options"])
        tok = tokenizers[key]
        where = f"{case['options']} {case['text']!r}"
        assert tok.tokenize(case["text"]) == case["tokens"], where
        assert tok.encode(case["text"])["input_ids"] == case["input_ids"], where


def test_hard_case_decode(bert, cases):
    for case in cases:
        if case["kind"] != "text" or case["options"]:
            continue
        where = repr(case["text"])
        assert bert.decode(case["input_ids"]) == case["decode"], where
        with_special = bert.decode(case["input_ids"], skip_special_tokens=False)
        assert with_special == case["decode_with_special"], where


def test_encode_truncation_padding(bert, cases):
    encode_cases = [c for c in cases if c["kind"] == "encode"]
    assert len(encode_cases) > 10
    for case in encode_cases:
        got = bert.encode(case["text"], case["pair"], case["max_length"], case["padding"])
        where = f"{case['text']!r} {case['pair']!r} max_length={case['max_length']}"
        assert got["input_ids"] == case["input_ids"], where
        assert got["token_type_ids"] == case["token_type_ids"], where
        assert got["attention_mask"] == case["attention_mask"], where


def test_encode_batch_cases(bert, cases):
    batch_cases = [c for c in cases if c["kind"] == "batch"]
    assert len(batch_cases) == 4
    for case in batch_cases:
        got = bert.encode_batch(case["texts"], case["pairs"], case["max_length"], case["padding"])
        where = f"{case['texts']!r} padding={case['padding']!r}"
        assert got["input_ids"] == case["input_ids"], where
        assert got["token_type_ids"] == case["token_type_ids"], where
        assert got["attention_mask"] == case["attention_mask"], where


def test_corpus_parity(bert, corpus_lines):
    rows = (TESTDATA / "tokenizer_corpus_digest.txt").read_text(encoding="utf-8").split("\n")
    expected = [row.split() for row in rows[1:] if row]
    assert len(corpus_lines) == len(expected)
    for number, (line, (n_ids, digest)) in enumerate(zip(corpus_lines, expected), start=1):
        ids = bert.encode(line)["input_ids"]
        got = hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=8).hexdigest()
        if got != digest or len(ids) != int(n_ids):
            # The digest stores no ids, so show ours and the words most likely to differ.
            unusual = [w for w in line.split() if not w.isascii()][:8]
            pytest.fail(
                f"corpus line {number} differs from the reference: {len(ids)} ids, reference "
                f"has {n_ids}; our first ids {ids[:16]}; non-ASCII words and our tokens "
                f"{[(w, bert.tokenize(w)) for w in unusual]}; line starts {line[:80]!r}"
            )


# ---------------------------------------------------------------- behaviour


def test_truncation_matches_pop_loop():
    # google-research/bert's _truncate_seq_pair: pop from the longer list, ties from b.
    for len_a in range(6):
        for len_b in range(6):
            for budget in range(11):
                a, b = list(range(len_a)), list(range(100, 100 + len_b))
                ref_a, ref_b = list(a), list(b)
                while len(ref_a) + len(ref_b) > budget:
                    (ref_a if len(ref_a) > len(ref_b) else ref_b).pop()
                got = truncate_longest_first(a, b, budget)
                assert got == (ref_a, ref_b), (len_a, len_b, budget)


def test_encode_without_truncation(bert):
    got = bert.encode("one two three four", max_length=4, truncation=False)
    assert len(got["input_ids"]) == 6


def test_encode_pads_to_max_length(bert):
    got = bert.encode("hi", max_length=5, padding="max_length")
    assert got["input_ids"] == [101, 7632, 102, 0, 0]
    assert got["attention_mask"] == [1, 1, 1, 0, 0]
    assert got["token_type_ids"] == [0, 0, 0, 0, 0]


def test_encode_rejects_bad_options(bert):
    with pytest.raises(ValueError, match="max_length"):
        bert.encode("hi", padding="max_length")
    with pytest.raises(ValueError, match="padding"):
        bert.encode("hi", padding="left")
    with pytest.raises(ValueError, match="max_length=2"):
        bert.encode("hi", "there", max_length=2)
    with pytest.raises(TypeError, match="str"):
        bert.encode(None)
    with pytest.raises(ValueError, match="pairs"):
        bert.encode_batch(["a", "b"], ["c"])


def test_decode_merges_wordpieces(bert):
    ids = bert.encode("Tokenization of unaffable words")["input_ids"]
    assert bert.decode(ids) == "tokenization of unaffable words"
    assert bert.decode(ids, skip_special_tokens=False).startswith("[CLS] tokenization")


def test_decode_numpy_ids(bert):
    np = pytest.importorskip("numpy")
    ids = np.array([101, 7592, 2088, 102], dtype=np.int64)
    assert bert.decode(ids) == "hello world"
    assert bert.convert_ids_to_tokens(ids[1]) == "hello"


def test_decode_rejects_bad_id(bert):
    with pytest.raises(ValueError, match="30522"):
        bert.decode([101, 30522])


def test_convert_tokens_and_ids(bert):
    assert bert.convert_tokens_to_ids(["hello", "##ing", "notaword"]) == [7592, 2075, 100]
    assert bert.convert_ids_to_tokens([7592, 2075, 103]) == ["hello", "##ing", "[MASK]"]


def test_cache_cleared_gives_same_ids(bert, corpus_lines, monkeypatch):
    expected = [bert.text_to_ids(line) for line in corpus_lines[:50]]
    fresh = Tokenizer(bert.tokens, **bert.config())
    monkeypatch.setattr(tokenizer, "WORD_CACHE_SIZE", 10)
    assert [fresh.text_to_ids(line) for line in corpus_lines[:50]] == expected
    assert len(fresh._id_cache) <= 10


def test_wordpiece_greedy_longest_match():
    tok = Tokenizer(tiny_vocab(["abab"]))
    assert tok.wordpiece("ababab") == ["abab", "##a", "##b"]
    assert tok.wordpiece("abc") == ["[UNK]"]
    assert tok.wordpiece("a" * 101) == ["[UNK]"]


def test_config_rebuilds_tokenizer(bert):
    cased = Tokenizer.from_file(VOCAB, lowercase=False, never_split=["New-York"])
    rebuilt = Tokenizer(cased.tokens, **cased.config())
    text = "Héllo New-York [MASK]"
    assert rebuilt.tokenize(text) == cased.tokenize(text)
    assert rebuilt.config() == cased.config()


# ---------------------------------------------------------------- vocabulary files


def test_save_and_load_round_trip(bert, tmp_path):
    path = tmp_path / "vocab.txt"
    bert.save(path)
    loaded = Tokenizer.from_file(path)
    assert loaded.tokens == bert.tokens
    assert path.read_bytes() == VOCAB.read_bytes()
    assert os.listdir(tmp_path) == ["vocab.txt"]


def test_load_directory(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    assert len(Tokenizer.from_file(tmp_path)) == 10


def test_vocab_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        Tokenizer.from_file(tmp_path / "nothere.txt")


def test_vocab_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        Tokenizer.from_file(path)


def test_vocab_missing_special(tmp_path):
    path = tmp_path / "nomask.txt"
    path.write_text("\n".join(t for t in tiny_vocab() if t != "[MASK]") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"nomask.txt is missing the special token\(s\) \[MASK\]"):
        Tokenizer.from_file(path)


def test_vocab_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("\n".join(tiny_vocab(["caf\xe9"])).encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not valid UTF-8"):
        Tokenizer.from_file(path)


def test_basic_tokenize_keeps_specials(bert):
    assert bert.basic_tokenize("Héllo of[MASK].") == ["hello", "of", "[MASK]", "."]


def test_vocab_duplicate_token(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("\n".join(tiny_vocab(["ab"])) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dup.txt: duplicate token 'ab' on lines 10 and 11"):
        Tokenizer.from_file(path)


# ---------------------------------------------------------------- vocabulary training


def test_train_picks_likelihood_score():
    # count(ab)/(count(a)*count(b)) = 3/9 loses to count(cd)/(count(c)*count(d)) = 1/1,
    # although a frequency-based merge (BPE) would join "ab" first.
    base = len(train_vocab(["ab ab ab cd"], vocab_size=9, min_frequency=1))
    vocab = train_vocab(["ab ab ab cd"], vocab_size=base + 1, min_frequency=1)
    assert vocab[-1] == "cd"


def test_train_respects_min_frequency():
    vocab = train_vocab(["ab ab ab cd"], vocab_size=10, min_frequency=2)
    assert vocab[-1] == "ab"
    assert len(vocab) == 10


def test_train_layout():
    vocab = train_vocab(["ab ab ab cd"], vocab_size=9, min_frequency=1)
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "c", "##b", "##d"]


def test_train_rejects_small_size():
    with pytest.raises(ValueError, match="vocab_size=6"):
        train_vocab(["ab ab ab cd"], vocab_size=6)


def naive_merges(word_counts, n_merges, min_frequency, existing):
    # Full recount of every pair and symbol before each merge: slow but plainly correct.
    segments = {w: [w[0]] + ["##" + ch for ch in w[1:]] for w in word_counts}
    learned = []
    threshold = None
    while len(learned) < n_merges:
        symbols, pairs = Counter(), Counter()
        for word, count in word_counts.items():
            segment = segments[word]
            for symbol in segment:
                symbols[symbol] += count
            for pair in zip(segment, segment[1:]):
                pairs[pair] += count
        if threshold is None:
            threshold = max(min_frequency, max(pairs.values()) // 4)
        candidates = [
            (-n / (symbols[a] * symbols[b]), -n, a, b)
            for (a, b), n in pairs.items() if n >= threshold
        ]
        if not candidates:
            if threshold <= min_frequency:
                break
            threshold = max(min_frequency, threshold // 2)
            continue
        _, _, a, b = min(candidates)
        name = a + b[2:]
        if name not in existing:
            existing.add(name)
            learned.append(name)
        for word, segment in segments.items():
            merged, i = [], 0
            while i < len(segment):
                if segment[i:i + 2] == [a, b]:
                    merged.append(name)
                    i += 2
                else:
                    merged.append(segment[i])
                    i += 1
            segments[word] = merged
    return learned


def test_train_matches_full_recount(corpus_lines):
    sample = corpus_lines[:30]
    base = len(train_vocab(sample, vocab_size=1000, limit_alphabet=10_000, min_frequency=10**9))
    vocab = train_vocab(sample, vocab_size=base + 150, limit_alphabet=10_000)
    word_counts = tokenizer.count_words(sample)
    expected = naive_merges(word_counts, 150, 2, set(vocab[:base]))
    assert len(expected) == 150
    assert vocab[base:] == expected


def test_train_on_corpus_sample(corpus_lines):
    sample = corpus_lines[:300]
    vocab = train_vocab(sample, vocab_size=1500)
    assert len(vocab) == 1500
    assert len(set(vocab)) == 1500
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert any(t.startswith("##") for t in vocab)
    tok = Tokenizer(vocab)
    assert tokenizer.unk_rate(tok, sample) < 0.01
    # Frequent words are learned whole, not spelled out letter by letter.
    assert tok.tokenize("the first of the") == ["the", "first", "of", "the"]
    held_out = corpus_lines[300:400]
    assert tokenizer.unk_rate(tok, held_out) < 0.01


# ---------------------------------------------------------------- command line and imports


def run_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / "tokenizer.py"), *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def test_cli_demo_prints_ids():
    result = run_cli("--vocab", str(VOCAB), "Hello, of[MASK].")
    assert result.returncode == 0, result.stderr
    assert "[101, 7592, 1010, 1997, 103, 1012, 102]" in result.stdout


def test_cli_missing_vocab_one_line(tmp_path):
    result = run_cli("--vocab", str(tmp_path / "none.txt"), "hi")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "none.txt" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_train(tmp_path):
    corpus = tmp_path / "corpus.txt.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as f:
        f.write("the cat sat on the mat\nthe dog sat on the log\n" * 5)
    out = tmp_path / "vocab.txt"
    result = run_cli("train", "--corpus", str(corpus), "--vocab-size", "25", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 25
    trained = Tokenizer.from_file(out)
    assert trained.decode(trained.encode("the cat")["input_ids"]) == "the cat"


def test_cli_train_reports_short_vocab(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 3, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    result = run_cli("train", "--corpus", str(corpus), "--vocab-size", "100", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "note: only" in result.stdout


def test_cli_help_documents_train():
    result = run_cli("--help")
    assert "--vocab-size" in result.stdout


def test_imports_alone(tmp_path):
    (tmp_path / "tokenizer.py").write_bytes((ROOT / "tokenizer.py").read_bytes())
    code = "import sys, tokenizer; print(tokenizer.__file__, sorted(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-E", "-s", "-c", code],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(tmp_path / "tokenizer.py"))
    assert "numpy" not in result.stdout
