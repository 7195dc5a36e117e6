import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bert  # noqa: E402
from autograd import Tensor, cross_entropy, no_grad  # noqa: E402
from bert import BertConfig, BertForPreTraining, BertModel  # noqa: E402
from layers import EncoderLayer, attention_bias  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402

TINY_HF = ROOT / "testdata" / "tiny_hf"


# ---------------------------------------------------------------- layers


def to_float64(module):
    for parameter in module.parameters():
        parameter.data = parameter.data.astype(np.float64)
    return module


def numeric_gradient(f, array, index, eps=1e-6):
    old = array[index]
    array[index] = old + eps
    plus = f()
    array[index] = old - eps
    minus = f()
    array[index] = old
    return (plus - minus) / (2 * eps)


def check_gradients(module, loss_fn, rng, samples=6, tol=1e-6):
    """Compare backward() with central differences at a few entries of every parameter."""
    module.zero_grad()
    loss_fn().backward()
    analytic = {name: p.grad.copy() for name, p in module.named_parameters()}
    for name, parameter in module.named_parameters():
        for _ in range(samples):
            index = tuple(rng.integers(0, n) for n in parameter.shape)
            with no_grad():
                numeric = numeric_gradient(lambda: loss_fn().item(), parameter.data, index)
            assert abs(analytic[name][index] - numeric) < tol * max(1.0, abs(numeric)), name


def test_encoder_layer_gradients():
    rng = np.random.default_rng(0)
    layer = to_float64(EncoderLayer(12, 3, 37, 0.0, 0.0, 1e-12, rng, std=0.3))
    x = Tensor(rng.standard_normal((2, 7, 12)), requires_grad=True, dtype=np.float64)
    mask = np.ones((2, 7))
    mask[1, 4:] = 0
    bias = attention_bias(mask, np.float64)
    weights = rng.standard_normal((2, 7, 12))

    def loss():
        out, _ = layer(x, bias)
        return (out * weights).sum()

    check_gradients(layer, loss, rng)
    x.grad = None
    loss().backward()
    with no_grad():
        numeric = numeric_gradient(lambda: loss().item(), x.data, (1, 2, 5))
    assert abs(x.grad[1, 2, 5] - numeric) < 1e-6


def tiny_config(**overrides):
    values = dict(vocab_size=29, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=37, max_position_embeddings=16, initializer_range=0.3,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    values.update(overrides)
    return BertConfig(**values)


def test_pretraining_gradients():
    rng = np.random.default_rng(1)
    model = to_float64(BertForPreTraining(tiny_config(), seed=3))
    ids = rng.integers(5, 29, size=(2, 7))
    types = np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]])
    mask = np.array([[1] * 7, [1] * 5 + [0] * 2])
    positions = np.array([1, 4, 9, 10])
    labels = np.array([3, 17, 28, 5])
    nsp_labels = np.array([0, 1])

    def loss():
        mlm, nsp = model(ids, types, mask, positions)
        return cross_entropy(mlm, labels) + cross_entropy(nsp, nsp_labels)

    check_gradients(model, loss, rng, samples=3)


def test_parameter_names_are_huggingface():
    model = BertForPreTraining(tiny_config())
    names = set(bert.hf_state_dict(model))
    assert "bert.encoder.layer.1.attention.self.query.weight" in names
    assert "bert.encoder.layer.0.attention.output.LayerNorm.bias" in names
    assert "bert.encoder.layer.0.intermediate.dense.weight" in names
    assert "bert.encoder.layer.1.output.dense.bias" in names
    assert "bert.pooler.dense.weight" in names
    assert "cls.predictions.transform.LayerNorm.weight" in names
    assert "cls.predictions.bias" in names
    assert "cls.seq_relationship.weight" in names
    assert len(names) == len(model.parameters())


def test_initialisation_as_bert():
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=500), seed=0)
    state = bert.hf_state_dict(model)
    query = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert abs(query.std() - 0.02) < 0.002
    assert np.all(state["bert.encoder.layer.0.attention.self.query.bias"] == 0)
    assert np.all(state["bert.embeddings.LayerNorm.weight"] == 1)
    assert np.all(state["bert.embeddings.word_embeddings.weight"][0] == 0)
    assert state["bert.embeddings.word_embeddings.weight"].dtype == np.float32


# ---------------------------------------------------------------- bert


def test_output_shapes():
    model = BertForPreTraining(tiny_config()).eval()
    ids = np.random.default_rng(0).integers(0, 29, size=(2, 7))
    last, pooled = model.bert(ids)
    assert last.shape == (2, 7, 12)
    assert pooled.shape == (2, 12)
    mlm, nsp = model(ids, masked_positions=np.array([0, 3, 13]))
    assert mlm.shape == (3, 29)
    assert nsp.shape == (2, 2)
    mlm_all, _ = model(ids)
    assert mlm_all.shape == (2, 7, 29)
    out = model.bert.encode(ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 3, 7, 7)


def test_masked_positions_match_full_logits():
    model = BertForPreTraining(tiny_config()).eval()
    ids = np.random.default_rng(0).integers(0, 29, size=(2, 7))
    positions = np.array([2, 8, 13])
    mlm, _ = model(ids, masked_positions=positions)
    full, _ = model(ids)
    np.testing.assert_allclose(mlm.data, full.data.reshape(14, 29)[positions], atol=1e-6)


def test_padding_invariance():
    model = BertForPreTraining(tiny_config(), seed=2).eval()
    rng = np.random.default_rng(5)
    long_ids = rng.integers(5, 29, size=7)
    short_ids = rng.integers(5, 29, size=4)
    batch = np.zeros((2, 7), dtype=np.int64)
    batch[0] = long_ids
    batch[1, :4] = short_ids
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3])
    last, pooled = model.bert(batch, attention_mask=mask)
    alone_last, alone_pooled = model.bert(short_ids[None])
    np.testing.assert_allclose(last.data[1, :4], alone_last.data[0], atol=1e-5)
    np.testing.assert_allclose(pooled.data[1], alone_pooled.data[0], atol=1e-5)


def test_attention_rows_sum_to_one_and_padding_gets_zero():
    model = BertModel(tiny_config()).eval()
    ids = np.random.default_rng(0).integers(5, 29, size=(2, 7))
    mask = np.array([[1] * 7, [1] * 3 + [0] * 4])
    out = model.encode(ids, attention_mask=mask, output_attentions=True)
    for probs in out.attentions:
        np.testing.assert_allclose(probs.data.sum(-1), 1.0, atol=1e-6)
        assert np.all(probs.data[1, :, :, 3:] == 0.0)


def test_dropout_only_in_training():
    model = BertForPreTraining(tiny_config(hidden_dropout_prob=0.1))
    ids = np.random.default_rng(0).integers(0, 29, size=(2, 7))
    model.eval()
    first, _ = model.bert(ids)
    second, _ = model.bert(ids)
    np.testing.assert_array_equal(first.data, second.data)
    model.train()
    third, _ = model.bert(ids)
    assert not np.allclose(first.data, third.data)


def test_inputs_validated():
    model = BertModel(tiny_config())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model(np.full((1, 3), 29))
    with pytest.raises(ValueError, match="2-D integer"):
        model(np.zeros(3, dtype=np.int64))


def test_config_json_round_trip():
    config = BertConfig.from_preset("mini", vocab_size=8192)
    assert BertConfig.from_json(config.to_json()) == config
    assert (config.num_hidden_layers, config.hidden_size) == (4, 256)
    assert config.num_attention_heads == 4
    assert config.intermediate_size == 1024


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="relu")
    with pytest.raises(ValueError, match="unknown model size"):
        BertConfig.from_preset("huge")


def small_tokenizer():
    return Tokenizer.from_file(TINY_HF / "vocab.txt")


def outputs(model, ids):
    mlm, nsp = model(ids, masked_positions=np.array([1, 5]))
    return mlm.data, nsp.data


def test_npz_round_trip_exact(tmp_path):
    model = BertForPreTraining(tiny_config(vocab_size=120), seed=4).eval()
    ids = np.random.default_rng(0).integers(0, 120, size=(2, 7))
    path = tmp_path / "model.npz"
    bert.save(model, small_tokenizer(), path, metadata={"step": 7},
              extra={"adam.m": np.arange(3.0)})
    loaded, tokenizer, metadata, extra = bert.load_npz(path)
    for a, b in zip(outputs(model, ids), outputs(loaded, ids)):
        np.testing.assert_array_equal(a, b)
    assert tokenizer.tokens == small_tokenizer().tokens
    assert metadata == {"step": 7}
    np.testing.assert_array_equal(extra["adam.m"], np.arange(3.0))
    assert [p for p in tmp_path.iterdir()] == [path]


def test_npz_float16_loads_as_float32(tmp_path):
    model = BertForPreTraining(tiny_config(vocab_size=120), seed=4).eval()
    path = tmp_path / "model.npz"
    bert.save(model, small_tokenizer(), path, float16=True)
    loaded, _ = bert.load(path)
    assert loaded.parameters()[0].dtype == np.float32
    ids = np.random.default_rng(0).integers(0, 120, size=(2, 7))
    np.testing.assert_allclose(outputs(model, ids)[0], outputs(loaded, ids)[0], atol=1e-2)


def test_npz_truncated_rejected(tmp_path):
    model = BertForPreTraining(tiny_config(vocab_size=120))
    path = tmp_path / "model.npz"
    bert.save(model, small_tokenizer(), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="model.npz"):
        bert.load(path)


def test_npz_pickle_rejected(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __format__=np.array(bert.NPZ_FORMAT), payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled object"):
        bert.load(path)


def test_npz_foreign_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a numpy-bert model file"):
        bert.load(path)


def test_npz_missing_file():
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        bert.load("nothere.npz")


def test_save_failure_keeps_old_file(tmp_path):
    model = BertForPreTraining(tiny_config(vocab_size=120))
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")

    class Broken:
        tokens = ["a"]

        def config(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        bert.save(model, Broken(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


# ---------------------------------------------------------------- Hugging Face checkpoints


def test_tiny_hf_checkpoint_matches_transformers():
    reference = np.load(ROOT / "testdata" / "tiny_hf_outputs.npz")
    model, tokenizer = bert.load(TINY_HF)
    assert isinstance(model, BertForPreTraining)
    ids = reference["input_ids"]
    types = reference["token_type_ids"]
    mask = reference["attention_mask"]
    out = model.bert.encode(ids, types, mask, output_hidden_states=True, output_attentions=True)
    for i, hidden in enumerate(out.hidden_states):
        np.testing.assert_allclose(hidden.data, reference["hidden_states"][i], atol=1e-5)
    for i, probs in enumerate(out.attentions):
        np.testing.assert_allclose(probs.data, reference["attentions"][i], atol=1e-5)
    np.testing.assert_allclose(out.pooler_output.data, reference["pooler_output"], atol=1e-5)
    mlm, nsp = model(ids, types, mask)
    np.testing.assert_allclose(mlm.data, reference["prediction_logits"], atol=1e-5)
    np.testing.assert_allclose(nsp.data, reference["seq_relationship_logits"], atol=1e-5)


def test_tiny_hf_losses_match_transformers():
    reference = np.load(ROOT / "testdata" / "tiny_hf_outputs.npz")
    model, _ = bert.load(TINY_HF)
    mlm, nsp = model(reference["input_ids"], reference["token_type_ids"],
                     reference["attention_mask"])
    mlm_loss = cross_entropy(mlm.reshape(-1, mlm.shape[-1]), reference["mlm_labels"].ravel())
    nsp_loss = cross_entropy(nsp, reference["next_sentence_label"])
    assert abs(mlm_loss.item() - reference["mlm_loss"]) < 1e-5
    assert abs(nsp_loss.item() - reference["nsp_loss"]) < 1e-5


def test_tiny_hf_tokens_match_fixture():
    reference = np.load(ROOT / "testdata" / "tiny_hf_outputs.npz")
    _, tokenizer = bert.load(TINY_HF)
    ids = reference["input_ids"][0].tolist()
    assert tokenizer.convert_ids_to_tokens(ids) == [str(t) for t in reference["tokens"][0]]


def test_encoder_only_checkpoint_loads_as_bert_model():
    model, _ = bert.load(ROOT / "testdata" / "tiny_hf_encoder")
    assert type(model) is BertModel


def test_export_import_round_trip(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    bert.export_hf(model, tokenizer, tmp_path / "out")
    again, again_tokenizer = bert.load(tmp_path / "out")
    ids = np.random.default_rng(0).integers(0, 120, size=(2, 7))
    for a, b in zip(outputs(model, ids), outputs(again, ids)):
        np.testing.assert_array_equal(a, b)
    assert again_tokenizer.tokens == tokenizer.tokens
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert config["architectures"] == ["BertForPreTraining"]


def copy_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    for f in TINY_HF.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_roberta_checkpoint_rejected(tmp_path):
    target = copy_checkpoint(tmp_path)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = "roberta"
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="roberta"):
        bert.load(target)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    target = copy_checkpoint(tmp_path)
    config = json.loads((target / "config.json").read_text())
    config["intermediate_size"] = 40
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight has shape \(37, 12\)"):
        bert.load(target)


def test_missing_weights_file(tmp_path):
    target = copy_checkpoint(tmp_path)
    (target / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        bert.load(target)


def test_convert_cli_round_trip(tmp_path):
    npz = tmp_path / "tiny.npz"
    run = subprocess.run([sys.executable, str(ROOT / "bert.py"), "convert", str(TINY_HF),
                          str(npz)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    back = tmp_path / "back"
    run = subprocess.run([sys.executable, str(ROOT / "bert.py"), "convert", str(npz),
                          str(back)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    model, _ = bert.load(TINY_HF)
    again, _ = bert.load(back)
    ids = np.random.default_rng(0).integers(0, 120, size=(1, 9))
    np.testing.assert_array_equal(outputs(model, ids)[0], outputs(again, ids)[0])


def test_convert_cli_missing_source(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bert.py"), "convert", "nope.npz",
                          "out"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert "nope.npz" in run.stderr
    assert "Traceback" not in run.stderr


def test_names_and_shapes_match_fixture():
    model, _ = bert.load(TINY_HF)
    ours = {k: v.shape for k, v in bert.hf_state_dict(model).items()}
    theirs = {k: v.shape for k, v in bert.read_safetensors(TINY_HF / "model.safetensors").items()}
    assert ours == theirs


def test_pickle_only_checkpoint_rejected(tmp_path):
    target = copy_checkpoint(tmp_path)
    (target / "model.safetensors").rename(target / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        bert.load(target)


def test_encoder_export_has_no_prefix(tmp_path):
    model, tokenizer = bert.load(ROOT / "testdata" / "tiny_hf_encoder")
    bert.export_hf(model, tokenizer, tmp_path / "enc")
    names = bert.read_safetensors(tmp_path / "enc" / "model.safetensors")
    assert "embeddings.word_embeddings.weight" in names
    assert not any(k.startswith(("bert.", "cls.")) for k in names)
