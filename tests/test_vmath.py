"""Accuracy of the vectorisable exp / log / log1p against NumPy (libm).

Targets (issue 2): float64 within 1e-15 relative for normal results (about 4 ulp;
measured max 2 ulp), float32 within 2 ulp after rounding, exact special values.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from numba_losses.kernels import vmath
from numba_losses.kernels._options import CPU_FASTMATH, ERROR_MODEL

FUNCS = {"exp": (vmath.vexp, np.exp), "log": (vmath.vlog, np.log), "log1p": (vmath.vlog1p, np.log1p)}


def _vectorised(fn):
    @njit(fastmath=set(CPU_FASTMATH), error_model=ERROR_MODEL)
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    return apply


_COMPILED = {name: _vectorised(f) for name, (f, _) in FUNCS.items()}


def _run(name, x):
    out = np.empty(x.shape, dtype=np.float64)
    _COMPILED[name](np.ascontiguousarray(x), out)
    return out


def _grid(name):
    rng = np.random.default_rng(1234)
    if name == "exp":
        parts = [np.linspace(-745.2, 709.78, 400_001), rng.uniform(-1, 1, 200_000), rng.uniform(-745.2, -708, 50_000)]
    elif name == "log":
        parts = [
            np.exp(rng.uniform(-744, 709, 300_000)),
            np.linspace(0.5, 2.0, 200_001),
            np.array([5e-324, 1e-320, 2.2250738585072009e-308, 2.2250738585072014e-308, 1.7976931348623157e308]),
        ]
    else:
        parts = [
            np.linspace(-0.999999, 1.0, 300_001),
            np.exp(rng.uniform(-744, 709, 200_000)),
            -np.exp(rng.uniform(-744, -1e-9, 200_000)),
            np.array([5e-324, -5e-324, 1e-300, -1e-300]),
        ]
    return np.concatenate(parts)


@pytest.mark.parametrize("name", FUNCS)
def test_float64_accuracy(name):
    x = _grid(name)
    got, ref = _run(name, x), FUNCS[name][1](x)
    finite = np.isfinite(ref) & (ref != 0)
    normal = finite & (np.abs(ref) >= np.finfo(np.float64).tiny)
    rel = np.abs(got[normal] - ref[normal]) / np.abs(ref[normal])
    assert rel.max() <= 1e-15, f"max relative error {rel.max():.3g}"
    # subnormal results: within 2 units of the last place
    sub = finite & ~normal
    assert np.all(np.abs(got[sub] - ref[sub]) <= 2 * np.spacing(np.abs(ref[sub])))


@pytest.mark.parametrize("name", FUNCS)
def test_float32_accuracy_in_ulp(name):
    with np.errstate(over="ignore"):
        x = _grid(name).astype(np.float32)
    x = x[np.isfinite(x)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # float32 overflow is expected
        got = _run(name, x).astype(np.float32)
        ref64 = FUNCS[name][1](x.astype(np.float64))
        ref = ref64.astype(np.float32)
    ok = np.isfinite(ref) & (ref != 0)
    ulps = np.abs(got[ok].astype(np.float64) - ref64[ok]) / np.spacing(np.abs(ref[ok])).astype(np.float64)
    assert ulps.max() <= 2.0, f"max error {ulps.max():.3g} ulp"


SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -2.0, 1.0, 5e-324, -5e-324, 709.79, 710.0, -745.2, -746.0]
)


@pytest.mark.parametrize("name", FUNCS)
def test_special_values_match_libm(name):
    with np.errstate(all="ignore"):
        ref = FUNCS[name][1](SPECIALS)
    got = _run(name, SPECIALS)
    np.testing.assert_array_equal(got, ref)  # NaN == NaN here; inf signs and zeros exact


def test_softplus_and_sigmoid_of_minus_abs():
    @njit(error_model=ERROR_MODEL)
    def both(x, a, b):
        for i in range(x.size):
            a[i] = vmath.softplus_neg(abs(x[i]))
            b[i] = vmath.sigmoid_neg_abs(x[i])

    x = np.concatenate(
        [
            [-800.0, -30.0, -1.0, 0.0, 1e-300, 0.5, 19.9, 20.0, 20.5, 800.0, np.inf, np.nan],
            np.linspace(-40, 40, 100_001),
            [np.log(np.sqrt(2) - 1) + d for d in (-1e-15, 0.0, 1e-15)],
        ]
    )
    a, b = np.empty_like(x), np.empty_like(x)
    both(x, a, b)
    with np.errstate(over="ignore"):
        ref_a = np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(a, ref_a, rtol=1e-15, atol=0)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(b, 1 / (1 + np.exp(np.abs(x))), rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", FUNCS)
def test_float32_special_values_match_libm(name):
    x = SPECIALS.astype(np.float32)
    with np.errstate(all="ignore"):
        ref = FUNCS[name][1](x)  # NumPy's float32 loop
    got = _run(name, x).astype(np.float32)
    exact = ~np.isfinite(ref) | (ref == 0) | (ref == 1)
    np.testing.assert_array_equal(got[exact], ref[exact])
    assert np.all(np.abs(got[~exact] - ref[~exact]) <= 2 * np.spacing(np.abs(ref[~exact])))


def test_float32_softplus_and_sigmoid():
    @njit(error_model=ERROR_MODEL)
    def both(x, a, b):
        for i in range(x.size):
            a[i] = vmath.softplus_neg(abs(x[i]))
            b[i] = vmath.sigmoid_neg_abs(x[i])

    x = np.concatenate([np.linspace(-110, 110, 200_001), [0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    both(x, a, b)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        ref_a = np.log1p(np.exp(-np.abs(x64)))
        ref_b = 1 / (1 + np.exp(np.abs(x64)))
    for got, ref in ((a, ref_a), (b, ref_b)):
        ok = np.isfinite(ref) & (ref != 0)
        ulps = np.abs(got[ok] - ref[ok]) / np.spacing(np.abs(ref[ok]).astype(np.float32))
        assert ulps.max() <= 3.0
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


def test_precision_follows_the_argument():
    @njit
    def types_of(x32, x64):
        return vmath.vexp(x32), vmath.vlog1p(x64)

    r32, r64 = types_of(np.float32(1.0), 1.0)
    assert isinstance(r32, float) and r32 == np.float32(r32)  # a float32 result (rounded), boxed
    assert abs(r32 - np.e) <= np.spacing(np.float32(np.e))
    assert r64 == np.log1p(1.0)


def _both(f, g):
    """A compiled ``both(x, a, b)``: ``a = f(x)``, ``b = g(x)`` elementwise, with the kernels' options."""

    @njit(fastmath=set(CPU_FASTMATH), error_model=ERROR_MODEL)
    def both(x, a, b):
        for i in range(x.size):
            a[i] = f(x[i])
            b[i] = g(x[i])

    return both


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_of_non_positive_arguments_is_vexp_bit_for_bit(dtype):
    """``vexp_nonpos`` drops vexp's overflow clamp and NaN select: on its domain (x <= 0, NaN) the
    results are vexp's exactly, and vexp's are libm's to the accuracy tested above."""

    both = _both(vmath.vexp, vmath.vexp_nonpos)
    rng = np.random.default_rng(7)
    lo = -110.0 if dtype == np.float32 else -760.0
    x = np.concatenate(
        [
            -np.abs(rng.standard_normal(100_000)) * 20,
            rng.uniform(lo, 0.0, 100_000),
            np.array([0.0, -0.0, -np.inf, np.nan, -1e-30, lo, -87.5, -103.9, -745.1]),
        ]
    ).astype(dtype)
    a, b = np.empty_like(x), np.empty_like(x)
    both(x, a, b)
    np.testing.assert_array_equal(a, b)  # NaN compares equal to NaN here
    assert np.isnan(b[x != x]).all() and (b[x == -np.inf] == 0).all()
    ref = np.exp(x.astype(np.float64))
    finite = np.isfinite(x) & (ref > np.finfo(dtype).tiny)
    np.testing.assert_allclose(b[finite], ref[finite], rtol=4 * np.finfo(dtype).eps)


def test_float32_exp_of_non_positive_arguments_on_every_float_with_a_subnormal_result():
    """float32 ``vexp_nonpos`` scales by ``2**(k + 24)`` and then ``2**-24`` where ``vexp`` takes two
    power-of-two steps: both round the same exact value once, so every float32 from -86 (results
    still normal) past the clamp at -104 (results 0) gives the same bits (``softplus_neg`` and
    ``sigmoid_neg_abs`` take their exponential the same way)."""

    both = _both(vmath.vexp, vmath.vexp_nonpos)
    hi, lo = np.float32(-86.0).view(np.int32), np.float32(-105.0).view(np.int32)  # negative: bits grow downwards
    x = np.arange(hi, lo + 1, dtype=np.int32).view(np.float32)  # every float32 in [-105, -86], about 2.3 million
    a, b = np.empty_like(x), np.empty_like(x)
    both(x, a, b)
    np.testing.assert_array_equal(b.view(np.int32), a.view(np.int32))
    assert (b[x < -104.0] == 0).all() and (b[x > -87.0] > np.finfo(np.float32).tiny).all()
    assert np.count_nonzero((b > 0) & (b < np.finfo(np.float32).tiny)) > 1_000_000  # the subnormal band is in


def test_flushing_exp_is_vexp_nonpos_down_to_the_smallest_normals_and_zero_below():
    """float32 ``vexp_nonpos_ftz`` scales in one step: bit for bit ``vexp_nonpos`` while the result's
    exponent is at least -126, exactly 0 further down (never more than 2**-126 off), NaN kept."""

    both = _both(vmath.vexp_nonpos, vmath.vexp_nonpos_ftz)
    rng = np.random.default_rng(11)
    x = np.concatenate(
        [
            rng.uniform(-110.0, 0.0, 200_000),
            np.linspace(-88.5, -87.0, 20_001),
            np.array([0.0, -0.0, -np.inf, np.nan, -1e-30, -87.33, -87.68, -88.0, -1e30]),
        ]
    ).astype(np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    both(x, a, b)
    assert np.isnan(b[np.isnan(x)]).all() and (b[x == -np.inf] == 0).all() and b[x == 0].tolist() == [1.0, 1.0]
    normal = x >= np.float32(-87.33)  # exp(-87.33) > 2**-126
    np.testing.assert_array_equal(b[normal], a[normal])
    assert (b[x <= -88.0] == 0).all()
    low = np.isfinite(x) & ~normal
    np.testing.assert_array_less(np.abs(b[low] - a[low]), np.finfo(np.float32).tiny)

    x64 = x.astype(np.float64)
    a64, b64 = np.empty_like(x64), np.empty_like(x64)
    both(x64, a64, b64)  # float64 keeps the exact two-step scaling
    np.testing.assert_array_equal(b64, a64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simd_running_maximum_ignores_nan(dtype):
    """``fmax.range_max`` (the softmax kernels' block maximum) against NumPy's NaN-ignoring ``fmax``."""
    from numba_losses.kernels.cpu.fmax import range_max

    @njit(error_model=ERROR_MODEL)
    def row_max(x, j0, j1):
        return range_max(x, j0, j1, x.dtype.type(-np.inf))

    rng = np.random.default_rng(3)
    for n in (1, 7, 16, 17, 255, 256, 1000):
        x = rng.standard_normal(n).astype(dtype)
        for case in range(5):
            y = x.copy()
            if case == 1:
                y[rng.integers(0, n, max(1, n // 3))] = np.nan
            elif case == 2:
                y[:] = np.nan
            elif case == 3:
                y[rng.integers(0, n)] = np.inf
            elif case == 4:
                y[:] = -np.inf
            want = np.fmax.reduce(np.concatenate([[-np.inf], y]).astype(dtype))
            want = dtype(-np.inf) if np.isnan(want) else want  # all NaN: the start value stays
            assert row_max(y, 0, n) == want, (n, case)
            j0 = n // 3
            part = np.fmax.reduce(np.concatenate([[-np.inf], y[j0:]]).astype(dtype))
            assert row_max(y, j0, n) == (dtype(-np.inf) if np.isnan(part) else part)


def test_float32_log1p_of_the_unit_interval_on_a_sweep_of_its_floats():
    """``log1p_unit`` (softplus_neg's logarithm; float32: one polynomial, no division) on every 61st
    float32 in ``[0, 1]`` (17 million) within 1.5 ulp of the float64 logarithm, and exactly ``x``
    below ``2**-24.5``, where ``x**2 R(x)`` is under half an ulp; float64 within 1e-15 relative."""

    @njit(fastmath=set(CPU_FASTMATH), error_model=ERROR_MODEL)
    def apply(x, out):
        for i in range(x.size):
            out[i] = vmath.log1p_unit(x[i])

    x = np.arange(0, np.float32(1.0).view(np.int32) + 1, 61, dtype=np.int32).view(np.float32)
    x = np.concatenate([x, np.float32([1.0, 2.0**-24.5, 2.0**-25, 2.0**-126, 1e-45, 0.0])])
    got = np.empty_like(x)
    apply(x, got)
    ref = np.log1p(x.astype(np.float64))
    ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
    ok = ref > 0
    assert (np.abs(got[ok] - ref[ok]) / ulp[ok]).max() <= 1.5
    tiny = x < 2.0**-24.5
    np.testing.assert_array_equal(got[tiny], x[tiny])

    x64 = np.concatenate([np.linspace(0.0, 1.0, 200_001), np.exp(-np.random.default_rng(2).uniform(0, 745, 100_000))])
    got64 = np.empty_like(x64)
    apply(x64, got64)
    ref64 = np.log1p(x64)
    pos = ref64 > 0
    assert (np.abs(got64[pos] - ref64[pos]) / ref64[pos]).max() <= 1e-15
