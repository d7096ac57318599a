r"""MXNet's weighting of a loss, planned and run once for every family, host and device.

Every gluon loss ends the same way: the per-position loss :math:`\ell` is
multiplied by ``sample_weight`` :math:`s` (broadcast NumPy-style: it may grow
the shape) and by the scalar ``weight`` :math:`w`, then reduced. Two
reductions occur (docs/semantics.rst, section 1):

*rows* (mean or sum over every axis but ``batch_axis``; or the mean of all)
    .. math:: \mathrm{out}_b = \frac{w}{K} \sum_{i \ne b} s_{bi}\, \ell_{bi}

    The broadcast shape is seen as ``(n_outer, n_rows, n_inner)`` with the
    batch axis in the middle; :func:`plan_rows` splits ``sample_weight`` into a
    per-row scale (constant inside rows) or an elementwise weight. The
    elementwise family fuses this into its term kernel; a loss computed by a
    structured kernel (softmax) is weighted by the same row kernels through
    :func:`weigh_rows_host` / :func:`weigh_rows_device` and gets its gradient
    scale per position from :func:`coef_rows_host` / :func:`coef_rows_device`.

*product* (no reduction: CTC, CosineEmbeddingLoss)
    .. math:: \mathrm{out} = (\ell \cdot s) \cdot w

    in the compute dtype, shape ``broadcast(loss, sample_weight)``
    (:func:`product_shape`); the gradient scale of a loss position is the
    float64 sum of ``out_grad * s * w`` over its copies.

The gradient scale is the adjoint of the weighting: it never depends on the
loss values, so a fused kernel gets it before it reads its inputs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW
from numba_losses.kernels.cpu.elementwise import build_rowmean_kernel, scratch_shapes, task_layout
from numba_losses.kernels.registry import COMPUTED

from .buffers import SCRATCH_KEEP_BELOW, host_constant, host_full, host_ones, host_scratch, last_kept
from .device import DeviceArray, DeviceContext, broadcast_view, device_view, sum_to
from .launch import launch
from .validate import broadcast_shape, normalize_axis

REDUCTIONS = ("mean", "sum", "all")


@dataclass(slots=True)
class Rows:
    """How a weighted loss of broadcast shape ``full`` maps onto the row kernels.

    ``shape3`` is the canonical ``(n_outer, n_rows, n_inner)``; ``scale`` the
    row scale before ``sample_weight`` (``weight / K`` for a mean, NaN for a
    mean over nothing, ``weight`` for a sum); ``row_weight`` the sample weight
    as a 1-D array broadcastable to ``(n_rows,)`` when it is constant inside
    rows, and ``elementwise`` whether it must instead be applied per element.
    """

    full: tuple[int, ...]
    shape3: tuple[int, int, int]
    scale: float
    row_weight: np.ndarray | None
    elementwise: bool

    @property
    def n_rows(self) -> int:
        return self.shape3[1]

    @property
    def out_shape(self) -> tuple[int]:
        return (self.shape3[1],)


def plan_rows(
    full: tuple[int, ...], sw: np.ndarray | None, weight: float, batch_axis: int, reduce: str = "mean"
) -> Rows:
    """Plan the row reduction of a loss of broadcast shape ``full`` (``sw``: a layout array or None)."""
    if type(batch_axis) is int and type(full) is tuple:  # hashable: the shape arithmetic is cached
        ax, shape3 = _row_shape(full, batch_axis, reduce)
    else:
        ax, shape3 = _row_shape.__wrapped__(full, batch_axis, reduce)
    k = shape3[0] * shape3[2]
    # A mean over K = 0 elements is 0/0 = NaN (docs/semantics.rst, section 1): scale by NaN.
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
    return Rows(tuple(full), shape3, scale, row_weight, elementwise)


@functools.lru_cache(maxsize=512)
def _row_shape(full: tuple[int, ...], batch_axis: int, reduce: str) -> tuple[int, tuple[int, int, int]]:
    """``(batch axis, shape3)`` of a loss of shape ``full`` (pure shape arithmetic; errors are not cached)."""
    if reduce == "all":
        return 0, (1, 1, math.prod(full))
    ax = normalize_axis(batch_axis, len(full))
    return ax, (math.prod(full[:ax]), full[ax], math.prod(full[ax + 1 :]))


def one_per_row(rows: Rows) -> bool:
    """Whether every row of ``rows`` holds one loss position and the weight is per row (a plain map)."""
    return rows.shape3[0] == 1 and rows.shape3[2] == 1 and not rows.elementwise


def unweighted(rows: Rows, n_positions: int) -> bool:
    """Whether the weighting leaves ``n_positions`` losses as they are: one per row, scale 1, no weight.

    The row kernel's ``loss * 1.0`` (a float64 product rounded back to the compute dtype) gives
    every loss back exactly, NaN and signed zeros included, so the caller can skip it.
    """
    return rows.row_weight is None and rows.scale == 1.0 and one_per_row(rows) and n_positions == rows.n_rows


def product_shape(loss_shape: tuple[int, ...], sw_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """Output shape of the product weighting: the loss broadcast with ``sample_weight`` (it may grow)."""
    if sw_shape is None:
        return tuple(loss_shape)
    return broadcast_shape({f"the loss {tuple(loss_shape)}": tuple(loss_shape), "sample_weight": tuple(sw_shape)})


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum an array of a broadcast shape back to ``shape`` (the adjoint of broadcasting)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + d for d, n in enumerate(shape) if n == 1 and g.shape[lead + d] != 1)
    return g.sum(axis=axes).reshape(shape) if axes else g.reshape(shape)


# ------------------------------------------------------------------------------------ host
def view3(a: np.ndarray, full: tuple[int, ...], shape3: tuple[int, ...], dtype: np.dtype, contiguous: bool = False):
    """``a`` cast to ``dtype``, broadcast to ``full`` and viewed as ``shape3``.

    Copies only if no strided view exists, or (``contiguous=True``) if the view
    is not C-contiguous. Large inputs stay views; small arrays broadcast up
    (``pos_weight``, an elementwise ``sample_weight``) are materialised, which
    keeps the number of compiled kernel variants (one per array layout) small.
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


_DUMMY3 = {np.dtype(t): np.ones((1, 1, 1), dtype=t) for t in (np.float32, np.float64)}


def _fscale(rows: Rows) -> Any:
    """The float64 forward scale of every row: ``scale`` times the row weight (a NumPy scalar without one)."""
    scale = np.float64(rows.scale)
    return scale if rows.row_weight is None else scale * rows.row_weight.astype(np.float64)


def row_scales_host(rows: Rows, out_grad: np.ndarray | None, cdt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(fscale, coef)``: the float64 forward row scale and the gradient row scale (compute dtype).

    ``out_grad`` is the head gradient already broadcast to ``(n_rows,)`` (or None). Both are
    read-only to the caller (they may be kept arrays).
    """
    if rows.row_weight is None and out_grad is None and rows.n_rows <= _KEEP_SCALES_UP_TO:
        return host_constant(rows.n_rows, rows.scale, np.float64), host_constant(rows.n_rows, rows.scale, cdt)
    fscale = np.empty(rows.n_rows, dtype=np.float64)
    fscale.fill(rows.scale)
    if rows.row_weight is not None:
        fscale *= rows.row_weight
    coef = fscale if out_grad is None else fscale * out_grad.astype(np.float64)
    return fscale, coef.astype(cdt, copy=False)  # the gradient is scaled in the compute dtype


#: Row counts whose constant scales (no sample weight, no head gradient) are kept between calls.
_KEEP_SCALES_UP_TO = 4096


def _row_scratch(shape3: tuple[int, int, int], rowwise: bool, cdt: np.dtype) -> tuple[Any, ...]:
    """The row kernel's last arguments for ``shape3`` inputs: ``(bufs, partial)`` scratch (see
    ``scratch_shapes``) and the ``task_layout`` of the shape.

    The last triple of this thread is kept with its key when small (:func:`.buffers.last_kept`);
    the arrays come from :func:`.buffers.host_scratch`, which keeps small ones per thread.
    """

    def make() -> tuple[tuple[Any, ...], bool]:
        buf_shape, partial_shape = scratch_shapes(shape3, rowwise)
        bufs = host_scratch("rows.bufs", buf_shape, cdt)
        partial = host_scratch("rows.partial", partial_shape, np.float64)
        return (bufs, partial, task_layout(*shape3)), bufs.nbytes + partial.nbytes < SCRATCH_KEEP_BELOW

    return last_kept("rows", (shape3, rowwise, cdt), make)


def run_rows_host(pair: tuple[Any, Any], x3, y3, a3, ew3, p0, p1, fscale, coef, out, dx3, want_grad: bool) -> None:
    """One launch of the fused row kernel of ``pair`` (``a3`` / ``ew3`` None when absent)."""
    cdt = x3.dtype
    n_outer, _, n_inner = x3.shape
    rowwise = n_outer == 1 and n_inner == 1  # one element per row: the map variant
    kernel = build_rowmean_kernel(*pair, a3 is not None, ew3 is not None, want_grad, x3.size >= SERIAL_BELOW, rowwise)
    dummy = _DUMMY3[cdt]
    a3, ew3, dx3 = (dummy if v is None else v for v in (a3, ew3, dx3))
    kernel(x3, y3, a3, ew3, p0, p1, fscale, coef, out, dx3, *_row_scratch(x3.shape, rowwise, cdt))


def _rows_inputs_host(rows: Rows, loss: np.ndarray, sw: np.ndarray | None, cdt: np.dtype):
    x3 = view3(loss, rows.full, rows.shape3, cdt)
    ew3 = view3(sw, rows.full, rows.shape3, cdt, contiguous=True) if rows.elementwise else None
    return x3, ew3


def weigh_rows_host(rows: Rows, loss: np.ndarray, sw: np.ndarray | None, out: np.ndarray) -> None:
    """``out`` (``(n_rows,)``, compute dtype) = the weighted row reduction of ``loss``."""
    cdt = loss.dtype
    if one_per_row(rows) and loss.size == rows.n_rows:
        # One loss per row: the row kernel's ``loss * fscale`` (float64 product, one rounding into
        # ``out``), by NumPy without a kernel launch.
        np.multiply(loss.reshape(rows.n_rows), _fscale(rows), out=out)
        return
    x3, ew3 = _rows_inputs_host(rows, loss, sw, cdt)
    fscale, coef = row_scales_host(rows, None, cdt)
    run_rows_host(COMPUTED, x3, x3, None, ew3, cdt.type(0), cdt.type(0), fscale, coef, out, None, False)


def coef_rows_host(
    rows: Rows, loss_shape: tuple[int, ...], sw: np.ndarray | None, out_grad: np.ndarray | None, cdt: np.dtype
) -> np.ndarray:
    """The gradient scale of every loss position (``loss_shape``, compute dtype): d(sum(out * out_grad)) / d loss."""
    if one_per_row(rows) and rows.full == tuple(loss_shape):
        # One position per row: the row scales are the positions' scales (no broadcast copy).
        if unweighted(rows, rows.n_rows):
            if out_grad is None:
                return host_ones(rows.n_rows, cdt).reshape(loss_shape)  # kept, never written
            if out_grad.dtype.kind == "f":  # 1.0 * g in float64, rounded to cdt: g rounded once
                return out_grad.astype(cdt).reshape(loss_shape)
        fscale = _fscale(rows)
        coef = fscale if out_grad is None else fscale * out_grad.astype(np.float64)
        if not np.ndim(coef):
            return host_full(loss_shape, coef, cdt)
        return np.broadcast_to(coef, (rows.n_rows,)).astype(cdt).reshape(loss_shape)
    fscale, coef = row_scales_host(rows, out_grad, cdt)
    dx3 = np.empty(rows.shape3, dtype=cdt)
    if not rows.elementwise:
        # Constant inside each row: the row kernel would write coef[b] at every position
        # (coef * d(loss)/d(loss) = coef * 1); a broadcast copy gives the same values
        # without compiling a kernel variant for it (seconds at a loss's first use).
        dx3[...] = coef.reshape(1, -1, 1)
        return sum_to_shape(dx3.reshape(rows.full), loss_shape)
    zeros = np.broadcast_to(np.zeros((), dtype=cdt), loss_shape)
    x3, ew3 = _rows_inputs_host(rows, zeros, sw, cdt)
    rows_out = np.empty(rows.n_rows, dtype=cdt)
    run_rows_host(COMPUTED, x3, x3, None, ew3, cdt.type(0), cdt.type(0), fscale, coef, rows_out, dx3, True)
    return sum_to_shape(dx3.reshape(rows.full), loss_shape)


def weigh_product_host(
    loss: np.ndarray, full: tuple[int, ...], sw: np.ndarray | None, weight: float, out: np.ndarray
) -> None:
    """``out = (loss * sample_weight) * weight`` in the loss's (compute) dtype, broadcast to ``full``."""
    cdt = loss.dtype
    w = loss if sw is None else np.multiply(loss, sw.astype(cdt, copy=False))
    np.multiply(w if w.shape == tuple(full) else np.broadcast_to(w, full), cdt.type(weight), out=out)


def coef_product_host(
    loss_shape: tuple[int, ...],
    full: tuple[int, ...],
    sw: np.ndarray | None,
    weight: float,
    out_grad: np.ndarray | None,
    cdt: np.dtype,
) -> np.ndarray:
    """Gradient scale per loss position: the float64 sum of ``out_grad * sample_weight * weight`` over its copies."""
    if sw is None and tuple(full) == tuple(loss_shape):  # one copy per position: no broadcast, no sum
        if out_grad is None:
            return host_full(loss_shape, weight, cdt)
        return np.multiply(out_grad, np.float64(weight), dtype=np.float64).astype(cdt).reshape(loss_shape)
    h = np.ones(full) if out_grad is None else np.broadcast_to(out_grad.astype(np.float64), full)
    if sw is not None:
        h = h * sw.astype(np.float64)
    h = np.broadcast_to(h * weight, full)
    return np.ascontiguousarray(sum_to_shape(h, tuple(loss_shape)), dtype=cdt)


# ---------------------------------------------------------------------------------- device
def row_scales_device(
    rows: Rows, swd: DeviceArray | None, og: Any, cdt: np.dtype, ctx: DeviceContext
) -> tuple[Any, Any]:
    """Device ``(fscale, coef)`` (see :func:`row_scales_host`); ``og`` a ``(n_rows,)`` view or None."""
    from numba_losses.kernels.cuda.elementwise import row_scales_kernel

    n_rows = rows.n_rows
    fscale = ctx.empty((n_rows,), np.float64)[1]
    coef = ctx.empty((n_rows,), cdt)[1]
    one = ctx.scalar_array(1.0, np.float64)
    rw = one if rows.row_weight is None else swd.view(np.broadcast_to(rows.row_weight, (n_rows,)))
    has_rw, has_og = rows.row_weight is not None, og is not None
    ctx.launch(
        row_scales_kernel, n_rows, np.float64(rows.scale), rw, one if og is None else og, has_rw, has_og, fscale, coef
    )
    return fscale, coef


def run_rows_device(
    pair: tuple[Any, Any], ctx: DeviceContext, x3, y3, a3, ew3, p0, p1, fscale, coef, out, dx3, want_grad: bool
) -> None:
    """One launch of the CUDA row kernel of ``pair`` (plus the ordered partial-sum pass when rows are cut)."""
    from numba_losses.kernels.cuda import SIMULATOR, THREADS
    from numba_losses.kernels.cuda.elementwise import build_rowmean_kernel as build_cuda_kernel
    from numba_losses.kernels.cuda.elementwise import launch_plan
    from numba_losses.kernels.cuda.reduce import finish_rows_kernel

    n_outer, n_rows, n_inner = x3.shape
    dummy = ctx.dummy(3, p0.dtype)
    group, nck, chunk, blocks = launch_plan(n_rows, n_outer * n_inner, ctx.sms)
    partial = ctx.empty((n_rows, nck), np.float64)[1] if nck > 1 else ctx.dummy(2)
    kernel = build_cuda_kernel(*pair, a3 is not None, ew3 is not None, want_grad, not SIMULATOR)
    launch(
        kernel,
        blocks,
        THREADS,
        ctx.stream,
        x3,
        y3,
        dummy if a3 is None else a3,
        dummy if ew3 is None else ew3,
        p0,
        p1,
        fscale,
        coef,
        out,
        dummy if dx3 is None else dx3,
        partial,
        group,
        nck,
        chunk,
    )
    if nck > 1:
        ctx.launch(finish_rows_kernel, n_rows, partial, fscale, p0, out)


def rows_view_device(d: DeviceArray, layout: np.ndarray, rows: Rows, ctx: DeviceContext) -> Any:
    """``layout`` (a view of ``d``) broadcast to the rows' full shape, as a ``shape3`` Numba view."""
    if layout.shape != rows.full:
        layout = np.broadcast_to(layout, rows.full)
    return device_view(d, layout, rows.shape3, ctx)


def weigh_rows_device(rows: Rows, loss: DeviceArray, swd: DeviceArray | None, out: Any, ctx: DeviceContext) -> None:
    """Device :func:`weigh_rows_host`: ``out`` (a ``(n_rows,)`` view) from the device loss ``loss``."""
    cdt = loss.layout.dtype
    x3 = rows_view_device(loss, loss.layout, rows, ctx)
    ew3 = rows_view_device(swd, swd.layout, rows, ctx) if rows.elementwise else None
    fscale, coef = row_scales_device(rows, swd, None, cdt, ctx)
    zero = cdt.type(0)
    run_rows_device(COMPUTED, ctx, x3, x3, None, ew3, zero, zero, fscale, coef, out, None, False)


def coef_rows_device(
    rows: Rows, loss_shape: tuple[int, ...], swd: DeviceArray | None, og: Any, cdt: np.dtype, ctx: DeviceContext
) -> Any:
    """Device :func:`coef_rows_host`: a new ``(prod(loss_shape),)`` Numba array in the compute dtype."""
    zero = DeviceArray.wrap("zero", ctx.scalar_array(0.0, cdt))
    x3 = zero.view(np.broadcast_to(zero.layout.reshape(()), rows.full).reshape(rows.shape3))
    ew3 = rows_view_device(swd, swd.layout, rows, ctx) if rows.elementwise else None
    fscale, coef = row_scales_device(rows, swd, og, cdt, ctx)
    size = math.prod(loss_shape)
    target = ctx.empty((size,), cdt)[1]
    grows = tuple(rows.full) != tuple(loss_shape)
    dx3 = ctx.empty(rows.shape3, cdt)[1] if grows else target.reshape(rows.shape3)
    rows_out = ctx.empty((rows.n_rows,), cdt)[1]
    run_rows_device(COMPUTED, ctx, x3, x3, None, ew3, cdt.type(0), cdt.type(0), fscale, coef, rows_out, dx3, True)
    if grows:
        sum_to(dx3.reshape(rows.full), tuple(loss_shape), target.reshape(tuple(loss_shape)), ctx)
    return target


def _view3_of(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``shape`` as ``(prod(shape[:-2]), shape[-2], shape[-1])`` (1 for missing axes)."""
    padded = (1, 1) + tuple(shape)
    return (math.prod(padded[:-2]), padded[-2], padded[-1])


def weigh_product_device(
    loss: DeviceArray, full: tuple[int, ...], swd: DeviceArray | None, weight: float, out: Any, ctx: DeviceContext
) -> None:
    """Device :func:`weigh_product_host`; ``out`` a Numba view of shape ``full``."""
    from numba_losses.kernels.cuda.weighting import weigh_product_kernel

    shape3 = _view3_of(full)
    size = math.prod(full)
    if not size:
        return
    l3 = broadcast_view("the loss", loss, full, shape3, ctx)
    s3 = broadcast_view("sample_weight", swd, full, shape3, ctx) if swd is not None else ctx.dummy(3)
    proto = loss.layout.dtype.type(0)
    ctx.launch(weigh_product_kernel, size, l3, s3, swd is not None, float(weight), proto, out.reshape(shape3))


def coef_product_device(
    loss_shape: tuple[int, ...],
    full: tuple[int, ...],
    swd: DeviceArray | None,
    weight: float,
    ogd: DeviceArray | None,
    cdt: np.dtype,
    ctx: DeviceContext,
) -> Any:
    """Device :func:`coef_product_host`: a new Numba array of ``loss_shape`` in the compute dtype."""
    from numba_losses.kernels.cuda.weighting import head_product_kernel

    shape3 = _view3_of(full)
    size = math.prod(full)
    coef = ctx.empty(tuple(loss_shape), cdt)[1]
    if not math.prod(loss_shape):
        return coef
    h = ctx.empty(shape3, np.float64)[1]
    g3 = broadcast_view("out_grad", ogd, full, shape3, ctx) if ogd is not None else ctx.dummy(3)
    s3 = broadcast_view("sample_weight", swd, full, shape3, ctx) if swd is not None else ctx.dummy(3)
    if size:
        ctx.launch(head_product_kernel, size, g3, ogd is not None, s3, swd is not None, float(weight), h)
    sum_to(h.reshape(full), tuple(loss_shape), coef, ctx)
    return coef
