"""TripletLoss and CosineEmbeddingLoss: references, quirks, properties, errors, CUDA, buffers.

The references in ``tests/reference/pairwise.py`` are float64 NumPy transcriptions of docs/semantics.rst
sections 12 and 14 written for this file (no code shared with the package): TripletLoss
``relu(sum((p - x)^2 - (n - x)^2) + margin) * w`` with its subgradient, CosineEmbeddingLoss with
``D = max(|a| |b|, 1e-12)``, the label cases, MXNet weighting (sample_weight may grow the output)
and the gradient ``h dc (b/D - [P >= eps] c/|a|^2 a)`` plus the NaN rows of the norm backward.
Quirks of docs/semantics.rst section 17 covered: 5 (Triplet / Cosine kinks), 11 (Cosine), 14 (positional and
keyword calls, ``None`` skips sample_weight; no 4th Triplet input), 15 (no label validation).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numba_losses as nl
from numba_losses import check_gradient
from tests.conftest import SIMULATED
from tests.reference.pairwise import cosine_ref, triplet_ref

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RNG = np.random.default_rng(20240611)


def _row_sums(x, p, n, batch_axis):
    x, p, n = (np.asarray(v, np.float64) for v in (x, p, n))
    others = tuple(d for d in range(x.ndim) if d != batch_axis % x.ndim)
    return ((p - x) ** 2 - (n - x) ** 2).sum(axis=others)


def close(got, want, rtol=1e-10, atol=1e-12, what=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _tol(dtype, scale=1.0):
    return (1e-10, 1e-12 * scale) if dtype == np.float64 else (2e-4, 2e-4 * scale)


def _assert_matches(got, ref, dtype=np.float64, scale=1.0):
    (out, grads), (rout, rgrads) = got, ref
    rtol, atol = _tol(dtype, scale)
    close(out, rout, rtol, atol, "out")
    assert len(grads) == len(rgrads)
    for i, (gv, rv) in enumerate(zip(grads, rgrads, strict=True)):
        close(gv, rv, rtol, atol, f"grad[{i}]")


def _normal(shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def _drawn_away_from_kink(draw, distance, tries=100):
    """Call ``draw()`` until ``distance(*drawn)`` exceeds 1e-3 everywhere.

    Finite differences are wrong across a kink, so a gradient check must not rest on a lucky draw.
    Whole draws are repeated (unlike ``tests.test_gradients._away``, which redraws single
    elements): here the distance of a row depends on several inputs at once.
    """
    for _ in range(tries):
        drawn = draw()
        if np.all(np.abs(distance(*drawn)) > 1e-3):
            return drawn
    raise AssertionError("could not draw values away from the kink")


# ------------------------------------------------------------------------------ TripletLoss
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "batch_axis"), [((5, 7), 0), ((5, 7), 1), ((3, 4, 5), 1), ((3, 4, 5), -1), ((6,), 0), ((2, 3, 4), 0)]
)
def test_triplet_matches_reference(shape, batch_axis, dtype):
    x, p, n = (_normal(shape, dtype) for _ in range(3))
    loss = nl.TripletLoss(margin=0.5, weight=0.75, batch_axis=batch_axis)
    g = _normal((shape[batch_axis],))
    out, grads = loss.forward_backward(x, p, n, out_grad=g)
    assert out.dtype == dtype and all(v.dtype == dtype and v.shape == shape for v in grads)
    _assert_matches((out, grads), triplet_ref(x, p, n, 0.5, 0.75, batch_axis, g), dtype, scale=10)
    close(loss(x, p, n), triplet_ref(x, p, n, 0.5, 0.75, batch_axis)[0], *_tol(dtype, 10))
    for got, want in zip(loss.backward(x, p, n, out_grad=g), grads, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("margin", [1.0, 0.25, 4.0])
@pytest.mark.parametrize("weight", [None, 0.5])
@pytest.mark.parametrize("batch_axis", [0, 1, -1])
def test_triplet_gradient_check(margin, weight, batch_axis):
    shape = (3, 4, 2)

    def draw():
        x, p = _normal(shape), _normal(shape)
        return x, p, x + RNG.uniform(0.5, 1.5, shape) * RNG.choice([-1.0, 1.0], shape)

    # away from the relu kink
    x, p, n = _drawn_away_from_kink(draw, lambda x, p, n: _row_sums(x, p, n, batch_axis) + margin)
    loss = nl.TripletLoss(margin=margin, weight=weight, batch_axis=batch_axis)
    check_gradient(loss, x, p, n, tol=1e-6)


def test_triplet_relu_kink_gives_zero_gradient():
    """s + margin == 0 exactly: out 0 and relu'(0) = 0 (docs/semantics.rst section 17, item 5)."""
    x = np.array([[0.0, 0.0], [0.0, 0.0]])
    p = np.array([[0.0, 0.0], [1.0, 0.0]])
    n = np.array([[1.0, 0.0], [0.0, 2.0]])  # s = -1 (row 0), 1 - 4 = -3 (row 1)
    for dtype in (np.float32, np.float64):
        out, grads = nl.TripletLoss(margin=1.0).forward_backward(*(v.astype(dtype) for v in (x, p, n)))
        np.testing.assert_array_equal(out, [0.0, 0.0])
        for gv in grads:
            np.testing.assert_array_equal(gv, np.zeros((2, 2)))
    out, (dx, dp, dn) = nl.TripletLoss(margin=1.5).forward_backward(x, p, n)
    np.testing.assert_array_equal(out, [0.5, 0.0])
    np.testing.assert_array_equal(dx[0], [2.0, 0.0])  # 2 (n - p), m = 1
    np.testing.assert_array_equal(dn[0], [-2.0, 0.0])
    np.testing.assert_array_equal(dx[1], [0.0, 0.0])


def test_triplet_equal_positive_and_negative_is_an_exact_kink():
    """p == n with margin 0: MXNet's squares cancel exactly (s = 0), so the loss and every gradient are 0.

    Products fused into a multiply-add (FMA contraction) left the rounding error of one square instead,
    a positive s on about half of such rows and a full gradient; non-dyadic values show it.
    """
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        x, p = (rng.standard_normal((200, 4)).astype(dtype) for _ in range(2))
        out, grads = nl.TripletLoss(margin=0.0).forward_backward(x, p, p.copy())
        np.testing.assert_array_equal(out, np.zeros(200))
        for gv in grads:
            np.testing.assert_array_equal(gv, np.zeros((200, 4)))


def test_triplet_gradients_come_in_their_inputs_shapes():
    """positive and negative are reshaped like pred (MXNet's differentiable reshape_like): each gradient
    has its input's own shape, with the values of the reference computed on pred's shape."""
    rng = np.random.default_rng(12)
    x, p, n = rng.standard_normal((2, 3)), rng.standard_normal(6), rng.standard_normal((3, 2))
    loss = nl.TripletLoss(margin=2.0)
    out, grads = loss.forward_backward(x, p, n)
    ref_out, ref_grads = triplet_ref(x, p, n, 2.0)
    assert [gv.shape for gv in grads] == [(2, 3), (6,), (3, 2)]
    close(out, ref_out, 1e-12, 1e-12)
    for gv, ref in zip(grads, ref_grads, strict=True):
        close(gv.reshape(2, 3), ref, 1e-12, 1e-12)
    assert [sd.shape for sd in loss.result_shapes(x, p, n)[1]] == [(2, 3), (6,), (3, 2)]
    bufs = (np.empty((2, 3)), np.empty(6), np.empty((3, 2)))  # buffers of the inputs' shapes
    _, got = loss.forward_backward(x, p, n, grad_out=bufs)
    assert all(gv is buf for gv, buf in zip(got, bufs, strict=True))
    with pytest.raises(ValueError, match="shape"):
        loss.forward_backward(x, p, n, grad_out=(None, np.empty((2, 3)), None))


def test_triplet_nan_passes_relu():
    x = np.zeros((2, 3))
    p, n = np.ones((2, 3)), np.full((2, 3), 2.0)  # s = 3 - 12 = -9: relu gives 0 on row 1
    x[0, 1] = np.nan
    out, grads = nl.TripletLoss().forward_backward(x, p, n)
    assert np.isnan(out[0]) and out[1] == 0.0
    for gv in grads:
        assert np.isnan(gv[0]).all() and np.all(gv[1] == 0)


def test_triplet_weight_margin_and_shapes():
    x = np.array([1.0, 2.0, 3.0])
    p = np.array([[1.5], [2.0], [0.0]])  # reshaped like pred
    n = np.array([2.0, 2.5, 3.5])
    out = nl.TripletLoss(margin=0.5, weight=2.0)(x, p, n)
    # s = (p - x)^2 - (n - x)^2 = 0.25 - 1, 0 - 0.25, 9 - 0.25
    np.testing.assert_allclose(out, 2.0 * np.maximum(np.array([-0.75, -0.25, 8.75]) + 0.5, 0), rtol=1e-15)
    assert nl.TripletLoss()._output_ndim == 1


def test_triplet_has_no_sample_weight():
    x = np.ones((2, 3))
    with pytest.raises(TypeError):
        nl.TripletLoss()(x, x, x, x)
    with pytest.raises(TypeError):
        nl.TripletLoss()(x, x, x, sample_weight=x)
    np.testing.assert_array_equal(nl.TripletLoss()(pred=x, positive=x, negative=x), [1.0, 1.0])  # keywords
    with pytest.raises(TypeError):
        nl.TripletLoss()(x, x)


def test_triplet_empty():
    out, grads = nl.TripletLoss().forward_backward(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    assert out.shape == (0,) and all(gv.shape == (0, 3) for gv in grads)
    out, grads = nl.TripletLoss(margin=0.5, weight=3.0).forward_backward(*(np.zeros((4, 0)),) * 3)
    np.testing.assert_array_equal(out, np.full(4, 1.5))  # sum over nothing is 0
    assert all(gv.shape == (4, 0) for gv in grads)


def test_triplet_dtypes():
    x = _normal((3, 4)).astype(np.float16)
    out, grads = nl.TripletLoss().forward_backward(x, x[::-1].copy(), x * 2)
    assert out.dtype == np.float16 and all(gv.dtype == np.float16 for gv in grads)
    ref = triplet_ref(x, x[::-1], x * 2)
    close(out, ref[0], 2e-3, 2e-2)
    xi = np.arange(6).reshape(2, 3)
    out = nl.TripletLoss(margin=2)(xi, xi + 1, (xi - 1).astype(np.int8))  # integers: computed in float64
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [2.0, 2.0])  # s = 3 - 3 = 0


@pytest.mark.parametrize("batch_axis", [0, -1])
def test_triplet_parallel_kernel(batch_axis):
    """Inputs above the serial threshold take the parallel kernel (row and column layouts)."""
    shape = (130, 300)
    x, p, n = (_normal(shape, np.float32) for _ in range(3))
    loss = nl.TripletLoss(margin=2.0, batch_axis=batch_axis)
    g = _normal((shape[batch_axis],))
    _assert_matches(loss.forward_backward(x, p, n, out_grad=g), triplet_ref(x, p, n, 2.0, None, batch_axis, g),
                    np.float32, scale=100)  # fmt: skip


def test_triplet_strided_inputs():
    base = _normal((4, 10))
    x, p, n = base[:, ::2], base[:, 1::2], base[::-1, :5]
    _assert_matches(nl.TripletLoss().forward_backward(x, p, n), triplet_ref(x, p, n))


# ------------------------------------------------------------------------------ CosineEmbeddingLoss
def _vectors(shape, dtype=np.float64):
    return _normal(shape, dtype), _normal(shape, dtype)


def _labels(m, values=(-1, 1, 0, 2)):
    return RNG.choice(values, m).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "sw_shape"),
    [((5, 7), None), ((5, 7), (5, 1)), ((5, 7), (5,)), ((2, 3, 4), (2, 6, 1)), ((8,), (1,)), ((4, 3), ())],
)
def test_cosine_matches_reference(shape, sw_shape, dtype):
    a, b = _vectors(shape, dtype)
    m = int(np.prod(shape[:-1]))
    y = _labels(m)
    sw = None if sw_shape is None else RNG.uniform(0.5, 2.0, sw_shape)
    loss = nl.CosineEmbeddingLoss(weight=1.5, margin=-0.2)
    out0 = loss(a, b, y, sw)
    rout, _ = cosine_ref(a, b, y, sw, -0.2, 1.5)
    assert out0.shape == rout.shape and out0.dtype == dtype
    g = _normal(rout.shape)
    out, grads = loss.forward_backward(a, b, y, sw, out_grad=g)
    assert all(v.dtype == dtype and v.shape == shape for v in grads)
    _assert_matches((out, grads), cosine_ref(a, b, y, sw, -0.2, 1.5, g), dtype, scale=10)
    np.testing.assert_array_equal(out, out0)


@pytest.mark.parametrize("margin", [0.0, 0.2, -0.25])
@pytest.mark.parametrize("weight", [None, 2.0])
@pytest.mark.parametrize("sw_shape", [None, (4, 1), (4,), (2, 4, 1)])
def test_cosine_gradient_check(margin, weight, sw_shape):
    def cosine_minus_margin(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1) - margin

    # away from the hinge of the -1 branch
    a, b = _drawn_away_from_kink(lambda: _vectors((4, 3)), cosine_minus_margin)
    y = np.array([1.0, -1.0, -1.0, 0.0])
    sw = None if sw_shape is None else RNG.uniform(0.5, 2.0, sw_shape)
    check_gradient(nl.CosineEmbeddingLoss(weight=weight, margin=margin), a, b, y, sample_weight=sw, tol=1e-6)


def test_cosine_gradient_check_label_broadcast():
    """One vector pair, three labels: three rows, gradients summed back (label broadcasting)."""
    a, b = _vectors((1, 4))
    y = np.array([1.0, -1.0, 1.0])
    out = nl.CosineEmbeddingLoss(margin=-0.9)(a, b, y)
    assert out.shape == (3, 1)
    check_gradient(nl.CosineEmbeddingLoss(margin=-0.9), a, b, y, tol=1e-6)
    _assert_matches(nl.CosineEmbeddingLoss(margin=-0.9).forward_backward(a, b, y), cosine_ref(a, b, y, None, -0.9))


def test_cosine_output_is_not_reduced_and_batch_axis_ignored():
    a, b = _vectors((2, 3, 4))
    y = _labels(6)
    out = nl.CosineEmbeddingLoss()(a, b, y)
    assert out.shape == (6, 1)
    for batch_axis in (1, -1, 7):
        np.testing.assert_array_equal(nl.CosineEmbeddingLoss(batch_axis=batch_axis)(a, b, y), out)
    a1 = a.reshape(4, 6)  # input1 is reshaped like input2
    np.testing.assert_array_equal(nl.CosineEmbeddingLoss()(a1, b, y), out)
    assert nl.CosineEmbeddingLoss()(a[0, 0], b[0, 0], 1.0).shape == (1, 1)  # 1-D: one vector


def test_cosine_labels_other_than_plus_minus_one_give_zero():
    a, b = _vectors((5, 3))
    y = np.array([0.0, 2.0, 0.5, np.nan, -3.0])  # no validation (quirk 15)
    out, (da, db) = nl.CosineEmbeddingLoss(margin=-1.0).forward_backward(a, b, y)
    np.testing.assert_array_equal(out, np.zeros((5, 1)))
    np.testing.assert_array_equal(da, np.zeros((5, 3)))
    np.testing.assert_array_equal(db, np.zeros((5, 3)))
    yi = np.array([1, -1, 0, 1, 1], dtype=np.int64)  # integer labels compare exactly
    _assert_matches(nl.CosineEmbeddingLoss().forward_backward(a, b, yi), cosine_ref(a, b, yi))


def test_cosine_minus_one_branch_kink():
    """c - margin == 0 on a -1 row: loss 0 and no gradient (maximum's tie goes to the 0)."""
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [0.0, 1.0]])  # c = 1 exactly
    y = np.array([-1.0, -1.0])
    for dtype in (np.float32, np.float64):
        out, (da, db) = nl.CosineEmbeddingLoss(margin=1.0).forward_backward(a.astype(dtype), b.astype(dtype), y)
        np.testing.assert_array_equal(out, np.zeros((2, 1)))
        np.testing.assert_array_equal(da, np.zeros((2, 2)))
        np.testing.assert_array_equal(db, np.zeros((2, 2)))
    out, _ = nl.CosineEmbeddingLoss(margin=0.5).forward_backward(a, b, y)
    np.testing.assert_array_equal(out, np.full((2, 1), 0.5))


def test_cosine_zero_vector_nan_rows():
    """P < 1e-12: rows of da with |a| = 0 (and of db with |b| = 0) are NaN, whatever label, head or margin."""
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    b = np.array([[1.0, 1.0, 1.0], [0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    y = np.array([1.0, -1.0, -1.0, 0.0, 7.0])
    g = np.array([[1.0], [2.0], [0.0], [0.0], [0.0]])
    for dtype in (np.float32, np.float64):
        out, (da, db) = nl.CosineEmbeddingLoss(margin=5.0).forward_backward(
            a.astype(dtype), b.astype(dtype), y, out_grad=g
        )
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(np.isnan(da).all(1), [True, False, False, True, True])
        np.testing.assert_array_equal(np.isnan(db).all(1), [False, False, True, True, False])
        assert np.isfinite(da[1:3]).all() and np.isfinite(db[[0, 1, 4]]).all()
        _assert_matches((out, (da, db)), cosine_ref(a, b, y, None, 5.0, None, g), dtype)
        np.testing.assert_array_equal(out[[0, 2, 3, 4], 0], [1.0, 0.0, 0.0, 0.0])  # c = 0 on zero rows


def test_cosine_tiny_product_uses_eps():
    """|a||b| = 1e-14 < 1e-12: D = 1e-12, the norm path carries no gradient (no NaN: both norms > 0)."""
    a = np.array([[1e-7, 0.0]])
    b = np.array([[1e-7, 0.0]])
    out, (da, db) = nl.CosineEmbeddingLoss().forward_backward(a, b, np.array([1.0]))
    np.testing.assert_allclose(out, [[1 - 0.01]], rtol=1e-12)
    np.testing.assert_allclose(da, [[-1e5, 0.0]], rtol=1e-12)  # -h * b / D
    np.testing.assert_allclose(db, [[-1e5, 0.0]], rtol=1e-12)


def test_cosine_eps_is_in_the_compute_dtype():
    """float32: P = float32(1e-12) ties with the float32 constant, so the norm path is kept and the
    gradient nearly cancels; with the float64 constant 1e-12 it would be -h b / D = -1e12."""
    e = np.float32(1e-12)
    a = np.array([[e]], np.float32)
    b = np.array([[1.0]], np.float32)
    out, (da, db) = nl.CosineEmbeddingLoss().forward_backward(a, b, np.array([1.0]))
    assert out[0, 0] == 0.0  # c = e / e = 1
    assert abs(float(da[0, 0])) < 1e-3 * 1e12
    out64, (da64, _) = nl.CosineEmbeddingLoss().forward_backward(a.astype(np.float64), b.astype(np.float64), [1.0])
    assert abs(float(da64[0, 0]) + 1.0 / float(e)) < 1e-3 / float(e)  # float64 data: P < 1e-12, no norm path


def test_cosine_sample_weight_grows_output():
    a, b = _vectors((4, 3))
    y = np.array([1.0, -1.0, 1.0, -1.0])
    sw = np.array([0.5, 1.0, 2.0, 3.0])
    loss = nl.CosineEmbeddingLoss(weight=2.0, margin=-0.5)
    out, grads = loss.forward_backward(a, b, y, sw)
    assert out.shape == (4, 4)  # (4, 1) x (4,)
    _assert_matches((out, grads), cosine_ref(a, b, y, sw, -0.5, 2.0))
    row, _ = loss.forward_backward(a, b, y)
    np.testing.assert_allclose(out, row * sw, rtol=1e-15)
    # the head of each row is summed: the same gradient as a per-row weight of sum(sw)
    _, grads_sum = loss.forward_backward(a, b, y, np.full((4, 1), sw.sum()))
    for gv, gs in zip(grads, grads_sum, strict=True):
        np.testing.assert_allclose(gv, gs, rtol=1e-13)


def test_cosine_keywords_and_none_sample_weight():
    a, b = _vectors((3, 2))
    y = np.array([1.0, -1.0, 1.0])
    loss = nl.CosineEmbeddingLoss()
    ref = loss(a, b, y)
    np.testing.assert_array_equal(loss(a, b, y, None), ref)
    np.testing.assert_array_equal(loss(input1=a, input2=b, label=y), ref)
    np.testing.assert_array_equal(loss(a, b, label=y, sample_weight=np.ones((3, 1))), ref)
    assert loss._output_ndim is None


def test_cosine_empty_and_dtypes():
    out, (da, db) = nl.CosineEmbeddingLoss().forward_backward(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))
    assert out.shape == (0, 1) and da.shape == (0, 4) and db.shape == (0, 4)
    out = nl.CosineEmbeddingLoss(margin=-0.5)(np.zeros((3, 0)), np.zeros((3, 0)), np.array([1.0, -1.0, 0.0]))
    np.testing.assert_array_equal(out, [[1.0], [0.5], [0.0]])  # c = 0 / 1e-12 = 0
    a, b = _vectors((3, 5), np.float16)
    out, grads = nl.CosineEmbeddingLoss().forward_backward(a, b, np.array([1, -1, 1]))
    assert out.dtype == np.float16 and all(gv.dtype == np.float16 for gv in grads)
    close(out, cosine_ref(a, b, [1, -1, 1])[0], 2e-3, 2e-3)


def test_cosine_parallel_kernel_and_strided_inputs():
    a, b = _vectors((150, 260), np.float32)  # above the serial threshold
    y = _labels(150)
    g = _normal((150, 1))
    _assert_matches(nl.CosineEmbeddingLoss(margin=0.1).forward_backward(a, b, y, out_grad=g),
                    cosine_ref(a, b, y, None, 0.1, None, g), np.float32, scale=10)  # fmt: skip
    base = _normal((6, 10))
    a, b, y = base[:, ::2], base[::-1, 1::2], _labels(6)[::-1]
    _assert_matches(nl.CosineEmbeddingLoss().forward_backward(a, b, y), cosine_ref(a, b, y))


# ------------------------------------------------------------------------------ MakeLoss
def test_makeloss_batch_normalization():
    x, p, n = (_normal((4, 3)) for _ in range(3))
    m = nl.MakeLoss(nl.TripletLoss(margin=4.0), grad_scale=0.5, normalization="batch")
    out, grads = m.forward_backward(x, p, n)  # 1-D output: B = 1
    _assert_matches((out, grads), triplet_ref(x, p, n, 4.0, None, 0, np.full(4, np.float32(0.5))))
    a, b = _vectors((5, 3))
    y = np.array([1.0, -1.0, 1.0, -1.0, 1.0])
    m = nl.MakeLoss(nl.CosineEmbeddingLoss(margin=-0.5), grad_scale=2.0, normalization="batch")
    out, grads = m.forward_backward(a, b, y)  # output (5, 1): B = 5
    _assert_matches((out, grads), cosine_ref(a, b, y, None, -0.5, None, np.float32(np.float32(2.0) / 5)))


# ------------------------------------------------------------------------------ buffers
def test_out_and_grad_out_buffers():
    x, p, n = (_normal((4, 3)) for _ in range(3))
    loss = nl.TripletLoss(margin=3.0)
    out = np.empty(4)
    bufs = tuple(np.empty((4, 3)) for _ in range(3))
    res, grads = loss.forward_backward(x, p, n, out=out, grad_out=bufs)
    assert res is out and all(gv is buf for gv, buf in zip(grads, bufs, strict=True))
    _assert_matches((res, grads), triplet_ref(x, p, n, 3.0))
    assert loss(x, p, n, out=out) is out
    half = tuple(np.empty((4, 3), np.float16) for _ in range(3))  # float16 results: written after the cast
    x16 = x.astype(np.float16)
    _, g16 = loss.forward_backward(x16, p, n, out=np.empty(4, np.float16), grad_out=half)
    assert all(gv is buf for gv, buf in zip(g16, half, strict=True))

    a, b = _vectors((3, 2, 4))
    y = np.array([1.0, -1.0, 0.0, 1.0, 1.0, -1.0])
    closs = nl.CosineEmbeddingLoss(margin=-0.3)
    cout = np.empty((6, 1))
    cbufs = (np.empty((3, 2, 4)), np.empty((3, 2, 4)))
    res, grads = closs.forward_backward(a, b, y, out=cout, grad_out=cbufs)
    assert res is cout and grads[0] is cbufs[0] and grads[1] is cbufs[1]
    _assert_matches((res, grads), cosine_ref(a, b, y, None, -0.3))
    grown = np.empty((6, 6))  # output grown by sample_weight, gradients of a broadcast vector
    res, grads = closs.forward_backward(a[:1, :1], b[:1, :1], y, np.arange(6.0), out=grown, grad_out=[
        np.empty((1, 1, 4)), np.empty((1, 1, 4))])  # fmt: skip
    assert res is grown
    _assert_matches((res, grads), cosine_ref(a[:1, :1], b[:1, :1], y, np.arange(6.0), -0.3))


def test_buffer_errors():
    x = _normal((4, 3))
    loss = nl.TripletLoss()
    with pytest.raises(TypeError, match="tuple of 3"):
        loss.forward_backward(x, x, x, grad_out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="expected 3"):
        loss.forward_backward(x, x, x, grad_out=(np.empty((4, 3)),))
    with pytest.raises(TypeError, match="dtype"):
        loss.forward_backward(x, x, x, grad_out=(np.empty((4, 3), np.float32), None, None))
    with pytest.raises(ValueError, match="shape"):
        loss(x, x, x, out=np.empty(3))
    with pytest.raises(ValueError, match="share memory"):
        loss.forward_backward(x.copy(), x, x, grad_out=(None, x, None))
    with pytest.raises(ValueError, match="share memory"):
        nl.CosineEmbeddingLoss().forward_backward(x, x.copy(), np.ones(4), grad_out=(x, None))


# ------------------------------------------------------------------------------ errors
def test_errors():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="reshaped like"):
        nl.TripletLoss()(x, np.ones((4, 2)), x)
    with pytest.raises(ValueError, match="out of range"):
        nl.TripletLoss(batch_axis=2)(x, x, x)
    with pytest.raises(ValueError, match="out of range"):
        nl.TripletLoss()(np.float64(1.0), 1.0, 1.0)
    with pytest.raises(AssertionError, match="weight must be a number"):
        nl.TripletLoss(weight="2")(x, x, x)
    with pytest.raises(TypeError, match="margin"):
        nl.TripletLoss(margin="1")(x, x, x)
    with pytest.raises(TypeError, match="dtype"):
        nl.TripletLoss()(x.astype(np.complex128), x, x)
    with pytest.raises(TypeError):
        nl.TripletLoss()(x, np.array([["a"] * 3] * 4), x)
    with pytest.raises(ValueError, match="out_grad"):
        nl.TripletLoss().forward_backward(x, x, x, out_grad=np.ones(3))
    with pytest.raises(ValueError, match="reshaped like"):
        nl.CosineEmbeddingLoss()(np.ones((4, 2)), x, np.ones(4))
    with pytest.raises(ValueError, match="does not broadcast"):
        nl.CosineEmbeddingLoss()(x, x, np.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        nl.CosineEmbeddingLoss()(x, x, np.ones(4), np.ones((3, 1)))
    with pytest.raises(ValueError, match="at least one dimension"):
        nl.CosineEmbeddingLoss()(np.float64(1.0), np.float64(1.0), 1.0)
    with pytest.raises(ValueError, match="out_grad"):
        nl.CosineEmbeddingLoss().forward_backward(x, x, np.ones(4), out_grad=np.ones(4))
    with pytest.raises(AssertionError, match="weight must be a number"):
        nl.CosineEmbeddingLoss(weight=[1.0])(x, x, np.ones(4))
    with pytest.raises(TypeError, match="dtype"):
        nl.CosineEmbeddingLoss()(x, x, np.array(["a"] * 4))
    with pytest.raises(TypeError):
        nl.CosineEmbeddingLoss()(x, x)


# ------------------------------------------------------------------------------ compilation
_CACHE_CHILD = """
import numpy as np, numba_losses as nl
from numba_losses.kernels.cpu import pairwise as k
sizes = [k.build_triplet_kernel.cache_info().currsize, k.build_cosine_kernel.cache_info().currsize]
x = np.ones((4, 3))
nl.TripletLoss().forward_backward(x, x, 2 * x)
nl.CosineEmbeddingLoss()(x, x + 1, np.ones(4))
ks = (k.build_triplet_kernel(False), k.build_cosine_kernel(False))
print(*sizes, *(sum(q.stats.cache_hits.values()) for q in ks), *(sum(q.stats.cache_misses.values()) for q in ks))
"""


def test_kernels_compile_lazily_and_load_from_the_disk_cache(tmp_path):
    """Nothing compiled at import; a second process loads both kernels from the cache (no recompile)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run():
        res = subprocess.run([sys.executable, "-c", textwrap.dedent(_CACHE_CHILD)], capture_output=True, text=True,
                             env=env, cwd=root, timeout=600)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    assert run() == ["0", "0", "0", "0", "1", "1"]  # import: none built; first run: compiled (one signature each)
    assert run() == ["0", "0", "1", "1", "0", "0"]  # second process: loaded


def test_kernels_use_the_central_options():
    from numba_losses.kernels import _options
    from numba_losses.kernels.cpu.pairwise import build_cosine_kernel, build_triplet_kernel

    for build in (build_triplet_kernel, build_cosine_kernel):
        for parallel in (False, True):
            kern = build(parallel)
            assert kern.targetoptions["fastmath"] == set(_options.CPU_FASTMATH)
            assert kern.targetoptions["error_model"] == _options.ERROR_MODEL
            assert bool(kern.targetoptions.get("parallel")) == parallel


# ------------------------------------------------------------------------------ properties
@SETTINGS
@given(
    dims=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    axis_pick=st.integers(0, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    margin=st.floats(-3, 6),
    weight=st.one_of(st.none(), st.floats(-2, 2)),
    seed=st.integers(0, 2**16),
)
def test_triplet_property(dims, axis_pick, dtype, margin, weight, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(dims)
    ndim = len(shape)
    batch_axis = axis_pick % (2 * ndim) - ndim  # negative and positive axes
    x, p, n = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    assume(np.all(np.abs(_row_sums(x, p, n, batch_axis) + margin) > 1e-3))  # float32 may round across the kink
    g = rng.standard_normal(shape[batch_axis])
    got = nl.TripletLoss(margin=margin, weight=weight, batch_axis=batch_axis).forward_backward(x, p, n, out_grad=g)
    _assert_matches(got, triplet_ref(x, p, n, margin, weight, batch_axis, g), dtype, scale=50)


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    k=st.integers(1, 6),
    sw_kind=st.sampled_from(["none", "row", "grow", "lead", "scalar"]),
    label_bcast=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    margin=st.floats(-1, 1),
    weight=st.one_of(st.none(), st.floats(-2, 2)),
    seed=st.integers(0, 2**16),
)
def test_cosine_property(lead, k, sw_kind, label_bcast, dtype, margin, weight, seed):
    rng = np.random.default_rng(seed)
    shape = (*lead, k)
    m = int(np.prod(lead))
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    n_labels = m
    if label_bcast and m == 1:
        n_labels = int(rng.integers(2, 5))  # one vector, several labels
    y = rng.choice([-1.0, 1.0, 0.0], n_labels)
    rows = max(m, n_labels)
    sw = {
        "none": None,
        "row": rng.uniform(0.5, 2, (rows, 1)),
        "grow": rng.uniform(0.5, 2, (rows,)),
        "lead": rng.uniform(0.5, 2, (2, rows, 3)),
        "scalar": rng.uniform(0.5, 2, ()),
    }[sw_kind]
    cos = (a.astype(float) * b).sum(-1) / np.linalg.norm(a.astype(float), axis=-1) / np.linalg.norm(b, axis=-1)
    assume(np.all(np.abs(cos - margin) > 1e-3))
    out_shape = cosine_ref(a, b, y, sw, margin, weight)[0].shape
    g = rng.standard_normal(out_shape)
    got = nl.CosineEmbeddingLoss(margin=margin, weight=weight).forward_backward(a, b, y, sw, out_grad=g)
    _assert_matches(got, cosine_ref(a, b, y, sw, margin, weight, g), dtype, scale=50)


# ------------------------------------------------------------------------------ CUDA (simulator without a GPU)
cuda = pytest.importorskip("numba.cuda")
needs_cuda = pytest.mark.skipif(not SIMULATED and not cuda.is_available(), reason="no CUDA device, simulator off")


def dev(a):
    return a if not isinstance(a, np.ndarray) else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _same(cpu, gpu, rtol=1e-6, atol=1e-7):
    (co, cg), (go, gg) = cpu, gpu
    go = host(go)
    assert go.shape == co.shape and go.dtype == co.dtype
    np.testing.assert_allclose(go.astype(float), co.astype(float), rtol=rtol, atol=atol, equal_nan=True)
    for c, g in zip(cg, gg, strict=True):
        g = host(g)
        assert g.shape == c.shape and g.dtype == c.dtype
        np.testing.assert_allclose(g.astype(float), c.astype(float), rtol=rtol, atol=atol, equal_nan=True)


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize(("shape", "batch_axis"), [((5, 9), 0), ((3, 4, 5), 1), ((4, 6), -1), ((7,), 0)])
def test_triplet_cuda_matches_cpu(shape, batch_axis, dtype):
    x, p, n = (_normal(shape, dtype) for _ in range(3))
    loss = nl.TripletLoss(margin=1.5, weight=0.5, batch_axis=batch_axis)
    g = _normal((shape[batch_axis],))
    tol = 2e-3 if dtype == np.float16 else 1e-5
    cpu = loss.forward_backward(x, p, n, out_grad=g)
    _same(cpu, loss.forward_backward(dev(x), dev(p), dev(n), out_grad=dev(g)), tol, tol)
    np.testing.assert_allclose(host(loss(dev(x), dev(p), dev(n))).astype(float), cpu[0].astype(float), tol, tol)
    _same(loss.forward_backward(x, p, n, out_grad=0.25), loss.forward_backward(dev(x), dev(p), dev(n), out_grad=0.25))


@needs_cuda
def test_triplet_cuda_long_rows_strided_and_kink():
    x, p, n = (_normal((3, 300), np.float32) for _ in range(3))  # several threads per row
    loss = nl.TripletLoss(margin=30.0)
    _same(loss.forward_backward(x, p, n), loss.forward_backward(dev(x), dev(p), dev(n)), 1e-5, 1e-5)
    base = _normal((4, 10))
    dbase = dev(base)
    _same(nl.TripletLoss().forward_backward(base[:, ::2], base[:, 1::2], base[::-1, :5]),
          nl.TripletLoss().forward_backward(dbase[:, ::2], dbase[:, 1::2], dbase[::-1, :5]))  # fmt: skip
    z = np.zeros((1, 2))
    out, grads = nl.TripletLoss().forward_backward(dev(z), dev(z), dev(np.array([[1.0, 0.0]])))
    assert host(out)[0] == 0.0 and all(np.all(host(gv) == 0) for gv in grads)


@needs_cuda
def test_triplet_cuda_reshaped_inputs_and_exact_kink():
    x, p, n = _normal((2, 3)), _normal(6), _normal((3, 2))
    loss = nl.TripletLoss(margin=2.0)
    _same(loss.forward_backward(x, p, n), loss.forward_backward(dev(x), dev(p), dev(n)))
    q = _normal((3, 4))
    out, grads = nl.TripletLoss(margin=0.0).forward_backward(dev(_normal((3, 4))), dev(q), dev(q.copy()))
    assert np.all(host(out) == 0) and all(np.all(host(gv) == 0) for gv in grads)


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize(
    ("shape", "n_labels", "sw_shape"),
    [((5, 7), 5, None), ((5, 7), 5, (5, 1)), ((4, 3), 4, (4,)), ((2, 3, 4), 6, (2, 6, 1)), ((1, 6), 3, None),
     ((1, 6), 3, (3,)), ((40,), 1, ())],
)  # fmt: skip
def test_cosine_cuda_matches_cpu(shape, n_labels, sw_shape, dtype):
    a, b = _vectors(shape, dtype)
    y = _labels(n_labels)
    sw = None if sw_shape is None else RNG.uniform(0.5, 2.0, sw_shape)
    loss = nl.CosineEmbeddingLoss(weight=2.0, margin=-0.3)
    out_shape = loss(a, b, y, sw).shape
    g = _normal(out_shape)
    tol = 3e-3 if dtype == np.float16 else 1e-5
    cpu = loss.forward_backward(a, b, y, sw, out_grad=g)
    gpu = loss.forward_backward(dev(a), dev(b), dev(y), dev(sw), out_grad=dev(g))
    _same(cpu, gpu, tol, tol)
    dargs = (dev(a), dev(b), dev(y), dev(sw))
    _same(loss.forward_backward(a, b, y, sw, out_grad=1.5), loss.forward_backward(*dargs, out_grad=1.5), tol, tol)
    np.testing.assert_allclose(host(loss(*dargs)).astype(float), cpu[0].astype(float), tol, tol)


@needs_cuda
def test_cosine_cuda_quirks():
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    b = np.array([[1.0, 1.0, 1.0], [0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = np.array([1.0, -1.0, 2.0, 0.0])
    g = np.array([[1.0], [2.0], [0.0], [0.0]])
    loss = nl.CosineEmbeddingLoss(margin=5.0)
    out, (da, db) = loss.forward_backward(dev(a), dev(b), dev(y), out_grad=dev(g))
    np.testing.assert_array_equal(np.isnan(host(da)).all(1), [True, False, False, True])
    np.testing.assert_array_equal(np.isnan(host(db)).all(1), [False, False, True, True])
    _same(loss.forward_backward(a, b, y, out_grad=g), (out, (da, db)))
    kink = nl.CosineEmbeddingLoss(margin=1.0).forward_backward(dev(np.array([[2.0, 0.0]])), dev(np.array([[3.0, 0.0]])),
                                                               dev(np.array([-1.0])))  # fmt: skip
    assert host(kink[0])[0, 0] == 0.0 and all(np.all(host(gv) == 0) for gv in kink[1])
    yi = np.array([1, -1, 3, 1], np.int64)  # labels read in their own dtype
    a2, b2 = _vectors((4, 5))
    _same(loss.forward_backward(a2, b2, yi), loss.forward_backward(dev(a2), dev(b2), dev(yi)))


@needs_cuda
def test_cuda_buffers_and_errors():
    x, p, n = (_normal((4, 3)) for _ in range(3))
    loss = nl.TripletLoss()
    out = cuda.device_array(4)
    bufs = tuple(cuda.device_array((4, 3)) for _ in range(3))
    res, grads = loss.forward_backward(dev(x), dev(p), dev(n), out=out, grad_out=bufs)
    assert res is out and all(gv is buf for gv, buf in zip(grads, bufs, strict=True))
    _same(loss.forward_backward(x, p, n), (res, grads))
    dx = dev(x)
    with pytest.raises(ValueError, match="share memory"):
        loss.forward_backward(dx, dev(p), dev(n), grad_out=(None, None, dx))
    with pytest.raises(TypeError, match="device array"):
        loss.forward_backward(dx, dev(p), dev(n), grad_out=(np.empty((4, 3)), None, None))
    with pytest.raises(ValueError, match="host arrays"):
        loss(dx, p, dev(n))
    with pytest.raises(ValueError, match="host arrays"):
        nl.CosineEmbeddingLoss()(dx, dev(p), np.ones(4))
    with pytest.raises(ValueError, match="reshaped like"):
        loss(dx, dev(p[:, :2]), dev(n))
    with pytest.raises(ValueError, match="does not broadcast"):
        nl.CosineEmbeddingLoss()(dx, dev(p), dev(np.ones(3)))
    a, b = _vectors((3, 2, 4))
    y = np.array([1.0, -1.0, 0.0, 1.0, 1.0, -1.0])
    cout = cuda.device_array((6, 1))
    cbufs = (cuda.device_array((3, 2, 4)), cuda.device_array((3, 2, 4)))
    closs = nl.CosineEmbeddingLoss(margin=-0.3)
    res, grads = closs.forward_backward(dev(a), dev(b), dev(y), out=cout, grad_out=cbufs)
    assert res is cout and grads[0] is cbufs[0]
    _same(closs.forward_backward(a, b, y), (res, grads))


@needs_cuda
def test_cuda_empty_and_scalar_inputs():
    z = np.zeros((0, 3))
    out, grads = nl.TripletLoss().forward_backward(dev(z), dev(z), dev(z))
    assert host(out).shape == (0,) and all(host(gv).shape == (0, 3) for gv in grads)
    out = nl.TripletLoss(margin=0.5)(*(dev(np.zeros((3, 0))),) * 3)
    np.testing.assert_array_equal(host(out), [0.5] * 3)
    one = dev(np.ones((1, 4)))
    out, grads = nl.CosineEmbeddingLoss().forward_backward(one, one, dev(np.zeros(0)))  # no labels: no rows
    assert host(out).shape == (0, 1) and all(np.all(host(gv) == 0) and host(gv).shape == (1, 4) for gv in grads)
    a, b = _vectors((3, 4))
    cpu = nl.CosineEmbeddingLoss().forward_backward(a, b, -1.0, 2.0, out_grad=0.5)  # scalar label and weight
    _same(cpu, nl.CosineEmbeddingLoss().forward_backward(dev(a), dev(b), -1.0, 2.0, out_grad=0.5))
