"""The CTC dispatcher's CUDA half (device inputs; same plan and results as the CPU path).

Labels and lengths are small: they are copied to the host (on a GPU through
the caller's stream, which is synchronised once; under the simulator the
layout array *is* the data) and validated and packed by
:func:`._dispatch_ctc.plan_ctc`, exactly as on the CPU. The plan's integers
go back to the device in one upload. ``pred`` stays where it is: the kernels
of :mod:`numba_losses.kernels.cuda.ctc` read it through a strided
``(N, T, C)`` view in its own dtype (a TNC array transposed, not copied) and
write the gradient through the same kind of view of its buffer.

Weighting runs in two tiny kernels that mirror the CPU's
:func:`._dispatch_ctc.weigh` and :func:`._dispatch_ctc.head_scale`: the
output is viewed as ``(R, Nl)`` rows whose last axis is the samples' (``Nl``
is ``N``, or anything when ``N == 1``), ``sample_weight`` and ``out_grad``
as zero-stride views broadcast to it. Outputs and workspaces are allocated by
the caller's array library (:class:`._device.DeviceContext`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._device import DeviceArray, DeviceContext, same_device
from ._dispatch_ctc import CtcPlan, output_shape, plan_ctc
from ._dispatch_cuda import (
    _check_device_buffer,
    _checked,
    _dummy2,
    _gather,
    _overlaps,
    _wrap,
    device_view,
    quiet_simulator,
)
from ._validate import compute_dtype, result_dtype

_HOST_INPUTS = ("label", "pred_lengths", "label_lengths")


def ctc_cuda(
    pred: Any,
    label: Any,
    pred_lengths: Any,
    label_lengths: Any,
    sample_weight: Any,
    *,
    layout: str,
    label_layout: str,
    blank_label: str,
    zero_infinity: bool,
    weight: float,
    out_grad: Any,
    want_value: bool,
    want_grad: bool,
    out: Any,
    grad_out: Any,
) -> tuple[Any, Any]:
    """:func:`._dispatch_ctc.ctc` for device arrays: ``(value, grad)``, either ``None`` when not asked for."""
    xd = _checked("pred", pred)
    ctx = DeviceContext.of(xd)
    with ctx.activate(), quiet_simulator():
        named = {
            "label": label, "pred_lengths": pred_lengths, "label_lengths": label_lengths,
            "sample_weight": sample_weight, "out_grad": out_grad if want_grad else None,
        }  # fmt: skip
        # Python and NumPy numbers become 0-d device constants (a bad shape is then plan_ctc's error)
        inputs = {"pred": xd} | {name: _wrap(name, _number(a), ctx) for name, a in named.items() if a is not None}
        same_device(inputs)
        return _run(
            inputs, ctx, layout=layout, label_layout=label_layout, blank_label=blank_label,
            zero_infinity=zero_infinity, weight=weight, want_value=want_value, want_grad=want_grad,
            out=out, grad_out=grad_out,
        )  # fmt: skip


def _number(a: Any) -> Any:
    """A NumPy scalar as the Python number it holds (device constants are made from those)."""
    return a.item() if isinstance(a, np.generic) else a


def _to_host(d: DeviceArray, ctx: DeviceContext) -> np.ndarray:
    """A host copy of the (small) device input ``d``, in ``d``'s shape and dtype."""
    lay = d.layout
    if d.library == "simulator":
        return np.array(lay)
    if lay.size == 0:
        return np.empty(lay.shape, dtype=lay.dtype)
    src = d.view(lay) if lay.flags.c_contiguous else _gather(d, lay, ctx)
    host = src.copy_to_host(stream=ctx.stream)
    ctx.stream.synchronize()  # the plan needs the values now
    return host.reshape(lay.shape)


def _ntc(a: np.ndarray, layout: str) -> np.ndarray:
    """``a`` (pred's shape) as an ``(N, T, C)`` view."""
    return a if layout == "NTC" else a.transpose(1, 0, 2)


def _upload(plan: CtcPlan, ctx: DeviceContext) -> dict[str, Any]:
    """The plan's integer arrays on the device (int64, one upload), by name."""
    n, w = plan.lab.shape
    parts = {
        "off": plan.off, "tlen": plan.tlen, "gmask": plan.gmask, "llen": plan.llen, "feasible": plan.feasible,
        "lab": plan.lab, "chain": plan.chain, "first": plan.first,
    }  # fmt: skip
    host = np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in parts.values()])
    dev = ctx.empty(host.shape, np.int64)[1]
    dev.copy_to_device(host, stream=ctx.stream)
    views, start = {}, 0
    for name, a in parts.items():
        views[name] = dev[start : start + a.size].reshape(a.shape)
        start += a.size
    return views


def _rows(d: DeviceArray, full: tuple[int, ...], rows: tuple[int, int], ctx: DeviceContext) -> Any:
    """``d`` broadcast to the output shape ``full``, viewed as its ``(R, Nl)`` rows."""
    return device_view(d, np.broadcast_to(d.layout, full), rows, ctx)


def _run(
    inputs: dict[str, DeviceArray],
    ctx: DeviceContext,
    *,
    layout: str,
    label_layout: str,
    blank_label: str,
    zero_infinity: bool,
    weight: float,
    want_value: bool,
    want_grad: bool,
    out: Any,
    grad_out: Any,
) -> tuple[Any, Any]:
    from numba_losses.kernels._options import CUDA_GRID_PER_SM
    from numba_losses.kernels.cuda import THREADS
    from numba_losses.kernels.cuda import ctc as kern
    from numba_losses.kernels.cuda.softmax import softmax_plan

    xd = inputs["pred"]
    x = xd.layout
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    host = {name: _to_host(inputs[name], ctx) for name in _HOST_INPUTS if name in inputs}
    plan = plan_ctc(
        x.shape, layout, host["label"], label_layout, host.get("pred_lengths"), host.get("label_lengths"), blank_label
    )
    swd = inputs.get("sample_weight")
    full = output_shape(plan.n, swd.layout.shape if swd is not None else None)
    rows = (math.prod(full[:-1]), full[-1])  # the output as (R, Nl): samples along the last axis

    out_native = out_dev = None
    if want_value:
        if out is not None:
            od = _check_device_buffer("out", out, full, rdt)
            out_native, out_dev = out, od.view(od.layout.reshape(rows))
        else:
            out_native, out_dev = ctx.empty(full, rdt)
            out_dev = out_dev.reshape(rows)
    grads_native = dx = None
    if want_grad:
        if grad_out is not None:
            gd = _check_device_buffer("grad_out", grad_out, x.shape, rdt)
            if gd.layout.size and any(_overlaps(gd, d) for d in inputs.values()):
                raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")
            grads_native = grad_out
        else:
            grads_native = ctx.empty(x.shape, rdt)[0]
            gd = DeviceArray.wrap("grad", grads_native)
        dx = gd.view(_ntc(gd.layout, layout))
    ogd = inputs.get("out_grad")
    if ogd is not None:
        try:
            np.broadcast_to(ogd.layout, full)
        except ValueError:
            raise ValueError(f"out_grad has shape {ogd.layout.shape}, expected the output's shape {full}") from None
    result = (out_native, grads_native)
    n, n_t, n_classes = plan.n, plan.t, plan.c
    if n == 0:
        return result

    proto = cdt.type(0)
    p = _upload(plan, ctx)
    x3 = xd.view(_ntc(x, layout))
    lpe = ctx.empty((max(plan.workspace, 1),), cdt)[1]
    ab = ctx.empty((max(plan.workspace, 1),), cdt)[1] if want_grad else ctx.scalar_array(0.0, cdt)
    m = ctx.empty((n, n_t), cdt)[1]
    logs = ctx.empty((n, n_t), cdt)[1]
    ll = ctx.empty((n,), cdt)[1]
    cost = ctx.empty((n,), cdt)[1]
    n_frames = n * n_t
    if n_frames:
        group, blocks = softmax_plan(n_frames, n_classes, 1, ctx.sms)
        kern.ctc_frames_kernel[blocks, THREADS, ctx.stream](
            x3, p["tlen"], p["lab"], p["llen"], plan.blank, p["off"], proto, m, logs, lpe, group
        )
    # One block per sample: at most CUDA_GRID_PER_SM per multiprocessor, the rest by grid stride.
    s_max = 2 * int(plan.llen.max()) + 1
    blocks = min(n, ctx.sms * CUDA_GRID_PER_SM)
    ring = ctx.empty((blocks * 2 * s_max,), cdt)[1]
    kern.ctc_paths_kernel[blocks, kern.paths_threads(s_max, kern.PATHS_MAX_THREADS), ctx.stream](
        lpe, p["off"], p["tlen"], p["lab"], p["llen"], plan.blank, p["feasible"], bool(zero_infinity), want_grad,
        proto, ab, ring, ll, cost,
    )  # fmt: skip

    sw = _rows(swd, full, rows, ctx) if swd is not None else _dummy2(ctx)
    if want_grad:
        coef = ctx.empty((n,), cdt)[1]
        og = _rows(ogd, full, rows, ctx) if ogd is not None else _dummy2(ctx)
        ctx.launch(
            kern.ctc_head_scale_kernel, n, og, ogd is not None, sw, swd is not None, float(weight), rows[0], rows[1],
            proto, coef,
        )  # fmt: skip
        if n_frames:
            group, blocks = softmax_plan(n_frames, n_classes, 1, ctx.sms)
            kern.ctc_grad_kernel[blocks, THREADS, ctx.stream](
                x3, dx, p["gmask"], p["feasible"], m, logs, ab, p["off"], p["lab"], p["chain"], p["first"],
                p["llen"], plan.blank, ll, coef, proto, group,
            )  # fmt: skip
    if want_value and out_dev.size:
        ctx.launch(kern.ctc_weigh_kernel, out_dev.size, cost, sw, swd is not None, float(weight), proto, out_dev)
    return result
