"""TripletLoss and CosineEmbeddingLoss on the device (:mod:`numba_losses.kernels.cuda.pairwise`).

Inputs are passed as strided views of the caller's memory in their own dtype;
outputs are allocated by the caller's array library. Same plan and results as
the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels.cuda import SIMULATOR, THREADS
from numba_losses.kernels.cuda.pairwise import build_cosine_kernel, build_triplet_kernel, row_groups

from .._core.buffers import device_out_grad, device_target
from .._core.device import (
    DeviceArray,
    DeviceContext,
    broadcast_view,
    checked,
    device_view,
    on_device,
    same_device,
    sum_to,
    wrap_input,
)
from .._core.launch import launch
from .._core.request import Call
from .._core.weighting import coef_product_device, weigh_product_device
from .._plan.pairwise import TRIPLET_GRADS, CosineSpec, TripletSpec, plan_cosine, plan_triplet


def run(spec: TripletSpec | CosineSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """The device twin of :func:`numba_losses._cpu.pairwise.run`."""
    first_name = "pred" if isinstance(spec, TripletSpec) else "input1"
    first = checked(first_name, call.inputs[first_name])
    with on_device(first) as ctx:
        inputs = {first_name: first} | {
            name: wrap_input(name, a, ctx) for name, a in call.arrays().items() if name != first_name
        }
        same_device(inputs)
        if isinstance(spec, TripletSpec):
            return _triplet(spec, call, inputs, ctx)
        return _cosine(spec, call, inputs, ctx)


def _rows_view(name: str, d: DeviceArray, n: int, ctx: DeviceContext) -> Any:
    """``d`` (1 or ``n`` elements) flattened and broadcast to ``(n,)``, as a Numba device view."""
    flat = DeviceArray.wrap(name, device_view(d, d.layout, (d.layout.size,), ctx))
    return flat.view(np.broadcast_to(flat.layout, (n,)))


def _triplet(spec: TripletSpec, call: Call, inputs: dict[str, DeviceArray], ctx: DeviceContext) -> tuple[Any, Any]:
    plan = plan_triplet(*(inputs[n].layout for n in TRIPLET_GRADS), spec.batch_axis)
    cdt, rdt, shape3 = plan.cdt, plan.rdt, plan.shape3
    n_rows = shape3[1]
    x3, p3, n3 = (device_view(inputs[name], inputs[name].layout, shape3, ctx) for name in TRIPLET_GRADS)
    og = inputs.get("out_grad") or wrap_input("out_grad", 1.0, ctx)
    g = broadcast_view("out_grad", og, (n_rows,), (n_rows,), ctx)
    taken: list = []
    out_native, out_dev = device_target("out", call.out, (n_rows,), rdt, ctx, inputs, taken)
    natives, views = None, [ctx.dummy(3, cdt)] * 3
    if call.want_grad:
        pairs = [  # each gradient in its own input's shape (positive, negative: reshaped like pred)
            device_target(f"grad_out[{i}]", buf, inputs[name].layout.shape, rdt, ctx, inputs, taken)
            for i, (buf, name) in enumerate(zip(call.grad_out, TRIPLET_GRADS, strict=True))
        ]
        natives = tuple(nat for nat, _ in pairs)
        views = [v.reshape(shape3) for _, v in pairs]
    group, blocks = row_groups(n_rows, shape3[0] * shape3[2], ctx.sms)
    kernel = build_triplet_kernel(not SIMULATOR)
    launch(
        kernel,
        blocks,
        THREADS,
        ctx.stream,
        x3,
        p3,
        n3,
        cdt.type(spec.margin),
        cdt.type(spec.weight),
        g,
        call.want_grad,
        out_dev,
        *views,
        group,
    )
    return (out_native if call.want_value else None), natives


def _cosine(spec: CosineSpec, call: Call, inputs: dict[str, DeviceArray], ctx: DeviceContext) -> tuple[Any, Any]:
    ad, bd, yd = inputs["input1"], inputs["input2"], inputs["label"]
    swd, ogd = inputs.get("sample_weight"), inputs.get("out_grad")
    plan = plan_cosine(ad.layout, bd.layout, yd.layout, swd.layout if swd else None)
    cdt, rdt, n_src, k, n_rows, out_shape = plan.cdt, plan.rdt, plan.n_src, plan.k, plan.n_rows, plan.out_shape
    a2 = device_view(ad, ad.layout, (n_src, k), ctx)
    b2 = device_view(bd, bd.layout, (n_src, k), ctx)
    lab = _rows_view("label", yd, n_rows, ctx)
    one = _rows_view("ones", wrap_input("ones", 1.0, ctx), n_rows, ctx)
    taken: list = []
    out_native, out_view = device_target("out", call.out, out_shape, rdt, ctx, inputs, taken)
    if plan.per_row:  # weighting inside the kernel
        rsw = _rows_view("sample_weight", swd, n_rows, ctx) if swd is not None else one
        og = ogd or wrap_input("out_grad", 1.0, ctx)
        g_row = broadcast_view("out_grad", og, out_shape, (n_rows,), ctx)
        w_kernel = cdt.type(spec.weight)
        out_rows = out_view.reshape((n_rows,))
    else:  # sample_weight grows the output: unweighted rows first, then the product weighting
        device_out_grad(ogd, out_shape)  # its shape is checked before anything runs
        rsw = g_row = one
        if call.want_grad:
            g_row = coef_product_device((n_rows, 1), out_shape, swd, spec.weight, ogd, cdt, ctx).reshape((n_rows,))
        w_kernel = cdt.type(1)
        rows_native, out_rows = ctx.empty((n_rows,), cdt)
    grows = n_src != n_rows
    natives, views, pairs = None, [ctx.dummy(2, cdt)] * 2, []
    if call.want_grad:
        shapes = (ad.layout.shape, bd.layout.shape)
        pairs = [
            device_target(f"grad_out[{i}]", buf, s, rdt, ctx, inputs, taken)
            for i, (buf, s) in enumerate(zip(call.grad_out, shapes, strict=True))
        ]
        natives = tuple(nat for nat, _ in pairs)
        views = [ctx.empty((n_rows, k), cdt)[1] if grows else v.reshape((n_src, k)) for _, v in pairs]
    group, blocks = row_groups(n_rows, k, ctx.sms)
    kernel = build_cosine_kernel(not SIMULATOR)
    launch(
        kernel,
        blocks,
        THREADS,
        ctx.stream,
        a2,
        b2,
        lab,
        cdt.type(spec.margin),
        g_row,
        rsw,
        w_kernel,
        call.want_grad,
        out_rows,
        *views,
        group,
    )
    if not plan.per_row and call.want_value:
        loss = DeviceArray.wrap("loss", rows_native)
        loss.layout = loss.layout.reshape((n_rows, 1))
        weigh_product_device(loss, out_shape, swd, spec.weight, out_view, ctx)
    if grows and call.want_grad:
        for (_, target), scratch in zip(pairs, views, strict=True):
            sum_to(scratch, (1, k), target.reshape((1, k)), ctx)
    return (out_native if call.want_value else None), natives
