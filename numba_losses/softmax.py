r"""Softmax cross-entropy (gluon's ``SoftmaxCrossEntropyLoss``, alias ``SoftmaxCELoss``)."""

from __future__ import annotations

from typing import Any

from ._core.params import check_flag, check_int, check_real
from ._core.request import Call
from ._plan.softmax import SoftmaxSpec, check_class_weight, check_normalization, check_options
from .loss import Loss

__all__ = ["SoftmaxCrossEntropyLoss", "SoftmaxCELoss"]


class SoftmaxCrossEntropyLoss(Loss):
    r"""Softmax cross-entropy along ``axis``, averaged over the non-batch axes.

    With :math:`\mathrm{lp} = \log\mathrm{softmax}(x)` along ``axis`` (or
    :math:`x` itself when ``from_logits``):

    .. math::

        \ell = -\mathrm{lp}_{j}  \quad (\text{sparse label } j), \qquad
        \ell = -\sum_k y_k\, \mathrm{lp}_k  \quad (\text{dense label } y),

    then, as for every gluon loss, :math:`\mathrm{out}_b = \mathrm{mean}(w\, s\, \ell)`
    over the axes other than ``batch_axis`` (:math:`\ell` keeps the class axis
    with size 1, so a ``sample_weight`` of shape ``(N, 1)`` weights rows).

    Gradient (head gradient :math:`g`, :math:`c = g\, w\, s / K`,
    :math:`p = \mathrm{softmax}(x)`): :math:`c\,(p - \mathrm{onehot}(j))`
    (sparse), :math:`c\,(p \sum_k y_k - y)` (dense, MXNet's form: it is not
    :math:`p - y` unless :math:`y` sums to 1); :math:`-c\,\mathrm{onehot}(j)`
    and :math:`-c\,y` with ``from_logits``.

    Sparse labels follow MXNet's ``pick(mode='clip')``: truncated toward zero,
    ids below 0 give class 0 and ids at or above :math:`C` give :math:`C - 1`;
    NaN, infinite and out-of-int32 float labels give class 0; integer labels
    are reduced modulo :math:`2^{32}` to int32 first. No label ever reads
    outside ``pred``.

    Parameters
    ----------
    axis : int, default -1
        The class axis of ``pred`` (any axis: handled by strides, no copy).
    sparse_label : bool, default True
        Labels are class ids (shape of ``pred`` without ``axis``, or with it of
        size 1; any real dtype) or dense per-class weights (reshaped like ``pred``).
    from_logits : bool, default False
        ``pred`` already holds log-probabilities.
    weight : float or None, default None
    batch_axis : int, default 0
    ignore_label : int or float, optional (keyword-only; not in MXNet)
        Positions whose sparse label equals this value get loss 0 and gradient 0.
        They still count in the mean over the non-batch axes (PyTorch's
        ``ignore_index`` with ``reduction='none'``).
    label_smoothing : float, default 0.0 (keyword-only; not in MXNet)
        PyTorch's label smoothing :math:`\varepsilon \in [0, 1]`: the target
        becomes :math:`q = (1 - \varepsilon)\, t + \varepsilon / C` (:math:`t`
        the one-hot or dense label), :math:`\ell = -\sum_k q_k \mathrm{lp}_k` and
        the gradient :math:`c\,(p \sum_k q_k - q)` (:math:`-c\,q` from logits).

    class_weight : array_like of shape (C,), optional (keyword-only; not in MXNet)
        PyTorch's ``weight`` of ``cross_entropy``: finite reals (any sign), one
        per class, copied when the loss is built and never differentiated.
        Sparse labels: :math:`\ell = (1 - \varepsilon)\, w_j (-\mathrm{lp}_j)
        + \frac{\varepsilon}{C} \sum_k w_k (-\mathrm{lp}_k)`, i.e. the target
        :math:`q = (1 - \varepsilon)\, w_j\, \mathrm{onehot}(j) + \varepsilon w / C`,
        with :math:`j` the class ``pick`` reads (out-of-range ids follow the
        clip rule above and take the weight of the class they pick; they do
        not raise). Dense labels: :math:`q = w \odot ((1 - \varepsilon)\, y +
        \varepsilon / C)`. In both cases :math:`\ell = -\sum_k q_k \mathrm{lp}_k`
        and the gradient is :math:`c\,(p \sum_k q_k - q)` (:math:`-c\,q` from
        logits). Ignored positions still cost 0 with gradient 0.
    normalization : {'mean', 'sum', 'valid'}, default 'mean' (keyword-only; not in MXNet)
        How the weighted per-position losses :math:`v_{bi} = \mathrm{weight}\,
        s_{bi}\, \ell_{bi}` of sample :math:`b` become its output:
        ``'mean'`` (MXNet) :math:`\mathrm{out}_b = \frac{1}{K} \sum_i v_{bi}`;
        ``'sum'`` :math:`\mathrm{out}_b = \sum_i v_{bi}`; ``'valid'``
        :math:`\mathrm{out}_b = \frac{1}{D} \sum_i v_{bi}`, where :math:`D`
        is one number for the whole call: the sum of :math:`w_j` (1 without
        ``class_weight``) over every position of ``pred`` whose label is not
        ``ignore_label`` (for dense labels, the number of positions).
        ``sample_weight`` and ``weight`` do not enter :math:`D`. With
        ``'valid'``, ``out.sum()`` is PyTorch's ``cross_entropy(...,
        reduction='mean')``. :math:`D` depends on the labels only, so it is not
        differentiated: the gradient scale is :math:`c = g\, \mathrm{weight}\,
        s / D`. When :math:`D = 0` (every position ignored or of weight 0)
        every output is NaN (0 / 0, PyTorch's mean) and the gradient is NaN at
        the counted positions and 0 at the ignored ones (PyTorch's gradient
        for non-negative weights).

    Notes
    -----
    Inputs: ``pred``, ``label``, ``sample_weight`` (optional, broadcast against
    the loss of shape ``pred.shape`` with ``axis`` set to 1; it may grow it).
    Outputs: ``(batch,)``.

    ``class_weight`` with sparse labels and no smoothing costs a gather of
    one weight per position; with smoothing, or with dense labels, the
    weighted target :math:`q` is built as an array of ``pred``'s size (the
    kernel reads it as a dense label). ``normalization='valid'`` reduces the
    labels on the host; on a CUDA device the labels are copied to the host
    for it (and for the class-weight gather), which waits for the stream.
    Over Dask arrays :math:`D` is a reduction over all label blocks, and the
    class axis is made one chunk.

    Examples
    --------
    PyTorch's weighted mean with ignored targets:

    >>> import numpy as np, numba_losses as nl
    >>> loss = nl.SoftmaxCELoss(ignore_label=-100, class_weight=[1.0, 3.0], normalization="valid")
    >>> out = loss(np.zeros((3, 2)), np.array([0, 1, -100]))
    >>> out.round(6).tolist(), float(out.sum())  # w_j log 2 / (w_0 + w_1) per sample; their sum
    ([0.173287, 0.51986, 0.0], 0.6931471805599453)
    """

    _output_ndim = 1
    _valid_total: float | None = None  # normalization='valid' with a known divisor (set on copies by the Dask path)

    def __init__(
        self,
        axis: int = -1,
        sparse_label: bool = True,
        from_logits: bool = False,
        weight: float | None = None,
        batch_axis: int = 0,
        *,
        ignore_label: int | float | None = None,
        label_smoothing: float = 0.0,
        class_weight: Any = None,
        normalization: str = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, batch_axis, **kwargs)
        owner = type(self).__name__
        self._axis = check_int(owner, "axis", axis)
        self._sparse_label = check_flag(owner, "sparse_label", sparse_label)
        self._from_logits = check_flag(owner, "from_logits", from_logits)
        if ignore_label is not None:
            ignore_label = check_real(owner, "ignore_label", ignore_label)
        self._ignore_label = ignore_label
        self._label_smoothing = check_real(owner, "label_smoothing", label_smoothing, low=0.0, high=1.0)
        check_options(self._sparse_label, self._ignore_label, self._label_smoothing)
        self._class_weight = check_class_weight(owner, class_weight)
        self._normalization = check_normalization(owner, normalization)

    def _spec(self, call: Call) -> SoftmaxSpec:
        ignore = self._ignore_label  # validated with the other options when the loss was built
        return SoftmaxSpec(
            self._axis,
            self._sparse_label,
            self._from_logits,
            self._scalar_weight(),
            self._batch_axis,
            ignore is not None,
            0.0 if ignore is None else ignore,
            self._label_smoothing,
            self._class_weight,
            self._normalization,
            self._valid_total,
        )


SoftmaxCELoss = SoftmaxCrossEntropyLoss
