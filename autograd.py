"""Reverse-mode automatic differentiation over NumPy arrays, with the operations BERT needs.

A Tensor wraps a NumPy array. Every operation on tensors that require gradients
records, in the result, its parent tensors and a closure that turns the result's
gradient into gradients for the parents. `loss.backward()` sorts the recorded graph
topologically and runs those closures from the loss back to the leaves, so each
parameter ends up with `.grad` = d loss / d parameter (reverse-mode differentiation,
the "backpropagation" of neural-network training).

Each operation below reads top to bottom: compute `out`, then the backward closure
for exactly that computation, then return. Fused operations (linear, softmax,
log-softmax with cross-entropy, layer norm, GELU, embedding, multi-head attention) are
one graph node each, with a hand-derived backward that reuses what the forward pass
cached.

Imports: NumPy and the Python standard library only, so this file can be copied alone
into another project.

Use:
    import autograd as ag
    w = ag.Tensor(np.random.randn(3, 2), requires_grad=True)
    loss = (ag.Tensor(x) @ w).relu().sum()
    loss.backward()                     # w.grad is now d loss / d w
    python autograd.py                  # prints a small graph's values and gradients
    python autograd.py --help           # what the demo shows

Formulas follow the papers the BERT code uses: GELU(x) = x * Phi(x) with the exact
normal CDF Phi(x) = (1 + erf(x / sqrt(2))) / 2 ("Gaussian Error Linear Units",
Hendrycks and Gimpel), layer normalization over the last axis ("Layer
Normalization", Ba, Kiros and Hinton) and inverted dropout ("Dropout", Srivastava
et al.).

Shape legend: B batch, T sequence length, C hidden size, H heads, D = C // H head
size, V vocabulary, I intermediate size, N rows of a 2-D view such as B * T.

Limitations:
- CPU and NumPy only: no GPU. Everything runs on one Python thread, and the products on
  the BLAS library's threads, unless set_num_threads() requests more (see "threads" below).
- Gradients are first order: backward closures run on plain arrays, so a gradient of
  a gradient cannot be taken.
- One side of `**` must be a Python number: `t ** 2` and `2 ** t` work, `t ** t`
  does not, and the base of `2 ** t` must be positive.
- erf() of float32 input evaluates a rational approximation (error below 1e-7 against
  math.erf). Other input goes through math.erf element by element, which is exact but
  about 100 times slower and meant for float64 gradient checks.
- GELU of float32 input uses its own approximation: within 2.6e-7 of the exact formula
  on [-10, 10], with a relative error of up to 4.1e-3 for x < -4, where GELU is above
  -1.3e-4 (see _GELU_P).
- softmax of a row that is entirely -inf returns NaN, as in PyTorch: fill masked
  positions with a large finite negative number (for example -1e9) instead.
- Integer-array indexing that combines several index arrays falls back to
  np.add.at in backward, which is exact but slow.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading

import numpy as np

__all__ = [
    "Tensor",
    "no_grad",
    "is_grad_enabled",
    "concatenate",
    "linear",
    "attention",
    "cross_entropy",
    "layer_norm",
    "gelu",
    "erf",
    "softmax",
    "log_softmax",
    "dropout",
    "manual_seed",
    "get_rng_state",
    "set_rng_state",
    "embedding",
    "masked_fill",
    "reuse_freed_memory",
    "set_num_threads",
    "get_num_threads",
    "products_use_threads",
    "thread_count",
]

_grad_enabled = True


class no_grad:
    """Context manager under which operations record no graph (for evaluation)."""

    def __enter__(self) -> "no_grad":
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc_info) -> None:
        global _grad_enabled
        _grad_enabled = self._previous


def is_grad_enabled() -> bool:
    """Return whether operations currently record a graph for backward()."""
    return _grad_enabled


def _freed_backward(grad):
    # Stands in for a node's backward closure once backward() has freed the graph.
    # _topological_order() detects it and raises before any gradient is touched.
    raise RuntimeError("internal error: a freed graph node was run")


# ---------------------------------------------------------------- the Tensor


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    `Tensor(data, requires_grad=False, dtype=None)` wraps `data` without copying
    when it already is an ndarray of the final dtype. Floating-point data becomes
    float32 unless `dtype` is given (float64 is meant for gradient checks). Integer
    and boolean data keep their dtype and cannot require gradients.

    Gradient accumulation: backward() adds (`+=`) every gradient that reaches a
    tensor into its `.grad`, it never overwrites it. A tensor used twice, as in
    `x * x` or a weight shared by two layers, influences the loss along two paths,
    and by the multivariable chain rule its total derivative is the sum of the
    derivatives along each path. The same rule makes `.grad` of a leaf keep
    growing over several backward() calls until the caller resets it to None.
    Each tensor owns its gradient array: no two tensors share one.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward")

    # Makes NumPy return NotImplemented for `ndarray + Tensor`, so Python calls
    # Tensor.__radd__ and the result stays a Tensor on the graph.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            array = np.asarray(data, dtype=dtype)
        else:
            array = np.asarray(data)
            if array.dtype.kind == "f" and array.dtype != np.float32:
                array = array.astype(np.float32)
        if requires_grad and array.dtype.kind != "f":
            raise ValueError(
                f"requires_grad=True needs floating-point data, got dtype {array.dtype}: "
                "pass dtype=np.float32"
            )
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None

    # ------------------------------------------------------------ properties

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def numpy(self) -> np.ndarray:
        """Return the underlying array (shared, not a copy)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """Return a tensor on the same data that is cut off from the graph."""
        return Tensor(self.data, dtype=self.data.dtype)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        dtype = "" if self.data.dtype == np.float32 else f", dtype={self.data.dtype}"
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}{dtype}{grad})"

    # ------------------------------------------------------------ backward

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d self / d leaf into `.grad` of every leaf that requires grad.

        `grad` is the upstream gradient d loss / d self. It defaults to 1 for a
        tensor with one element. Intermediate gradients are dropped as soon as they
        have been used. Unless `retain_graph` is True the graph is freed afterwards,
        so a second backward() through it raises RuntimeError.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() was called on a tensor that does not require grad, so no "
                "graph leads to it: create the leaves with requires_grad=True."
            )
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without grad works only on a tensor with one element, "
                    f"but this one has shape {self.shape}, so pass grad= of that shape."
                )
            grad = np.ones(self.shape, dtype=self.dtype)
        else:
            grad = np.array(grad.data if isinstance(grad, Tensor) else grad,
                            dtype=self.dtype, copy=True)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward() got grad of shape {grad.shape} for a tensor of shape "
                    f"{self.shape}, but the two shapes must be equal."
                )

        order = _topological_order(self)
        _accumulate(self, grad, owned=True)
        for node in reversed(order):
            backward = node._backward
            if backward is None:
                continue  # a leaf: keep its .grad
            grad = node.grad
            node.grad = None  # intermediate gradients are freed once used
            if grad is not None:
                backward(grad)
            if not retain_graph:
                node._parents = ()
                node._backward = _freed_backward

    # ------------------------------------------------------------ arithmetic

    def __add__(self, other) -> "Tensor":
        a, b = self, _as_tensor(other, self)
        out = _result(_broadcast_op(np.add, a, b, "+"), (a, b))

        def _backward(g):
            ga = _unbroadcast(g, a.shape) if a.requires_grad else None
            if ga is not None:
                _accumulate(a, ga, owned=True)
            if b.requires_grad:
                gb = _unbroadcast(g, b.shape)
                _accumulate(b, gb, owned=gb is not ga)

        return _record(out, _backward)

    def __radd__(self, other) -> "Tensor":
        return self + other

    def __sub__(self, other) -> "Tensor":
        a, b = self, _as_tensor(other, self)
        out = _result(_broadcast_op(np.subtract, a, b, "-"), (a, b))

        def _backward(g):
            if b.requires_grad:
                gb = -_unbroadcast(g, b.shape)
                _accumulate(b, gb, owned=True)
            if a.requires_grad:
                _accumulate(a, _unbroadcast(g, a.shape), owned=True)

        return _record(out, _backward)

    def __rsub__(self, other) -> "Tensor":
        return _as_tensor(other, self) - self

    def __mul__(self, other) -> "Tensor":
        a, b = self, _as_tensor(other, self)
        out = _result(_broadcast_op(np.multiply, a, b, "*"), (a, b))

        def _backward(g):
            # g has the broadcast shape of both operands, so the last product that
            # needs g can be written into g's own buffer.
            if a.requires_grad:
                ga = g * b.data if b.requires_grad else np.multiply(g, b.data, out=g)
                _accumulate(a, _unbroadcast(ga, a.shape), owned=True)
            if b.requires_grad:
                gb = np.multiply(g, a.data, out=g)
                _accumulate(b, _unbroadcast(gb, b.shape), owned=True)

        return _record(out, _backward)

    def __rmul__(self, other) -> "Tensor":
        return self * other

    def __truediv__(self, other) -> "Tensor":
        a, b = self, _as_tensor(other, self)
        out = _result(_broadcast_op(np.true_divide, a, b, "/"), (a, b))
        out_data = out.data

        def _backward(g):
            if not b.requires_grad:
                _accumulate(a, _unbroadcast(np.divide(g, b.data, out=g), a.shape), owned=True)
                return
            ga = g / b.data  # d out / d a = 1 / b
            # d out / d b = -a / b**2 = -(1 / b) * out, written into g's buffer
            gb = np.multiply(ga, out_data, out=g)
            _accumulate(b, _unbroadcast(np.negative(gb, out=gb), b.shape), owned=True)
            if a.requires_grad:
                _accumulate(a, _unbroadcast(ga, a.shape), owned=True)

        return _record(out, _backward)

    def __rtruediv__(self, other) -> "Tensor":
        return _as_tensor(other, self) / self

    def __neg__(self) -> "Tensor":
        a = self
        out = _result(np.negative(a.data), (a,))

        def _backward(g):
            _accumulate(a, np.negative(g, out=g), owned=True)

        return _record(out, _backward)

    def __pow__(self, exponent) -> "Tensor":
        if isinstance(exponent, Tensor) or not np.isscalar(exponent):
            raise TypeError(
                f"** supports Python number exponents only, got {type(exponent).__name__}"
            )
        a = self
        if isinstance(exponent, np.generic):
            # A NumPy scalar such as np.float64(2.0) would promote float32 to float64,
            # but a Python number adopts the array's dtype.
            exponent = exponent.item()
        out = _result(a.data ** exponent, (a,))

        def _backward(g):
            # d a**p / d a = p * a**(p - 1)
            np.multiply(g, exponent * a.data ** (exponent - 1), out=g)
            _accumulate(a, g, owned=True)

        return _record(out, _backward)

    def __rpow__(self, base) -> "Tensor":
        if not np.isscalar(base) or isinstance(base, (str, bytes)):
            raise TypeError(f"** supports Python number bases only, got {type(base).__name__}")
        if isinstance(base, np.generic):
            base = base.item()  # keep the tensor's dtype, as in __pow__
        if not base > 0:
            raise ValueError(
                f"base {base} ** tensor is supported for a positive base only, because its "
                "gradient needs ln(base)"
            )
        a = self
        out = _result(base ** a.data, (a,))
        out_data = out.data
        log_base = math.log(base)

        def _backward(g):
            # d base**a / d a = base**a * ln(base)
            np.multiply(g, out_data, out=g)
            _accumulate(a, np.multiply(g, log_base, out=g), owned=True)

        return _record(out, _backward)

    def __matmul__(self, other) -> "Tensor":
        return self.matmul(other)

    def __rmatmul__(self, other) -> "Tensor":
        return _as_tensor(other, self).matmul(self)

    def matmul(self, other) -> "Tensor":
        """Matrix product with NumPy's rules: batched, broadcast leading axes, 1-D operands."""
        a, b = self, _as_tensor(other, self)
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul shapes {a.shape} and {b.shape} are incompatible: the last axis "
                "of the first must equal the second-to-last axis of the second"
            )
        if b.ndim == 2 and a.ndim >= 2:
            # (..., K) @ (K, N) as one 2-D product, which BLAS runs faster than a loop
            # over the leading axes.
            out_data = _product(a.data.reshape(-1, a.shape[-1]), b.data).reshape(
                a.shape[:-1] + (b.shape[1],))
        else:
            try:
                out_data = np.matmul(a.data, b.data)
            except ValueError:
                raise ValueError(
                    f"matmul shapes {a.shape} and {b.shape} are incompatible: their "
                    "leading (batch) axes cannot be broadcast together"
                ) from None
        out = _result(out_data, (a, b))

        def _backward(g):
            if b.ndim == 2 and a.ndim >= 2:
                g2 = g.reshape(-1, g.shape[-1])
                if a.requires_grad:
                    _accumulate(a, _product(g2, b.data.T).reshape(a.shape), owned=True)
                if b.requires_grad:
                    a2 = a.data.reshape(-1, a.shape[-1])
                    _accumulate(b, _product(a2.T, g2), owned=True)
                return
            # As in np.matmul, a 1-D first operand acts as a matrix with one row and
            # a 1-D second operand as one with one column. Their gradients are
            # reshaped back to 1-D at the end.
            a_data = a.data[None, :] if a.ndim == 1 else a.data
            b_data = b.data[:, None] if b.ndim == 1 else b.data
            batch = np.broadcast_shapes(a_data.shape[:-2], b_data.shape[:-2])
            g = g.reshape(batch + (a_data.shape[-2], b_data.shape[-1]))
            if a.requires_grad:
                ga = np.matmul(g, np.swapaxes(b_data, -1, -2))
                _accumulate(a, _unbroadcast(ga, a_data.shape).reshape(a.shape), owned=True)
            if b.requires_grad:
                gb = np.matmul(np.swapaxes(a_data, -1, -2), g)
                _accumulate(b, _unbroadcast(gb, b_data.shape).reshape(b.shape), owned=True)

        return _record(out, _backward)

    # ------------------------------------------------------------ reductions

    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        a = self
        out = _result(np.sum(a.data, axis=axis, keepdims=keepdims), (a,))
        axes = _normalize_axes(axis, a.ndim)

        def _backward(g):
            if not keepdims:
                g = np.expand_dims(g, axes)
            ga = np.empty(a.shape, dtype=a.dtype)
            np.copyto(ga, g)  # broadcasts g over the summed axes
            _accumulate(a, ga, owned=True)

        return _record(out, _backward)

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        a = self
        out = _result(np.mean(a.data, axis=axis, keepdims=keepdims), (a,))
        axes = _normalize_axes(axis, a.ndim)
        count = math.prod(a.shape[i] for i in axes)

        def _backward(g):
            if not keepdims:
                g = np.expand_dims(g, axes)
            ga = np.empty(a.shape, dtype=a.dtype)
            np.multiply(g, 1.0 / count, out=ga)
            _accumulate(a, ga, owned=True)

        return _record(out, _backward)

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Maximum over axes. Tied maxima share the gradient equally, as torch.amax does."""
        a = self
        out = _result(np.max(a.data, axis=axis, keepdims=keepdims), (a,))
        axes = _normalize_axes(axis, a.ndim)
        out_data = out.data

        def _backward(g):
            peak = out_data if keepdims else np.expand_dims(out_data, axes)
            if not keepdims:
                g = np.expand_dims(g, axes)
            is_max = a.data == peak
            ties = np.sum(is_max, axis=axes, keepdims=True).astype(a.dtype)
            ga = np.multiply(is_max, g / ties, dtype=a.dtype)
            _accumulate(a, ga, owned=True)

        return _record(out, _backward)

    # ------------------------------------------------------------ shape

    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        a = self
        try:
            out_data = a.data.reshape(shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                f"into shape {shape}"
            ) from None
        out = _result(out_data, (a,))

        def _backward(g):
            _accumulate(a, g.reshape(a.shape), owned=True)

        return _record(out, _backward)

    def view(self, *shape) -> "Tensor":
        return self.reshape(*shape)

    def transpose(self, dim0: int, dim1: int) -> "Tensor":
        """Swap two axes, as torch.transpose does (not NumPy's full reversal)."""
        a = self
        out = _result(np.swapaxes(a.data, dim0, dim1), (a,))

        def _backward(g):
            _accumulate(a, np.swapaxes(g, dim0, dim1), owned=True)

        return _record(out, _backward)

    def permute(self, *dims) -> "Tensor":
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        a = self
        out = _result(np.transpose(a.data, dims), (a,))
        inverse = tuple(np.argsort([d % a.ndim for d in dims]))

        def _backward(g):
            _accumulate(a, np.transpose(g, inverse), owned=True)

        return _record(out, _backward)

    @property
    def T(self) -> "Tensor":
        """Reverse all axes: the matrix transpose for a 2-D tensor."""
        return self.permute(tuple(range(self.ndim - 1, -1, -1)))

    def __getitem__(self, index) -> "Tensor":
        """Basic slicing, boolean masks and integer-array indexing, as NumPy does them.

        Integer arrays may repeat an index, and backward then adds up the gradients
        of every copy.
        """
        index = _unwrap_index(index)
        a = self
        out = _result(a.data[index], (a,))
        advanced = _has_integer_array(index)

        def _backward(g):
            if not advanced:
                # Basic slices and boolean masks select each element at most once.
                _accumulate_into_index(a, index, g)
            elif isinstance(index, np.ndarray):
                # One integer array selects whole rows of axis 0.
                rows = g.reshape(index.size, math.prod(a.shape[1:]))
                ga = _sum_rows_by_index(index.reshape(-1) % a.shape[0], rows, a.shape[0])
                _accumulate(a, ga.reshape(a.shape), owned=True)
            else:
                ga = np.zeros(a.shape, dtype=a.dtype)
                np.add.at(ga, index, g)
                _accumulate(a, ga, owned=True)

        return _record(out, _backward)

    def split(self, split_size_or_sections, axis: int = 0) -> list:
        """Split into pieces along `axis`, as torch.split does.

        An int gives pieces of that size, and the last piece may be smaller. A list
        gives the size of each piece and must add up to the length of the axis.
        """
        axis = axis % self.ndim if self.ndim else 0
        length = self.shape[axis]
        if isinstance(split_size_or_sections, (int, np.integer)):
            step = int(split_size_or_sections)
            if step <= 0:
                raise ValueError(f"split size must be positive, got {step}")
            sizes = [min(step, length - start) for start in range(0, length, step)]
        else:
            sizes = [int(s) for s in split_size_or_sections]
            if sum(sizes) != length or min(sizes, default=0) < 0:
                raise ValueError(
                    f"split sections {sizes} must be non-negative and add up to "
                    f"{length}, the length of axis {axis} of shape {self.shape}"
                )
        pieces = []
        start = 0
        for size in sizes:
            index = (slice(None),) * axis + (slice(start, start + size),)
            pieces.append(self[index])
            start += size
        return pieces

    # ------------------------------------------------------------ elementwise

    def exp(self) -> "Tensor":
        a = self
        out = _result(np.exp(a.data), (a,))
        out_data = out.data

        def _backward(g):
            _accumulate(a, np.multiply(g, out_data, out=g), owned=True)

        return _record(out, _backward)

    def log(self) -> "Tensor":
        a = self
        out = _result(np.log(a.data), (a,))

        def _backward(g):
            _accumulate(a, np.divide(g, a.data, out=g), owned=True)

        return _record(out, _backward)

    def sqrt(self) -> "Tensor":
        a = self
        out = _result(np.sqrt(a.data), (a,))
        out_data = out.data

        def _backward(g):
            # d sqrt(a) / d a = 1 / (2 sqrt(a))
            np.divide(g, out_data, out=g)
            _accumulate(a, np.multiply(g, 0.5, out=g), owned=True)

        return _record(out, _backward)

    def tanh(self) -> "Tensor":
        a = self
        out = _result(np.tanh(a.data), (a,))
        out_data = out.data

        def _backward(g):
            # d tanh(a) / d a = 1 - tanh(a)**2
            slope = np.square(out_data, out=np.empty_like(out_data))
            np.subtract(1.0, slope, out=slope)
            _accumulate(a, np.multiply(g, slope, out=g), owned=True)

        return _record(out, _backward)

    def relu(self) -> "Tensor":
        a = self
        out = _result(np.maximum(a.data, 0), (a,))
        out_data = out.data

        def _backward(g):
            _accumulate(a, np.multiply(g, out_data > 0, out=g), owned=True)

        return _record(out, _backward)

    def gelu(self) -> "Tensor":
        return gelu(self)

    def softmax(self, axis: int = -1) -> "Tensor":
        return softmax(self, axis)

    def log_softmax(self, axis: int = -1) -> "Tensor":
        return log_softmax(self, axis)

    def masked_fill(self, mask, value: float) -> "Tensor":
        return masked_fill(self, mask, value)


# ---------------------------------------------------------------- graph plumbing


def _result(data, parents) -> Tensor:
    """Wrap an operation's output array, linking it to its parents when recording."""
    out = Tensor.__new__(Tensor)
    # Ufuncs on 0-d arrays return NumPy scalars. Keeping .data an ndarray lets
    # closures write into it with out=.
    out.data = data if type(data) is np.ndarray else np.asarray(data)
    out.grad = None
    out._backward = None
    requires_grad = False
    if _grad_enabled:
        for parent in parents:
            if parent.requires_grad:
                requires_grad = True
                break
    out.requires_grad = requires_grad
    out._parents = parents if requires_grad else ()
    return out


def _record(out: Tensor, backward) -> Tensor:
    """Attach the backward closure to `out` if the graph is being recorded."""
    if out.requires_grad:
        out._backward = backward
    return out


def _needs_graph(*tensors) -> bool:
    """Return whether an operation on `tensors` will be recorded (to skip caching)."""
    return _grad_enabled and any(t.requires_grad for t in tensors)


def _as_tensor(value, like: Tensor) -> Tensor:
    """Wrap a non-Tensor operand as a constant with the dtype of `like`.

    Python and NumPy scalars and arrays adopt the tensor's floating dtype, so
    `x32 * np.sqrt(2.0)` stays float32 instead of being promoted to float64.
    """
    if isinstance(value, Tensor):
        return value
    dtype = like.data.dtype
    array = np.asarray(value, dtype=dtype) if dtype.kind == "f" else np.asarray(value)
    constant = Tensor.__new__(Tensor)
    constant.data = array
    constant.grad = None
    constant.requires_grad = False
    constant._parents = ()
    constant._backward = None
    return constant


def _broadcast_op(ufunc, a: Tensor, b: Tensor, symbol: str) -> np.ndarray:
    try:
        return ufunc(a.data, b.data)
    except ValueError:
        raise ValueError(
            f"shapes {a.shape} and {b.shape} cannot be broadcast together for '{symbol}'"
        ) from None


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient over the axes that broadcasting added or stretched.

    An operand of `shape` was broadcast to `grad.shape` in the forward pass: leading
    axes were prepended and axes of length 1 were repeated. Each copy contributed to
    the output, so the operand's gradient is the sum over those axes. Returns `grad`
    itself when nothing was broadcast.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _accumulate(tensor: Tensor, grad: np.ndarray, owned: bool) -> None:
    """Add `grad` into `tensor.grad`.

    `owned` means no other tensor or cache references `grad` and it is writeable,
    so it can become `tensor.grad` without a copy. Otherwise it is copied, which
    keeps gradient arrays unshared.
    """
    if type(grad) is not np.ndarray or grad.dtype != tensor.data.dtype:
        # A NumPy scalar (from a 0-d computation) or another dtype: make an owned
        # array of the tensor's dtype.
        grad = np.array(grad, dtype=tensor.data.dtype)
        owned = True
    if tensor.grad is None:
        # copy() returns C order: a transposed view (the tied MLM decoder's gradient is one)
        # would otherwise make every later add, norm and optimizer pass several times slower.
        tensor.grad = grad if owned and grad.flags.c_contiguous else grad.copy()
    else:
        tensor.grad += grad


def _accumulate_into_index(tensor: Tensor, index, grad: np.ndarray) -> None:
    """Add `grad` into the part `index` of `tensor.grad` (zeros elsewhere)."""
    if tensor.grad is None:
        tensor.grad = np.zeros(tensor.shape, dtype=tensor.data.dtype)
    tensor.grad[index] += grad


def _topological_order(root: Tensor) -> list:
    """Return the nodes that lead to `root`, every node after all of its parents.

    Iterative depth-first search, so graphs of any depth avoid Python's recursion
    limit. Only parents that require grad are followed.
    """
    order = []
    visited = set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        if node._backward is _freed_backward:
            raise RuntimeError(
                "backward() reached a graph that an earlier backward() already freed: "
                "pass retain_graph=True to the earlier call to run backward twice."
            )
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def _normalize_axes(axis, ndim: int) -> tuple:
    """Return `axis` (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(sorted(int(i) % ndim for i in axis))


def _unwrap_index(index):
    """Replace Tensors and lists inside an index by NumPy arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    if isinstance(index, tuple):
        return tuple(_unwrap_index(i) for i in index)
    return index


def _has_integer_array(index) -> bool:
    """Return whether an index uses integer-array (advanced) indexing."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, np.ndarray) and i.dtype.kind in "iu" for i in parts)


def _sum_rows_by_index(ids: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Return a (num_rows, C) array whose row i is the sum of `rows[j]` with ids[j] == i.

    Equivalent to np.add.at(zeros, ids, rows), but faster: sorting the ids puts the
    rows of one id next to each other, np.add.reduceat sums each run of equal ids,
    and the sums go to distinct rows, so a plain assignment scatters them.
    ids (N,) are non-negative, rows (N, C).
    """
    out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
    if ids.size == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    out[sorted_ids[run_starts]] = np.add.reduceat(rows[order], run_starts, axis=0)
    return out


# ---------------------------------------------------------------- threads
#
# NumPy's ufuncs and BLAS calls release the GIL while they run, so Python threads that
# each work on their own slice of an array run in parallel. With set_num_threads(n),
# autograd splits its large pieces of work over n threads. The elementwise passes (GELU,
# softmax, layer norm, dropout, bias adds) always use them. The matrix products of
# linear() and matmul() and the blocks of attention() use them when BLAS itself runs one
# thread.
#
# Why autograd splits the products itself: a BLAS library that starts its own threads
# (OpenBLAS by default) spins them after each product, so they hold the cores that the
# elementwise threads need. It also runs attention's many small products (T x D by D x T)
# poorly.
# Two threads that each call a one-thread BLAS on half the rows matched OpenBLAS's own two
# threads on every linear layer of BERT and took 3.9 ms instead of 6.3 ms for the attention
# scores of MiniLM (32 x 128 tokens, 12 heads; measured on 2 cores). When the
# environment does not limit BLAS to one thread, products are left to BLAS, because two
# threads that each call a multi-threaded OpenBLAS ran 5 to 8 times slower.
#
# The default is one thread: this module cannot know how NumPy was loaded. train.py and
# infer.py set OPENBLAS_NUM_THREADS=1 before NumPy loads and then call set_num_threads.


def _first_positive(environ, names) -> int | None:
    """Return the first of the variables `names` in `environ` that contains a whole number > 0."""
    for name in names:
        value = str(environ.get(name, "")).strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _blas_thread_variables() -> tuple:
    """Return the variables that NumPy's BLAS reads for its thread count, in its order."""
    try:
        name = str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]).lower()
    except (AttributeError, KeyError, TypeError):
        name = ""
    if "mkl" in name:
        return ("MKL_NUM_THREADS", "OMP_NUM_THREADS")
    return ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")  # OpenBLAS


# Read once, here, because BLAS read the same variables when NumPy loaded it (above).
# NOTE: a variable changed after NumPy was imported misleads this check.
_blas_one_thread = _first_positive(os.environ, _blas_thread_variables()) == 1
_num_threads = 1
_split_products = False  # whether products and attention blocks use the threads
_thread_pool = None
_POOL_PREFIX = "autograd-pool"  # name prefix of the pool's threads
# The minimum work, in elements of a simple pass, of each part of a split: waking a pool
# thread took 40 to 120 us here, about a simple pass over 500,000 float32 elements. So a
# simple pass is split in two from about a million elements on.
_PARALLEL_MIN_SIZE = 1 << 19
# Elements per block of a blockwise pass: large enough that the ufunc calls (each takes
# the GIL) are few, small enough that the block's temporaries stay in cache.
_BLOCK = 131072


def set_num_threads(count: int) -> None:
    """Set how many threads autograd splits large elementwise passes and products over.

    Products and attention use the threads only if BLAS runs one thread itself: when
    this module loaded, the first of OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS and
    OMP_NUM_THREADS that was set was 1 (MKL_NUM_THREADS, then OMP_NUM_THREADS, for a
    NumPy built with MKL).
    """
    global _num_threads, _thread_pool, _split_products
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise ValueError(f"set_num_threads({count!r}) is invalid: pass a whole number of 1 or more")
    if _thread_pool is not None and count != _num_threads:
        _thread_pool.shutdown()
        _thread_pool = None
    _num_threads = int(count)
    _split_products = _num_threads > 1 and _blas_one_thread


def get_num_threads() -> int:
    """Return how many threads autograd's large passes use (see set_num_threads)."""
    return _num_threads


def products_use_threads() -> bool:
    """Return whether matrix products and attention run on autograd's threads."""
    return _split_products


def thread_count(environ=None) -> int:
    """Return the thread count that OPENBLAS_NUM_THREADS or OMP_NUM_THREADS requests.

    `environ` is a mapping such as os.environ (the default). The count is at most the
    cores this process may run on, and all of them when neither variable is set.
    train.py and infer.py read it before they limit BLAS to one thread, and give it to
    set_num_threads().
    """
    environ = os.environ if environ is None else environ
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    requested = _first_positive(environ, ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
    return cores if requested is None else min(requested, cores)


def _ceil_div(a: int, b: int) -> int:
    """Return a / b rounded up, for whole numbers a >= 0 and b > 0."""
    return -(-a // b)


def _parts(size: int, rows: int, threads: int | None = None) -> int:
    """Return how many parts to cut `rows` into: at most one per thread (or `threads`),
    and each with at least _PARALLEL_MIN_SIZE of the `size` elements of work."""
    threads = _num_threads if threads is None else threads
    return max(1, min(threads, rows, size // _PARALLEL_MIN_SIZE))


def _run(tasks: list) -> None:
    """Call every function in `tasks`: all but the last on the thread pool, the last on
    the calling thread, then wait for them all.

    Called on a pool thread, it runs them all there instead: a pool thread that waited
    for the pool could wait for itself. So several calling threads can share the pool.
    """
    if threading.current_thread().name.startswith(_POOL_PREFIX):
        for task in tasks:
            task()
        return
    pending = [_pool().submit(task) for task in tasks[:-1]]
    tasks[-1]()
    for future in pending:
        future.result()  # re-raises an exception from the thread


def _in_parallel(work, rows: int, size: int, threads: int | None = None) -> None:
    """Call work(start, stop) on contiguous row ranges that together cover range(rows).

    `size` is the work in elements of a simple pass. Small work, or one thread, runs as
    a single call on the calling thread. Otherwise the ranges run as _parts() decides,
    on up to `threads` threads (default: all of them).
    """
    parts = _parts(size, rows, threads)
    if parts == 1:
        work(0, rows)
        return
    bounds = [rows * i // parts for i in range(parts + 1)]
    _run([functools.partial(work, bounds[i], bounds[i + 1]) for i in range(parts)])


def _pool():
    """Return the thread pool, with one thread fewer than set_num_threads asked for."""
    global _thread_pool
    if _thread_pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _thread_pool = ThreadPoolExecutor(_num_threads - 1, thread_name_prefix=_POOL_PREFIX)
    return _thread_pool


def _multiply_in_place(g: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Multiply g by factor in place, split over the elementwise threads, and return g.

    A backward pass uses this for the gradient of an elementwise product. Arrays of
    other shapes or layouts take one NumPy call.
    """
    if g.shape != factor.shape or not (g.flags.c_contiguous and factor.flags.c_contiguous):
        return np.multiply(g, factor, out=g)
    flat_g, flat_factor = g.reshape(-1), factor.reshape(-1)

    def work(start, stop):
        np.multiply(flat_g[start:stop], flat_factor[start:stop], out=flat_g[start:stop])

    _in_parallel(work, flat_g.size, flat_g.size)
    return g


def _row_sums(block: np.ndarray) -> np.ndarray:
    """Return the sum of each row of a 2-D block, as a column (rows, 1).

    On rows of up to 1,024 entries einsum sums about three times faster than
    block.sum(axis=1) (measured on (1024, 128) blocks). It adds in sequence, so longer
    rows, such as a vocabulary, keep NumPy's more accurate pairwise sum.
    """
    if block.shape[1] <= 1024:
        return np.einsum("ij->i", block)[:, None]
    return block.sum(axis=1, keepdims=True)


def _row_blocks(start: int, stop: int, row_size: int):
    """Yield (a, b) row ranges of about _BLOCK elements that cover range(start, stop)."""
    step = max(1, _BLOCK // max(1, row_size))
    for a in range(start, stop, step):
        yield a, min(a + step, stop)


def _product_work(a: np.ndarray, b: np.ndarray) -> int:
    """Return the work of a @ b in elements of a simple pass: its multiply-adds / 8.

    BLAS did about 42 billion multiply-adds per second per core here, and a simple
    NumPy pass about 5 billion elements, hence the 8.
    """
    return a.shape[0] * a.shape[1] * b.shape[1] // 8


def _product_tasks(a: np.ndarray, b: np.ndarray, out: np.ndarray, parts: int,
                   bias: np.ndarray | None) -> list:
    """Return `parts` functions that together compute out = a @ b (+ bias).

    Each takes a block of rows of a, or of columns of b when b is wider than a is tall,
    makes one BLAS call for it and adds the bias to the block it wrote.
    """
    if a.shape[0] >= b.shape[1]:
        def work(start, stop):
            np.matmul(a[start:stop], b, out=out[start:stop])
            if bias is not None:
                out[start:stop] += bias

        count = a.shape[0]
    else:
        def work(start, stop):
            np.matmul(a, b[:, start:stop], out=out[:, start:stop])
            if bias is not None:
                out[:, start:stop] += bias[start:stop]

        count = b.shape[1]
    bounds = [count * i // parts for i in range(parts + 1)]
    return [functools.partial(work, bounds[i], bounds[i + 1]) for i in range(parts)]


def _product(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Return the 2-D matrix product a @ b (plus `bias`, one value per column).

    When the products may use the threads, the work is split as _product_tasks does.
    """
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
    if not _split_products:
        np.matmul(a, b, out=out)
        if bias is not None:
            def add_bias(start, stop):  # an elementwise pass, on the threads all the same
                out[start:stop] += bias

            _in_parallel(add_bias, len(out), out.size)
        return out
    parts = _parts(_product_work(a, b), max(a.shape[0], b.shape[1]))
    _run(_product_tasks(a, b, out, parts, bias))
    return out


def _two_products(first: tuple, second: tuple) -> tuple:
    """Return (first[0] @ first[1], second[0] @ second[1]), both 2-D.

    When the products may use the threads, the two run at once, each on half of them.
    On two threads, one whole product per thread took 4% to 7% less time than splitting
    each product in two (the backward products of the mini preset's linear layers).
    """
    works = [_product_work(*pair) for pair in (first, second)]
    if not _split_products or min(works) < _PARALLEL_MIN_SIZE:
        return _product(*first), _product(*second)
    outs = [np.empty((x.shape[0], y.shape[1]), dtype=np.result_type(x.dtype, y.dtype))
            for x, y in (first, second)]
    half = _num_threads // 2
    _run(_product_tasks(*first, outs[0], half, None)
         + _product_tasks(*second, outs[1], _num_threads - half, None))
    return outs[0], outs[1]


# ---------------------------------------------------------------- fused operations


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis, as np.concatenate does."""
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    if first is None:
        first = Tensor(tensors[0])
    tensors = tuple(_as_tensor(t, first) for t in tensors)
    try:
        out_data = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise ValueError(
            f"cannot concatenate shapes {shapes} along axis {axis}: all other axes "
            "must have equal lengths"
        ) from None
    out = _result(out_data, tensors)
    axis = axis % out_data.ndim
    boundaries = np.cumsum([t.shape[axis] for t in tensors])[:-1]

    def _backward(g):
        # Each piece is a view on a disjoint part of g, which no one else uses.
        for tensor, piece in zip(tensors, np.split(g, boundaries, axis=axis)):
            if tensor.requires_grad:
                _accumulate(tensor, piece, owned=True)

    return _record(out, _backward)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Return x @ weight + bias as one node.

    x (..., IN), weight (IN, OUT), bias (OUT,) -> (..., OUT). The weight layout is
    (in, out), the transpose of PyTorch's nn.Linear weight (out, in). Backward works
    on 2-D views: x2 (N, IN), g2 (N, OUT), with N the product of the leading axes.
    """
    if weight.ndim != 2 or x.shape[-1:] != weight.shape[:1]:
        raise ValueError(
            f"linear shapes {x.shape} and weight {weight.shape} are incompatible: the "
            "weight must be (IN, OUT) with IN equal to the last axis of x"
        )
    if bias is not None and bias.shape != weight.shape[1:]:
        raise ValueError(f"linear bias shape {bias.shape} must be {weight.shape[1:]}")
    x2 = x.data.reshape(-1, weight.shape[0])  # (N, IN)
    out_data = _product(x2, weight.data, None if bias is None else bias.data)  # (N, OUT)
    parents = (x, weight) if bias is None else (x, weight, bias)
    out = _result(out_data.reshape(x.shape[:-1] + weight.shape[1:]), parents)

    def _backward(g):
        g2 = g.reshape(x2.shape[0], weight.shape[1])  # (N, OUT)
        if bias is not None and bias.requires_grad:
            _accumulate(bias, g2.sum(axis=0), owned=True)
        if weight.requires_grad and x.requires_grad:
            grad_weight, grad_x = _two_products((x2.T, g2), (g2, weight.data.T))
            _accumulate(weight, grad_weight, owned=True)
            _accumulate(x, grad_x.reshape(x.shape), owned=True)
        elif weight.requires_grad:
            _accumulate(weight, _product(x2.T, g2), owned=True)
        elif x.requires_grad:
            _accumulate(x, _product(g2, weight.data.T).reshape(x.shape), owned=True)

    return _record(out, _backward)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Return exp(x) / sum(exp(x)) along `axis`.

    x is shifted by its maximum first, so every argument of exp is at most 0 and exp
    cannot overflow. Along the last axis the rows run block by block, on several
    threads when the array is large.
    """
    data = x.data
    last = data.ndim > 0 and axis in (-1, data.ndim - 1)
    if last:
        width = data.shape[-1]
        scores = data.reshape(-1, width)  # (N, L)
        probs = np.empty(scores.shape, dtype=data.dtype)

        def forward_rows(start, stop):
            for a, b in _row_blocks(start, stop, width):
                p = probs[a:b]
                np.subtract(scores[a:b], scores[a:b].max(axis=1, keepdims=True), out=p)
                np.exp(p, out=p)
                p *= 1.0 / _row_sums(p)  # a product is cheaper than a quotient

        _in_parallel(forward_rows, len(scores), scores.size)
        probs = probs.reshape(data.shape)
    else:
        probs = data - data.max(axis=axis, keepdims=True)
        np.exp(probs, out=probs)
        probs *= 1.0 / probs.sum(axis=axis, keepdims=True)
    out = _result(probs, (x,))

    def _backward(g):
        # dx = p * (g - sum(g * p)): the Jacobian diag(p) - p p^T applied to g.
        if last:
            g2, p2 = g.reshape(-1, width), probs.reshape(-1, width)

            def backward_rows(start, stop):
                for a, b in _row_blocks(start, stop, width):
                    gb, pb = g2[a:b], p2[a:b]
                    gb -= np.einsum("ij,ij->i", gb, pb)[:, None]
                    gb *= pb

            _in_parallel(backward_rows, len(g2), g2.size)
            g = g2.reshape(probs.shape)  # g2 is a copy if g was not contiguous
        else:
            np.subtract(g, np.sum(g * probs, axis=axis, keepdims=True), out=g)
            np.multiply(g, probs, out=g)
        _accumulate(x, g, owned=True)

    return _record(out, _backward)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Return x - log(sum(exp(x))) along `axis`, shifted by the maximum for stability."""
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    out_data = np.subtract(shifted, log_sum, out=shifted)
    out = _result(out_data, (x,))

    def _backward(g):
        # dx = g - softmax(x) * sum(g), with softmax(x) = exp(out).
        total = g.sum(axis=axis, keepdims=True)
        probs = np.exp(out_data)
        np.multiply(probs, total, out=probs)
        _accumulate(x, np.subtract(g, probs, out=g), owned=True)

    return _record(out, _backward)


def attention(qkv: Tensor, num_heads: int, bias=None, dropout_p: float = 0.0,
              training: bool = False, rng=None, return_probs: bool = True):
    """Multi-head scaled dot-product attention as one node; returns (context, probabilities).

    qkv (B, T, 3C) contains the query, key and value projections side by side, each C = H * D
    wide, as one (C, 3C) linear layer makes them. bias is None or an additive array that
    broadcasts to (B, H, T, T), such as the (B, 1, 1, T) padding bias. For each head,
        P = softmax(Q K^T / sqrt(D) + bias),    context = dropout(P) V,
    and the heads' contexts are joined into (B, T, C). P (B, H, T, T) comes back as a
    tensor outside the graph: no gradient flows through it, nor into the bias. Dropout
    (inverted, probability dropout_p) acts only when training, drawing from `rng` or the
    module generator as dropout() does. Mask with a large finite negative bias, such as
    np.finfo(np.float32).min: a row whose keys are all -inf comes out NaN.
    With return_probs=False the probabilities come back as None. Then, when nothing needs
    them (no gradient, no dropout), no (B, H, T, T) array is made at all: each block's
    scores live in a scratch buffer, and the context is divided by the row sums instead
    of the T x T exponentials.

    Why one node: the scores of a few heads (T x T each) are computed, turned into
    probabilities and multiplied with V while they are still in cache, and the heads
    split and join through strided views, not copies. Blocks of heads run on autograd's
    threads when products do. Backward uses the chain rule through the same steps:
        dV = dropout(P)^T dC,   dP = dC V^T (times the dropout scale),
        dS = P * (dP - rowsum(dP * P)),   dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D),
    and writes dQ, dK and dV straight into the (B, T, 3C) gradient of qkv.
    """
    qkv = qkv if isinstance(qkv, Tensor) else Tensor(qkv)
    whole_number = isinstance(num_heads, (int, np.integer)) and not isinstance(num_heads, bool)
    if not whole_number or num_heads < 1:
        raise ValueError(
            f"attention num_heads must be a whole number of 1 or more, got {num_heads!r}")
    if qkv.ndim != 3 or qkv.shape[2] % (3 * num_heads) != 0 or qkv.shape[2] == 0:
        raise ValueError(
            f"attention input {qkv.shape} must be (B, T, 3C) with C divisible by "
            f"num_heads {num_heads}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {dropout_p}")
    if isinstance(bias, Tensor) and bias.requires_grad:
        raise ValueError("attention bias gets no gradient: pass an array, or a tensor that "
                         "does not require grad")
    B, T, width = qkv.shape
    C = width // 3
    H = num_heads
    D = C // H
    dtype = qkv.dtype
    heads = qkv.data.reshape(B, T, 3, H, D)
    q, k, v = (heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, D) views
    scale = dtype.type(1.0 / math.sqrt(D))
    if bias is not None:
        bias = np.asarray(bias.data if isinstance(bias, Tensor) else bias)
        try:
            bias = np.broadcast_to(bias.astype(dtype, copy=False), (B, H, T, T))
        except ValueError:
            raise ValueError(
                f"attention bias of shape {bias.shape} cannot be broadcast to the "
                f"scores' shape {(B, H, T, T)}"
            ) from None
    needs_graph = _needs_graph(qkv)
    dropping = training and dropout_p > 0.0
    # Without a gradient, dropout or a caller that wants them, the probabilities need
    # not be kept.
    keep = return_probs or needs_graph or dropping
    probs = np.empty((B, H, T, T), dtype=dtype) if keep else None
    drop = None  # dropout scale per probability: 0 or 1 / (1 - dropout_p)
    if dropping:
        generator = _generator(rng)
        _, drop = _dropout_arrays(generator, probs, dropout_p, scale_only=True)
    # dropout(P), kept for backward too: recomputing it there took one more pass.
    dropped = probs if drop is None else np.empty_like(probs)
    context = np.empty((B, T, H, D), dtype=dtype)
    context_heads = context.transpose(0, 2, 1, 3)  # (B, H, T, D) view of it
    if B * H * T == 0:  # no sequences or no tokens: nothing to attend to
        def _backward_empty(g):
            _accumulate(qkv, np.zeros(qkv.shape, dtype=dtype), owned=True)

        out = _result(np.zeros((B, T, C), dtype=dtype), (qkv,))
        return _record(out, _backward_empty), _result(probs, ()) if return_probs else None
    # Work units of about _BLOCK scores: a few heads of one sequence, or, when all heads
    # fit, a few whole sequences. Each unit is an index (batch slice, head slice).
    heads_per_unit = max(1, _BLOCK // (T * T))
    if heads_per_unit >= H:
        step = heads_per_unit // H
        units = [(slice(b, b + step), slice(0, H)) for b in range(0, B, step)]
    else:
        step = _ceil_div(H, _ceil_div(H, heads_per_unit))  # equal parts: 12 heads, 6 and 6
        units = [(slice(b, b + 1), slice(h, h + step))
                 for b in range(B) for h in range(0, H, step)]
    unit_shape = q[units[0]].shape[:2] + (T, T)  # the first unit is a full one

    def forward_units(first, last):
        exps = np.empty((math.prod(unit_shape[:3]), T), dtype=dtype)
        scratch = None if keep else np.empty(unit_shape, dtype=dtype)
        for unit in units[first:last]:
            # (b, h, T, T): scores, then probabilities in place when they are kept
            b, h = q[unit].shape[:2]
            p = probs[unit] if keep else scratch[:b, :h]
            np.matmul(q[unit] * scale, k[unit].swapaxes(-1, -2), out=p)
            if bias is not None:
                p += bias[unit]
            rows = p.reshape(-1, T)
            e = exps[:len(rows)]
            # exp of the scores themselves, without the usual shift by the row maximum,
            # which took a third of softmax's time. A row whose sum overflowed (a score
            # above 88 in float32) or came out below 1e-20 (every score below about -46,
            # or all keys masked) falls back to the shifted form. Above 1e-20, the
            # terms that underflowed are negligible next to the largest.
            with np.errstate(over="ignore"):
                np.exp(rows, out=e)
            sums = _row_sums(e)
            valid = (sums >= 1e-20) & (sums <= np.finfo(dtype).max)
            if not valid.all():
                redo = np.flatnonzero(~valid[:, 0])
                shifted = rows[redo] - rows[redo].max(axis=1, keepdims=True)
                e[redo] = np.exp(shifted)
                sums[redo] = _row_sums(e[redo])
            if not keep:  # context = (e V) / row sums: D divisions per row, not T
                context_unit = context_heads[unit]
                np.matmul(e.reshape(p.shape), v[unit], out=context_unit)
                context_unit /= sums.reshape(p.shape[:3] + (1,))
                continue
            np.multiply(e, 1.0 / sums, out=rows)
            weights = dropped[unit]
            if drop is not None:
                np.multiply(p, drop[unit], out=weights)
            np.matmul(weights, v[unit], out=context_heads[unit])

    # Each unit makes BLAS calls, so units run on the threads only when products may. A
    # unit's work per score (two products of length D, an exp) is that of about 16
    # elementwise passes, so fewer scores than for one pass are worth splitting.
    work = 16 * B * H * T * T if _split_products else 0
    _in_parallel(forward_units, len(units), work)
    out = _result(context.reshape(B, T, C), (qkv,))

    def _backward(g):
        grad = np.empty((B, T, 3, H, D), dtype=dtype)
        dq, dk, dv = (grad[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        g_heads = g.reshape(B, T, H, D).transpose(0, 2, 1, 3)

        def backward_units(first, last):
            for unit in units[first:last]:
                p, gu = probs[unit], g_heads[unit]
                np.matmul(dropped[unit].swapaxes(-1, -2), gu, out=dv[unit])
                dp = gu @ v[unit].swapaxes(-1, -2)  # gradient of the weights
                if drop is not None:
                    dp *= drop[unit]
                rows, p_rows = dp.reshape(-1, T), p.reshape(-1, T)
                rows -= np.einsum("ij,ij->i", rows, p_rows)[:, None]
                rows *= p_rows  # now the gradient of the scores
                np.matmul(dp, k[unit], out=dq[unit])
                dq[unit] *= scale
                np.matmul(dp.swapaxes(-1, -2), q[unit] * scale, out=dk[unit])

        _in_parallel(backward_units, len(units), 2 * work)
        _accumulate(qkv, grad.reshape(B, T, width), owned=True)

    return _record(out, _backward), _result(probs, ()) if return_probs else None


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100) -> Tensor:
    """Mean negative log-likelihood of integer targets under softmax(logits).

    logits (N, V) (or (..., V)), targets (N,) (or (...)) integer ndarray. Positions
    whose target equals `ignore_index` count neither in the sum nor in the mean.
    When every target is ignored the loss is 0 and its gradient is zero, not NaN.
    Fused with log-softmax: backward is (softmax(logits) - one_hot(targets)) / n.
    """
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy targets must be integers, got dtype {targets.dtype}")
    if logits.ndim < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"cross_entropy logits {logits.shape} and targets {targets.shape} do not "
            "match: logits must be the target shape plus a class axis"
        )
    num_classes = logits.shape[-1]
    scores = logits.data.reshape(-1, num_classes)  # (N, V)
    labels = targets.reshape(-1)  # (N,)
    valid = labels != ignore_index
    count = int(valid.sum())
    if count and (labels[valid].min() < 0 or labels[valid].max() >= num_classes):
        raise ValueError(
            f"cross_entropy targets must be in [0, {num_classes}) or {ignore_index}, "
            f"got values from {labels[valid].min()} to {labels[valid].max()}"
        )
    rows = np.flatnonzero(valid)
    picked = labels[rows]

    probs = scores - scores.max(axis=1, keepdims=True)  # (N, V), row maximum 0
    target_scores = probs[rows, picked]
    np.exp(probs, out=probs)
    sum_exp = probs.sum(axis=1)  # (N,), at least 1
    # log p(target) = shifted target score - log(sum of exp(shifted scores))
    nll = np.log(sum_exp[rows]) - target_scores
    loss = nll.sum(dtype=np.float64) / count if count else 0.0
    out = _result(np.array(loss, dtype=logits.dtype), (logits,))
    if out.requires_grad:
        probs /= sum_exp[:, None]

    def _backward(g):
        # Only valid rows get a gradient, each scaled by g / count.
        weight = np.zeros((len(labels), 1), dtype=probs.dtype)
        if count:
            weight[rows] = g / count
        grad = probs * weight
        grad[rows, picked] -= weight[rows, 0]
        _accumulate(logits, grad.reshape(logits.shape), owned=True)

    return _record(out, _backward)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-12,
               residual: Tensor | None = None) -> Tensor:
    """Normalize the last axis to mean 0 and variance 1, then scale and shift.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance, as
    BERT does. x (..., C), weight (C,), bias (C,). BERT's eps is 1e-12, so it only
    guards against an all-constant row. Rows run on several threads when x is large.
    With `residual` (the shape of x), the input is x + residual: the Transformer's
    "Add & Norm" as one node, which adds block by block instead of storing the sum.
    """
    size = x.shape[-1]
    if weight.shape != (size,) or bias.shape != (size,):
        raise ValueError(
            f"layer_norm weight {weight.shape} and bias {bias.shape} must both be "
            f"({size},) for input {x.shape}"
        )
    if residual is not None and not isinstance(residual, Tensor):
        residual = Tensor(residual, dtype=x.dtype)
    if residual is not None and residual.shape != x.shape:
        raise ValueError(
            f"layer_norm residual {residual.shape} must have the input's shape {x.shape}"
        )
    rows = x.data.reshape(-1, size)  # (N, C)
    added = None if residual is None else residual.data.reshape(-1, size)
    xhat = np.empty(rows.shape, dtype=x.dtype)  # centered, then normalized
    rstd = np.empty((len(rows), 1), dtype=x.dtype)  # 1 / sqrt(var + eps)
    parents = (x, weight, bias) if residual is None else (x, weight, bias, residual)
    out_data = np.empty(rows.shape, dtype=np.result_type(*(t.dtype for t in parents)))

    def forward_rows(start, stop):
        for a, b in _row_blocks(start, stop, size):
            xh, r = xhat[a:b], rstd[a:b]
            block = rows[a:b] if added is None else np.add(rows[a:b], added[a:b], out=xh)
            np.subtract(block, _row_sums(block) * (1.0 / size), out=xh)
            np.einsum("ij,ij->i", xh, xh, out=r[:, 0])
            r *= 1.0 / size
            r += eps
            np.sqrt(r, out=r)
            np.divide(1.0, r, out=r)
            xh *= r
            np.multiply(xh, weight.data, out=out_data[a:b])
            out_data[a:b] += bias.data

    _in_parallel(forward_rows, len(rows), rows.size)
    out = _result(out_data.reshape(x.shape), parents)
    # The inputs that receive the input gradient (x + residual passes it to both).
    inputs = [t for t in parents[:1] + parents[3:] if t.requires_grad]

    def _backward(g):
        g = g.reshape(-1, size)
        if bias.requires_grad:
            _accumulate(bias, g.sum(axis=0), owned=True)
        if weight.requires_grad:
            _accumulate(weight, np.einsum("ij,ij->j", g, xhat), owned=True)
        if inputs:
            def backward_rows(start, stop):
                # With d = g * weight: dx = rstd * (d - mean(d) - xhat * mean(d * xhat)).
                for a, b in _row_blocks(start, stop, size):
                    d, xh = g[a:b], xhat[a:b]
                    d *= weight.data
                    mean_d = _row_sums(d) * (1.0 / size)
                    mean_d_xhat = np.einsum("ij,ij->i", d, xh)[:, None]
                    mean_d_xhat *= 1.0 / size
                    d -= mean_d
                    d -= xh * mean_d_xhat
                    d *= rstd[a:b]

            _in_parallel(backward_rows, len(g), g.size)
            for i, tensor in enumerate(inputs):
                _accumulate(tensor, g.reshape(x.shape), owned=i == len(inputs) - 1)

    return _record(out, _backward)


# Coefficients of the rational approximation erf(z) ~ z * P(z^2) / Q(z^2) for |z| <= 4
# that Eigen and XLA use for float32 (MaterializeErfApproximationF32 in XLA). Beyond
# |z| = 4, erf(z) rounds to +-1 in float32.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)
_exact_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x) -> np.ndarray:
    """Return the error function of an ndarray, elementwise (NumPy has none).

    float32 and float16 input uses a rational approximation, evaluated in float64
    because float32 rounding in its Horner steps alone adds up to 4e-7. The result,
    in the input's dtype, is within 1e-7 of math.erf. Any other input goes through
    math.erf element by element: exact, but about 100 times slower.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float16):
        return _exact_erf(x.astype(np.float64)).astype(np.float64)
    z = np.clip(x, -4.0, 4.0, dtype=np.float64)
    z2 = z * z
    p = np.full_like(z, _ERF_P[0])
    for c in _ERF_P[1:]:
        p *= z2
        p += c
    q = np.full_like(z, _ERF_Q[0])
    for c in _ERF_Q[1:]:
        q *= z2
        q += c
    p *= z
    p /= q
    return p.astype(x.dtype, copy=False)


# Phi(-|x|) = erfc(|x| / sqrt(2)) / 2 = exp(-x^2 / 2) S(|x|), with S smooth and slowly
# varying, so S ~ P / Q of degrees 2 and 3 (Q monic). dev/fit_gelu.py fitted P / Q to the
# error it causes in GELU and its slope. Evaluated in float32 on [-10, 10], GELU is within
# 2.6e-7 and its slope within 2.5e-7 of the exact formula. The largest errors found, on a
# grid of step 2^-20 and by search, were 2.57e-7 and 2.36e-7. In the left tail, down to
# -13.5 where GELU is still a normal float32, its relative error is at most 4.1e-3.
# The forward pass takes 19 passes over the array and one exp, 23 with the slope. That is
# as fast as a logit-based form, x / (1 + exp(-g(x))), without the slope, and 11% faster
# with it, because that form needs a second exp for the slope. All coefficients are
# positive, so Horner's rule in float32 loses nothing to cancellation.
_GELU_P = (4.876794604964861, 2.1350444744194523, 0.40514444264279964)
_GELU_Q = (9.753587443825456, 12.052445741877378, 5.548697844996816, 1.0)
# Beyond |x| = 20, exp(-x^2 / 2) underflows to 0 in float32, so Phi is exactly 0 or 1.
_GELU_CLIP = 20.0


def _gelu_float32(x: np.ndarray, with_slope: bool):
    """Return GELU(x) and, if `with_slope`, its derivative, for a float32 array.

    Everything follows from the tail h = Phi(-|x|) = exp(-x^2 / 2) P(|x|) / Q(|x|) (see
    _GELU_P). Since Phi(x) = 1 - h for x > 0 and h for x < 0,
    GELU(x) = x Phi(x) = max(x, 0) - |x| h, with no sign flip. The derivative
    Phi(x) + x phi(x) needs Phi(x) = 1/2 + sign(x) (1/2 - h) itself, and exp(-x^2 / 2) is
    the normal density phi(x) up to a constant. The work runs block by block so the
    temporaries stay in cache, on several threads when x is large. np.minimum and
    np.maximum ran about three times faster against an array than against a scalar
    (measured with NumPy 2.4), hence the constant arrays.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    slope = np.empty_like(flat) if with_slope else None
    if flat.size == 0:
        return out.reshape(x.shape), None if slope is None else slope.reshape(x.shape)
    # Blocks of at most _BLOCK elements, as many as a multiple of the thread count, so
    # that each thread gets an equal share.
    count = _ceil_div(flat.size, _BLOCK)
    count += -count % _num_threads
    block = _ceil_div(flat.size, count)

    def blocks(first, last):
        size = min(block, flat.size)
        z, density, p, q = (np.empty(size, dtype=np.float32) for _ in range(4))
        clip, zeros = np.full(size, _GELU_CLIP, dtype=np.float32), np.zeros(size, np.float32)
        for start in range(first * block, min(last * block, flat.size), block):
            xs = flat[start:start + block]
            n = xs.size
            zs, es, ps, qs = z[:n], density[:n], p[:n], q[:n]
            np.abs(xs, out=zs)
            np.minimum(zs, clip[:n], out=zs)
            np.square(zs, out=es)
            es *= -0.5
            np.exp(es, out=es)  # exp(-x^2 / 2)
            np.multiply(zs, _GELU_P[-1], out=ps)
            for c in _GELU_P[-2:0:-1]:
                ps += c
                ps *= zs
            ps += _GELU_P[0]
            np.add(zs, _GELU_Q[-2], out=qs)
            for c in _GELU_Q[-3:0:-1]:
                qs *= zs
                qs += c
            qs *= zs
            qs += _GELU_Q[0]
            ps /= qs
            ps *= es  # h = Phi(-|x|)
            ys = out[start:start + n]
            np.maximum(xs, zeros[:n], out=ys)
            np.multiply(zs, ps, out=qs)
            ys -= qs  # max(x, 0) - |x| h
            if not with_slope:
                continue
            # The derivative needs Phi(x) itself: 1/2 + sign(x) (1/2 - h). GELU is not taken
            # as x Phi(x), which would lose the left tail to the rounding of 1/2 - h.
            np.subtract(0.5, ps, out=ps)
            np.copysign(ps, xs, out=ps)
            ps += 0.5
            es *= xs
            es *= 1 / math.sqrt(2 * math.pi)  # x phi(x)
            np.add(es, ps, out=slope[start:start + n])

    # About 20 passes over each element: worth splitting from 1/20 of a pass's minimum.
    _in_parallel(blocks, count, 20 * flat.size)
    out = out.reshape(x.shape)
    return out, None if slope is None else slope.reshape(x.shape)


def gelu(x: Tensor) -> Tensor:
    """GELU(x) = x * Phi(x), with the exact normal CDF Phi(x) = (1 + erf(x / sqrt(2))) / 2.

    BERT uses this erf form, not the tanh approximation. When backward will need
    the derivative, the forward pass computes it while the intermediate values are
    at hand.
    """
    xd = x.data
    with_slope = _needs_graph(x)
    if xd.dtype == np.float32:
        out_data, slope = _gelu_float32(xd, with_slope)
    else:
        cdf = erf(xd * (1 / math.sqrt(2)))
        cdf += 1.0
        cdf *= 0.5
        out_data = xd * cdf
        if with_slope:
            slope = np.exp(-0.5 * np.square(xd))
            slope *= xd * (1 / math.sqrt(2 * math.pi))
            slope += cdf
    out = _result(out_data, (x,))

    def _backward(g):
        _accumulate(x, _multiply_in_place(g, slope), owned=True)

    return _record(out, _backward)


_default_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reset the generator that dropout() uses when it is given none."""
    global _default_generator
    _default_generator = np.random.default_rng(seed)


def get_rng_state() -> dict:
    """Return the state of dropout's default generator, a JSON-serialisable dict."""
    return _default_generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state from get_rng_state(), so dropout masks continue where they left off."""
    _default_generator.bit_generator.state = state


# Bit generators whose raw outputs are 64 random bits (MT19937's are 32 bits in a uint64),
# and of those, the ones that can jump ahead, so that threads can each draw their own part
# of the same stream.
_FULL_64_BIT_GENERATORS = (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox,
                           np.random.SFC64)
_JUMPING_GENERATORS = (np.random.PCG64, np.random.PCG64DXSM)


def _generator(rng) -> np.random.Generator:
    """Return `rng`, or the module generator for None; anything else is an error."""
    if rng is None:
        return _default_generator
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, such as "
                        f"np.random.default_rng(seed), got {type(rng).__name__}")
    return rng


def _dropout_arrays(generator: np.random.Generator, x: np.ndarray, p: float,
                    scale_only: bool = False):
    """Return (x * scale, scale), with scale 0 (probability p) or 1 / (1 - p) per element.

    With `scale_only`, x gives only the shape and dtype, and the first array is None.

    Each element compares 16 random bits with a threshold t, p * 2^16 rounded to the
    nearest whole number, and kept elements are scaled by 1 / (1 - t / 2^16). So p acts as
    the nearest multiple of 1/65536 (0.1 becomes 0.100006, below 1/131072 it becomes 0),
    and the expected value stays x. The generator's draws, which took two thirds of
    dropout's time, go four times as far as with 32 bits: taking four elements from each
    raw 64-bit output ran 2.2 times faster than generator.random() on one thread. With a
    PCG64 generator, threads draw consecutive parts of the stream, so the mask is the same
    for any thread count.
    """
    bit_generator = generator.bit_generator
    if not isinstance(bit_generator, _FULL_64_BIT_GENERATORS):
        keep_scale = x.dtype.type(1.0 / (1.0 - p))
        scale = np.multiply(generator.random(x.shape) >= p, keep_scale, dtype=x.dtype)
        return None if scale_only else x * scale, scale
    threshold = min(round(p * 2.0 ** 16), 2 ** 16 - 1)
    keep_scale = x.dtype.type(2.0 ** 16 / (2 ** 16 - threshold))
    threshold = np.uint16(threshold)
    flat = np.ascontiguousarray(x).reshape(-1)
    scale = np.empty_like(flat)
    out = None if scale_only else np.empty_like(flat)
    outputs = (flat.size + 3) // 4  # raw outputs to draw
    jumping = isinstance(bit_generator, _JUMPING_GENERATORS)
    state = bit_generator.state

    def draw(first, last):
        """Fill elements 4 * first to 4 * last from raw outputs first to last."""
        source = bit_generator
        if jumping:
            source = type(bit_generator)()
            source.state = state
            source.advance(first)
        keep = np.empty(min(_BLOCK, flat.size), dtype=bool)
        for a, b in _row_blocks(first, last, 4):
            start, stop = 4 * a, min(4 * b, flat.size)
            bits = source.random_raw(b - a).view(np.uint16)[:stop - start]
            np.greater_equal(bits, threshold, out=keep[:stop - start])
            np.multiply(keep[:stop - start], keep_scale, out=scale[start:stop])
            if out is not None:
                np.multiply(flat[start:stop], scale[start:stop], out=out[start:stop])

    if jumping:
        _in_parallel(draw, outputs, flat.size)
        bit_generator.advance(outputs)
    else:
        draw(0, outputs)
    return None if out is None else out.reshape(x.shape), scale.reshape(x.shape)


def dropout(x: Tensor, p: float, training: bool, rng=None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p).

    The scaling (inverted dropout) keeps the expected value unchanged, so evaluation
    needs no rescaling: when not training, or when p == 0, x itself is returned.
    `rng` is a np.random.Generator. By default dropout() uses the module generator
    that manual_seed() resets. With a 64-bit generator such as the default PCG64, p acts
    as the nearest multiple of 1/65536 (see _dropout_arrays).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    out_data, scale = _dropout_arrays(_generator(rng), x.data, p)
    out = _result(out_data, (x,))

    def _backward(g):
        _accumulate(x, _multiply_in_place(g, scale), owned=True)

    return _record(out, _backward)


def embedding(weight: Tensor, ids) -> Tensor:
    """Look up rows of `weight`: weight (V, C), ids integer array of any shape -> (*ids.shape, C).

    Backward adds the gradient of every occurrence of an id into that row, using
    sorting and np.add.reduceat (see _sum_rows_by_index) instead of slow np.add.at.
    """
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"embedding ids must be integers, got dtype {ids.dtype}")
    num_rows = weight.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= num_rows):
        raise ValueError(
            f"embedding ids must be in [0, {num_rows}), got values from {ids.min()} "
            f"to {ids.max()}"
        )
    out = _result(np.take(weight.data, ids, axis=0), (weight,))

    def _backward(g):
        rows = g.reshape(ids.size, weight.shape[1])
        _accumulate(weight, _sum_rows_by_index(ids.reshape(-1), rows, num_rows), owned=True)

    return _record(out, _backward)


def masked_fill(x: Tensor, mask, value: float) -> Tensor:
    """Return x with `value` wherever the boolean `mask` (broadcast to x.shape) is True.

    Filled positions get no gradient. For attention, fill with a large finite
    negative number, not -inf, so a fully masked row stays finite.
    """
    mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)
    try:
        shape = np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"masked_fill mask of shape {mask.shape} cannot be broadcast to the "
            f"tensor shape {x.shape}"
        )
    out = _result(np.where(mask, x.data.dtype.type(value), x.data), (x,))

    def _backward(g):
        np.copyto(g, 0, where=mask)
        _accumulate(x, g, owned=True)

    return _record(out, _backward)


# ---------------------------------------------------------------- memory


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    NumPy takes large arrays from malloc. By default glibc serves large requests with
    fresh memory mappings that it unmaps on free, and it hands free memory at the top
    of the heap back to the OS. Each training step then page-faults its activations
    and gradients in again, 4 KiB at a time: about 11,000 faults per step for one
    encoder layer at B=32, T=128, C=256 (counted with getrusage). Raising the mmap
    threshold to glibc's 32 MiB maximum and switching off heap trimming lets later
    steps reuse the same memory. The cost is that the process keeps its peak
    memory until it exits. This changes the whole process, so call it once from a
    training script. Returns False where mallopt is missing (non-glibc systems).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    results = (
        mallopt(m_mmap_threshold, 32 * 1024 * 1024),
        mallopt(m_trim_threshold, 2**31 - 1),
        mallopt(m_top_pad, 64 * 1024 * 1024),
    )
    return all(r == 1 for r in results)


# ---------------------------------------------------------------- demo


def _demo() -> None:
    """Print one neuron's forward values and backward gradients step by step."""
    np.set_printoptions(precision=4, suppress=True)
    x = Tensor([1.0, -2.0, 0.5])
    w = Tensor([0.3, 0.1, -0.4], requires_grad=True)
    b = Tensor(0.2, requires_grad=True)
    target = 0.5
    print("A neuron y = tanh(x @ w + b) and its loss (y - target)**2\n")
    print("forward")
    print(f"  x          = {x.data}")
    print(f"  w          = {w.data}")
    print(f"  b          = {b.item():.4f}")
    z = x @ w + b
    print(f"  z = x@w+b  = {z.item():.4f}")
    y = z.tanh()
    print(f"  y = tanh z = {y.item():.4f}")
    loss = (y - target) ** 2
    print(f"  loss       = {loss.item():.4f}   (target {target})\n")

    loss.backward()
    dloss_dy = 2 * (y.data - target)
    dy_dz = 1 - y.data ** 2
    print("backward, by the chain rule")
    print(f"  dloss/dy = 2 (y - target)      = {dloss_dy:.4f}")
    print(f"  dy/dz    = 1 - y**2            = {dy_dz:.4f}")
    print(f"  dloss/dz = dloss/dy * dy/dz    = {dloss_dy * dy_dz:.4f}")
    print(f"  dloss/dw = dloss/dz * x        = {dloss_dy * dy_dz * x.data}")
    print(f"  dloss/db = dloss/dz            = {dloss_dy * dy_dz:.4f}\n")
    print("gradients that backward() stored")
    print(f"  w.grad = {w.grad}")
    print(f"  b.grad = {b.grad.item():.4f}")


USAGE = """usage: python autograd.py [--help]

Runs a demo of reverse-mode automatic differentiation: one neuron y = tanh(x @ w + b)
with loss (y - target)**2, printed forward step by step, then its gradients worked out
by hand with the chain rule next to the ones loss.backward() stores. The file takes no
other arguments; import it (import autograd) to use Tensor in your own code."""


def run_demo(program: str, usage: str, demo, argv: list[str] | None = None) -> int:
    """Run a file's demo as its command line does and return the exit code.

    The command takes only --help, which prints `usage`. Any other argument is a usage
    error (exit 2). A reader that closes stdout early (head, less) gives exit 1, without a
    traceback. layers.py runs its demo through this too.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(usage)
        return 0
    if argv:
        print(f"{program}: error: unrecognized arguments: {' '.join(argv)} (see --help)",
              file=sys.stderr)
        return 2
    try:
        demo()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of stdout quit early. Point stdout at nothing, so the interpreter's
        # final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_demo("autograd.py", USAGE, _demo, argv)


if __name__ == "__main__":
    sys.exit(main())
