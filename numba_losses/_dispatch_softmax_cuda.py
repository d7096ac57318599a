"""The softmax dispatcher's CUDA half (device inputs; same plan and results as the CPU path).

``pred`` is passed to the kernels as a strided ``(outer, C, inner)`` view of
the caller's memory in its own dtype (a copy only when no such view exists);
the weighting runs through :func:`._dispatch.rowmean` on the small
per-position loss array, as on the CPU. Outputs are allocated by the caller's
array library (:class:`._device.DeviceContext`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._device import DeviceArray, DeviceContext
from ._dispatch import rowmean
from ._dispatch_cuda import _check_device_buffer, _checked, _dummy3, _gather, _overlaps, device_view, quiet_simulator
from ._dispatch_softmax import LOSS_NAMES, ClassLayout, check_sparse_label, class_layout, label_kind
from ._validate import compute_dtype, reshape_like, result_dtype


def _launch_rows(kernel: Any, lay: ClassLayout, ctx: DeviceContext, *args: Any) -> None:
    from numba_losses.kernels.cuda import THREADS
    from numba_losses.kernels.cuda.softmax import softmax_plan

    if lay.n_rows == 0 or lay.n_classes == 0:
        return
    group, blocks = softmax_plan(lay.n_rows, lay.n_classes, lay.inner, ctx.sms)
    kernel[blocks, THREADS, ctx.stream](*args, group)


def _to_result(native: Any, rdt: np.dtype, buf: Any, ctx: DeviceContext) -> Any:
    """``native`` (compute dtype) in the result dtype, in ``buf`` when given (float16 results)."""
    src = DeviceArray.wrap("result", native)
    if src.layout.dtype == rdt and buf is None:
        return native
    shape = src.layout.shape
    if buf is not None:
        dst = _check_device_buffer("buffer", buf, shape, rdt)
        target, result = dst.view(dst.layout).reshape(math.prod(shape)), buf
    else:
        result, target = ctx.empty(shape, rdt)
        target = target.reshape(math.prod(shape))
    _gather(src, src.layout, ctx, dst=target)
    return result


def softmax_ce_cuda(
    pred: Any,
    label: Any,
    sample_weight: Any,
    *,
    axis: int,
    sparse: bool,
    from_logits: bool,
    weight: float,
    batch_axis: int,
    has_ignore: bool,
    ignore: float,
    eps: float,
    out_grad: Any,
    want_value: bool,
    want_grad: bool,
    out: Any,
    grad_out: Any,
) -> tuple[Any, Any]:
    """:func:`._dispatch_softmax.softmax_ce` for device arrays."""
    from numba_losses.kernels.cuda.makeloss import fill_kernel
    from numba_losses.kernels.cuda.softmax import build_softmax_ce_kernel

    xd = _checked("pred", pred)
    yd = _checked("label", label)
    ctx = DeviceContext.of(xd)
    with ctx.activate(), quiet_simulator():
        x = xd.layout
        cdt = compute_dtype("pred", x)
        rdt = result_dtype(x, cdt)
        lay = class_layout(x.shape, axis)
        n_rows = lay.n_rows
        x3 = device_view(xd, x, lay.shape3, ctx)
        dummy3 = _dummy3(ctx, cdt)
        if sparse:
            check_sparse_label(yd.layout.shape, lay)
            lab = device_view(yd, yd.layout, (lay.outer, lay.inner), ctx)
            y3 = x3
        else:
            ylay = reshape_like("label", yd.layout, x.shape, "pred")
            y3 = device_view(yd, ylay, lay.shape3, ctx)
            lab = dummy3.reshape((1, 1))
        loss_native, loss_dev = ctx.empty(lay.keep_shape, cdt)
        loss_rows = loss_dev.reshape(n_rows)
        coef = dummy3.reshape(1)
        grads_native = None
        dx3 = dummy3
        if want_grad:
            if grad_out is not None:
                gd = _check_device_buffer("grad_out", grad_out, x.shape, rdt)
                if _overlaps(gd, xd) or _overlaps(gd, yd):
                    raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")
                grads_native, target = grad_out, gd.view(gd.layout)
            else:
                grads_native, target = ctx.empty(x.shape, rdt)
            dx3 = target.reshape(lay.shape3)
            if n_rows:
                ctx.launch(fill_kernel, n_rows, loss_rows, cdt.type(0))
            # The weighting's gradient does not depend on the loss values: get it first.
            _, cpos = rowmean(
                "identity", loss_native, loss_native, names=LOSS_NAMES, sample_weight=sample_weight,
                weight=weight, batch_axis=batch_axis, out_grad=out_grad, want_value=False, want_grad=True,
            )  # fmt: skip
            cd = DeviceArray.wrap("coef", cpos)
            coef = cd.view(cd.layout.reshape(n_rows))
        kernel = build_softmax_ce_kernel(
            sparse, from_logits, sparse and label_kind(yd.layout.dtype) == "int", want_grad
        )
        _launch_rows(kernel, lay, ctx, x3, lab, y3, coef, ignore, has_ignore, eps, cdt.type(0), loss_rows, dx3)
        value = None
        if want_value:
            value, _ = rowmean(
                "identity", loss_native, loss_native, names=LOSS_NAMES, sample_weight=sample_weight,
                weight=weight, batch_axis=batch_axis, want_value=True, want_grad=False,
                out=out if rdt == cdt else None,
            )  # fmt: skip
            if rdt != cdt:
                value = _to_result(value, rdt, out, ctx)
        return value, grads_native


def kldiv_softmax_cuda(
    pred: Any,
    label: Any,
    sample_weight: Any,
    *,
    axis: int,
    weight: float,
    batch_axis: int,
    out_grad: Any,
    want_value: bool,
    want_grad: bool,
    out: Any,
    grad_out: Any,
) -> tuple[Any, Any]:
    """:func:`._dispatch_softmax.kldiv_softmax` for device arrays."""
    from numba_losses.kernels.cuda.softmax import log_softmax_backward_kernel, log_softmax_kernel

    xd = _checked("pred", pred)
    ctx = DeviceContext.of(xd)
    with ctx.activate(), quiet_simulator():
        x = xd.layout
        cdt = compute_dtype("pred", x)
        rdt = result_dtype(x, cdt)
        lay = class_layout(x.shape, axis)
        proto = cdt.type(0)
        lp_native, lp_dev = ctx.empty(x.shape, cdt)
        lp3 = lp_dev.reshape(lay.shape3)
        _launch_rows(log_softmax_kernel, lay, ctx, device_view(xd, x, lay.shape3, ctx), proto, lp3)
        in_place = grad_out is not None and rdt == cdt
        value, u = rowmean(
            "kldiv_logits", lp_native, label, sample_weight=sample_weight, weight=weight, batch_axis=batch_axis,
            reduce="sum", label_mode="broadcast", out_grad=out_grad, want_value=want_value, want_grad=want_grad,
            out=out if rdt == cdt else None, grad_out=grad_out if in_place else None,
        )  # fmt: skip
        if want_value and rdt != cdt:
            value = _to_result(value, rdt, out, ctx)
        if not want_grad:
            return value, None
        ud = DeviceArray.wrap("grad", u)
        _launch_rows(log_softmax_backward_kernel, lay, ctx, lp3, proto, ud.view(ud.layout.reshape(lay.shape3)))
        if rdt != cdt:
            u = _to_result(u, rdt, grad_out, ctx)
        return value, u
