"""Tests for infer.py, run as a subprocess the way a user runs it.

Fill-mask output is compared with transformers' fill-mask pipeline on testdata/tiny_hf
(testdata/fill_mask_reference.json, made by testdata/make_fill_mask_reference.py) and with
a softmax computed here from the model's own logits. Embeddings are compared with mean
pooling computed here. The generic checks run on every model in MODELS.
Run: python -m pytest wip_tests/test_infer.py
"""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bert  # noqa: E402
import infer  # noqa: E402
from autograd import no_grad  # noqa: E402

INFER = ROOT / "infer.py"
TINY_HF = ROOT / "testdata" / "tiny_hf"
TINY_HF_ENCODER = ROOT / "testdata" / "tiny_hf_encoder"
REFERENCE = ROOT / "testdata" / "fill_mask_reference.json"

# Models the generic tests run on. To add the shipped model, append ROOT / "bert_model.npz".
# The .npz path is covered by test_npz_matches_directory on the tiny model.
MODELS = [TINY_HF]

# tiny_hf has max_position_embeddings 32, so 30 tokens fit between [CLS] and [SEP].
TINY_BUDGET = 30
# Forty distinct single-token words of the tiny vocabulary.
WORDS = ("the an and of to in on at by with for from is was are be has had it he she they "
         "we you this that not cat dog sat ran mat sun day good big small red blue house "
         "tree").split()


def run_infer(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_cached(tuple(map(str, args)), stdin)


@functools.lru_cache(maxsize=None)
def run_cached(args: tuple, stdin: str | None) -> subprocess.CompletedProcess:
    # Several tests look at the same command from different sides; infer.py is
    # deterministic, so each distinct command runs once per session.
    return subprocess.run(
        [sys.executable, str(INFER), *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )


def infer_json(*args, stdin: str | None = None):
    result = run_infer("--json", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("infer") / "tiny.npz"
    model, tokenizer = bert.load(TINY_HF)
    bert.save(model, tokenizer, path)
    return path


@pytest.fixture(params=MODELS, ids=lambda p: Path(p).name)
def model_path(request) -> Path:
    return Path(request.param)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def assert_same_guesses(ours: list, theirs: list) -> None:
    """Check two fill-mask outputs name the same tokens, with scores within 1e-6.

    Scores are compared with a tolerance because float32 matrix products may round
    differently for a row at another place in the batch.
    """
    assert len(ours) == len(theirs)
    for our_text, their_text in zip(ours, theirs):
        assert len(our_text) == len(their_text)
        for our_mask, their_mask in zip(our_text, their_text):
            assert [g["token"] for g in our_mask] == [g["token"] for g in their_mask]
            assert [g["token_str"] for g in our_mask] == [g["token_str"] for g in their_mask]
            assert [g["sequence"] for g in our_mask] == [g["sequence"] for g in their_mask]
            assert np.allclose([g["score"] for g in our_mask],
                               [g["score"] for g in their_mask], atol=1e-6)


def strip_frame(sequence: str) -> str:
    """Drop the [CLS] and [SEP] that transformers keeps in multi-mask sequences."""
    return sequence.removeprefix("[CLS] ").removesuffix(" [SEP]")


# ---------------------------------------------------------------- fill-mask output

# One command whose output most fill-mask tests inspect: a text with one mask, one with
# two, and texts of different lengths, so the batch is padded.
TEXTS = ["she read a [MASK] book.", "the [MASK] sat on the [MASK].",
         "a big red dog ran by the river to the [mask] house.", "[Mask] is good."]
TOP_K = 10


def fill_texts(model_path) -> list:
    return infer_json("--model", model_path, "--top-k", TOP_K, *TEXTS)


def test_json_shape_and_fields(model_path):
    out = fill_texts(model_path)
    assert [len(per_text) for per_text in out] == [1, 2, 1, 1]
    for per_text in out:
        for guesses in per_text:
            assert len(guesses) == TOP_K
            for guess in guesses:
                assert set(guess) == {"score", "token", "token_str", "sequence"}
                assert isinstance(guess["score"], float)
                assert isinstance(guess["token"], int)
                assert isinstance(guess["token_str"], str)
                assert isinstance(guess["sequence"], str)


def test_scores_sorted_in_unit_interval(model_path):
    for per_text in fill_texts(model_path):
        for guesses in per_text:
            scores = [guess["score"] for guess in guesses]
            assert scores == sorted(scores, reverse=True)
            assert all(0.0 <= s <= 1.0 for s in scores)


def test_top_k_default_is_five(model_path):
    out = infer_json("--model", model_path, TEXTS[0])
    assert len(out[0][0]) == 5


def test_top_k_clamped_to_vocabulary(model_path):
    model, _ = bert.load(model_path)
    V = model.config.vocab_size
    out = infer_json("--model", model_path, "--top-k", str(V + 50), "the [MASK] sat.")
    guesses = out[0][0]
    assert len(guesses) == V
    assert len({g["token"] for g in guesses}) == V
    # Every token of the vocabulary is listed, so the probabilities sum to one.
    assert abs(sum(g["score"] for g in guesses) - 1.0) < 1e-6


def test_scores_match_model_softmax(model_path):
    out = fill_texts(model_path)
    model, tokenizer = bert.load(model_path)
    for text, per_text in zip(TEXTS, out):
        # One text at a time, without padding, unlike infer.py's batch.
        encoded = tokenizer.encode(text.replace("[mask]", "[MASK]").replace("[Mask]", "[MASK]"))
        ids = np.array([encoded["input_ids"]], dtype=np.int64)
        positions = np.flatnonzero(ids[0] == tokenizer.mask_token_id)
        with no_grad():
            logits, _ = model(ids, np.zeros_like(ids), np.ones_like(ids),
                              masked_positions=positions)
        logits = logits.data.astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        assert len(per_text) == len(positions), text
        for m, guesses in enumerate(per_text):
            expected = np.argsort(-probs[m])[:TOP_K]
            assert [g["token"] for g in guesses] == expected.tolist(), text
            assert np.allclose([g["score"] for g in guesses], probs[m, expected], atol=1e-6)


def test_matches_transformers_pipeline(reference):
    texts = [case["text"] for case in reference["cases"]]
    out = infer_json("--model", TINY_HF, "--top-k", reference["top_k"], *texts)
    for case, ours in zip(reference["cases"], out):
        expected = case["result"]
        assert len(ours) == len(expected), case["text"]
        for mine, theirs in zip(ours, expected):
            assert [g["token"] for g in mine] == [g["token"] for g in theirs], case["text"]
            assert [g["token_str"] for g in mine] == [g["token_str"] for g in theirs]
            assert np.allclose([g["score"] for g in mine], [g["score"] for g in theirs],
                               atol=1e-6)
            assert [g["sequence"] for g in mine] == [strip_frame(g["sequence"])
                                                     for g in theirs]


def test_npz_matches_directory(tiny_npz):
    assert_same_guesses(fill_texts(tiny_npz), fill_texts(TINY_HF))


def test_two_masks_keep_each_other(model_path):
    first, second = fill_texts(model_path)[1]
    for guess in first:
        assert guess["sequence"].endswith("on the [MASK].")
        assert not guess["sequence"].startswith("the [MASK]")
    for guess in second:
        assert guess["sequence"].startswith("the [MASK] sat")
        assert not guess["sequence"].endswith("[MASK].")


def test_plain_output_best_line(model_path):
    best = [per_mask[0]["token_str"] for per_mask in fill_texts(model_path)[1]]
    plain = run_infer("--model", model_path, "--top-k", TOP_K, TEXTS[1])
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert lines[0] == f"> {TEXTS[1]}"
    expected = f"the {best[0]} sat on the {best[1]}.".replace(" ##", "")
    assert lines[-1] == f"  best: {expected}"


def test_plain_output_lists_guesses(model_path):
    guesses = fill_texts(model_path)[0][0]
    plain = run_infer("--model", model_path, "--top-k", TOP_K, TEXTS[0]).stdout
    for guess in guesses:
        assert f"{guess['score']:.4f}  {guess['token_str']}" in plain
        assert guess["sequence"] in plain


def test_lowercase_mask_understood(model_path):
    upper, lower, mixed = infer_json("--model", model_path, "the [MASK] sat.",
                                     "the [mask] sat.", "the [Mask] sat.")
    assert_same_guesses([lower], [upper])
    assert_same_guesses([mixed], [upper])


def test_stdin_matches_arguments(model_path):
    from_arguments = fill_texts(model_path)
    from_stdin = infer_json("--model", model_path, "--top-k", TOP_K, "--batch-size", "3", "-",
                            stdin="\n".join(TEXTS) + "\n")
    assert_same_guesses(from_stdin, from_arguments)


def test_stdin_skips_blank_lines():
    result = run_infer("--json", "--model", TINY_HF, "-",
                       stdin="the [MASK] sat.\n\n   \n[MASK] is good.\r\n")
    assert result.returncode == 0
    assert len(json.loads(result.stdout)) == 2
    assert "skipped 2 blank lines" in result.stderr


def test_stdin_mixed_with_arguments():
    out = infer_json("--model", TINY_HF, "the [MASK] sat.", "-", "[MASK] is good.",
                     stdin="a [MASK] ran.\n")
    sequences = [per_text[0][0]["sequence"] for per_text in out]
    assert sequences[0].endswith(" sat.")
    assert sequences[1].endswith(" ran.")
    assert sequences[2].endswith(" is good.")


# ---------------------------------------------------------------- long texts


def test_long_text_keeps_mask_at_end():
    words = WORDS[:39] + ["[MASK]"]
    result = run_infer("--json", "--model", TINY_HF, " ".join(words))
    assert result.returncode == 0
    assert "warning" in result.stderr
    assert "40 tokens" in result.stderr
    window = infer_json("--model", TINY_HF, " ".join(words[-TINY_BUDGET:]))
    assert_same_guesses(json.loads(result.stdout), window)


def test_long_text_keeps_mask_at_start():
    words = ["[MASK]"] + WORDS[:39]
    result = run_infer("--json", "--model", TINY_HF, " ".join(words))
    assert result.returncode == 0
    assert "warning" in result.stderr
    window = infer_json("--model", TINY_HF, " ".join(words[:TINY_BUDGET]))
    assert_same_guesses(json.loads(result.stdout), window)


def test_long_text_window_centred_on_masks():
    # Masks at word 15 and 20 of 40: the 30-token window has 12 words before the first
    # and 12 after the last, words 3 to 32.
    words = list(WORDS[:40])
    words[15] = words[20] = "[MASK]"
    result = run_infer("--json", "--model", TINY_HF, " ".join(words))
    assert result.returncode == 0
    window = infer_json("--model", TINY_HF, " ".join(words[3:33]))
    assert_same_guesses(json.loads(result.stdout), window)


def test_long_text_embed_keeps_start():
    text = " ".join(WORDS[:40])
    result = run_infer("--json", "--embed", "--model", TINY_HF, text)
    assert result.returncode == 0
    assert "warning" in result.stderr
    window = infer_json("--embed", "--model", TINY_HF, " ".join(WORDS[:TINY_BUDGET]))
    assert np.allclose(json.loads(result.stdout), window, atol=1e-6)


def test_sentence_transformers_length_limit(tmp_path):
    # sentence_bert_config.json's max_seq_length (here 10 tokens with [CLS] and [SEP])
    # is honoured, as sentence-transformers does.
    model_dir = tmp_path / "st_model"
    model_dir.mkdir()
    for file in TINY_HF.iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    (model_dir / "sentence_bert_config.json").write_text('{"max_seq_length": 10}')
    result = run_infer("--json", "--embed", "--model", model_dir, " ".join(WORDS[:20]))
    assert result.returncode == 0
    assert "20 tokens" in result.stderr
    window = infer_json("--embed", "--model", TINY_HF, " ".join(WORDS[:8]))
    assert np.allclose(json.loads(result.stdout), window, atol=1e-6)


# ---------------------------------------------------------------- embeddings


def test_embed_shape(model_path):
    out = infer_json("--embed", "--model", model_path, "the cat sat.", "a dog", "the sun")
    model, _ = bert.load(model_path)
    assert np.array(out).shape == (3, model.config.hidden_size)


def test_embed_normalize_unit_norm(model_path):
    out = np.array(infer_json("--embed", "--normalize", "--model", model_path,
                              "the cat sat on the mat.", "a dog"))
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_embed_normalize_is_scaled_mean(model_path):
    texts = ["the cat sat on the mat.", "a dog"]
    raw = np.array(infer_json("--embed", "--model", model_path, *texts))
    unit = np.array(infer_json("--embed", "--normalize", "--model", model_path, *texts))
    assert np.allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_embed_matches_mean_pooling(model_path):
    # Texts of different lengths, so infer.py pads the shorter ones in its batch.
    texts = ["the cat sat on the mat by the river.", "a dog", "she read a good book."]
    out = np.array(infer_json("--embed", "--model", model_path, *texts))
    model, tokenizer = bert.load(model_path)
    encoder = model.bert if isinstance(model, bert.BertForPreTraining) else model
    for i, text in enumerate(texts):
        ids = np.array([tokenizer.encode(text)["input_ids"]], dtype=np.int64)
        with no_grad():
            hidden = encoder.encode(ids).last_hidden_state.data[0]
        assert np.allclose(out[i], hidden.mean(axis=0), atol=1e-5), text


def test_embed_plain_matches_json(model_path):
    texts = ["the cat sat.", "a dog ran"]
    out = infer_json("--embed", "--model", model_path, *texts)
    plain = run_infer("--embed", "--model", model_path, *texts)
    assert plain.returncode == 0
    rows = [[float(x) for x in line.split()] for line in plain.stdout.splitlines()]
    assert rows == out


def test_embed_encoder_only_checkpoint():
    texts = ["the cat sat.", "a dog ran"]
    encoder_only = infer_json("--embed", "--model", TINY_HF_ENCODER, *texts)
    with_heads = infer_json("--embed", "--model", TINY_HF, *texts)
    assert np.allclose(encoder_only, with_heads, atol=1e-6)


def test_embed_stdin_matches_arguments():
    texts = ["the cat sat on the mat.", "a dog", "she read a good book by the river."]
    from_arguments = infer_json("--embed", "--model", TINY_HF, *texts)
    from_stdin = infer_json("--embed", "--batch-size", "2", "--model", TINY_HF, "-",
                            stdin="\n".join(texts))
    assert np.allclose(from_stdin, from_arguments, atol=1e-6)


# ---------------------------------------------------------------- errors


def check_error(result, code: int, phrase: str) -> None:
    assert result.returncode == code, result.stderr
    assert phrase in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


USAGE_ERRORS = [
    # (arguments, stdin, phrase in the message)
    (["the cat sat."], None, "text 1 has no [MASK]"),
    (["the [MASK] sat.", "no mask here"], None, "text 2 has no [MASK]"),
    ([""], None, "text 1 is empty"),
    (["   "], None, "text 1 is empty"),
    (["--embed", "\t"], None, "text 1 is empty"),
    (["--embed", "\x01\x02"], None, "text 1 has no tokens"),
    ([], None, "no text given"),
    (["-"], "", "stdin contains no text"),
    (["-"], "\n \n", "stdin contains no text"),
    (["-"], "the [MASK] sat.\nno mask\n", "stdin line 2 has no [MASK]"),
    (["-", "-"], "the [MASK] sat.\n", "more than once"),
    (["--top-k", "0", "the [MASK] sat."], None, "--top-k"),
    (["--top-k", "-3", "the [MASK] sat."], None, "--top-k"),
    (["--top-k", "many", "the [MASK] sat."], None, "--top-k"),
    (["--batch-size", "0", "the [MASK] sat."], None, "--batch-size"),
    (["--normalize", "the [MASK] sat."], None, "--normalize applies to --embed"),
    (["--embed", "--top-k", "3", "the cat"], None, "--top-k applies to fill-mask"),
    (["--no-such-option", "the [MASK] sat."], None, "unrecognized arguments"),
    (["[MASK] " + " ".join(WORDS[:38]) + " [MASK]"], None, "span 40 tokens"),
]


@pytest.mark.parametrize("arguments, stdin, phrase", USAGE_ERRORS)
def test_usage_error(arguments, stdin, phrase):
    check_error(run_infer("--model", TINY_HF, *arguments, stdin=stdin), 2, phrase)


def test_invalid_utf8_stdin():
    result = subprocess.run([sys.executable, str(INFER), "--model", str(TINY_HF), "-"],
                            input=b"the [MASK] \xff sat.\n", capture_output=True, cwd=ROOT)
    assert result.returncode == 2
    assert b"not valid UTF-8" in result.stderr
    assert b"Traceback" not in result.stderr


def test_encoder_only_points_to_embed():
    result = run_infer("--model", TINY_HF_ENCODER, "the [MASK] sat.")
    check_error(result, 2, "--embed")
    assert "without an MLM head" in result.stderr


def test_missing_model(tmp_path):
    missing = tmp_path / "nothing.npz"
    result = run_infer("--model", missing, "the [MASK] sat.")
    check_error(result, 2, str(missing))
    assert "not found" in result.stderr


def test_missing_default_model_is_named(tmp_path):
    # A copy of infer.py in an empty folder looks for bert_model.npz beside itself.
    (tmp_path / "infer.py").write_bytes(INFER.read_bytes())
    result = subprocess.run(
        [sys.executable, str(tmp_path / "infer.py"), "the [MASK] sat."],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    check_error(result, 2, str(tmp_path / "bert_model.npz"))
    assert "not found" in result.stderr


def test_corrupt_model(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip file" * 10)
    check_error(run_infer("--model", corrupt, "the [MASK] sat."), 1, str(corrupt))


def test_truncated_model(tmp_path, tiny_npz):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(tiny_npz.read_bytes()[: tiny_npz.stat().st_size // 2])
    check_error(run_infer("--model", truncated, "the [MASK] sat."), 1, str(truncated))


def test_folder_without_checkpoint(tmp_path):
    result = run_infer("--model", tmp_path, "the [MASK] sat.")
    assert result.returncode in (1, 2)
    assert str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_debug_shows_traceback(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a model")
    result = run_infer("--debug", "--model", corrupt, "the [MASK] sat.")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_help_lists_every_option():
    result = run_infer("--help")
    assert result.returncode == 0
    for option in ("--model", "--top-k", "--json", "--embed", "--normalize", "--batch-size",
                   "--debug", "TEXT"):
        assert option in result.stdout, option


# ---------------------------------------------------------------- batching


def test_batch_order_caps():
    lengths = [5, 300, 3, 510, 510, 20, 100] + [510] * 30
    rows = [[7] * n for n in lengths]
    batches = infer.batch_order(rows, 4)
    assert sorted(i for batch in batches for i in batch) == list(range(len(rows)))
    for batch in batches:
        assert 1 <= len(batch) <= 4
        T = max(lengths[i] for i in batch) + 2
        assert len(batch) * T <= infer.MAX_BATCH_TOKENS
    # Shortest first, so each batch contains texts of similar length.
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat)


def test_batch_order_token_cap():
    rows = [[7] * 510 for _ in range(40)]
    batches = infer.batch_order(rows, 64)
    assert [len(batch) for batch in batches] == [16, 16, 8]
