r"""SDMLLoss on the host: three BLAS matrix products around :mod:`numba_losses.kernels.cpu.sdml`.

With the centred inputs :math:`a = x_1 - c`, :math:`b = x_2 - c`
(as :func:`numba_losses._plan.sdml.centred` defines them, in one kernel pass):
:math:`P = a b^T` (BLAS through ``np.dot``),
the kernel turns :math:`P` into the distances, the values and :math:`G` with
its row sums :math:`\rho` and column sums :math:`\gamma`, then

.. math::

    \mathrm{dx1} = 2\,(\rho \odot a - G b), \qquad \mathrm{dx2} = 2\,(\gamma \odot b - G^T a),

equal to :math:`2\sum_j G_{ij}(x_{1,i} - x_{2,j})` and :math:`-2\sum_i G_{ij}(x_{1,i} - x_{2,j})`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels.cpu.sdml import ROWS, build_sdml_kernels, centre_into, finish_gradients

from .._core.buffers import host_ones, host_out_grad, host_result, host_scratch, host_target
from .._core.request import Call
from .._core.validate import as_host_array
from .._plan.sdml import SDMLSpec, plan, targets

# Cells of the N x N matrix from which the rows kernel runs in parallel (BLAS does the D-long
# products; the kernel's work is per cell): about N >= 91, where the launch pays for itself.
PARALLEL_CELLS = 8192


def _centred(x1: np.ndarray, x2: np.ndarray, cdt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``x1 - c``, ``x2 - c`` as C-contiguous scratch arrays of ``cdt`` (:func:`centre_into`; see ``centred``)."""
    a = host_scratch("sdml.a", x1.shape, cdt)
    b = host_scratch("sdml.b", x2.shape, cdt)
    centre_into(np.ascontiguousarray(x1, dtype=cdt), np.ascontiguousarray(x2, dtype=cdt), a, b)
    return a, b


def run(spec: SDMLSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """SDMLLoss values ``(N,)`` and gradients ``(dx1, dx2)`` (``None`` where not wanted)."""
    a1, a2 = as_host_array("x1", call.inputs["x1"]), as_host_array("x2", call.inputs["x2"])
    host = {"x1": a1, "x2": a2}
    p = plan(a1, a2)
    n, d, cdt, gdt = p.n, p.d, p.cdt, p.gdt
    taken: list = []
    out_c, out_buf = host_target("out", call.out, (n,), gdt[0], cdt, host, taken)
    q = targets(spec.smoothing, n, cdt)
    if call.want_grad:
        head = host_out_grad(call.out_grad, (n,))
        g = host_ones(n, cdt) if head is None else np.ascontiguousarray(head, dtype=cdt)
        rs = np.empty(n)
        cs = np.empty((-(-n // ROWS), n))
        given1, given2 = call.grad_out
        t1, buf1 = host_target("grad_out[0]", given1, (n, d), gdt[0], cdt, host, taken)
        t2, buf2 = host_target("grad_out[1]", given2, (n, d), gdt[1], cdt, host, taken)
    else:  # dummies of the right types: one compiled kernel serves both
        g = np.empty(1, dtype=cdt)
        rs = np.empty(1)
        cs = np.empty((1, 1))
    with np.errstate(all="ignore"):  # inf / NaN inputs: no warnings, the values tell
        a, b = _centred(a1, a2, cdt)
        gm = host_scratch("sdml.p", (n, n), cdt)
        # np.dot, not np.matmul: the same BLAS call without the ufunc machinery (0.4 us less per
        # product at small N); its out= must be C-contiguous in the result dtype, which every
        # array here is (scratch, fresh outputs, and check_buffer's buffers).
        np.dot(a, b.T, out=gm)
        rows_kernel = build_sdml_kernels(n * n >= PARALLEL_CELLS)
        rows_kernel(gm, a, b, q.qd, q.qo, q.log_qd, q.log_qo, q.r, g, call.want_grad, out_c, rs, cs)
        value = host_result(out_c, out_buf, gdt[0]) if call.want_value else None
        if not call.want_grad:
            return value, None
        np.dot(gm, b, out=t1)
        np.dot(gm.T, a, out=t2)
        finish_gradients(t1, t2, a, b, rs, cs)
    return value, (host_result(t1, buf1, gdt[0]), host_result(t2, buf2, gdt[1]))
