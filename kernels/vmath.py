"""Vectorisable exp, log and log1p for Numba kernels.

PyPI's llvmlite links no vector math library, so ``math.exp`` inside an
``@njit`` loop is a scalar libm call that blocks loop vectorisation. The
functions here use only arithmetic and integer bit manipulation,
so LLVM can vectorise the loops that inline them.

Each public function (``vexp``, ``vexp_nonpos``, ``vexp_nonpos_ftz``, ``vlog``, ``vlog1p``,
``log1p_unit``, ``softplus_neg``, ``sigmoid_neg_abs``) has a float64 and a float32 implementation and picks one
by its argument's type at compile time: float32 arguments are computed in
float32 arithmetic (8 SIMD lanes on AVX2) with shorter polynomials, accurate to
2 ulp (tested); float64 ones within 1e-15 relative (tested; about 2 ulp).
Special values follow C99 Annex F: ``exp(-inf) = 0``, ``exp(+inf) = +inf``,
``log(0) = -inf``, ``log(x<0) = NaN``, ``log1p(-1) = -inf``, NaN in gives NaN
out; subnormal inputs and results are handled.

``vexp_nonpos`` is ``vexp`` for arguments known to be at most 0 or NaN (such
as ``x - max(x)``, or ``-|x|`` inside ``softplus_neg`` and
``sigmoid_neg_abs``): it skips the overflow clamp and the NaN select (the
arithmetic carries NaN through), about 30% faster, with the same results.
``vexp_nonpos_ftz`` (float32; float64 arguments get ``vexp_nonpos``) also
scales by ``2**k`` in one step instead of two, a further 20% of the softmax
kernels' time: results below ``2**-126.5`` (about 8e-39, where float32 is
subnormal) flush to 0. It is for terms of a softmax sum, which is at least 1,
and for probabilities, where such values are 0 to float32's precision.

Methods (textbook, after Cody & Waite and Tang): ``exp`` reduces
``x = k ln2 + r``, ``|r| <= ln2/2``, with a two-part ``ln2``, evaluates a
degree-13 Taylor polynomial (float32: a degree-6 minimax one, relative error
3e-9 before rounding) by Estrin's scheme, then scales by
``2**k`` in two exact power-of-two steps (subnormal results rounded once; float32 arguments
known to be at most 0 take one power ``2**(k + 24)`` and then the exact ``2**-24``, with the
same results). ``log`` and ``log1p`` split the argument into ``2**k * (1 + f)`` with ``1 + f``
in ``[sqrt(2)/2, sqrt(2))`` and use ``log(1+f) = 2 atanh(s)``, ``s = f / (2 + f)``, with the classic fdlibm
minimax coefficients for the odd series; ``log1p`` folds the rounding error of
``1 + x`` back into ``f``. No division but ``f / (2 + f)``. ``log1p_unit`` (``log(1 + x)`` for
``x`` in ``[0, 1]``, the logarithm of ``softplus_neg``) takes the exact reduction
``1 + x = 2 (1 + (x - 1) / 2)`` above ``sqrt(2) - 1`` in float64, and in float32 one degree-8
minimax polynomial, ``x + x**2 R(x)``, with no reduction and no division.

The implementations are ``register_jitable(**HELPER)`` (forced inlining, no wrappers) and the
public names are ``overload``-s, so everything inlines into the calling kernel
(LLVM would not inline the nested calls on its own, which blocks vectorising).
Callers must not compile them with the ``reassoc`` fast-math flag, which would
let LLVM fold away the two-part constants and the compensation terms.
"""

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ._options import HELPER
from .primitives import bits_float, float_bits, like, pow2_integral

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # 32 trailing zero bits: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_HI = 710.0  # exp(710) overflows to +inf
_EXP_LO = -746.0  # exp(-746) underflows to 0

# 1/n! for n = 2..13 (Taylor coefficients of exp)
_E2 = 0.5
_E3 = 1.0 / 6.0
_E4 = 1.0 / 24.0
_E5 = 1.0 / 120.0
_E6 = 1.0 / 720.0
_E7 = 1.0 / 5040.0
_E8 = 1.0 / 40320.0
_E9 = 1.0 / 362880.0
_E10 = 1.0 / 3628800.0
_E11 = 1.0 / 39916800.0
_E12 = 1.0 / 479001600.0
_E13 = 1.0 / 6227020800.0

# fdlibm's minimax coefficients for (log(1+f) - 2s) / (2s) ~ z*(Lg1 + z*(Lg2 + ...)), z = s*s
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01

_MANT_MASK = 0x000FFFFFFFFFFFFF
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD  # bits of sqrt(2)/2
_ONE_BITS = 0x3FF0000000000000
_TWO54 = 18014398509481984.0  # 2**54, lifts subnormals into the normal range
_SMALLEST_NORMAL = 2.2250738585072014e-308
_SQRT2_M1 = 0.41421356237309503  # sqrt(2) - 1
_TWO52 = 4503599627370496.0  # 2**52
_TWO52_BITS = 0x4330000000000000  # bits of 2**52
_POW2_BIAS = 1023.0 + _TWO52
_ROUND = 6755399441055744.0  # 1.5 * 2**52: (v + _ROUND) - _ROUND rounds v to an integer


@register_jitable(**HELPER)
def _small_int_to_float_64(i):
    """Exact float of an int64 in [0, 2**52) without a (non-vectorisable on AVX2) conversion."""
    return bits_float(np.int64(i | _TWO52_BITS)) - _TWO52


@register_jitable(**HELPER)
def _vexp_nonpos_64(x):
    r"""Exponential of ``x <= 0`` or NaN (which the arithmetic carries through), vectorisable.

    Valid up to ``_EXP_HI`` (:func:`_vexp_64` calls it after its overflow clamp); clamped below
    at ``_EXP_LO``, where the result is 0.

    .. math:: \exp(x) = 2^k \, e^r, \quad k = \mathrm{round}(x \log_2 e),
              \quad r = x - k \ln 2
    """
    xc = np.float64(x)
    if xc < _EXP_LO:
        xc = _EXP_LO
    kf = (xc * _LOG2E + _ROUND) - _ROUND  # nearest integer, no floor (not on every target)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    # Estrin's scheme: the same polynomial with a dependency depth of 5 instead of 13
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    a0 = 1.0 + r
    a1 = _E2 + _E3 * r
    a2 = _E4 + _E5 * r
    a3 = _E6 + _E7 * r
    a4 = _E8 + _E9 * r
    a5 = _E10 + _E11 * r
    a6 = _E12 + _E13 * r
    b0 = a0 + a1 * r2
    b1 = a2 + a3 * r2
    b2 = a4 + a5 * r2
    d0 = b0 + b1 * r4
    d1 = b2 + a6 * r4
    p = d0 + d1 * r8
    k1 = (kf * 0.5 + _ROUND) - _ROUND
    return (p * pow2_integral(k1)) * pow2_integral(kf - k1)


@register_jitable(**HELPER)
def _vexp_64(x):
    """Exponential, vectorisable: clamped to the finite range, NaN returned as given."""
    x = np.float64(x)
    xc = x
    if xc > _EXP_HI:
        xc = _EXP_HI
    res = _vexp_nonpos_64(xc)
    if x != x:
        res = x
    return res


@register_jitable(**HELPER)
def _log_reduced_64(f, dk, c):
    """log(2**dk * (1 + f)) + c for 1 + f in [sqrt(2)/2, sqrt(2)), f and dk exact, c tiny."""
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    return s * (hfsq + t1 + t2) + (dk * _LN2_LO + c) - hfsq + f + dk * _LN2_HI


@register_jitable(**HELPER)
def _log_specials(x, pole, res):
    """C99 special cases of a logarithm with its pole at ``pole`` (0 for log, -1 for log1p)."""
    if x == pole:
        res = like(x, -np.inf)
    if x < pole:
        res = like(x, np.nan)
    if x == like(x, np.inf):
        res = x
    if x != x:
        res = x
    return res


@register_jitable(**HELPER)
def _vlog_64(x):
    r"""Natural logarithm, vectorisable.

    .. math:: \log x = k \ln 2 + \log(1 + f), \quad x = 2^k (1 + f)
    """
    x = np.float64(x)
    xs = x
    kadj = 1023.0
    if x < _SMALLEST_NORMAL:
        xs = x * _TWO54
        kadj = 1023.0 + 54.0
    ix = float_bits(np.float64(xs)) + (_ONE_BITS - _SQRT_HALF_BITS)
    dk = _small_int_to_float_64(ix >> 52) - kadj
    m = bits_float(np.int64((ix & _MANT_MASK) + _SQRT_HALF_BITS))
    res = _log_reduced_64(m - 1.0, dk, 0.0)
    return _log_specials(x, 0.0, res)


@register_jitable(**HELPER)
def _vlog1p_64(x):
    r"""``log(1 + x)``, accurate for small ``|x|``, vectorisable.

    .. math:: \log(1 + x) = k \ln 2 + \log(1 + f), \quad
              1 + f = 2^{-k} (u + c), \quad u = \mathrm{fl}(1 + x), \quad c = x - (u - 1)

    (for ``k >= 2`` the rounding error is taken as ``c = 1 - (u - x)``).
    """
    x = np.float64(x)
    u = 1.0 + x
    iu = float_bits(np.float64(u)) + (_ONE_BITS - _SQRT_HALF_BITS)
    dk = _small_int_to_float_64(iu >> 52) - 1023.0
    m = bits_float(np.int64((iu & _MANT_MASK) + _SQRT_HALF_BITS))
    # rounding error of u = fl(1 + x), folded into f exactly enough: 1 + x = 2**dk * (m + c * 2**-dk)
    c = x - (u - 1.0)
    if dk >= 2.0:
        c = 1.0 - (u - x)
    dkc = dk
    if dkc > 54.0:
        dkc = 54.0
        c = 0.0
    f = (m - 1.0) + c * pow2_integral(-dkc)
    res = _log_reduced_64(f, dk, 0.0)
    return _log_specials(x, -1.0, res)


@register_jitable(**HELPER)
def _log1p_unit_64(x):
    r"""``log(1 + x)`` for ``x`` in ``[0, 1]`` (or NaN), such as :math:`e^{-v}`, :math:`v \ge 0`.

    The reduction is exact without bit manipulation: :math:`1 + x = 2^k (1 + f)` with
    :math:`f = x, k = 0` for :math:`x < \sqrt 2 - 1`, else :math:`f = (x - 1)/2, k = 1` (exact by
    Sterbenz's lemma); then the logarithm's odd series.
    """
    f = x
    dk = 0.0
    if x >= _SQRT2_M1:
        f = (x - 1.0) * 0.5
        dk = 1.0
    return _log_reduced_64(f, dk, 0.0)


@register_jitable(**HELPER)
def _softplus_neg_64(x):
    r"""``log(1 + exp(-x))`` for ``x >= 0`` (MXNet's ``softrelu(-|v|)`` with ``x = |v|``)."""
    return _log1p_unit_64(_vexp_nonpos_64(-np.float64(x)))


@register_jitable(**HELPER)
def _sigmoid_neg_abs_64(x):
    r"""Logistic sigmoid of ``-|x|``: :math:`e^{-|x|} / (1 + e^{-|x|})`, in (0, 1/2]."""
    e = _vexp_nonpos_64(-abs(np.float64(x)))
    return e / (1.0 + e)


# ---------------------------------------------------------------------------- float32
# The same methods in float32 arithmetic (8 SIMD lanes on AVX2 instead of 4), with
# polynomials only as long as float32 needs. Constants are float32 so nothing
# promotes to float64; integer work stays in int32 lanes.
_F = np.float32
_HALF_F = _F(0.5)
_ONE_F = _F(1.0)
_TWO_F = _F(2.0)
_LOG2E_F = _F(1.4426950408889634)
_LN2_HI_F = _F(0.693145751953125)  # 16 significant bits: k * _LN2_HI_F is exact for |k| < 256
_LN2_LO_F = _F(1.4286068203094172e-06)
_EXP_HI_F = _F(89.0)  # expf(89) overflows to +inf
_EXP_LO_F = _F(-104.0)  # expf(-104) underflows to 0
_LIFT_F = _F(24.0)  # a non-positive argument's power 2**(k + 24) is normal down to the clamp (k = -150)
_UNLIFT_F = _F(2.0**-24)
_FTZ_LO_F = _F(-88.0)  # round(-88 log2(e)) = -127: the flushing exp's result is exactly 0
# exp(r) ~ 1 + r + r^2 (C2 + C3 r + ... + C6 r^4) on |r| <= ln2/2: a degree-6 minimax fit of the
# relative error (3.1e-9 in exact arithmetic, Lawson's iteration), one term shorter than the
# degree-7 Taylor polynomial of the same accuracy.
_C2_F = _F(0.4999999403953552)
_C3_F = _F(0.1666652113199234)
_C4_F = _F(0.04166838899254799)
_C5_F = _F(0.00836874544620514)
_C6_F = _F(0.001381453825160861)
_TWO23_F = _F(8388608.0)  # 2**23
_POW2_BIAS_F = _F(127.0 + 8388608.0)
_ROUND_F = _F(12582912.0)  # 1.5 * 2**23
_TWO25_F = _F(33554432.0)  # 2**25, lifts subnormals into the normal range
_SMALLEST_NORMAL_F = _F(1.1754943508222875e-38)
# fdlibm logf's minimax coefficients
_LG1_F = _F(0.66666662693)
_LG2_F = _F(0.40000972152)
_LG3_F = _F(0.28498786688)
_LG4_F = _F(0.24279078841)
# (log(1 + e) - e) / e**2 on [0, 1]: degree-8 minimax coefficients (fitted for this library)
_L1P0_F = _F(-0.4999993145465851)
_L1P1_F = _F(0.33330512046813965)
_L1P2_F = _F(-0.24958588182926178)
_L1P3_F = _F(0.19695401191711426)
_L1P4_F = _F(-0.15355397760868073)
_L1P5_F = _F(0.10680557042360306)
_L1P6_F = _F(-0.05766446143388748)
_L1P7_F = _F(0.020204594358801842)
_L1P8_F = _F(-0.003318474628031254)
_LN2_HI_LOG_F = _F(6.9313812256e-01)
_LN2_LO_LOG_F = _F(9.0580006145e-06)
_MANT_MASK_F = 0x007FFFFF
_SQRT_HALF_BITS_F = 0x3F3504F3
_ONE_BITS_F = 0x3F800000


@register_jitable(**HELPER)
def _exp_32(x, one_step, nonpos):
    """float32 :func:`_vexp_nonpos_64`: ``x <= _EXP_HI_F`` or NaN, clamped below at ``_EXP_LO_F``.

    The polynomial is a degree-6 minimax one by Estrin's scheme. The flags are constants at
    every call site (folded once inlined). ``one_step`` clamps at ``_FTZ_LO_F`` instead and
    scales by ``2**k`` in one step (:func:`_vexp_nonpos_ftz_32`). ``nonpos`` (``x <= 0`` or NaN,
    so ``k <= 0``): the product is taken at ``2**(k + 24)``, a normal power down to the clamp's
    ``k = -150``, and then scaled by the exact ``2**-24``: one rounding, where the result is
    subnormal, of the same exact value ``p 2**k`` as the two steps (``2**k1`` then ``2**(k -
    k1)``) that arguments up to ``_EXP_HI_F`` need, so the same results (checked on every
    non-positive float32) for four operations less.
    """
    xc = np.float32(x)
    lo = _FTZ_LO_F if one_step else _EXP_LO_F
    if xc < lo:
        xc = lo
    kf = (xc * _LOG2E_F + _ROUND_F) - _ROUND_F
    r = (xc - kf * _LN2_HI_F) - kf * _LN2_LO_F
    r2 = r * r
    b0 = (_ONE_F + r) + (_C2_F + _C3_F * r) * r2
    b1 = (_C4_F + _C5_F * r) + _C6_F * r2
    p = b0 + b1 * (r2 * r2)
    if one_step:
        return p * pow2_integral(kf)
    if nonpos:
        return (p * pow2_integral(kf + _LIFT_F)) * _UNLIFT_F
    k1 = (kf * _HALF_F + _ROUND_F) - _ROUND_F
    return (p * pow2_integral(k1)) * pow2_integral(kf - k1)


@register_jitable(**HELPER)
def _vexp_32(x):
    x = np.float32(x)
    xc = x
    if xc > _EXP_HI_F:
        xc = _EXP_HI_F
    res = _exp_32(xc, False, False)
    if x != x:
        res = x
    return res


@register_jitable(**HELPER)
def _vexp_nonpos_32(x):
    return _exp_32(x, False, True)


@register_jitable(**HELPER)
def _vexp_nonpos_ftz_32(x):
    """:func:`_vexp_nonpos_32` with one scaling step: results below ``2**-126.5`` flush to 0.

    ``x`` is clamped at ``_FTZ_LO_F``, where ``k = -127`` and ``2**k`` built
    from its bits is 0; from ``k = -126`` up the one product ``p * 2**k`` is
    the two-step one's (subnormal results rounded once).
    """
    return _exp_32(x, True, True)


@register_jitable(**HELPER)
def _log_reduced_32(f, dk):
    s = f / (_TWO_F + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2_F + w * _LG4_F)
    t2 = z * (_LG1_F + w * _LG3_F)
    hfsq = _HALF_F * f * f
    return dk * _LN2_HI_LOG_F + ((s * (hfsq + t1 + t2) + dk * _LN2_LO_LOG_F) - hfsq + f)


@register_jitable(**HELPER)
def _exponent_32(ibits, adjust):
    """Unbiased exponent (as float32) of re-centred float32 bits."""
    return np.float32(np.int32(ibits >> 23)) - adjust


@register_jitable(**HELPER)
def _vlog_32(x):
    x = np.float32(x)
    xs = x
    kadj = _F(127.0)
    if x < _SMALLEST_NORMAL_F:
        xs = x * _TWO25_F
        kadj = _F(127.0 + 25.0)
    ix = np.int32(float_bits(np.float32(xs)) + (_ONE_BITS_F - _SQRT_HALF_BITS_F))
    dk = _exponent_32(ix, kadj)
    m = bits_float(np.int32((ix & _MANT_MASK_F) + _SQRT_HALF_BITS_F))
    res = _log_reduced_32(m - _ONE_F, dk)
    return _log_specials(x, _F(0.0), res)


@register_jitable(**HELPER)
def _vlog1p_32(x):
    x = np.float32(x)
    u = _ONE_F + x
    iu = np.int32(float_bits(np.float32(u)) + (_ONE_BITS_F - _SQRT_HALF_BITS_F))
    dk = _exponent_32(iu, _F(127.0))
    m = bits_float(np.int32((iu & _MANT_MASK_F) + _SQRT_HALF_BITS_F))
    c = x - (u - _ONE_F)
    if dk >= _TWO_F:
        c = _ONE_F - (u - x)
    dkc = dk
    if dkc > _F(25.0):
        dkc = _F(25.0)
        c = _F(0.0)
    f = (m - _ONE_F) + c * pow2_integral(-dkc)
    res = _log_reduced_32(f, dk)
    return _log_specials(x, -_ONE_F, res)


@register_jitable(**HELPER)
def _log1p_unit_32(x):
    r"""float32 :func:`_log1p_unit_64`: :math:`x + x^2 R(x)`, no reduction and no division.

    ``R`` is a degree-8 minimax polynomial for :math:`(\log(1 + x) - x) / x^2` on ``[0, 1]``
    (relative error of the sum about 5e-9 before rounding), by Horner's rule (each step one fused
    multiply-add). The error is at most 1.4 ulp on every float32 ``x`` in ``[0, 1]`` (checked
    exhaustively once), and below ``2**-24.5`` the result is ``x`` exactly (``x^2 R`` is under half
    an ulp of ``x``). The leading ``x`` keeps the relative accuracy of tiny ``x``; a subnormal
    ``x`` makes ``x^2`` underflow to 0, harmlessly. About half the instructions of the
    reduction and odd series of the float64 version, and no division (SigmoidBCE's fused value
    and gradient loop: 1.0 -> 0.6 ns per element in cache on one thread).
    """
    r = _L1P8_F
    r = _L1P7_F + x * r
    r = _L1P6_F + x * r
    r = _L1P5_F + x * r
    r = _L1P4_F + x * r
    r = _L1P3_F + x * r
    r = _L1P2_F + x * r
    r = _L1P1_F + x * r
    r = _L1P0_F + x * r
    return x + (x * x) * r


@register_jitable(**HELPER)
def _softplus_neg_32(x):
    return _log1p_unit_32(_exp_32(-np.float32(x), False, True))  # vexp_nonpos's body: one function less


@register_jitable(**HELPER)
def _sigmoid_neg_abs_32(x):
    e = _exp_32(-abs(np.float32(x)), False, True)
    return e / (_ONE_F + e)


# ---------------------------------------------------------------------------- public, by type
def _by_precision(name, f32, f64):
    """A function that runs ``f32`` on float32 arguments and ``f64`` otherwise, in and out of Numba."""

    def generic(x):
        return f32(x) if isinstance(x, np.float32) else f64(x)

    generic.__name__ = generic.__qualname__ = name
    generic.__doc__ = f64.__doc__
    generic.__module__ = __name__

    @overload(generic, jit_options=HELPER)
    def _select(x):
        return f32 if x == types.float32 else f64

    return generic


vexp = _by_precision("vexp", _vexp_32, _vexp_64)
vexp_nonpos = _by_precision("vexp_nonpos", _vexp_nonpos_32, _vexp_nonpos_64)
vexp_nonpos_ftz = _by_precision("vexp_nonpos_ftz", _vexp_nonpos_ftz_32, _vexp_nonpos_64)
vlog = _by_precision("vlog", _vlog_32, _vlog_64)
vlog1p = _by_precision("vlog1p", _vlog1p_32, _vlog1p_64)
log1p_unit = _by_precision("log1p_unit", _log1p_unit_32, _log1p_unit_64)
softplus_neg = _by_precision("softplus_neg", _softplus_neg_32, _softplus_neg_64)
sigmoid_neg_abs = _by_precision("sigmoid_neg_abs", _sigmoid_neg_abs_32, _sigmoid_neg_abs_64)
