"""SoftmaxCELoss's ``class_weight`` and ``normalization`` options.

Checked against ``torch.nn.functional.cross_entropy`` itself (values and
gradients) and against a float64 NumPy reference written from the formulas;
the CUDA path under Numba's simulator (or a GPU) at small shapes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import numba_losses as nl
from tests.conftest import SIMULATED

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = {np.float32: 1e-6, np.float64: 1e-12}
IGNORE = -100


def _torch_ce(x, t, w, eps, reduction="mean", ignore=IGNORE):
    """PyTorch's value and gradient (float64 out), with the class axis 1."""
    xt = torch.tensor(x, requires_grad=True)
    wt = None if w is None else torch.tensor(w.astype(x.dtype))
    tt = torch.tensor(t)
    v = F.cross_entropy(xt, tt, weight=wt, ignore_index=ignore, reduction=reduction, label_smoothing=eps)
    v.sum().backward()
    return v.detach().numpy().astype(np.float64), xt.grad.numpy().astype(np.float64)


def _ours(x, t, w, eps, normalization="valid", sparse=True, sample_weight=None, ignore=IGNORE):
    loss = nl.SoftmaxCELoss(
        axis=1,
        sparse_label=sparse,
        ignore_label=ignore if sparse and ignore is not None else None,
        label_smoothing=eps,
        class_weight=w,
        normalization=normalization,
    )
    args = (x, t) if sample_weight is None else (x, t, sample_weight)
    out, (g,) = loss.forward_backward(*args)
    return out, g


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(b)))) if b.size and not np.isnan(b).all() else 1.0
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True)


def _inputs(rng, shape, dtype, ignored=0.25, probs=False):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    n, c = shape[0], shape[1]
    if probs:
        q = rng.random(shape)
        return x, (q / q.sum(axis=1, keepdims=True)).astype(dtype)
    t = rng.integers(0, c, size=(n, *shape[2:]))
    t[rng.random(t.shape) < ignored] = IGNORE
    return x, t


SHAPES = [(7, 5), (3, 4, 2, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_class_indices_match_pytorch_mean(dtype, shape, eps, weighted):
    rng = np.random.default_rng(11)
    x, t = _inputs(rng, shape, dtype)
    w = rng.random(shape[1]) * 2 if weighted else None
    if weighted:
        w[1] = 0.0  # a zero weight
    out, g = _ours(x, t, w, eps)
    assert out.shape == (shape[0],) and out.dtype == dtype
    v, gt = _torch_ce(x, t, w, eps)
    _close(out.astype(np.float64).sum(), v, TOL[dtype])
    _close(g, gt, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_probabilities_match_pytorch_mean(dtype, shape, eps, weighted):
    rng = np.random.default_rng(12)
    x, q = _inputs(rng, shape, dtype, probs=True)
    w = rng.random(shape[1]) * 2 if weighted else None
    out, g = _ours(x, q, w, eps, sparse=False)
    v, gt = _torch_ce(x, q, w, eps)
    _close(out.astype(np.float64).sum(), v, TOL[dtype])
    _close(g, gt, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sum_and_per_sample_match_pytorch(dtype, eps):
    rng = np.random.default_rng(13)
    x, t = _inputs(rng, (6, 4), dtype)
    w = rng.random(4) + 0.5
    out, g = _ours(x, t, w, eps, normalization="sum")
    v, gt = _torch_ce(x, t, w, eps, reduction="sum")
    _close(out.astype(np.float64).sum(), v, TOL[dtype])
    _close(g, gt, TOL[dtype])
    # (N, C): one position per sample, so 'sum' and 'mean' are PyTorch's reduction='none'
    for norm in ("sum", "mean"):
        out, g = _ours(x, t, w, eps, normalization=norm)
        v, gt = _torch_ce(x, t, w, eps, reduction="none")
        _close(out, v, TOL[dtype])
        _close(g, gt, TOL[dtype])


def test_all_ignored_gives_nan_value_and_zero_gradient():
    x = np.random.default_rng(1).standard_normal((3, 4))
    t = np.full(3, IGNORE)
    for eps in (0.0, 0.1):
        for w in (None, np.array([1.0, 2.0, 0.0, 3.0])):
            out, g = _ours(x, t, w, eps)
            v, gt = _torch_ce(x, t, w, eps)
            assert np.isnan(v) and np.isnan(out).all()
            np.testing.assert_array_equal(g, gt)
            np.testing.assert_array_equal(g, 0.0)


def test_zero_total_weight_matches_pytorch():
    """Every counted position has weight 0: NaN value, NaN gradient there, 0 at ignored positions."""
    x = np.random.default_rng(2).standard_normal((3, 4))
    t = np.array([2, 2, IGNORE])
    w = np.array([1.0, 2.0, 0.0, 3.0])
    for eps in (0.0, 0.1):
        out, g = _ours(x, t, w, eps)
        v, gt = _torch_ce(x, t, w, eps)
        assert np.isnan(v) and np.isnan(out).all()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(gt))
        np.testing.assert_array_equal(g[2], 0.0)


# ------------------------------------------------------------------------- NumPy float64 reference
def _log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _reference(x, t, w, eps, normalization, sample_weight, ignore=IGNORE):
    """Per-sample output and gradient of sum(out) from the documented formulas (class axis 1, float64)."""
    c = x.shape[1]
    lp = _log_softmax(x, 1)
    p = np.exp(lp)
    w = np.ones(c) if w is None else w
    counted = t != ignore
    j = np.clip(t, 0, c - 1)
    onehot = np.moveaxis(np.eye(c)[j], -1, 1)
    wb = w.reshape((1, c) + (1,) * (x.ndim - 2))
    q = ((1 - eps) * onehot * np.take(w, j)[:, None] + eps / c * wb) * counted[:, None]
    ell = -(q * lp).sum(axis=1)  # per position
    s = np.ones_like(ell) if sample_weight is None else np.broadcast_to(sample_weight[:, 0], ell.shape)
    axes = tuple(range(1, ell.ndim))
    if normalization == "mean":
        div = np.full(ell.shape[0], float(np.prod(ell.shape[1:])))
    elif normalization == "sum":
        div = np.ones(ell.shape[0])
    else:
        div = np.full(ell.shape[0], float((np.take(w, j) * counted).sum()))
    out = (s * ell).sum(axis=axes) / div
    coef = s / div.reshape((-1,) + (1,) * (ell.ndim - 1))
    grad = coef[:, None] * (p * q.sum(axis=1, keepdims=True) - q)
    return out, grad


@pytest.mark.parametrize("normalization", ["mean", "sum", "valid"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
@pytest.mark.parametrize("use_sw", [False, True])
def test_numpy_reference(normalization, eps, use_sw):
    rng = np.random.default_rng(14)
    x, t = _inputs(rng, (4, 5, 3), np.float64)
    w = rng.random(5) * 3
    sw = rng.random((4, 1, 3)) if use_sw else None  # per position (the class axis of size 1)
    out, g = _ours(x, t, w, eps, normalization, sample_weight=sw)
    ref_out, ref_g = _reference(x, t, w, eps, normalization, sw)
    _close(out, ref_out, 1e-12)
    _close(g, ref_g, 1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_from_logits(eps):
    """Log-probabilities in: the same values; the gradient -c q (w.r.t. the log-probabilities)."""
    rng = np.random.default_rng(22)
    x, t = _inputs(rng, (4, 5, 3), np.float64)
    w = rng.random(5) * 3
    lp = _log_softmax(x, 1)
    loss = nl.SoftmaxCELoss(
        axis=1, from_logits=True, ignore_label=IGNORE, label_smoothing=eps, class_weight=w, normalization="valid"
    )
    out, (g,) = loss.forward_backward(lp, t)
    ref_out, _ = _reference(x, t, w, eps, "valid", None)
    _close(out, ref_out, 1e-12)
    c = x.shape[1]
    counted = t != IGNORE
    j = np.clip(t, 0, c - 1)
    q = ((1 - eps) * np.moveaxis(np.eye(c)[j], -1, 1) * np.take(w, j)[:, None] + eps / c * w[None, :, None]) * counted[
        :, None
    ]
    _close(g, -q / (np.take(w, j) * counted).sum(), 1e-12)


def test_class_axis_last_and_float_labels():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((5, 3, 4))  # class axis last
    t = rng.integers(0, 4, size=(5, 3)).astype(np.float32)
    w = np.array([0.5, 1.0, 2.0, 4.0])
    loss = nl.SoftmaxCELoss(class_weight=w, normalization="valid")
    out, (g,) = loss.forward_backward(x, t)
    xt = torch.tensor(np.moveaxis(x, -1, 1), requires_grad=True)
    v = F.cross_entropy(xt, torch.tensor(t.astype(np.int64)), weight=torch.tensor(w))
    v.backward()
    _close(out.sum(), v.item(), 1e-12)
    _close(g, np.moveaxis(xt.grad.numpy(), 1, -1), 1e-12)


def test_out_of_range_labels_follow_the_clip_rule():
    """Class ids outside [0, C) pick (and are weighted as) class 0 or C - 1, as without class weights."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((6, 3))
    w = np.array([2.0, 3.0, 5.0])
    bad, clipped = np.array([-7, 9, 1, 3, 2.7, -0.5]), np.array([0, 2, 1, 2, 2, 0])
    for eps in (0.0, 0.2):
        out, g = _ours(x, bad, w, eps, ignore=None)
        v, gt = _torch_ce(x, clipped, w, eps)  # PyTorch on the clipped ids (it raises on the others)
        _close(out.sum(), v, 1e-12)
        _close(g, gt, 1e-12)


def test_default_is_unchanged():
    rng = np.random.default_rng(17)
    x, t = _inputs(rng, (6, 5), np.float64, ignored=0.0)
    plain = nl.SoftmaxCELoss().forward_backward(x, t)
    ones = nl.SoftmaxCELoss(class_weight=np.ones(5), normalization="mean").forward_backward(x, t)
    np.testing.assert_array_equal(plain[0], ones[0])
    np.testing.assert_array_equal(plain[1][0], ones[1][0])
    # the MXNet mean: -log softmax at the label, per sample
    np.testing.assert_allclose(plain[0], -_log_softmax(x, 1)[np.arange(6), t], rtol=1e-14)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(18)
    x, t = _inputs(rng, (4, 3), np.float32)
    w = np.array([1.0, 2.0, 3.0])
    sw = rng.random((4, 1)).astype(np.float32)
    copies = [a.copy() for a in (x, t, w, sw)]
    loss = nl.SoftmaxCELoss(ignore_label=IGNORE, label_smoothing=0.1, class_weight=w, normalization="valid")
    loss.forward_backward(x, t, sw)
    w[0] = 100.0  # the loss keeps its own copy
    assert loss._class_weight[0] == 1.0
    w[0] = 1.0
    for a, b in zip((x, t, w, sw), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation():
    with pytest.raises(ValueError, match="class_weight must be 1-D"):
        nl.SoftmaxCELoss(class_weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="class_weight must be finite"):
        nl.SoftmaxCELoss(class_weight=[1.0, np.nan])
    with pytest.raises(TypeError, match="class_weight"):
        nl.SoftmaxCELoss(class_weight=["a", "b"])
    with pytest.raises(ValueError, match="normalization must be one of"):
        nl.SoftmaxCELoss(normalization="batch")
    loss = nl.SoftmaxCELoss(class_weight=[1.0, 2.0, 3.0])
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"class_weight has 3 entries but pred \(2, 4\) has 4 classes"):
        loss(x, np.zeros(2))
    with pytest.raises(ValueError, match="class_weight has 3 entries"):
        loss.result_shapes(x, np.zeros(2))
    assert loss.result_shapes(np.zeros((2, 3)), np.zeros(2))[0].shape == (2,)
    with pytest.raises(TypeError, match="positional arguments"):
        nl.SoftmaxCELoss(-1, True, False, None, 0, None, 0.0, [1.0])  # keyword-only


def _axis1_loss(sparse, eps, class_weight, normalization):
    """SoftmaxCELoss over axis 1 with the options under test (ignored positions only with sparse labels)."""
    return nl.SoftmaxCELoss(
        axis=1,
        sparse_label=sparse,
        ignore_label=IGNORE if sparse else None,
        label_smoothing=eps,
        class_weight=class_weight,
        normalization=normalization,
    )


# ------------------------------------------------------------------------------------ CUDA
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("sparse", [True, False])
def test_cuda_matches_host(eps, sparse):
    cuda = pytest.importorskip("numba.cuda")
    if not SIMULATED and not cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(19)
    x, t = _inputs(rng, (3, 4, 2), np.float32, probs=not sparse)
    if sparse:
        t[0, 0] = IGNORE
    w = np.array([0.5, 0.0, 2.0, 1.5])
    sw = rng.random((3, 1)).astype(np.float32)
    for norm, cw in (("mean", w), ("valid", w), ("sum", None), ("valid", None)):
        loss = _axis1_loss(sparse, eps, cw, norm)
        host_out, (host_g,) = loss.forward_backward(x, t, sw)
        d = [cuda.to_device(np.ascontiguousarray(a)) for a in (x, t, sw)]
        out, (g,) = loss.forward_backward(*d)
        _close(out.copy_to_host(), host_out, 1e-6)
        _close(g.copy_to_host(), host_g, 1e-6)
    if sparse:  # D = 0 on the device: NaN values; gradient NaN at counted positions, 0 at ignored ones
        loss = nl.SoftmaxCELoss(axis=1, ignore_label=IGNORE, label_smoothing=eps, class_weight=w, normalization="valid")
        for tt in (np.full(t.shape, IGNORE), np.where(rng.random(t.shape) < 0.5, IGNORE, 1)):
            out, (g,) = loss.forward_backward(cuda.to_device(x), cuda.to_device(tt))
            assert np.isnan(out.copy_to_host()).all()
            g = g.copy_to_host()
            counted = np.broadcast_to((tt != IGNORE)[:, None], g.shape)
            assert np.isnan(g[counted]).all()
            np.testing.assert_array_equal(g[~counted], 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.int32, np.float32])
def test_cuda_target_stays_on_the_device(monkeypatch, label_dtype, dtype):
    """Class weights and ``normalization='valid'``: the dense target (smoothing or dense labels),
    each position's weight (class ids without smoothing) and the divisor of 'valid' are made on
    the device, the labels never go to the host; class axis last, float and integer class ids,
    with and without sample_weight, a divisor of 0 (every position ignored); values and gradients
    as the host's."""
    cuda = pytest.importorskip("numba.cuda")
    if not SIMULATED and not cuda.is_available():
        pytest.skip("no CUDA device")
    import numba_losses._core.device as device_core
    import numba_losses._cuda.softmax as device_softmax

    def no_host_copy(*args, **kwargs):
        raise AssertionError("the labels were copied to the host")

    rng = np.random.default_rng(23)
    w = np.array([0.5, 0.0, 2.0, 1.5, 1.0])
    x = (rng.standard_normal((6, 5)) * 3).astype(dtype)
    ids = rng.integers(0, 5, 6).astype(label_dtype)
    ids[1] = IGNORE
    ignored = np.full(6, IGNORE).astype(label_dtype)
    weightless = np.array([1, 1, IGNORE, 1, 1, 1]).astype(label_dtype)  # class 1 weighs 0: D = 0, counted positions
    q = rng.random((6, 5))
    probs = (q / q.sum(axis=1, keepdims=True)).astype(dtype)
    cases = [
        (nl.SoftmaxCELoss(ignore_label=IGNORE, class_weight=w), ids),
        (nl.SoftmaxCELoss(class_weight=w, normalization="sum"), ids),
        (nl.SoftmaxCELoss(ignore_label=IGNORE, label_smoothing=0.2, class_weight=w), ids),
        (nl.SoftmaxCELoss(ignore_label=IGNORE, label_smoothing=0.2, class_weight=w, normalization="sum"), ids),
        (nl.SoftmaxCELoss(sparse_label=False, class_weight=w), probs),
        (nl.SoftmaxCELoss(sparse_label=False, label_smoothing=0.1, class_weight=w, normalization="valid"), probs),
        # the divisor of 'valid' with class ids: with and without class weights and smoothing
        (nl.SoftmaxCELoss(ignore_label=IGNORE, class_weight=w, normalization="valid"), ids),
        (nl.SoftmaxCELoss(ignore_label=IGNORE, label_smoothing=0.2, class_weight=w, normalization="valid"), ids),
        (nl.SoftmaxCELoss(ignore_label=IGNORE, normalization="valid"), ids),
        (nl.SoftmaxCELoss(class_weight=w, normalization="valid"), ids),
        (nl.SoftmaxCELoss(ignore_label=IGNORE, class_weight=w, normalization="valid"), ignored),  # D = 0
        (nl.SoftmaxCELoss(ignore_label=IGNORE, class_weight=w, normalization="valid"), weightless),
        (nl.SoftmaxCELoss(ignore_label=IGNORE, label_smoothing=0.2, normalization="valid"), ignored),
    ]
    sw = rng.random((6, 1)).astype(dtype)
    for (loss, t), extra in itertools.product(cases, [(), (sw,)]):
        host_out, (host_g,) = loss.forward_backward(x, t, *extra)
        with monkeypatch.context() as m:
            m.setattr(device_softmax, "to_host", no_host_copy, raising=False)
            m.setattr(device_core, "to_host", no_host_copy)
            out, (g,) = loss.forward_backward(*(cuda.to_device(a) for a in (x, t, *extra)))
        _close(out.copy_to_host(), host_out, TOL[dtype])
        _close(g.copy_to_host(), host_g, TOL[dtype])
    assert np.isnan(host_out).all()  # the last case: 0 / 0


# ------------------------------------------------------------------------------------ Dask
@pytest.mark.parametrize("normalization", ["mean", "sum", "valid"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("sparse", [True, False])
def test_dask_matches_in_memory(normalization, eps, sparse):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(20)
    x, t = _inputs(rng, (6, 5, 4), np.float64, probs=not sparse)
    w = rng.random(5) * 2
    sw = rng.random((6, 1, 4))
    loss = _axis1_loss(sparse, eps, w, normalization)
    want_out, (want_g,) = loss.forward_backward(x, t, sw)
    # samples and positions split, the class axis too (made whole: no merged path with these options)
    xd = da.from_array(x, chunks=(2, 3, 2))
    td = da.from_array(t, chunks=(2, 2) if sparse else (2, 3, 2))
    for label in (td, t):  # a Dask label (the divisor is a tree sum) and a NumPy one
        out, (g,) = loss.forward_backward(xd, label, sw)
        _close(out.compute(), want_out, 1e-12)
        _close(g.compute(), want_g, 1e-12)
        assert out.shape == want_out.shape and g.shape == want_g.shape


def test_dask_all_ignored():
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(3).standard_normal((4, 3))
    t = np.full(4, IGNORE)
    loss = nl.SoftmaxCELoss(ignore_label=IGNORE, class_weight=[1.0, 2.0, 3.0], normalization="valid")
    out, (g,) = loss.forward_backward(da.from_array(x, chunks=2), da.from_array(t, chunks=2))
    assert np.isnan(out.compute()).all()
    np.testing.assert_array_equal(g.compute(), 0.0)


# ------------------------------------------------------------------------------------ adapters
def _adapter_case():
    rng = np.random.default_rng(21)
    x, t = _inputs(rng, (5, 4, 3), np.float64)
    w = np.array([0.5, 2.0, 1.0, 3.0])
    return x, t, w


def test_torch_module_with_the_options():
    import numba_losses.torch as nlt

    x, t, w = _adapter_case()
    for eps in (0.0, 0.1):
        kw = dict(axis=1, ignore_label=IGNORE, label_smoothing=eps, class_weight=w, normalization="valid")
        module = nlt.SoftmaxCELoss(**kw)
        xt = torch.tensor(x, requires_grad=True)
        out = module(xt, torch.tensor(t))
        (out * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()  # a head gradient per sample
        v, gt = _torch_ce(x, t, w, eps)
        _close(out.detach().sum().item(), v, 1e-12)
        want_out, (want_g,) = nl.SoftmaxCELoss(**kw).forward_backward(x, t, out_grad=np.arange(1.0, 6.0))
        _close(out.detach().numpy(), want_out, 1e-12)
        _close(xt.grad.numpy(), want_g, 1e-12)


def test_jax_function_with_the_options():
    jax = pytest.importorskip("jax")
    import numba_losses.jax as nlj

    x, t, w = _adapter_case()
    kw = dict(axis=1, ignore_label=IGNORE, label_smoothing=0.1, class_weight=w, normalization="valid")
    f = nlj.function(nl.SoftmaxCELoss(**kw))
    head = np.arange(1.0, 6.0)
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # float64 for this test only
    try:
        value, grad = jax.value_and_grad(lambda a: (f(a, t) * head).sum())(x)
    finally:
        jax.config.update("jax_enable_x64", old)
    want_out, (want_g,) = nl.SoftmaxCELoss(**kw).forward_backward(x, t, out_grad=head)
    _close(float(value), float((want_out * head).sum()), 1e-12)
    _close(np.asarray(grad), want_g, 1e-12)


def test_an_array_weight_points_to_class_weight():
    """PyTorch's ``weight=`` is per class; gluon's is a scalar, and the error says where class weights go."""
    x, y = np.zeros((2, 3), np.float32), np.zeros(2)
    with pytest.raises(AssertionError, match=r"class_weight="):
        nl.SoftmaxCELoss(weight=np.ones(3))(x, y)
