import gzip
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
from data import PretrainingData, read_documents, split_documents, split_sentences  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402

VOCAB = ROOT / "testdata" / "bert-base-uncased-vocab.txt"
CORPUS = ROOT / "wiki-vital-en.txt.gz"


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_file(str(VOCAB))


@pytest.fixture(scope="module")
def corpus():
    return read_documents(CORPUS)


@pytest.fixture(scope="module")
def sample(corpus, tokenizer):
    # About 80,000 tokens in pairs of at most 64: some 2,000 instances and 12,000
    # masked tokens, enough for the 15% and 80/10/10 shares to within a few tenths.
    return PretrainingData(corpus[:800], tokenizer, max_seq_length=64, seed=3)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "The U.S. Army was founded in 1775. It fought.",
            ["The U.S. Army was founded in 1775.", "It fought."],
        ),
        (
            "He moved to the U.S. The next year he died.",
            ["He moved to the U.S.", "The next year he died."],
        ),
        ("Pi is about 3.14. It is irrational.", ["Pi is about 3.14.", "It is irrational."]),
        ("It has 1,000 people. That is small.", ["It has 1,000 people.", "That is small."]),
        (
            "Dr. Smith met J. R. R. Tolkien. They talked.",
            ["Dr. Smith met J. R. R. Tolkien.", "They talked."],
        ),
        (
            "Fruits, e.g. Apples, are red. Others not.",
            ["Fruits, e.g. Apples, are red.", "Others not."],
        ),
        ("See No. 5 first. Then go.", ["See No. 5 first.", "Then go."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("He waited... and waited. Then left.", ["He waited... and waited.", "Then left."]),
        ("Is it? Yes! It is.", ["Is it?", "Yes!", "It is."]),
        ("It ended (in 1990). Later, more.", ["It ended (in 1990).", "Later, more."]),
        ("no end here", ["no end here"]),
        ("   ", []),
    ],
)
def test_split_sentences_cases(text, expected):
    assert split_sentences(text) == expected


def write_gzip(path, text):
    path.write_bytes(gzip.compress(text.encode("utf-8")))


def test_read_folder_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("First doc. Two sentences.\n\nSecond doc.\n", encoding="utf-8")
    write_gzip(tmp_path / "b.txt.gz", "Third doc.\nIts second line.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("\n\nFourth doc.\n\n\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("Not a corpus file.", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("Hidden.", encoding="utf-8")
    documents = read_documents(tmp_path)
    assert documents == [
        ["First doc.", "Two sentences."],
        ["Second doc."],
        ["Third doc.", "Its second line."],
        ["Fourth doc."],
    ]


def test_read_several_files(tmp_path):
    first, second = tmp_path / "x.txt", tmp_path / "y.gz"
    first.write_text("\ufeffOne.\r\n\r\nTwo.\r\n", encoding="utf-8")
    write_gzip(second, "Three.")
    assert read_documents([str(second), first]) == [["Three."], ["One."], ["Two."]]


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_documents(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_documents(empty)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(gzip.compress(b"Some text. " * 100)[:40])
    with pytest.raises(ValueError, match="corrupt.gz"):
        read_documents(corrupt)
    fake = tmp_path / "fake.gz"
    fake.write_text("plain text", encoding="utf-8")
    with pytest.raises(ValueError, match="not gzip"):
        read_documents(fake)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_documents(latin)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="no .txt or .gz"):
        read_documents(tmp_path / "folder")
    with pytest.raises(ValueError, match="no corpus paths"):
        read_documents([])


def test_split_documents_stable(corpus):
    train, valid = split_documents(corpus, valid_fraction=0.02)
    shuffled = corpus[:]
    random.Random(1).shuffle(shuffled)
    train_again, valid_again = split_documents(shuffled, valid_fraction=0.02)
    assert len(train) + len(valid) == len(corpus)
    assert 0.01 < len(valid) / len(corpus) < 0.03
    assert sorted(map(tuple, valid)) == sorted(map(tuple, valid_again))
    assert sorted(map(tuple, train)) == sorted(map(tuple, train_again))
    assert [d for d in corpus if d in valid] == valid  # input order kept


def test_split_documents_never_empty():
    documents = [["Only one."], ["Only two."]]
    for fraction in (1e-9, 0.999999):
        train, valid = split_documents(documents, valid_fraction=fraction)
        assert len(train) == 1
        assert len(valid) == 1
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents([["Alone."]])
    with pytest.raises(ValueError, match="valid_fraction"):
        split_documents(documents, valid_fraction=0)


def test_dataset_errors(tokenizer):
    with pytest.raises(ValueError, match="no usable documents"):
        PretrainingData([["\x00\x01"], ["\x02"]], tokenizer)
    with pytest.raises(ValueError, match="max_seq_length=4"):
        PretrainingData([["Some words here."]], tokenizer, max_seq_length=4)
    with pytest.raises(ValueError, match="masked_lm_prob"):
        PretrainingData([["Some words here."]], tokenizer, masked_lm_prob=0)
    dataset = PretrainingData([["Some words here."], ["More words."]], tokenizer)
    with pytest.raises(ValueError, match="batch_size=0"):
        dataset.batches(0, 0)
    with pytest.raises(ValueError, match="epoch=-1"):
        dataset.batches(-1, 8)
    with pytest.raises(ValueError, match="seed=-2"):
        PretrainingData([["Some words here."]], tokenizer, seed=-2)


def eligible_count(instances, tokenizer):
    special = np.isin(instances.original_ids, [tokenizer.cls_token_id, tokenizer.sep_token_id])
    return int((~special).sum())


def test_masked_share(sample, tokenizer):
    instances = sample.instances(0)
    share = len(instances.masked_positions) / eligible_count(instances, tokenizer)
    assert abs(share - 0.15) < 0.01


def test_mask_replacement_split(sample, tokenizer):
    instances = sample.instances(0)
    shown = instances.input_ids[instances.masked_positions]
    labels = instances.masked_labels
    is_mask = shown == tokenizer.mask_token_id
    unchanged = shown == labels
    # A random replacement can draw the original token; with 30,000 ids that is rare.
    random_token = ~is_mask & ~unchanged
    assert len(shown) > 10_000
    assert abs(is_mask.mean() - 0.8) < 0.02
    assert abs(unchanged.mean() - 0.1) < 0.02
    assert abs(random_token.mean() - 0.1) < 0.02


def test_no_special_masked_or_inserted(sample, tokenizer):
    instances = sample.instances(0)
    positions = instances.masked_positions
    never = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    assert not np.isin(instances.original_ids[positions], never).any()
    shown = instances.input_ids[positions]
    replaced = shown[(shown != tokenizer.mask_token_id) & (shown != instances.masked_labels)]
    assert not np.isin(replaced, list(tokenizer.special_ids)).any()
    assert not any(tokenizer.ids_to_tokens[i].startswith("[unused") for i in replaced)
    untouched = np.ones(len(instances.input_ids), dtype=bool)
    untouched[positions] = False
    assert np.array_equal(instances.input_ids[untouched], instances.original_ids[untouched])


def test_instance_layout(sample, tokenizer):
    instances = sample.instances(0)
    offsets, lengths, a_lengths = instances.offsets, instances.lengths, instances.a_lengths
    ids, types = instances.original_ids, instances.token_type_ids
    b_lengths = lengths - a_lengths - 3
    assert lengths.max() <= 64
    assert a_lengths.min() >= 1
    assert b_lengths.min() >= 1
    assert (ids[offsets] == tokenizer.cls_token_id).all()
    assert (ids[offsets + 1 + a_lengths] == tokenizer.sep_token_id).all()
    assert (ids[offsets + lengths - 1] == tokenizer.sep_token_id).all()
    assert (types[offsets + 1 + a_lengths] == 0).all()
    assert (types[offsets + 2 + a_lengths] == 1).all()
    assert types.sum() == (b_lengths + 1).sum()


def test_nsp_balanced_other_document(sample):
    instances = sample.instances(0)
    is_random = instances.nsp_labels == 1
    assert len(instances) > 1500
    assert abs(is_random.mean() - 0.5) < 0.05
    assert (instances.b_documents[is_random] != instances.a_documents[is_random]).all()
    assert (instances.b_documents[~is_random] == instances.a_documents[~is_random]).all()


def test_short_seq_prob_shortens(corpus, tokenizer):
    lengths = {}
    for prob in (0.0, 1.0):
        dataset = PretrainingData(corpus[:200], tokenizer, short_seq_prob=prob)
        lengths[prob] = dataset.instances(0).lengths.mean()
    assert lengths[1.0] < 0.8 * lengths[0.0]


def test_truncate_longer_side(sample):
    rng = random.Random(0)
    # max_seq_length 64 leaves 61 tokens: 110 - 61 = 49 come off A, the longer side.
    a_start, a_end, b_start, b_end = sample._truncate_pair(rng, 0, 100, 200, 210)
    assert a_end - a_start == 51
    assert (b_start, b_end) == (200, 210)
    # Equal lengths lose tokens alternately, B first: 62 + 62 - 61 = 63 removed.
    a_start, a_end, b_start, b_end = sample._truncate_pair(rng, 0, 62, 100, 162)
    assert a_end - a_start == 31
    assert b_end - b_start == 30


def test_truncate_random_ends(sample):
    rng = random.Random(0)
    fronts = [sample._truncate_pair(rng, 0, 100, 200, 210)[0] for _ in range(400)]
    # 49 removals, each from the front with probability 1/2.
    assert abs(np.mean(fronts) - 24.5) < 1.0


def test_whole_word_mask(corpus, tokenizer):
    dataset = PretrainingData(corpus[:300], tokenizer, whole_word_mask=True, seed=1)
    instances = dataset.instances(0)
    is_masked = np.zeros(len(instances.original_ids), dtype=bool)
    is_masked[instances.masked_positions] = True
    continuation = np.array([t.startswith("##") for t in tokenizer.ids_to_tokens])
    is_piece = continuation[instances.original_ids]
    # A "##" piece and the token before it are masked together (or both left), unless
    # truncation cut the word and [CLS] or [SEP] comes before the piece.
    special = np.isin(instances.original_ids, [tokenizer.cls_token_id, tokenizer.sep_token_id])
    inside_word = np.flatnonzero(is_piece[1:] & ~special[:-1]) + 1
    assert inside_word.size > 1000
    assert (is_masked[inside_word] == is_masked[inside_word - 1]).all()
    share = is_masked.sum() / eligible_count(instances, tokenizer)
    assert abs(share - 0.15) < 0.01


def test_same_seed_same_batches(corpus, tokenizer):
    first = PretrainingData(corpus[:150], tokenizer, seed=5).batches(1, 16)
    second = PretrainingData(corpus[:150], tokenizer, seed=5).batches(1, 16)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert np.array_equal(a.input_ids, b.input_ids)
        assert np.array_equal(a.mlm_positions, b.mlm_positions)
        assert np.array_equal(a.mlm_labels, b.mlm_labels)
        assert np.array_equal(a.nsp_labels, b.nsp_labels)


def test_epochs_and_seeds_differ(corpus, tokenizer):
    dataset = PretrainingData(corpus[:150], tokenizer, seed=5)
    other_seed = PretrainingData(corpus[:150], tokenizer, seed=6)
    first = dataset.instances(0)
    assert not np.array_equal(first.input_ids, dataset.instances(1).input_ids)
    assert not np.array_equal(first.input_ids, other_seed.instances(0).input_ids)
    # The cache keeps two epochs; epoch 0 regenerated after eviction is unchanged.
    dataset.instances(2)
    assert np.array_equal(first.input_ids, dataset.instances(0).input_ids)


def test_batches_padding_and_targets(sample, tokenizer):
    instances = sample.instances(0)
    batches = sample.batches(0, 32)
    assert len(batches) == sample.num_batches(32)
    assert sum(len(b) for b in batches) == len(instances)
    assert sum(b.num_tokens for b in batches) == instances.lengths.sum()
    assert sum(len(b.mlm_labels) for b in batches) == len(instances.masked_labels)
    for batch in batches:
        real = batch.attention_mask.sum(axis=1)
        assert batch.input_ids.dtype == np.int64
        assert batch.input_ids.shape[1] == real.max()
        assert (batch.input_ids[batch.attention_mask == 0] == tokenizer.pad_token_id).all()
        assert (batch.token_type_ids[batch.attention_mask == 0] == 0).all()
        assert batch.num_tokens == real.sum()
        assert (batch.input_ids[:, 0] == tokenizer.cls_token_id).all()
        flat_mask = batch.attention_mask.reshape(-1)
        assert (flat_mask[batch.mlm_positions] == 1).all()
        assert (np.diff(batch.mlm_positions) > 0).all()
    # The MLM labels put back into the inputs give text without [MASK] at the targets.
    batch = batches[0]
    restored = batch.input_ids.reshape(-1).copy()
    restored[batch.mlm_positions] = batch.mlm_labels
    assert (restored != tokenizer.mask_token_id).all()


def test_batches_grouped_by_length(sample):
    batches = sample.batches(0, 32)
    padded = sum(b.input_ids.size for b in batches)
    real = sum(b.num_tokens for b in batches)
    assert real / padded > 0.95


def test_demo_prints_instances(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A cat sat. It slept.\n\nThe dog ran. It barked loudly.\n", encoding="utf-8")
    code = data.main(["--data", str(corpus), "--vocab", str(VOCAB), "-n", "2"])
    output = capsys.readouterr().out
    assert code == 0
    assert output.count("NSP label") == 2
    assert "A: [CLS]" in output


def test_demo_missing_corpus(tmp_path, capsys):
    code = data.main(["--data", str(tmp_path / "nope.txt"), "--vocab", str(VOCAB)])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1
    assert "nope.txt" in error


def test_typed_special_tokens_dropped(tokenizer):
    documents = [["A [SEP] typed [CLS] here [MASK] too."], ["Another [PAD] document."]]
    instances = PretrainingData(documents, tokenizer).instances(0)
    typed = np.isin(instances.original_ids, [tokenizer.mask_token_id, tokenizer.pad_token_id])
    assert not typed.any()
    assert (instances.original_ids == tokenizer.sep_token_id).sum() == 2 * len(instances)


def test_single_document_pairs(tokenizer):
    documents = [["One sentence only here.", "And a second one.", "Then a third."]]
    instances = PretrainingData(documents, tokenizer).instances(0)
    assert len(instances) >= 1
    assert (instances.nsp_labels == 0).all()


def test_random_b_other_document(corpus, tokenizer):
    # With three documents, a random B drawn from all of them would hit A's own
    # document a third of the time.
    documents = [sum(corpus[i : i + 20], []) for i in (0, 20, 40)]
    dataset = PretrainingData(documents, tokenizer, max_seq_length=32)
    instances = dataset.instances(0)
    is_random = instances.nsp_labels == 1
    assert is_random.sum() > 50
    assert (instances.b_documents[is_random] != instances.a_documents[is_random]).all()
