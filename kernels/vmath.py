"""Vectorisable exp, log and log1p for Numba kernels.

PyPI's llvmlite links no vector math library, so ``math.exp`` inside an
``@njit`` loop is a scalar libm call that blocks loop vectorisation. The
functions here use only arithmetic, ``floor`` and integer bit manipulation,
so LLVM can vectorise the loops that inline them.

Every function takes a float32 or float64 argument and evaluates in float64
(float32 arguments are widened exactly), returning float64. Rounding the
float64 result to float32 gives the correctly rounded float32 value in all but
astronomically rare cases (well inside 1 ulp); float64 results are within
about 1 ulp (tested to 1e-15 relative). Special values follow C99 Annex F:
``exp(-inf) = 0``, ``exp(+inf) = +inf``, ``log(0) = -inf``, ``log(x<0) = NaN``,
``log1p(-1) = -inf``, NaN in gives NaN out; subnormal inputs and results are
exact to the same accuracy.

Methods (textbook, after Cody & Waite and Tang): ``exp`` reduces
``x = k ln2 + r``, ``|r| <= ln2/2``, with a two-part ``ln2`` and evaluates a
degree-13 Taylor polynomial (Estrin's scheme), then scales by ``2**k`` in two exact power-of-two
steps (so subnormal results are rounded once). ``log`` and ``log1p`` split the
argument into ``2**k * (1 + f)`` with ``1 + f`` in ``[sqrt(2)/2, sqrt(2))`` and
use ``log(1+f) = 2 atanh(s)``, ``s = f / (2 + f)``, with the classic fdlibm
minimax coefficients for the odd series; ``log1p`` folds the rounding error of
``1 + x`` back into ``f``. No division but ``f / (2 + f)``.

All functions are ``register_jitable``: they compile inline into any Numba
kernel (CPU ``@njit`` or, through the same definition, other targets).
Callers must not compile them with the ``reassoc`` fast-math flag, which would
let LLVM fold away the two-part constants and the compensation terms.
"""

import numpy as np
from numba.extending import register_jitable

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
_TWO52 = 4503599627370496.0  # 2**52
_TWO52_BITS = 0x4330000000000000  # bits of 2**52
_POW2_BIAS = 1023.0 + _TWO52


@register_jitable(forceinline=True)
def _pow2(kf):
    """``2.0**kf`` for an integral float ``kf`` in [-1022, 1023], built from its bits.

    ``kf + 1023 + 2**52`` holds ``kf + 1023`` in its low mantissa bits; shifting
    them into the exponent field needs no float-to-int conversion (which AVX2
    lacks for 64-bit lanes and would scalarise the loop).
    """
    return np.int64(np.float64(kf + _POW2_BIAS).view(np.int64) << 52).view(np.float64)


@register_jitable(forceinline=True)
def _small_int_to_float(i):
    """Exact float of an int64 in [0, 2**52) without a (non-vectorisable on AVX2) conversion."""
    return np.int64(i | _TWO52_BITS).view(np.float64) - _TWO52


@register_jitable(forceinline=True)
def vexp(x):
    r"""Exponential, vectorisable.

    .. math:: \exp(x) = 2^k \, e^r, \quad k = \lfloor x \log_2 e + 1/2 \rfloor,
              \quad r = x - k \ln 2
    """
    x = np.float64(x)
    xc = x
    if xc > _EXP_HI:
        xc = _EXP_HI
    if xc < _EXP_LO:
        xc = _EXP_LO
    kf = np.floor(xc * _LOG2E + 0.5)
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
    k1 = np.floor(kf * 0.5)
    res = (p * _pow2(k1)) * _pow2(kf - k1)
    if x != x:
        res = x
    return res


@register_jitable(forceinline=True)
def _log_reduced(f, dk, c):
    """log(2**dk * (1 + f)) + c for 1 + f in [sqrt(2)/2, sqrt(2)), f and dk exact, c tiny."""
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    return s * (hfsq + t1 + t2) + (dk * _LN2_LO + c) - hfsq + f + dk * _LN2_HI


@register_jitable(forceinline=True)
def vlog(x):
    r"""Natural logarithm, vectorisable.

    .. math:: \log x = k \ln 2 + \log(1 + f), \quad x = 2^k (1 + f)
    """
    x = np.float64(x)
    xs = x
    kadj = 1023.0
    if x < _SMALLEST_NORMAL:
        xs = x * _TWO54
        kadj = 1023.0 + 54.0
    ix = np.float64(xs).view(np.int64) + (_ONE_BITS - _SQRT_HALF_BITS)
    dk = _small_int_to_float(ix >> 52) - kadj
    m = np.int64((ix & _MANT_MASK) + _SQRT_HALF_BITS).view(np.float64)
    res = _log_reduced(m - 1.0, dk, 0.0)
    if x == 0.0:
        res = -np.inf
    if x < 0.0:
        res = np.nan
    if x == np.inf:
        res = x
    if x != x:
        res = x
    return res


@register_jitable(forceinline=True)
def vlog1p(x):
    r"""``log(1 + x)``, accurate for small ``|x|``, vectorisable.

    .. math:: \log(1 + x) = k \ln 2 + \log(1 + f), \quad
              1 + f = 2^{-k} (u + c), \quad u = \mathrm{fl}(1 + x), \quad c = x - (u - 1)

    (for ``k >= 2`` the rounding error is taken as ``c = 1 - (u - x)``).
    """
    x = np.float64(x)
    u = 1.0 + x
    iu = np.float64(u).view(np.int64) + (_ONE_BITS - _SQRT_HALF_BITS)
    dk = _small_int_to_float(iu >> 52) - 1023.0
    m = np.int64((iu & _MANT_MASK) + _SQRT_HALF_BITS).view(np.float64)
    # rounding error of u = fl(1 + x), folded into f exactly enough: 1 + x = 2**dk * (m + c * 2**-dk)
    c = x - (u - 1.0)
    if dk >= 2.0:
        c = 1.0 - (u - x)
    dkc = dk
    if dkc > 54.0:
        dkc = 54.0
        c = 0.0
    f = (m - 1.0) + c * _pow2(-dkc)
    res = _log_reduced(f, dk, 0.0)
    if x == -1.0:
        res = -np.inf
    if x < -1.0:
        res = np.nan
    if x == np.inf:
        res = x
    if x != x:
        res = x
    return res


@register_jitable(forceinline=True)
def softrelu(v):
    r"""MXNet's ``softrelu``: ``v`` if ``v > 20`` else ``log1p(exp(v))``."""
    v = np.float64(v)
    res = vlog1p(vexp(v))
    if v > 20.0:
        res = v
    return res


@register_jitable(forceinline=True)
def sigmoid_neg_abs(v):
    r"""Logistic sigmoid of ``-|v|``: :math:`e^{-|v|} / (1 + e^{-|v|})`, in (0, 1/2]."""
    e = vexp(-abs(np.float64(v)))
    return e / (1.0 + e)
