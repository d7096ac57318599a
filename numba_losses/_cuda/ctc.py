"""CTCLoss on the device (:mod:`numba_losses.kernels.cuda.ctc`); same plan and results as the host.

Labels and lengths are small: they are copied to the host (on a GPU through
the caller's stream, which is synchronised once; under the simulator the
layout array *is* the data) and validated and packed by
:func:`numba_losses._plan.ctc.plan_ctc`, exactly as on the host. The plan's
integers go back to the device in one upload. ``pred`` stays where it is: the
kernels read it through a strided ``(N, T, C)`` view in its own dtype (a TNC
array transposed, not copied) and write the gradient through the same kind
of view of its buffer. The weighting runs on the device product-weighting
kernels (:mod:`numba_losses._core.weighting`). Outputs and workspaces are
allocated by the caller's array library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels._options import CUDA_GRID_PER_SM
from numba_losses.kernels.cuda import THREADS
from numba_losses.kernels.cuda import ctc as kern
from numba_losses.kernels.cuda.softmax import softmax_plan

from .._core.buffers import device_out_grad, device_target
from .._core.device import DeviceArray, DeviceContext, checked, on_device, same_device, to_host, wrap_input
from .._core.launch import launch
from .._core.request import Call
from .._core.validate import compute_dtype, result_dtype
from .._core.weighting import coef_product_device, product_shape, weigh_product_device
from .._plan.ctc import CtcPlan, CTCSpec, plan_ctc

_HOST_INPUTS = ("label", "pred_lengths", "label_lengths")


def run(spec: CTCSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """The device twin of :func:`numba_losses._cpu.ctc.run`."""
    xd = checked("pred", call.inputs["pred"])
    with on_device(xd) as ctx:
        named = {n: a for n, a in call.arrays().items() if n != "pred"}
        # Python and NumPy numbers become 0-d device constants (a bad shape is then plan_ctc's error)
        inputs = {"pred": xd} | {name: wrap_input(name, a, ctx) for name, a in named.items()}
        same_device(inputs)
        return _run(spec, call, inputs, ctx)


def _ntc(a: np.ndarray, layout: str) -> np.ndarray:
    """``a`` (pred's shape) as an ``(N, T, C)`` view."""
    return a if layout == "NTC" else a.transpose(1, 0, 2)


def _upload(plan: CtcPlan, ctx: DeviceContext) -> dict[str, Any]:
    """The plan's integer arrays on the device (int64, one upload), by name."""
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


def _run(spec: CTCSpec, call: Call, inputs: dict[str, DeviceArray], ctx: DeviceContext) -> tuple[Any, Any]:
    xd = inputs["pred"]
    x = xd.layout
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    host = {name: to_host(inputs[name], ctx) for name in _HOST_INPUTS if name in inputs}
    plan = plan_ctc(x.shape, spec, host)
    swd, ogd = inputs.get("sample_weight"), inputs.get("out_grad")
    full = product_shape((plan.n,), swd.layout.shape if swd is not None else None)
    device_out_grad(ogd, full)  # its shape is checked before anything runs
    taken: list = []
    out_native = out_dev = None
    if call.want_value:
        out_native, out_dev = device_target("out", call.out, full, rdt, ctx, inputs, taken)
    grads = dx = None
    if call.want_grad:
        grad_native, target = device_target("grad_out", call.grad_out[0], x.shape, rdt, ctx, inputs, taken)
        grads = (grad_native,)
        dx = DeviceArray.wrap("grad", grad_native)
        dx = dx.view(_ntc(dx.layout, spec.layout))
    n, n_t, n_classes = plan.n, plan.t, plan.c
    if n == 0:
        return out_native, grads

    proto = cdt.type(0)
    p = _upload(plan, ctx)
    x3 = xd.view(_ntc(x, spec.layout))
    lpe = ctx.empty((max(plan.workspace, 1),), cdt)[1]
    ab = ctx.empty((max(plan.workspace, 1),), cdt)[1] if call.want_grad else ctx.scalar_array(0.0, cdt)
    m = ctx.empty((n, n_t), cdt)[1]
    logs = ctx.empty((n, n_t), cdt)[1]
    ll = ctx.empty((n,), cdt)[1]
    cost_native, cost = ctx.empty((n,), cdt)
    n_frames = n * n_t
    if n_frames:
        group, blocks = softmax_plan(n_frames, n_classes, 1, ctx.sms)
        launch(
            kern.ctc_frames_kernel,
            blocks,
            THREADS,
            ctx.stream,
            x3,
            p["tlen"],
            p["lab"],
            p["llen"],
            plan.blank,
            p["off"],
            proto,
            m,
            logs,
            lpe,
            group,
        )
    # One block per sample: at most CUDA_GRID_PER_SM per multiprocessor, the rest by grid stride.
    s_max = 2 * int(plan.llen.max()) + 1
    blocks = min(n, ctx.sms * CUDA_GRID_PER_SM)
    ring = ctx.empty((blocks * 2 * s_max,), cdt)[1]
    launch(
        kern.ctc_paths_kernel,
        blocks,
        kern.paths_threads(s_max, kern.PATHS_MAX_THREADS),
        ctx.stream,
        lpe,
        p["off"],
        p["tlen"],
        p["lab"],
        p["llen"],
        plan.blank,
        p["feasible"],
        bool(spec.zero_infinity),
        call.want_grad,
        proto,
        ab,
        ring,
        ll,
        cost,
    )
    if call.want_grad and n_frames:
        coef = coef_product_device((n,), full, swd, spec.weight, ogd, cdt, ctx)
        group, blocks = softmax_plan(n_frames, n_classes, 1, ctx.sms)
        launch(
            kern.ctc_grad_kernel,
            blocks,
            THREADS,
            ctx.stream,
            x3,
            dx,
            p["gmask"],
            p["feasible"],
            m,
            logs,
            ab,
            p["off"],
            p["lab"],
            p["chain"],
            p["first"],
            p["llen"],
            plan.blank,
            ll,
            coef,
            proto,
            group,
        )
    if call.want_value:
        weigh_product_device(DeviceArray.wrap("cost", cost_native), full, swd, spec.weight, out_dev, ctx)
    return out_native, grads
