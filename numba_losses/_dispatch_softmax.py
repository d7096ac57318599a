"""Dispatcher of the softmax family (SoftmaxCrossEntropyLoss, KLDivLoss from probabilities).

A call is planned around the class axis: ``pred`` of shape ``S`` is seen as
``(outer, C, inner)`` and every ``(outer, inner)`` position is a row of ``C``
logits. MXNet applies ``sample_weight``, ``weight`` and the mean over the
non-batch axes to the per-position loss (``pred``'s shape with the class axis
set to 1); that weighting is the elementwise machinery's ``identity`` term
(:func:`._dispatch.rowmean`), run on that small array. Because the weighting
is linear, the gradient scale of every position is known before the logits are
read: one ``rowmean`` call gives it, the fused kernel then writes the loss per
position and the gradient in one pass over the logits, and a second
``rowmean`` call weights and reduces the losses.

KLDivLoss(from_logits=False) computes ``log_softmax(pred)`` into a scratch
array, runs the elementwise ``kldiv_logits`` term on it, and applies the
log-softmax backward in place on the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW

from ._backend import CUDA, select_backend
from ._dispatch import Names, rowmean
from ._validate import as_host_array, check_buffer, compute_dtype, normalize_axis, reshape_like, result_dtype

# Error messages name the per-position loss the weighting applies to.
LOSS_NAMES = Names(pred="the loss before weighting", label="(its copy)")


@dataclass(frozen=True)
class ClassLayout:
    """``pred``'s shape around the class axis."""

    shape: tuple[int, ...]
    axis: int
    outer: int
    n_classes: int
    inner: int

    @property
    def n_rows(self) -> int:
        return self.outer * self.inner

    @property
    def keep_shape(self) -> tuple[int, ...]:
        """Shape of the per-position loss: ``pred``'s with the class axis of size 1."""
        return self.shape[: self.axis] + (1,) + self.shape[self.axis + 1 :]

    @property
    def dropped_shape(self) -> tuple[int, ...]:
        return self.shape[: self.axis] + self.shape[self.axis + 1 :]

    @property
    def shape3(self) -> tuple[int, int, int]:
        return (self.outer, self.n_classes, self.inner)


def class_layout(shape: tuple[int, ...], axis: int) -> ClassLayout:
    """Validate ``axis`` against ``shape`` and split the shape around it."""
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


def check_options(sparse: bool, ignore_label: Any, smoothing: float) -> tuple[bool, float, float]:
    """``(has_ignore, ignore, eps)`` from the extension keywords, validated."""
    if not isinstance(smoothing, (int, float, np.number)) or isinstance(smoothing, (bool, np.bool_)):
        raise TypeError(f"label_smoothing must be a number, got {type(smoothing).__name__}")
    eps = float(smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {smoothing}")
    if ignore_label is None:
        return False, 0.0, eps
    if not sparse:
        raise ValueError("ignore_label needs sparse_label=True (class-id labels)")
    if not isinstance(ignore_label, (int, float, np.number)) or isinstance(ignore_label, (bool, np.bool_)):
        raise TypeError(f"ignore_label must be a number or None, got {type(ignore_label).__name__}")
    return True, float(ignore_label), eps


def _rows(a: np.ndarray, lay: ClassLayout, contiguous: bool, transposed: bool = False) -> np.ndarray:
    """``a`` (``pred``'s shape) in a kernel layout, a view when one exists.

    ``contiguous``: ``(positions, C)`` rows; else ``(outer, C, inner)``, or
    its ``(outer, inner, C)`` transpose (rows as strided 1-D views).
    """
    if contiguous:
        return a.reshape(lay.n_rows, lay.n_classes)
    try:
        a3 = np.reshape(a, lay.shape3, copy=False)
    except ValueError:
        a3 = np.ascontiguousarray(a).reshape(lay.shape3)
    return a3.transpose(0, 2, 1) if transposed else a3


def _flat(a: np.ndarray, n: int) -> np.ndarray:
    try:
        return np.reshape(a, (n,), copy=False)
    except ValueError:
        return np.ascontiguousarray(a).reshape(n)


def _deliver(result: np.ndarray, rdt: np.dtype, buf: np.ndarray | None) -> np.ndarray:
    """``result`` in the result dtype, written into ``buf`` when one was given."""
    if buf is not None:
        if result is not buf:
            buf[...] = result
        return buf
    return result.astype(rdt) if result.dtype != rdt else result


def softmax_ce(
    pred: Any,
    label: Any,
    sample_weight: Any,
    *,
    axis: int,
    sparse: bool,
    from_logits: bool,
    weight: float,
    batch_axis: int,
    ignore_label: Any = None,
    label_smoothing: float = 0.0,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: Any = None,
    grad_out: Any = None,
) -> tuple[Any, Any]:
    """Softmax cross-entropy per sample and its gradient w.r.t. ``pred`` (SPEC section 5).

    Returns ``(out, dpred)``, either ``None`` when not asked for.
    """
    has_ignore, ignore, eps = check_options(sparse, ignore_label, label_smoothing)
    backend = select_backend({"pred": pred, "label": label, "sample_weight": sample_weight, "out_grad": out_grad})
    if backend == CUDA:
        from ._dispatch_softmax_cuda import softmax_ce_cuda

        return softmax_ce_cuda(
            pred, label, sample_weight, axis=axis, sparse=sparse, from_logits=from_logits, weight=weight,
            batch_axis=batch_axis, has_ignore=has_ignore, ignore=ignore, eps=eps, out_grad=out_grad,
            want_value=want_value, want_grad=want_grad, out=out, grad_out=grad_out,
        )  # fmt: skip
    from numba_losses.kernels.cpu.softmax import build_softmax_ce_kernel

    x = as_host_array("pred", pred)
    y = as_host_array("label", label)
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    lay = class_layout(x.shape, axis)
    n_rows = lay.n_rows
    sw = as_host_array("sample_weight", sample_weight) if sample_weight is not None else None
    if want_grad and grad_out is not None:
        grad_out = check_buffer("grad_out", grad_out, x.shape, rdt)
        if np.may_share_memory(grad_out, x) or np.may_share_memory(grad_out, y):
            raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")

    xc = x.astype(cdt, copy=False)
    contiguous = lay.inner == 1  # rows of C logits; otherwise the tiled kernel on (outer, C, inner)
    if contiguous:
        xc = np.ascontiguousarray(xc)
    x_rows = _rows(xc, lay, contiguous)
    if sparse:
        check_sparse_label(y.shape, lay)
        lab = y
        if y.dtype == np.float16:
            lab = y.astype(np.float32)
        elif y.dtype == np.bool_:
            lab = y.view(np.uint8)
        lab = _flat(lab, n_rows)
        y_rows = x_rows
    else:
        yd = reshape_like("label", y, x.shape, "pred").astype(cdt, copy=False)
        if contiguous:
            yd = np.ascontiguousarray(yd)
        y_rows = _rows(yd, lay, contiguous)
        lab = np.zeros(1, dtype=cdt)

    loss_rows = np.empty(n_rows, dtype=cdt)
    loss_keep = loss_rows.reshape(lay.keep_shape)
    coef = np.zeros(1, dtype=cdt)
    dx = dx_rows = x_rows  # dummies of the right type when no gradient is written
    if want_grad:
        # The weighting's gradient does not depend on the loss values: get it first.
        zeros = np.broadcast_to(np.zeros((), dtype=cdt), lay.keep_shape)
        _, cpos = rowmean(
            "identity", zeros, zeros, names=LOSS_NAMES, sample_weight=sw, weight=weight,
            batch_axis=batch_axis, out_grad=out_grad, want_value=False, want_grad=True,
        )  # fmt: skip
        coef = _flat(cpos, n_rows).astype(cdt, copy=False)
        dx = grad_out if (grad_out is not None and rdt == cdt) else np.empty(x.shape, dtype=cdt)
        dx_rows = _rows(dx, lay, contiguous)

    kernel = build_softmax_ce_kernel(
        sparse, from_logits, sparse and label_kind(lab.dtype) == "int", want_grad, contiguous,
        x.size >= SERIAL_BELOW,
    )  # fmt: skip
    if n_rows and lay.n_classes:
        kernel(x_rows, lab, y_rows, coef, ignore, has_ignore, eps, lay.inner, loss_rows, dx_rows)

    value = None
    if want_value:
        value, _ = rowmean(
            "identity", loss_keep, loss_keep, names=LOSS_NAMES, sample_weight=sw, weight=weight,
            batch_axis=batch_axis, want_value=True, want_grad=False, out=out if rdt == cdt else None,
        )  # fmt: skip
        value = _deliver(value, rdt, check_buffer("out", out, value.shape, rdt) if out is not None else None)
    grad = _deliver(dx, rdt, grad_out) if want_grad else None
    return value, grad


def kldiv_softmax(
    pred: Any,
    label: Any,
    sample_weight: Any,
    *,
    axis: int,
    weight: float,
    batch_axis: int,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: Any = None,
    grad_out: Any = None,
) -> tuple[Any, Any]:
    """KLDivLoss with ``from_logits=False`` (SPEC section 6): ``log_softmax`` of ``pred`` first."""
    backend = select_backend({"pred": pred, "label": label, "sample_weight": sample_weight, "out_grad": out_grad})
    if backend == CUDA:
        from ._dispatch_softmax_cuda import kldiv_softmax_cuda

        return kldiv_softmax_cuda(
            pred, label, sample_weight, axis=axis, weight=weight, batch_axis=batch_axis, out_grad=out_grad,
            want_value=want_value, want_grad=want_grad, out=out, grad_out=grad_out,
        )  # fmt: skip
    from numba_losses.kernels.cpu.softmax import build_log_softmax_backward_kernel, build_log_softmax_kernel

    x = as_host_array("pred", pred)
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    lay = class_layout(x.shape, axis)
    parallel = x.size >= SERIAL_BELOW
    lp = np.empty(x.shape, dtype=cdt)
    xc = x.astype(cdt, copy=False)
    contiguous = lay.inner == 1 and xc.flags.c_contiguous
    if lay.n_rows and lay.n_classes:
        build_log_softmax_kernel(contiguous, parallel)(
            _rows(xc, lay, contiguous, True), lay.inner, lay.n_rows, _rows(lp, lay, contiguous, True)
        )
    in_place = grad_out is not None and rdt == cdt
    value, u = rowmean(
        "kldiv_logits", lp, label, sample_weight=sample_weight, weight=weight, batch_axis=batch_axis,
        reduce="sum", label_mode="broadcast", out_grad=out_grad, want_value=want_value, want_grad=want_grad,
        out=out if rdt == cdt else None, grad_out=grad_out if in_place else None,
    )  # fmt: skip
    if want_value and rdt != cdt:
        value = _deliver(value, rdt, check_buffer("out", out, value.shape, rdt) if out is not None else None)
    if not want_grad:
        return value, None
    if lay.n_rows and lay.n_classes:
        rows = lay.inner == 1  # lp and u are C-contiguous arrays of pred's shape
        build_log_softmax_backward_kernel(rows, parallel)(
            _rows(lp, lay, rows, True), lay.inner, lay.n_rows, _rows(u, lay, rows, True)
        )
    if rdt != cdt:
        u = _deliver(u, rdt, check_buffer("grad_out", grad_out, x.shape, rdt) if grad_out is not None else None)
    return value, u
