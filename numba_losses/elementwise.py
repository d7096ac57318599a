r"""Losses made of an elementwise term followed by a per-sample reduction.

Each class only validates its parameters and names the term of
:data:`numba_losses.kernels.registry.ELEMENTWISE` it uses, in an
:class:`~numba_losses._plan.elementwise.ElementwiseSpec`; the family's host or
device module does layout and the kernel does math.

Common semantics (MXNet 1.9.1 ``gluon.loss``): with the elementwise term
:math:`\ell`, sample weight :math:`s` (broadcast NumPy-style, it may grow the
shape) and scalar weight :math:`w`,

.. math:: \mathrm{out}_b = \frac{1}{K} \sum_{i \ne b} w\, s_{bi}\, \ell_{bi}

over every axis except ``batch_axis`` (:math:`K` elements), and the gradient of
``sum(out * out_grad)`` is summed back to ``pred``'s shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core.params import check_flag, check_int, check_real
from ._core.request import Call
from ._core.validate import check_weight
from ._plan.elementwise import ElementwiseSpec
from ._plan.softmax import KLDivSpec
from .loss import Loss

__all__ = [
    "ElementwiseLoss",
    "L2Loss",
    "L1Loss",
    "SigmoidBinaryCrossEntropyLoss",
    "SigmoidBCELoss",
    "HuberLoss",
    "HingeLoss",
    "SquaredHingeLoss",
    "LogisticLoss",
    "PoissonNLLLoss",
    "KLDivLoss",
]


class ElementwiseLoss(Loss):
    """Base of the elementwise losses: one registry term, MXNet weighting and reduction.

    Subclasses implement :meth:`_term`, returning ``(term, p0, p1, aux)``.
    """

    _reduce = "mean"
    _label_mode = "reshape"
    _output_ndim = 1

    def _term(self, inputs: dict[str, Any]) -> tuple[Any, float, float]:
        """``(term, p0, p1)``: the registry name (or user pair) and its two scalar parameters."""
        raise NotImplementedError

    def _global_weight(self) -> float:
        return self._scalar_weight()

    def _spec(self, call: Call) -> ElementwiseSpec:
        term, p0, p1 = self._term(call.inputs)
        aux = "pos_weight" if "pos_weight" in self._inputs else None
        return ElementwiseSpec(
            term,
            p0,
            p1,
            self._global_weight(),
            self._batch_axis,
            self._reduce,
            self._label_mode,
            self._inputs[0],
            self._inputs[1],
            aux,
        )


class L2Loss(ElementwiseLoss):
    r"""Half squared error.

    .. math:: L = \frac{w}{2}\,\mathrm{mean}\big((y - x)^2\big)

    Parameters
    ----------
    weight : float, default 1.0
        Global weight; the loss uses ``weight / 2`` (``None`` raises ``TypeError``
        at call time, as in MXNet).
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label`` (same number of elements, reshaped like
    ``pred``), ``sample_weight`` (optional, broadcastable).
    Outputs: loss of shape ``(batch,)``. Gradient: ``(g/K) w s (x - y)``.
    """

    def __init__(self, weight: float | None = 1.0, batch_axis: int = 0, **kwargs: Any) -> None:
        super().__init__(weight, batch_axis, **kwargs)

    def _global_weight(self) -> float:
        try:
            half = self._weight / 2  # MXNet halves first: None or a string fails here with TypeError
        except TypeError:
            raise TypeError(
                f"L2Loss: weight must be a number, got {self._weight!r} (MXNet's L2Loss computes weight / 2)"
            ) from None
        return check_weight(half)

    def _term(self, inputs):
        return "l2", 0.0, 0.0


class L1Loss(ElementwiseLoss):
    r"""Absolute error.

    .. math:: L = \mathrm{mean}(|y - x|)

    Gradient ``sign(x - y)``, 0 where ``x == y``.

    Parameters
    ----------
    weight : float or None, default None
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight``. Outputs: ``(batch,)``.
    """

    def __init__(self, weight: float | None = None, batch_axis: int = 0, **kwargs: Any) -> None:
        super().__init__(weight, batch_axis, **kwargs)

    def _term(self, inputs):
        return "l1", 0.0, 0.0


class SigmoidBinaryCrossEntropyLoss(ElementwiseLoss):
    r"""Binary cross-entropy on logits (or probabilities).

    With ``from_sigmoid=False`` (logits, numerically stable):

    .. math:: L = \mathrm{mean}\big(\mathrm{relu}(x) - x z + \log(1 + e^{-|x|})\big)

    and with ``pos_weight`` :math:`p`, :math:`l_w = 1 + (p - 1) z`:

    .. math:: L = \mathrm{mean}\big(x - x z + l_w (\log(1 + e^{-|x|}) + \mathrm{relu}(-x))\big)

    With ``from_sigmoid=True`` (probabilities, :math:`\epsilon = 10^{-12}`):

    .. math:: L = -\mathrm{mean}\big(\log(x + \epsilon) z p + \log(1 - x + \epsilon)(1 - z)\big)

    Gradient (logits): :math:`\sigma(x) - z`, exactly :math:`-z` at :math:`x = 0`
    (:math:`1 - z` with ``pos_weight``), as MXNet's autograd gives it.

    Parameters
    ----------
    from_sigmoid : bool, default False
        Whether ``pred`` holds probabilities rather than logits.
    weight : float or None, default None
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label`` (targets :math:`z`, not validated),
    ``sample_weight``, ``pos_weight`` (broadcastable, e.g. ``(1, C)``).
    Outputs: ``(batch,)``.
    """

    _inputs = ("pred", "label", "sample_weight", "pos_weight")

    def __init__(
        self, from_sigmoid: bool = False, weight: float | None = None, batch_axis: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._from_sigmoid = check_flag(type(self).__name__, "from_sigmoid", from_sigmoid)

    def _term(self, inputs):
        if self._from_sigmoid:
            return "bce_prob", 0.0, 0.0
        return ("bce_logit_pw" if inputs.get("pos_weight") is not None else "bce_logit"), 0.0, 0.0


SigmoidBCELoss = SigmoidBinaryCrossEntropyLoss


class HuberLoss(ElementwiseLoss):
    r"""Smoothed L1 loss.

    .. math::
        L = \mathrm{mean}\begin{cases} |y - x| - \rho/2 & |y - x| > \rho \\
        \frac{1}{2\rho}(y - x)^2 & \text{otherwise} \end{cases}

    Parameters
    ----------
    rho : float, default 1
        Threshold between the quadratic and linear parts, positive: ``rho <= 0``
        raises ``ValueError`` when the loss is built (MXNet raises
        ``ZeroDivisionError`` at call time for ``rho=0``).
    weight : float or None, default None
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight``. Outputs: ``(batch,)``.
    """

    def __init__(self, rho: float = 1, weight: float | None = None, batch_axis: int = 0, **kwargs: Any) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._rho = check_real(type(self).__name__, "rho", rho, low=0.0, low_open=True)

    def _term(self, inputs):
        return "huber", float(self._rho), 0.5 / self._rho


class _MarginLoss(ElementwiseLoss):
    """Shared constructor of the margin losses (``margin``, ``weight``, ``batch_axis``)."""

    _term_name = ""

    def __init__(self, margin: float = 1, weight: float | None = None, batch_axis: int = 0, **kwargs: Any) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._margin = check_real(type(self).__name__, "margin", margin)

    def _term(self, inputs):
        return self._term_name, float(self._margin), 0.0


class HingeLoss(_MarginLoss):
    r"""Hinge loss for labels in {-1, 1}.

    .. math:: L = \mathrm{mean}\big(\max(0, m - x y)\big)

    Gradient :math:`-y\,[m - x y > 0]` (0 at the kink).

    Parameters
    ----------
    margin : float, default 1
    weight : float or None, default None
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight``. Outputs: ``(batch,)``.
    """

    _term_name = "hinge"


class SquaredHingeLoss(_MarginLoss):
    r"""Squared hinge loss for labels in {-1, 1}.

    .. math:: L = \mathrm{mean}\big(\max(0, m - x y)^2\big)

    Gradient :math:`-2 y \max(0, m - x y)`.

    Parameters
    ----------
    margin : float, default 1
    weight : float or None, default None
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight``. Outputs: ``(batch,)``.
    """

    _term_name = "squared_hinge"


class LogisticLoss(ElementwiseLoss):
    r"""Logistic loss, the logits BCE with signed or binary labels.

    .. math:: L = \mathrm{mean}\big(\mathrm{relu}(x) - x z + \log(1 + e^{-|x|})\big),
              \quad z = (y + 1)/2 \text{ (signed) or } y \text{ (binary)}

    Parameters
    ----------
    weight : float or None, default None
    batch_axis : int, default 0
    label_format : {'signed', 'binary'}, default 'signed'

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight``. Outputs: ``(batch,)``.
    """

    def __init__(
        self, weight: float | None = None, batch_axis: int = 0, label_format: str = "signed", **kwargs: Any
    ) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        if label_format not in ("signed", "binary"):
            raise ValueError(f"label_format can only be signed or binary, recieved {label_format}.")
        self._label_format = label_format

    def _term(self, inputs):
        return "bce_logit", (1.0 if self._label_format == "signed" else 0.0), 0.0  # p0: labels in {-1, 1}


class PoissonNLLLoss(ElementwiseLoss):
    r"""Negative log-likelihood of a Poisson target, averaged over all elements.

    .. math::
        L = \mathrm{mean}(e^x - t x) \text{ (from\_logits)}, \quad
        L = \mathrm{mean}(x - t \log(x + \epsilon)) \text{ (otherwise)}

    ``compute_full`` adds Stirling's term
    :math:`[t > 1](t \log t - t + \tfrac12 \log(2 \pi t))` (NaN at :math:`t = 0`,
    as MXNet computes it as a product); it does not change the gradient.

    Parameters
    ----------
    weight : float or None, default None
    from_logits : bool, default True
    batch_axis : int, default 0
        Ignored: the mean runs over every element.
    compute_full : bool, default False

    Notes
    -----
    Inputs: ``pred``, ``target``, ``sample_weight``, ``epsilon`` (a number,
    default 1e-08). Outputs: shape ``(1,)``.
    """

    _inputs = ("pred", "target", "sample_weight", "epsilon")
    _scalar_inputs = {"epsilon": 1e-08}
    _reduce = "all"

    def __init__(
        self,
        weight: float | None = None,
        from_logits: bool = True,
        batch_axis: int = 0,
        compute_full: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._from_logits = check_flag(type(self).__name__, "from_logits", from_logits)
        self._compute_full = check_flag(type(self).__name__, "compute_full", compute_full)

    def _term(self, inputs):
        eps = inputs["epsilon"]
        if isinstance(eps, np.ndarray) and eps.size == 1:
            eps = eps.reshape(())[()]
        if not isinstance(eps, (int, float, np.number)) or isinstance(eps, (bool, np.bool_)):
            raise TypeError(f"epsilon must be a number, got {type(eps).__name__}")
        term = "poisson_logits" if self._from_logits else "poisson_prob"
        if self._compute_full:
            term += "_full"
        return term, float(eps), 0.0


class KLDivLoss(ElementwiseLoss):
    r"""Kullback-Leibler divergence, summed over the non-batch axes (MXNet 1.9).

    .. math:: L = \sum_{i \ne b} y \big(\log(y + 10^{-12}) - x\big)

    with ``pred`` :math:`x` given as log-probabilities (``from_logits=True``).
    The label is broadcast against ``pred`` (not reshaped); zero labels
    contribute exactly 0.

    Parameters
    ----------
    from_logits : bool, default True
        ``False``: ``pred`` holds logits and :math:`x` above is
        :math:`\log\mathrm{softmax}(\mathrm{pred})` along ``axis``; the
        gradient is then :math:`u - \mathrm{softmax}(\mathrm{pred}) \sum_{axis} u`
        with :math:`u` the gradient w.r.t. :math:`x`.
    axis : int, default -1
        Class axis for the log-softmax (``from_logits=False`` only).
    weight : float or None, default None
    batch_axis : int, default 0

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight``. Outputs: ``(batch,)``.
    """

    _reduce = "sum"
    _label_mode = "broadcast"

    def __init__(
        self, from_logits: bool = True, axis: int = -1, weight: float | None = None, batch_axis: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        self._from_logits = check_flag(type(self).__name__, "from_logits", from_logits)
        self._axis = check_int(type(self).__name__, "axis", axis)

    def _term(self, inputs):
        return "kldiv_logits", 0.0, 0.0

    def _spec(self, call: Call) -> ElementwiseSpec | KLDivSpec:
        if self._from_logits:
            return super()._spec(call)
        return KLDivSpec(self._axis, self._global_weight(), self._batch_axis)
