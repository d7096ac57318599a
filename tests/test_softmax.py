"""SoftmaxCrossEntropyLoss and KLDivLoss(from_logits=False) against an independent NumPy evaluation.

The reference in ``tests/reference/softmax.py`` is written from docs/semantics.rst sections 5 and 6 in float64 NumPy
(log-softmax by ``max`` shift, MXNet's pick rule, weighting and mean), plus
PyTorch's ``cross_entropy`` for the label-smoothing / ignore extensions when
PyTorch is installed. Gradients are also checked by central differences.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numba_losses as nl
from tests.conftest import SIMULATED
from tests.reference.softmax import pick_ref, ref_kldiv_softmax, ref_softmax_ce

RTOL = {np.float32: 2e-5, np.float64: 1e-10}


def _check(got_out, got_dx, ref_out, ref_dx, dtype):
    rtol = RTOL[dtype]
    atol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got_out, ref_out, rtol=rtol, atol=atol, equal_nan=True)
    np.testing.assert_allclose(got_dx, ref_dx, rtol=rtol, atol=atol, equal_nan=True)


# ------------------------------------------------------------ check values of docs/semantics.rst section 5
def test_spec_check_values():
    loss = nl.SoftmaxCELoss()
    np.testing.assert_allclose(loss(np.array([[1.0, 10], [8, 2]]), np.array([0, 1])), [9.000123, 6.0024757], rtol=1e-6)
    x = np.array([[0.0, 2], [1, 4]], np.float32)
    np.testing.assert_allclose(loss(x, np.array([0, 1])), [2.12692809, 0.04858733], rtol=1e-6)
    sw = np.array([[0.5], [1.0]], np.float32)
    np.testing.assert_allclose(loss(x, np.array([0, 1]), sw), [1.06346405, 0.04858733], rtol=1e-6)
    assert nl.SoftmaxCELoss is nl.SoftmaxCrossEntropyLoss


def test_pick_rule_clips_truncates_and_wraps():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 5))
    labels = np.array([-3, 7, 2.9, -0.7, np.nan, np.inf, -np.inf, 1e10, 2.0**31, 3e9, 2147483520.0, 4.0])
    for dtype in (np.float16, np.float32, np.float64):
        lab = labels.astype(dtype)
        out = nl.SoftmaxCELoss()(x, lab)
        ref, _ = ref_softmax_ce(x, lab)
        np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert list(pick_ref(labels.astype(np.float32), 5)) == [0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 4, 4]
    ints = np.array([2**32 + 2, 2**40, -1, 2**31, 3, 2**31 - 1] * 2, np.int64)
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, ints)
    ref, rdx = ref_softmax_ce(x, ints)
    assert list(pick_ref(ints, 5))[:6] == [2, 0, 0, 0, 3, 4]
    _check(out, dx, ref, rdx, np.float64)
    for dtype in (np.int8, np.uint8, np.int32, np.uint32, np.uint64, np.bool_):
        lab = (np.arange(12) % 7).astype(dtype)
        _check(*nl.SoftmaxCELoss().forward_backward(x, lab)[:1], nl.SoftmaxCELoss().backward(x, lab)[0],
               *ref_softmax_ce(x, lab), np.float64)  # fmt: skip


def test_dense_gradient_is_p_times_label_sum_minus_label():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    y = rng.random((4, 6)) * 3  # rows do not sum to 1
    _, (dx,) = nl.SoftmaxCELoss(sparse_label=False).forward_backward(x, y)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    np.testing.assert_allclose(dx, p * y.sum(1, keepdims=True) - y, rtol=1e-12)


def test_kldiv_from_probabilities_sums_and_broadcasts_label():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5))
    y = rng.random((4, 5))  # broadcast against pred, not reshaped
    loss = nl.KLDivLoss(from_logits=False)
    out, (dx,) = loss.forward_backward(x, y)
    ref, rdx = ref_kldiv_softmax(x, y)
    _check(out, dx, ref, rdx, np.float64)
    out1 = nl.KLDivLoss(from_logits=False, axis=1)(x, y)
    np.testing.assert_allclose(out1, ref_kldiv_softmax(x, y, axis=1)[0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis", "sw_shape"),
    [((6, 9), -1, None), ((6, 9), -1, (6, 1)), ((3, 5, 4, 6), 1, (3, 1, 4, 6)), ((3, 4, 5), -1, (4, 1))],
)
def test_kldiv_with_labels_of_pred_shape_is_one_fused_pass(dtype, shape, axis, sw_shape):
    # Labels of pred's shape and a sample_weight constant along the class axis: the dense
    # cross-entropy kernel plus the labels' y log(y + 1e-12) (one pass); checked against the float64
    # reference, with a weight, a head gradient and caller buffers.
    from numba_losses._plan import softmax as family

    rng = np.random.default_rng(30)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.random(shape).astype(dtype) * 2  # positions do not sum to 1
    sw = None if sw_shape is None else rng.random(sw_shape).astype(dtype)
    head = rng.random(shape[0]).astype(dtype)
    loss = nl.KLDivLoss(from_logits=False, axis=axis, weight=0.7)
    lay = family.class_layout(shape, axis)
    assert family.kldiv_as_cross_entropy(loss._spec(None), lay, y.shape, sw_shape) is not None
    out, dx = np.empty(shape[0], dtype), np.empty(shape, dtype)
    got = loss.forward_backward(x, y, sw, out_grad=head, out=out, grad_out=dx)
    assert got[0] is out and got[1][0] is dx
    ref_out, ref_dx = ref_kldiv_softmax(x, y, sw, axis=axis, weight=0.7, head=head)
    _check(out, dx, ref_out, ref_dx, dtype)
    np.testing.assert_allclose(loss(x, y, sw), ref_out, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_kldiv_fused_pass_keeps_the_elementwise_terms_nan_rules():
    # MXNet's term y * (log(y + 1e-12) - lp) per element: a zero label on a -inf logit is 0 * inf = NaN,
    # a negative label a NaN log; the gradients stay those of the dense cross-entropy (finite).
    x = np.array([[0.0, -np.inf, 1.0], [0.5, 1.0, 2.0], [1.0, 2.0, 3.0]])
    y = np.array([[0.5, 0.0, 0.5], [-0.1, 0.6, 0.5], [0.2, 0.3, 0.5]])
    out, (dx,) = nl.KLDivLoss(from_logits=False).forward_backward(x, y)
    ref_out, ref_dx = ref_kldiv_softmax(x, y)
    assert np.isnan(out[:2]).all() and np.isnan(ref_out[:2]).all()
    np.testing.assert_allclose(out[2], ref_out[2], rtol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-15)


def test_kldiv_calls_the_fused_pass_cannot_take_are_planned_apart():
    from numba_losses._plan import softmax as family

    spec = nl.KLDivLoss(from_logits=False)._spec(None)
    lay = family.class_layout((3, 4, 5), -1)
    assert family.kldiv_as_cross_entropy(spec, lay, (4, 5), None) is None  # a broadcast label
    assert family.kldiv_as_cross_entropy(spec, lay, (3, 4, 5), (3, 4, 5)) is None  # a weight per class
    assert family.kldiv_as_cross_entropy(spec, lay, (3, 4, 5), (2, 3, 4, 1)) is None  # a weight adding an axis
    on_batch = nl.KLDivLoss(from_logits=False, axis=0)._spec(None)
    assert family.kldiv_as_cross_entropy(on_batch, family.class_layout((3, 4), 0), (3, 4), None) is None


def test_extreme_logits_stay_finite_and_nan_stays_in_its_row():
    x = np.array([[1e4, -1e4, 0.0], [-np.inf, 3.0, 1.0], [np.nan, 1.0, 2.0], [-1e30, -1e30, -1e30]], np.float32)
    lab = np.array([1, 2, 1, 0])
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, lab)
    ref, rdx = ref_softmax_ce(x, lab)
    assert np.isfinite(out[[0, 1, 3]]).all() and np.isnan(out[2])
    assert np.isfinite(dx[[0, 1, 3]]).all() and np.isnan(dx[2]).all()
    _check(out, dx, ref, rdx, np.float32)
    np.testing.assert_allclose(out[0], 2e4, rtol=1e-6)


@pytest.mark.parametrize("class_last", [True, False])
def test_float32_probabilities_below_the_normal_range_are_zero_in_the_gradient(class_last):
    """The documented float32 flush: a logit 87.7 or more below its row's maximum has probability 0 in
    the gradient (not a subnormal), and the loss is exact; float64 keeps the subnormal probability."""
    x = np.array([[0.0, -86.0, -87.5, -90.0, -100.0, -1e30], [3.0, 2.0, -95.0, 1.0, -200.0, 0.5]])
    lab = np.array([3, 2])
    ref, rdx = ref_softmax_ce(x, lab)  # float64 reference, one row per sample
    for dtype in (np.float32, np.float64):
        if class_last:
            out, (dx,) = nl.SoftmaxCELoss().forward_backward(x.astype(dtype), lab)
        else:  # class axis 1 of (N, C, 4): the tiled kernel; four equal positions per sample
            x3 = np.repeat(x[:, :, None], 4, axis=2).astype(dtype)
            out, (dx3,) = nl.SoftmaxCELoss(axis=1).forward_backward(x3, np.repeat(lab[:, None], 4, axis=1))
            assert (dx3 == dx3[:, :, :1]).all()
            dx = dx3[:, :, 0]
        np.testing.assert_allclose(out, ref, rtol=1e-6)
        want = rdx if class_last else rdx / 4  # the mean over the four positions
        normal = np.abs(want) >= np.finfo(dtype).tiny
        np.testing.assert_allclose(dx[normal], want[normal], rtol=1e-6)
        if dtype == np.float32:
            assert (dx[np.abs(rdx) < 2.0**-126.5] == 0).all()
        else:
            np.testing.assert_allclose(dx[~normal], want[~normal], rtol=1e-12, atol=1e-320)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("label_rows", [2, 1])  # 2: the fused pass; 1 (broadcast label): the three passes
def test_kldiv_float32_probabilities_below_the_normal_range_are_zero_in_the_gradient(axis, label_rows):
    """The same flush in KLDivLoss(from_logits=False): where the label is 0 the gradient is p * sum(y)
    (scaled), 0 in float32 when p is below 2**-126.5, the subnormal value in float64."""
    x = np.array([[0.0, -1.0, -90.0, -100.0, 2.0, -1e30], [1.0, 0.5, -95.0, -200.0, 0.0, -300.0]])
    y = np.array([[0.5, 0.3, 0.0, 0.0, 0.2, 0.0], [0.1, 0.6, 0.0, 0.0, 0.3, 0.0]])[:label_rows]
    if axis == 1:  # class axis 1 of (N, C, 3): the tiled kernels; three equal positions per sample
        x, y = np.repeat(x[:, :, None], 3, axis=2), np.repeat(y[:, :, None], 3, axis=2)
    ref, rdx = ref_kldiv_softmax(x, np.broadcast_to(y, x.shape), axis=axis)
    far = np.zeros(x.shape, bool)
    far[:, [2, 3, 5]] = True
    assert (np.abs(rdx[far]) < 2.0**-126.5).all() and (rdx[far] != 0).any()
    for dtype in (np.float32, np.float64):
        out, (dx,) = nl.KLDivLoss(from_logits=False, axis=axis).forward_backward(x.astype(dtype), y.astype(dtype))
        # the second row's KL is small (6e-4) and cancels: float32 keeps about 5 digits of it
        np.testing.assert_allclose(out, ref, rtol=1e-4 if dtype == np.float32 else 1e-10)
        np.testing.assert_allclose(dx[~far], rdx[~far], rtol=1e-5)
        if dtype == np.float32:
            assert (dx[far] == 0).all()
        else:
            np.testing.assert_allclose(dx[far], rdx[far], rtol=1e-10, atol=1e-320)


def test_long_rows_many_blocks():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 5000)) * 20).astype(np.float32)
    lab = np.array([0, 4999, 1234])
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, lab)
    _check(out, dx, *ref_softmax_ce(x, lab), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kl", [False, True], ids=["ce", "kldiv"])
def test_dense_label_sums_across_blocks_with_a_rising_maximum(kl, dtype):
    """Dense labels on rows of several 256-logit blocks, against the float64 reference: the label
    sums share the exponential pass, each block's terms taken from its own running maximum and
    shifted when a later block raises it; rows whose maximum rises in the last block, huge logits
    with a small spread (exact: ``log C`` for equal logits), a first block of masked (``-inf``)
    classes with zero labels (a NaN term, as MXNet's ``0 * -inf``), labels on masked classes only
    (``+inf``), an all ``-inf`` row and a NaN logit."""
    rng = np.random.default_rng(7)
    n = 1000
    x = rng.standard_normal((9, n)) * 3
    x[0, :] = np.linspace(-20, 20, n)  # the maximum grows in every block
    x[1, :] = np.linspace(20, -20, n)  # found in the first block
    x[2, :] = -1e30
    x[3, :] = 1e30 + np.arange(n) * 2.0**80  # huge, a small spread relative to the values
    x[4, :300] = -np.inf  # masked classes in the first block and a half; labels elsewhere
    x[5, :300] = -np.inf
    x[6, :] = -np.inf
    x[7, 777] = np.nan
    x[8, :] = 0.0
    x[8, 999] = 50.0  # the maximum only in the last (partial) block
    x = x.astype(dtype)
    y = rng.random((9, n))
    y[4, :300] = 0.0  # 0 * -inf: NaN
    y[5, 300:] = 0.0
    y[5, :300] = 1.0 / 300  # all label mass on masked classes: +inf cross-entropy
    y /= np.where(y.sum(1, keepdims=True) > 0, y.sum(1, keepdims=True), 1.0)
    y = y.astype(dtype)
    loss = nl.KLDivLoss(from_logits=False) if kl else nl.SoftmaxCELoss(sparse_label=False)
    out, (dx,) = loss.forward_backward(x, y)
    with np.errstate(invalid="ignore"):
        ref, rdx = ref_kldiv_softmax(x, y) if kl else ref_softmax_ce(x, y, sparse=False)
    assert np.isnan(out[[4, 6, 7]]).all() and np.isposinf(out[5])
    assert out.dtype == dtype
    finite = [0, 1, 2, 3, 8]
    rtol = RTOL[dtype]
    np.testing.assert_allclose(out[finite], ref[finite], rtol=rtol, atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dx[finite], rdx[finite], rtol=rtol, atol=1e-6 if dtype == np.float32 else 1e-12)
    if not kl:
        np.testing.assert_allclose(out[2], np.log(n), rtol=1e-6)  # equal logits: the shift is exact


# ----------------------------------------------------------------------------- extensions
def test_ignore_label_zeroes_rows():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4))
    lab = np.array([1, -100, 3, -100, 0, 2])
    loss = nl.SoftmaxCELoss(ignore_label=-100)
    out, (dx,) = loss.forward_backward(x, lab)
    assert (out[[1, 3]] == 0).all() and (dx[[1, 3]] == 0).all()
    _check(out, dx, *ref_softmax_ce(x, lab, ignore=-100), np.float64)
    # without ignore_label the same labels pick class 0, as MXNet does
    np.testing.assert_allclose(nl.SoftmaxCELoss()(x, lab)[1], ref_softmax_ce(x, np.array([1, 0, 3, 0, 0, 2]))[0][1])


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("from_logits", [False, True])
def test_label_smoothing_matches_reference(sparse, from_logits):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 3))
    lab = rng.integers(0, 5, (2, 3)) if sparse else rng.random((2, 5, 3))
    loss = nl.SoftmaxCELoss(axis=1, sparse_label=sparse, from_logits=from_logits, label_smoothing=0.2)
    head = rng.random(2)
    out, (dx,) = loss.forward_backward(x, lab, out_grad=head)
    ref = ref_softmax_ce(x, lab, axis=1, sparse=sparse, from_logits=from_logits, eps=0.2, head=head)
    _check(out, dx, *ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_smoothing_on_wide_and_extreme_class_last_rows(dtype):
    """The smoothing term's sum over a row on rows of 32000 classes (large offsets, a wide spread, a far
    maximum, -inf logits, huge equal logits, logits near the largest float), against the float64
    reference formula: float32 rows take it as one float64 sum, float64 rows by differences."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((7, 32000)).astype(dtype)
    x[0, 5] = 1e30  # a maximum 100 binades above the rest: the row's float64 sum rounds
    x[1] += 1e4  # a large offset, small spread
    x[2] *= 1e3  # a wide spread
    x[3, ::7] = -np.inf  # masked classes: the uniform part of the target meets -inf, the loss is +inf
    x[4] = -1e30  # all equal and huge: log C shifted exactly
    x[5, :100] = 3e4  # ties at a far maximum
    x[6, 10:14] = np.finfo(dtype).max / 2  # far above the rest: float64 data's sum of differences overflows
    lab = rng.integers(15, 32000, 7)
    lab[3] = 1  # not a masked class
    loss = nl.SoftmaxCELoss(label_smoothing=0.1)
    out, (dx,) = loss.forward_backward(x, lab)
    ref, rdx = ref_softmax_ce(x.astype(np.float64), lab, eps=0.1)
    assert out[3] == np.inf
    rtol, gtol, atol = (1e-6, 1e-5, 1e-9) if dtype == np.float32 else (1e-12, 1e-9, 1e-15)
    if dtype == np.float64:  # sum(x - m) is -inf (the reference multiplies by eps / C first): +inf, as before
        assert out[6] == np.inf
        out[6] = ref[6]
    np.testing.assert_allclose(out, ref.astype(dtype), rtol=rtol)
    np.testing.assert_allclose(dx, rdx, rtol=gtol, atol=atol)
    np.testing.assert_allclose(out[4], np.log(32000), rtol=rtol)  # every log-probability is -log C
    # an all -inf row is NaN, with or without smoothing (MXNet's x - max)
    edge = np.full((1, 5), -np.inf, dtype)
    assert np.isnan(loss(edge, np.array([2]))).all()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
def test_extensions_agree_with_torch_cross_entropy():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 6))
    lab = np.array([0, 5, -1, 2, 3, -1, 1, 4])
    tx = torch.tensor(x, requires_grad=True)
    ref = F.cross_entropy(tx, torch.tensor(lab), reduction="none", ignore_index=-1, label_smoothing=0.1)
    ref.sum().backward()
    out, (dx,) = nl.SoftmaxCELoss(ignore_label=-1, label_smoothing=0.1).forward_backward(x, lab)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_option_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="label_smoothing"):
        nl.SoftmaxCELoss(label_smoothing=1.5)(x, np.zeros(2))
    with pytest.raises(ValueError, match="sparse_label"):
        nl.SoftmaxCELoss(sparse_label=False, ignore_label=0)(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="sparse label of shape"):
        nl.SoftmaxCELoss()(x, np.zeros(3))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        nl.SoftmaxCELoss(axis=2)(x, np.zeros(2))
    with pytest.raises(ValueError, match="cannot be reshaped"):
        nl.SoftmaxCELoss(sparse_label=False)(x, np.zeros((2, 2)))
    with pytest.raises(TypeError, match="dtype"):
        nl.SoftmaxCELoss()(x.astype(np.complex128), np.zeros(2))
    with pytest.raises(ValueError, match="no classes"):
        nl.SoftmaxCELoss()(np.zeros((2, 0)), np.zeros(2))
    with pytest.raises(ValueError, match="broadcast"):
        nl.SoftmaxCELoss()(x, np.zeros(2), np.ones((3, 3)))


def test_empty_batch_and_inputs_untouched():
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(np.zeros((0, 4), np.float32), np.zeros(0))
    assert out.shape == (0,) and dx.shape == (0, 4)
    x = np.random.default_rng(0).standard_normal((3, 4))
    lab = np.array([0.0, 1.0, 3.0])
    x0, lab0 = x.copy(), lab.copy()
    nl.SoftmaxCELoss().forward_backward(x, lab, np.ones((3, 1)))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(lab, lab0)


def test_buffers_and_float16():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    lab = rng.integers(0, 7, 5)
    out_buf, grad_buf = np.empty(5, np.float32), np.empty((5, 7), np.float32)
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, lab, out=out_buf, grad_out=grad_buf)
    assert out is out_buf and dx is grad_buf
    _check(out, dx, *ref_softmax_ce(x, lab), np.float32)
    out16, (dx16,) = nl.SoftmaxCELoss().forward_backward(x.astype(np.float16), lab)
    assert out16.dtype == dx16.dtype == np.float16
    ref, rdx = ref_softmax_ce(x.astype(np.float16), lab)
    np.testing.assert_allclose(out16, ref, rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(dx16, rdx, rtol=2e-3, atol=1e-3)
    kout, (kdx,) = nl.KLDivLoss(from_logits=False).forward_backward(x.astype(np.float16), np.full((5, 7), 1 / 7))
    assert kout.dtype == kdx.dtype == np.float16


# ----------------------------------------------------------------------------- finite differences
SW_FORMS = {
    "none": lambda s: None,
    "row": lambda s: np.linspace(0.5, 1.5, s[0]).reshape((s[0],) + (1,) * (len(s) - 1)),
    # grows the weighted shape: (N, 1) loss times (N,) -> (N, N); (N, 1, W) times (4, 1) -> (N, 4, W)
    "grow": lambda s: np.linspace(0.5, 1.5, s[0]) if len(s) == 2 else np.linspace(0.5, 1.5, 4).reshape(4, 1),
}


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("sw", list(SW_FORMS))
def test_softmax_ce_finite_differences(sparse, from_logits, axis, sw):
    rng = np.random.default_rng(9)
    shape = (3, 4) if axis == -1 else (3, 4, 2)
    x = rng.standard_normal(shape)
    keep = list(shape)
    keep[axis] = 1
    lab = rng.integers(0, 4, keep).astype(np.float64) if sparse else rng.random(shape)
    s = SW_FORMS[sw](tuple(keep))
    extra = {"ignore_label": 2.0} if sparse and sw == "row" else {}
    loss = nl.SoftmaxCELoss(axis=axis, sparse_label=sparse, from_logits=from_logits, weight=0.7,
                            label_smoothing=0.1 if sw == "none" else 0.0, **extra)  # fmt: skip
    nl.check_gradient(loss, x, lab, s)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("sw", [None, "elementwise"])
def test_kldiv_softmax_finite_differences(axis, sw):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 4, 2))
    y = rng.random((4, 2))
    s = rng.random((3, 4, 1)) if sw else None
    nl.check_gradient(nl.KLDivLoss(from_logits=False, axis=axis, weight=1.3), x, y, s)


# ----------------------------------------------------------------------------- properties
@st.composite
def ce_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    batch_axis = draw(st.integers(0, ndim - 1))
    sparse = draw(st.booleans())
    from_logits = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * draw(st.sampled_from([1.0, 30.0]))).astype(dtype)
    keep = list(shape)
    keep[axis] = 1
    if sparse:
        choices = [0, 1, 2, 3, 7, -1, -5, 2.5, np.nan, np.inf, 1e12]
        lab = np.asarray(rng.choice(choices, size=keep)).astype(draw(st.sampled_from([np.float32, np.float64])))
        if draw(st.booleans()):
            lab = lab.reshape([n for d, n in enumerate(keep) if d != axis % ndim])
    else:
        lab = rng.random(shape).astype(dtype)
    sw = rng.random(keep).astype(dtype) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([0.0, 0.25]))
    return x, lab, sw, dict(axis=axis, sparse=sparse, from_logits=from_logits, batch_axis=batch_axis, eps=eps)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ce_cases())
def test_softmax_ce_property(case):
    x, lab, sw, kw = case
    loss = nl.SoftmaxCELoss(axis=kw["axis"], sparse_label=kw["sparse"], from_logits=kw["from_logits"],
                            batch_axis=kw["batch_axis"], label_smoothing=kw["eps"])  # fmt: skip
    n_out = loss(x, lab, sw).shape[0]  # the batch extent of the weighted loss (1 when it is the class axis)
    head = np.linspace(0.5, 2.0, n_out) if x.ndim > 1 else None
    out, (dx,) = loss.forward_backward(x, lab, sw, out_grad=head)
    ref, rdx = ref_softmax_ce(x, lab, sw, axis=kw["axis"], sparse=kw["sparse"], from_logits=kw["from_logits"],
                              batch_axis=kw["batch_axis"], eps=kw["eps"], head=head)  # fmt: skip
    assert out.dtype == x.dtype and dx.shape == x.shape
    _check(out, dx, ref, rdx, x.dtype.type)


# ----------------------------------------------------------------------------- CUDA backend
def _dev(a):
    from tests.test_cuda import dev

    return dev(a)


def _host(a):
    from tests.test_cuda import host

    return host(a)


CUDA_CASES = [
    ("sparse-last", dict(), (5, 9), "int"),
    ("sparse-axis1", dict(axis=1), (2, 4, 3, 2), "float"),
    ("dense", dict(sparse_label=False), (4, 6), None),
    ("dense-logits-axis0", dict(sparse_label=False, from_logits=True, axis=0), (5, 3), None),
    ("logits", dict(from_logits=True), (3, 40), "int"),
    ("smooth-ignore", dict(label_smoothing=0.3, ignore_label=2), (6, 5), "int"),
    ("long-row", dict(), (2, 300), "float"),
]


@pytest.mark.parametrize("name, kwargs, shape, labels", CUDA_CASES, ids=[c[0] for c in CUDA_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_cuda_matches_cpu(name, kwargs, shape, labels, dtype):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    loss = nl.SoftmaxCELoss(**kwargs)
    axis = kwargs.get("axis", -1) % len(shape)
    keep = shape[:axis] + shape[axis + 1 :]
    if labels is None:
        lab = rng.random(shape).astype(dtype)
    elif labels == "int":
        lab = rng.integers(-1, shape[axis] + 1, keep)
    else:
        lab = rng.choice([0.0, 1.0, 2.7, np.nan, 99.0], keep).astype(np.float32)
    sw = rng.random(shape[:1] + (1,) * (len(shape) - 1)).astype(dtype)
    head = rng.random(shape[0]).astype(dtype)
    cpu = loss.forward_backward(x, lab, sw, out_grad=head)
    gpu = loss.forward_backward(_dev(x), _dev(lab), _dev(sw), out_grad=_dev(head))
    tol = 2e-3 if dtype == np.float16 else 2e-5
    for c, g in [(cpu[0], gpu[0]), (cpu[1][0], gpu[1][0])]:
        g = _host(g)
        assert g.dtype == c.dtype and g.shape == c.shape
        np.testing.assert_allclose(g.astype(np.float64), c.astype(np.float64), rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(
        _host(loss(_dev(x), _dev(lab))).astype(np.float64), loss(x, lab).astype(np.float64), rtol=tol, atol=tol * 1e-2
    )


@pytest.mark.parametrize("axis", [-1, 1])
def test_cuda_kldiv_matches_cpu(axis):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    y = rng.random((4, 5)).astype(np.float32)
    loss = nl.KLDivLoss(from_logits=False, axis=axis)
    cpu = loss.forward_backward(x, y)
    gpu = loss.forward_backward(_dev(x), _dev(y))
    np.testing.assert_allclose(_host(gpu[0]), cpu[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(_host(gpu[1][0]), cpu[1][0], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(("shape", "axis"), [((3, 0), -1), ((0, 4), 0), ((2, 0, 3), 1)])
def test_kldiv_from_probabilities_takes_an_empty_class_axis(shape, axis):
    """A sum over no classes is 0 (an empty batch gives an empty output), as with from_logits=True;
    SoftmaxCELoss still refuses an empty class axis (there is no class to pick)."""
    x, y = np.zeros(shape), np.zeros(shape)
    want = np.zeros(shape[0] if axis != 0 else 0)
    for label in (y, y[:1]):  # the fused pass's label shape and a broadcast one
        for loss in (nl.KLDivLoss(from_logits=False, axis=axis), nl.KLDivLoss(from_logits=True, axis=axis)):
            out, (g,) = loss.forward_backward(x, label)
            np.testing.assert_array_equal(out, want)
            assert g.shape == shape and loss.result_shapes(x, label)[0].shape == want.shape
    gpu, (g,) = nl.KLDivLoss(from_logits=False, axis=axis).forward_backward(_dev(x), _dev(y))
    np.testing.assert_array_equal(_host(gpu), want)
    if 0 not in shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]:
        with pytest.raises(ValueError, match="has no classes"):
            nl.SoftmaxCELoss(axis=axis, sparse_label=False)(x, y)


def test_cuda_kldiv_unfused_path_checks_every_buffer():
    x = (np.arange(12.0).reshape(3, 4) / 10).astype(np.float16)
    xd, yd = _dev(x), _dev(np.full((1, 4), 0.25, np.float16))
    loss = nl.KLDivLoss(from_logits=False)
    with pytest.raises(ValueError, match="out must not share memory.*overlaps pred"):
        loss(xd, yd, out=xd[0, :3])
    sw = _dev(np.ones((3, 4), np.float16))
    with pytest.raises(ValueError, match="grad_out must not share memory.*overlaps sample_weight"):
        loss.forward_backward(xd, yd, sw, grad_out=sw)
    buf = _dev(np.zeros(12, np.float16))
    with pytest.raises(ValueError, match="output buffers must not share memory"):
        loss.forward_backward(xd, yd, out=buf[:3], grad_out=buf.reshape(3, 4))
    np.testing.assert_array_equal(_host(xd), x)
    np.testing.assert_array_equal(_host(sw), np.ones((3, 4), np.float16))


def test_cuda_strided_pred_and_errors():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    lab = np.array([1, 2, 3])
    cpu = nl.SoftmaxCELoss().forward_backward(x[::2, ::2], lab)
    gpu = nl.SoftmaxCELoss().forward_backward(_dev(x)[::2, ::2], _dev(lab))
    np.testing.assert_allclose(_host(gpu[0]), cpu[0], rtol=2e-5)
    np.testing.assert_allclose(_host(gpu[1][0]), cpu[1][0], rtol=2e-5, atol=1e-7)
    with pytest.raises(ValueError, match="host arrays"):
        nl.SoftmaxCELoss()(_dev(x), lab[:1].repeat(6))
    with pytest.raises(ValueError, match="sparse label of shape"):
        nl.SoftmaxCELoss()(_dev(x), _dev(np.zeros(10)))


def test_simulator_flag_is_consistent():
    from numba_losses.kernels.cuda import SIMULATOR

    assert SIMULATOR == SIMULATED


def test_masked_blocks_and_nan_positions():
    # a first block of -inf logits (masked classes) must add 0, not NaN; NaN anywhere poisons its row
    x = np.full((4, 700), -np.inf, np.float32)
    x[0, 600:] = np.linspace(-1, 1, 100)
    x[1, 650] = 2.0
    x[1, 3] = np.nan
    x[2, :] = np.linspace(-3, 3, 700)
    x[2, 0] = np.nan
    lab = np.array([650, 650, 5, 0])
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, lab)
    ref, rdx = ref_softmax_ce(x, lab)
    assert np.isfinite(out[0]) and np.isfinite(dx[0]).all()
    assert np.isnan(out[1:]).all() and np.isnan(dx[1:]).all()
    _check(out, dx, ref, rdx, np.float32)
    gpu = nl.SoftmaxCELoss().forward_backward(_dev(x[:, :80]), _dev(lab % 80))
    cpu = nl.SoftmaxCELoss().forward_backward(x[:, :80], lab % 80)
    np.testing.assert_allclose(_host(gpu[0]), cpu[0], rtol=2e-5, equal_nan=True)
    np.testing.assert_allclose(_host(gpu[1][0]), cpu[1][0], rtol=2e-5, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("n_classes", [1, 15, 16, 17, 33, 255, 256, 257, 300])
def test_row_maximum_at_every_position_and_nan_at_every_position(n_classes):
    # the block maximum runs in interleaved lanes: the row maximum (and a NaN) may sit in any
    # lane or in the tail after the last full group of lanes
    rng = np.random.default_rng(n_classes)
    x = rng.standard_normal((n_classes, n_classes))
    x[np.arange(n_classes), np.arange(n_classes)] = 40.0  # the maximum moves along the rows
    label = rng.integers(0, n_classes, n_classes)
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, label)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out, -np.log(p[np.arange(n_classes), label]), rtol=1e-12, atol=1e-13)
    onehot = np.eye(n_classes)[label]
    np.testing.assert_allclose(dx, p - onehot, rtol=1e-10, atol=1e-15)
    x_nan = rng.standard_normal((n_classes, n_classes))
    x_nan[np.arange(n_classes), np.arange(n_classes)] = np.nan
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x_nan, label)
    assert np.isnan(out).all() and np.isnan(dx).all()


@pytest.mark.parametrize(
    "kwargs, dtype",
    [
        (dict(), np.float32),
        (dict(), np.float64),  # one float64 case: each case compiles its own parallel kernels (about 15 s)
        (dict(ignore_label=3, label_smoothing=0.1), np.float32),
        (dict(sparse_label=False), np.float32),
        (dict(from_logits=True), np.float32),
    ],
    ids=["sparse-f32", "sparse-f64", "ignore-smoothing", "dense", "from-logits"],
)
def test_class_axis_one_tiles_at_parallel_size(kwargs, dtype):
    # axis=1 runs the tiled kernel: positions in tiles along the last axis (a partial last tile here),
    # vectorised log / exp per position. Special logits sit at chosen positions: a NaN, a +inf, a row
    # of -inf (log 0), a huge spread; every other position must be unaffected by its neighbours. The
    # last sample has none of them, so its loss (a mean over positions) is finite and compared.
    rng = np.random.default_rng(21)
    shape = (4, 7, 41, 130)  # the parallel variant; 41 * 130 = 5330 positions: a partial last tile
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x[0, 2, 5, 7] = np.nan
    x[1, 4, 40, 129] = np.inf
    x[2, :, 0, 0] = -np.inf
    x[2, :, 3, 3] = np.array([-1e30, 3e4, -2e4, 0, 1, 2, 3], dtype)
    sparse = kwargs.get("sparse_label", True)
    lab = rng.integers(-1, 8, (4, 41, 130)) if sparse else rng.random(shape).astype(dtype)
    x.flags.writeable = lab.flags.writeable = False  # read-only inputs (JAX hands over such buffers)
    loss = nl.SoftmaxCELoss(axis=1, **kwargs)
    head = rng.random(4).astype(dtype)
    out, (dx,) = loss.forward_backward(x, lab, out_grad=head)
    ignore = kwargs.get("ignore_label")
    ref_out, ref_dx = ref_softmax_ce(
        x, lab, axis=1, sparse=sparse, from_logits=kwargs.get("from_logits", False), ignore=ignore,
        eps=kwargs.get("label_smoothing", 0.0), head=head,
    )  # fmt: skip
    assert np.isfinite(out[3]) and (kwargs.get("from_logits") or np.isnan(out[:3]).all())
    _check(out, dx, ref_out, ref_dx, dtype)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref_dx))
    np.testing.assert_array_equal(loss(x, lab), out)  # the forward-only kernel gives the same values
    # the same positions through the class-axis-last kernel (a different implementation)
    last = nl.SoftmaxCELoss(axis=-1, **kwargs)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    ll = lab if sparse else np.ascontiguousarray(np.moveaxis(lab, 1, -1))
    out_l, (dx_l,) = last.forward_backward(xl, ll, out_grad=head)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, out_l, rtol=tol, equal_nan=True)
    np.testing.assert_allclose(dx, np.moveaxis(dx_l, -1, 1), rtol=tol, atol=tol * 1e-3, equal_nan=True)


@pytest.mark.parametrize("n_classes", [5, 21, 40])
def test_class_axis_one_keeps_small_losses_accurate_in_float32(n_classes):
    # The tiled kernel (class axis not last) sums float32 exponentials in float32 partial sums. A
    # confident position's sum is 1 + eps, eps down to 1e-7, and its loss about eps: a float32
    # "1 + eps" would lose most of eps (a relative error up to 0.5 here), so each maximum's exact 1
    # is counted apart. Each sample holds 16 positions with one margin (its mean loss is then as small
    # as each), the target in any class block; some samples have two equal maxima or equal logits.
    rng = np.random.default_rng(n_classes)
    n, width = 600, 16  # the parallel variant
    x = rng.standard_normal((n, n_classes, width)).astype(np.float32)
    lab = rng.integers(0, n_classes, (n, width))
    margin = rng.uniform(10.0, 18.0, (n, 1)).astype(np.float32)  # loss about C exp(-margin)
    np.put_along_axis(x, lab[:, None], (x.max(axis=1) + margin)[:, None], 1)
    rows = np.arange(width)
    for i in range(0, 40):  # two equal maxima: about log 2
        x[i, (lab[i] + 1) % n_classes, rows] = x[i, lab[i], rows]
    x[40:60] = 1.5  # equal logits: log C
    x64 = x.astype(np.float64)
    m = x64.max(axis=1, keepdims=True)
    per_position = np.log(np.exp(x64 - m).sum(axis=1)) - (np.take_along_axis(x64, lab[:, None], 1)[:, 0] - m[:, 0])
    got = nl.SoftmaxCELoss(axis=1)(x, lab)  # the mean over each sample's positions
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, per_position.mean(axis=1), rtol=2e-6)
    assert np.all(got[60:] < 3e-3) and got[60:].min() < 1e-6  # the confident samples were tested


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kldiv_class_axis_one_tiles_at_parallel_size(dtype):
    # KLDivLoss(from_logits=False, axis=1): the tiled log-softmax and its tiled backward, with a NaN,
    # a +inf, a position of -inf logits and a huge spread; against the reference and against the
    # class-axis-last kernels on the moved axis (the last sample is finite)
    rng = np.random.default_rng(22)
    shape = (4, 7, 41, 130)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x[0, 2, 5, 7] = np.nan
    x[1, 4, 40, 129] = np.inf
    x[2, :, 0, 0] = -np.inf
    x[2, :, 3, 3] = np.array([-1e30, 3e4, -2e4, 0, 1, 2, 3], dtype)
    y = rng.random(shape).astype(dtype)
    x.flags.writeable = y.flags.writeable = False
    head = rng.random(4).astype(dtype)
    loss = nl.KLDivLoss(from_logits=False, axis=1)
    out, (dx,) = loss.forward_backward(x, y, out_grad=head)
    ref_out, ref_dx = ref_kldiv_softmax(x, y, axis=1, head=head)
    assert np.isnan(out[:3]).all() and np.isfinite(out[3])
    _check(out, dx, ref_out, ref_dx, dtype)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref_dx))
    last = nl.KLDivLoss(from_logits=False, axis=-1)
    out_l, (dx_l,) = last.forward_backward(
        np.ascontiguousarray(np.moveaxis(x, 1, -1)), np.ascontiguousarray(np.moveaxis(y, 1, -1)), out_grad=head
    )
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, out_l, rtol=tol, equal_nan=True)
    # The gradient p * sum(y) - y cancels: the two kernels sum the exponentials in different orders and
    # dtypes (float32 partial sums in tiles, float64 lanes along rows), so their float32 gradients agree
    # to about an ulp of p * sum(y) (here up to 0.4), not of the difference.
    atol = 1e-7 if dtype == np.float32 else 1e-16
    np.testing.assert_allclose(dx, np.moveaxis(dx_l, -1, 1), rtol=tol, atol=atol, equal_nan=True)
