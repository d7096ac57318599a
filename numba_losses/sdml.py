r"""SDMLLoss: smoothed deep metric learning loss (MXNet 1.9.1 ``gluon.loss.SDMLLoss``)."""

from __future__ import annotations

from typing import Any

from ._core.params import check_real
from ._core.request import Call
from ._plan.sdml import SDMLSpec
from .loss import Loss

__all__ = ["SDMLLoss"]


class SDMLLoss(Loss):
    r"""Smoothed Deep Metric Learning loss over a batch of paired embeddings.

    Row :math:`i` of ``x1`` is paired with row :math:`i` of ``x2``; every other
    row of ``x2`` is a negative. With the squared distances

    .. math:: d_{ij} = \sum_k (x_{1,ik} - x_{2,jk})^2,

    the smoothed targets :math:`Q_{ii} = 1 - s`, :math:`Q_{ij} = s / (N - 1)`
    (:math:`i \ne j`) and :math:`\mathrm{lp} = \mathrm{log\_softmax}(-d)` along
    rows, the loss is the KL divergence per row

    .. math:: L_i = \sum_j Q_{ij} \big(\log(Q_{ij} + 10^{-12}) - \mathrm{lp}_{ij}\big).

    Gradients, with head gradient :math:`g`, :math:`r_i = \sum_j Q_{ij}`,
    :math:`P = \mathrm{softmax}(-d)` and :math:`G_{ij} = g_i (Q_{ij} - r_i P_{ij})`:

    .. math::

        \frac{\partial}{\partial x_{1,i}} = 2 \sum_j G_{ij} (x_{1,i} - x_{2,j}), \qquad
        \frac{\partial}{\partial x_{2,j}} = -2 \sum_i G_{ij} (x_{1,i} - x_{2,j}).

    Parameters
    ----------
    smoothing_parameter : float, default 0.3
        Probability mass :math:`s` spread over the negatives, in [0, 1];
        anything else raises ``ValueError`` when the loss is built (a
        deliberate difference: MXNet does not check it, and :math:`s > 1`
        gives a NaN loss, the log of a negative target).
    weight : float, default 1.0
        Kept as an attribute but **never applied** (MXNet quirk: the loss is
        a ``KLDivLoss`` with its own weight ``None``).
    batch_axis : int, default 0
        Kept but never applied either; the batch is always axis 0.
    **kwargs
        gluon's ``prefix`` / ``params``, accepted and ignored; any other keyword raises ``TypeError``.

    Notes
    -----
    Inputs: ``x1``, ``x2``, both 2-D ``(N, D)`` with equal shapes (positional
    or keyword). Outputs: ``(N,)``. Gradients: ``(dx1, dx2)``.

    ``N = 1`` gives NaN loss and NaN gradients without an exception: the
    diagonal target receives ``0 / (N - 1) = 0 / 0``, as in MXNet. float16
    inputs are computed in float32 and give float16 results; float64 works
    (MXNet itself fails on it).
    """

    _inputs = ("x1", "x2")
    _n_required = 2
    _differentiable = ("x1", "x2")
    _output_ndim = 1

    def __init__(
        self, smoothing_parameter: float = 0.3, weight: float | None = 1.0, batch_axis: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._smoothing_parameter = check_real(
            type(self).__name__, "smoothing_parameter", smoothing_parameter, low=0.0, high=1.0
        )

    @property
    def smoothing_parameter(self) -> float:
        """The smoothing probability mass :math:`s`."""
        return self._smoothing_parameter

    def _spec(self, call: Call) -> SDMLSpec:
        return SDMLSpec(self._smoothing_parameter)
