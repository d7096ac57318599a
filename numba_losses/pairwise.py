r"""Losses on pairs and triplets of vectors: TripletLoss and CosineEmbeddingLoss.

The classes validate their parameters and describe a call as a spec of the
``pairwise`` family (:mod:`numba_losses._plan.pairwise`), run by the CPU or
CUDA kernels of ``numba_losses.kernels.{cpu,cuda}.pairwise``; the math is in
``numba_losses.kernels.pairwise_math``. Semantics are MXNet 1.9.1's
``gluon.loss`` (docs/semantics.rst sections 12 and 14), float64 included.
"""

from __future__ import annotations

from typing import Any

from ._core.params import check_real
from ._core.request import Call
from ._plan.pairwise import CosineSpec, TripletSpec
from .loss import Loss

__all__ = ["TripletLoss", "CosineEmbeddingLoss"]


class TripletLoss(Loss):
    r"""Triplet loss on an anchor, a positive and a negative example.

    .. math::

        L_b = w\,\mathrm{relu}\Big(\sum_{i}\big((p_{bi} - x_{bi})^2 - (n_{bi} - x_{bi})^2\big) + \mu\Big)

    summed over every axis except ``batch_axis``. ``relu`` is MXNet's: NaN
    passes, and its gradient is 0 where :math:`s_b + \mu = 0`. With
    :math:`m_b = g_b w [L_b > 0]`:
    :math:`\partial x = 2m(n - p)`, :math:`\partial p = 2m(p - x)`,
    :math:`\partial n = -2m(n - x)`.

    Parameters
    ----------
    margin : float, default 1
        :math:`\mu`.
    weight : float or None, default None
        Global scalar weight :math:`w` (checked at call time).
    batch_axis : int, default 0
        The axis of the samples; the loss is summed over all others.
    **kwargs
        gluon's ``prefix`` / ``params``, accepted and ignored; any other keyword raises ``TypeError``.

    Notes
    -----
    Inputs: ``pred`` (the anchors), ``positive``, ``negative`` (reshaped like
    ``pred``; same number of elements). There is no ``sample_weight``: a
    fourth input raises ``TypeError``. Output: shape ``(pred.shape[batch_axis],)``.
    Gradients: ``(dpred, dpositive, dnegative)``.
    """

    _inputs = ("pred", "positive", "negative")
    _n_required = 3
    _differentiable = ("pred", "positive", "negative")
    _output_ndim = 1

    def __init__(self, margin: float = 1, weight: float | None = None, batch_axis: int = 0, **kwargs: Any) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._margin = check_real(type(self).__name__, "margin", margin)

    def _spec(self, call: Call) -> TripletSpec:
        return TripletSpec(self._margin, self._scalar_weight(), self._batch_axis)


class CosineEmbeddingLoss(Loss):
    r"""Cosine embedding loss between two sets of vectors (along the last axis).

    With :math:`a` = ``input1`` (reshaped like ``input2``), :math:`b` = ``input2``
    and, per vector pair,

    .. math::

        c = \frac{a \cdot b}{\max(\|a\|\,\|b\|,\ 10^{-12})}, \qquad
        L = (1 - c)\,[y = 1] + \max\big(0,\ [y = -1]\,(c - \mu)\big),

    times ``sample_weight`` (broadcast; it may grow the output) and
    :math:`w`. Labels other than exactly 1 or -1 give 0. The output is **not**
    reduced: shape ``(M, 1)`` for ``M = prod(input2.shape[:-1])`` vectors.

    The gradient is MXNet's autograd: :math:`\max(0, v)` passes nothing at
    :math:`v = 0`; and when :math:`\|a\|\,\|b\| < 10^{-12}` a row of the
    ``input1`` gradient is NaN if :math:`a = 0` (and of ``input2`` if
    :math:`b = 0`), whatever the label or head gradient, as MXNet's ``norm``
    backward divides by the zero norm.

    Parameters
    ----------
    weight : float or None, default None
        Global scalar weight :math:`w` (checked at call time).
    batch_axis : int, default 0
        Accepted and ignored (as in MXNet).
    margin : float, default 0
        :math:`\mu`, for the ``y = -1`` branch.
    **kwargs
        gluon's ``prefix`` / ``params``, accepted and ignored; any other keyword raises ``TypeError``.

    Notes
    -----
    Inputs: ``input1``, ``input2`` (same number of elements), ``label``
    (reshaped to ``(-1, 1)``; broadcast against ``(M, 1)``, so one vector pair
    with several labels gives several rows), ``sample_weight`` (optional).
    Output: ``(M, 1)``, or the broadcast of ``(M, 1)`` with ``sample_weight``.
    Gradients: ``(dinput1, dinput2)`` in the inputs' shapes.
    """

    _inputs = ("input1", "input2", "label", "sample_weight")
    _n_required = 3
    _differentiable = ("input1", "input2")
    _output_ndim = None  # (M, 1) or larger when sample_weight broadcasts: MakeLoss reads the output's shape

    def __init__(self, weight: float | None = None, batch_axis: int = 0, margin: float = 0, **kwargs: Any) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._margin = check_real(type(self).__name__, "margin", margin)

    def _spec(self, call: Call) -> CosineSpec:
        return CosineSpec(self._margin, self._scalar_weight())
