"""SDMLLoss (docs/semantics.rst section 15 and section 17 item 12) on the CPU and the CUDA backend.

The reference in ``tests/reference/sdml.py`` is a float64 NumPy transcription of docs/semantics.rst
section 15 written for this test (it shares no code with the package): the full ``(N, N, D)`` difference tensor, a
max-shifted log-softmax of ``-dist``, MXNet's smoothed targets ``eye * (1 - s) + (1 - eye) * s /
(N - 1)`` (with ``0 / 0`` on the diagonal when ``N = 1``) and the gradients
``2 sum_j G_ij (x1_i - x2_j)`` and ``-2 sum_i G_ij (x1_i - x2_j)``. Float64 finite differences
(``numba_losses.check_gradient``) check the analytic gradients independently of that formula.
The MXNet-computed golden cases run in ``test_golden.py`` / ``test_cuda.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numba_losses as nl
from numba_losses._cpu import sdml as sdml_host
from tests.conftest import CUPY_ON_GPU, SIMULATED
from tests.reference.sdml import sdml_ref

RNG = np.random.default_rng(20261123)
# derandomize: the same examples every run, so the kernel specialisations they need are
# compiled once and then come from the on-disk cache.
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _pair(n, d, dtype=np.float64, scale=1.0):
    return (RNG.standard_normal((n, d)) * scale).astype(dtype), (RNG.standard_normal((n, d)) * scale).astype(dtype)


def _close(got, want, rtol, atol_scale):
    got = np.asarray(got, dtype=np.float64)
    finite = np.abs(want[np.isfinite(want)])
    atol = atol_scale * max(1.0, float(finite.max())) if finite.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


TOL = {np.float64: (1e-10, 1e-12), np.float32: (2e-4, 2e-5), np.float16: (2e-2, 2e-3)}


def _check(loss, x1, x2, g=None, dtype=np.float64):
    out, (d1, d2) = loss.forward_backward(x1, x2, out_grad=g)
    want = sdml_ref(x1, x2, loss.smoothing_parameter, g)
    rtol, atol = TOL[dtype]
    for got, exp in zip((out, d1, d2), want, strict=True):
        _close(got, exp, rtol, atol)
    return out, d1, d2


# ------------------------------------------------------------------------------- values
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 1), (3, 6), (7, 13), (33, 5)])
@pytest.mark.parametrize("s", [0.3, 0.1, 0.45])
def test_matches_reference(dtype, shape, s):
    x1, x2 = _pair(*shape, dtype)
    g = RNG.uniform(-1.5, 1.5, shape[0])
    out, d1, d2 = _check(nl.SDMLLoss(smoothing_parameter=s), x1, x2, g, dtype)
    assert out.dtype == d1.dtype == d2.dtype == dtype
    assert out.shape == (shape[0],) and d1.shape == d2.shape == shape


def test_parallel_kernels_match_serial_bit_for_bit(monkeypatch):
    x1, x2 = _pair(37, 29)
    g = RNG.uniform(0.5, 1.5, 37)
    loss = nl.SDMLLoss()
    monkeypatch.setattr(sdml_host, "PARALLEL_CELLS", 0)  # the parallel rows kernel
    par = loss.forward_backward(x1, x2, out_grad=g)
    for got, want in zip((par[0], *par[1]), sdml_ref(x1, x2, 0.3, g), strict=True):
        _close(got, want, *TOL[np.float64])
    monkeypatch.setattr(sdml_host, "PARALLEL_CELLS", 1 << 62)
    ser = loss.forward_backward(x1, x2, out_grad=g)
    np.testing.assert_array_equal(par[0], ser[0])
    for a, b in zip(par[1], ser[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("s", [0.3, 0.1, 0.45, 0.0, 0.9])
@pytest.mark.parametrize("shape", [(4, 3), (2, 5)])
def test_gradient_finite_differences(s, shape):
    x1, x2 = _pair(*shape)
    errors = nl.check_gradient(nl.SDMLLoss(smoothing_parameter=s), x1, x2, tol=1e-6)
    assert set(errors) == {"x1", "x2"}


def test_gradient_finite_differences_parallel_kernels(monkeypatch):
    monkeypatch.setattr(sdml_host, "PARALLEL_CELLS", 0)
    x1, x2 = _pair(9, 4)
    nl.check_gradient(nl.SDMLLoss(), x1, x2, tol=1e-6)


def test_gradient_finite_differences_with_offset_inputs():
    # A common offset cancels in every difference x1_i - x2_j; the gradients must not lose it.
    x1, x2 = _pair(5, 3)
    nl.check_gradient(nl.SDMLLoss(), x1 + 300.0, x2 + 300.0, tol=1e-6)


def test_entry_points_agree():
    x1, x2 = _pair(5, 4)
    g = RNG.uniform(0.5, 1.5, 5)
    loss = nl.SDMLLoss()
    out, grads = loss.forward_backward(x1, x2, out_grad=g)
    np.testing.assert_array_equal(loss(x1, x2), out)
    np.testing.assert_array_equal(loss(x2=x2, x1=x1), out)
    for a, b in zip(loss.backward(x1, x2, out_grad=g), grads, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("head", ["none", "float", "list", "array"])
def test_head_gradient_forms(head):
    x1, x2 = _pair(4, 3)
    g = {"none": None, "float": 0.75, "list": [0.5, 1.0, -1.0, 2.0], "array": np.array([0.5, 1.0, -1.0, 2.0])}[head]
    _, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2, out_grad=g)
    _, r1, r2 = sdml_ref(x1, x2, 0.3, g)
    _close(d1, r1, *TOL[np.float64])
    _close(d2, r2, *TOL[np.float64])


def test_inputs_untouched_and_any_layout():
    base1, base2 = _pair(6, 8)
    x1, x2 = base1[:, ::2], np.asfortranarray(base2[:, 1::2])
    keep = x1.copy(), x2.copy()
    _check(nl.SDMLLoss(), x1, x2)
    np.testing.assert_array_equal(x1, keep[0])
    np.testing.assert_array_equal(x2, keep[1])
    ro1, ro2 = base1.copy(), base2.copy()
    ro1.flags.writeable = ro2.flags.writeable = False
    _check(nl.SDMLLoss(), ro1, ro2)


# ----------------------------------------------------------------------- quirks (docs/semantics.rst section 17.12)
def test_quirk12_weight_and_batch_axis_are_never_applied():
    x1, x2 = _pair(5, 3)
    plain = nl.SDMLLoss().forward_backward(x1, x2)
    for loss in (nl.SDMLLoss(weight=5.0), nl.SDMLLoss(weight=None, batch_axis=1), nl.SDMLLoss(weight="x")):
        other = loss.forward_backward(x1, x2)
        np.testing.assert_array_equal(other[0], plain[0])
        for a, b in zip(other[1], plain[1], strict=True):
            np.testing.assert_array_equal(a, b)
    loss = nl.SDMLLoss(0.2, 5.0, 1, prefix="sdml_")
    assert (loss.smoothing_parameter, loss._weight, loss._batch_axis) == (0.2, 5.0, 1)
    assert loss._output_ndim == 1
    assert nl.SDMLLoss().smoothing_parameter == 0.3 and nl.SDMLLoss()._weight == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quirk12_single_sample_gives_nan_without_error(dtype):
    # docs/semantics.rst section 15: Q = [[(1 - s) + 0/0]] -> NaN loss and NaN gradients for both inputs.
    x1, x2 = _pair(1, 4, dtype)
    out, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2)
    assert out.shape == (1,) and np.isnan(out).all()
    assert np.isnan(d1).all() and np.isnan(d2).all()
    assert np.isnan(nl.SDMLLoss()(x1, x2)).all()


@pytest.mark.parametrize("s", [1.5, -0.1])
def test_smoothing_outside_zero_one_is_refused(s):
    # s > 1 makes the diagonal target 1 - s negative (MXNet returns a NaN loss with finite gradients);
    # s < 0 an off-diagonal one: a deliberate difference, refused when the loss is built.
    with pytest.raises(ValueError, match="smoothing_parameter"):
        nl.SDMLLoss(smoothing_parameter=s)


def test_zero_smoothing_is_cross_entropy_of_the_pairs():
    # s = 0: Q = I, off-diagonal terms 0 * (log(1e-12) - lp) = 0, out_i = log(1 + 1e-12) - lp_ii.
    x1, x2 = _pair(5, 3)
    out = nl.SDMLLoss(smoothing_parameter=0.0)(x1, x2)
    logits = -((x1[:, None] - x2[None]) ** 2).sum(axis=2)
    lp_diag = np.diag(logits) - np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(out, np.log1p(1e-12) - lp_diag, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_magnitudes_do_not_overflow(dtype):
    # dist ~ 1e4..1e7: exp(-dist) underflows to 0 for every j, so an unshifted softmax gives 0/0.
    x1, x2 = _pair(6, 4, dtype, scale=300.0)
    out, d1, d2 = _check(nl.SDMLLoss(), x1, x2, dtype=dtype)
    assert np.isfinite(out).all() and np.isfinite(d1).all() and np.isfinite(d2).all()
    assert out.min() > 1e3  # the pairs are far apart: large KL


def test_float32_probabilities_in_the_subnormal_range_flush_to_zero_harmlessly():
    # Distances of a few hundred: most shifted logits of a row lie below -87.3, where float32
    # exp(logit) is subnormal; the CPU kernel flushes those probabilities to 0 (see the semantics
    # page). Values and gradients still match the float64 reference, in the parallel kernel too.
    x1, x2 = _pair(200, 8, np.float32, scale=4.0)
    assert sdml_host.PARALLEL_CELLS <= 200 * 200  # the parallel kernel
    d = ((x1[:, None, :].astype(np.float64) - x2[None, :, :]) ** 2).sum(-1)
    shifted = d.min(axis=1, keepdims=True) - d
    assert ((shifted < -87.4) & (shifted > -103.0)).mean() > 0.01  # the subnormal window is populated
    g = RNG.uniform(0.5, 1.5, 200)
    _check(nl.SDMLLoss(), x1, x2, g, dtype=np.float32)


@pytest.mark.parametrize("off", [1e3, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_common_offset_is_harmless(dtype, off):
    # The distances are taken as |a|^2 + |b|^2 - 2 a.b of the inputs minus their mean: without
    # the centring, an offset of 1e4 leaves no correct digit of a float32 distance of about 1.
    x1, x2 = _pair(6, 5, dtype)
    _check(nl.SDMLLoss(), x1 + dtype(off), x2 + dtype(off), dtype=dtype)


def test_close_pairs_far_from_the_centre_keep_float32_accuracy():
    # Two clusters at -1e3 and +1e3 (the mean is near 0): within a cluster the distances are
    # about 1 while |a|^2 + |b|^2 is about 1e7, so the expansion alone would cancel every digit
    # (the kernel sums those distances directly). Smoothing 0: the loss is -lp_ii, set by
    # the close pairs alone. The values are compared against float64 math on the same inputs.
    n, d = 24, 8
    x1 = RNG.standard_normal((n, d))
    x2 = x1 + 0.3 * RNG.standard_normal((n, d))
    side = np.where(np.arange(n)[:, None] % 2 == 0, 1e3, -1e3)
    x1, x2 = (x1 + side).astype(np.float32), (x2 + side).astype(np.float32)
    out = nl.SDMLLoss(smoothing_parameter=0.0)(x1, x2)
    want = sdml_ref(x1, x2, 0.0)[0]
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("permute", [False, True])
def test_one_close_pair_per_row_on_and_off_the_diagonal(permute):
    # Paired embeddings: each x2 row a small step from one x1 row, every other pair far apart, so
    # each row of distances has one cancelling (directly summed) entry: its own pair (the
    # kernel's one-entry path) or, with x2's rows permuted, another column (the general scan).
    # Values and both gradients against float64 math on the same float32 inputs.
    n, d = 40, 16
    x1 = 3.0 * RNG.standard_normal((n, d))
    x2 = x1 + 1e-3 * RNG.standard_normal((n, d))
    if permute:
        x2 = x2[RNG.permutation(n)]
    x1, x2 = x1.astype(np.float32), x2.astype(np.float32)
    g = RNG.uniform(0.5, 1.5, n).astype(np.float32)
    out, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2, out_grad=g)
    want = sdml_ref(x1, x2, 0.3, g)
    for got, ref in zip((out, d1, d2), want, strict=True):
        _close(got, ref, *TOL[np.float32])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_inputs_give_the_direct_formulas_values(dtype):
    # inf / NaN rows: the expansion would give inf - inf; their distances are summed directly,
    # so the results are the non-finite values of the direct formula (inf loss where a distance
    # is inf, NaN in the row of a NaN input).
    x1, x2 = _pair(6, 3, dtype)
    x2[2, 1] = np.inf
    x1[4, 0] = np.nan
    out, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2)
    with np.errstate(all="ignore"):
        want = sdml_ref(x1, x2, 0.3)
    for got, exp in zip((out, d1, d2), want, strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(exp))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(exp))
    np.testing.assert_array_equal(out, want[0].astype(dtype))


def test_identical_inputs_and_constants():
    # x1 == x2 == 0: dist = 0, lp = -log N, out = sum_j Q_ij (log(Q_ij + 1e-12) + log N), G = Q - r/N.
    n, s = 4, 0.3
    out, (d1, d2) = nl.SDMLLoss(s).forward_backward(np.zeros((n, 2)), np.zeros((n, 2)))
    qd, qo = 1 - s, s / (n - 1)
    row = qd * (np.log(qd + 1e-12) + np.log(n)) + (n - 1) * qo * (np.log(qo + 1e-12) + np.log(n))
    np.testing.assert_allclose(out, np.full(n, row), rtol=1e-13)
    np.testing.assert_array_equal(d1, 0.0)
    np.testing.assert_array_equal(d2, 0.0)


# ------------------------------------------------------------------------------- dtypes, sizes
def test_float16_inputs_compute_in_float32_and_return_float16():
    x1, x2 = _pair(5, 3, np.float16)
    out, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2)
    assert out.dtype == d1.dtype == d2.dtype == np.float16
    want32 = nl.SDMLLoss().forward_backward(x1.astype(np.float32), x2.astype(np.float32))
    np.testing.assert_array_equal(out, want32[0].astype(np.float16))
    np.testing.assert_array_equal(d1, want32[1][0].astype(np.float16))
    _check(nl.SDMLLoss(), x1, x2, dtype=np.float16)


def test_integer_inputs_compute_in_float64():
    x1 = RNG.integers(-3, 4, (4, 3))
    x2 = RNG.integers(-3, 4, (4, 3)).astype(np.int32)
    out, d1, d2 = _check(nl.SDMLLoss(), x1, x2)
    assert out.dtype == d1.dtype == d2.dtype == np.float64


def test_mixed_float_dtypes_follow_x1():
    x1, x2 = _pair(4, 3, np.float32)
    out, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2.astype(np.float64))
    assert out.dtype == d1.dtype == d2.dtype == np.float32
    ref = nl.SDMLLoss().forward_backward(x1, x2)
    np.testing.assert_array_equal(out, ref[0])


@pytest.mark.parametrize("shape", [(0, 3), (0, 0), (3, 0)])
def test_empty_extents(shape):
    x1, x2 = np.zeros(shape), np.zeros(shape)
    out, (d1, d2) = nl.SDMLLoss().forward_backward(x1, x2)
    assert out.shape == (shape[0],) and d1.shape == d2.shape == shape
    if shape[0]:  # D = 0: every distance is 0, the same as identical inputs
        same = nl.SDMLLoss()(np.ones((shape[0], 2)), np.ones((shape[0], 2)))
        np.testing.assert_allclose(out, same, rtol=1e-14)


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros(3), np.zeros(3), "2-D"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), "2-D"),
        (np.zeros((2, 3)), np.zeros((3, 3)), "equal shapes"),
        (np.zeros((2, 3)), np.zeros((2, 4)), "equal shapes"),
        (np.zeros((2, 3)), np.zeros(6), "2-D"),
    ],
)
def test_shape_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        nl.SDMLLoss()(a, b)


def test_call_and_dtype_errors():
    x = np.zeros((2, 3))
    loss = nl.SDMLLoss()
    with pytest.raises(TypeError, match="missing"):
        loss(x)
    with pytest.raises(TypeError, match="at most 2"):
        loss(x, x, x)
    with pytest.raises(TypeError, match="unexpected input"):
        loss(x, x, sample_weight=x)
    with pytest.raises(TypeError, match="dtype"):
        loss(x.astype(np.complex128), x)
    with pytest.raises(TypeError, match="dtype"):
        loss(x, np.full((2, 3), "a"))
    with pytest.raises(TypeError, match="smoothing_parameter"):
        nl.SDMLLoss(smoothing_parameter="big")(x, x)
    with pytest.raises(ValueError, match="out_grad"):
        loss.forward_backward(x, x, out_grad=np.ones(3))


# ------------------------------------------------------------------------------- buffers
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_out_and_grad_out_buffers(dtype):
    x1, x2 = _pair(5, 3, dtype)
    loss = nl.SDMLLoss()
    want = loss.forward_backward(x1, x2)
    out = np.full(5, np.nan, dtype)
    g1, g2 = np.full((5, 3), np.nan, dtype), np.full((5, 3), np.nan, dtype)
    got, grads = loss.forward_backward(x1, x2, out=out, grad_out=(g1, g2))
    assert got is out and grads[0] is g1 and grads[1] is g2
    np.testing.assert_array_equal(out, want[0])
    np.testing.assert_array_equal(g1, want[1][0])
    np.testing.assert_array_equal(g2, want[1][1])
    g2b = np.zeros((5, 3), dtype)
    only = loss.backward(x1, x2, grad_out=[None, g2b])
    assert only[1] is g2b and only[0] is not None
    np.testing.assert_array_equal(only[0], want[1][0])
    np.testing.assert_array_equal(g2b, want[1][1])
    out2 = np.empty(5, dtype)
    assert loss(x1, x2, out=out2) is out2
    np.testing.assert_array_equal(out2, want[0])


def test_buffer_errors():
    x1, x2 = _pair(4, 3)
    loss = nl.SDMLLoss()
    with pytest.raises(ValueError, match="shape"):
        loss(x1, x2, out=np.empty(3))
    with pytest.raises(TypeError, match="dtype"):
        loss(x1, x2, out=np.empty(4, np.float32))
    with pytest.raises(TypeError, match="tuple of 2 buffers"):  # every multi-gradient loss's rule
        loss.forward_backward(x1, x2, grad_out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="expected 2"):
        loss.forward_backward(x1, x2, grad_out=(np.empty((4, 3)),))
    with pytest.raises(ValueError, match="shape"):
        loss.forward_backward(x1, x2, grad_out=(np.empty((4, 2)), None))
    with pytest.raises(ValueError, match="share memory"):
        loss.forward_backward(x1, x2, grad_out=(x1, None))
    buf = np.empty((4, 3))
    with pytest.raises(ValueError, match="share memory"):
        loss.forward_backward(x1, x2, grad_out=(buf, buf))


# ------------------------------------------------------------------------------- compilation
def test_kernels_use_the_central_options():
    from numba_losses.kernels import _options
    from numba_losses.kernels.cpu import sdml as cpu_sdml

    kernel = cpu_sdml.build_sdml_kernels(False)
    assert kernel.targetoptions["fastmath"] == set(_options.CPU_FASTMATH)
    assert kernel.targetoptions["error_model"] == _options.ERROR_MODEL
    assert _options.source_fingerprint() * 2 in [c.cell_contents for c in kernel.py_func.__closure__]
    # the sums are sums and nothing else: reassociation lets them vectorise
    for helper in (cpu_sdml.sq_norm, cpu_sdml.sq_dist, cpu_sdml.add_to):
        assert helper.targetoptions["fastmath"] == set(_options.SUM_FASTMATH)
    assert not {"nnan", "ninf"} & (set(_options.SUM_FASTMATH) | set(_options.CPU_FASTMATH))


def test_second_process_loads_the_kernels_from_cache():
    from numba_losses.kernels import _options

    if not _options.CACHE:
        pytest.skip("the kernel cache is disabled (NUMBA_LOSSES_CACHE=0)")
    code = textwrap.dedent(
        """
        import numpy as np, numba_losses as nl
        from numba_losses.kernels.cpu.sdml import build_sdml_kernels
        nl.SDMLLoss().forward_backward(np.ones((4, 3)), np.zeros((4, 3)))
        k = build_sdml_kernels(False)
        print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))
        """
    )
    root = Path(__file__).resolve().parent.parent

    def run():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split()

    run()  # compiles (or already loads) the serial float64 kernels
    assert run() == ["1", "0"]


# ------------------------------------------------------------------------------- properties
@SETTINGS
@given(
    n=st.integers(1, 8),
    d=st.integers(0, 6),
    s=st.floats(0.0, 0.95),
    dtype=st.sampled_from([np.float32, np.float64]),
    scale=st.sampled_from([0.1, 1.0, 4.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(n, d, s, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x1 = (rng.standard_normal((n, d)) * scale).astype(dtype)
    x2 = (rng.standard_normal((n, d)) * scale).astype(dtype)
    g = rng.uniform(-2.0, 2.0, n)
    _check(nl.SDMLLoss(smoothing_parameter=s), x1, x2, g, dtype)


# ------------------------------------------------------------------------------- CUDA
try:
    from numba import cuda
except ImportError:  # numba-cuda not installed: the CPU tests above still run
    cuda = None
needs_cuda = pytest.mark.skipif(
    cuda is None or (not SIMULATED and not cuda.is_available()), reason="no CUDA device or simulator"
)


@pytest.fixture
def fast_simulator():
    """The simulator runs one Python thread per GPU thread and polls them at every
    ``syncthreads``; a short GIL switch interval makes the tiled kernels several times faster."""
    old = sys.getswitchinterval()
    if SIMULATED:
        sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


CUDA_CASES = [((3, 4), np.float32), ((5, 2), np.float64), ((4, 3), np.float16), ((6, 9), np.float32)]


@needs_cuda
@pytest.mark.parametrize(("shape", "dtype"), CUDA_CASES, ids=lambda v: str(getattr(v, "__name__", v)))
def test_cuda_matches_cpu(fast_simulator, shape, dtype):
    x1, x2 = _pair(*shape, dtype)
    g = RNG.uniform(-1.5, 1.5, shape[0])
    loss = nl.SDMLLoss(smoothing_parameter=0.2)
    c_out, (c1, c2) = loss.forward_backward(x1, x2, out_grad=g)
    d_out, (d1, d2) = loss.forward_backward(dev(x1), dev(x2), out_grad=dev(g))
    tol = {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-12}[dtype]
    for c, d in ((c_out, d_out), (c1, d1), (c2, d2)):
        d = host(d)
        assert d.dtype == c.dtype and d.shape == c.shape
        _close(d, c.astype(np.float64), tol, tol)
    np.testing.assert_array_equal(host(loss(dev(x1), dev(x2))), host(d_out))


@needs_cuda
def test_cuda_single_sample_nan_and_float_head(fast_simulator):
    x1, x2 = _pair(1, 3, np.float32)
    out, (d1, d2) = nl.SDMLLoss().forward_backward(dev(x1), dev(x2), out_grad=0.5)
    assert np.isnan(host(out)).all() and np.isnan(host(d1)).all() and np.isnan(host(d2)).all()
    x1, x2 = _pair(3, 2)
    _, (d1, d2) = nl.SDMLLoss().forward_backward(dev(x1), dev(x2), out_grad=0.5)
    _, r1, r2 = sdml_ref(x1, x2, 0.3, 0.5)
    _close(host(d1), r1, *TOL[np.float64])
    _close(host(d2), r2, *TOL[np.float64])


@needs_cuda
def test_cuda_buffers_strided_inputs_and_backward(fast_simulator):
    base1, base2 = _pair(3, 6, np.float32)
    x1, x2 = dev(base1)[:, ::2], dev(base2)[:, 1::2]
    loss = nl.SDMLLoss()
    want = loss.forward_backward(base1[:, ::2], base2[:, 1::2])
    out = cuda.device_array(3, np.float32)
    g1, g2 = cuda.device_array((3, 3), np.float32), cuda.device_array((3, 3), np.float32)
    got, grads = loss.forward_backward(x1, x2, out=out, grad_out=(g1, g2))
    assert got is out and grads[0] is g1 and grads[1] is g2
    for c, d in ((want[0], out), (want[1][0], g1), (want[1][1], g2)):
        _close(host(d), c.astype(np.float64), 2e-5, 2e-5)
    only = loss.backward(x1, x2)
    _close(host(only[1]), want[1][1].astype(np.float64), 2e-5, 2e-5)


@needs_cuda
def test_cuda_errors(fast_simulator):
    x = np.zeros((2, 3), np.float32)
    loss = nl.SDMLLoss()
    with pytest.raises(ValueError, match="host arrays"):
        loss(dev(x), x)
    with pytest.raises(ValueError, match="equal shapes"):
        loss(dev(x), dev(np.zeros((3, 3), np.float32)))
    with pytest.raises(ValueError, match="2-D"):
        loss(dev(np.zeros(3, np.float32)), dev(np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match="device array"):
        loss(dev(x), dev(x), out=np.empty(2, np.float32))
    xd = dev(x)
    with pytest.raises(ValueError, match="share memory"):
        loss.forward_backward(xd, dev(x), grad_out=(xd, None))
    with pytest.raises(ValueError, match="out_grad"):
        loss.forward_backward(dev(x), dev(x), out_grad=dev(np.ones(3, np.float32)))
    out, (d1, d2) = loss.forward_backward(dev(np.zeros((0, 3))), dev(np.zeros((0, 3))))
    assert host(out).shape == (0,) and host(d1).shape == (0, 3)


def _clusters(n, d, dtype=np.float32):
    """Pairs ``x2 = x1 + noise`` in two clusters at -1e3 and +1e3: distances of about 1 that the
    expansion ``|a|^2 + |b|^2 - 2 a.b`` alone would lose (see the test above)."""
    x1 = RNG.standard_normal((n, d))
    x2 = x1 + 0.3 * RNG.standard_normal((n, d))
    side = np.where(np.arange(n)[:, None] % 2 == 0, 1e3, -1e3)
    return (x1 + side).astype(dtype), (x2 + side).astype(dtype)


@needs_cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator's threads compute the inf row with NumPy scalars
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_rows_kernel_on_a_matrix_product(fast_simulator, dtype):
    # The cuBLAS path's rows kernel (expand=True) on P = a b^T of the centred inputs, taken here
    # with NumPy: distances from the expansion, summed directly where it cancels (the clusters)
    # or where a norm is not finite (an inf in x1); then the gradients from G as the CuPy path
    # assembles them, all against the float64 reference on the same inputs.
    from numba_losses._plan.sdml import centred, targets
    from numba_losses.kernels.cuda.sdml import ROW_THREADS, build_sdml_kernels

    n, d = 6, 4
    x1, x2 = _clusters(n, d, dtype)
    x1[3, 1] = np.inf
    g = RNG.uniform(0.5, 1.5, n).astype(dtype)
    a, b = centred(np, x1, x2, np.dtype(dtype))
    with np.errstate(all="ignore"):
        na, nb = (a * a).sum(axis=1), (b * b).sum(axis=1)
        gm = a @ b.T
    q = targets(0.0, n, np.dtype(dtype))
    out = cuda.device_array(n, dtype)
    gm_d = cuda.to_device(gm)
    rows_kernel = build_sdml_kernels(np.dtype(dtype).name, not SIMULATED)[1]
    args = (q.qd, q.qo, q.log_qd, q.log_qo, q.r, cuda.to_device(g), True, out)
    with np.errstate(all="ignore"):
        rows_kernel[2, ROW_THREADS](gm_d, True, *(cuda.to_device(v) for v in (na, nb, a, b)), *args)
        want = sdml_ref(x1, x2, 0.0, g)
        gmat = gm_d.copy_to_host().astype(np.float64)
        dx1 = 2.0 * (gmat.sum(axis=1)[:, None] * a - gmat @ b)
        dx2 = 2.0 * (gmat.sum(axis=0)[:, None] * b - gmat.T @ a)
    finite = np.isfinite(want[0])
    assert finite.sum() == n - 1  # row 3: every distance inf, NaN logits
    for got, exp in zip((host(out), dx1, dx2), want, strict=True):
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(exp))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(host(out)[finite], want[0][finite], rtol=tol, atol=tol)
    rows = np.isfinite(want[1]).all(axis=1)
    np.testing.assert_allclose(dx1[rows], want[1][rows], rtol=tol, atol=tol * np.abs(want[1][rows]).max())


needs_cupy = pytest.mark.skipif(not CUPY_ON_GPU, reason="needs CuPy on a GPU")


@needs_cupy
@pytest.mark.parametrize("library", ["cupy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_cublas_path_matches_the_host(library, dtype):
    # CuPy arrays and PyTorch CUDA tensors take the cuBLAS products (numba_losses._cuda.sdml).
    import cupy

    if library == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("needs PyTorch with CUDA")
        to_dev, to_host = (lambda a: torch.from_numpy(np.ascontiguousarray(a)).cuda()), (lambda a: a.cpu().numpy())
    else:
        to_dev, to_host = cupy.asarray, cupy.asnumpy
    loss = nl.SDMLLoss(smoothing_parameter=0.2)
    for x1, x2 in (_pair(96, 40, dtype), _clusters(64, 16, dtype)):
        g = RNG.uniform(-1.5, 1.5, x1.shape[0])
        want = loss.forward_backward(x1, x2, out_grad=g)
        got = loss.forward_backward(to_dev(x1), to_dev(x2[:, :]), out_grad=to_dev(g))
        tol = {np.float16: 2e-3, np.float32: 1e-4, np.float64: 1e-10}[dtype]
        for c, d in ((want[0], got[0]), (want[1][0], got[1][0]), (want[1][1], got[1][1])):
            d = to_host(d)
            assert d.dtype == c.dtype and d.shape == c.shape
            _close(d, c.astype(np.float64), tol, tol)
        np.testing.assert_array_equal(to_host(loss(to_dev(x1), to_dev(x2))), to_host(got[0]))
