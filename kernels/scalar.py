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
(subgradients at kinks, NaN propagation; see SPEC.md section 0). Both evaluate
in float64 and return float64; kernels round once when they store.

The functions are ``register_jitable``: the kernel factories in
:mod:`numba_losses.kernels.cpu` (and later targets) inline them, so each term is
written once for every target. They use :mod:`.vmath` rather than libm so CPU
loops vectorise.
"""

import numpy as np
from numba.extending import register_jitable

from .vmath import sigmoid_neg_abs, softrelu, vexp, vlog

_EPS_LOG = 1e-12  # MXNet's epsilon inside log() of BCE(from_sigmoid) and KLDiv
_HALF_LOG_2PI_FACTOR = 2.0 * np.pi


# ---------------------------------------------------------------- helpers
@register_jitable(forceinline=True)
def relu(v):
    """MXNet relu: ``v`` if ``v > 0`` or ``v`` is NaN, else 0."""
    res = v
    if v <= 0.0:
        res = 0.0
    return res


@register_jitable(forceinline=True)
def relu_grad(r):
    """MXNet relu backward from its output ``r``: 1 if r > 0, 0 if r == 0, NaN if NaN."""
    res = 0.0
    if r > 0.0:
        res = 1.0
    if r != r:
        res = r
    return res


@register_jitable(forceinline=True)
def sign(v):
    """MXNet sign: -1, 0 or 1; ``sign(0) = sign(NaN) = 0``."""
    res = 0.0
    if v > 0.0:
        res = 1.0
    if v < 0.0:
        res = -1.0
    return res


@register_jitable(forceinline=True)
def _step(v):
    """``[v > 0]`` as 0.0 / 1.0 (comparison ops give 0/1, NaN compares false)."""
    res = 0.0
    if v > 0.0:
        res = 1.0
    return res


# ---------------------------------------------------------------- L2 / L1
@register_jitable(forceinline=True)
def l2_value(x, y, a, p0, p1):
    r""":math:`\ell = (y - x)^2` (the class applies ``weight / 2``)."""
    d = np.float64(y) - np.float64(x)
    return d * d


@register_jitable(forceinline=True)
def l2_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = 2 (x - y)`."""
    return 2.0 * (np.float64(x) - np.float64(y))


@register_jitable(forceinline=True)
def l1_value(x, y, a, p0, p1):
    r""":math:`\ell = |y - x|`."""
    return abs(np.float64(y) - np.float64(x))


@register_jitable(forceinline=True)
def l1_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = \mathrm{sign}(x - y)`, 0 where ``x == y``."""
    return sign(np.float64(x) - np.float64(y))


# ---------------------------------------------------------------- Huber
@register_jitable(forceinline=True)
def huber_value(x, y, a, p0, p1):
    r""":math:`\ell = |d| - \rho/2` if :math:`|d| > \rho` else :math:`\frac{0.5}{\rho} d^2`,
    :math:`d = y - x`; ``p0 = rho``, ``p1 = 0.5 / rho``."""
    ad = abs(np.float64(y) - np.float64(x))
    res = p1 * (ad * ad)
    if ad > p0:
        res = ad - 0.5 * p0
    return res


@register_jitable(forceinline=True)
def huber_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = \mathrm{sign}(x - y)\,(1` if :math:`|d| > \rho`
    else :math:`|d|/\rho)`."""
    d = np.float64(x) - np.float64(y)
    ad = abs(d)
    res = sign(d) * (2.0 * p1 * ad)
    if ad > p0:
        res = sign(d)
    return res


# ---------------------------------------------------------------- Hinge
@register_jitable(forceinline=True)
def hinge_value(x, y, a, p0, p1):
    r""":math:`\ell = \mathrm{relu}(m - x y)`; ``p0 = margin``."""
    return relu(p0 - np.float64(x) * np.float64(y))


@register_jitable(forceinline=True)
def hinge_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = -y\,[m - x y > 0]` (0 at the kink)."""
    yv = np.float64(y)
    return -yv * relu_grad(relu(p0 - np.float64(x) * yv))


@register_jitable(forceinline=True)
def squared_hinge_value(x, y, a, p0, p1):
    r""":math:`\ell = \mathrm{relu}(m - x y)^2`; ``p0 = margin``."""
    r = relu(p0 - np.float64(x) * np.float64(y))
    return r * r


@register_jitable(forceinline=True)
def squared_hinge_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = -2 y\,\mathrm{relu}(m - x y)`."""
    yv = np.float64(y)
    return -2.0 * yv * relu(p0 - np.float64(x) * yv)


# ---------------------------------------------------------------- sigmoid BCE / logistic
@register_jitable(forceinline=True)
def _bce_logit_value(x, z):
    # relu(x) - x*z + softrelu(-|x|)
    return relu(x) - x * z + softrelu(-abs(x))


@register_jitable(forceinline=True)
def _bce_logit_grad(x, z):
    # MXNet-exact: [x>0] - z - sign(x) * sigmoid(-|x|); exactly -z at x == 0
    return _step(x) - z - sign(x) * sigmoid_neg_abs(x)


@register_jitable(forceinline=True)
def bce_logit_value(x, y, a, p0, p1):
    r""":math:`\ell = \mathrm{relu}(x) - x z + \mathrm{softrelu}(-|x|)`, :math:`z = y`."""
    return _bce_logit_value(np.float64(x), np.float64(y))


@register_jitable(forceinline=True)
def bce_logit_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = \sigma(x) - z`, exactly :math:`-z` at :math:`x = 0`."""
    return _bce_logit_grad(np.float64(x), np.float64(y))


@register_jitable(forceinline=True)
def logistic_signed_value(x, y, a, p0, p1):
    r"""BCE-with-logits term with :math:`z = (y + 1) / 2` (labels in {-1, 1})."""
    return _bce_logit_value(np.float64(x), (np.float64(y) + 1.0) * 0.5)


@register_jitable(forceinline=True)
def logistic_signed_grad(x, y, a, p0, p1):
    r""":math:`\sigma(x) - (y + 1)/2`, exactly :math:`-(y + 1)/2` at :math:`x = 0`."""
    return _bce_logit_grad(np.float64(x), (np.float64(y) + 1.0) * 0.5)


@register_jitable(forceinline=True)
def bce_logit_pw_value(x, y, a, p0, p1):
    r""":math:`\ell = x - x z + l_w (\mathrm{softrelu}(-|x|) + \mathrm{relu}(-x))`,
    :math:`l_w = 1 + (p_w - 1) z`, ``a = pos_weight``."""
    xv = np.float64(x)
    z = np.float64(y)
    lw = 1.0 + (np.float64(a) - 1.0) * z
    return xv - xv * z + lw * (softrelu(-abs(xv)) + relu(-xv))


@register_jitable(forceinline=True)
def bce_logit_pw_grad(x, y, a, p0, p1):
    r""":math:`1 - z - l_w \sigma(-x)`, exactly :math:`1 - z` at :math:`x = 0`."""
    xv = np.float64(x)
    z = np.float64(y)
    lw = 1.0 + (np.float64(a) - 1.0) * z
    return 1.0 - z + lw * (-sign(xv) * sigmoid_neg_abs(xv) - _step(-xv))


@register_jitable(forceinline=True)
def bce_prob_value(x, y, a, p0, p1):
    r""":math:`\ell = -(\log(x + \epsilon) z p_w + \log(1 - x + \epsilon)(1 - z))`,
    :math:`\epsilon = 10^{-12}`, ``a = pos_weight`` (1 when absent)."""
    xv = np.float64(x)
    z = np.float64(y)
    return -(vlog(xv + _EPS_LOG) * z * np.float64(a) + vlog((1.0 - xv) + _EPS_LOG) * (1.0 - z))


@register_jitable(forceinline=True)
def bce_prob_grad(x, y, a, p0, p1):
    r""":math:`-z p_w / (x + \epsilon) + (1 - z) / (1 - x + \epsilon)`."""
    xv = np.float64(x)
    z = np.float64(y)
    return -z * np.float64(a) / (xv + _EPS_LOG) + (1.0 - z) / ((1.0 - xv) + _EPS_LOG)


# ---------------------------------------------------------------- Poisson NLL
@register_jitable(forceinline=True)
def _stirling(t):
    # (t log t - t + 0.5 log(2 pi t)) * [t > 1], a product: NaN at t == 0 and t < 0 as in MXNet
    s = t * vlog(t) - t + 0.5 * vlog(_HALF_LOG_2PI_FACTOR * t)
    return s * _step(t - 1.0)


@register_jitable(forceinline=True)
def poisson_logits_value(x, y, a, p0, p1):
    r""":math:`\ell = e^x - t x`."""
    xv = np.float64(x)
    return vexp(xv) - np.float64(y) * xv


@register_jitable(forceinline=True)
def poisson_logits_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = e^x - t`."""
    return vexp(np.float64(x)) - np.float64(y)


@register_jitable(forceinline=True)
def poisson_logits_full_value(x, y, a, p0, p1):
    r""":math:`\ell = e^x - t x + [t > 1](t \log t - t + \tfrac12 \log(2 \pi t))`."""
    return poisson_logits_value(x, y, a, p0, p1) + _stirling(np.float64(y))


@register_jitable(forceinline=True)
def poisson_prob_value(x, y, a, p0, p1):
    r""":math:`\ell = x - t \log(x + \epsilon)`; ``p0 = epsilon``."""
    xv = np.float64(x)
    return xv - np.float64(y) * vlog(xv + p0)


@register_jitable(forceinline=True)
def poisson_prob_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = 1 - t / (x + \epsilon)`."""
    return 1.0 - np.float64(y) / (np.float64(x) + p0)


@register_jitable(forceinline=True)
def poisson_prob_full_value(x, y, a, p0, p1):
    r""":math:`\ell = x - t \log(x + \epsilon) + [t > 1](t \log t - t + \tfrac12 \log(2 \pi t))`."""
    return poisson_prob_value(x, y, a, p0, p1) + _stirling(np.float64(y))


# ---------------------------------------------------------------- KL divergence
@register_jitable(forceinline=True)
def kldiv_logits_value(x, y, a, p0, p1):
    r""":math:`\ell = y (\log(y + 10^{-12}) - x)` (``x`` is a log-probability)."""
    yv = np.float64(y)
    return yv * (vlog(yv + _EPS_LOG) - np.float64(x))


@register_jitable(forceinline=True)
def kldiv_logits_grad(x, y, a, p0, p1):
    r""":math:`\partial\ell/\partial x = -y`."""
    return -np.float64(y)
