"""CTCLoss on the host: the label plan, then the kernel of :mod:`numba_losses.kernels.cpu.ctc`.

The activations stay where they are: frames are read as rows in either
layout (no transposed copy) and the log-softmax is fused into the kernel's
first phase; the second runs the forward-backward recursions per sample and
the third writes every frame of the gradient, all in one kernel call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW
from numba_losses.kernels.cpu.ctc import build_ctc_kernel

from .._core.buffers import host_empty, host_out_grad, host_result
from .._core.request import Call
from .._core.validate import as_host_array, check_buffer, compute_dtype, result_dtype
from .._core.weighting import coef_product_host, product_shape, weigh_product_host
from .._plan.ctc import CtcPlan, CTCSpec, plan_ctc


def frame_rows(a: np.ndarray, layout: str) -> tuple[np.ndarray, int, int] | None:
    """``(rows, sb, st)``: ``a`` (pred's shape) as a ``(N*T, C)`` view whose row ``b*sb + t*st``
    is frame ``t`` of sample ``b``; ``None`` when the frames are not the rows of a C-ordered view."""
    nt = a if layout == "NTC" else a.transpose(1, 0, 2)
    n, t, c = nt.shape
    if nt.flags.c_contiguous:
        return nt.reshape(n * t, c), t, 1
    tn = nt.transpose(1, 0, 2)
    if tn.flags.c_contiguous:
        return tn.reshape(t * n, c), 1, n
    return None


def run(spec: CTCSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """CTC cost per sample (weighted) and its gradient w.r.t. ``pred`` (``None`` where not wanted)."""
    host = {name: as_host_array(name, a) for name, a in call.inputs.items() if a is not None}
    x = host["pred"]
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    plan = plan_ctc(x.shape, spec, host)
    sw = host.get("sample_weight")
    full = product_shape((plan.n,), sw.shape if sw is not None else None)
    taken: list = []
    out_buf = check_buffer("out", call.out, full, rdt, host, taken) if call.out is not None else None
    grad_buf = None
    if call.want_grad and call.grad_out[0] is not None:
        grad_buf = check_buffer("grad_out", call.grad_out[0], x.shape, rdt, host, taken)
    coef = None
    if call.want_grad:
        coef = coef_product_host((plan.n,), full, sw, spec.weight, host_out_grad(call.out_grad, full), cdt)
    dx = None
    if call.want_grad:
        dx = grad_buf if (grad_buf is not None and rdt == cdt) else host_empty(x.shape, cdt)
    cost = _run_kernels(plan, x.astype(cdt, copy=False), spec.layout, spec.zero_infinity, coef, dx)
    value = None
    if call.want_value:
        out_c = out_buf if (out_buf is not None and rdt == cdt) else np.empty(full, dtype=cdt)
        weigh_product_host(cost, full, sw, spec.weight, out_c)
        value = host_result(out_c, out_buf, rdt)
    return value, ((host_result(dx, grad_buf, rdt),) if call.want_grad else None)


def _run_kernels(
    plan: CtcPlan, x: np.ndarray, layout: str, zero_infinity: bool, coef: np.ndarray | None, dx: np.ndarray | None
) -> np.ndarray:
    """The cost per sample; with ``coef``, the gradient is written into ``dx`` (pred's shape)."""
    rows = frame_rows(x, layout)
    if rows is None:
        rows = frame_rows(np.ascontiguousarray(x), layout)
    x2, sb, st = rows
    want_grad = coef is not None
    cost = np.empty(plan.n, dtype=x.dtype)
    if plan.n == 0:
        if want_grad:
            dx[...] = 0
        return cost
    if want_grad:
        d2, dsb, dst = frame_rows(dx, layout)
    else:
        d2, dsb, dst, coef = np.empty((0, 0), dtype=x.dtype), 0, 0, cost  # never touched (x may be read-only)
    parallel = x.size + plan.workspace >= SERIAL_BELOW  # workspace: the elements of all samples' scratch
    build_ctc_kernel(parallel)(
        x2, sb, st, plan.t, d2, dsb, dst, plan.ints, plan.lab, plan.chain, plan.first, plan.blank,
        zero_infinity, want_grad, coef, cost,
    )  # fmt: skip
    return cost
