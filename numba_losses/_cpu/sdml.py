"""SDMLLoss on the host (:mod:`numba_losses.kernels.cpu.sdml`): the rows kernel, then the columns kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW
from numba_losses.kernels.cpu.sdml import build_sdml_kernels

from .._core.buffers import host_out_grad, host_result, host_target
from .._core.request import Call
from .._core.validate import as_host_array
from .._plan.sdml import SDMLSpec, plan, targets


def _kernel_input(a: np.ndarray, cdt: np.dtype) -> np.ndarray:
    """``a`` as a writable C-contiguous array of ``cdt`` (one kernel specialisation per dtype)."""
    b = np.ascontiguousarray(a, dtype=cdt)
    return b if b.flags.writeable else b.copy()


def run(spec: SDMLSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """SDMLLoss values ``(N,)`` and gradients ``(dx1, dx2)`` (``None`` where not wanted)."""
    host = {name: as_host_array(name, call.inputs[name]) for name in ("x1", "x2")}
    a1, a2 = host["x1"], host["x2"]
    p = plan(a1, a2)
    n, d, cdt, gdt = p.n, p.d, p.cdt, p.gdt
    taken: list = []
    out_c, out_buf = host_target("out", call.out, (n,), gdt[0], cdt, host, taken)
    k1 = _kernel_input(a1, cdt)
    k2 = _kernel_input(a2, cdt)
    q = targets(spec.smoothing, n, cdt)
    if call.want_grad:
        head = host_out_grad(call.out_grad, (n,))
        g = np.ones(n, dtype=cdt) if head is None else np.ascontiguousarray(head, dtype=cdt)
        gt = np.empty((n, n), dtype=cdt)
        zeros = np.zeros(n, dtype=cdt)
        c = np.empty(d, dtype=cdt)
        x1t = np.empty((d, n), dtype=cdt)
        x2t = np.empty((d, n), dtype=cdt)
        targets_ = [
            host_target(f"grad_out[{k}]", b, (n, d), gdt[k], cdt, host, taken) for k, b in enumerate(call.grad_out)
        ]
        dx = [t for t, _ in targets_]
    else:  # dummies of the right types: one compiled kernel serves both
        g = zeros = c = np.empty(1, dtype=cdt)
        gt = x1t = x2t = np.empty((1, 1), dtype=cdt)
        dx = [gt, gt]
    rows_kernel, cols_kernel = build_sdml_kernels(n * n * max(d, 1) >= SERIAL_BELOW)
    rows_kernel(k1, k2, q.qd, q.qo, q.log_qd, q.log_qo, q.r, g, call.want_grad, out_c, gt, zeros, c, x1t, x2t, dx[0])
    value = host_result(out_c, out_buf, gdt[0]) if call.want_value else None
    if not call.want_grad:
        return value, None
    cols_kernel(k2, gt, c, x1t, dx[1])
    return value, tuple(host_result(t, buf, gdt[k]) for k, (t, buf) in enumerate(targets_))
