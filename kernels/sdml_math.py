r"""SDMLLoss scalar math shared by the CPU and CUDA kernels (target-neutral).

With ``dist[i, j]`` the squared distance between ``x1[i]`` and ``x2[j]``, a row
of the loss is a KL divergence between the smoothed targets :math:`Q` and the
softmax of :math:`-\mathrm{dist}` (docs/semantics.rst section 15):

.. math::

    \mathrm{lp}_{ij} = (m_i - d_{ij}) - \log \sum_j e^{m_i - d_{ij}}, \quad m_i = \min_j d_{ij},

    \mathrm{out}_i = \sum_j Q_{ij} \big(\log(Q_{ij} + 10^{-12}) - \mathrm{lp}_{ij}\big),

    G_{ij} = g_i \big(Q_{ij} - r_i P_{ij}\big), \quad P = e^{\mathrm{lp}}, \quad r_i = \sum_j Q_{ij},

where :math:`G` is the gradient of :math:`\sum_i g_i \mathrm{out}_i` with respect to
:math:`\mathrm{dist}`. The functions below are the per-element pieces; the kernels
do the tiling, the row reductions and the matrix products. Arguments and results are
in the compute dtype (float32 or float64), so float32 loops stay float32.
"""

from numba.extending import register_jitable

from ._options import HELPER

# Squared distances taken from the expansion d = |a|^2 + |b|^2 - 2 a.b that come out below
# this fraction of |a|^2 + |b|^2 have lost digits to cancellation: the kernels sum them again
# directly, so every distance keeps the relative accuracy of the direct sum within a factor of
# about 1 / NEAR (close pairs far from the centring vector; typically a pair's own distance).
NEAR = 0.25


@register_jitable(**HELPER)
def expanded_dist(s, p, zero):
    r"""The squared distance :math:`\max(0, s - 2p)` from :math:`s = \|a\|^2 + \|b\|^2` and :math:`p = a \cdot b`.

    Rounding can make the difference slightly negative; NaN stays NaN. ``zero``
    is 0 in the compute dtype.
    """
    v = s - (p + p)
    return zero if v < zero else v


@register_jitable(**HELPER)
def kl_term(q, log_q, lp):
    r"""One element of a row's KL divergence: :math:`q\,(\log(q + \epsilon) - \mathrm{lp})`.

    ``log_q`` is :math:`\log(q + 10^{-12})`, computed once per call (``q`` takes
    two values only).
    """
    return q * (log_q - lp)


@register_jitable(**HELPER)
def dist_grad(g, q, r, p):
    r"""Gradient of :math:`g_i \mathrm{out}_i` with respect to :math:`d_{ij}`: :math:`g\,(q - r p)`.

    Through ``lp = log_softmax(-d)``: :math:`\partial \mathrm{out}_i / \partial \mathrm{lp}_{ij} = -q`,
    the log-softmax backward gives :math:`-q + p \sum_j q = -(q - r p)` for :math:`-d`,
    so :math:`+g (q - r p)` for :math:`d`.
    """
    return g * (q - r * p)
