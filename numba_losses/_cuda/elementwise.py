"""The elementwise family on the device: one fused launch of :mod:`numba_losses.kernels.cuda.elementwise`.

Inputs are passed to the kernel as strided (possibly zero-stride) views of the
caller's memory in their own dtype; the kernel converts on load, so float16
and integer inputs need no cast copies. Outputs are allocated by the caller's
array library and returned as its arrays. Python numbers given for
``label``, ``pos_weight`` or ``sample_weight`` become 0-d device constants.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .._core.buffers import device_out_grad, device_target
from .._core.device import checked, on_device, same_device, sum_to, wrap_input
from .._core.request import Call, is_scalar
from .._core.weighting import row_scales_device, rows_view_device, run_rows_device
from .._plan.elementwise import ElementwiseSpec, plan


def run(spec: ElementwiseSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """The device twin of :func:`numba_losses._cpu.elementwise.run` (device arrays out)."""
    xd = checked(spec.pred, call.inputs[spec.pred])
    with on_device(xd) as ctx:
        get = call.inputs.get
        weight, sample_weight = spec.weight, get("sample_weight")
        if is_scalar(sample_weight):  # a number: part of the row scale, no device constant
            spec = replace(spec, weight=weight * float(sample_weight))
            sample_weight = None
        inputs = {spec.pred: xd, spec.label: wrap_input(spec.label, get(spec.label), ctx)}
        if spec.aux and get(spec.aux) is not None:
            inputs[spec.aux] = wrap_input(spec.aux, get(spec.aux), ctx)
        if sample_weight is not None:
            inputs["sample_weight"] = wrap_input("sample_weight", sample_weight, ctx)
        if call.out_grad is not None:
            inputs["out_grad"] = wrap_input("out_grad", call.out_grad, ctx)
        same_device(inputs)
        yd, ad, swd = inputs[spec.label], inputs.get(spec.aux), inputs.get("sample_weight")
        x = xd.layout
        p = plan(spec, x, yd.layout, ad.layout if ad else None, swd.layout if swd else None)
        cdt, rdt, rows = p.cdt, p.rdt, p.rows

        x3 = rows_view_device(xd, x, rows, ctx)
        y3 = rows_view_device(yd, p.y, rows, ctx)
        a3 = rows_view_device(ad, ad.layout, rows, ctx) if ad is not None else None
        ew3 = rows_view_device(swd, swd.layout, rows, ctx) if rows.elementwise else None
        og = device_out_grad(inputs.get("out_grad"), rows.out_shape)
        fscale, coef = row_scales_device(rows, swd, og, cdt, ctx)

        taken: list = []
        if call.want_value:
            out_native, out_dev = device_target("out", call.out, rows.out_shape, rdt, ctx, inputs, taken)
        else:  # gradient only: the fused kernel still writes row values
            out_native, out_dev = None, ctx.empty(rows.out_shape, cdt)[1]
        grads, dx3, scratch, target = None, None, None, None
        if call.want_grad:
            grad_native, target = device_target("grad_out", call.grad_out[0], x.shape, rdt, ctx, inputs, taken)
            grads = (grad_native,)
            if p.grows:  # computed on the broadcast shape, then summed back into ``target``
                scratch = dx3 = ctx.empty(rows.shape3, cdt)[1]
            else:
                dx3 = target.reshape(rows.shape3)
        p0, p1 = cdt.type(spec.p0), cdt.type(spec.p1)
        run_rows_device(spec.pair, ctx, x3, y3, a3, ew3, p0, p1, fscale, coef, out_dev, dx3, call.want_grad)
        if scratch is not None:
            sum_to(scratch.reshape(rows.full), x.shape, target, ctx)
        return out_native, grads
