"""Tests for the Hugging Face file I/O: safetensors, config.json, weight names, directories.

The safetensors reader is checked against files made by hand byte by byte and by
transformers (testdata/tiny_hf, made by testdata/make_tiny_hf.py), the writer by
reading its bytes back. Run: python -m pytest wip_tests/test_hf_io.py
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bert as hf_io  # noqa: E402

TINY_HF = ROOT / "testdata" / "tiny_hf"
TINY_HF_ENCODER = ROOT / "testdata" / "tiny_hf_encoder"


def make_safetensors_bytes(
    header: dict, buffer: bytes, header_length: int | None = None
) -> bytes:
    """Build a safetensors file by hand, independent of write_safetensors."""
    header_bytes = json.dumps(header).encode("utf-8")
    length = len(header_bytes) if header_length is None else header_length
    return struct.pack("<Q", length) + header_bytes + buffer


def write_bytes(tmp_path: Path, data: bytes, name: str = "x.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def one_tensor_file(tmp_path: Path, entry: dict, buffer: bytes) -> Path:
    return write_bytes(tmp_path, make_safetensors_bytes({"w": entry}, buffer))


# ---------------------------------------------------------------- safetensors reader


def test_read_handmade_f32_little_endian(tmp_path):
    values = np.array([[1.5, -2.0, 3.25], [0.0, 7.0, -0.5]], dtype="<f4")
    entry = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    tensors = hf_io.read_safetensors(one_tensor_file(tmp_path, entry, values.tobytes()))
    assert tensors["w"].dtype == np.float32
    assert tensors["w"].shape == (2, 3)
    assert np.array_equal(tensors["w"], values)


def test_read_bf16_exact(tmp_path):
    # bfloat16 bit patterns and the float32 values they stand for exactly.
    bits = np.array([0x3F80, 0xC000, 0x3FC0, 0x4049, 0x7F80, 0x0001, 0x8000], dtype="<u2")
    expected = np.array(
        [1.0, -2.0, 1.5, 3.140625, np.inf, 2.0**-133, -0.0], dtype=np.float32
    )
    entry = {"dtype": "BF16", "shape": [7], "data_offsets": [0, 14]}
    tensors = hf_io.read_safetensors(one_tensor_file(tmp_path, entry, bits.tobytes()))
    assert tensors["w"].dtype == np.float32
    assert np.array_equal(tensors["w"], expected)
    assert np.signbit(tensors["w"][6])


def test_read_bf16_nan(tmp_path):
    bits = np.array([0x7FC0], dtype="<u2")
    entry = {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}
    tensors = hf_io.read_safetensors(one_tensor_file(tmp_path, entry, bits.tobytes()))
    assert np.isnan(tensors["w"][0])


def test_read_skips_metadata(tmp_path):
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]},
    }
    buffer = np.array([5, -6], "<i8").tobytes()
    path = write_bytes(tmp_path, make_safetensors_bytes(header, buffer))
    tensors = hf_io.read_safetensors(path)
    assert list(tensors) == ["w"]
    assert hf_io.read_safetensors_metadata(path) == {"format": "pt"}


def test_read_arrays_are_writable_copies(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    }
    buffer = np.arange(4, dtype="<f4").tobytes()
    path = write_bytes(tmp_path, make_safetensors_bytes(header, buffer))
    tensors = hf_io.read_safetensors(path)
    tensors["a"] += 10.0
    assert np.array_equal(tensors["b"], [2.0, 3.0])
    assert not np.shares_memory(tensors["a"], tensors["b"])


# ---------------------------------------------------------------- safetensors writer


ROUND_TRIP_ARRAYS = {
    "f64": np.linspace(-1.0, 1.0, 35).reshape(5, 7),
    "f32": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32),
    "f16": np.array([0.5, -65504.0, 6e-8, np.inf], dtype=np.float16),
    "i64": np.array([[-(2**62), 0, 2**62 + 1]], dtype=np.int64),
    "i32": np.arange(-3, 4, dtype=np.int32),
    "scalar": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T,
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_ARRAYS))
def test_round_trip_dtype(tmp_path, name):
    path = tmp_path / "x.safetensors"
    hf_io.write_safetensors(path, {name: ROUND_TRIP_ARRAYS[name]})
    loaded = hf_io.read_safetensors(path)[name]
    assert loaded.dtype == ROUND_TRIP_ARRAYS[name].dtype
    assert loaded.shape == ROUND_TRIP_ARRAYS[name].shape
    assert np.array_equal(loaded, ROUND_TRIP_ARRAYS[name])


def test_round_trip_all_together(tmp_path):
    path = tmp_path / "x.safetensors"
    hf_io.write_safetensors(path, ROUND_TRIP_ARRAYS, metadata={"format": "pt"})
    loaded = hf_io.read_safetensors(path)
    assert sorted(loaded) == sorted(ROUND_TRIP_ARRAYS)
    for name, array in ROUND_TRIP_ARRAYS.items():
        assert np.array_equal(loaded[name], array), name
    assert hf_io.read_safetensors_metadata(path) == {"format": "pt"}


def test_write_layout_aligned(tmp_path):
    path = tmp_path / "x.safetensors"
    hf_io.write_safetensors(path, ROUND_TRIP_ARRAYS)
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header_text = data[8:8 + header_length].decode("utf-8")
    header = json.loads(header_text)
    assert (8 + header_length) % 8 == 0
    padding = header_text[header_text.rindex("}") + 1:]
    assert set(padding) <= {" "}
    for name, entry in header.items():
        itemsize = ROUND_TRIP_ARRAYS[name].dtype.itemsize
        assert entry["data_offsets"][0] % itemsize == 0, name
    buffer_size = max(entry["data_offsets"][1] for entry in header.values())
    assert len(data) == 8 + header_length + buffer_size


def test_write_little_endian_bytes(tmp_path):
    path = tmp_path / "x.safetensors"
    hf_io.write_safetensors(path, {"w": np.array([1.0], dtype=">f4")})
    assert path.read_bytes()[-4:] == struct.pack("<f", 1.0)


def test_write_rejects_bool(tmp_path):
    with pytest.raises(ValueError, match="tensor 'mask' has dtype bool"):
        hf_io.write_safetensors(tmp_path / "x.safetensors", {"mask": np.ones(3, dtype=bool)})


def test_write_rejects_metadata_name(tmp_path):
    with pytest.raises(ValueError, match="invalid tensor name"):
        hf_io.write_safetensors(tmp_path / "x.safetensors", {"__metadata__": np.ones(3)})


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "x.safetensors"
    hf_io.write_safetensors(path, {"w": np.ones(3, dtype=np.float32)})
    before = path.read_bytes()
    bad = {"w": np.zeros(3, dtype=np.float32), "z": np.zeros(2, dtype=np.complex64)}
    with pytest.raises(ValueError):
        hf_io.write_safetensors(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


# ---------------------------------------------------------------- corrupted files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        hf_io.read_safetensors(tmp_path / "nothere.safetensors")


def test_shorter_than_length_field(tmp_path):
    path = write_bytes(tmp_path, b"\x10\x00\x00")
    with pytest.raises(ValueError, match=r"x\.safetensors: file is 3 bytes"):
        hf_io.read_safetensors(path)


def test_header_longer_than_file(tmp_path):
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    data = make_safetensors_bytes({"w": entry}, b"\0" * 4, header_length=10_000)
    with pytest.raises(ValueError, match="header length 10000 does not fit"):
        hf_io.read_safetensors(write_bytes(tmp_path, data))


def test_header_not_json(tmp_path):
    data = struct.pack("<Q", 8) + b"not json" + b"\0" * 8
    with pytest.raises(ValueError, match="header is not valid JSON"):
        hf_io.read_safetensors(write_bytes(tmp_path, data))


def test_header_not_object(tmp_path):
    data = struct.pack("<Q", 2) + b"[]"
    with pytest.raises(ValueError, match="expected a JSON object"):
        hf_io.read_safetensors(write_bytes(tmp_path, data))


def test_truncated_data(tmp_path):
    source = TINY_HF / "model.safetensors"
    data = source.read_bytes()
    path = write_bytes(tmp_path, data[: len(data) // 2])
    with pytest.raises(ValueError, match="out of range.*truncated"):
        hf_io.read_safetensors(path)


def test_offsets_out_of_range(tmp_path):
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}
    with pytest.raises(ValueError, match=r"tensor 'w' data_offsets \[4, 12\] are out of range"):
        hf_io.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 8))


def test_overlapping_offsets(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = write_bytes(tmp_path, make_safetensors_bytes(header, b"\0" * 12))
    with pytest.raises(ValueError, match="tensor 'b' .* overlap tensor 'a'"):
        hf_io.read_safetensors(path)


def test_size_disagrees_with_shape(tmp_path):
    entry = {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}
    with pytest.raises(ValueError, match=r"tensor 'w' has 8 bytes, but shape \(3,\)"):
        hf_io.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 8))


def test_unsupported_dtype(tmp_path):
    entry = {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}
    with pytest.raises(ValueError, match="tensor 'w' has unsupported dtype 'F8_E4M3'"):
        hf_io.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 4))


def test_negative_shape(tmp_path):
    entry = {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}
    with pytest.raises(ValueError, match="tensor 'w' has invalid shape"):
        hf_io.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 4))


def test_entry_without_offsets(tmp_path):
    entry = {"dtype": "F32", "shape": [1]}
    with pytest.raises(ValueError, match="tensor 'w' header entry .* needs"):
        hf_io.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 4))


# ---------------------------------------------------------------- committed checkpoint


def test_tiny_hf_shapes_follow_sizes():
    # The pairwise-distinct sizes of the fixture make each axis identifiable.
    tensors = hf_io.read_safetensors(TINY_HF / "model.safetensors")
    assert tensors["bert.embeddings.word_embeddings.weight"].shape == (120, 12)
    assert tensors["bert.embeddings.position_embeddings.weight"].shape == (32, 12)
    assert tensors["bert.encoder.layer.1.intermediate.dense.weight"].shape == (37, 12)
    assert tensors["bert.encoder.layer.1.output.dense.weight"].shape == (12, 37)
    assert tensors["cls.seq_relationship.weight"].shape == (2, 12)


def test_tiny_hf_encoder_has_no_prefix():
    tensors = hf_io.read_safetensors(TINY_HF_ENCODER / "model.safetensors")
    assert "embeddings.word_embeddings.weight" in tensors
    assert not any(name.startswith(("bert.", "cls.")) for name in tensors)


def write_config(tmp_path: Path, **changes) -> Path:
    config = json.loads((TINY_HF / "config.json").read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_config_reads_directory_and_file():
    assert hf_io.read_hf_config(TINY_HF)["num_attention_heads"] == 3
    assert hf_io.read_hf_config(TINY_HF / "config.json")["intermediate_size"] == 37


@pytest.mark.parametrize("model_type", ["roberta", "gpt2"])
def test_config_rejects_other_model(tmp_path, model_type):
    path = write_config(tmp_path, model_type=model_type)
    with pytest.raises(ValueError, match=f"model_type is '{model_type}', but only BERT"):
        hf_io.read_hf_config(path)


def test_config_without_model_type(tmp_path):
    config = json.loads((TINY_HF / "config.json").read_text())
    del config["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type is None"):
        hf_io.read_hf_config(tmp_path)


def test_config_missing_size(tmp_path):
    config = json.loads((TINY_HF / "config.json").read_text())
    del config["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing field.*hidden_size"):
        hf_io.read_hf_config(tmp_path)


def test_config_relative_positions(tmp_path):
    path = write_config(tmp_path, position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="position_embedding_type is 'relative_key'"):
        hf_io.read_hf_config(path)


def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{model_type: bert")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        hf_io.read_hf_config(tmp_path)


def test_config_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        hf_io.read_hf_config(tmp_path)


# ---------------------------------------------------------------- names and layout


def test_names_get_bert_prefix():
    tensors = {
        "embeddings.word_embeddings.weight": np.zeros((3, 2)),
        "pooler.dense.bias": np.zeros(2),
    }
    renamed = hf_io.normalize_hf_names(tensors, "x")
    expected = ["bert.embeddings.word_embeddings.weight", "bert.pooler.dense.bias"]
    assert sorted(renamed) == expected


def test_names_skip_buffers():
    tensors = {
        "embeddings.position_ids": np.arange(4)[None],
        "bert.embeddings.token_type_ids": np.zeros((1, 4), dtype=np.int64),
        "bert.pooler.dense.bias": np.zeros(2),
    }
    assert list(hf_io.normalize_hf_names(tensors, "x")) == ["bert.pooler.dense.bias"]


def test_names_gamma_beta():
    tensors = {
        "bert.embeddings.LayerNorm.gamma": np.ones(2),
        "bert.embeddings.LayerNorm.beta": np.zeros(2),
    }
    renamed = hf_io.normalize_hf_names(tensors, "x")
    expected = ["bert.embeddings.LayerNorm.bias", "bert.embeddings.LayerNorm.weight"]
    assert sorted(renamed) == expected


def test_names_drop_tied_decoder():
    words = np.arange(6.0).reshape(3, 2)
    bias = np.arange(3.0)
    tensors = {
        "bert.embeddings.word_embeddings.weight": words,
        "cls.predictions.decoder.weight": words.copy(),
        "cls.predictions.bias": bias,
        "cls.predictions.decoder.bias": bias.copy(),
    }
    renamed = hf_io.normalize_hf_names(tensors, "x")
    assert sorted(renamed) == ["bert.embeddings.word_embeddings.weight", "cls.predictions.bias"]


def test_names_untied_decoder_rejected():
    tensors = {
        "bert.embeddings.word_embeddings.weight": np.zeros((3, 2)),
        "cls.predictions.decoder.weight": np.ones((3, 2)),
    }
    with pytest.raises(ValueError, match="untied MLM decoder"):
        hf_io.normalize_hf_names(tensors, "x")


def test_names_duplicate_prefix_rejected():
    tensors = {"pooler.dense.bias": np.zeros(2), "bert.pooler.dense.bias": np.zeros(2)}
    with pytest.raises(ValueError, match="appears twice"):
        hf_io.normalize_hf_names(tensors, "x")


