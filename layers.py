"""The building blocks of BERT, each a small module over autograd.py.

A module owns parameters (leaf Tensors that require grad) and sub-modules, both registered by the
name they are assigned to, so `model.named_parameters()` walks the tree and no model keeps a
hand-written parameter list. `train()` and `eval()` switch dropout on and off for the whole tree.

Blocks, in the order BERT uses them: Linear, Embedding, LayerNorm, Dropout, SelfAttention,
FeedForward and EncoderLayer (post-LayerNorm, as in the original Transformer and BERT).

Imports: NumPy and autograd.py only.
Usage:   from layers import Linear, EncoderLayer   (python layers.py runs a small demo)
Follows: Vaswani et al. 2017, "Attention Is All You Need"; Devlin et al. 2018, "BERT".

Limitations:
- Linear stores its weight as (in, out), the transpose of PyTorch's (out, in) layout, so the
  forward pass is `x @ W` with no transposed copy. bert.py transposes when it reads or writes
  Hugging Face checkpoints.
- Bidirectional self-attention only: no causal mask, no cross-attention, no key/value cache.

Shapes: B batch, T sequence length, C hidden size, H heads, D = C // H head size,
I intermediate size.
"""

import sys

import numpy as np

from autograd import (Tensor, attention, concatenate, dropout, embedding, gelu, layer_norm,
                      linear, run_demo)


class Parameter(Tensor):
    """A leaf Tensor that a Module registers as one of its trainable weights."""

    def __init__(self, data: np.ndarray):
        super().__init__(data, requires_grad=True, dtype=data.dtype)


class Module:
    """Base class: registers Parameters, sub-Modules and lists of Modules by attribute name."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, Module) for v in value
        ):
            # A list of layers is registered as "name.0", "name.1", ... like torch's ModuleList.
            self._modules[name] = ModuleList(value)
            value = self._modules[name]
        object.__setattr__(self, name, value)

    def named_parameters(self, prefix: str = ""):
        """Yield (dotted name, Parameter) pairs, depth first, in registration order."""
        for name, parameter in self._parameters.items():
            yield prefix + name, parameter
        for name, module in self._modules.items():
            yield from module.named_parameters(prefix + name + ".")

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """Yield this module and every sub-module below it."""
        yield self
        for module in self._modules.values():
            yield from module.modules()

    def train(self, mode: bool = True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for parameter in self.parameters():
            parameter.grad = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class ModuleList(Module):
    """An indexable list of modules whose parameters are named by position."""

    def __init__(self, modules):
        super().__init__()
        for i, module in enumerate(modules):
            self._modules[str(i)] = module

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)


class _SkipInit:
    """Pass as `rng` to build a model whose weights are all loaded next: normal_init()
    then returns zeros instead of drawing random numbers that would be overwritten."""


SKIP_INIT = _SkipInit()


def normal_init(rng: np.random.Generator, shape: tuple, std: float) -> np.ndarray:
    """Draw float32 weights from normal(0, std), as BERT initialises every weight matrix."""
    if rng is SKIP_INIT:
        return np.zeros(shape, dtype=np.float32)
    return (rng.standard_normal(shape) * std).astype(np.float32)


class Linear(Module):
    """y = x @ W + b, with W stored as (in, out)."""

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator,
                 std: float = 0.02):
        super().__init__()
        self.weight = Parameter(normal_init(rng, (in_features, out_features), std))
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        # (..., in) -> (..., out)
        return linear(x, self.weight, self.bias)


class Embedding(Module):
    """A lookup table: row i of the weight is the vector for id i."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rng: np.random.Generator,
                 std: float = 0.02, padding_idx: int | None = None):
        super().__init__()
        weight = normal_init(rng, (num_embeddings, embedding_dim), std)
        if padding_idx is not None:
            # transformers starts the [PAD] row at zero (padding_idx), so we do too.
            weight[padding_idx] = 0.0
        self.weight = Parameter(weight)

    def forward(self, ids: np.ndarray) -> Tensor:
        # ids (...) int -> (..., C)
        return embedding(self.weight, ids)


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-12):
        super().__init__()
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32))
        # BERT uses 1e-12, far below float32 resolution: the epsilon only guards a zero variance.
        self.eps = eps

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """Normalize x, or x + residual when one is given (Add & Norm as one node)."""
        return layer_norm(x, self.weight, self.bias, self.eps, residual)


class Dropout(Module):
    """Inverted dropout: zero a share p of the values in training, identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention_bias(attention_mask: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Turn a (B, T) mask of 1 (real) and 0 (padding) into an additive (B, 1, 1, T) bias.

    Padded keys get the most negative finite number, so their exp() in the softmax underflows
    to exactly 0. A finite value (not -inf) keeps a row with every key masked finite: it
    becomes a uniform distribution instead of NaN.
    """
    mask = np.asarray(attention_mask)
    bias = (1.0 - mask.astype(dtype)) * np.finfo(dtype).min
    return bias[:, None, None, :]


class SelfAttention(Module):
    """Multi-head scaled dot-product self-attention with one fused QKV projection.

    query, key and value are three Linear layers (so weights keep their Hugging Face names), but
    the forward pass concatenates their weights and runs one (C, 3C) matrix multiply.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout_p: float,
                 rng: np.random.Generator, std: float = 0.02):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads "
                f"{num_heads}; choose a head count that divides it"
            )
        self.num_heads = num_heads
        self.query = Linear(hidden_size, hidden_size, rng, std)
        self.key = Linear(hidden_size, hidden_size, rng, std)
        self.value = Linear(hidden_size, hidden_size, rng, std)
        self.dropout = Dropout(dropout_p)

    def forward(self, x: Tensor, bias: np.ndarray | None,
                return_probs: bool = True) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C), bias (B, 1, 1, T) or None -> context (B, T, C), probabilities
        (B, H, T, T), or None for them when return_probs is False (inference then makes no
        (B, H, T, T) array)."""
        # One matrix multiply for all three projections: (B, T, C) -> (B, T, 3C).
        weight = concatenate([self.query.weight, self.key.weight, self.value.weight], axis=1)
        bias_qkv = concatenate([self.query.bias, self.key.bias, self.value.bias], axis=0)
        qkv = linear(x, weight, bias_qkv)

        # Per head: softmax(Q K^T / sqrt(D) + bias), attention dropout, times V; heads joined
        # back into (B, T, C). autograd.attention does all of it as one node.
        return attention(qkv, self.num_heads, bias, self.dropout.p, self.training,
                         return_probs=return_probs)


class Attention(Module):
    """Self-attention, its output projection, dropout, residual connection and LayerNorm."""

    def __init__(self, hidden_size: int, num_heads: int, hidden_dropout: float,
                 attention_dropout: float, eps: float, rng: np.random.Generator,
                 std: float = 0.02):
        super().__init__()
        self.self_attention = SelfAttention(hidden_size, num_heads, attention_dropout, rng, std)
        self.output = Linear(hidden_size, hidden_size, rng, std)
        self.dropout = Dropout(hidden_dropout)
        self.norm = LayerNorm(hidden_size, eps)

    def forward(self, x: Tensor, bias: np.ndarray | None,
                return_probs: bool = True) -> tuple[Tensor, Tensor | None]:
        context, probs = self.self_attention(x, bias, return_probs)
        # Post-LayerNorm: normalise after adding the residual, as BERT does.
        out = self.norm(self.dropout(self.output(context)), residual=x)
        return out, probs


class FeedForward(Module):
    """Position-wise feed-forward: Linear C -> I, GELU, Linear I -> C, dropout, residual, LayerNorm."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_dropout: float,
                 eps: float, rng: np.random.Generator, std: float = 0.02):
        super().__init__()
        self.intermediate = Linear(hidden_size, intermediate_size, rng, std)
        self.output = Linear(intermediate_size, hidden_size, rng, std)
        self.dropout = Dropout(hidden_dropout)
        self.norm = LayerNorm(hidden_size, eps)

    def forward(self, x: Tensor) -> Tensor:
        # (B, T, C) -> (B, T, I) -> (B, T, C)
        h = gelu(self.intermediate(x))
        return self.norm(self.dropout(self.output(h)), residual=x)


class EncoderLayer(Module):
    """One BERT encoder layer: attention block, then feed-forward block."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int,
                 hidden_dropout: float, attention_dropout: float, eps: float,
                 rng: np.random.Generator, std: float = 0.02):
        super().__init__()
        self.attention = Attention(hidden_size, num_heads, hidden_dropout, attention_dropout,
                                   eps, rng, std)
        self.feed_forward = FeedForward(hidden_size, intermediate_size, hidden_dropout, eps,
                                        rng, std)

    def forward(self, x: Tensor, bias: np.ndarray | None,
                return_probs: bool = True) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (B, T, C), and the attention probabilities (B, H, T, T), or
        None for them when return_probs is False."""
        x, probs = self.attention(x, bias, return_probs)
        return self.feed_forward(x), probs


def _demo() -> None:
    """Run one small encoder layer on a padded batch and print what each part holds."""
    np.set_printoptions(precision=3, suppress=True)
    rng = np.random.default_rng(0)
    layer = EncoderLayer(hidden_size=8, num_heads=2, intermediate_size=16, hidden_dropout=0.1,
                         attention_dropout=0.1, eps=1e-12, rng=rng)
    print("EncoderLayer(hidden 8, 2 heads, intermediate 16): its parameters by name")
    for name, parameter in layer.named_parameters():
        print(f"  {name:40s} {parameter.shape}")

    # Two sequences of 4 tokens; the second has 2 real tokens and 2 padding positions.
    x = Tensor(rng.standard_normal((2, 4, 8)).astype(np.float32), requires_grad=True)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    layer.eval()  # no dropout, so the output is deterministic
    out, probs = layer(x, attention_bias(mask))
    print(f"\nforward: x {x.shape} -> out {out.shape}, attention probabilities {probs.shape}")
    print("sequence 2, head 1: each row sums to 1 and the padded keys (columns 3, 4) get 0")
    print(probs.data[1, 0])

    # Not out.sum(): every row of a LayerNorm output sums to the same value, whatever x is,
    # so that gradient would be 0. A weighted sum with random weights depends on x.
    loss = (out * rng.standard_normal(out.shape).astype(np.float32)).sum()
    loss.backward()
    print("\nbackward: loss.backward() on a random weighted sum of out filled a gradient for x "
          "and every parameter")
    print(f"  x.grad {x.grad.shape}, largest |value| {np.abs(x.grad).max():.3f}")
    weight = layer.feed_forward.intermediate.weight
    print(f"  feed_forward.intermediate.weight.grad {weight.grad.shape}")


USAGE = """usage: python layers.py [--help]

Runs a demo: one small BERT encoder layer on a padded batch of two sequences. It prints
the layer's parameters by name, the attention probabilities of the padded sequence (the
padded keys get 0) and the gradients that backward() fills. Import the file (from layers
import EncoderLayer) to build models; bert.py does."""


def main(argv: list[str] | None = None) -> int:
    return run_demo("layers.py", USAGE, _demo, argv)


if __name__ == "__main__":
    sys.exit(main())
