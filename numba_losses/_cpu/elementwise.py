"""The elementwise family on the host: one fused pass of :mod:`numba_losses.kernels.cpu.elementwise`.

``pred`` and ``label`` stay views of the caller's arrays (cast only to the
compute dtype: float16 runs in float32, integers in float64); the kernel
evaluates the term, applies the weighting and writes the row values and the
gradient in one pass. Gradient-only calls run the same forward+backward
kernel (the row sums are cheap next to the gradient): one compiled variant
fewer per loss and dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.buffers import host_empty, host_out_grad, host_result
from .._core.request import Call
from .._core.validate import as_host_array, check_buffer
from .._core.weighting import row_scales_host, run_rows_host, sum_to_shape, view3
from .._plan.elementwise import ElementwiseSpec, plan


def run(spec: ElementwiseSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """Forward values ``(n_rows,)`` and the gradient w.r.t. ``pred`` (``None`` where not wanted)."""
    get = call.inputs.get
    x = as_host_array(spec.pred, get(spec.pred))
    y = as_host_array(spec.label, get(spec.label))
    a = as_host_array(spec.aux, get(spec.aux)) if spec.aux and get(spec.aux) is not None else None
    sw = as_host_array("sample_weight", get("sample_weight")) if get("sample_weight") is not None else None
    p = plan(spec, x, y, a, sw)
    cdt, rdt, rows = p.cdt, p.rdt, p.rows
    full, shape3 = rows.full, rows.shape3

    x3 = view3(x, full, shape3, cdt)
    y3 = view3(p.y, full, shape3, cdt)
    a3 = view3(a, full, shape3, cdt, contiguous=True) if a is not None else None
    ew3 = view3(sw, full, shape3, cdt, contiguous=True) if rows.elementwise else None
    fscale, coef = row_scales_host(rows, host_out_grad(call.out_grad, rows.out_shape), cdt)

    inputs = {spec.pred: x, spec.label: y, spec.aux or "aux": a, "sample_weight": sw}
    taken: list = []
    out_buf = check_buffer("out", call.out, rows.out_shape, rdt, inputs, taken) if call.out is not None else None
    out_c = out_buf if (out_buf is not None and rdt == cdt) else np.empty(rows.out_shape, dtype=cdt)
    grad_buf, dx3, in_place = None, None, False
    if call.want_grad:
        if call.grad_out[0] is not None:
            grad_buf = check_buffer("grad_out", call.grad_out[0], x.shape, rdt, inputs, taken)
        in_place = grad_buf is not None and rdt == cdt and not p.grows  # the kernel writes the buffer
        dx3 = grad_buf.reshape(shape3) if in_place else host_empty(shape3, cdt)
    pair = spec.pair
    run_rows_host(pair, x3, y3, a3, ew3, cdt.type(spec.p0), cdt.type(spec.p1), fscale, coef, out_c, dx3, call.want_grad)

    value = host_result(out_c, out_buf, rdt) if call.want_value else None
    if not call.want_grad:
        return value, None
    if in_place:
        return value, (grad_buf,)
    dx = dx3.reshape(full)
    if p.grows:
        dx = sum_to_shape(dx, x.shape)
    return value, (host_result(dx, grad_buf, rdt),)
