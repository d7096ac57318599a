r"""Elementwise loss terms: one value / derivative pair per loss, defined once.

Every function has the same signature ``f(x, y, a, p0, p1)``:

``x``
    prediction element (the differentiated input);
``y``
    label element (already reshaped / broadcast to ``x``);
``a``
    auxiliary element (``pos_weight`` for BCE), ``1.0`` when absent;
``p0, p1``
    scalar parameters of the loss (margin, rho, epsilon, ...), unused ones 0.

``*_value`` returns the term :math:`\ell(x, y)`, ``*_grad`` returns
:math:`\partial \ell / \partial x` exactly as MXNet 1.9.1's autograd produces it
(subgradients at kinks, NaN propagation; see docs/semantics.rst section 0).

The functions are ``register_jitable``: the kernel factories in
:mod:`numba_losses.kernels.cpu` (and later targets) inline them, so each term is
written once for every target. They use :mod:`.vmath` rather than libm so CPU
loops vectorise.

Precision follows the arguments: float32 inputs are computed in float32 (8 SIMD
lanes on AVX2), float64 in float64. Exact constants are float32 literals
(``_ONE``...), which promote exactly where the data is float64; inexact ones
(``1e-12``, ``2 pi``) are rounded to the data's precision with
:func:`.vmath.like`, as MXNet does for float32 data. A product that the formula
then adds to something is rounded on its own (:func:`.primitives.rounded_mul`), as in
MXNet: never fused into a multiply-add, which would move kinks and overflows.
"""

import numpy as np
from numba.extending import register_jitable

from ._options import HELPER
from .primitives import relu, relu_grad, rounded_mul, sign, step
from .vmath import like, sigmoid_neg_abs, softplus_neg, vexp, vlog

_EPS_LOG = 1e-12  # MXNet's epsilon inside log() of BCE(from_sigmoid) and KLDiv
_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)


# ---------------------------------------------------------------- L2 / L1
@register_jitable(**HELPER)
def l2_value(x, y, a, p0, p1):
    r""":math:`\ell = (y - x)^2` (the class applies ``weight / 2``)."""
    d = y - x
    return d * d


@register_jitable(**HELPER)
def l2_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = 2 (x - y)`."""
    return _TWO * (x - y)


@register_jitable(**HELPER)
def l1_value(x, y, a, p0, p1):
    r""":math:`\ell = |y - x|`."""
    return abs(y - x)


@register_jitable(**HELPER)
def l1_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = \mathrm{sign}(x - y)`, 0 where ``x == y``."""
    return sign(x - y)


# ---------------------------------------------------------------- Huber
@register_jitable(**HELPER)
def huber_value(x, y, a, p0, p1):
    r""":math:`\ell = |d| - \rho/2` if :math:`|d| > \rho` else :math:`\frac{0.5}{\rho} d^2`,
    :math:`d = y - x`; ``p0 = rho``, ``p1 = 0.5 / rho``."""
    ad = abs(y - x)
    res = p1 * (ad * ad)
    if ad > p0:
        res = ad - _HALF * p0
    return res


@register_jitable(**HELPER)
def huber_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = \mathrm{sign}(x - y)\,(1` if :math:`|d| > \rho`
    else :math:`|d|/\rho)`."""
    d = x - y
    ad = abs(d)
    res = sign(d) * (_TWO * p1 * ad)
    if ad > p0:
        res = sign(d)
    return res


# ---------------------------------------------------------------- Hinge
@register_jitable(**HELPER)
def hinge_value(x, y, a, p0, p1):
    r""":math:`\ell = \mathrm{relu}(m - x y)`; ``p0 = margin``."""
    return relu(p0 - rounded_mul(x, y))  # rounded: x y == m exactly is the kink, as in MXNet


@register_jitable(**HELPER)
def hinge_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = -y\,[m - x y > 0]` (0 at the kink)."""
    yv = y
    return -yv * relu_grad(relu(p0 - rounded_mul(x, yv)))


@register_jitable(**HELPER)
def squared_hinge_value(x, y, a, p0, p1):
    r""":math:`\ell = \mathrm{relu}(m - x y)^2`; ``p0 = margin``."""
    r = relu(p0 - rounded_mul(x, y))
    return r * r


@register_jitable(**HELPER)
def squared_hinge_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = -2 y\,\mathrm{relu}(m - x y)`."""
    yv = y
    return -_TWO * yv * relu(p0 - rounded_mul(x, yv))


# ---------------------------------------------------------------- sigmoid BCE / logistic
# LogisticLoss (labels in {-1, 1}) runs the BCE terms with p0 = 1: one kernel for both losses,
# shared in a process and in the cache, and no wrapper functions for its first use to compile.
# The two-line target is written in both terms: a helper would be one more function to compile.
@register_jitable(**HELPER)
def bce_logit_value(x, y, a, p0, p1):
    r""":math:`\ell = \mathrm{relu}(x) - x z + \mathrm{softrelu}(-|x|)`, :math:`z` the target
    (:math:`y`, or :math:`(y + 1) / 2` for LogisticLoss's signed labels: ``p0 = 1``)."""
    z = y
    if p0 != 0:
        z = (y + _ONE) * _HALF
    return relu(x) - rounded_mul(x, z) + softplus_neg(abs(x))


@register_jitable(**HELPER)
def bce_logit_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = \sigma(x) - z`, exactly :math:`-z` at :math:`x = 0`.

    MXNet's form, :math:`[x > 0] - z - \mathrm{sign}(x)\,\sigma(-|x|)`; :math:`z` as for
    :func:`bce_logit_value`.
    """
    z = y
    if p0 != 0:
        z = (y + _ONE) * _HALF
    return step(x) - z - sign(x) * sigmoid_neg_abs(x)


@register_jitable(**HELPER)
def bce_logit_pw_value(x, y, a, p0, p1):
    r""":math:`\ell = x - x z + l_w (\mathrm{softrelu}(-|x|) + \mathrm{relu}(-x))`,
    :math:`l_w = 1 + (p_w - 1) z`, ``a = pos_weight``."""
    xv = x
    z = y
    lw = _ONE + rounded_mul(a - _ONE, z)
    return xv - rounded_mul(xv, z) + rounded_mul(lw, softplus_neg(abs(xv)) + relu(-xv))


@register_jitable(**HELPER)
def bce_logit_pw_grad(x, y, a, p0, p1):
    r""":math:`1 - z - l_w \sigma(-x)`, exactly :math:`1 - z` at :math:`x = 0`."""
    xv = x
    z = y
    lw = _ONE + rounded_mul(a - _ONE, z)
    return _ONE - z + rounded_mul(lw, -sign(xv) * sigmoid_neg_abs(xv) - step(-xv))


@register_jitable(**HELPER)
def bce_prob_value(x, y, a, p0, p1):
    r""":math:`\ell = -(\log(x + \epsilon) z p_w + \log(1 - x + \epsilon)(1 - z))`,
    :math:`\epsilon = 10^{-12}`, ``a = pos_weight`` (1 when absent)."""
    xv = x
    z = y
    eps = like(xv, _EPS_LOG)
    return -(rounded_mul(rounded_mul(vlog(xv + eps), z), a) + rounded_mul(vlog((_ONE - xv) + eps), _ONE - z))


@register_jitable(**HELPER)
def bce_prob_grad(x, y, a, p0, p1):
    r""":math:`-z p_w / (x + \epsilon) + (1 - z) / (1 - x + \epsilon)`."""
    xv = x
    z = y
    eps = like(xv, _EPS_LOG)
    return -z * a / (xv + eps) + (_ONE - z) / ((_ONE - xv) + eps)


# ---------------------------------------------------------------- Poisson NLL
@register_jitable(**HELPER)
def _stirling(t):
    # (t log t - t + 0.5 log(2 pi t)) * [t > 1], a product: NaN at t == 0 and t < 0 as in MXNet
    s = rounded_mul(t, vlog(t)) - t + _HALF * vlog(_TWO * t * like(t, np.pi))
    return s * step(t - _ONE)


@register_jitable(**HELPER)
def poisson_logits_value(x, y, a, p0, p1):
    r""":math:`\ell = e^x - t x`."""
    xv = x
    return vexp(xv) - rounded_mul(y, xv)


@register_jitable(**HELPER)
def poisson_logits_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = e^x - t`."""
    return vexp(x) - y


@register_jitable(**HELPER)
def poisson_logits_full_value(x, y, a, p0, p1):
    r""":math:`\ell = e^x - t x + [t > 1](t \log t - t + \tfrac12 \log(2 \pi t))`."""
    return poisson_logits_value(x, y, a, p0, p1) + _stirling(y)


@register_jitable(**HELPER)
def poisson_prob_value(x, y, a, p0, p1):
    r""":math:`\ell = x - t \log(x + \epsilon)`; ``p0 = epsilon``."""
    xv = x
    return xv - rounded_mul(y, vlog(xv + p0))


@register_jitable(**HELPER)
def poisson_prob_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = 1 - t / (x + \epsilon)`."""
    return _ONE - y / (x + p0)


@register_jitable(**HELPER)
def poisson_prob_full_value(x, y, a, p0, p1):
    r""":math:`\ell = x - t \log(x + \epsilon) + [t > 1](t \log t - t + \tfrac12 \log(2 \pi t))`."""
    return poisson_prob_value(x, y, a, p0, p1) + _stirling(y)


# ---------------------------------------------------------------- a loss computed elsewhere
@register_jitable(**HELPER)
def computed_value(x, y, a, p0, p1):
    r""":math:`\ell = x`: a per-position loss already computed by a structured kernel,
    which the row kernels then weight and reduce (MXNet's weighting, not a loss term)."""
    return x


@register_jitable(**HELPER)
def computed_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = 1`: the gradient row scale itself."""
    return like(x, 1.0)


# ---------------------------------------------------------------- KL divergence
@register_jitable(**HELPER)
def kldiv_logits_value(x, y, a, p0, p1):
    r""":math:`\ell = y (\log(y + 10^{-12}) - x)` (``x`` is a log-probability)."""
    yv = y
    return yv * (vlog(yv + like(yv, _EPS_LOG)) - x)


@register_jitable(**HELPER)
def kldiv_label_term(y):
    r""":math:`y \log(y + 10^{-12})`: the label's part of :func:`kldiv_logits_value` (the fused
    softmax kernels add the cross-entropy part, :math:`-y\,\mathrm{lp}`, themselves)."""
    return y * vlog(y + like(y, _EPS_LOG))


@register_jitable(**HELPER)
def kldiv_logits_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = -y`."""
    return -y
