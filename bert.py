"""BERT: the encoder, its pre-training heads, and the files it is stored in.

BertModel composes the blocks of layers.py into the encoder of Devlin et al. 2018 (word,
position and token-type embeddings, a stack of post-LayerNorm encoder layers, and a pooler on
[CLS]). BertForPreTraining adds the two pre-training heads: masked language modelling (MLM),
evaluated only at the positions asked for, and next sentence prediction (NSP).

Weights are named as in Hugging Face's state dict (`bert.encoder.layer.0.attention.self.query
.weight`, `cls.predictions.bias`, ...) at every boundary, so a BERT checkpoint from transformers
loads here unchanged, and a model trained here exports to a directory transformers loads.

Imports: NumPy, the standard library, autograd.py, layers.py, and tokenizer.py (for `load`).
Usage:
    python bert.py convert bert_model.npz hf_dir/     # .npz -> Hugging Face directory
    python bert.py convert hf_dir/ bert_model.npz     # Hugging Face directory -> .npz
    python bert.py convert --float16 bert_model.npz half.npz    # .npz -> float16 .npz
    from bert import BertConfig, BertForPreTraining, load, save
Follows: Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", and the weight names of transformers' modeling_bert.py.

Limitations:
- hidden_act "gelu" (the exact erf form) only; checkpoints using other activations are rejected.
- Reads safetensors only, not PyTorch .bin pickles (they need torch to unpickle).
- Absolute position embeddings only (position_embedding_type "absolute").

Shapes: B batch, T sequence length, C hidden size, H heads, V vocabulary, M masked positions.
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from autograd import Tensor, gelu, linear
from layers import (SKIP_INIT, Dropout, Embedding, EncoderLayer, LayerNorm, Linear, Module,
                    Parameter, attention_bias)

# Size presets as in Google's BERT miniatures: (layers, hidden size). Heads are hidden / 64 and
# the intermediate size is 4 x hidden, as in every BERT release (see from_preset).
PRESETS = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
}

NPZ_FORMAT = "numpy-bert/1"
# A .npz file is a zip archive: it starts with a local file header, or with the
# end-of-archive record when it is empty.
NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


# ---------------------------------------------------------------------------- configuration


@dataclasses.dataclass
class BertConfig:
    """Model hyperparameters, with Hugging Face's field names and defaults (bert-base)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"config {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"config hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act != "gelu":
            raise ValueError(
                f"config hidden_act {self.hidden_act!r} is not supported; only 'gelu' (exact erf "
                "form) is implemented"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"config {name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BertConfig":
        """Build a config from a size preset (tiny, mini, small, medium, base) and overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden = PRESETS[name]
        # Heads and intermediate size follow the hidden size, the preset's or an override.
        override = overrides.get("hidden_size")
        if isinstance(override, int) and not isinstance(override, bool) and override >= 1:
            hidden = override
        # About 64 per head, as in every BERT release, with a head count that divides the
        # hidden size (hidden 200: 2 heads of 100, not 3).
        heads = max(1, hidden // 64)
        while hidden % heads:
            heads -= 1
        sizes = dict(num_hidden_layers=layers, hidden_size=hidden,
                     num_attention_heads=heads, intermediate_size=4 * hidden)
        sizes.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**sizes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "BertConfig":
        """Build a config from a dict such as config.json, ignoring fields BERT does not use."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "BertConfig":
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------------- the model


class BertOutput:
    """Outputs of BertModel.encode; the two lists are filled only when requested."""

    def __init__(self, last_hidden_state, pooler_output, hidden_states, attentions):
        self.last_hidden_state = last_hidden_state  # (B, T, C)
        self.pooler_output = pooler_output  # (B, C)
        self.hidden_states = hidden_states  # embeddings output, then each layer's (B, T, C)
        self.attentions = attentions  # each layer's probabilities (B, H, T, T)


class BertEmbeddings(Module):
    """Sum of word, position and token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        super().__init__()
        C, std = config.hidden_size, config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, C, rng, std,
                                         padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, C, rng, std)
        self.token_type_embeddings = Embedding(config.type_vocab_size, C, rng, std)
        self.norm = LayerNorm(C, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> Tensor:
        T = input_ids.shape[1]
        # (B, T, C) + (T, C) broadcast over the batch + (B, T, C)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(np.arange(T))
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.norm(x))


class BertModel(Module):
    """The BERT encoder: embeddings, num_hidden_layers encoder layers, and the pooler."""

    def __init__(self, config: BertConfig, seed: int = 0, rng: np.random.Generator = None):
        super().__init__()
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        std = config.initializer_range
        self.embeddings = BertEmbeddings(config, rng)
        self.encoder = [
            EncoderLayer(config.hidden_size, config.num_attention_heads,
                         config.intermediate_size, config.hidden_dropout_prob,
                         config.attention_probs_dropout_prob, config.layer_norm_eps, rng, std)
            for _ in range(config.num_hidden_layers)
        ]
        self.pooler = Linear(config.hidden_size, config.hidden_size, rng, std)

    def check_inputs(self, input_ids, token_type_ids, attention_mask):
        """Validate the id arrays and fill the defaults; returns three (B, T) int arrays."""
        input_ids = np.asarray(input_ids)
        if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
            raise ValueError(
                f"input_ids must be a 2-D integer array (B, T), got shape {input_ids.shape} "
                f"and dtype {input_ids.dtype}"
            )
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}; truncate the input"
            )
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {self.config.vocab_size}), got values from "
                f"{input_ids.min()} to {input_ids.max()}"
            )
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        token_type_ids = np.asarray(token_type_ids)
        if token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids shape {token_type_ids.shape} does not match input_ids shape "
                f"{input_ids.shape}"
            )
        if token_type_ids.size and (token_type_ids.min() < 0
                                    or token_type_ids.max() >= self.config.type_vocab_size):
            raise ValueError(
                f"token_type_ids must lie in [0, {self.config.type_vocab_size}), got values "
                f"up to {token_type_ids.max()}"
            )
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {attention_mask.shape} does not match input_ids "
                    f"shape {input_ids.shape}"
                )
        return input_ids, token_type_ids, attention_mask

    def encode(self, input_ids, token_type_ids=None, attention_mask=None,
               output_hidden_states: bool = False, output_attentions: bool = False) -> BertOutput:
        """Run the encoder on (B, T) ids; attention_mask is 1 for real tokens, 0 for padding."""
        input_ids, token_type_ids, attention_mask = self.check_inputs(
            input_ids, token_type_ids, attention_mask)

        x = self.embeddings(input_ids, token_type_ids)
        # A batch without padding needs no mask: adding zeros would change nothing.
        bias = None
        if attention_mask is not None and not attention_mask.all():
            bias = attention_bias(attention_mask, x.dtype)

        hidden_states = [x] if output_hidden_states else []
        attentions = []
        for layer in self.encoder:
            x, probs = layer(x, bias, return_probs=output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)

        # The pooler summarises the sequence as tanh(dense(hidden state of [CLS])).
        pooled = self.pooler(x[:, 0]).tanh()
        return BertOutput(x, pooled, hidden_states, attentions)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        """(B, T) ids -> last hidden state (B, T, C) and pooled output (B, C)."""
        out = self.encode(input_ids, token_type_ids, attention_mask)
        return out.last_hidden_state, out.pooler_output


class BertForPreTraining(Module):
    """BertModel plus the MLM head (tied to the word embeddings) and the NSP head."""

    def __init__(self, config: BertConfig, seed: int = 0, rng: np.random.Generator = None):
        super().__init__()
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        C, std = config.hidden_size, config.initializer_range
        self.bert = BertModel(config, rng=rng)
        self.mlm_dense = Linear(C, C, rng, std)
        self.mlm_norm = LayerNorm(C, config.layer_norm_eps)
        # The decoder reuses the word embedding matrix (weight tying); only its bias is new.
        self.mlm_bias = Parameter(np.zeros(config.vocab_size, dtype=np.float32))
        self.nsp = Linear(C, 2, rng, std)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """(..., C) hidden states -> (..., V) vocabulary logits."""
        h = self.mlm_norm(gelu(self.mlm_dense(hidden)))
        # The tied decoder: logits = h @ E.T + b, with E the (V, C) word embeddings.
        return linear(h, self.bert.embeddings.word_embeddings.weight.T, self.mlm_bias)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                masked_positions=None) -> tuple[Tensor, Tensor]:
        """Return MLM logits and NSP logits (B, 2), where index 0 means "B follows A".

        masked_positions: flat indices into the B * T positions. The MLM head then runs only
        there and returns (M, V) logits. Over every position, the (C, V) decoder would cost
        about as much as the whole mini encoder. Without it the logits are (B, T, V).
        """
        out = self.bert.encode(input_ids, token_type_ids, attention_mask)
        hidden = out.last_hidden_state
        if masked_positions is not None:
            B, T, C = hidden.shape
            positions = np.asarray(masked_positions)
            if positions.size and (positions.min() < 0 or positions.max() >= B * T):
                raise ValueError(
                    f"masked_positions must be flat indices in [0, {B * T}), got values from "
                    f"{positions.min()} to {positions.max()}"
                )
            hidden = hidden.reshape(B * T, C)[positions]
        return self.mlm_logits(hidden), self.nsp(out.pooler_output)


# ---------------------------------------------------------------------------- weight names

# Our parameter names inside BertModel -> Hugging Face's. transformers nests one level deeper
# (attention.self.query, attention.output.dense, ...), so the table is a list of prefix rewrites.
_ENCODER_RENAMES = [
    (r"^embeddings\.norm\.", "embeddings.LayerNorm."),
    (r"^encoder\.(\d+)\.attention\.self_attention\.", r"encoder.layer.\1.attention.self."),
    (r"^encoder\.(\d+)\.attention\.output\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^encoder\.(\d+)\.attention\.norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^encoder\.(\d+)\.feed_forward\.intermediate\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^encoder\.(\d+)\.feed_forward\.output\.", r"encoder.layer.\1.output.dense."),
    (r"^encoder\.(\d+)\.feed_forward\.norm\.", r"encoder.layer.\1.output.LayerNorm."),
    (r"^pooler\.", "pooler.dense."),
]

# The pre-training heads of BertForPreTraining -> Hugging Face's names.
_HEAD_RENAMES = {
    "mlm_dense.weight": "cls.predictions.transform.dense.weight",
    "mlm_dense.bias": "cls.predictions.transform.dense.bias",
    "mlm_norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm_norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm_bias": "cls.predictions.bias",
    "nsp.weight": "cls.seq_relationship.weight",
    "nsp.bias": "cls.seq_relationship.bias",
}

# Tensors a checkpoint may lack: they keep their fresh initialisation. BertForMaskedLM
# checkpoints have no pooler and no NSP head.
_OPTIONAL = ("pooler.dense.", "cls.seq_relationship.")


def hf_name(name: str) -> str:
    """Map one of our parameter names to its Hugging Face state-dict name."""
    if name in _HEAD_RENAMES:
        return _HEAD_RENAMES[name]
    prefix = ""
    if name.startswith("bert."):
        prefix, name = "bert.", name[len("bert."):]
    for pattern, replacement in _ENCODER_RENAMES:
        name, count = re.subn(pattern, replacement, name)
        if count:
            break
    return prefix + name


def _is_linear_weight(name: str, array: np.ndarray) -> bool:
    # Every 2-D weight outside the embedding tables belongs to a Linear layer.
    return array.ndim == 2 and "embeddings" not in name


def hf_state_dict(model: Module) -> dict:
    """Return {Hugging Face name: float32 array in Hugging Face's layout} for a model.

    Our Linear weights are (in, out); PyTorch's nn.Linear stores (out, in), so they are
    transposed here, and back in load_hf_state_dict.
    """
    state = {}
    for name, parameter in model.named_parameters():
        array = parameter.data
        key = hf_name(name)
        state[key] = np.ascontiguousarray(array.T if _is_linear_weight(key, array) else array)
    return state


def load_hf_state_dict(model: Module, tensors: dict, source: str) -> list:
    """Copy Hugging Face-named tensors into the model's parameters, in place.

    Names are accepted with or without the `bert.` prefix. Returns the optional tensors that
    were missing (see _OPTIONAL); any other missing tensor or a shape that does not match the
    config raises ValueError naming the file, the tensor and both shapes.
    """
    missing_optional = []
    for name, parameter in model.named_parameters():
        key = hf_name(name)
        bare = key[len("bert."):] if key.startswith("bert.") else key
        candidates = [key, bare, "bert." + bare]
        found = next((k for k in candidates if k in tensors), None)
        if found is None:
            if bare.startswith(_OPTIONAL):
                missing_optional.append(key)
                continue
            raise ValueError(f"{source}: missing tensor {key}")
        array = np.asarray(tensors[found])
        if _is_linear_weight(key, array):
            array = array.T
        if array.shape != parameter.shape:
            expected = parameter.shape[::-1] if _is_linear_weight(key, array) else parameter.shape
            got = array.shape[::-1] if _is_linear_weight(key, array) else array.shape
            raise ValueError(
                f"{source}: tensor {found} has shape {got}, but the config needs {expected}"
            )
        parameter.data[...] = array.astype(parameter.dtype)
    return missing_optional


# ---------------------------------------------------------------------------- .npz files


def _atomic_write(path: Path, write) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path.

    A crash or an exception leaves any existing file at path untouched and no partial file.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only; give it the mode that the
        # umask gives a new file.
        os.chmod(tmp_name, _file_mode())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def save(model: Module, tokenizer, path, metadata: dict | None = None,
         extra: dict | None = None, float16: bool = False) -> None:
    """Write model, vocabulary, tokenizer options and metadata to one .npz file, atomically.

    Weights use Hugging Face names and layout. `extra` contains further arrays (a training
    checkpoint stores its optimizer moments there). float16 halves the file; weights load back
    as float32.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    arrays = {}
    for key, array in hf_state_dict(model).items():
        if float16:
            if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
                raise ValueError(f"tensor {key} exceeds the float16 range; save as float32")
            array = array.astype(np.float16)
        arrays[key] = array
    # Text entries are 0-d unicode arrays: np.load reads them with allow_pickle=False.
    arrays["__format__"] = np.array(NPZ_FORMAT)
    arrays["__architecture__"] = np.array(type(model).__name__)
    arrays["__config__"] = np.array(model.config.to_json())
    arrays["__vocab__"] = np.array("\n".join(tokenizer.tokens))
    arrays["__tokenizer__"] = np.array(json.dumps(tokenizer.config()))
    arrays["__metadata__"] = np.array(json.dumps(metadata or {}))
    for key, array in (extra or {}).items():
        arrays["extra/" + key] = np.asarray(array)

    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_npz(path) -> tuple:
    """Read a numpy-bert .npz file: returns (model, tokenizer, metadata, extra arrays).

    The file is opened with allow_pickle=False, so it can never run code. A missing,
    truncated or foreign file raises FileNotFoundError or ValueError naming it.
    """
    from tokenizer import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found; train one with train.py")
    # np.load treats anything that is not a zip archive (or a .npy array) as a pickle, so
    # without this check a text file or a safetensors file would be called a pickle.
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in NPZ_MAGIC:
        hint = ""
        if path.suffix in (".safetensors", ".json"):
            hint = f"; for a Hugging Face checkpoint, pass its folder {path.parent}"
        raise ValueError(
            f"{path} is not a .npz file (expected a numpy-bert model saved by train.py or "
            f"bert.py convert){hint}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {key: npz[key] for key in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                f"{path}: contains a pickled object, which is not loaded for safety; "
                "re-create the file with train.py or bert.py convert"
            ) from None
        raise ValueError(f"{path}: not a valid .npz file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path}: not a valid .npz file or truncated ({e})") from None

    if str(entries.get("__format__", "")) != NPZ_FORMAT or "__config__" not in entries:
        raise ValueError(f"{path}: not a numpy-bert model file (no {NPZ_FORMAT} header)")
    try:
        config = BertConfig.from_json(str(entries["__config__"]))
        tokens = str(entries["__vocab__"]).split("\n")
        options = json.loads(str(entries["__tokenizer__"]))
        metadata = json.loads(str(entries["__metadata__"]))
        tokenizer = Tokenizer(tokens, **options)
    except KeyError as e:
        raise ValueError(f"{path}: header entry {e} is missing; re-create the file with "
                         "train.py or bert.py convert") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: damaged header entry ({e})") from None
    except (ValueError, TypeError) as e:
        # A config or vocabulary that cannot work, e.g. heads that do not divide the hidden size.
        raise ValueError(f"{path}: {e}") from None

    architecture = str(entries["__architecture__"])
    # Every weight is read from the file next, so none is drawn at random first.
    model_class = BertForPreTraining if architecture == "BertForPreTraining" else BertModel
    model = model_class(config, rng=SKIP_INIT)
    weights = {k: v for k, v in entries.items() if not k.startswith(("__", "extra/"))}
    load_hf_state_dict(model, weights, str(path))
    extra = {k[len("extra/"):]: v for k, v in entries.items() if k.startswith("extra/")}
    return model.eval(), tokenizer, metadata, extra


# ---------------------------------------------------------------------------- safetensors

SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}
# NumPy dtype -> safetensors dtype name, for writing.
WRITABLE_DTYPES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
}
# The safetensors package (0.8.0) rejects headers larger than this with "header too
# large", so a larger length means a corrupted file, not a big model.
MAX_HEADER_BYTES = 100_000_000

# Buffers that transformers may store next to the weights but that are not weights:
# position_ids is always arange(P), token_type_ids is a zero default.
NON_WEIGHT_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
ENCODER_PREFIX = "bert."
HEAD_PREFIX = "cls."
# The MLM decoder is tied to the word embeddings and its bias is cls.predictions.bias,
# so these two names duplicate other tensors and our model does not store them.
TIED_DECODER_WEIGHT = "cls.predictions.decoder.weight"
TIED_DECODER_BIAS = "cls.predictions.decoder.bias"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
PREDICTION_BIAS = "cls.predictions.bias"


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into native-endian NumPy arrays.

    F64, F32, F16, I64 and I32 keep their dtype; BF16 becomes float32 exactly. The
    returned arrays are writable copies that do not share memory with each other.
    Raises FileNotFoundError if the file does not exist. Raises ValueError, naming the
    file and the tensor, for a truncated file, a header that is not valid JSON, an
    unsupported dtype, and offsets that are out of range, overlap or disagree with the
    shape.
    """
    path = Path(path)
    header, buffer = _read_safetensors_file(path)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype_name = entry["dtype"]
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        dtype = SAFETENSORS_DTYPES[dtype_name]
        count = (end - begin) // dtype.itemsize
        raw = np.frombuffer(buffer, dtype=dtype, count=count, offset=begin).reshape(shape)
        if dtype_name == "BF16":
            tensors[name] = bf16_bits_to_float32(raw)
        else:
            # astype copies into native byte order, aligned, independent of the buffer.
            tensors[name] = raw.astype(raw.dtype.newbyteorder("="))
    return tensors


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the "__metadata__" string map of a safetensors file ({} if it has none)."""
    header, _ = _read_safetensors_file(Path(path))
    return dict(header.get("__metadata__", {}))


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 without rounding.

    bfloat16 is the upper half of a float32 (sign, 8 exponent bits, 7 mantissa bits),
    so shifting the bits 16 places left gives the same number as a float32.
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _read_safetensors_file(path: Path) -> tuple[dict, bytearray]:
    """Read and validate a safetensors file and return its header and its data buffer."""
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()

    # Step 1: the 8-byte header length, then the JSON header.
    if len(data) < 8:
        raise ValueError(
            f"{path}: file is {len(data)} bytes, shorter than the 8-byte header length "
            "of a safetensors file; the file is truncated or not safetensors"
        )
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(data):
        raise ValueError(
            f"{path}: header length {header_length} does not fit in the {len(data)}-byte "
            "file; the file is truncated or not safetensors"
        )
    try:
        header = json.loads(data[8:8 + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(
            f"{path}: safetensors header is a JSON {type(header).__name__}, "
            "expected a JSON object"
        )

    # Step 2: every entry must describe a supported dtype and a byte range inside the
    # buffer whose size matches its shape.
    buffer = bytearray(data[8 + header_length:])
    del data
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            _validate_metadata(path, entry)
            continue
        begin, end = _validate_entry(path, name, entry, len(buffer))
        ranges.append((begin, end, name))

    # Step 3: no two tensors may share bytes. Empty tensors occupy no bytes.
    ranges.sort()
    previous_end, previous_name = 0, None
    for begin, end, name in ranges:
        if begin == end:
            continue
        if begin < previous_end:
            raise ValueError(
                f"{path}: tensor '{name}' bytes [{begin}, {end}) overlap tensor "
                f"'{previous_name}' ending at {previous_end}; the file is corrupted"
            )
        previous_end, previous_name = end, name
    return header, buffer


def _validate_metadata(path: Path, metadata) -> None:
    """Raise ValueError unless the header's __metadata__ is a map of strings to strings."""
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{path}: __metadata__ must map strings to strings, got {metadata!r}")


def _validate_entry(path: Path, name: str, entry, buffer_size: int) -> tuple[int, int]:
    """Check one header entry and return its (begin, end) byte offsets in the buffer."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise ValueError(
            f"{path}: tensor '{name}' header entry {entry!r} is invalid: it needs "
            "dtype, shape and data_offsets"
        )

    dtype_name = entry["dtype"]
    if dtype_name not in SAFETENSORS_DTYPES:
        raise ValueError(
            f"{path}: tensor '{name}' has unsupported dtype {dtype_name!r}; "
            f"supported: {', '.join(SAFETENSORS_DTYPES)}"
        )
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"{path}: tensor '{name}' has invalid shape {shape!r}")

    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
    ):
        raise ValueError(f"{path}: tensor '{name}' has invalid data_offsets {offsets!r}")

    begin, end = offsets
    if not 0 <= begin <= end <= buffer_size:
        raise ValueError(
            f"{path}: tensor '{name}' data_offsets [{begin}, {end}] are out of range for "
            f"the {buffer_size}-byte data buffer; the file is truncated or corrupted"
        )
    expected = int(np.prod(shape, dtype=np.int64)) * SAFETENSORS_DTYPES[dtype_name].itemsize
    if end - begin != expected:
        raise ValueError(
            f"{path}: tensor '{name}' has {end - begin} bytes, but shape {tuple(shape)} of "
            f"{dtype_name} needs {expected}; the file is corrupted"
        )
    return begin, end


def write_safetensors(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write arrays to a safetensors file atomically.

    Supported dtypes: float64, float32, float16, int64, int32, in either byte order.
    The header is padded with spaces so that the data buffer starts at a multiple of 8
    bytes. Tensors are ordered by decreasing item size, then name, so every tensor is
    aligned to its item size, as the safetensors package lays files out. The bytes go to
    a temporary file in the same folder, which is then renamed over `path`, so a
    failure never leaves a half-written file. Raises ValueError naming the tensor for
    an unsupported dtype or name.
    """
    path = Path(path)
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"{path}: invalid tensor name {name!r}")
        if _writable_dtype_name(np.asarray(array)) is None:
            raise ValueError(
                f"{path}: tensor '{name}' has dtype {np.asarray(array).dtype}, which cannot "
                "be written; convert it with .astype(np.float32) or .astype(np.int64)"
            )
    if metadata is not None:
        _validate_metadata(path, metadata)

    # Lay out the buffer: each tensor's little-endian bytes, back to back.
    def layout_key(name: str) -> tuple[int, str]:
        return (-np.asarray(tensors[name]).dtype.itemsize, name)

    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for name in sorted(tensors, key=layout_key):
        array = np.asarray(tensors[name])
        dtype_name = _writable_dtype_name(array)
        raw = np.ascontiguousarray(array, dtype=SAFETENSORS_DTYPES[dtype_name]).tobytes()
        header[name] = {
            "dtype": dtype_name,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Spaces are valid JSON whitespace, so padding keeps the header parseable.
    header_bytes += b" " * (-(8 + len(header_bytes)) % 8)
    chunks = [struct.pack("<Q", len(header_bytes)), header_bytes, *chunks]
    _atomic_write(path, lambda f: f.writelines(chunks))


def _writable_dtype_name(array: np.ndarray) -> str | None:
    """Return the safetensors dtype name for an array of either byte order, or None."""
    return WRITABLE_DTYPES.get(array.dtype.newbyteorder("="))


def read_hf_config(path: str | os.PathLike) -> dict:
    """Read a Hugging Face config.json (or a directory containing one) of a BERT model.

    Returns the JSON object unchanged. Raises FileNotFoundError if there is no file.
    Raises ValueError if the file is not JSON, if model_type is not "bert" (for example
    a RoBERTa or GPT-2 config) or if a size field is missing. Relative position
    embeddings and decoder settings are also rejected, because BERT has neither.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config.json not found: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")

    model_type = config.get("model_type")
    if model_type != "bert":
        raise ValueError(
            f"{path}: model_type is {model_type!r}, but only BERT checkpoints "
            "(model_type \"bert\") are supported"
        )
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size"]
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"{path}: position_embedding_type is {position_type!r}; only \"absolute\" "
            "position embeddings (original BERT) are supported"
        )
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise ValueError(
            f"{path}: decoder BERT models (is_decoder, add_cross_attention) are not supported"
        )
    return config


def normalize_hf_names(
    tensors: dict[str, np.ndarray], path: str | os.PathLike
) -> dict[str, np.ndarray]:
    """Rename a checkpoint's tensors to BertForPreTraining state-dict names.

    - Encoder names without the `bert.` prefix (a checkpoint saved from BertModel, such
      as all-MiniLM-L6-v2) get it.
    - Buffers that are not weights (`embeddings.position_ids`, `embeddings.token_type_ids`)
      are dropped.
    - LayerNorm `gamma`/`beta`, from checkpoints converted from TensorFlow, become
      `weight`/`bias`.
    - The tied MLM decoder (`cls.predictions.decoder.weight`/`.bias`), stored by older
      checkpoints, is dropped after checking that it equals the word embeddings and
      `cls.predictions.bias`, because our decoder reuses those arrays.
    Other names pass through unchanged, so the caller can report them as unexpected.
    `path` is used in error messages only.
    """
    renamed: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if name.endswith(NON_WEIGHT_SUFFIXES):
            continue
        if name.endswith(".gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith(".beta"):
            name = name[: -len("beta")] + "bias"
        if not name.startswith((ENCODER_PREFIX, HEAD_PREFIX)) and name.startswith(
            ("embeddings.", "encoder.", "pooler.")
        ):
            name = ENCODER_PREFIX + name
        if name in renamed:
            raise ValueError(
                f"{path}: tensor '{name}' appears twice, with and without the `bert.` prefix"
            )
        renamed[name] = array

    _drop_tied_copy(renamed, TIED_DECODER_WEIGHT, WORD_EMBEDDINGS, path)
    _drop_tied_copy(renamed, TIED_DECODER_BIAS, PREDICTION_BIAS, path)
    return renamed


def _drop_tied_copy(tensors: dict, copy: str, original: str, path) -> None:
    """Remove `copy` if it equals `original`, or move it there if `original` is missing."""
    if copy not in tensors:
        return
    if original not in tensors:
        tensors[original] = tensors.pop(copy)
        return
    if not np.array_equal(tensors[copy], tensors[original]):
        raise ValueError(
            f"{path}: '{copy}' differs from '{original}'; untied MLM decoder weights are "
            "not supported because BERT ties the decoder to the word embeddings"
        )
    del tensors[copy]


# ---------------------------------------------------------------------------- Hugging Face


def load_hf(directory) -> tuple:
    """Read a Hugging Face BERT checkpoint directory: returns (model, tokenizer).

    Needs config.json, model.safetensors and vocab.txt; tokenizer_config.json is read if
    present for the casing options. A checkpoint with an MLM head becomes a
    BertForPreTraining, one without becomes a BertModel (an encoder).
    """
    from tokenizer import Tokenizer

    directory = Path(directory)
    config_values = read_hf_config(directory / "config.json")
    try:
        config = BertConfig.from_dict(config_values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{directory / 'config.json'}: {e}") from None

    vocab_path = directory / "vocab.txt"
    options = {}
    values = _read_tokenizer_config(directory)
    if values:
        options["lowercase"] = bool(values.get("do_lower_case", True))
        if values.get("strip_accents") is not None:
            options["strip_accents"] = bool(values["strip_accents"])
        if values.get("tokenize_chinese_chars") is not None:
            options["tokenize_chinese_chars"] = bool(values["tokenize_chinese_chars"])
    tokenizer = Tokenizer.from_file(vocab_path, **options)

    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        if (directory / "pytorch_model.bin").is_file():
            raise ValueError(
                f"{directory}: has only pytorch_model.bin, a pickle that needs torch; save it "
                "as model.safetensors with transformers (save_pretrained) first"
            )
        raise FileNotFoundError(f"{weights_path} not found")
    tensors = normalize_hf_names(read_safetensors(weights_path), weights_path)

    has_mlm_head = any(k.startswith("cls.predictions.") for k in tensors)
    # Weights are read from the file next, so none is drawn at random first, unless the
    # checkpoint lacks some (see _OPTIONAL): those keep BERT's random initialisation.
    model_class = BertForPreTraining if has_mlm_head else BertModel
    model = model_class(config, rng=SKIP_INIT)
    if load_hf_state_dict(model, tensors, str(weights_path)):
        model = model_class(config)
        load_hf_state_dict(model, tensors, str(weights_path))
    return model.eval(), tokenizer


def export_hf(model: Module, tokenizer, directory, replace: bool = False,
              max_length: int | None = None) -> int:
    """Write the model as a Hugging Face checkpoint directory that transformers loads.

    config.json, model.safetensors (float32, Hugging Face names and layout), vocab.txt and
    tokenizer_config.json. The tied MLM decoder weight is not written: transformers ties it
    to the word embeddings on load, as its own save_pretrained does. max_length is the
    tokenizer's model_max_length (default: max_position_embeddings); pass the length the
    model was trained on when it is shorter (see trained_length).

    `directory` must not exist or be empty, unless replace=True: then everything in it is
    replaced, because files that transformers reads beside ours (tokenizer.json,
    special_tokens_map.json, pytorch_model.bin, ...) would no longer match the model.
    The files are first written to a hidden folder inside `directory`. Only when all four
    are complete do the old entries move aside and the new ones take their place. So an
    interruption leaves the old contents, or no folder if there was none. The folder
    itself stays, with its permissions, so it may be the current folder or a mount point.
    Returns how many entries were replaced.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; give a folder name for the checkpoint")
    if directory.is_dir() and any(directory.iterdir()) and not replace:
        raise ValueError(f"{directory} is not empty; choose a new folder, or pass replace=True")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".export-"))
    aside = directory / (staging.name + ".old")  # the replaced entries, until the end
    moved_aside, placed, done = [], [], False
    try:
        config = model.config.to_dict()
        config.update(model_type="bert", architectures=[type(model).__name__],
                      position_embedding_type="absolute")
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        (staging / "config.json").write_text(text, encoding="utf-8")
        write_safetensors(staging / "model.safetensors", hf_state_dict(model),
                          metadata={"format": "pt"})
        tokenizer.save(staging / "vocab.txt")
        options = tokenizer.config()
        tokenizer_config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": options["lowercase"],
            "strip_accents": options.get("strip_accents"),
            "tokenize_chinese_chars": options.get("tokenize_chinese_chars", True),
            "model_max_length": max_length or model.config.max_position_embeddings,
            # Decoding joins "' s" back into "'s", as Tokenizer.decode does.
            "clean_up_tokenization_spaces": True,
        }
        text = json.dumps(tokenizer_config, indent=2) + "\n"
        (staging / "tokenizer_config.json").write_text(text, encoding="utf-8")
        for path in staging.iterdir():  # one mode for all four, from the umask
            os.chmod(path, _file_mode())
        aside.mkdir()
        for entry in sorted(directory.iterdir()):
            if entry.name not in (staging.name, aside.name):
                os.rename(entry, aside / entry.name)
                moved_aside.append(entry.name)
        for path in sorted(staging.iterdir()):
            os.rename(path, directory / path.name)
            placed.append(path.name)
        done = True
    finally:
        if not done:  # put the old entries back
            for name in placed:
                (directory / name).unlink()
            for name in moved_aside:
                os.rename(aside / name, directory / name)
        try:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
        except KeyboardInterrupt:  # the export is complete or undone; finish the clean-up
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
        if not done and created:
            try:
                directory.rmdir()
            except OSError:  # something else was put in it meanwhile: leave it
                pass
    return len(moved_aside)


def _file_mode() -> int:
    """Return the mode that the umask gives a new file, such as 0o644 under umask 022."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def trained_length(config: "BertConfig", metadata: dict | None) -> int:
    """Return the longest sequence, in tokens, that the model saw in training.

    train.py records it in the metadata (settings.max_seq_len). A model converted from a
    Hugging Face folder carries the folder's model_max_length as max_seq_len (see
    hf_metadata). Positions beyond it keep their random initial embeddings, so
    predictions there are meaningless. A model without either record is taken at its
    max_position_embeddings.
    """
    metadata = metadata if isinstance(metadata, dict) else {}
    settings = metadata.get("settings")
    for length in (metadata.get("max_seq_len"),
                   settings.get("max_seq_len") if isinstance(settings, dict) else None):
        if isinstance(length, int) and not isinstance(length, bool) and length >= 1:
            return min(length, config.max_position_embeddings)
    return config.max_position_embeddings


def _read_tokenizer_config(directory) -> dict:
    """Return the values of a Hugging Face folder's tokenizer_config.json, {} without one."""
    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: not a JSON object")
    return values


def hf_metadata(directory) -> dict:
    """Return the metadata that a Hugging Face folder implies, as load_npz returns it.

    That is the tokenizer's model_max_length as max_seq_len (see trained_length), which
    export_hf sets to the trained length. Folders from elsewhere often hold a huge
    placeholder (int(1e30)) there, which trained_length caps at the positions.
    """
    length = _read_tokenizer_config(directory).get("model_max_length")
    if isinstance(length, int) and not isinstance(length, bool) and length >= 1:
        return {"max_seq_len": length}
    return {}


def load(path) -> tuple:
    """Load (model, tokenizer) from a numpy-bert .npz file or a Hugging Face directory."""
    model, tokenizer, _, _ = load_with_metadata(path)
    return model, tokenizer


def load_with_metadata(path) -> tuple:
    """Load (model, tokenizer, metadata, extra arrays) from a .npz file or a Hugging Face
    directory, as load_npz does. A directory has no extra arrays, and its metadata is
    what hf_metadata reads from it."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is a folder without config.json; pass a .npz file or a Hugging "
                "Face checkpoint folder"
            )
        model, tokenizer = load_hf(path)
        return model, tokenizer, hf_metadata(path), {}
    return load_npz(path)


# ---------------------------------------------------------------------------- command line


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2, like the script's other errors."""

    def error(self, message: str):
        self.exit(2, f"bert.py: error: {message} (see --help)\n")


# Files whose presence marks a folder as a Hugging Face checkpoint that convert would replace.
_CHECKPOINT_FILES = ("config.json", "model.safetensors")


def _convert(src: Path, dst: Path, float16: bool, force: bool) -> str:
    """Convert the model at src into dst and return the message to print.

    A dst ending in .npz is written as a numpy-bert file, any other dst as a Hugging Face
    checkpoint folder. Arguments that cannot work raise ValueError before src is read.
    """
    if not src.exists():
        raise FileNotFoundError(
            f"{src} not found; pass a numpy-bert .npz file or a Hugging Face checkpoint folder"
        )
    if dst.is_symlink():
        if not dst.exists():
            raise ValueError(f"{dst} is a broken symbolic link; pass an existing folder or "
                             "a new name as DST")
        dst = dst.resolve()  # write to what the link points to, keeping the link
    to_npz = dst.suffix.lower() == ".npz"
    existed = dst.exists()
    has_checkpoint = any((dst / name).exists() for name in _CHECKPOINT_FILES)
    if existed and src.resolve() == dst.resolve():
        raise ValueError(f"{src} is both SRC and DST; give DST another name")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"folder {dst.parent} of DST does not exist; create it first")
    if to_npz:
        if dst.is_dir():
            raise ValueError(f"{dst} is a folder; give a .npz file name as DST")
        if existed and not force:
            raise ValueError(f"{dst} already exists; pass --force to replace it")
    else:
        if float16:
            raise ValueError(
                "--float16 applies to a .npz DST only; a Hugging Face checkpoint is written "
                "as float32"
            )
        if existed and not dst.is_dir():
            raise ValueError(
                f"{dst} is an existing file; give a folder name for a Hugging Face checkpoint "
                "or a file name ending in .npz"
            )
        if existed and src.resolve().is_relative_to(dst.resolve()):
            raise ValueError(f"{src} is inside DST {dst}, which would be replaced; write to "
                             "another folder")
        if has_checkpoint and not force:
            raise ValueError(f"{dst} already contains a checkpoint; pass --force to replace it")
        if existed and any(dst.iterdir()) and not force:
            raise ValueError(f"{dst} is a folder with files in it; choose a new folder, or "
                             "pass --force to replace the folder and everything in it")

    notes = []
    model, tokenizer, metadata, extra = load_with_metadata(src)
    if extra:
        notes.append(
            f"note: {len(extra)} extra arrays of {src} (optimizer state) are not copied, "
            f"so {dst} cannot resume training"
        )
    if to_npz:
        metadata = dict(metadata, converted_from=str(src))
        save(model, tokenizer, dst, metadata=metadata, float16=float16)
        precision = "float16" if float16 else "float32"
        replaced = ", replacing the previous file" if existed else ""
        message = f"wrote {dst} ({precision} weights{replaced})"
    else:
        replaced = export_hf(model, tokenizer, dst, replace=force,
                             max_length=trained_length(model.config, metadata))
        entries = "1 entry" if replaced == 1 else f"{replaced} entries"
        replaced = f" (replaced the {entries} that were in it)" if replaced else ""
        message = f"wrote {dst}{replaced}"
    return "\n".join([message, *notes])


def main(argv=None) -> int:
    parser = _ArgumentParser(
        prog="bert.py",
        description="Convert BERT models between numpy-bert .npz files and Hugging Face "
                    "checkpoint folders.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", help="convert SRC to DST; the format of DST follows from its name",
        description="A DST ending in .npz is written as a numpy-bert file (from a .npz or a "
                    "Hugging Face SRC, optionally as float16); any other DST is written as a "
                    "Hugging Face checkpoint folder.")
    convert.add_argument("src", help="a numpy-bert .npz file or a Hugging Face BERT folder")
    convert.add_argument("dst", help="the .npz file or the checkpoint folder to write")
    convert.add_argument("--float16", action="store_true",
                         help="store weights as float16 in a .npz DST (half the size; loads "
                              "back as float32); default float32")
    convert.add_argument("--force", action="store_true",
                         help="replace an existing .npz DST, or an existing DST folder with "
                              "everything in it, since files such as tokenizer.json beside "
                              "ours would no longer match the model (default: reject)")
    convert.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)

    try:
        message = _convert(Path(args.src), Path(args.dst), args.float16, args.force)
    except KeyboardInterrupt:
        print("bert.py: interrupted; DST was left as it was", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"bert.py: error: {e}", file=sys.stderr)
        # Bad arguments and unreadable input are usage errors; other OSErrors (a full
        # disk, a permission problem) are failures.
        return 2 if isinstance(e, (ValueError, FileNotFoundError)) else 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
