"""Tests for numpy-bert, one section per file, in the order the files are read.

Reference values (Hugging Face tokenizer ids, transformers outputs, torch optimizer steps)
are committed under testdata/ with the scripts that made them; running these tests needs
only numpy and pytest.
"""

import functools
import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import autograd as ag  # noqa: E402
import bert  # noqa: E402
import data  # noqa: E402
import infer  # noqa: E402
import tokenizer  # noqa: E402
import train  # noqa: E402
from autograd import Tensor, cross_entropy, no_grad  # noqa: E402
from bert import BertConfig, BertForPreTraining, BertModel  # noqa: E402
from data import PretrainingData, read_documents, split_documents, split_sentences  # noqa: E402
from layers import EncoderLayer, attention_bias  # noqa: E402
from tokenizer import Tokenizer, train_vocab, truncate_longest_first  # noqa: E402


# ==============================================================================
# autograd.py
# ==============================================================================


if not (ROOT / "autograd.py").exists():
    ROOT = ROOT.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


F64 = np.float64


# ---------------------------------------------------------------- gradient check helper


def check_gradients(fn, *arrays, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0):
    """Compare backward() with float64 central differences for every input element.

    fn maps Tensors to a Tensor. The output is contracted with a fixed random array
    R, so the check covers the whole Jacobian: analytic grads come from
    out.backward(R), numeric ones from (sum(fn(x + eps) * R) - sum(fn(x - eps) * R)) / 2 eps.
    """
    arrays = [np.array(a, dtype=F64) for a in arrays]
    inputs = [Tensor(a, requires_grad=True, dtype=F64) for a in arrays]
    out = fn(*inputs)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(weights)

    def objective():
        return float(np.sum(fn(*[Tensor(a, dtype=F64) for a in arrays]).data * weights))

    for position, (array, tensor) in enumerate(zip(arrays, inputs)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + eps
            plus = objective()
            array[i] = saved - eps
            minus = objective()
            array[i] = saved
            numeric[i] = (plus - minus) / (2 * eps)
        assert tensor.grad is not None, f"input {position} got no gradient"
        assert tensor.grad.dtype == F64, f"input {position} gradient dtype {tensor.grad.dtype}"
        np.testing.assert_allclose(tensor.grad, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"input {position}")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def positive(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


# ---------------------------------------------------------------- unbroadcast helper


def test_unbroadcast_same_shape_returns_input():
    g = np.ones((2, 3))
    assert ag._unbroadcast(g, (2, 3)) is g


def test_unbroadcast_sums_leading_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(ag._unbroadcast(g, (3, 4)), g.sum(axis=0))


def test_unbroadcast_sums_stretched_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    expected = g.sum(axis=0).sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(ag._unbroadcast(g, (3, 1)), expected)


def test_unbroadcast_to_scalar():
    g = np.arange(6.0).reshape(2, 3)
    assert ag._unbroadcast(g, ()).shape == ()
    assert float(ag._unbroadcast(g, ())) == 15.0


# ---------------------------------------------------------------- gradient checks per op

ELEMENTWISE_CASES = {
    "add_broadcast_right": (lambda a, b: a + b, [randn(2, 3, 4), randn(3, 1, seed=1)]),
    "add_broadcast_left": (lambda a, b: a + b, [randn(3, 1), randn(2, 1, 4, seed=1)]),
    "add_scalar": (lambda a: a + 2.5, [randn(2, 3)]),
    "radd_scalar": (lambda a: 2.5 + a, [randn(2, 3)]),
    "radd_ndarray": (lambda a: randn(4, 2, 3, seed=3) + a, [randn(2, 3)]),
    "sub_broadcast_right": (lambda a, b: a - b, [randn(2, 3, 4), randn(4, seed=1)]),
    "sub_broadcast_left": (lambda a, b: a - b, [randn(1, 4), randn(3, 1, seed=1)]),
    "rsub_scalar": (lambda a: 2 - a, [randn(2, 3)]),
    "rsub_ndarray": (lambda a: randn(2, 3, seed=3) - a, [randn(3)]),
    "mul_broadcast_right": (lambda a, b: a * b, [randn(2, 3, 4), randn(3, 1, seed=1)]),
    "mul_broadcast_left": (lambda a, b: a * b, [randn(1, 4), randn(2, 3, 1, seed=1)]),
    "rmul_scalar": (lambda a: 3.0 * a, [randn(2, 3)]),
    "div_broadcast_right": (lambda a, b: a / b, [randn(2, 3, 4), positive(4, seed=1)]),
    "div_broadcast_left": (lambda a, b: a / b, [randn(3, 1), positive(2, 3, 4, seed=1)]),
    "rdiv_scalar": (lambda a: 1 / a, [positive(2, 3)]),
    "pow_square": (lambda a: a ** 2, [randn(2, 3)]),
    "pow_cube": (lambda a: a ** 3, [randn(2, 3)]),
    "pow_half": (lambda a: a ** 0.5, [positive(2, 3)]),
    "pow_negative": (lambda a: a ** -1.5, [positive(2, 3)]),
    "rpow_two": (lambda a: 2 ** a, [randn(2, 3)]),
    "rpow_fraction": (lambda a: 0.3 ** a, [randn(2, 3)]),
    "neg": (lambda a: -a, [randn(2, 3)]),
    "exp": (lambda a: a.exp(), [randn(2, 3)]),
    "log": (lambda a: a.log(), [positive(2, 3)]),
    "sqrt": (lambda a: a.sqrt(), [positive(2, 3)]),
    "tanh": (lambda a: a.tanh(), [randn(2, 3)]),
    "relu": (lambda a: a.relu(), [np.array([[-1.5, -0.2, 0.3], [0.7, -2.0, 1.1]])]),
    "gelu": (lambda a: a.gelu(), [randn(3, 5) * 3]),
    "gelu_function": (lambda a: ag.gelu(a), [np.linspace(-7, 7, 29)]),
    "reused_in_expression": (lambda a: a * a + a.exp() * a - a / (a * a + 1),
                             [randn(2, 3)]),
    "reused_both_operands": (lambda a: a + a, [randn(2, 3)]),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE_CASES))
def test_gradient_elementwise(name):
    fn, arrays = ELEMENTWISE_CASES[name]
    check_gradients(fn, *arrays)


MATMUL_CASES = {
    "2d": ([randn(7, 4), randn(4, 5, seed=1)]),
    "3d_by_2d": ([randn(2, 7, 4), randn(4, 5, seed=1)]),
    "batched": ([randn(2, 3, 7, 4), randn(2, 3, 4, 5, seed=1)]),
    "broadcast_batch": ([randn(2, 1, 7, 4), randn(3, 4, 5, seed=1)]),
    "2d_by_batched": ([randn(7, 4), randn(2, 4, 5, seed=1)]),
    "vector_matrix": ([randn(4), randn(2, 4, 5, seed=1)]),
    "matrix_vector": ([randn(2, 7, 4), randn(4, seed=1)]),
    "vector_vector": ([randn(4), randn(4, seed=1)]),
}


@pytest.mark.parametrize("name", list(MATMUL_CASES))
def test_gradient_matmul(name):
    check_gradients(lambda a, b: a @ b, *MATMUL_CASES[name])


def test_gradient_matmul_method_and_rmatmul():
    w = randn(4, 5, seed=2)
    check_gradients(lambda a: a.matmul(Tensor(w, dtype=F64)), randn(3, 4))
    check_gradients(lambda b: randn(3, 4, seed=3) @ b, randn(4, 5))


REDUCTION_CASES = {
    "sum_all": lambda a: a.sum(),
    "sum_axis": lambda a: a.sum(axis=1),
    "sum_negative_axis_keepdims": lambda a: a.sum(axis=-1, keepdims=True),
    "sum_tuple": lambda a: a.sum(axis=(0, 2)),
    "mean_all": lambda a: a.mean(),
    "mean_axis": lambda a: a.mean(axis=0),
    "mean_tuple_keepdims": lambda a: a.mean(axis=(1, 2), keepdims=True),
    "max_all": lambda a: a.max(),
    "max_axis": lambda a: a.max(axis=1),
    "max_tuple_keepdims": lambda a: a.max(axis=(0, 2), keepdims=True),
}


@pytest.mark.parametrize("name", list(REDUCTION_CASES))
def test_gradient_reduction(name):
    check_gradients(REDUCTION_CASES[name], randn(2, 3, 4))


def test_max_two_way_tie_matches_central_difference():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.5, -1.0]])
    check_gradients(lambda a: a.max(axis=1), x)


def test_max_ties_share_gradient_equally():
    x = Tensor([2.0, 5.0, 5.0, 5.0, 1.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad, [0, 1 / 3, 1 / 3, 1 / 3, 0])


def test_max_tie_gradient_sums_to_upstream():
    x = Tensor([[4.0, 4.0], [1.0, 1.0]], requires_grad=True)
    x.max(axis=1).backward(np.array([2.0, 3.0]))
    np.testing.assert_allclose(x.grad.sum(axis=1), [2.0, 3.0])


SHAPE_CASES = {
    "reshape_args": lambda a: a.reshape(4, 6),
    "reshape_tuple": lambda a: a.reshape((3, -1)),
    "view": lambda a: a.view(2, 12),
    "transpose": lambda a: a.transpose(0, 2),
    "transpose_negative": lambda a: a.transpose(-1, -2),
    "permute": lambda a: a.permute(2, 0, 1),
    "permute_negative": lambda a: a.permute(-1, 0, -2),
    "permute_tuple": lambda a: a.permute((1, 2, 0)),
    "T_of_2d": lambda a: a.reshape(6, 4).T,
    "slice": lambda a: a[1:, ::2, -3:],
    "int_and_none": lambda a: a[0, None, :, 1],
    "ellipsis": lambda a: a[..., 2],
    "negative_step": lambda a: a[:, ::-1],
    "bool_mask": lambda a: a[np.array([True, False, True])[None, :, None].repeat(2, 0)
                             .repeat(4, 2)],
    "int_array_repeated": lambda a: a[np.array([1, 0, 1, 1])],
    "int_array_2d_repeated": lambda a: a[np.array([[0, 1], [1, 1]])],
    "int_list_negative": lambda a: a[[-1, 0, -1]],
    "int_arrays_in_tuple": lambda a: a[np.array([0, 1, 0]), np.array([2, 2, 2])],
    "int_array_second_axis": lambda a: a[:, np.array([2, 0, 2])],
    "split_int": lambda a: a.split(2, axis=2)[1] * 2 + a.split(2, axis=2)[0],
    "split_sections": lambda a: ag.concatenate(a.split([1, 2], axis=1)[::-1], axis=1),
    "split_uneven_last": lambda a: a.split(3, axis=2)[1],
    "concatenate_axis0": lambda a: ag.concatenate([a, a * 2], axis=0),
    "concatenate_negative_axis": lambda a: ag.concatenate([a[:, :1], a.exp()], axis=-2),
}


@pytest.mark.parametrize("name", list(SHAPE_CASES))
def test_gradient_shape(name):
    check_gradients(SHAPE_CASES[name], randn(2, 3, 4))


def test_gradient_concatenate_two_inputs():
    check_gradients(lambda a, b: ag.concatenate([a, b], axis=1), randn(2, 3), randn(2, 5, seed=1))


def test_split_int_piece_shapes():
    pieces = Tensor(np.zeros((2, 7))).split(3, axis=1)
    assert [p.shape for p in pieces] == [(2, 3), (2, 3), (2, 1)]


def test_split_sections_must_cover_axis():
    with pytest.raises(ValueError, match="add up to 7"):
        Tensor(np.zeros((2, 7))).split([3, 3], axis=1)


def test_int_array_index_gradient_matches_add_at():
    index = np.array([3, 1, 3, 3, 0, 1])
    x = Tensor(randn(5, 4), requires_grad=True, dtype=F64)
    upstream = randn(6, 4, seed=1)
    x[index].backward(upstream)
    expected = np.zeros((5, 4))
    np.add.at(expected, index, upstream)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


SOFTMAX_CASES = {
    "softmax_last": lambda a: a.softmax(),
    "softmax_axis0": lambda a: ag.softmax(a, axis=0),
    "log_softmax_last": lambda a: a.log_softmax(),
    "log_softmax_axis1": lambda a: ag.log_softmax(a, axis=1),
}


@pytest.mark.parametrize("name", list(SOFTMAX_CASES))
def test_gradient_softmax(name):
    check_gradients(SOFTMAX_CASES[name], randn(2, 3, 5) * 2)


def test_gradient_masked_fill():
    mask = np.array([[True, False, False, True]])
    check_gradients(lambda a: a.masked_fill(mask, -3.0) * 2, randn(3, 4))
    check_gradients(lambda a: ag.masked_fill(a, mask[0], 1.5), randn(2, 3, 4))


def test_gradient_linear_3d_input():
    check_gradients(ag.linear, randn(2, 7, 4), randn(4, 5, seed=1), randn(5, seed=2))


def test_gradient_linear_without_bias():
    check_gradients(lambda x, w: ag.linear(x, w), randn(3, 4), randn(4, 5, seed=1))


def test_linear_matches_matmul_plus_bias():
    x, w, b = randn(2, 7, 4), randn(4, 5, seed=1), randn(5, seed=2)
    out = ag.linear(Tensor(x, dtype=F64), Tensor(w, dtype=F64), Tensor(b, dtype=F64))
    np.testing.assert_allclose(out.data, x @ w + b, rtol=1e-12)


def test_gradient_layer_norm():
    check_gradients(lambda x, w, b: ag.layer_norm(x, w, b, eps=1e-5),
                    randn(2, 3, 6), randn(6, seed=1), randn(6, seed=2))


def test_gradient_layer_norm_with_residual():
    check_gradients(lambda x, r, w, b: ag.layer_norm(x, w, b, eps=1e-5, residual=r),
                    randn(2, 3, 6), randn(2, 3, 6, seed=3), randn(6, seed=1), randn(6, seed=2))


def test_layer_norm_residual_equals_normalizing_the_sum():
    # One input used twice (x + x) also gets both gradients, in arrays of its own.
    x, r = Tensor(randn(3, 8), requires_grad=True), Tensor(randn(3, 8, seed=4), requires_grad=True)
    w, b = Tensor(randn(8, seed=5)), Tensor(randn(8, seed=6))
    upstream = randn(3, 8, seed=7)
    ag.layer_norm(x, w, b, residual=r).backward(upstream)
    x2, r2 = Tensor(x.data, requires_grad=True), Tensor(r.data, requires_grad=True)
    expected = ag.layer_norm(x2 + r2, w, b)
    expected.backward(upstream)
    np.testing.assert_allclose(ag.layer_norm(x, w, b, residual=r).data, expected.data, atol=1e-12)
    np.testing.assert_allclose(x.grad, x2.grad, atol=1e-12)
    np.testing.assert_allclose(r.grad, r2.grad, atol=1e-12)
    assert x.grad is not r.grad
    twice = Tensor(randn(3, 8), requires_grad=True)
    ag.layer_norm(twice, w, b, residual=twice).backward(upstream)
    reference = Tensor(twice.data, requires_grad=True)
    ag.layer_norm(reference + reference, w, b).backward(upstream)
    np.testing.assert_allclose(twice.grad, reference.grad, atol=1e-12)


def test_layer_norm_rejects_wrong_residual_shape():
    with pytest.raises(ValueError, match=r"residual \(2, 3\) must have the input's shape \(2, 4\)"):
        ag.layer_norm(Tensor(np.ones((2, 4))), Tensor(np.ones(4)), Tensor(np.ones(4)),
                      residual=Tensor(np.ones((2, 3))))


def test_layer_norm_normalizes_last_axis():
    x = randn(4, 12) * 3 + 5
    out = ag.layer_norm(Tensor(x, dtype=F64), Tensor(np.ones(12), dtype=F64),
                        Tensor(np.zeros(12), dtype=F64)).data
    np.testing.assert_allclose(out.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=-1), 1, rtol=1e-9)


def test_gradient_embedding_repeated_ids():
    ids = np.array([[3, 1, 3], [0, 3, 1]])
    check_gradients(lambda w: ag.embedding(w, ids) * 1.5, randn(5, 4))


def test_embedding_gradient_matches_add_at():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 29, size=(2, 7, 5))
    weight = Tensor(randn(29, 12), requires_grad=True, dtype=F64)
    upstream = randn(2, 7, 5, 12, seed=1)
    ag.embedding(weight, ids).backward(upstream)
    expected = np.zeros((29, 12))
    np.add.at(expected, ids.reshape(-1), upstream.reshape(-1, 12))
    np.testing.assert_allclose(weight.grad, expected, rtol=1e-12)


def test_embedding_output_shape():
    out = ag.embedding(Tensor(np.zeros((29, 12))), np.zeros((2, 7), dtype=np.int64))
    assert out.shape == (2, 7, 12)


def test_gradient_dropout_fixed_mask():
    check_gradients(lambda a: ag.dropout(a, 0.4, True, rng=np.random.default_rng(5)),
                    randn(3, 8))


def _padding_bias(mask):
    return ((1.0 - np.asarray(mask, dtype=F64)) * -1e9)[:, None, None, :]


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_gradient_attention(dropout_p):
    # B=2, T=5, H=2, D=3; the second sequence has two padded keys.
    bias = _padding_bias([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    check_gradients(lambda qkv: ag.attention(qkv, 2, bias, dropout_p, True,
                                             rng=np.random.default_rng(5))[0],
                    randn(2, 5, 18))


def _attention_from_primitives(qkv, H, bias, dropout_p=0.0):
    """Attention written with matmul, softmax and dropout nodes, to check the fused op."""
    B, T, width = qkv.shape
    D = width // 3 // H
    q, k, v = (t.reshape(B, T, H, D).transpose(1, 2)
               for t in qkv.reshape(B, T, 3, H, D).split(1, axis=2))
    scores = (q * (1.0 / np.sqrt(D))) @ k.transpose(2, 3)
    if bias is not None:
        scores = scores + bias
    probs = scores.softmax(axis=-1)
    context = ag.dropout(probs, dropout_p, dropout_p > 0) @ v
    return context.transpose(1, 2).reshape(B, T, width // 3), probs


def _fused_and_composed(x, upstream, heads, bias, dropout_p):
    """Run attention() and _attention_from_primitives() from the same module seed.

    Returns, per side, (context, probabilities, gradient of x).
    """
    results = []
    for fn in (lambda t: ag.attention(t, heads, bias, dropout_p, dropout_p > 0),
               lambda t: _attention_from_primitives(t, heads, bias, dropout_p)):
        ag.manual_seed(7)
        t = Tensor(x, requires_grad=True)
        context, probs = fn(t)
        context.backward(upstream)
        results.append((context.data, probs.data, t.grad))
    return results


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_attention_matches_primitive_ops(dropout_p):
    # float32, a fully padded sequence (uniform probabilities) and, with dropout, the same
    # draws from the module generator as dropout() on the probabilities.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 6, 24)).astype(np.float32)
    bias = ((1.0 - np.array([[1] * 6, [1] * 4 + [0] * 2, [0] * 6], dtype=np.float32))
            * np.finfo(np.float32).min)[:, None, None, :]
    upstream = rng.standard_normal((3, 6, 8)).astype(np.float32)
    results = _fused_and_composed(x, upstream, 2, bias, dropout_p)
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-5, atol=1e-6)
    probs = results[0][1]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert (probs[1, :, :, 4:] == 0).all()
    np.testing.assert_allclose(probs[2], 1 / 6, atol=1e-7)


@pytest.mark.parametrize("offset", [0.0, 200.0, -200.0, 1e4, -1e4])
def test_attention_softmax_stays_exact_for_extreme_scores(offset):
    # Scores far above 88 overflow exp() and far below -46 underflow it, so those rows take
    # the shifted softmax. A mix of both kinds of row shares one block.
    rng = np.random.default_rng(3)
    T, D = 4, 2
    q = rng.standard_normal((2, T, D))
    k = rng.standard_normal((2, T, D))
    q[:, :, 0] += offset
    k[:, :, 0] = 1.0  # every score of row i gets + q[i, 0] * 1 / sqrt(D)
    k[1, :, 0] = np.linspace(0.5, 1.5, T)
    qkv = np.concatenate([q, k, rng.standard_normal((2, T, D))], axis=2).astype(np.float32)
    probs = ag.attention(Tensor(qkv), 1)[1].data
    with ag.no_grad():  # the path that keeps no probabilities
        context = ag.attention(Tensor(qkv), 1, return_probs=False)[0].data
    scores = q.astype(np.float32).astype(F64) @ k.astype(np.float32).astype(F64).transpose(
        0, 2, 1) / np.sqrt(D)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert np.isfinite(probs).all()
    # float32 scores near 7,000 carry a rounding error of about 5e-4.
    tolerance = 2e-3 if abs(offset) > 1e3 else 1e-5
    np.testing.assert_allclose(probs[:, 0], expected, rtol=tolerance, atol=tolerance)
    values = qkv[:, :, 2 * D:].astype(F64)
    np.testing.assert_allclose(context, expected @ values, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("T, heads", [(300, 3), (40, 5)])
def test_attention_work_units_cover_every_head(T, heads):
    # 300 x 300 scores per head: one head per work unit. 40 x 40: several sequences each.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, T, 3 * heads * 2)).astype(np.float32)
    upstream = rng.standard_normal((3, T, heads * 2)).astype(np.float32)
    results = _fused_and_composed(x, upstream, heads, None, 0.1)
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("T, heads", [(6, 2), (300, 3), (40, 5)])
def test_attention_without_probabilities_gives_the_same_context(T, heads):
    # Under no_grad, return_probs=False keeps no (B, H, T, T) array and divides the
    # context by the row sums. A half padded and a fully padded sequence are included.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, T, 3 * heads * 4)).astype(np.float32)
    mask = np.ones((3, T), dtype=np.float32)
    mask[1, T // 2:] = 0
    mask[2] = 0
    bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
    with ag.no_grad():
        expected = ag.attention(Tensor(x), heads, bias)[0].data
        context, probs = ag.attention(Tensor(x), heads, bias, return_probs=False)
    assert probs is None
    np.testing.assert_allclose(context.data, expected, rtol=1e-5, atol=1e-6)


def test_attention_without_probabilities_keeps_its_gradient():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 12)).astype(np.float32)
    gradients = []
    for return_probs in (True, False):
        t = Tensor(x, requires_grad=True)
        context, probs = ag.attention(t, 2, return_probs=return_probs)
        assert (probs is None) == (not return_probs)
        context.sum().backward()
        gradients.append(t.grad)
    np.testing.assert_array_equal(*gradients)


@pytest.mark.parametrize("shape", [(0, 4, 12), (2, 0, 12)])
def test_attention_of_nothing_is_empty(shape):
    qkv = Tensor(np.zeros(shape, dtype=np.float32), requires_grad=True)
    context, probs = ag.attention(qkv, 2)
    assert context.shape == shape[:2] + (4,)
    assert probs.shape == (shape[0], 2, shape[1], shape[1])
    context.sum().backward()
    assert qkv.grad.shape == shape
    with ag.no_grad():
        context, probs = ag.attention(Tensor(np.zeros(shape)), 2, return_probs=False)
    assert context.shape == shape[:2] + (4,)
    assert probs is None


@pytest.mark.parametrize("heads", [0, -4, 1.5, True])
def test_attention_rejects_bad_head_counts(heads):
    with pytest.raises(ValueError, match="num_heads must be a whole number of 1 or more"):
        ag.attention(Tensor(np.zeros((1, 2, 12))), heads)


def test_attention_rejects_a_bias_that_wants_a_gradient():
    bias = Tensor(np.zeros((1, 1, 1, 2)), requires_grad=True)
    with pytest.raises(ValueError, match="bias gets no gradient"):
        ag.attention(Tensor(np.zeros((1, 2, 6))), 1, bias)


@pytest.mark.parametrize("rng", [5, np.random.RandomState(5)])
def test_dropout_rejects_a_generator_of_another_kind(rng):
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        ag.dropout(Tensor(np.ones(4)), 0.5, True, rng=rng)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        ag.attention(Tensor(np.ones((1, 2, 6))), 1, None, 0.5, True, rng=rng)


def test_gelu_float32_of_an_empty_array():
    x = Tensor(np.zeros((0, 3), dtype=np.float32), requires_grad=True)
    out = x.gelu()
    assert out.shape == (0, 3)
    out.sum().backward()
    assert x.grad.shape == (0, 3)


def test_threads_shared_by_several_callers(monkeypatch):
    # Pool threads never wait for the pool, so callers on several threads of their own,
    # each splitting products over the same pool, all finish.
    import threading
    monkeypatch.setattr(ag, "_blas_one_thread", True)
    monkeypatch.setattr(ag, "_PARALLEL_MIN_SIZE", 1024)
    before = ag.get_num_threads()
    ag.set_num_threads(4)
    rng = np.random.default_rng(0)
    x_data = rng.standard_normal((256, 64)).astype(np.float32)
    w_data = rng.standard_normal((64, 128)).astype(np.float32)
    errors = []

    def job():
        try:
            for _ in range(20):
                x, w = Tensor(x_data, requires_grad=True), Tensor(w_data, requires_grad=True)
                ag.linear(x, w).sum().backward()
                np.testing.assert_allclose(w.grad, np.outer(x_data.sum(0), np.ones(128)),
                                           rtol=1e-4)
        except Exception as error:  # reported below
            errors.append(error)

    try:
        callers = [threading.Thread(target=job, daemon=True) for _ in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=60)
        assert not any(caller.is_alive() for caller in callers), "a caller is stuck"
        assert not errors
    finally:
        ag.set_num_threads(before)


def test_attention_probabilities_are_outside_the_graph():
    context, probs = ag.attention(Tensor(randn(1, 3, 6), requires_grad=True), 1)
    assert context.requires_grad and not probs.requires_grad


@pytest.mark.parametrize("shape, heads, bias, message", [
    ((2, 3, 10), 2, None, r"\(2, 3, 10\) must be \(B, T, 3C\) with C divisible by num_heads 2"),
    ((2, 3), 1, None, r"must be \(B, T, 3C\)"),
    ((2, 3, 12), 2, np.zeros((3, 1, 1, 3)), r"bias of shape \(3, 1, 1, 3\) cannot be broadcast"),
])
def test_attention_rejects_bad_shapes(shape, heads, bias, message):
    with pytest.raises(ValueError, match=message):
        ag.attention(Tensor(np.zeros(shape)), heads, bias)


def test_gradient_cross_entropy_with_ignored_targets():
    targets = np.array([2, -100, 0, 4, -100])
    check_gradients(lambda z: ag.cross_entropy(z, targets), randn(5, 6))


def test_gradient_cross_entropy_3d_logits():
    targets = np.array([[1, 3, -100], [0, 0, 2]])
    check_gradients(lambda z: ag.cross_entropy(z, targets), randn(2, 3, 4))


def test_cross_entropy_matches_log_softmax_mean():
    logits, targets = randn(5, 6), np.array([2, -100, 0, 4, -100])
    loss = ag.cross_entropy(Tensor(logits, dtype=F64), targets).item()
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(logp[[0, 2, 3], [2, 0, 4]])
    assert loss == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_custom_ignore_index():
    logits = Tensor(randn(3, 4), dtype=F64)
    loss = ag.cross_entropy(logits, np.array([1, 0, 1]), ignore_index=0).item()
    expected = ag.cross_entropy(logits[np.array([0, 2])], np.array([1, 1])).item()
    assert loss == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_all_ignored_is_zero():
    logits = Tensor(randn(3, 4), requires_grad=True)
    loss = ag.cross_entropy(logits, np.full(3, -100))
    loss.backward()
    assert loss.item() == 0.0
    assert np.all(logits.grad == 0)


# ---------------------------------------------------------------- attention and a block


def attention(x, w_qkv, b_qkv, w_out, b_out, mask, heads):
    """Multi-head self-attention from autograd ops. x (B, T, C), mask (B, 1, 1, T)."""
    B, T, C = x.shape
    D = C // heads
    qkv = ag.linear(x, w_qkv, b_qkv)  # (B, T, 3C)
    q, k, v = qkv.split(C, axis=-1)
    q = q.reshape(B, T, heads, D).transpose(1, 2)  # (B, H, T, D)
    k = k.reshape(B, T, heads, D).transpose(1, 2)
    v = v.reshape(B, T, heads, D).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, T)
    scores = scores.masked_fill(mask, -1e9)
    context = scores.softmax(axis=-1) @ v  # (B, H, T, D)
    context = context.transpose(1, 2).reshape(B, T, C)
    return ag.linear(context, w_out, b_out)


def test_gradient_masked_attention_fully_masked_row():
    B, T, C, H = 2, 5, 6, 2
    mask = np.zeros((B, 1, T, T), dtype=bool)
    mask[0, 0, :, 3:] = True  # padding keys in the first sequence
    mask[1, 0, 2, :] = True  # a fully masked query row
    params = [randn(B, T, C), randn(C, 3 * C, seed=1) * 0.5, randn(3 * C, seed=2),
              randn(C, C, seed=3) * 0.5, randn(C, seed=4)]
    check_gradients(lambda *p: attention(*p, mask=mask, heads=H), *params, rtol=1e-5)


def test_fully_masked_row_is_finite():
    scores = Tensor(np.zeros((1, 3, 3)), requires_grad=True).masked_fill(
        np.array([[[True, True, True]]]).transpose(0, 2, 1), -1e9)
    probs = scores.softmax()
    probs.backward(np.ones((1, 3, 3)))
    assert np.all(np.isfinite(probs.data))


def transformer_block(x, w_qkv, b_qkv, w_out, b_out, g1, s1, w_in, b_in, w_ff, b_ff, g2, s2,
                      mask, heads):
    hidden = ag.layer_norm(x + attention(x, w_qkv, b_qkv, w_out, b_out, mask, heads), g1, s1)
    ff = ag.linear(ag.linear(hidden, w_in, b_in).gelu(), w_ff, b_ff)
    return ag.layer_norm(hidden + ff, g2, s2)


def test_gradient_transformer_block():
    B, T, C, H, I = 2, 7, 12, 3, 37
    mask = np.zeros((B, 1, 1, T), dtype=bool)
    mask[1, 0, 0, 5:] = True
    params = [
        randn(B, T, C), randn(C, 3 * C, seed=1) * 0.3, randn(3 * C, seed=2) * 0.1,
        randn(C, C, seed=3) * 0.3, randn(C, seed=4) * 0.1,
        1 + randn(C, seed=5) * 0.1, randn(C, seed=6) * 0.1,
        randn(C, I, seed=7) * 0.3, randn(I, seed=8) * 0.1,
        randn(I, C, seed=9) * 0.3, randn(C, seed=10) * 0.1,
        1 + randn(C, seed=11) * 0.1, randn(C, seed=12) * 0.1,
    ]
    check_gradients(lambda *p: transformer_block(*p, mask=mask, heads=H), *params,
                    rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- numerics


def test_softmax_finite_at_extreme_logits():
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32),
               requires_grad=True)
    out = x.softmax()
    out.backward(np.ones((2, 3), dtype=np.float32))
    assert np.all(np.isfinite(out.data))
    assert np.all(np.isfinite(x.grad))


def test_log_softmax_finite_at_extreme_logits():
    x = Tensor(np.array([[1e4, -1e4, 0.0]], dtype=np.float32), requires_grad=True)
    out = x.log_softmax()
    out.backward(np.ones((1, 3), dtype=np.float32))
    assert np.all(np.isfinite(out.data))
    assert np.all(np.isfinite(x.grad))
    assert out.data[0, 1] == pytest.approx(-2e4)


def test_cross_entropy_finite_at_extreme_logits():
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32),
               requires_grad=True)
    loss = ag.cross_entropy(x, np.array([1, 0]))
    loss.backward()
    assert loss.item() == pytest.approx(2e4 + math.log(2) / 2, rel=1e-6)
    assert np.all(np.isfinite(x.grad))


def exact_gelu(values):
    return np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in values])


def test_gelu_float32_matches_math_erf():
    x = np.linspace(-10, 10, 200_001).astype(np.float32)
    out = Tensor(x).gelu().data
    assert out.dtype == np.float32
    assert np.max(np.abs(out - exact_gelu(x.astype(F64)))) < 1e-6


def test_erf_float32_matches_math_erf():
    x = np.linspace(-6, 6, 120_001).astype(np.float32)
    expected = np.array([math.erf(v) for v in x.astype(F64)])
    assert np.max(np.abs(ag.erf(x) - expected)) < 1e-7


def test_erf_float64_is_exact():
    x = np.array([-3.0, -0.5, 0.0, 0.1, 2.0])
    np.testing.assert_array_equal(ag.erf(x), [math.erf(v) for v in x])


def test_gelu_slope_float32_matches_float64():
    x = np.linspace(-8, 8, 1001)
    x32 = Tensor(x.astype(np.float32), requires_grad=True)
    x64 = Tensor(x, requires_grad=True, dtype=F64)
    x32.gelu().backward(np.ones(1001, dtype=np.float32))
    x64.gelu().backward(np.ones(1001))
    np.testing.assert_allclose(x32.grad, x64.grad, atol=1e-6)


# ---------------------------------------------------------------- graph rules


def test_deep_chain_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_tensor_reused_accumulates_gradient():
    x = Tensor(np.array([3.0]), requires_grad=True, dtype=F64)
    (x * x + x).sum().backward()
    assert x.grad[0] == 7.0


def test_leaf_gradients_accumulate_over_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])


def test_intermediate_gradients_freed():
    x = Tensor(np.ones(3), requires_grad=True)
    hidden = x * 2
    (hidden * hidden).sum().backward()
    assert hidden.grad is None


def test_retain_graph_allows_second_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])


def test_second_backward_through_freed_graph_raises():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_freed_graph_detected_before_gradients_change():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    hidden = x * x
    hidden.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        (hidden + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_graph_freed_after_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    hidden = x * x
    hidden.sum().backward()
    assert hidden._parents == ()


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with ag.no_grad():
        y = (x * 2).exp().sum()
        assert not ag.is_grad_enabled()
    assert not y.requires_grad
    assert y._parents == ()
    assert y._backward is None
    assert ag.is_grad_enabled()


def test_no_grad_restores_state_after_exception():
    with pytest.raises(KeyError):
        with ag.no_grad():
            raise KeyError("x")
    assert ag.is_grad_enabled()


def test_constants_record_no_graph():
    y = Tensor(np.ones(3)) * 2 + 1
    assert not y.requires_grad
    assert y._parents == ()


def test_detach_cuts_graph():
    x = Tensor(np.ones(3), requires_grad=True, dtype=F64)
    d = (x * 2).detach()
    assert not d.requires_grad
    assert d.dtype == F64


def test_gradient_arrays_not_shared_by_add():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    (a + b).backward(np.ones(3, dtype=np.float32))
    assert a.grad is not b.grad
    assert not np.shares_memory(a.grad, b.grad)


@pytest.mark.parametrize("build", [
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: (a.reshape(3) + b.reshape(3)).reshape(1, 3),
    lambda a, b: ag.concatenate([a, b], axis=0)[:1] + ag.concatenate([a, b], axis=0)[1:],
    lambda a, b: a.transpose(0, 1).transpose(0, 1) + b,
])
def test_gradient_arrays_not_shared(build):
    a = Tensor(np.ones((1, 3)), requires_grad=True)
    b = Tensor(np.ones((1, 3)), requires_grad=True)
    build(a, b).backward(np.ones((1, 3), dtype=np.float32))
    a.grad += 1
    assert not np.shares_memory(a.grad, b.grad)
    np.testing.assert_array_equal(np.abs(b.grad), [[1.0, 1.0, 1.0]])


def test_backward_copies_upstream_gradient():
    x = Tensor(np.ones(3), requires_grad=True)
    upstream = np.ones(3, dtype=np.float32)
    (x + 0).backward(upstream)
    x.grad += 1
    np.testing.assert_array_equal(upstream, [1.0, 1.0, 1.0])


# ---------------------------------------------------------------- dtypes


def test_tensor_float64_becomes_float32():
    assert Tensor(np.zeros(3)).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32


def test_tensor_dtype_argument_kept():
    assert Tensor([1.0], dtype=F64).dtype == F64


def test_tensor_integers_stay_integers():
    assert Tensor(np.arange(3)).dtype == np.arange(3).dtype


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(ValueError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)


FLOAT32_OPS = {
    "add_f64_scalar": lambda x, w: x + np.float64(0.5),
    "radd_f64_array": lambda x, w: np.ones(4) + x,
    "sub_scalar": lambda x, w: 1.5 - x,
    "mul_f64_scalar": lambda x, w: x * (1 / np.sqrt(np.float64(4.0))),
    "div_scalar": lambda x, w: x / 3.0,
    "rdiv_scalar": lambda x, w: 1.0 / (x * x + 1),
    "pow_f64": lambda x, w: x ** np.float64(2.0),
    "rpow_scalar": lambda x, w: 2.0 ** x,
    "rpow_f64": lambda x, w: np.float64(3.0) ** x,
    "neg": lambda x, w: -x,
    "matmul": lambda x, w: x @ w,
    "matmul_f64_array": lambda x, w: x @ np.ones((4, 2)),
    "sum": lambda x, w: x.sum(axis=0),
    "mean": lambda x, w: x.mean(),
    "max": lambda x, w: x.max(axis=-1),
    "reshape": lambda x, w: x.reshape(4, 3),
    "transpose": lambda x, w: x.transpose(0, 1),
    "permute": lambda x, w: x.permute(1, 0),
    "getitem": lambda x, w: x[np.array([0, 0, 2])],
    "split": lambda x, w: x.split(2, axis=1)[0],
    "concatenate": lambda x, w: ag.concatenate([x, x], axis=1),
    "exp": lambda x, w: x.exp(),
    "log": lambda x, w: (x * x + 1).log(),
    "sqrt": lambda x, w: (x * x + 1).sqrt(),
    "tanh": lambda x, w: x.tanh(),
    "relu": lambda x, w: x.relu(),
    "gelu": lambda x, w: x.gelu(),
    "softmax": lambda x, w: x.softmax(),
    "log_softmax": lambda x, w: x.log_softmax(),
    "masked_fill": lambda x, w: x.masked_fill(np.eye(3, 4, dtype=bool), -1e9),
    "linear": lambda x, w: ag.linear(x, w, Tensor(np.ones(2))),
    "layer_norm": lambda x, w: ag.layer_norm(x, Tensor(np.ones(4)), Tensor(np.zeros(4))),
    "dropout": lambda x, w: ag.dropout(x, 0.5, True),
    "cross_entropy": lambda x, w: ag.cross_entropy(x, np.array([0, 3, -100])),
    "embedding": lambda x, w: ag.embedding(w, np.array([[1, 3, 1]])),
}


@pytest.mark.parametrize("name", list(FLOAT32_OPS))
def test_float32_preserved(name):
    x = Tensor(randn(3, 4), requires_grad=True)
    w = Tensor(randn(4, 2, seed=1), requires_grad=True)
    out = FLOAT32_OPS[name](x, w)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, dtype=np.float32))
    for leaf in (x, w):
        assert leaf.grad is None or leaf.grad.dtype == np.float32


# ---------------------------------------------------------------- dropout


def test_dropout_eval_returns_input():
    x = Tensor(np.ones(5))
    assert ag.dropout(x, 0.3, training=False) is x


def test_dropout_zero_probability_returns_input():
    x = Tensor(np.ones(5))
    assert ag.dropout(x, 0.0, training=True) is x


def test_dropout_manual_seed_reproduces_mask():
    x = Tensor(np.ones(1000))
    ag.manual_seed(7)
    first = ag.dropout(x, 0.3, True).data
    ag.manual_seed(7)
    second = ag.dropout(x, 0.3, True).data
    np.testing.assert_array_equal(first, second)


def test_dropout_generator_argument_reproduces_mask():
    x = Tensor(np.ones(1000))
    first = ag.dropout(x, 0.3, True, rng=np.random.default_rng(1)).data
    second = ag.dropout(x, 0.3, True, rng=np.random.default_rng(1)).data
    np.testing.assert_array_equal(first, second)


def test_dropout_scales_kept_values():
    out = ag.dropout(Tensor(np.ones(10_000)), 0.25, True, rng=np.random.default_rng(2)).data
    kept = out[out != 0]
    np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937])
@pytest.mark.parametrize("size", [100_001, (317, 316)])
def test_dropout_drop_fraction_near_p(bit_generator, size):
    # PCG64 takes the 64-bit raw path (two elements per output, odd sizes included);
    # MT19937, whose raw outputs have 32 bits, falls back to generator.random().
    rng = np.random.Generator(bit_generator(2))
    out = ag.dropout(Tensor(np.ones(size)), 0.25, True, rng=rng).data
    assert out.shape == np.ones(size).shape
    assert abs(np.mean(out == 0) - 0.25) < 0.01


def test_dropout_rejects_probability_one():
    with pytest.raises(ValueError, match="0, 1"):
        ag.dropout(Tensor(np.ones(3)), 1.0, True)


# ---------------------------------------------------------------- errors and API


def test_matmul_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))


def test_matmul_batch_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(5, 4, 6\)"):
        Tensor(np.ones((2, 3, 4))) @ Tensor(np.ones((5, 4, 6)))


def test_broadcast_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))


def test_backward_non_scalar_without_grad_raises():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        (x * 2).backward()


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).sum().backward()


def test_backward_grad_shape_mismatch_raises():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="must be equal"):
        (x * 2).backward(np.ones(4))


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(4,\)"):
        Tensor(np.ones((2, 3))).reshape(4)


def test_cross_entropy_rejects_out_of_range_target():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ag.cross_entropy(Tensor(np.zeros((2, 4))), np.array([1, 4]))


def test_cross_entropy_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(3,\)"):
        ag.cross_entropy(Tensor(np.zeros((2, 4))), np.array([1, 2, 3]))


def test_embedding_rejects_out_of_range_id():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ag.embedding(Tensor(np.zeros((5, 2))), np.array([0, 5]))


def test_masked_fill_rejects_larger_mask():
    with pytest.raises(ValueError, match="cannot be broadcast"):
        Tensor(np.zeros(3)).masked_fill(np.zeros((2, 3), dtype=bool), 0.0)


def test_linear_rejects_wrong_weight_shape():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        ag.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5))))


def test_layer_norm_rejects_wrong_weight_shape():
    with pytest.raises(ValueError, match=r"\(5,\)"):
        ag.layer_norm(Tensor(np.ones((2, 4))), Tensor(np.ones(5)), Tensor(np.ones(5)))


def test_pow_rejects_tensor_exponent():
    with pytest.raises(TypeError, match="Python number"):
        Tensor(np.ones(2)) ** Tensor(np.ones(2))


def test_rpow_value_matches_numpy():
    x = randn(2, 3)
    np.testing.assert_allclose((2 ** Tensor(x, dtype=F64)).data, 2.0 ** x, rtol=1e-15)


@pytest.mark.parametrize("base", [0, -2.0])
def test_rpow_rejects_non_positive_base(base):
    with pytest.raises(ValueError, match="positive base"):
        base ** Tensor(np.ones(2))


def test_rpow_rejects_array_base():
    with pytest.raises(TypeError, match="Python number bases"):
        np.array([2.0, 3.0]) ** Tensor(np.ones(2))


def test_tensor_properties():
    t = Tensor(np.zeros((2, 3)))
    assert (t.shape, t.ndim, t.size, len(t)) == ((2, 3), 2, 6, 2)
    assert t.numpy() is t.data


def test_item_returns_python_float():
    assert isinstance(Tensor(np.array([2.5])).item(), float)


def test_repr_shows_requires_grad():
    assert repr(Tensor([1.0], requires_grad=True)) == "Tensor([1.], requires_grad=True)"


def test_repr_shows_non_default_dtype():
    assert "dtype=float64" in repr(Tensor([1.0], dtype=F64))


def test_demo_runs():
    result = subprocess.run([sys.executable, str(ROOT / "autograd.py")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "w.grad" in result.stdout


def run_autograd(*args):
    return subprocess.run([sys.executable, str(ROOT / "autograd.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_demo_help_does_not_run_demo():
    result = run_autograd("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python autograd.py")
    assert "w.grad" not in result.stdout


def test_demo_rejects_other_arguments():
    result = run_autograd("--steps", "3")
    assert result.returncode == 2
    assert result.stderr == "autograd.py: error: unrecognized arguments: --steps 3 (see --help)\n"


def test_layers_demo():
    result = subprocess.run([sys.executable, str(ROOT / "layers.py")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "feed_forward.intermediate.weight " in result.stdout
    largest = float(result.stdout.split("largest |value| ")[1].split()[0])
    assert largest > 0.1  # the loss depends on x, so its gradient is not 0
    result = subprocess.run([sys.executable, str(ROOT / "layers.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python layers.py")
    result = subprocess.run([sys.executable, str(ROOT / "layers.py"), "-n", "3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "layers.py: error: unrecognized arguments: -n 3 (see --help)\n"


@pytest.mark.parametrize("command", [
    ["autograd.py"], ["layers.py"], ["tokenizer.py", "hello world"],
    ["data.py", "--vocab", str(ROOT / "testdata" / "bert-base-uncased-vocab.txt")]])
def test_demo_closed_pipe_no_traceback(command):
    # The reader closes the pipe before the child writes, as `head` does after its lines.
    process = subprocess.Popen([sys.executable, str(ROOT / command[0]), *command[1:]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert "Traceback" not in stderr
    assert stderr == ""


def test_imports_alone_in_clean_interpreter(tmp_path):
    shutil.copy(ROOT / "autograd.py", tmp_path / "autograd.py")
    result = subprocess.run([sys.executable, "-E", "-s", "-c", "import autograd"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc only")
def test_reuse_freed_memory_in_subprocess():
    code = "import autograd, platform; print(autograd.reuse_freed_memory(), platform.libc_ver()[0])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    applied, libc = result.stdout.split()
    assert applied == str(libc == "glibc")


def test_gelu_float32_non_contiguous_input():
    x = np.random.default_rng(4).standard_normal((50, 40)).astype(np.float32) * 3
    np.testing.assert_array_equal(Tensor(x.T).gelu().data, Tensor(x.T.copy()).gelu().data)


def test_gelu_float32_same_with_and_without_graph():
    # Backward needs the slope, computed alongside; the values must not change with it.
    x = (np.random.default_rng(5).standard_normal(300_000) * 4).astype(np.float32)
    with ag.no_grad():
        plain = Tensor(x).gelu().data
    np.testing.assert_array_equal(Tensor(x, requires_grad=True).gelu().data, plain)


def test_gelu_float32_left_tail_relative_error():
    x = np.linspace(-13.5, -4, 2001, dtype=np.float32)
    exact = np.array([v * math.erfc(-v / math.sqrt(2)) / 2 for v in x.astype(float)])
    out = Tensor(x).gelu().data
    assert np.max(np.abs(out - exact) / np.abs(exact)) < 5e-3


def test_gelu_float32_saturates_far_out():
    out = Tensor(np.array([-1e6, -30.0, 30.0, 1e6], dtype=np.float32)).gelu().data
    np.testing.assert_array_equal(out, [0.0, 0.0, 30.0, 1e6])


def _split_products_case(x, w, b):
    """Return a linear layer whose products the threads split: rows of x forward and for
    d x, and, since the weight depends on w, columns of the upstream gradient for d weight
    (256 x 1100 by 1100 x 512)."""
    base = Tensor(np.outer(np.ones(256), np.arange(512)).astype(np.float32) * 1e-3)
    return ag.linear(x, base * w.reshape(256, 1), None)[:, :256]


THREADED_OPS = {
    "gelu": lambda x, w, b: x.gelu(),
    "softmax": lambda x, w, b: x.softmax(),
    "layer_norm": lambda x, w, b: ag.layer_norm(x, w, b, eps=1e-12),
    # The bias add of linear is split by rows; w scales the columns of an identity weight.
    "linear": lambda x, w, b: ag.linear(x, Tensor(np.eye(256, dtype=np.float32)) * w, b),
    # Threads draw consecutive parts of one PCG64 stream, so the mask is the same.
    "dropout": lambda x, w, b: ag.dropout(x * w, 0.3, True, rng=np.random.default_rng(3)),
    "product": _split_products_case,
    # Blocks of heads run on the threads: (1100, 256) as 11 sequences of 100 tokens, 4 heads.
    "attention": lambda x, w, b: ag.attention(
        ag.concatenate([x, x * w, x], axis=1).reshape(11, 100, 768), 4, None, 0.2, True,
        rng=np.random.default_rng(4))[0].reshape(1100, 256),
}


@pytest.mark.parametrize("name", sorted(THREADED_OPS))
def test_threads_give_identical_results(name, monkeypatch):
    # A split from 4,096 elements on, so that (1100, 256) is cut into many blocks; an odd
    # row count gives uneven parts. Each row's elementwise arithmetic is the same on any
    # thread, so those results are identical. Products use the threads only with a
    # one-thread BLAS; pretend this process has one.
    monkeypatch.setattr(ag, "_PARALLEL_MIN_SIZE", 4096)
    monkeypatch.setattr(ag, "_BLOCK", 16384)
    monkeypatch.setattr(ag, "_blas_one_thread", True)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((1100, 256)) * 3).astype(np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    weight = rng.standard_normal(256).astype(np.float32)
    results = []
    before = ag.get_num_threads()
    try:
        for threads in (1, 3, 4):
            ag.set_num_threads(threads)
            assert ag.products_use_threads() == (threads > 1)
            xt = Tensor(x, requires_grad=True)
            w = Tensor(weight, requires_grad=True)
            b = Tensor(np.zeros(256, dtype=np.float32), requires_grad=True)
            out = THREADED_OPS[name](xt, w, b)
            out.backward(upstream.copy())
            results.append((out.data, xt.grad, w.grad))
    finally:
        ag.set_num_threads(before)
    for threaded_results in results[1:]:
        for single, threaded in zip(results[0], threaded_results):
            if name in ("linear", "product", "attention"):
                # BLAS may sum a product in another order when its blocks change shape.
                scale = float(np.abs(single).max())
                np.testing.assert_allclose(single, threaded, rtol=1e-5, atol=1e-6 * scale)
            else:
                np.testing.assert_array_equal(single, threaded)


@pytest.mark.parametrize("size", [300_001, 262_144])
def test_threaded_dropout_draws_one_stream(size, monkeypatch):
    # Any thread count keeps exactly the elements whose 16 bits of the generator's raw
    # stream reach p * 2^16, and leaves the generator at the same place. Blocks of 16,384
    # elements, split from 4,096 elements on, give every thread several blocks.
    monkeypatch.setattr(ag, "_PARALLEL_MIN_SIZE", 4096)
    monkeypatch.setattr(ag, "_BLOCK", 16384)
    raw = np.random.default_rng(8).bit_generator.random_raw((size + 3) // 4)
    expected_keep = raw.view(np.uint16)[:size] >= np.uint16(round(0.1 * 2 ** 16))
    x = Tensor(np.ones(size, dtype=np.float32))
    before = ag.get_num_threads()
    try:
        for threads in (1, 2, 3):
            ag.set_num_threads(threads)
            rng = np.random.default_rng(8)
            out = ag.dropout(x, 0.1, True, rng=rng).data
            np.testing.assert_array_equal(out != 0, expected_keep)
            next_output = np.random.default_rng(8).bit_generator.random_raw(len(raw) + 1)[-1]
            assert rng.bit_generator.random_raw() == next_output
    finally:
        ag.set_num_threads(before)


@pytest.mark.parametrize("p", [1e-9, 0.1, 0.99999])
def test_dropout_keeps_expected_value(p):
    # p rounds to the nearest multiple of 1/65536 (1e-9 to 0, no dropout), and kept
    # elements are scaled by 1 / (1 - rounded p), so the expected value stays x.
    out = ag.dropout(Tensor(np.ones(1 << 20, dtype=np.float32)), p, True,
                     rng=np.random.default_rng(0)).data
    dropped = round(p * 65536) / 65536
    kept_values = out[out != 0]
    np.testing.assert_allclose(kept_values, 1 / (1 - dropped), rtol=1e-6)
    kept_share = kept_values.size / out.size
    assert abs(kept_share - (1 - dropped)) < 6 * np.sqrt(dropped / out.size) + 1e-12


def test_threads_pass_errors_back():
    before = ag.get_num_threads()
    ag.set_num_threads(2)
    try:
        def work(start, stop):
            raise ArithmeticError(f"rows {start}-{stop}")
        with pytest.raises(ArithmeticError, match="rows"):
            ag._in_parallel(work, rows=10, size=1 << 20)
    finally:
        ag.set_num_threads(before)


@pytest.mark.parametrize("count", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_counts(count):
    with pytest.raises(ValueError, match="set_num_threads"):
        ag.set_num_threads(count)


@pytest.mark.parametrize("openblas, omp, expected", [
    ("1", "2", 1), ("", "1", 1), (None, None, "cores"), ("abc", None, "cores"),
    ("100000", None, "cores"), ("0", None, "cores")])
def test_thread_count_reads_environment(monkeypatch, openblas, omp, expected):
    environ = {}
    for variable, value in (("OPENBLAS_NUM_THREADS", openblas), ("OMP_NUM_THREADS", omp)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
            environ[variable] = value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ag.thread_count() == (cores if expected == "cores" else expected)
    assert ag.thread_count(environ) == ag.thread_count()


@pytest.mark.parametrize("variables, expected", [
    ({"OPENBLAS_NUM_THREADS": "1"}, True),
    ({"OMP_NUM_THREADS": "1"}, True),
    ({"OPENBLAS_NUM_THREADS": "abc", "OMP_NUM_THREADS": "1"}, True),
    ({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}, False),
    ({"MKL_NUM_THREADS": "1"}, False),  # NumPy's BLAS here is OpenBLAS, which ignores it
    ({}, False)])
def test_product_threads_follow_blas_variables(variables, expected):
    # The check follows the variables that the loaded BLAS reads, in its order.
    blas = str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]).lower()
    if "openblas" not in blas:
        pytest.skip(f"NumPy's BLAS is {blas}, not OpenBLAS")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
                        "MKL_NUM_THREADS")}
    env.update(variables)
    code = "import autograd; autograd.set_num_threads(2); print(autograd.products_use_threads())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == str(expected), result.stderr


def test_importing_the_scripts_changes_no_environment():
    # Only running train.py or infer.py as a command limits BLAS to one thread.
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    code = ("import os, infer, train; "
            "print(os.environ.get('OPENBLAS_NUM_THREADS'), infer.THREAD_REQUEST, "
            "train.THREAD_REQUEST)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["None", "None", "None"], result.stderr


def test_leaf_gradient_is_contiguous():
    weight = Tensor(np.random.default_rng(0).standard_normal((5, 3)), requires_grad=True)
    x = Tensor(np.ones((2, 3)))
    (x @ weight.T).sum().backward()
    assert weight.grad.flags.c_contiguous


def test_rng_state_round_trip():
    ag.manual_seed(3)
    x = Tensor(np.ones((4, 50)))
    state = ag.get_rng_state()
    first = ag.dropout(x, 0.5, True).data
    ag.set_rng_state(state)
    second = ag.dropout(x, 0.5, True).data
    np.testing.assert_array_equal(first, second)
    assert json.loads(json.dumps(state)) == state


# ==============================================================================
# tokenizer.py
# ==============================================================================


TESTDATA = ROOT / "testdata"
VOCAB = TESTDATA / "bert-base-uncased-vocab.txt"


@pytest.fixture(scope="module")
def base_tokenizer():
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


def test_special_token_ids(base_tokenizer):
    assert (base_tokenizer.pad_token_id, base_tokenizer.unk_token_id) == (0, 100)
    assert (base_tokenizer.cls_token_id, base_tokenizer.sep_token_id, base_tokenizer.mask_token_id) == (101, 102, 103)
    assert base_tokenizer.special_ids == {0, 100, 101, 102, 103}
    assert len(base_tokenizer) == 30522


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


def test_hard_case_decode(base_tokenizer, cases):
    for case in cases:
        if case["kind"] != "text" or case["options"]:
            continue
        where = repr(case["text"])
        assert base_tokenizer.decode(case["input_ids"]) == case["decode"], where
        with_special = base_tokenizer.decode(case["input_ids"], skip_special_tokens=False)
        assert with_special == case["decode_with_special"], where


def test_encode_truncation_padding(base_tokenizer, cases):
    encode_cases = [c for c in cases if c["kind"] == "encode"]
    assert len(encode_cases) > 10
    for case in encode_cases:
        got = base_tokenizer.encode(case["text"], case["pair"], case["max_length"], case["padding"])
        where = f"{case['text']!r} {case['pair']!r} max_length={case['max_length']}"
        assert got["input_ids"] == case["input_ids"], where
        assert got["token_type_ids"] == case["token_type_ids"], where
        assert got["attention_mask"] == case["attention_mask"], where


def test_encode_batch_cases(base_tokenizer, cases):
    batch_cases = [c for c in cases if c["kind"] == "batch"]
    assert len(batch_cases) == 4
    for case in batch_cases:
        got = base_tokenizer.encode_batch(case["texts"], case["pairs"], case["max_length"], case["padding"])
        where = f"{case['texts']!r} padding={case['padding']!r}"
        assert got["input_ids"] == case["input_ids"], where
        assert got["token_type_ids"] == case["token_type_ids"], where
        assert got["attention_mask"] == case["attention_mask"], where


def test_corpus_parity(base_tokenizer, corpus_lines):
    rows = (TESTDATA / "tokenizer_corpus_digest.txt").read_text(encoding="utf-8").split("\n")
    expected = [row.split() for row in rows[1:] if row]
    assert len(corpus_lines) == len(expected)
    for number, (line, (n_ids, digest)) in enumerate(zip(corpus_lines, expected), start=1):
        ids = base_tokenizer.encode(line)["input_ids"]
        got = hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=8).hexdigest()
        if got != digest or len(ids) != int(n_ids):
            # The digest stores no ids, so show ours and the words most likely to differ.
            unusual = [w for w in line.split() if not w.isascii()][:8]
            pytest.fail(
                f"corpus line {number} differs from the reference: {len(ids)} ids, reference "
                f"has {n_ids}; our first ids {ids[:16]}; non-ASCII words and our tokens "
                f"{[(w, base_tokenizer.tokenize(w)) for w in unusual]}; line starts {line[:80]!r}"
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


def test_encode_without_truncation(base_tokenizer):
    got = base_tokenizer.encode("one two three four", max_length=4, truncation=False)
    assert len(got["input_ids"]) == 6


def test_encode_pads_to_max_length(base_tokenizer):
    got = base_tokenizer.encode("hi", max_length=5, padding="max_length")
    assert got["input_ids"] == [101, 7632, 102, 0, 0]
    assert got["attention_mask"] == [1, 1, 1, 0, 0]
    assert got["token_type_ids"] == [0, 0, 0, 0, 0]


def test_encode_rejects_bad_options(base_tokenizer):
    with pytest.raises(ValueError, match="max_length"):
        base_tokenizer.encode("hi", padding="max_length")
    with pytest.raises(ValueError, match="padding"):
        base_tokenizer.encode("hi", padding="left")
    with pytest.raises(ValueError, match="max_length=2"):
        base_tokenizer.encode("hi", "there", max_length=2)
    with pytest.raises(TypeError, match="str"):
        base_tokenizer.encode(None)
    with pytest.raises(ValueError, match="pairs"):
        base_tokenizer.encode_batch(["a", "b"], ["c"])


def test_decode_merges_wordpieces(base_tokenizer):
    ids = base_tokenizer.encode("Tokenization of unaffable words")["input_ids"]
    assert base_tokenizer.decode(ids) == "tokenization of unaffable words"
    assert base_tokenizer.decode(ids, skip_special_tokens=False).startswith("[CLS] tokenization")


def test_decode_numpy_ids(base_tokenizer):
    np = pytest.importorskip("numpy")
    ids = np.array([101, 7592, 2088, 102], dtype=np.int64)
    assert base_tokenizer.decode(ids) == "hello world"
    assert base_tokenizer.convert_ids_to_tokens(ids[1]) == "hello"


def test_decode_rejects_bad_id(base_tokenizer):
    with pytest.raises(ValueError, match="30522"):
        base_tokenizer.decode([101, 30522])


def test_convert_tokens_and_ids(base_tokenizer):
    assert base_tokenizer.convert_tokens_to_ids(["hello", "##ing", "notaword"]) == [7592, 2075, 100]
    assert base_tokenizer.convert_ids_to_tokens([7592, 2075, 103]) == ["hello", "##ing", "[MASK]"]


def test_cache_cleared_gives_same_ids(base_tokenizer, corpus_lines, monkeypatch):
    expected = [base_tokenizer.text_to_ids(line) for line in corpus_lines[:50]]
    fresh = Tokenizer(base_tokenizer.tokens, **base_tokenizer.config())
    monkeypatch.setattr(tokenizer, "WORD_CACHE_SIZE", 10)
    assert [fresh.text_to_ids(line) for line in corpus_lines[:50]] == expected
    assert len(fresh._id_cache) <= 10


def test_wordpiece_greedy_longest_match():
    tok = Tokenizer(tiny_vocab(["abab"]))
    assert tok.wordpiece("ababab") == ["abab", "##a", "##b"]
    assert tok.wordpiece("abc") == ["[UNK]"]
    assert tok.wordpiece("a" * 101) == ["[UNK]"]


def test_config_rebuilds_tokenizer(base_tokenizer):
    cased = Tokenizer.from_file(VOCAB, lowercase=False, never_split=["New-York"])
    rebuilt = Tokenizer(cased.tokens, **cased.config())
    text = "Héllo New-York [MASK]"
    assert rebuilt.tokenize(text) == cased.tokenize(text)
    assert rebuilt.config() == cased.config()


# ---------------------------------------------------------------- vocabulary files


def test_save_and_load_round_trip(base_tokenizer, tmp_path):
    path = tmp_path / "vocab.txt"
    base_tokenizer.save(path)
    loaded = Tokenizer.from_file(path)
    assert loaded.tokens == base_tokenizer.tokens
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


def test_basic_tokenize_keeps_specials(base_tokenizer):
    assert base_tokenizer.basic_tokenize("Héllo of[MASK].") == ["hello", "of", "[MASK]", "."]


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
    assert result.stderr.startswith(f"tokenizer.py: error: --vocab {tmp_path / 'none.txt'}: ")
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
    assert "note: the vocabulary has only" in result.stdout
    assert "--min-frequency" in result.stdout


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("tokenizer.py: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def train_cli(tmp_path, corpus, *args):
    return run_cli("train", "--corpus", str(corpus), "--vocab-size", "30", *args, cwd=tmp_path)


def test_cli_train_truncated_gzip(tmp_path):
    corpus = tmp_path / "cut.txt.gz"
    corpus.write_bytes(gzip.compress(b"the cat sat on the mat\n" * 50)[:30])
    assert_one_line_error(train_cli(tmp_path, corpus), 2, "cut.txt.gz", "truncated")


def test_cli_train_gz_not_gzip(tmp_path):
    corpus = tmp_path / "plain.gz"
    corpus.write_text("the cat\n", encoding="utf-8")
    assert_one_line_error(train_cli(tmp_path, corpus), 2, "plain.gz", "not gzip data")


def test_cli_train_empty_corpus(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n", encoding="utf-8")
    result = train_cli(tmp_path, corpus)
    assert_one_line_error(result, 2, "empty.txt", "is empty")
    assert not (tmp_path / "vocab.txt").exists()


def test_cli_train_folder_corpus(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("the cat sat on the mat\n" * 3, encoding="utf-8")
    (folder / "sub" / "b.txt.gz").write_bytes(gzip.compress(b"the dog ran\n" * 3))
    (folder / "skip.md").write_text("zebra\n", encoding="utf-8")
    out = tmp_path / "vocab.txt"
    result = train_cli(tmp_path, folder, "--out", str(out))
    assert result.returncode == 0, result.stderr
    tokens = out.read_text(encoding="utf-8").split()
    assert "d" in tokens
    assert "z" not in tokens


def test_cli_train_folder_without_text(tmp_path):
    (tmp_path / "none").mkdir()
    assert_one_line_error(train_cli(tmp_path, tmp_path / "none"), 2, "none", ".txt or .gz")


def test_cli_train_out_missing_folder(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat\n", encoding="utf-8")
    result = train_cli(tmp_path, corpus, "--out", "missing/v.txt")
    assert_one_line_error(result, 2, "--out missing/v.txt", "create it first")
    assert ".tmp" not in result.stderr


def test_cli_train_out_is_folder(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat\n", encoding="utf-8")
    (tmp_path / "dir").mkdir()
    result = train_cli(tmp_path, corpus, "--out", "dir")
    assert_one_line_error(result, 2, "--out dir is a folder", "vocab.txt")


def test_cli_train_out_unwritable(tmp_path, monkeypatch, capsys):
    # Root may write into a read-only folder, so the failing temporary file is simulated.
    def deny_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".vocab-x.tmp"))

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat\n", encoding="utf-8")
    out = tmp_path / "v.txt"
    monkeypatch.setattr(tokenizer.tempfile, "mkstemp", deny_write)
    code = tokenizer.main(["train", "--corpus", str(corpus), "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 1
    assert error == f"tokenizer.py: error: cannot write {out}: Permission denied; " \
                    "choose a writable folder\n"


def test_cli_bad_flag_one_line():
    assert_one_line_error(run_cli("--max-length", "abc", "hi"), 2, "'abc'", "--help")


def test_cli_train_bad_flag_one_line(tmp_path):
    result = run_cli("train", "--corpus", "c.txt", "--vocab-size", "many", cwd=tmp_path)
    assert_one_line_error(result, 2, "--vocab-size", "'many'")


@pytest.mark.parametrize("args, message", [
    (["--max-length", "0", "hi"],
     "--max-length 0 is too small for the 2 special tokens [CLS] [SEP]; pass 2 or more"),
    (["--max-length", "-3", "hi"],
     "--max-length -3 is too small for the 2 special tokens [CLS] [SEP]; pass 2 or more"),
    (["--max-length", "2", "--pair", "there", "hi"],
     "--max-length 2 is too small for the 3 special tokens [CLS] [SEP] [SEP] of a pair; "
     "pass 3 or more"),
])
def test_cli_demo_max_length_checked_first(args, message, capsys):
    code = tokenizer.main(args)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""  # no stage of the demo ran
    assert captured.err == f"tokenizer.py: error: {message}\n"


@pytest.mark.parametrize("flags, message", [
    (["--vocab-size", "5"],
     "--vocab-size 5 is too small; pass 6 or more (the 5 special tokens plus at least one "
     "character)"),
    (["--min-frequency", "0"], "--min-frequency 0 is invalid; pass 1 or more"),
    (["--limit-alphabet", "0"], "--limit-alphabet 0 is invalid; pass 1 or more"),
])
def test_cli_train_flags_checked_first(tmp_path, capsys, flags, message):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\n", encoding="utf-8")
    out = tmp_path / "vocab.txt"
    code = tokenizer.main(["train", "--corpus", str(corpus), "--out", str(out), *flags])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""  # training never started
    assert captured.err == f"tokenizer.py: error: {message}\n"
    assert not out.exists()


def test_cli_train_vocab_below_alphabet_names_flags(tmp_path, capsys):
    # The alphabet of "ab cd" is a, c, ##b, ##d: 4 entries after the 5 special tokens.
    corpus = tmp_path / "c.txt"
    corpus.write_text("ab ab cd\n", encoding="utf-8")
    code = tokenizer.main(["train", "--corpus", str(corpus), "--vocab-size", "8",
                           "--out", str(tmp_path / "vocab.txt")])
    error = capsys.readouterr().err
    assert code == 2
    assert error == "tokenizer.py: error: --vocab-size 8 is smaller than the 5 special " \
                    "tokens plus the 4-entry alphabet of this corpus; pass --vocab-size 9 " \
                    "or more, or a lower --limit-alphabet\n"


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def run_main_interrupted(main, argv):
    # An escaping KeyboardInterrupt would stop the whole pytest session, not fail one test.
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")


def replace_then_interrupt(source, target, real_replace=os.replace):
    real_replace(source, target)
    raise KeyboardInterrupt


@pytest.mark.parametrize("module, name, patch, replaced", [
    (tokenizer, "_learn_merges", interrupt, False),
    (os, "replace", interrupt, False),
    (os, "replace", replace_then_interrupt, True),
], ids=["while-training", "before-rename", "after-rename"])
def test_cli_train_interrupted(tmp_path, monkeypatch, capsys, module, name, patch, replaced):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\n" * 3, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    out.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(module, name, patch)
    argv = ["train", "--corpus", str(corpus), "--out", str(out)]
    code = run_main_interrupted(tokenizer.main, argv)
    assert code == 130
    assert capsys.readouterr().err == "tokenizer.py: interrupted\n"
    lines = out.read_text(encoding="utf-8").splitlines()
    # Either the old file or the complete new one, never a partial file.
    if replaced:
        assert lines[:5] == list(tokenizer.SPECIAL_TOKENS)
    else:
        assert lines == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "vocab.txt"]


def test_cli_train_vocab_mode(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\n" * 3, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    assert train_cli(tmp_path, corpus, "--out", str(out)).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o644


def test_save_mode_and_error(tmp_path, base_tokenizer):
    base_tokenizer.save(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileNotFoundError, match="missing.*create it first"):
        base_tokenizer.save(tmp_path / "missing" / "vocab.txt")


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


# ==============================================================================
# layers.py and bert.py
# ==============================================================================


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


def check_module_gradients(module, loss_fn, rng, samples=6, tol=1e-6):
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

    check_module_gradients(layer, loss, rng)
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

    check_module_gradients(model, loss, rng, samples=3)


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


def test_preset_heads_and_intermediate_follow_a_hidden_override():
    config = BertConfig.from_preset("tiny", vocab_size=100, hidden_size=256)
    assert (config.num_attention_heads, config.intermediate_size) == (4, 1024)
    config = BertConfig.from_preset("tiny", vocab_size=100, hidden_size=256, num_attention_heads=8)
    assert config.num_attention_heads == 8
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        BertConfig.from_preset("tiny", hidden_size=-5)
    # 200 // 64 = 3 heads would not divide 200: the largest count below that does, 2.
    assert BertConfig.from_preset("mini", hidden_size=200).num_attention_heads == 2


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


@pytest.mark.parametrize("damage, message", [
    ("no vocabulary", "header entry '__vocab__' is missing"),
    ("5 heads", "is not divisible by num_attention_heads 5"),
])
def test_npz_bad_header_names_file(tmp_path, damage, message):
    model = BertForPreTraining(tiny_config(vocab_size=120))
    path = tmp_path / "model.npz"
    bert.save(model, small_tokenizer(), path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    if damage == "no vocabulary":
        del entries["__vocab__"]
    else:
        config = json.loads(str(entries["__config__"]))
        entries["__config__"] = np.array(json.dumps(dict(config, num_attention_heads=5)))
    np.savez(path, **entries)
    with pytest.raises(ValueError, match="model.npz: ") as error:
        bert.load(path)
    assert message in str(error.value)


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
    with ag.no_grad():  # inference keeps no attention probabilities
        last, pooled = model.bert(ids, types, mask)
    np.testing.assert_allclose(last.data, reference["hidden_states"][-1], atol=1e-5)
    np.testing.assert_allclose(pooled.data, reference["pooler_output"], atol=1e-5)


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


def test_checkpoint_without_pooler_gets_random_pooler(tmp_path):
    # BertForMaskedLM checkpoints have no pooler and no NSP head: those start from BERT's
    # random initialisation, while every weight in the file is loaded as it is.
    target = copy_checkpoint(tmp_path)
    tensors = bert.read_safetensors(target / "model.safetensors")
    without_heads = {k: v for k, v in tensors.items()
                     if "pooler" not in k and "seq_relationship" not in k}
    assert len(without_heads) < len(tensors)
    bert.write_safetensors(target / "model.safetensors", without_heads)
    model, _ = bert.load(target)
    full, _ = bert.load(TINY_HF)
    assert np.std(model.bert.pooler.weight.data) > 0.01
    assert np.std(model.nsp.weight.data) > 0.01
    np.testing.assert_array_equal(model.bert.encoder[0].feed_forward.output.weight.data,
                                  full.bert.encoder[0].feed_forward.output.weight.data)


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


def run_bert(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "bert.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_bert_error(run, *fragments):
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("bert.py: error: ")
    assert run.stderr.count("\n") == 1, run.stderr
    for fragment in fragments:
        assert fragment in run.stderr


@pytest.fixture
def npz_with_state(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    path = tmp_path / "tiny.npz"
    bert.save(model, tokenizer, path, metadata={"step": 3}, extra={"adam.m": np.ones(2)})
    return path


def test_convert_npz_to_float16_npz(tmp_path, npz_with_state):
    run = run_bert("convert", "--float16", npz_with_state, "half.npz", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    half = tmp_path / "half.npz"
    assert half.is_file()
    with np.load(half) as npz:
        assert npz["bert.embeddings.word_embeddings.weight"].dtype == np.float16
    model, _, metadata, extra = bert.load_npz(half)
    assert metadata == {"step": 3, "converted_from": str(npz_with_state)}
    assert extra == {}
    assert "optimizer state" in run.stdout
    reference, _ = bert.load(TINY_HF)
    ids = np.random.default_rng(0).integers(0, 120, size=(1, 9))
    np.testing.assert_allclose(outputs(model, ids)[0], outputs(reference, ids)[0], atol=2e-2)


def test_convert_npz_overwrites_npz_with_force(tmp_path, npz_with_state):
    (tmp_path / "old.npz").write_bytes(b"old")
    run = run_bert("convert", npz_with_state, "old.npz", cwd=tmp_path)
    assert_bert_error(run, "old.npz already exists; pass --force")
    assert (tmp_path / "old.npz").read_bytes() == b"old"
    run = run_bert("convert", "--force", npz_with_state, "old.npz", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("wrote old.npz (float32 weights, replacing the previous file)")
    assert bert.load(tmp_path / "old.npz")[0].config.vocab_size == 120


def test_convert_float16_to_folder_rejected(tmp_path, npz_with_state):
    run = run_bert("convert", "--float16", npz_with_state, "hf", cwd=tmp_path)
    assert_bert_error(run, "--float16 applies to a .npz DST only")
    assert not (tmp_path / "hf").exists()


def test_convert_existing_checkpoint_needs_force(tmp_path, npz_with_state):
    assert run_bert("convert", npz_with_state, "hf", cwd=tmp_path).returncode == 0
    run = run_bert("convert", npz_with_state, "hf", cwd=tmp_path)
    assert_bert_error(run, "hf already contains a checkpoint; pass --force")
    run = run_bert("convert", "--force", npz_with_state, "hf", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "replaced" in run.stdout


def test_convert_force_replaces_the_whole_folder(tmp_path, npz_with_state):
    # Files that transformers reads beside ours, such as a tokenizer.json of another
    # vocabulary, must not survive a replacement.
    hf = tmp_path / "hf"
    assert run_bert("convert", npz_with_state, hf, cwd=tmp_path).returncode == 0
    (hf / "tokenizer.json").write_text("{}")
    (hf / "1_Pooling").mkdir()
    run = run_bert("convert", "--force", npz_with_state, hf, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in hf.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_nonempty_folder_needs_force(tmp_path, npz_with_state):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    run = run_bert("convert", npz_with_state, notes, cwd=tmp_path)
    assert_bert_error(run, "is a folder with files in it", "--force")
    assert (notes / "todo.txt").read_text() == "keep me"


def test_export_interrupted_leaves_the_old_folder(tmp_path, monkeypatch):
    model, tokenizer = bert.load(TINY_HF)
    target = tmp_path / "hf"
    bert.export_hf(model, tokenizer, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bert, "write_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bert.export_hf(model, tokenizer, target, replace=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]

    monkeypatch.undo()
    real_rename, calls = os.rename, []

    def second_rename_interrupted(src, dst):  # old folder moved aside, new not yet in place
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_interrupted)
    with pytest.raises(KeyboardInterrupt):
        bert.export_hf(model, tokenizer, target, replace=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_export_rejects_a_folder_with_files_unless_replacing(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    (tmp_path / "readme.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty"):
        bert.export_hf(model, tokenizer, tmp_path)
    assert (tmp_path / "readme.txt").read_text() == "mine"


def test_export_tokenizer_options(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    bert.export_hf(model, tokenizer, tmp_path / "hf", max_length=16)
    options = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert options["model_max_length"] == 16
    assert options["clean_up_tokenization_spaces"] is True


def test_convert_writes_the_trained_length(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    bert.save(model, tokenizer, tmp_path / "m.npz", metadata={"settings": {"max_seq_len": 12}})
    assert run_bert("convert", "m.npz", "hf", cwd=tmp_path).returncode == 0
    options = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert options["model_max_length"] == 12


def test_convert_npz_suffix_in_any_case(tmp_path, npz_with_state):
    run = run_bert("convert", npz_with_state, "upper.NPZ", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "upper.NPZ").is_file()


def test_convert_into_a_missing_folder_rejected(tmp_path, npz_with_state):
    run = run_bert("convert", npz_with_state, tmp_path / "no" / "hf", cwd=tmp_path)
    assert_bert_error(run, "does not exist; create it first")


def test_convert_rejects_a_destination_that_holds_the_source(tmp_path, npz_with_state):
    project = tmp_path / "project"
    project.mkdir()
    source = project / "model.npz"
    source.write_bytes(npz_with_state.read_bytes())
    run = run_bert("convert", "--force", source, project, cwd=tmp_path)
    assert_bert_error(run, "is inside DST", "write to another folder")
    run = run_bert("convert", source, project, cwd=tmp_path)  # not "pass --force"
    assert_bert_error(run, "is inside DST", "write to another folder")
    assert source.read_bytes() == npz_with_state.read_bytes()


def test_convert_into_a_linked_folder_writes_its_target(tmp_path, npz_with_state):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    run = run_bert("convert", npz_with_state, "link", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "replaced" not in run.stdout
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "real" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "tiny.npz"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert_bert_error(run_bert("convert", npz_with_state, "dangling", cwd=tmp_path),
                      "is a broken symbolic link")


def test_convert_into_the_current_folder(tmp_path, npz_with_state):
    # The folder itself is never renamed, so "." (or a mount point) works, and the
    # folder keeps its own mode.
    folder = tmp_path / "folder"
    folder.mkdir()
    folder.chmod(0o750)
    run = run_bert("convert", npz_with_state, ".", cwd=folder)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert folder.stat().st_mode & 0o777 == 0o750
    run = run_bert("convert", "--force", npz_with_state, ".", cwd=folder)
    assert run.returncode == 0, run.stderr
    assert "replaced the 4 entries that were in it" in run.stdout


def test_export_files_follow_the_umask(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    previous = os.umask(0o027)
    try:
        bert.export_hf(model, tokenizer, tmp_path / "hf")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}
    assert set(modes.values()) == {0o640}


def test_export_interrupted_in_the_clean_up_is_complete(tmp_path, monkeypatch):
    # Ctrl-C while the replaced entries are being deleted: the new checkpoint is in place,
    # the clean-up finishes, and export_hf returns normally.
    model, tokenizer = bert.load(TINY_HF)
    target = tmp_path / "hf"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_rmtree, calls = shutil.rmtree, []

    def interrupted_once(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted_once)
    assert bert.export_hf(model, tokenizer, target, replace=True) == 1
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]


def test_convert_interrupted_exits_130(monkeypatch, capsys):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bert, "_convert", interrupted)
    assert bert.main(["convert", "a.npz", "b.npz"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("bert.py: interrupted")
    assert err.count("\n") == 1


def test_convert_onto_its_source_rejected(tmp_path, npz_with_state):
    before = npz_with_state.read_bytes()
    run = run_bert("convert", "--force", npz_with_state, npz_with_state, cwd=tmp_path)
    assert_bert_error(run, "is both SRC and DST")
    assert npz_with_state.read_bytes() == before


def test_convert_onto_existing_file(tmp_path, npz_with_state):
    (tmp_path / "notes").write_text("keep", encoding="utf-8")
    run = run_bert("convert", npz_with_state, "notes", cwd=tmp_path)
    assert_bert_error(run, "notes is an existing file")
    assert (tmp_path / "notes").read_text(encoding="utf-8") == "keep"


def test_convert_bad_arguments_one_line(tmp_path):
    assert_bert_error(run_bert("convert", "only_src.npz", cwd=tmp_path), "dst", "--help")


def test_load_text_file_not_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("the cat sat", encoding="utf-8")
    with pytest.raises(ValueError, match="notes.npz is not a .npz file") as error:
        bert.load(path)
    assert "pickle" not in str(error.value)


def test_load_safetensors_not_npz():
    with pytest.raises(ValueError, match="not a .npz file.*pass its folder"):
        bert.load(TINY_HF / "model.safetensors")


def test_load_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder without config.json"):
        bert.load(tmp_path)


def test_export_files_readable_by_all(tmp_path):
    model, tokenizer = bert.load(TINY_HF)
    bert.export_hf(model, tokenizer, tmp_path / "out")
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes


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


# ==============================================================================
# bert.py: safetensors and config.json
# ==============================================================================


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
    tensors = bert.read_safetensors(one_tensor_file(tmp_path, entry, values.tobytes()))
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
    tensors = bert.read_safetensors(one_tensor_file(tmp_path, entry, bits.tobytes()))
    assert tensors["w"].dtype == np.float32
    assert np.array_equal(tensors["w"], expected)
    assert np.signbit(tensors["w"][6])


def test_read_bf16_nan(tmp_path):
    bits = np.array([0x7FC0], dtype="<u2")
    entry = {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}
    tensors = bert.read_safetensors(one_tensor_file(tmp_path, entry, bits.tobytes()))
    assert np.isnan(tensors["w"][0])


def test_read_skips_metadata(tmp_path):
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]},
    }
    buffer = np.array([5, -6], "<i8").tobytes()
    path = write_bytes(tmp_path, make_safetensors_bytes(header, buffer))
    tensors = bert.read_safetensors(path)
    assert list(tensors) == ["w"]
    assert bert.read_safetensors_metadata(path) == {"format": "pt"}


def test_read_arrays_are_writable_copies(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    }
    buffer = np.arange(4, dtype="<f4").tobytes()
    path = write_bytes(tmp_path, make_safetensors_bytes(header, buffer))
    tensors = bert.read_safetensors(path)
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
    bert.write_safetensors(path, {name: ROUND_TRIP_ARRAYS[name]})
    loaded = bert.read_safetensors(path)[name]
    assert loaded.dtype == ROUND_TRIP_ARRAYS[name].dtype
    assert loaded.shape == ROUND_TRIP_ARRAYS[name].shape
    assert np.array_equal(loaded, ROUND_TRIP_ARRAYS[name])


def test_round_trip_all_together(tmp_path):
    path = tmp_path / "x.safetensors"
    bert.write_safetensors(path, ROUND_TRIP_ARRAYS, metadata={"format": "pt"})
    loaded = bert.read_safetensors(path)
    assert sorted(loaded) == sorted(ROUND_TRIP_ARRAYS)
    for name, array in ROUND_TRIP_ARRAYS.items():
        assert np.array_equal(loaded[name], array), name
    assert bert.read_safetensors_metadata(path) == {"format": "pt"}


def test_write_layout_aligned(tmp_path):
    path = tmp_path / "x.safetensors"
    bert.write_safetensors(path, ROUND_TRIP_ARRAYS)
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
    bert.write_safetensors(path, {"w": np.array([1.0], dtype=">f4")})
    assert path.read_bytes()[-4:] == struct.pack("<f", 1.0)


def test_write_rejects_bool(tmp_path):
    with pytest.raises(ValueError, match="tensor 'mask' has dtype bool"):
        bert.write_safetensors(tmp_path / "x.safetensors", {"mask": np.ones(3, dtype=bool)})


def test_write_rejects_metadata_name(tmp_path):
    with pytest.raises(ValueError, match="invalid tensor name"):
        bert.write_safetensors(tmp_path / "x.safetensors", {"__metadata__": np.ones(3)})


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "x.safetensors"
    bert.write_safetensors(path, {"w": np.ones(3, dtype=np.float32)})
    before = path.read_bytes()
    bad = {"w": np.zeros(3, dtype=np.float32), "z": np.zeros(2, dtype=np.complex64)}
    with pytest.raises(ValueError):
        bert.write_safetensors(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


# ---------------------------------------------------------------- corrupted files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        bert.read_safetensors(tmp_path / "nothere.safetensors")


def test_shorter_than_length_field(tmp_path):
    path = write_bytes(tmp_path, b"\x10\x00\x00")
    with pytest.raises(ValueError, match=r"x\.safetensors: file is 3 bytes"):
        bert.read_safetensors(path)


def test_header_longer_than_file(tmp_path):
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    data = make_safetensors_bytes({"w": entry}, b"\0" * 4, header_length=10_000)
    with pytest.raises(ValueError, match="header length 10000 does not fit"):
        bert.read_safetensors(write_bytes(tmp_path, data))


def test_header_not_json(tmp_path):
    data = struct.pack("<Q", 8) + b"not json" + b"\0" * 8
    with pytest.raises(ValueError, match="header is not valid JSON"):
        bert.read_safetensors(write_bytes(tmp_path, data))


def test_header_not_object(tmp_path):
    data = struct.pack("<Q", 2) + b"[]"
    with pytest.raises(ValueError, match="expected a JSON object"):
        bert.read_safetensors(write_bytes(tmp_path, data))


def test_truncated_data(tmp_path):
    source = TINY_HF / "model.safetensors"
    data = source.read_bytes()
    path = write_bytes(tmp_path, data[: len(data) // 2])
    with pytest.raises(ValueError, match="out of range.*truncated"):
        bert.read_safetensors(path)


def test_offsets_out_of_range(tmp_path):
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}
    with pytest.raises(ValueError, match=r"tensor 'w' data_offsets \[4, 12\] are out of range"):
        bert.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 8))


def test_overlapping_offsets(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = write_bytes(tmp_path, make_safetensors_bytes(header, b"\0" * 12))
    with pytest.raises(ValueError, match="tensor 'b' .* overlap tensor 'a'"):
        bert.read_safetensors(path)


def test_size_disagrees_with_shape(tmp_path):
    entry = {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}
    with pytest.raises(ValueError, match=r"tensor 'w' has 8 bytes, but shape \(3,\)"):
        bert.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 8))


def test_unsupported_dtype(tmp_path):
    entry = {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}
    with pytest.raises(ValueError, match="tensor 'w' has unsupported dtype 'F8_E4M3'"):
        bert.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 4))


def test_negative_shape(tmp_path):
    entry = {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}
    with pytest.raises(ValueError, match="tensor 'w' has invalid shape"):
        bert.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 4))


def test_entry_without_offsets(tmp_path):
    entry = {"dtype": "F32", "shape": [1]}
    with pytest.raises(ValueError, match="tensor 'w' header entry .* needs"):
        bert.read_safetensors(one_tensor_file(tmp_path, entry, b"\0" * 4))


# ---------------------------------------------------------------- committed checkpoint


def test_tiny_hf_shapes_follow_sizes():
    # The pairwise-distinct sizes of the fixture make each axis identifiable.
    tensors = bert.read_safetensors(TINY_HF / "model.safetensors")
    assert tensors["bert.embeddings.word_embeddings.weight"].shape == (120, 12)
    assert tensors["bert.embeddings.position_embeddings.weight"].shape == (32, 12)
    assert tensors["bert.encoder.layer.1.intermediate.dense.weight"].shape == (37, 12)
    assert tensors["bert.encoder.layer.1.output.dense.weight"].shape == (12, 37)
    assert tensors["cls.seq_relationship.weight"].shape == (2, 12)


def test_tiny_hf_encoder_has_no_prefix():
    tensors = bert.read_safetensors(TINY_HF_ENCODER / "model.safetensors")
    assert "embeddings.word_embeddings.weight" in tensors
    assert not any(name.startswith(("bert.", "cls.")) for name in tensors)


def write_config(tmp_path: Path, **changes) -> Path:
    config = json.loads((TINY_HF / "config.json").read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_config_reads_directory_and_file():
    assert bert.read_hf_config(TINY_HF)["num_attention_heads"] == 3
    assert bert.read_hf_config(TINY_HF / "config.json")["intermediate_size"] == 37


@pytest.mark.parametrize("model_type", ["roberta", "gpt2"])
def test_config_rejects_other_model(tmp_path, model_type):
    path = write_config(tmp_path, model_type=model_type)
    with pytest.raises(ValueError, match=f"model_type is '{model_type}', but only BERT"):
        bert.read_hf_config(path)


def test_config_without_model_type(tmp_path):
    config = json.loads((TINY_HF / "config.json").read_text())
    del config["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type is None"):
        bert.read_hf_config(tmp_path)


def test_config_missing_size(tmp_path):
    config = json.loads((TINY_HF / "config.json").read_text())
    del config["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing field.*hidden_size"):
        bert.read_hf_config(tmp_path)


def test_config_relative_positions(tmp_path):
    path = write_config(tmp_path, position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="position_embedding_type is 'relative_key'"):
        bert.read_hf_config(path)


def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{model_type: bert")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        bert.read_hf_config(tmp_path)


def test_config_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        bert.read_hf_config(tmp_path)


# ---------------------------------------------------------------- names and layout


def test_names_get_bert_prefix():
    tensors = {
        "embeddings.word_embeddings.weight": np.zeros((3, 2)),
        "pooler.dense.bias": np.zeros(2),
    }
    renamed = bert.normalize_hf_names(tensors, "x")
    expected = ["bert.embeddings.word_embeddings.weight", "bert.pooler.dense.bias"]
    assert sorted(renamed) == expected


def test_names_skip_buffers():
    tensors = {
        "embeddings.position_ids": np.arange(4)[None],
        "bert.embeddings.token_type_ids": np.zeros((1, 4), dtype=np.int64),
        "bert.pooler.dense.bias": np.zeros(2),
    }
    assert list(bert.normalize_hf_names(tensors, "x")) == ["bert.pooler.dense.bias"]


def test_names_gamma_beta():
    tensors = {
        "bert.embeddings.LayerNorm.gamma": np.ones(2),
        "bert.embeddings.LayerNorm.beta": np.zeros(2),
    }
    renamed = bert.normalize_hf_names(tensors, "x")
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
    renamed = bert.normalize_hf_names(tensors, "x")
    assert sorted(renamed) == ["bert.embeddings.word_embeddings.weight", "cls.predictions.bias"]


def test_names_untied_decoder_rejected():
    tensors = {
        "bert.embeddings.word_embeddings.weight": np.zeros((3, 2)),
        "cls.predictions.decoder.weight": np.ones((3, 2)),
    }
    with pytest.raises(ValueError, match="untied MLM decoder"):
        bert.normalize_hf_names(tensors, "x")


def test_names_duplicate_prefix_rejected():
    tensors = {"pooler.dense.bias": np.zeros(2), "bert.pooler.dense.bias": np.zeros(2)}
    with pytest.raises(ValueError, match="appears twice"):
        bert.normalize_hf_names(tensors, "x")


# ==============================================================================
# data.py
# ==============================================================================


VOCAB = ROOT / "testdata" / "bert-base-uncased-vocab.txt"
CORPUS = ROOT / "wiki-vital-en.txt.gz"


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def data_tokenizer():
    return Tokenizer.from_file(str(VOCAB))


@pytest.fixture(scope="module")
def corpus():
    return read_documents(CORPUS)


@pytest.fixture(scope="module")
def sample(corpus, data_tokenizer):
    # About 80,000 tokens in pairs of at most 64: some 2,000 instances and 12,000
    # masked tokens, enough for the 15% and 80/10/10 shares to within a few tenths.
    return PretrainingData(corpus[:800], data_tokenizer, max_seq_length=64, seed=3)


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


def test_dataset_errors(data_tokenizer):
    with pytest.raises(ValueError, match="no usable documents"):
        PretrainingData([["\x00\x01"], ["\x02"]], data_tokenizer)
    with pytest.raises(ValueError, match="max_seq_length=4"):
        PretrainingData([["Some words here."]], data_tokenizer, max_seq_length=4)
    with pytest.raises(ValueError, match="masked_lm_prob"):
        PretrainingData([["Some words here."]], data_tokenizer, masked_lm_prob=0)
    dataset = PretrainingData([["Some words here."], ["More words."]], data_tokenizer)
    with pytest.raises(ValueError, match="batch_size=0"):
        dataset.batches(0, 0)
    with pytest.raises(ValueError, match="epoch=-1"):
        dataset.batches(-1, 8)
    with pytest.raises(ValueError, match="seed=-2"):
        PretrainingData([["Some words here."]], data_tokenizer, seed=-2)


def eligible_count(instances, data_tokenizer):
    special = np.isin(instances.original_ids, [data_tokenizer.cls_token_id, data_tokenizer.sep_token_id])
    return int((~special).sum())


def test_masked_share(sample, data_tokenizer):
    instances = sample.instances(0)
    share = len(instances.masked_positions) / eligible_count(instances, data_tokenizer)
    assert abs(share - 0.15) < 0.01


def test_mask_replacement_split(sample, data_tokenizer):
    instances = sample.instances(0)
    shown = instances.input_ids[instances.masked_positions]
    labels = instances.masked_labels
    is_mask = shown == data_tokenizer.mask_token_id
    unchanged = shown == labels
    # A random replacement can draw the original token; with 30,000 ids that is rare.
    random_token = ~is_mask & ~unchanged
    assert len(shown) > 10_000
    assert abs(is_mask.mean() - 0.8) < 0.02
    assert abs(unchanged.mean() - 0.1) < 0.02
    assert abs(random_token.mean() - 0.1) < 0.02


def test_no_special_masked_or_inserted(sample, data_tokenizer):
    instances = sample.instances(0)
    positions = instances.masked_positions
    never = [data_tokenizer.cls_token_id, data_tokenizer.sep_token_id, data_tokenizer.pad_token_id]
    assert not np.isin(instances.original_ids[positions], never).any()
    shown = instances.input_ids[positions]
    replaced = shown[(shown != data_tokenizer.mask_token_id) & (shown != instances.masked_labels)]
    assert not np.isin(replaced, list(data_tokenizer.special_ids)).any()
    assert not any(data_tokenizer.ids_to_tokens[i].startswith("[unused") for i in replaced)
    untouched = np.ones(len(instances.input_ids), dtype=bool)
    untouched[positions] = False
    assert np.array_equal(instances.input_ids[untouched], instances.original_ids[untouched])


def test_instance_layout(sample, data_tokenizer):
    instances = sample.instances(0)
    offsets, lengths, a_lengths = instances.offsets, instances.lengths, instances.a_lengths
    ids, types = instances.original_ids, instances.token_type_ids
    b_lengths = lengths - a_lengths - 3
    assert lengths.max() <= 64
    assert a_lengths.min() >= 1
    assert b_lengths.min() >= 1
    assert (ids[offsets] == data_tokenizer.cls_token_id).all()
    assert (ids[offsets + 1 + a_lengths] == data_tokenizer.sep_token_id).all()
    assert (ids[offsets + lengths - 1] == data_tokenizer.sep_token_id).all()
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


def test_short_seq_prob_shortens(corpus, data_tokenizer):
    lengths = {}
    for prob in (0.0, 1.0):
        dataset = PretrainingData(corpus[:200], data_tokenizer, short_seq_prob=prob)
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


def test_whole_word_mask(corpus, data_tokenizer):
    dataset = PretrainingData(corpus[:300], data_tokenizer, whole_word_mask=True, seed=1)
    instances = dataset.instances(0)
    is_masked = np.zeros(len(instances.original_ids), dtype=bool)
    is_masked[instances.masked_positions] = True
    continuation = np.array([t.startswith("##") for t in data_tokenizer.ids_to_tokens])
    is_piece = continuation[instances.original_ids]
    # A "##" piece and the token before it are masked together (or both left), unless
    # truncation cut the word and [CLS] or [SEP] comes before the piece.
    special = np.isin(instances.original_ids, [data_tokenizer.cls_token_id, data_tokenizer.sep_token_id])
    inside_word = np.flatnonzero(is_piece[1:] & ~special[:-1]) + 1
    assert inside_word.size > 1000
    assert (is_masked[inside_word] == is_masked[inside_word - 1]).all()
    share = is_masked.sum() / eligible_count(instances, data_tokenizer)
    assert abs(share - 0.15) < 0.01


def test_same_seed_same_batches(corpus, data_tokenizer):
    first = PretrainingData(corpus[:150], data_tokenizer, seed=5).batches(1, 16)
    second = PretrainingData(corpus[:150], data_tokenizer, seed=5).batches(1, 16)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert np.array_equal(a.input_ids, b.input_ids)
        assert np.array_equal(a.mlm_positions, b.mlm_positions)
        assert np.array_equal(a.mlm_labels, b.mlm_labels)
        assert np.array_equal(a.nsp_labels, b.nsp_labels)


def test_epochs_and_seeds_differ(corpus, data_tokenizer):
    dataset = PretrainingData(corpus[:150], data_tokenizer, seed=5)
    other_seed = PretrainingData(corpus[:150], data_tokenizer, seed=6)
    first = dataset.instances(0)
    assert not np.array_equal(first.input_ids, dataset.instances(1).input_ids)
    assert not np.array_equal(first.input_ids, other_seed.instances(0).input_ids)
    # The cache keeps two epochs; epoch 0 regenerated after eviction is unchanged.
    dataset.instances(2)
    assert np.array_equal(first.input_ids, dataset.instances(0).input_ids)


def test_batches_padding_and_targets(sample, data_tokenizer):
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
        assert (batch.input_ids[batch.attention_mask == 0] == data_tokenizer.pad_token_id).all()
        assert (batch.token_type_ids[batch.attention_mask == 0] == 0).all()
        assert batch.num_tokens == real.sum()
        assert (batch.input_ids[:, 0] == data_tokenizer.cls_token_id).all()
        flat_mask = batch.attention_mask.reshape(-1)
        assert (flat_mask[batch.mlm_positions] == 1).all()
        assert (np.diff(batch.mlm_positions) > 0).all()
    # The MLM labels put back into the inputs give text without [MASK] at the targets.
    batch = batches[0]
    restored = batch.input_ids.reshape(-1).copy()
    restored[batch.mlm_positions] = batch.mlm_labels
    assert (restored != data_tokenizer.mask_token_id).all()


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


def test_demo_bad_flag_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        data.main(["-n", "-2"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error == "data.py: error: -n -2 is invalid: pass 0 or more instances to print " \
                    "(see --help)\n"


def read_documents_too_early(*args, **kwargs):
    raise AssertionError("the corpus was read before the flags were checked")


@pytest.mark.parametrize("flags, message", [
    (["--epoch", "-1"], "--epoch -1 is invalid: pass 0 or more"),
    (["--seed", "-1"], "--seed -1 is invalid: pass 0 or more"),
    (["--max-seq-len", "4"],
     "--max-seq-len 4 is too small: a pair needs [CLS] A [SEP] B [SEP], so pass at least 5"),
    (["--vocab-size", "5"],
     "--vocab-size 5 is too small: pass 6 or more (the 5 special tokens plus at least one "
     "character), or a vocabulary file with --vocab"),
])
def test_demo_flags_checked_first(flags, message, monkeypatch, capsys):
    monkeypatch.setattr(data, "read_documents", read_documents_too_early)
    with pytest.raises(SystemExit) as exit_info:
        data.main(flags)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error == f"data.py: error: {message} (see --help)\n"


def test_demo_missing_vocab_checked_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "read_documents", read_documents_too_early)
    missing = tmp_path / "none.txt"
    code = data.main(["--vocab", str(missing)])
    error = capsys.readouterr().err
    assert code == 2
    assert error == (f"data.py: error: --vocab {missing}: vocabulary file not found: {missing}; "
                     "pass a BERT vocab.txt (one token per line), or drop --vocab\n")


def test_demo_vocab_below_alphabet_names_flag(tmp_path, capsys):
    # The alphabet of "ab cd" is a, c, ##b, ##d: 4 entries after the 5 special tokens.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ab ab cd\n\ncd ab\n", encoding="utf-8")
    code = data.main(["--data", str(corpus), "--vocab-size", "8"])
    error = capsys.readouterr().err
    assert code == 2
    assert error == "data.py: error: --vocab-size 8 is smaller than the 5 special tokens " \
                    "plus the 4-entry alphabet of this corpus: pass --vocab-size 9 or more, " \
                    "or a vocabulary file with --vocab\n"


def test_demo_interrupted_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tokenizer, "train_vocab", interrupt)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A cat sat. It slept.\n\nThe dog ran. It barked loudly.\n", encoding="utf-8")
    code = run_main_interrupted(data.main, ["--data", str(corpus), "-n", "1"])
    assert code == 130
    assert capsys.readouterr().err == "data.py: interrupted\n"


def test_demo_trains_train_py_vocab_size(tmp_path, capsys, monkeypatch):
    requested = []
    real_train_vocab = tokenizer.train_vocab

    def recording_train_vocab(texts, vocab_size, *args, **kwargs):
        requested.append(vocab_size)
        return real_train_vocab(texts, vocab_size, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "train_vocab", recording_train_vocab)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A cat sat. It slept.\n\nThe dog ran. It barked loudly.\n", encoding="utf-8")
    code = data.main(["--data", str(corpus), "-n", "1"])
    output = capsys.readouterr().out
    assert code == 0
    assert requested == [8192]
    assert "of the 8192 tokens of --vocab-size" in output


def test_typed_special_tokens_dropped(data_tokenizer):
    documents = [["A [SEP] typed [CLS] here [MASK] too."], ["Another [PAD] document."]]
    instances = PretrainingData(documents, data_tokenizer).instances(0)
    typed = np.isin(instances.original_ids, [data_tokenizer.mask_token_id, data_tokenizer.pad_token_id])
    assert not typed.any()
    assert (instances.original_ids == data_tokenizer.sep_token_id).sum() == 2 * len(instances)


def test_single_document_pairs(data_tokenizer):
    documents = [["One sentence only here.", "And a second one.", "Then a third."]]
    instances = PretrainingData(documents, data_tokenizer).instances(0)
    assert len(instances) >= 1
    assert (instances.nsp_labels == 0).all()


def test_random_b_other_document(corpus, data_tokenizer):
    # With three documents, a random B drawn from all of them would hit A's own
    # document a third of the time.
    documents = [sum(corpus[i : i + 20], []) for i in (0, 20, 40)]
    dataset = PretrainingData(documents, data_tokenizer, max_seq_length=32)
    instances = dataset.instances(0)
    is_random = instances.nsp_labels == 1
    assert is_random.sum() > 50
    assert (instances.b_documents[is_random] != instances.a_documents[is_random]).all()


# ==============================================================================
# train.py
# ==============================================================================


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
def tiny_corpus(tmp_path):
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


def test_train_writes_model_and_checkpoint(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--epochs", "2", "--out", "m.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    assert "parameters" in run.stdout
    assert run.stdout.count("validation at step") == 2
    model, tokenizer, metadata, extra = bert.load_npz(tmp_path / "m.npz")
    assert isinstance(model, BertForPreTraining)
    assert metadata["steps"] > 0
    assert "mlm_accuracy" in metadata["validation"]
    assert extra == {}
    # Paths in the model's metadata are relative to the folder train.py ran in; the
    # checkpoint keeps them absolute, so that --resume works from anywhere.
    assert metadata["settings"]["out"] == "m.npz"
    assert metadata["settings"]["data"] == [tiny_corpus.name]
    _, _, state, moments = bert.load_npz(tmp_path / "m.ckpt.npz")
    assert Path(state["args"]["out"]).is_absolute()
    assert state["optimizer_step"] == metadata["steps"]
    assert any(k.startswith("adam.m.") for k in moments)


def test_resume_matches_uninterrupted_run(tmp_path, tiny_corpus):
    flags = ["--data", str(tiny_corpus), "--epochs", "3", *TINY_FLAGS]
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


def test_eval_only_json(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--epochs", "1", "--out", "m.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    args = ["--eval-only", "--model", "m.npz", "--data", str(tiny_corpus), "--json",
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
def test_usage_errors(tmp_path, tiny_corpus, flags, message):
    (tmp_path / "m.npz").write_bytes(b"keep")
    base = ["--data", str(tiny_corpus), "--out", "m.npz", "--num-layers", "1", "--hidden-size",
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


def test_resume_with_other_config_rejected(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--epochs", "1", "--out", "m.npz", *TINY_FLAGS],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    run = run_train(["--resume", "m.ckpt.npz", "--out", "m.npz", *TINY_FLAGS,
                     "--hidden-size", "32"], tmp_path)
    assert run.returncode == 2
    assert "another config: hidden_size 32 (checkpoint: 24)" in run.stderr


def test_resume_keeps_paths_and_extends(tmp_path, tiny_corpus):
    (tmp_path / "runs").mkdir()
    flags = ["--data", str(tiny_corpus), "--epochs", "1", "--out", "runs/m.npz", *TINY_FLAGS]
    assert run_train(flags, tmp_path).returncode == 0
    again = run_train(["--resume", "runs/m.ckpt.npz"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    longer = run_train(["--resume", "runs/m.ckpt.npz", "--epochs", "2"], tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "is not the checkpoint path" not in longer.stdout
    assert "validation at step 3 (end of epoch 2)" in longer.stdout
    assert "epoch 2/2 | step 3/3" in longer.stdout
    shorter = run_train(["--resume", "runs/m.ckpt.npz", "--max-steps", "1"], tmp_path)
    assert shorter.returncode == 2
    assert "more than the 1 planned; pass --max-steps above" in shorter.stderr
    _, _, metadata, _ = bert.load_npz(tmp_path / "runs" / "m.npz")
    assert metadata["epochs_completed"] == 2
    assert not (tmp_path / "bert_model.npz").exists()


def stop_run_and_copy_checkpoint(tmp_path, tiny_corpus):
    """Stop a run writing to tmp_path/runs after step 1, and copy its checkpoint to
    tmp_path/copy.ckpt.npz."""
    (tmp_path / "runs").mkdir()
    flags = ["--data", str(tiny_corpus), "--max-steps", "2", "--stop-at", "1",
             "--out", "runs/m.npz", *TINY_FLAGS]
    assert run_train(flags, tmp_path).returncode == 0
    shutil.copy(tmp_path / "runs" / "m.ckpt.npz", tmp_path / "copy.ckpt.npz")


def test_resume_copy_notes_written_paths(tmp_path, tiny_corpus):
    stop_run_and_copy_checkpoint(tmp_path, tiny_corpus)
    run = run_train(["--resume", "copy.ckpt.npz"], tmp_path)
    assert run.returncode == 0, run.stderr
    note = next(line for line in run.stdout.splitlines() if "copy.ckpt.npz is not" in line)
    assert f"writes the model to {tmp_path / 'runs' / 'm.npz'} and" in note
    assert f"checkpoints to {tmp_path / 'runs' / 'm.ckpt.npz'}, replacing" in note
    assert "pass --out and --checkpoint" in note
    assert bert.load_npz(tmp_path / "runs" / "m.npz")[2]["steps"] == 2
    elsewhere = run_train(["--resume", "copy.ckpt.npz", "--out", "copy.npz",
                           "--checkpoint", "copy.ckpt.npz", "--max-steps", "3"], tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "is not the checkpoint path" not in elsewhere.stdout
    assert bert.load_npz(tmp_path / "copy.npz")[2]["steps"] == 3
    # --out alone also directs the checkpoints (beside it): no note either.
    moved = run_train(["--resume", "copy.ckpt.npz", "--out", "b.npz", "--max-steps", "4"],
                      tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert "is not the checkpoint path" not in moved.stdout
    assert bert.load_npz(tmp_path / "b.npz")[2]["steps"] == 4


def test_resume_checks_recorded_folders_first(tmp_path, tiny_corpus):
    # A checkpoint copied away from a folder that is then deleted: the run stops before
    # training, naming the recorded path and the flag that changes it.
    stop_run_and_copy_checkpoint(tmp_path, tiny_corpus)
    shutil.rmtree(tmp_path / "runs")
    run = run_train(["--resume", "copy.ckpt.npz"], tmp_path)
    assert run.returncode == 2
    assert ("does not exist; create it first (the path that --resume copy.ckpt.npz records; "
            "pass --out to write elsewhere)") in run.stderr
    assert "step 2" not in run.stdout


def test_resume_after_the_corpus_moved(tmp_path, tiny_corpus):
    flags = ["--data", str(tiny_corpus), "--max-steps", "2", "--stop-at", "1",
             "--out", "m.npz", *TINY_FLAGS]
    run = run_train(flags, tmp_path)
    assert run.returncode == 0, run.stderr
    # The hint names train.py as it can be run from here: by its absolute path.
    assert f"resume with python {ROOT / 'train.py'} --resume" in run.stdout
    moved = tmp_path / "moved.txt"
    tiny_corpus.rename(moved)
    run = run_train(["--resume", "m.ckpt.npz"], tmp_path)
    assert run.returncode == 2
    assert (f"its run's corpus {tiny_corpus} no longer exists; pass --data with its new "
            "location") in run.stderr
    run = run_train(["--resume", "m.ckpt.npz", "--data", str(moved)], tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"note: --data replaces the checkpoint's {tiny_corpus}" in run.stdout
    assert bert.load_npz(tmp_path / "m.npz")[2]["steps"] == 2


def test_fresh_run_notes_an_existing_checkpoint(tmp_path, tiny_corpus):
    (tmp_path / "m.ckpt.npz").write_bytes(b"an earlier run")
    run = run_train(["--data", str(tiny_corpus), "--max-steps", "1", "--out", "m.npz",
                     *TINY_FLAGS], tmp_path)
    assert run.returncode == 0, run.stderr
    assert (f"note: {tmp_path / 'm.ckpt.npz'} exists and is replaced by this run's first "
            f"checkpoint; to continue the run it holds instead, pass --resume") in run.stdout


def test_eval_only_notes_positions_beyond_training(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--max-steps", "1", "--out", "m.npz",
                     *TINY_FLAGS, "--max-seq-len", "16"], tmp_path)
    assert run.returncode == 0, run.stderr
    run = run_train(["--eval-only", "--model", "m.npz", "--data", str(tiny_corpus),
                     "--max-seq-len", "32"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert ("note: --max-seq-len 32 is longer than the 16 tokens the model was trained "
            "on") in run.stderr
    settings = bert.load_npz(tmp_path / "m.npz")[2]["settings"]
    assert "model" not in settings  # the --eval-only default plays no part in training


def test_resume_schedule_note_only_when_replanned(tmp_path, tiny_corpus):
    flags = ["--data", str(tiny_corpus), "--max-steps", "2", "--out", "m.npz", *TINY_FLAGS]
    assert run_train(flags, tmp_path).returncode == 0
    # One epoch has fewer steps than the checkpoint completed: nothing is re-planned.
    shorter = run_train(["--resume", "m.ckpt.npz", "--epochs", "1"], tmp_path)
    assert "re-planned" not in shorter.stdout
    # --epochs equal to the checkpoint's default 3 still replaces its --max-steps plan.
    longer = run_train(["--resume", "m.ckpt.npz", "--epochs", "3"], tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "note: --epochs 3 changes the run from the checkpoint's 2 steps to" in longer.stdout
    assert bert.load_npz(tmp_path / "m.npz")[2]["steps"] > 2


def test_grad_accum_beyond_epoch_averages(tmp_path, tiny_corpus):
    # Batches of 2 pairs give 2 batches in the first epoch, so --grad-accum 5 makes one
    # step of the same 2 batches as --grad-accum 2.
    flags = ["--data", str(tiny_corpus), "--max-steps", "1", *TINY_FLAGS,
             "--batch-size", "2", "--log-every", "1"]
    runs = {}
    for accum in ("2", "5"):
        run = run_train([*flags, "--grad-accum", accum, "--out", f"a{accum}.npz"], tmp_path)
        assert run.returncode == 0, run.stderr
        assert "2 batches per epoch" in run.stdout
        runs[accum] = run
    loss = {accum: re.search(r"step 1/1 \| (loss .*?\)) \|", run.stdout).group(1)
            for accum, run in runs.items()}
    assert loss["5"] == loss["2"]
    full, _ = bert.load(tmp_path / "a2.npz")
    partial, _ = bert.load(tmp_path / "a5.npz")
    for (name, a), (_, b) in zip(full.named_parameters(), partial.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_stop_at_out_of_range_rejected(tmp_path, tiny_corpus):
    flags = ["--data", str(tiny_corpus), "--out", "m.npz", *TINY_FLAGS]
    run = run_train([*flags, "--epochs", "1", "--stop-at", "50"], tmp_path)
    assert run.returncode == 2
    assert "--stop-at 50 is beyond the" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.npz").exists()
    assert not (tmp_path / "m.ckpt.npz").exists()

    assert run_train([*flags, "--max-steps", "4", "--stop-at", "2"], tmp_path).returncode == 0
    checkpoint = (tmp_path / "m.ckpt.npz").read_bytes()
    run = run_train(["--resume", "m.ckpt.npz", "--max-steps", "20", "--stop-at", "2"],
                    tmp_path)
    assert run.returncode == 2
    assert ("--stop-at 2 is not after step 2, where --resume m.ckpt.npz stopped; pass a "
            "step from 3 to 20" in run.stderr)
    run = run_train(["--resume", "m.ckpt.npz", "--stop-at", "9"], tmp_path)
    assert run.returncode == 2
    assert ("--stop-at 9 is beyond the 4 steps this run plans; pass a step from 3 to 4"
            in run.stderr)
    assert (tmp_path / "m.ckpt.npz").read_bytes() == checkpoint


def test_stop_at_last_step_writes_model(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--max-steps", "2", "--stop-at", "2",
                     "--out", "m.npz", *TINY_FLAGS], tmp_path)
    assert run.returncode == 0, run.stderr
    assert bert.load_npz(tmp_path / "m.npz")[2]["steps"] == 2


def test_existing_out_note_when_the_run_stops_first(tmp_path, tiny_corpus):
    (tmp_path / "keep.npz").write_bytes(b"old")
    run = run_train(["--data", str(tiny_corpus), "--out", "keep.npz", *TINY_FLAGS,
                     "--batch-size", "2", "--max-steps", "4", "--stop-at", "1"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert ("keep.npz exists; this run stops at step 1 and leaves it, but a --resume of this "
            "run replaces it") in run.stdout
    assert (tmp_path / "keep.npz").read_bytes() == b"old"


@pytest.mark.parametrize("flags", [["--vocab-size", "0"], ["--max-steps", "3", "--stop-at", "5"]])
def test_eval_only_rejects_flags_before_values(tmp_path, flags):
    run = run_train(["--eval-only", *flags], tmp_path)
    assert run.returncode == 2
    assert "only to training; drop" in run.stderr


def test_warmup_as_long_as_the_run_is_noted(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--out", "m.npz", *TINY_FLAGS,
                     "--max-steps", "2", "--warmup", "2"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert ("note: the warm-up of 2 steps is not shorter than the run's 2 steps, so the "
            "learning rate never reaches --lr") in run.stdout
    run = run_train(["--data", str(tiny_corpus), "--out", "n.npz", *TINY_FLAGS,
                     "--max-steps", "2", "--warmup", "1"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "warm-up of" not in run.stdout


@pytest.mark.parametrize("flags, note", [
    (["--max-steps", "1"], "m.npz exists and is replaced after step 1, at the end of the run"),
    (["--epochs", "2", "--batch-size", "2"],
     "m.npz exists and is replaced after step 2, at the end of the first epoch"),
])
def test_existing_out_note_names_first_write(tmp_path, tiny_corpus, flags, note):
    (tmp_path / "m.npz").write_bytes(b"old")
    run = run_train(["--data", str(tiny_corpus), "--out", "m.npz", *TINY_FLAGS, *flags],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"{note}; to keep it, choose another --out path" in run.stdout


def test_shipped_model_reproduces_its_evaluation(tmp_path):
    _, _, metadata, _ = bert.load_npz(ROOT / "bert_model.npz")
    run = run_train(["--eval-only", "--model", str(ROOT / "bert_model.npz"), "--json"],
                    tmp_path)
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    for key in ("mlm_accuracy", "mlm_top5_accuracy", "nsp_accuracy", "instances"):
        assert metrics[key] == metadata["evaluation"][key], key
    # The BLAS thread count changes float32 rounding in the loss, not the argmax.
    assert metrics["perplexity"] == pytest.approx(metadata["evaluation"]["perplexity"], rel=1e-5)


def test_shipped_model_file():
    path = ROOT / "bert_model.npz"
    assert path.stat().st_size <= 20 * 2**20
    model, tokenizer, metadata, extra = bert.load_npz(path)
    assert isinstance(model, BertForPreTraining)
    assert extra == {}
    assert metadata["command"].startswith("python train.py")
    assert metadata["steps"] > 0
    assert len(tokenizer) == model.config.vocab_size


def test_eval_only_rejects_training_flags(tmp_path):
    run = run_train(["--eval-only", "--lr", "0.5", "--epochs", "7", "--out",
                     "/nonexistent/dir/x.npz", "--float16"], tmp_path)
    assert run.returncode == 2
    assert ("--epochs, --float16, --lr, --out apply only to training; drop them"
            in run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1


def test_eval_only_default_model_beside_script(tmp_path, tiny_corpus):
    # tmp_path contains no bert_model.npz, so this evaluates the one beside train.py.
    run = run_train(["--eval-only", "--data", str(tiny_corpus), "--eval-split", "all",
                     "--json"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["instances"] > 0


def test_help_states_size_and_model_defaults():
    help_text = " ".join(train.build_parser().format_help().split())
    assert ("attention heads (default: about one per 64 of the chosen hidden size: the "
            "largest count up to hidden size // 64 that divides it, at least 1)") in help_text
    assert "feed-forward size (default: 4 x the chosen hidden size)" in help_text
    assert "the model to evaluate (default: bert_model.npz beside train.py)" in help_text


def test_eval_flags_need_eval_only(tmp_path):
    run = run_train(["--model", "x.npz", "--json"], tmp_path)
    assert run.returncode == 2
    assert "--json, --model need --eval-only" in run.stderr
    assert "pass --resume CHECKPOINT instead of --model" in run.stderr


def test_vocab_size_below_alphabet_names_flag(tmp_path, tiny_corpus):
    run = run_train(["--data", str(tiny_corpus), "--vocab-size", "3"], tmp_path)
    assert run.returncode == 2
    assert "--vocab-size 3 is smaller than the special tokens plus the" in run.stderr
    assert "limit_alphabet" not in run.stderr


@pytest.mark.parametrize("flags, message", [
    (["--model-size", "tiny", "--num-heads", "3"],
     "hidden_size 128 is not divisible by num_attention_heads 3; pass a --num-heads"),
    (["--num-layers", "0"], "num_hidden_layers must be a positive integer, got 0; check"),
    (["--out", "m.npz", "--checkpoint", "m.npz"], "--checkpoint m.npz is also the --out file"),
    (["--seed", "-1"], "--seed -1 is invalid; pass a whole number of 0 or more"),
    (["--warmup", "2.5"], "--warmup 2.5 is invalid; pass a whole number of steps"),
    (["--vocab", "missing.txt"], "--vocab missing.txt: missing.txt not found"),
    (["--max-steps", "2", "--stop-at", "5"], "--stop-at 5 is beyond --max-steps 2"),
    (["--epochs", "2", "--max-steps", "5"], "--epochs 2 and --max-steps 5 both set the length"),
])
def test_bad_flags_fail_before_vocabulary(tmp_path, tiny_corpus, flags, message):
    run = run_train(["--data", str(tiny_corpus), *flags], tmp_path)
    assert run.returncode == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "training a" not in run.stdout  # no vocabulary was trained first


@pytest.mark.parametrize("flags, message", [
    (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["--lr", "inf"], "--lr inf is invalid"),
    (["--warmup", "nan"], "--warmup nan is invalid"),
])
def test_bad_flag_values_one_line(tmp_path, flags, message):
    run = run_train(flags, tmp_path)
    assert run.returncode == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


# ==============================================================================
# infer.py
# ==============================================================================


INFER = ROOT / "infer.py"
TINY_HF = ROOT / "testdata" / "tiny_hf"
TINY_HF_ENCODER = ROOT / "testdata" / "tiny_hf_encoder"
REFERENCE = ROOT / "testdata" / "fill_mask_reference.json"

# Models the generic tests run on. To add the shipped model, append ROOT / "bert_model.npz".
# The .npz path is covered by test_npz_matches_directory on the tiny model.
MODELS = [TINY_HF, ROOT / "bert_model.npz"]

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


def test_infer_threads_follow_the_environment(monkeypatch, tiny_npz, capsys):
    # Imported as a module, infer.py leaves BLAS alone and gives autograd as many threads
    # as OPENBLAS_NUM_THREADS requests (as a command it also limits BLAS to one thread).
    assert infer.THREAD_REQUEST is None
    previous = ag.get_num_threads()
    try:
        for count in ("1", "2"):
            monkeypatch.setenv("OPENBLAS_NUM_THREADS", count)
            assert infer.main(["--model", str(tiny_npz), "the cat [MASK]"]) == 0
            assert ag.get_num_threads() == ag.thread_count()
    finally:
        ag.set_num_threads(previous)
    assert "[MASK]" in capsys.readouterr().out


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


def test_window_is_the_trained_length(tmp_path):
    # A .npz whose metadata records training on 10 tokens is read 10 tokens at a time,
    # though its config has 32 positions.
    path = tmp_path / "short.npz"
    model, tokenizer = bert.load(TINY_HF)
    bert.save(model, tokenizer, path, metadata={"settings": {"max_seq_len": 10}})
    result = run_infer("--json", "--embed", "--model", path, " ".join(WORDS[:20]))
    assert result.returncode == 0, result.stderr
    assert "20 tokens, more than the model's 8" in result.stderr
    window = infer_json("--embed", "--model", TINY_HF, " ".join(WORDS[:8]))
    assert np.allclose(json.loads(result.stdout), window, atol=1e-6)


@pytest.mark.parametrize("metadata, expected", [
    ({"settings": {"max_seq_len": 128}}, 128),
    ({"settings": {"max_seq_len": 4096}}, 512),  # never more than the positions
    ({"settings": {"max_seq_len": "128"}}, 512),
    ({"max_seq_len": 100, "settings": {"max_seq_len": 128}}, 100),  # from a folder's config
    ({"settings": None}, 512),
    ({}, 512),
    (None, 512),
])
def test_trained_length(metadata, expected):
    config = BertConfig.from_preset("tiny", vocab_size=100)
    assert bert.trained_length(config, metadata) == expected


def test_shipped_model_reads_its_trained_length():
    _, _, metadata, _ = bert.load_npz(ROOT / "bert_model.npz")
    assert metadata["settings"]["max_seq_len"] == 128


def test_ids_beyond_a_short_vocabulary_are_never_predicted(tmp_path):
    # A vocab.txt shorter than the embedding table: the rows without a token are left out
    # of the guesses, however many are asked for.
    model_dir = tmp_path / "short_vocab"
    model_dir.mkdir()
    for file in TINY_HF.iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    tokens = (TINY_HF / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (model_dir / "vocab.txt").write_text("\n".join(tokens[:100]) + "\n", encoding="utf-8")
    config = json.loads((TINY_HF / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] > 100
    guesses = infer_json("--top-k", "500", "--model", model_dir, "the [MASK] sat")[0][0]
    assert len(guesses) == 100
    assert max(g["token"] for g in guesses) == 99
    full = {g["token"]: g["score"] for g in
            infer_json("--top-k", "500", "--model", TINY_HF, "the [MASK] sat")[0][0]}
    for guess in guesses:  # the same probabilities as with every row named
        assert abs(guess["score"] - full[guess["token"]]) < 1e-6


def test_folder_window_is_model_max_length(tmp_path):
    # export_hf writes the trained length as model_max_length; infer.py and a conversion
    # back to .npz keep it.
    model_dir = tmp_path / "short_hf"
    model_dir.mkdir()
    for file in TINY_HF.iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    options = json.loads((TINY_HF / "tokenizer_config.json").read_text(encoding="utf-8"))
    options["model_max_length"] = 10
    (model_dir / "tokenizer_config.json").write_text(json.dumps(options), encoding="utf-8")
    result = run_infer("--json", "--embed", "--model", model_dir, " ".join(WORDS[:20]))
    assert result.returncode == 0, result.stderr
    assert "20 tokens, more than the model's 8" in result.stderr
    assert run_bert("convert", model_dir, "back.npz", cwd=tmp_path).returncode == 0
    model, _, metadata, _ = bert.load_npz(tmp_path / "back.npz")
    assert bert.trained_length(model.config, metadata) == 10


def test_folder_metadata_from_tokenizer_config(tmp_path):
    model_dir = tmp_path / "hf"
    shutil.copytree(TINY_HF, model_dir)
    _, _, metadata, extra = bert.load_with_metadata(model_dir)
    assert metadata == {"max_seq_len": 32}
    assert extra == {}
    (model_dir / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="tokenizer_config.json: not a JSON object"):
        bert.load_with_metadata(model_dir)


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


def test_invalid_utf8_argument():
    # os.fsdecode keeps the byte 0xe9 as a lone surrogate, and subprocess passes it back
    # as that byte, as a shell does with a Latin-1 word.
    text = os.fsdecode(b"caf\xe9 [MASK]")
    result = subprocess.run([sys.executable, str(INFER), "--model", str(TINY_HF), text],
                            capture_output=True, cwd=ROOT)
    assert result.returncode == 2
    assert b"text 1 is not valid UTF-8" in result.stderr
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
    check_error(run_infer("--model", corrupt, "the [MASK] sat."), 2, str(corrupt))
    # The three scripts count a damaged model file alike.
    train_run = run_train(["--eval-only", "--model", str(corrupt)], tmp_path)
    assert train_run.returncode == 2
    convert_run = run_bert("convert", corrupt, tmp_path / "out.npz", cwd=tmp_path)
    assert convert_run.returncode == 2


def test_truncated_model(tmp_path, tiny_npz):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(tiny_npz.read_bytes()[: tiny_npz.stat().st_size // 2])
    check_error(run_infer("--model", truncated, "the [MASK] sat."), 2, str(truncated))


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
    assert result.returncode == 2
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
