r"""CTCLoss: connectionist temporal classification (MXNet 1.9.1 ``gluon.loss.CTCLoss``)."""

from __future__ import annotations

from typing import Any

from ._core.params import check_flag
from ._core.request import Call
from ._plan.ctc import CTCSpec, check_blank, check_layouts
from .loss import Loss

__all__ = ["CTCLoss"]


class CTCLoss(Loss):
    r"""Connectionist Temporal Classification loss (Graves et al., 2006).

    ``pred`` holds raw activations; the softmax over the last axis is applied
    inside. For sample :math:`b` with :math:`T_b` frames,
    :math:`\mathrm{lp}_t = \log\mathrm{softmax}(x_t)`, label
    :math:`l` of length :math:`L` and the extended label :math:`l'` (a blank
    before, between and after the labels, length :math:`S = 2L + 1`):

    .. math::

        \mathrm{cost}_b = -\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_{t < T_b}
        e^{\mathrm{lp}_t(\pi_t)},

    summing over the frame-wise paths :math:`\pi` that give :math:`l` once
    repeats are merged and blanks removed, computed by the log-space
    forward-backward recursions :math:`\alpha_t(s)`, :math:`\beta_t(s)`
    (docs/semantics.rst section 7). Output: :math:`\mathrm{cost}_b \cdot s_b \cdot w` (no
    mean), shape ``(N,)``, or the broadcast shape with ``sample_weight``.

    Gradient w.r.t. the activations (head gradient :math:`g`,
    :math:`c_b = \sum g\, s\, w` over the copies of sample :math:`b`,
    :math:`\gamma_t(k) = \log \sum_{s: l'_s = k} e^{\alpha_t(s) + \beta_t(s)}`):

    .. math::

        \frac{\partial}{\partial x_{t,k}} = c_b \Big(e^{\mathrm{lp}_t(k)}
        - e^{\gamma_t(k) - \mathrm{lp}_t(k) + \mathrm{cost}_b}\Big)
        \quad (t < \lfloor T_b \rfloor),

    with warp-ctc's exceptions (:math:`\gamma = -\infty` or exactly 0 gives
    :math:`c_b e^{\mathrm{lp}}`) and 0 on frames past the length (MXNet
    truncates a fractional ``pred_lengths`` here while the cost rounds it).

    Parameters
    ----------
    layout : {'NTC', 'TNC'}, default 'NTC'
        Axes of ``pred``: batch, time, classes (or time first). Both are read
        in place.
    label_layout : {'NT', 'TN'}, default 'NT'
        Axes of ``label``.
    weight : float or None, default None
        Global scalar weight.
    zero_infinity : bool, default True (keyword-only; not in MXNet)
        A sample whose label cannot fit its frames (:math:`L + R > T_b`,
        :math:`R` the number of adjacent repeated labels) costs 0 with
        gradient 0 (MXNet's cost; MXNet leaves the gradient uninitialised);
        ``False`` gives cost :math:`+\infty` and gradient 0.
    blank_label : {'last', 'first'}, default 'last' (keyword-only)
        The blank is class :math:`C - 1` and labels are padded with ``-1``
        (gluon's choice), or the blank is class 0, labels are ``1..C-1`` and
        padded with ``0`` (MXNet's ``ctc_loss`` operator option).
    **kwargs
        gluon's ``prefix`` / ``params``, accepted and ignored; any other keyword raises ``TypeError``.

    Notes
    -----
    Inputs, positional in this order or by keyword:

    * ``pred`` ``(N, T, C)`` (``'NTC'``) or ``(T, N, C)``: float16 (computed
      in float32), float32 or float64; MXNet computes float32 only.
    * ``label`` ``(N, Lw)`` (``'NT'``) or ``(Lw, N)``, any real dtype,
      :math:`Lw \le T`. Values are rounded half away from zero; without
      ``label_lengths`` a sample's label ends at its first padding value.
    * ``pred_lengths`` ``(N,)``, optional: frames used per sample (rounded);
      frames past it are never read.
    * ``label_lengths`` ``(N,)``, optional: labels used per sample (rounded).
    * ``sample_weight``, optional, broadcast with the ``(N,)`` cost.

    Where MXNet reads out of bounds it is an error here (``ValueError`` naming
    the sample): lengths that round outside ``[0, T]`` / ``[0, Lw]`` or are
    NaN, used label values outside the alphabet (the padding value inside an
    explicit label length included), NaN or infinite used labels. The blank
    index used as a label is accepted, as in MXNet. A sample with no frames
    and an empty label costs 0.
    """

    _inputs = ("pred", "label", "pred_lengths", "label_lengths", "sample_weight")
    _n_required = 2
    _output_ndim = None  # (N,), or grown by sample_weight

    def __init__(
        self,
        layout: str = "NTC",
        label_layout: str = "NT",
        weight: float | None = None,
        *,
        zero_infinity: bool = True,
        blank_label: str = "last",
        **kwargs: Any,
    ) -> None:
        check_layouts(layout, label_layout)
        super().__init__(weight, 0 if layout == "NTC" else 1, **kwargs)
        self._layout = layout
        self._label_layout = label_layout
        self._zero_infinity = check_flag(type(self).__name__, "zero_infinity", zero_infinity)
        self._blank_label = check_blank(blank_label)

    @property
    def layout(self) -> str:
        """Axes of ``pred``: ``'NTC'`` or ``'TNC'``."""
        return self._layout

    @property
    def label_layout(self) -> str:
        """Axes of ``label``: ``'NT'`` or ``'TN'``."""
        return self._label_layout

    @property
    def zero_infinity(self) -> bool:
        """Whether infeasible samples cost 0 (else ``+inf``); their gradient is 0 either way."""
        return self._zero_infinity

    @property
    def blank_label(self) -> str:
        """``'last'`` (blank :math:`C - 1`, padding ``-1``) or ``'first'`` (blank 0, padding 0)."""
        return self._blank_label

    def _spec(self, call: Call) -> CTCSpec:
        return CTCSpec(self._layout, self._label_layout, self._blank_label, self._zero_infinity, self._scalar_weight())
