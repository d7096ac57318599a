r"""Scalar math of TripletLoss and CosineEmbeddingLoss, shared by the CPU and CUDA kernels.

The kernels reduce each row (sums in float64) and call these
``register_jitable`` functions for everything else: the per-element terms,
the per-row head (value and gradient scale, MXNet's subgradients) and the
per-element gradients. Arguments are in the compute dtype (float32 or
float64) unless stated; constants enter in that precision, as in MXNet
(:func:`.vmath.like`).

TripletLoss (docs/semantics.rst section 12), per row :math:`b` with
:math:`s_b = \sum ((p - x)^2 - (n - x)^2)` over the row:

.. math::

    \mathrm{out}_b = w\,\mathrm{relu}(s_b + \mu), \qquad
    m_b = g_b w\,[\mathrm{relu}(s_b + \mu) > 0],

    \partial x = 2 m (n - p), \quad \partial p = 2 m (p - x), \quad \partial n = -2 m (n - x).

CosineEmbeddingLoss (docs/semantics.rst section 14), per row with :math:`n_a = \|a\|`,
:math:`n_b = \|b\|`, :math:`P = n_a n_b`, :math:`D = \max(P, 10^{-12})`,
:math:`c = a \cdot b / D`:

.. math::

    \ell = (1 - c)[y = 1] + \max\big(0, [y = -1](c - \mu)\big)

and the gradient is MXNet's autograd chain through ``maximum``, the division,
``maximum(P, eps)``, the product of norms and ``norm`` (see
:func:`cosine_head`), which makes a row of :math:`\partial a` NaN when
:math:`n_a = 0` and :math:`P < 10^{-12}`.
"""

import numpy as np
from numba.extending import register_jitable

from ._options import HELPER
from .primitives import relu, relu_grad, rounded_mul
from .vmath import like

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
COSINE_EPS = 1e-12  # MXNet's lower bound on the product of norms


# ------------------------------------------------------------------ TripletLoss
@register_jitable(**HELPER)
def triplet_term(x, p, n):
    r"""Element term :math:`(p - x)^2 - (n - x)^2` (squares first, as MXNet)."""
    u = p - x
    v = n - x
    return rounded_mul(u, u) - rounded_mul(v, v)  # p == n gives exactly 0, as MXNet


@register_jitable(**HELPER)
def triplet_head(s, margin, w, g):
    r"""Row value and gradient scale from the row sum ``s`` (float64).

    ``s`` is rounded to the compute dtype (MXNet's sum output), then
    :math:`r = \mathrm{relu}(s + \mu)`. Returns ``(r w, (g w) relu'(r))`` with
    :math:`\mathrm{relu}'(0) = 0` and NaN passed through.
    """
    r = relu(like(margin, s) + margin)
    return r * w, (g * w) * relu_grad(r)


@register_jitable(**HELPER)
def triplet_grads(x, p, n, m):
    r"""``(dx, dp, dn)`` for gradient scale ``m``: :math:`\partial p = m \cdot 2(p - x)`,
    :math:`\partial n = -m \cdot 2(n - x)`, :math:`\partial x = -\partial p - \partial n`."""
    gp = m * (_TWO * (p - x))
    gn = -m * (_TWO * (n - x))
    return -gp - gn, gp, gn


# ------------------------------------------------------------------ CosineEmbeddingLoss
@register_jitable(**HELPER)
def label_code(y):
    """``1`` for a label equal to 1, ``-1`` for -1, else 0 (NaN and any other value: 0)."""
    code = 0
    if y == 1:
        code = 1
    elif y == -1:
        code = -1
    return code


@register_jitable(**HELPER)
def cosine_head(dot, na, nb, code, margin, h):
    r"""Row value and gradient scalars of CosineEmbeddingLoss.

    Parameters
    ----------
    dot, na, nb : float (compute dtype)
        :math:`a \cdot b`, :math:`\|a\|`, :math:`\|b\|` of the row.
    code : int
        :func:`label_code` of the row's label.
    margin : float
        :math:`\mu` in the compute dtype (it fixes the precision of the rest).
    h : float
        The head gradient of :math:`\ell` (``g w sw`` summed back to the row).

    Returns
    -------
    loss, ddot, dna, dnb
        :math:`\ell` and the gradients reaching :math:`a \cdot b`,
        :math:`\|a\|` and :math:`\|b\|`; the elements then get
        ``da = ddot * b + dna * (a / na)`` (:func:`cosine_grad`).

    Notes
    -----
    MXNet's chain, each step in the compute dtype: ``maximum(0, v)`` passes the
    gradient to ``v = [y=-1](c - mu)`` only where ``0 < v`` (ties and NaN go to
    the constant); ``c = dot / D`` gives ``ddot = gc / D`` and
    ``dD = gc (-dot / D^2)``; ``D = maximum(P, eps)`` passes ``dD`` to ``P``
    where ``P >= eps``, else ``dD * 0``; ``P = na nb``.
    """
    zero = like(margin, _ZERO)
    one = like(margin, _ONE)
    eps = like(margin, COSINE_EPS)
    y1 = zero
    ym1 = zero
    if code == 1:
        y1 = one
    if code == -1:
        ym1 = one
    p = na * nb
    d = eps
    if p > eps or p != p:  # maximum(P, eps): NaN propagates, ties give eps (same value)
        d = p
    c = dot / d
    v = ym1 * (c - margin)
    hinge = v
    if zero > v:  # maximum(0, v)
        hinge = zero
    loss = (one - c) * y1 + hinge
    pass_v = zero
    if zero < v:
        pass_v = one
    gc = -(h * y1) + (h * pass_v) * ym1
    ddot = gc / d
    d_d = gc * (-dot / (d * d))
    keep_p = zero
    if p >= eps:
        keep_p = one
    dp = d_d * keep_p
    return loss, ddot, dp * nb, dp * na


@register_jitable(**HELPER)
def cosine_grad(av, bv, ddot, dna, na):
    r"""Gradient of one element of :math:`a`: ``ddot * b + dna * (a / na)``.

    MXNet's ``norm`` backward divides by the norm even when ``dna`` is 0, so
    a zero vector (``na = 0``) gives NaN. Call with ``(b, a, ddot, dnb, nb)``
    for the element of :math:`b`.
    """
    return ddot * bv + dna * (av / na)
