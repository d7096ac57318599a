"""Planning of the softmax family: SoftmaxCrossEntropyLoss and KLDivLoss(from_logits=False).

A call is planned around the class axis: ``pred`` of shape ``S`` is seen as
``(outer, C, inner)`` and every ``(outer, inner)`` position is a row of ``C``
logits. The fused kernel writes one loss per position (``pred``'s shape with
the class axis set to 1, :attr:`ClassLayout.keep_shape`); MXNet's weighting
(``sample_weight``, ``weight``, mean over the non-batch axes) applies to that
array (:func:`numba_losses._core.weighting.plan_rows`). Because the weighting
is linear, the gradient scale of every position is known before the logits
are read.

Two keyword options extend MXNet's loss (PyTorch's ``cross_entropy``):
``class_weight`` and ``normalization``. :func:`lower` rewrites a call that
uses them into one the kernels already run: per-position class weights
:math:`w_{j}` (``pick`` of the label) multiply ``sample_weight``; with label
smoothing and sparse labels, or with dense labels, the weighted target is
passed as a dense label; ``normalization='valid'`` sums over the non-batch
axes and divides by :math:`D`, the total class weight of the positions not
ignored (a host reduction over the labels).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._core.request import Call
from .._core.validate import broadcast_shape, compute_dtype, normalize_axis, result_dtype
from .._core.weighting import Rows, plan_rows
from . import elementwise
from .elementwise import ElementwiseSpec


@dataclass(slots=True)
class SoftmaxSpec:
    """Softmax cross-entropy parameters (validated: see :func:`check_options`)."""

    family: ClassVar[str] = "softmax"
    axis: int
    sparse: bool
    from_logits: bool
    weight: float
    batch_axis: int
    has_ignore: bool = False
    ignore: float = 0.0
    eps: float = 0.0
    class_weight: np.ndarray | None = None  # (C,) float64, read-only (see check_class_weight)
    normalization: str = "mean"  # one of NORMALIZATIONS
    total: float | None = None  # 'valid': the divisor when already known (Dask blocks), else computed per call


#: ``normalization`` values of SoftmaxCELoss: MXNet's mean over the non-batch axes, their sum, or
#: their sum divided by the total class weight of the non-ignored positions of the call.
NORMALIZATIONS = ("mean", "sum", "valid")


@dataclass(slots=True)
class KLDivSpec:
    """KLDivLoss with ``from_logits=False``: the log-softmax of ``pred`` along ``axis`` first."""

    family: ClassVar[str] = "softmax"
    axis: int
    weight: float
    batch_axis: int


@dataclass(frozen=True, slots=True)
class ClassLayout:
    """``pred``'s shape around the class axis (immutable: one is shared by every call of a shape)."""

    shape: tuple[int, ...]
    axis: int
    outer: int
    n_classes: int
    inner: int
    n_rows: int = field(init=False)
    keep_shape: tuple[int, ...] = field(init=False)  # the per-position loss: pred's with the class axis of 1
    dropped_shape: tuple[int, ...] = field(init=False)
    shape3: tuple[int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        head, tail = self.shape[: self.axis], self.shape[self.axis + 1 :]
        for name, value in (
            ("n_rows", self.outer * self.inner),
            ("keep_shape", head + (1,) + tail),
            ("dropped_shape", head + tail),
            ("shape3", (self.outer, self.n_classes, self.inner)),
        ):
            object.__setattr__(self, name, value)


def class_layout(shape: tuple[int, ...], axis: int, no_classes: bool = False) -> ClassLayout:
    """Validate ``axis`` against ``shape`` and split the shape around it (cached per shape and axis).

    An empty class axis is an error (there is no class to pick) unless ``no_classes``: KLDivLoss
    sums its terms over the classes, which is 0 over none.
    """
    if type(axis) is int and type(shape) is tuple:
        return _class_layout(shape, axis, no_classes)
    return _class_layout.__wrapped__(tuple(shape), axis, no_classes)


def spec_layout(spec: SoftmaxSpec | KLDivSpec, shape: tuple[int, ...]) -> ClassLayout:
    """The class layout a call of ``spec`` reads: KLDivLoss takes an empty class axis, cross-entropy does not."""
    return class_layout(shape, spec.axis, isinstance(spec, KLDivSpec))


@functools.lru_cache(maxsize=512)
def _class_layout(shape: tuple[int, ...], axis: int, no_classes: bool) -> ClassLayout:
    if len(shape) == 0:
        raise ValueError("pred must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, len(shape), "axis")
    lay = ClassLayout(tuple(shape), ax, math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1 :]))
    if lay.n_classes == 0 and lay.n_rows > 0 and not no_classes:
        raise ValueError(f"the class axis (axis={axis}) of pred {tuple(shape)} has no classes")
    return lay


def check_sparse_label(label_shape: tuple[int, ...], lay: ClassLayout) -> None:
    """MXNet's rule: the label has ``pred``'s shape without the class axis, or with it of size 1."""
    if tuple(label_shape) not in (lay.dropped_shape, lay.keep_shape):
        raise ValueError(
            f"sparse label of shape {tuple(label_shape)} does not match pred {lay.shape} with class "
            f"axis {lay.axis}: expected {lay.dropped_shape} or {lay.keep_shape}"
        )


def label_kind(dtype: np.dtype) -> str:
    """``"int"`` or ``"float"``: which pick rule a sparse label dtype follows."""
    return "float" if np.dtype(dtype).kind == "f" else "int"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))


def check_options(sparse: bool, ignore_label: Any, smoothing: Any) -> tuple[bool, float, float]:
    """``(has_ignore, ignore, eps)`` from the extension keywords, validated."""
    if not _is_number(smoothing):
        raise TypeError(f"label_smoothing must be a number, got {type(smoothing).__name__}")
    eps = float(smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {smoothing}")
    if ignore_label is None:
        return False, 0.0, eps
    if not sparse:
        raise ValueError("ignore_label needs sparse_label=True (class-id labels)")
    if not _is_number(ignore_label):
        raise TypeError(f"ignore_label must be a number or None, got {type(ignore_label).__name__}")
    return True, float(ignore_label), eps


def check_class_weight(owner: str, value: Any) -> np.ndarray | None:
    """``class_weight`` as a read-only float64 ``(C,)`` copy (its length is checked against ``pred`` per call).

    Raises
    ------
    TypeError
        Not a real-valued array-like.
    ValueError
        Not 1-D, or a NaN or infinite weight.
    """
    if value is None:
        return None
    try:
        a = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{owner}: class_weight must be a 1-D array of real numbers ({exc})") from None
    if np.asarray(value).dtype.kind not in "fiub":
        raise TypeError(f"{owner}: class_weight must hold real numbers, got dtype {np.asarray(value).dtype}")
    if a.ndim != 1:
        raise ValueError(f"{owner}: class_weight must be 1-D (one weight per class), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{owner}: class_weight must be finite, got {value!r}")
    a.flags.writeable = False
    return a


def check_normalization(owner: str, value: Any) -> str:
    """``normalization``, one of :data:`NORMALIZATIONS`."""
    if not isinstance(value, str) or value not in NORMALIZATIONS:
        listed = ", ".join(map(repr, NORMALIZATIONS))
        raise ValueError(f"{owner}: normalization must be one of {listed}, got {value!r}")
    return value


def _namespace(a: Any) -> Any:
    """The array module of ``a``: CuPy for a CuPy array, else NumPy."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def pick_classes(label: Any, n_classes: int) -> Any:
    """MXNet's ``pick(mode='clip')`` class id of every sparse label, vectorised (NumPy or CuPy, int64).

    The rule of the kernels (``kernels/softmax_math.py``): a float label is
    truncated toward zero, NaN, infinite and out-of-int32 values give class 0;
    an integer (or bool) label is reduced to int32 modulo :math:`2^{32}`; ids
    are then clipped to ``[0, n_classes - 1]``.
    """
    xp = _namespace(label)
    if label.dtype == np.bool_:
        label = label.view(np.uint8)
    if label.dtype.kind == "f":
        v = label.astype(np.float64)
        ok = (v >= 1.0) & (v < 2147483648.0)  # NaN fails both: class 0
        j = xp.where(ok, v, 0.0).astype(np.int64)
    else:
        j = label.astype(np.int32).astype(np.int64)  # C cast: the low 32 bits
    xp.maximum(j, 0, out=j)  # in place (np.clip costs more than the work on small arrays)
    return xp.minimum(j, max(n_classes - 1, 0), out=j)


def label_values(label: Any) -> Any:
    """The sparse label as ``ignore_label`` is compared with it: float64 (float16 exactly, bool as 0 / 1)."""
    if label.dtype == np.bool_:
        label = label.view(np.uint8)
    return label.astype(np.float64)


def counted_weights(spec: SoftmaxSpec, label: Any, n_classes: int) -> Any:
    """Per sparse label (NumPy or CuPy, float64): its class weight (1 without), 0 where ignored.

    The sum over a call is the divisor :math:`D` of ``normalization='valid'``.
    """
    xp = _namespace(label)
    if spec.class_weight is not None:
        w = xp.asarray(spec.class_weight)[pick_classes(label, n_classes)]
    else:
        w = xp.ones(label.shape, dtype=np.float64)
    if spec.has_ignore:
        w = xp.where(label_values(label) != spec.ignore, w, 0.0)
    return w


def valid_total(spec: SoftmaxSpec, label: Any, lay: ClassLayout) -> float:
    """:math:`D`: the summed class weight of the positions not ignored (their number for dense labels)."""
    if spec.total is not None:
        return spec.total
    if not spec.sparse:
        return float(lay.n_rows)
    return float(counted_weights(spec, label, lay.n_classes).sum())


@dataclass(slots=True)
class Lowered:
    """A call with ``class_weight`` / ``normalization`` as the kernels run it (see :func:`lower`).

    ``spec``: the kernels' spec (no class weights, ``normalization`` folded
    in); ``label``: the label to pass (the caller's, or a dense target in
    ``pred``'s shape, compute dtype); ``value_weight`` / ``grad_weight``:
    per-position float64 weights (``keep_shape``) multiplied into
    ``sample_weight`` for the value and for the gradient scale (``None``: 1);
    ``value_scale`` / ``grad_scale``: factors of the scalar ``weight``.
    """

    spec: SoftmaxSpec
    label: Any
    value_weight: np.ndarray | None
    grad_weight: np.ndarray | None
    value_scale: float
    grad_scale: float


def extended(spec: SoftmaxSpec | KLDivSpec) -> bool:
    """Whether ``spec`` uses ``class_weight`` or a ``normalization`` other than ``'mean'``."""
    return isinstance(spec, SoftmaxSpec) and (spec.class_weight is not None or spec.normalization != "mean")


def needs_target(spec: SoftmaxSpec) -> bool:
    """Whether :func:`lower` replaces the label by a dense target (class weights with smoothing or dense labels)."""
    return spec.class_weight is not None and (spec.eps != 0.0 or not spec.sparse)


def needs_position_weights(spec: SoftmaxSpec) -> bool:
    """Whether :func:`lower` weighs each position by its label's class weight (sparse labels, no smoothing)."""
    return spec.class_weight is not None and spec.sparse and spec.eps == 0.0


def divides_per_position(spec: SoftmaxSpec) -> bool:
    """Whether ``lower(..., on_host=False)`` leaves the divisor of ``normalization='valid'`` to the caller.

    With sparse labels, :math:`D` depends on the label values (unless ``spec.total`` gives it):
    the device path sums it there and folds :math:`1 / D` into per-position weights.
    """
    return spec.sparse and spec.normalization == "valid"


def lower(spec: SoftmaxSpec, label: Any, lay: ClassLayout, cdt: np.dtype, on_host: bool = True) -> Lowered:
    r"""Rewrite a call with ``class_weight`` / ``normalization`` into one of the plain kernels.

    ``label``: the host sparse labels (checked shape) or the dense label in
    ``pred``'s shape (compute dtype), or ``None`` with ``on_host=False``. With class
    weights :math:`w` and the smoothed target
    :math:`q = (1 - \varepsilon) t + \varepsilon / C`:

    * sparse labels, :math:`\varepsilon = 0`: the loss is
      :math:`w_j (-\mathrm{lp}_j)`, :math:`j` = ``pick(label)``: :math:`w_j` per
      position multiplies ``sample_weight`` (value and gradient are linear in it);
    * sparse labels, :math:`\varepsilon > 0`: the dense target
      :math:`(1 - \varepsilon) w_j\,\mathrm{onehot}(j) + \varepsilon w / C`
      (zero rows at ignored positions), as a dense label without smoothing;
    * dense labels: the dense target :math:`w \odot q`.

    ``normalization='valid'`` sums over the non-batch axes and divides by
    :math:`D = \sum_{\text{positions not ignored}} w_j` (1 per position
    without class weights, and for dense labels); when :math:`D = 0` the value
    is NaN and the gradient NaN at the counted positions, 0 at ignored ones.

    ``on_host=False`` (``label`` may be ``None``) leaves to the caller whatever needs the label
    values (the device path makes it with kernels): the dense target (the result's ``label``
    is ``None`` where :func:`needs_target`), the per-position class weights (``value_weight``
    and ``grad_weight`` are ``None`` where :func:`needs_position_weights`) and, where
    :func:`divides_per_position`, the divisor: no scale, no weights (the caller makes
    :math:`w_j / D`, or :math:`1 / D`, per position).
    """
    cw, n_classes = spec.class_weight, lay.n_classes
    counted = None  # keep_shape bool: the positions not ignored (None: all)
    if spec.sparse and spec.has_ignore and label is not None:
        counted = (label_values(label) != spec.ignore).reshape(lay.keep_shape)
    picks = wpos = None
    if spec.sparse and cw is not None and label is not None:
        picks = pick_classes(np.asarray(label), n_classes)
        wpos = cw[picks].reshape(lay.keep_shape)
    total = 1.0
    divide = spec.normalization == "valid" and (on_host or not divides_per_position(spec))
    if divide:  # valid_total's D, from the arrays already made
        if spec.total is not None:
            total = spec.total
        elif wpos is not None:
            total = float(np.sum(wpos, where=counted) if counted is not None else np.sum(wpos))
        elif counted is not None:
            total = float(np.count_nonzero(counted))
        else:
            total = float(lay.n_rows)
    # the kernels' spec: no class weights; 'valid' sums (its divisor goes into the weighting)
    sparse, has_ignore, ignore, eps = spec.sparse, spec.has_ignore, spec.ignore, spec.eps
    value_weight = wpos if on_host else None
    if needs_target(spec):
        value_weight = None
        label = _host_target(spec, label, picks, counted, lay, cdt) if on_host else None
        if spec.sparse:  # the target carries the ignored positions (zero rows)
            sparse, has_ignore, ignore = False, False, 0.0
        eps = 0.0
    grad_weight, value_scale, grad_scale = value_weight, 1.0, 1.0
    if divide:
        if total != 0.0:
            value_scale = grad_scale = 1.0 / total
        else:  # 0 / 0: NaN values; the gradient NaN where counted (weight 0 / 0), 0 where ignored
            value_scale = math.nan
            ones = np.ones(lay.keep_shape) if counted is None else counted
            grad_weight = np.where(ones, math.nan, 0.0)
    normalization = "sum" if spec.normalization == "valid" else spec.normalization
    base = SoftmaxSpec(
        spec.axis, sparse, spec.from_logits, spec.weight, spec.batch_axis, has_ignore, ignore, eps, None, normalization
    )
    return Lowered(base, label, value_weight, grad_weight, value_scale, grad_scale)


def _host_target(spec: SoftmaxSpec, label: Any, picks: Any, counted: Any, lay: ClassLayout, cdt: np.dtype) -> Any:
    """:func:`lower`'s dense target in ``pred``'s shape (compute dtype), built with NumPy."""
    cw, n_classes = spec.class_weight, lay.n_classes
    shape_c = (1, n_classes, 1)
    if spec.sparse:  # (1 - eps) w_j at the label, eps w / C everywhere
        q3 = np.empty(lay.shape3, dtype=cdt)
        q3[...] = (cw * (spec.eps / n_classes)).reshape(shape_c)
        j3 = picks.reshape(lay.outer, 1, lay.inner)
        at = np.take_along_axis(q3, j3, axis=1)
        np.put_along_axis(q3, j3, at + ((1.0 - spec.eps) * cw[j3]).astype(cdt), axis=1)
        if counted is not None:  # zero rows where ignored (written only there)
            q3.transpose(0, 2, 1)[~counted.reshape(lay.outer, lay.inner)] = 0
    else:
        y3 = np.asarray(label).reshape(lay.shape3)
        q3 = y3 if spec.eps == 0.0 else y3 * cdt.type(1.0 - spec.eps) + cdt.type(spec.eps / n_classes)
        q3 = (q3 * cw.astype(cdt).reshape(shape_c)).astype(cdt, copy=False)
    return q3.reshape(lay.shape)


@dataclass(slots=True)
class SoftmaxPlan:
    """Dtypes, the class layout and the weighting of the per-position loss."""

    cdt: np.dtype
    rdt: np.dtype
    lay: ClassLayout
    rows: Rows | None  # None for KLDivSpec: its weighting is the elementwise family's


def plan(spec: SoftmaxSpec | KLDivSpec, x: np.ndarray, sw: np.ndarray | None) -> SoftmaxPlan:
    """Dtypes, class layout and weighting rows of a call (``x`` / ``sw``: layout arrays)."""
    cdt = compute_dtype("pred", x)
    lay = spec_layout(spec, x.shape)
    rows = None
    if isinstance(spec, SoftmaxSpec):
        cw = spec.class_weight
        if cw is not None and cw.shape[0] != lay.n_classes:
            raise ValueError(
                f"class_weight has {cw.shape[0]} entries but pred {lay.shape} has {lay.n_classes} classes "
                f"along axis {lay.axis}"
            )
        rows = plan_weighting(spec, lay, sw)
    return SoftmaxPlan(cdt, result_dtype(x, cdt), lay, rows)


def plan_weighting(spec: SoftmaxSpec, lay: ClassLayout, sw: Any, scale: float = 1.0) -> Rows:
    """The weighting rows of the per-position loss (``sw``: a layout array or None; ``scale`` multiplies ``weight``)."""
    full = lay.keep_shape
    if sw is not None:
        full = broadcast_shape({"the loss per position (pred with a class axis of 1)": full, "sample_weight": sw.shape})
    reduce = "mean" if spec.normalization == "mean" else "sum"
    return plan_rows(full, sw, spec.weight * scale if scale != 1.0 else spec.weight, spec.batch_axis, reduce)


def kldiv_as_cross_entropy(
    spec: KLDivSpec, lay: ClassLayout, label_shape: tuple[int, ...], sw_shape: tuple[int, ...] | None
) -> SoftmaxSpec | None:
    r"""The dense cross-entropy call that gives KLDivLoss (from logits) in one fused pass, or ``None``.

    Summed over the class axis, KLDivLoss's term is the dense cross-entropy of
    the position plus :math:`\sum_j y_j \log(y_j + 10^{-12})`, and its
    gradient is the dense cross-entropy's; the sum over the other non-batch
    axes is the weighting's ``'sum'``. That holds when the label has ``pred``'s
    shape, when ``sample_weight`` (if any) is constant along the class axis
    and adds no axes, and when the batch axis is not the class axis; other
    calls (a broadcast label, a weight per class) take the unfused path.
    """
    shape = lay.shape
    if tuple(label_shape) != shape or len(shape) < 2 or lay.n_classes == 0:
        return None
    try:
        batch = normalize_axis(spec.batch_axis, len(shape))
    except (ValueError, TypeError):
        return None  # the unfused path raises its error
    if batch == lay.axis:
        return None
    if sw_shape is not None:
        if len(sw_shape) > len(shape):
            return None
        padded = (1,) * (len(shape) - len(sw_shape)) + tuple(sw_shape)
        if padded[lay.axis] != 1 or any(d not in (1, n) for d, n in zip(padded, shape, strict=True)):
            return None
    return SoftmaxSpec(spec.axis, False, False, spec.weight, spec.batch_axis, normalization="sum")


def kldiv_term_call(spec: KLDivSpec, call: Call, lp: Any, buffers: bool) -> tuple[ElementwiseSpec, Call]:
    """The elementwise ``kldiv_logits`` term on the log-probabilities ``lp``: its spec and call.

    With ``buffers`` (the result dtype is the compute dtype), the caller's
    ``out`` / ``grad_out`` take the term's results directly; the gradient
    w.r.t. ``lp`` is then turned into the gradient w.r.t. ``pred`` in place.
    """
    inner = Call(
        {"pred": lp, "label": call.inputs["label"], "sample_weight": call.inputs["sample_weight"]},
        call.want_value,
        call.want_grad,
        call.out_grad,
        call.out if buffers else None,
        tuple(b if buffers else None for b in call.grad_out),
    )
    return kldiv_term(spec), inner


def kldiv_term(spec: KLDivSpec) -> ElementwiseSpec:
    """KLDivLoss's elementwise term, summed over the non-batch axes of the log-probabilities."""
    return ElementwiseSpec(
        "kldiv_logits", weight=spec.weight, batch_axis=spec.batch_axis, reduce="sum", label_mode="broadcast"
    )


def result_shapes(spec: SoftmaxSpec | KLDivSpec, inputs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """``((out_shape, dtype), ((grad_shape, dtype),))`` for layout arrays ``inputs`` (nothing is read)."""
    x = np.asarray(inputs["pred"])
    label = np.asarray(inputs["label"])
    sw = inputs.get("sample_weight")
    sw = None if sw is None else np.asarray(sw)
    p = plan(spec, x, sw)
    if isinstance(spec, KLDivSpec):  # the elementwise term's plan on the log-probabilities (pred's shape)
        out_shape = elementwise.plan(kldiv_term(spec), x, label, None, sw).rows.out_shape
    else:
        if spec.sparse:
            check_sparse_label(label.shape, p.lay)
        out_shape = p.rows.out_shape
    return (out_shape, p.rdt), ((x.shape, p.rdt),)
