"""The dispatcher: from validated user inputs to one kernel call.

It looks at the arrays once, picks the backend, fixes the compute dtype
(float16 computed in float32), maps the broadcast shape onto the kernels'
canonical ``(n_outer, n_rows, n_inner)`` layout without copying where a view
exists, splits ``sample_weight`` into a per-row scale or an elementwise weight,
allocates outputs with NumPy (huge pages, see DESIGN.md) and calls the kernel.
It holds no loss math.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW
from numba_losses.kernels.cpu.rowmean import build_rowmean_kernel
from numba_losses.kernels.registry import ELEMENTWISE

from ._backend import CUDA, select_backend
from ._validate import (
    as_host_array,
    broadcast_shape,
    check_buffer,
    compute_dtype,
    normalize_axis,
    reshape_like,
    result_dtype,
)

_DUMMY3 = {np.dtype(t): np.ones((1, 1, 1), dtype=t) for t in (np.float32, np.float64)}
_DUMMY1 = {np.dtype(t): np.empty((1,), dtype=t) for t in (np.float32, np.float64)}


@dataclass(frozen=True)
class Names:
    """How the inputs are called in error messages."""

    pred: str = "pred"
    label: str = "label"
    aux: str = "pos_weight"


def _view3(
    a: np.ndarray, full: tuple[int, ...], shape3: tuple[int, int, int], dtype: np.dtype, contiguous: bool = False
) -> np.ndarray:
    """``a`` cast to ``dtype``, broadcast to ``full`` and viewed as ``shape3``.

    Copies only if no strided view exists, or (``contiguous=True``) if the view
    is not C-contiguous. ``pred`` and ``label`` stay views: they are the large
    inputs. ``pos_weight`` and elementwise ``sample_weight`` are usually small
    arrays broadcast up; materialising them keeps the number of compiled kernel
    variants (each array layout is one more Numba specialisation) small.
    """
    if a.dtype != dtype:
        a = a.astype(dtype)
    if a.shape == full and a.flags.c_contiguous:
        return a.reshape(shape3)
    if a.shape != full:
        a = np.broadcast_to(a, full)
    if contiguous:
        return np.ascontiguousarray(a).reshape(shape3)
    try:
        return np.reshape(a, shape3, copy=False)
    except ValueError:
        return np.ascontiguousarray(a).reshape(shape3)


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient computed on a broadcast shape back to an input's shape."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + d for d, n in enumerate(shape) if n == 1 and g.shape[lead + d] != 1)
    return g.sum(axis=axes).reshape(shape) if axes else g.reshape(shape)


Term = str | tuple[Any, Any]


def term_pair(term: Term) -> tuple[Any, Any]:
    """The ``(value, grad)`` scalar pair of a registry name, or a user-made pair as is."""
    return ELEMENTWISE[term] if isinstance(term, str) else term


@dataclass(frozen=True)
class RowPlan:
    """How a call maps onto the row kernels, whatever the backend.

    ``y`` is the label after MXNet's ``reshape_like``; ``full`` the broadcast
    shape of all inputs; ``shape3`` the canonical ``(n_outer, n_rows, n_inner)``;
    ``scale`` the row scale before ``sample_weight`` (``weight / K`` for a mean,
    NaN for a mean over nothing); ``row_weight`` the sample weight as a 1-D
    array broadcastable to ``(n_rows,)`` when it is constant inside rows, and
    ``elementwise_weight`` whether it must instead be applied per element.
    """

    cdt: np.dtype
    rdt: np.dtype
    y: np.ndarray
    full: tuple[int, ...]
    shape3: tuple[int, int, int]
    scale: float
    row_weight: np.ndarray | None
    elementwise_weight: bool
    grows: bool


def plan_rows(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray | None,
    sw: np.ndarray | None,
    names: Names,
    weight: float,
    batch_axis: int,
    reduce: str,
    label_mode: str,
) -> RowPlan:
    """Validate shapes and dtypes and plan the reduction (reads no data: works on layouts)."""
    cdt = compute_dtype(names.pred, x)
    rdt = result_dtype(x, cdt)
    if label_mode == "reshape":
        y = reshape_like(names.label, y, x.shape, names.pred)
    shapes = {names.pred: x.shape, names.label: y.shape}
    if a is not None:
        shapes[names.aux] = a.shape
    if sw is not None:
        shapes["sample_weight"] = sw.shape
    full = x.shape if a is None and sw is None and y.shape == x.shape else broadcast_shape(shapes)

    if reduce == "all":
        ax = 0
        shape3 = (1, 1, math.prod(full))
    else:
        ax = normalize_axis(batch_axis, len(full))
        shape3 = (math.prod(full[:ax]), full[ax], math.prod(full[ax + 1 :]))
    k = shape3[0] * shape3[2]
    # Mean over K = 0 elements is 0/0 = NaN (SPEC section 1): scale by NaN.
    scale = weight if reduce == "sum" else (weight / k if k else math.nan)
    row_weight = None
    elementwise = False
    if sw is not None:
        padded = sw.reshape((1,) * (len(full) - sw.ndim) + sw.shape)
        per_row = all(n == 1 for d, n in enumerate(padded.shape) if d != ax)
        if reduce == "all":
            per_row = sw.size == 1
        if per_row:
            row_weight = padded.reshape(-1)
        else:
            elementwise = True
    return RowPlan(cdt, rdt, y, full, shape3, scale, row_weight, elementwise, x.shape != full)


def rowmean(
    term: Term,
    pred: Any,
    label: Any,
    *,
    names: Names = Names(),
    aux: Any = None,
    sample_weight: Any = None,
    weight: float = 1.0,
    batch_axis: int = 0,
    reduce: str = "mean",
    label_mode: str = "reshape",
    p0: float = 0.0,
    p1: float = 0.0,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: np.ndarray | None = None,
    grad_out: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Run elementwise term ``term`` (a registry name or a user-made pair) with MXNet's weighting and reduction.

    ``reduce`` is ``"mean"`` (mean over non-batch axes), ``"sum"`` (sum over
    them) or ``"all"`` (mean over every element, output shape ``(1,)``).
    ``label_mode`` is ``"reshape"`` (MXNet ``reshape_like``) or
    ``"broadcast"``. Returns ``(out, dpred)``, either ``None`` when not asked for.
    """
    backend = select_backend(
        {names.pred: pred, names.label: label, names.aux: aux, "sample_weight": sample_weight, "out_grad": out_grad}
    )
    if backend == CUDA:
        from ._dispatch_cuda import rowmean_cuda

        return rowmean_cuda(
            term, pred, label, names=names, aux=aux, sample_weight=sample_weight, weight=weight,
            batch_axis=batch_axis, reduce=reduce, label_mode=label_mode, p0=p0, p1=p1, out_grad=out_grad,
            want_value=want_value, want_grad=want_grad, out=out, grad_out=grad_out,
        )  # fmt: skip
    x = as_host_array(names.pred, pred)
    y = as_host_array(names.label, label)
    a = as_host_array(names.aux, aux) if aux is not None else None
    sw = as_host_array("sample_weight", sample_weight) if sample_weight is not None else None
    plan = plan_rows(x, y, a, sw, names, weight, batch_axis, reduce, label_mode)
    cdt, rdt, full, shape3 = plan.cdt, plan.rdt, plan.full, plan.shape3
    n_rows = shape3[1]

    x3 = _view3(x, full, shape3, cdt)
    y3 = _view3(plan.y, full, shape3, cdt)
    a3 = _view3(a, full, shape3, cdt, contiguous=True) if a is not None else None
    fscale = np.empty(n_rows, dtype=np.float64)
    fscale.fill(plan.scale)
    if plan.row_weight is not None:
        fscale *= plan.row_weight
    ew3 = _view3(sw, full, shape3, cdt, contiguous=True) if plan.elementwise_weight else None
    out_shape = (n_rows,)

    coef = fscale
    if want_grad and out_grad is not None:
        g = as_host_array("out_grad", out_grad)
        try:
            g = np.broadcast_to(g, out_shape)
        except ValueError:
            raise ValueError(f"out_grad has shape {g.shape}, expected the output's shape {out_shape}") from None
        coef = fscale * g.astype(np.float64)
    coef = coef.astype(cdt, copy=False)  # the gradient is scaled in the compute dtype

    grows = plan.grows
    out_c = _DUMMY1[cdt]
    if want_value:
        if out is not None:
            out = check_buffer("out", out, out_shape, rdt)
        out_c = out if (out is not None and rdt == cdt) else np.empty(out_shape, dtype=cdt)
    dx3 = _DUMMY3[cdt]
    grad_in_place = False  # the kernel writes straight into grad_out
    if want_grad:
        if grad_out is not None:
            grad_out = check_buffer("grad_out", grad_out, x.shape, rdt)
            if np.may_share_memory(grad_out, x) or np.may_share_memory(grad_out, y):
                raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")
            grad_in_place = rdt == cdt and not grows
        dx3 = grad_out.reshape(shape3) if grad_in_place else np.empty(shape3, dtype=cdt)

    value, grad = term_pair(term)
    # Gradient-only calls run the fused forward+backward kernel (the row sums are
    # cheap next to the gradient): one compiled variant fewer per loss and dtype.
    if want_grad and not want_value:
        out_c = np.empty(out_shape, dtype=cdt)
    kernel = build_rowmean_kernel(
        value,
        grad,
        a3 is not None,
        ew3 is not None,
        want_grad,
        x3.size >= SERIAL_BELOW,
    )
    kernel(
        x3,
        y3,
        a3 if a3 is not None else _DUMMY3[cdt],
        ew3 if ew3 is not None else _DUMMY3[cdt],
        cdt.type(p0),
        cdt.type(p1),
        fscale,
        coef,
        out_c,
        dx3,
    )

    res_out = None
    if want_value:
        res_out = out_c
        if out is not None and out_c is not out:
            out[...] = out_c
            res_out = out
        elif rdt != cdt:
            res_out = out_c.astype(rdt)
    res_dx = None
    if want_grad:
        dx = dx3.reshape(full)
        if grows:
            dx = _unbroadcast(dx, x.shape)
        if grad_out is not None:
            if not grad_in_place:
                grad_out[...] = dx
            res_dx = grad_out
        else:
            res_dx = dx.astype(rdt) if rdt != cdt else dx
    return res_out, res_dx
