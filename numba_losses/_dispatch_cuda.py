"""The dispatcher's CUDA half: device inputs to one fused kernel launch, zero copies.

Planning (shapes, dtypes, broadcasting, the canonical layout) is shared with
the CPU path through :func:`._dispatch.plan_rows`, run on the inputs' layout
arrays (:mod:`._device`). Inputs are passed to the kernel as strided (possibly
zero-stride) views of the caller's memory in their own dtype; the kernel
converts on load, so float16 and integer inputs need no cast copies. Outputs
are allocated by the caller's array library and returned as its arrays.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._device import DeviceArray, DeviceContext, is_device_array, same_device
from ._validate import as_host_array, check_buffer

_SCALARS = (int, float, bool, np.number, np.bool_)


def _checked(name: str, a: Any) -> DeviceArray:
    d = DeviceArray.wrap(name, a)
    as_host_array(name, d.layout)  # the CPU path's dtype check, on the layout: reads nothing
    return d


def _wrap(name: str, a: Any, ctx: DeviceContext) -> DeviceArray:
    """A device input, or a Python number as a 0-d view of a device constant."""
    if isinstance(a, _SCALARS):
        d = DeviceArray.wrap(name, ctx.scalar_array(float(a), np.float64))
        d.layout = d.layout.reshape(())
        return d
    return _checked(name, a)


def _check_device_buffer(name: str, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray:
    if not is_device_array(buf):
        raise TypeError(f"{name} must be a device array (the inputs are), got {type(buf).__name__}")
    d = DeviceArray.wrap(name, buf)
    check_buffer(name, d.layout, shape, dtype)
    return d


def _overlaps(a: DeviceArray, b: DeviceArray) -> bool:
    (a0, a1), (b0, b1) = a.byte_range(), b.byte_range()
    return a0 < b1 and b0 < a1


@contextlib.contextmanager
def quiet_simulator() -> Iterator[None]:
    """Silence RuntimeWarnings under the simulator, whose threads compute with NumPy
    scalars (0 * inf, ...); a GPU computes the same values without warning. A no-op on GPUs."""
    from numba_losses.kernels.cuda import SIMULATOR

    if not SIMULATOR:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def device_view(d: DeviceArray, layout: np.ndarray, shape: tuple[int, ...], ctx: DeviceContext) -> Any:
    """A Numba view of ``layout`` (a view of ``d``'s layout) reshaped to ``shape``; a gathered copy if none exists."""
    try:
        return d.view(np.reshape(layout, shape, copy=False))
    except ValueError:  # no strided view of this reshape
        return _gather(d, layout, ctx).reshape(shape)


def rowmean_cuda(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """:func:`._dispatch.rowmean` for device arrays (same arguments, same results, device arrays out)."""
    with quiet_simulator():
        return _rowmean_cuda(*args, **kwargs)


def _rowmean_cuda(term: Any, pred: Any, label: Any, *, names: Any, **kwargs: Any) -> tuple[Any, Any]:
    xd = _checked(names.pred, pred)
    ctx = DeviceContext.of(xd)
    with ctx.activate():
        return _launch(term, xd, ctx, label, names=names, **kwargs)


def _launch(
    term: Any,
    xd: DeviceArray,
    ctx: DeviceContext,
    label: Any,
    *,
    names: Any,
    aux: Any,
    sample_weight: Any,
    weight: float,
    batch_axis: int,
    reduce: str,
    label_mode: str,
    p0: float,
    p1: float,
    out_grad: Any,
    want_value: bool,
    want_grad: bool,
    out: Any,
    grad_out: Any,
) -> tuple[Any, Any]:
    from numba_losses.kernels.cuda import SIMULATOR, THREADS
    from numba_losses.kernels.cuda.reduce import finish_rows_kernel
    from numba_losses.kernels.cuda.rowmean import build_rowmean_kernel, launch_plan, row_scales_kernel

    from ._dispatch import plan_rows, term_pair

    inputs = {names.pred: xd, names.label: _wrap(names.label, label, ctx)}
    if aux is not None:
        inputs[names.aux] = _wrap(names.aux, aux, ctx)
    if isinstance(sample_weight, _SCALARS):  # a number: part of the row scale, no device constant
        weight, sample_weight = weight * float(sample_weight), None
    if sample_weight is not None:
        inputs["sample_weight"] = _wrap("sample_weight", sample_weight, ctx)
    if out_grad is not None and want_grad:
        inputs["out_grad"] = _wrap("out_grad", out_grad, ctx)
    same_device(inputs)
    yd = inputs[names.label]
    ad, swd = inputs.get(names.aux), inputs.get("sample_weight")
    x = xd.layout
    plan = plan_rows(
        x, yd.layout, ad.layout if ad else None, swd.layout if swd else None,
        names, weight, batch_axis, reduce, label_mode,
    )  # fmt: skip
    cdt, rdt, full, shape3 = plan.cdt, plan.rdt, plan.full, plan.shape3
    n_rows = shape3[1]
    out_shape = (n_rows,)

    def view3(d: DeviceArray, layout: np.ndarray) -> Any:
        if layout.shape != full:
            layout = np.broadcast_to(layout, full)
        return device_view(d, layout, shape3, ctx)

    x3 = view3(xd, x)
    y3 = view3(yd, plan.y)
    dummy3 = _dummy3(ctx, cdt)
    a3 = view3(ad, ad.layout) if ad is not None else None
    ew3 = view3(swd, swd.layout) if plan.elementwise_weight else None

    # Per-row scales on the device: fscale (float64) and the gradient coefficient.
    fscale = ctx.empty(out_shape, np.float64)[1]
    coef = ctx.empty(out_shape, cdt)[1]
    one = ctx.scalar_array(1.0, np.float64)
    rw = one
    if plan.row_weight is not None:
        rw = swd.view(np.broadcast_to(plan.row_weight, out_shape))
    og = one
    if "out_grad" in inputs:
        ogd = inputs["out_grad"]
        try:
            og_layout = np.broadcast_to(ogd.layout, out_shape)
        except ValueError:
            raise ValueError(
                f"out_grad has shape {ogd.layout.shape}, expected the output's shape {out_shape}"
            ) from None
        og = ogd.view(og_layout)
    ctx.launch(
        row_scales_kernel, n_rows, np.float64(plan.scale), rw, og, plan.row_weight is not None, og is not one,
        fscale, coef,
    )  # fmt: skip

    out_native = None
    if want_value and out is not None:
        od = _check_device_buffer("out", out, out_shape, rdt)
        out_native, out_dev = out, od.view(od.layout)
    elif want_value:
        out_native, out_dev = ctx.empty(out_shape, rdt)
    else:  # gradient only: the fused kernel still writes row values
        out_dev = ctx.empty(out_shape, cdt)[1]

    grads_native = scratch = None
    dx3 = dummy3
    if want_grad:
        if grad_out is not None:
            gd = _check_device_buffer("grad_out", grad_out, x.shape, rdt)
            if any(_overlaps(gd, d) for d in inputs.values()):
                raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")
            grads_native = grad_out
            target = gd.view(gd.layout)
        else:
            grads_native, target = ctx.empty(x.shape, rdt)
        if plan.grows:  # computed on the broadcast shape, then summed back into ``target``
            scratch = dx3 = ctx.empty(shape3, cdt)[1]
        else:
            dx3 = target.reshape(shape3)

    value, grad = term_pair(term)
    k = shape3[0] * shape3[2]
    group, nck, chunk, blocks = launch_plan(n_rows, k, ctx.sms)
    partial = ctx.empty((n_rows, nck), np.float64)[1] if nck > 1 else _dummy2(ctx)
    kernel = build_rowmean_kernel(value, grad, a3 is not None, ew3 is not None, want_grad, not SIMULATOR)
    kernel[blocks, THREADS, ctx.stream](
        x3, y3, a3 if a3 is not None else dummy3, ew3 if ew3 is not None else dummy3,
        cdt.type(p0), cdt.type(p1), fscale, coef, out_dev, dx3, partial, group, nck, chunk,
    )  # fmt: skip
    if nck > 1:
        ctx.launch(finish_rows_kernel, n_rows, partial, fscale, cdt.type(0), out_dev)
    if scratch is not None:
        _sum_to(scratch.reshape(full), x.shape, target, ctx)
    return out_native, grads_native


def _dummy3(ctx: DeviceContext, dtype: np.dtype) -> Any:
    return ctx.scalar_array(0.0, dtype).reshape((1, 1, 1))


def _dummy2(ctx: DeviceContext) -> Any:
    return ctx.scalar_array(0.0, np.float64).reshape((1, 1))


def _sum_to(src: Any, shape: tuple[int, ...], target: Any, ctx: DeviceContext) -> None:
    """Sum the contiguous ``src`` (a broadcast shape) over broadcast axes into ``target`` (``shape``)."""
    from numba_losses.kernels.cuda.reduce import sum_middle_kernel

    full = tuple(src.shape)
    lead = len(full) - len(shape)
    padded = (1,) * lead + tuple(shape)
    axes = [d for d in range(len(full)) if padded[d] == 1 and full[d] != 1]
    cur, cur_shape = src, list(full)
    for n, d in enumerate(axes):
        before, mid, after = math.prod(cur_shape[:d]), cur_shape[d], math.prod(cur_shape[d + 1 :])
        cur_shape[d] = 1
        last = n == len(axes) - 1
        dst = target.reshape((before, after)) if last else ctx.empty((before, after), np.float64)[1]
        ctx.launch(sum_middle_kernel, before * after, cur.reshape((before, mid, after)), dst)
        cur = dst


def _gather(d: DeviceArray, layout: np.ndarray, ctx: DeviceContext, dst: Any = None) -> Any:
    """A contiguous 1-D copy of ``layout`` (a view of ``d``) into ``dst`` (new, same dtype, when None)."""
    from numba_losses.kernels.cuda.gather import gather_kernel

    item = layout.itemsize
    if any(s % item for s in layout.strides):
        raise ValueError("device arrays with strides that are not a multiple of the item size are not supported")
    strides = tuple(s // item for s in layout.strides)
    shape = layout.shape
    lowest = layout
    for ax, s in enumerate(strides):  # flip negative-stride axes: the data pointer moves to the lowest address
        if s < 0:
            lowest = np.flip(lowest, axis=ax)
    base = sum((n - 1) * -s for n, s in zip(shape, strides, strict=True) if s < 0 and n > 0)
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(shape, strides, strict=True) if n > 0)
    flat = np.lib.stride_tricks.as_strided(lowest, shape=(span,), strides=(item,))
    size = math.prod(shape)
    if dst is None:
        dst = ctx.empty((size,), layout.dtype)[1]
    if size:
        ctx.launch(gather_kernel, size, d.view(flat), base, shape, strides, dst)
    return dst
