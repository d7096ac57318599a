"""MakeLoss on the device: a copy of the data, a count on the device, a filled head gradient."""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels.cuda.makeloss import count_greater_kernel, fill_kernel

from .._core.device import DeviceArray, DeviceContext, gather, on_device
from .._plan.makeloss import float_dtype, head_constant, threshold


def _count(flat: Any, thr: np.generic, ctx: DeviceContext) -> int:
    """Elements of a contiguous 1-D Numba device array above ``thr``: a device reduction, read on the stream."""
    counts = ctx.empty((1,), np.int64)[1]
    ctx.launch(fill_kernel, 1, counts, 0)
    if flat.shape[0]:
        ctx.launch(count_greater_kernel, flat.shape[0], flat, thr, counts)
    return int(counts.copy_to_host(stream=ctx.stream)[0])  # waits for this stream only


def count_valid(data: Any, valid_thresh: float) -> int:
    """Device :func:`numba_losses._cpu.makeloss.count_valid`."""
    d = DeviceArray.wrap("data", data)
    with on_device(d) as ctx:
        flat = d.view(d.layout.reshape(-1)) if d.layout.flags.c_contiguous else gather(d, d.layout, ctx)
        return _count(flat, threshold(d.layout.dtype, valid_thresh), ctx)


def make_loss(data: Any, grad_scale: float, valid_thresh: float, normalization: str) -> tuple[Any, Any]:
    """Device :func:`numba_losses._cpu.makeloss.make_loss` (arrays of the caller's library)."""
    d = DeviceArray.wrap("data", data)
    dtype = float_dtype("data", d.layout.dtype)
    shape, n = d.layout.shape, d.layout.size
    with on_device(d) as ctx:
        copy_native, copy_view = ctx.empty(shape, dtype)
        flat_copy = copy_view.reshape(n)
        gather(d, d.layout, ctx, dst=flat_copy)  # any strides; the count then reads the contiguous copy
        count = _count(flat_copy, threshold(dtype, valid_thresh), ctx) if normalization == "valid" else None
        c = head_constant(shape, dtype, normalization, grad_scale, count)
        head_native, head_view = ctx.empty(shape, dtype)
        if n:
            ctx.launch(fill_kernel, n, head_view.reshape(n), c)
    return copy_native, head_native
