"""Planning of the softmax family: SoftmaxCrossEntropyLoss and KLDivLoss(from_logits=False).

A call is planned around the class axis: ``pred`` of shape ``S`` is seen as
``(outer, C, inner)`` and every ``(outer, inner)`` position is a row of ``C``
logits. The fused kernel writes one loss per position (``pred``'s shape with
the class axis set to 1, :attr:`ClassLayout.keep_shape`); MXNet's weighting
(``sample_weight``, ``weight``, mean over the non-batch axes) applies to that
array (:func:`numba_losses._core.weighting.plan_rows`). Because the weighting
is linear, the gradient scale of every position is known before the logits
are read.
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


def class_layout(shape: tuple[int, ...], axis: int) -> ClassLayout:
    """Validate ``axis`` against ``shape`` and split the shape around it (cached per shape and axis)."""
    if type(axis) is int and type(shape) is tuple:
        return _class_layout(shape, axis)
    return _class_layout.__wrapped__(tuple(shape), axis)


@functools.lru_cache(maxsize=512)
def _class_layout(shape: tuple[int, ...], axis: int) -> ClassLayout:
    if len(shape) == 0:
        raise ValueError("pred must have at least one dimension (the class axis)")
    ax = normalize_axis(axis, len(shape), "axis")
    lay = ClassLayout(tuple(shape), ax, math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1 :]))
    if lay.n_classes == 0 and lay.n_rows > 0:
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
    lay = class_layout(x.shape, spec.axis)
    rows = None
    if isinstance(spec, SoftmaxSpec):
        full = lay.keep_shape
        if sw is not None:
            full = broadcast_shape(
                {"the loss per position (pred with a class axis of 1)": full, "sample_weight": sw.shape}
            )
        rows = plan_rows(full, sw, spec.weight, spec.batch_axis)
    return SoftmaxPlan(cdt, result_dtype(x, cdt), lay, rows)


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
