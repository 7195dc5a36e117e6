import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bert  # noqa: E402
import train  # noqa: E402
from autograd import Tensor  # noqa: E402
from bert import BertConfig, BertForPreTraining  # noqa: E402
from data import PretrainingData  # noqa: E402
from tokenizer import Tokenizer, train_vocab  # noqa: E402

TINY_CORPUS = """The cat sat on the mat. It was a sunny day. The dog slept by the door.

Paris is the capital of France. It lies on the river Seine. Many people visit it.

Water boils at one hundred degrees. Ice melts at zero degrees. Steam rises from the pot.

The sun is a star. The earth goes around the sun. The moon goes around the earth.
"""

TINY_FLAGS = ["--num-layers", "2", "--hidden-size", "24", "--num-heads", "2",
              "--intermediate-size", "48", "--max-seq-len", "32", "--batch-size", "4",
              "--vocab-size", "120", "--log-every", "5", "--valid-fraction", "0.3"]


def run_train(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_CORPUS, encoding="utf-8")
    return path


# ---------------------------------------------------------------- optimizer and schedule


def test_adamw_matches_torch():
    ref = np.load(ROOT / "testdata" / "train_reference.npz")
    weight = Tensor(ref["weight"].copy(), requires_grad=True)
    bias = Tensor(ref["bias"].copy(), requires_grad=True)
    optimizer = train.AdamW([("layer.weight", weight), ("layer.bias", bias)], lr=0.01,
                            weight_decay=0.1)
    for step in range(5):
        weight.grad = ref["grad_weight"][step].copy()
        bias.grad = ref["grad_bias"][step].copy()
        norm = train.clip_grad_norm([weight, bias], 1.0)
        assert abs(norm - ref["norms"][step]) < 1e-4 * ref["norms"][step]
        optimizer.lr = train.learning_rate(step, 0.01, warmup=2, total=5)
        assert abs(optimizer.lr - ref["lrs"][step]) < 1e-9
        optimizer.step()
    np.testing.assert_allclose(weight.data, ref["final_weight"], atol=1e-6)
    np.testing.assert_allclose(bias.data, ref["final_bias"], atol=1e-6)


def test_no_decay_for_bias_and_layer_norm():
    assert train.AdamW.decays("bert.encoder.0.attention.output.weight")
    assert not train.AdamW.decays("bert.encoder.0.attention.output.bias")
    assert not train.AdamW.decays("bert.embeddings.norm.weight")
    assert not train.AdamW.decays("mlm_norm.weight")
    assert not train.AdamW.decays("mlm_bias")


def test_schedule_warmup_then_decay():
    assert train.learning_rate(0, 1.0, 10, 110) == 0.0
    assert train.learning_rate(5, 1.0, 10, 110) == 0.5
    assert train.learning_rate(10, 1.0, 10, 110) == 1.0
    assert train.learning_rate(60, 1.0, 10, 110) == 0.5
    assert train.learning_rate(110, 1.0, 10, 110) == 0.0


# ---------------------------------------------------------------- learning


def test_tiny_model_learns_tiny_corpus():
    documents = [[s.strip() + "." for s in d.split(".") if s.strip()]
                 for d in TINY_CORPUS.strip().split("\n\n")]
    tokenizer = Tokenizer(train_vocab([s for d in documents for s in d], 150))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config, seed=0)
    data = PretrainingData(documents, tokenizer, max_seq_length=32, seed=0)
    batches = data.batches(0, 8)
    optimizer = train.AdamW(model.named_parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for step in range(300):
        batch = batches[step % len(batches)]
        model.zero_grad()
        loss = train.batch_loss(model, batch)[0]
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    final = np.mean([train.batch_loss(model, b)[0].item() for b in batches])
    assert final < first / 10


# ---------------------------------------------------------------- command line


def test_train_writes_model_and_checkpoint(tmp_path, corpus):
    run = run_train(["--data", str(corpus), "--epochs", "2", "--out", "m.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    assert "parameters" in run.stdout
    assert run.stdout.count("validation after epoch") == 2
    model, tokenizer, metadata, extra = bert.load_npz(tmp_path / "m.npz")
    assert isinstance(model, BertForPreTraining)
    assert metadata["steps"] > 0
    assert "mlm_accuracy" in metadata["validation"]
    assert extra == {}
    _, _, state, moments = bert.load_npz(tmp_path / "m.ckpt.npz")
    assert state["optimizer_step"] == metadata["steps"]
    assert any(k.startswith("adam.m.") for k in moments)


def test_resume_matches_uninterrupted_run(tmp_path, corpus):
    flags = ["--data", str(corpus), "--epochs", "3", *TINY_FLAGS]
    run = run_train([*flags, "--out", "full.npz"], tmp_path)
    assert run.returncode == 0, run.stderr
    run = run_train([*flags, "--out", "split.npz", "--stop-at", "4"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "stopped after step 4" in run.stdout
    run = run_train(["--resume", "split.ckpt.npz", "--out", "split.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    full, _ = bert.load(tmp_path / "full.npz")
    split, _ = bert.load(tmp_path / "split.npz")
    for (name, a), (_, b) in zip(full.named_parameters(), split.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_eval_only_json(tmp_path, corpus):
    run = run_train(["--data", str(corpus), "--epochs", "1", "--out", "m.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    args = ["--eval-only", "--model", "m.npz", "--data", str(corpus), "--json",
            "--max-seq-len", "32", "--valid-fraction", "0.3"]
    first = run_train(args, tmp_path)
    assert first.returncode == 0, first.stderr
    metrics = json.loads(first.stdout)
    assert set(metrics) == {"mlm_accuracy", "mlm_top5_accuracy", "perplexity",
                            "nsp_accuracy", "instances"}
    assert 0.0 <= metrics["mlm_accuracy"] <= metrics["mlm_top5_accuracy"] <= 1.0
    assert run_train(args, tmp_path).stdout == first.stdout


@pytest.mark.parametrize("flags, message", [
    (["--data", "missing.txt"], "missing.txt"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--max-seq-len", "1000", "--epochs", "1"], "max_position_embeddings"),
    (["--lr", "-1"], "--lr -1"),
])
def test_usage_errors(tmp_path, corpus, flags, message):
    (tmp_path / "m.npz").write_bytes(b"keep")
    base = ["--data", str(corpus), "--out", "m.npz", "--num-layers", "1", "--hidden-size",
            "8", "--num-heads", "2", "--vocab-size", "120"]
    run = run_train([*base, *flags], tmp_path)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert (tmp_path / "m.npz").read_bytes() == b"keep"


def test_empty_corpus_rejected(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    run = run_train(["--data", "empty.txt"], tmp_path)
    assert run.returncode == 2
    assert "empty" in run.stderr
    assert "Traceback" not in run.stderr


def test_corrupt_gzip_rejected(tmp_path):
    (tmp_path / "bad.txt.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    run = run_train(["--data", "bad.txt.gz"], tmp_path)
    assert run.returncode == 2
    assert "bad.txt.gz" in run.stderr
    assert "Traceback" not in run.stderr


def test_resume_with_other_config_rejected(tmp_path, corpus):
    run = run_train(["--data", str(corpus), "--epochs", "1", "--out", "m.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    run = run_train(["--resume", "m.ckpt.npz", "--out", "m.npz", *TINY_FLAGS,
                     "--hidden-size", "32"], tmp_path)
    assert run.returncode == 2
    assert "another config" in run.stderr
