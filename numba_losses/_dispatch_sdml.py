"""SDMLLoss dispatcher: validated inputs to the CPU or CUDA kernels.

It picks the backend from the arrays, checks that ``x1`` and ``x2`` are 2-D
with equal shapes, fixes the compute dtype (``x1``'s: float16 computed in
float32, integers in float64; ``x2`` is converted to it), computes the
smoothed targets as MXNet does (in the compute dtype, see
:func:`targets`), allocates outputs and scratch with the caller's library and
launches the kernels of :mod:`numba_losses.kernels.cpu.sdml` or
:mod:`numba_losses.kernels.cuda.sdml`. It holds no loss math beyond the two
target constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW

from ._backend import CUDA, select_backend
from ._device import DeviceArray, DeviceContext, same_device
from ._validate import as_host_array, check_buffer, compute_dtype, result_dtype


@dataclass(frozen=True)
class Targets:
    """The smoothed target constants of one call, as compute-dtype scalars.

    ``qd`` / ``qo``: the diagonal / off-diagonal targets; ``log_qd`` /
    ``log_qo``: their :math:`\\log(q + 10^{-12})`; ``r``: the row sum of the
    targets, :math:`q_d + (N - 1) q_o`.
    """

    qd: np.generic
    qo: np.generic
    log_qd: np.generic
    log_qo: np.generic
    r: np.generic


def targets(smoothing: float, n: int, cdt: np.dtype) -> Targets:
    """MXNet's ``eye * (1 - s) + (1 - eye) * s / (N - 1)`` and its logs, in ``cdt``.

    MXNet rounds ``1 - s`` (a Python float) and ``s`` to the data dtype, then
    divides by ``N - 1`` there; the diagonal also receives ``0 / (N - 1)``, so
    ``N = 1`` gives NaN targets (0/0) and NaN results, as in MXNet. The
    ``1e-12`` of the log is rounded to ``cdt`` too.
    """
    t = cdt.type
    with np.errstate(all="ignore"):
        nm1 = t(n - 1)
        qo = t(smoothing) / nm1
        qd = t(1.0 - smoothing) + t(0.0) / nm1
        eps = t(1e-12)
        log_qd = np.log(qd + eps)
        log_qo = np.log(qo + eps)
        r = t(np.float64(qd) + (n - 1) * np.float64(qo))
    return Targets(qd, qo, log_qd, log_qo, r)


def _smoothing(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"smoothing_parameter must be a number, got {value!r}") from None


def check_pair(s1: tuple[int, ...], s2: tuple[int, ...]) -> tuple[int, int]:
    """``(N, D)`` of two 2-D shapes that must be equal (MXNet asserts it)."""
    if len(s1) != 2 or len(s2) != 2:
        raise ValueError(f"SDMLLoss needs 2-D inputs (batch, dim); got x1 of shape {s1} and x2 of shape {s2}")
    if s1 != s2:
        raise ValueError(f"SDMLLoss needs x1 and x2 of equal shapes; got {s1} and {s2}")
    return s1


def _grad_buffers(grad_out: Any) -> tuple[Any, Any]:
    if grad_out is None:
        return None, None
    if not isinstance(grad_out, (tuple, list)) or len(grad_out) != 2:
        raise ValueError("grad_out: expected a tuple of 2 buffers (dx1, dx2); either may be None")
    return grad_out[0], grad_out[1]


def sdml(
    x1: Any,
    x2: Any,
    *,
    smoothing: float,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: Any = None,
    grad_out: Any = None,
) -> tuple[Any, tuple[Any, Any] | None]:
    """SDMLLoss values ``(N,)`` and gradients ``(dx1, dx2)`` (``None`` when not asked for)."""
    smoothing = _smoothing(smoothing)
    backend = select_backend({"x1": x1, "x2": x2, "out_grad": out_grad if want_grad else None})
    if backend == CUDA:
        from ._dispatch_cuda import quiet_simulator

        with quiet_simulator():
            return _sdml_cuda(x1, x2, smoothing, out_grad, want_value, want_grad, out, grad_out)
    return _sdml_cpu(x1, x2, smoothing, out_grad, want_value, want_grad, out, grad_out)


# ----------------------------------------------------------------------------------- CPU
def _kernel_input(a: np.ndarray, cdt: np.dtype) -> np.ndarray:
    """``a`` as a writable C-contiguous array of ``cdt`` (one kernel specialisation per dtype)."""
    b = np.ascontiguousarray(a, dtype=cdt)
    return b if b.flags.writeable else b.copy()


def _head(out_grad: Any, n: int, cdt: np.dtype) -> np.ndarray:
    if out_grad is None:
        return np.ones(n, dtype=cdt)
    if isinstance(out_grad, (int, float)):
        return np.full(n, out_grad, dtype=cdt)
    g = as_host_array("out_grad", out_grad)
    try:
        g = np.broadcast_to(g, (n,))
    except ValueError:
        raise ValueError(f"out_grad has shape {g.shape}, expected the output's shape {(n,)}") from None
    return np.ascontiguousarray(g, dtype=cdt)


def _sdml_cpu(x1, x2, smoothing, out_grad, want_value, want_grad, out, grad_out):
    from numba_losses.kernels.cpu.sdml import build_sdml_kernels

    a1 = as_host_array("x1", x1)
    a2 = as_host_array("x2", x2)
    n, d = check_pair(a1.shape, a2.shape)
    cdt = compute_dtype("x1", a1)
    compute_dtype("x2", a2)  # rejects unsupported float dtypes
    rdt = result_dtype(a1, cdt)
    gdt = (rdt, result_dtype(a2, cdt))
    if want_value and out is not None:
        out = check_buffer("out", out, (n,), rdt)
    bufs = _grad_buffers(grad_out) if want_grad else (None, None)
    bufs = tuple(None if b is None else check_buffer(f"grad_out[{k}]", b, (n, d), gdt[k]) for k, b in enumerate(bufs))
    for b in bufs:
        if b is not None and (np.may_share_memory(b, a1) or np.may_share_memory(b, a2)):
            raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")
    if bufs[0] is not None and bufs[1] is not None and np.may_share_memory(bufs[0], bufs[1]):
        raise ValueError("grad_out buffers must not share memory")

    k1 = _kernel_input(a1, cdt)
    k2 = _kernel_input(a2, cdt)
    q = targets(smoothing, n, cdt)
    out_c = out if (want_value and out is not None and rdt == cdt) else np.empty(n, dtype=cdt)
    if want_grad:
        g = _head(out_grad, n, cdt)
        gt = np.empty((n, n), dtype=cdt)
        zeros = np.zeros(n, dtype=cdt)
        c = np.empty(d, dtype=cdt)
        x1t = np.empty((d, n), dtype=cdt)
        x2t = np.empty((d, n), dtype=cdt)
        dx = [b if (b is not None and b.dtype == cdt) else np.empty((n, d), dtype=cdt) for b in bufs]
    else:  # dummies of the right types: one compiled kernel serves both
        g = zeros = c = np.empty(1, dtype=cdt)
        gt = x1t = x2t = np.empty((1, 1), dtype=cdt)
        dx = [gt, gt]
    rows_kernel, cols_kernel = build_sdml_kernels(n * n * max(d, 1) >= SERIAL_BELOW)
    rows_kernel(
        k1, k2, q.qd, q.qo, q.log_qd, q.log_qo, q.r, g, want_grad, out_c, gt, zeros, c, x1t, x2t, dx[0]
    )  # fmt: skip

    value = None
    if want_value:
        value = out_c
        if out is not None and out_c is not out:
            out[...] = out_c
            value = out
        elif rdt != cdt:
            value = out_c.astype(rdt)
    if not want_grad:
        return value, None
    cols_kernel(k2, gt, c, x1t, dx[1])
    grads = []
    for k in range(2):
        if bufs[k] is not None:
            if dx[k] is not bufs[k]:
                bufs[k][...] = dx[k]
            grads.append(bufs[k])
        else:
            grads.append(dx[k].astype(gdt[k]) if gdt[k] != cdt else dx[k])
    return value, (grads[0], grads[1])


# ---------------------------------------------------------------------------------- CUDA
def _sdml_cuda(x1, x2, smoothing, out_grad, want_value, want_grad, out, grad_out):
    from ._dispatch_cuda import _checked

    d1 = _checked("x1", x1)
    ctx = DeviceContext.of(d1)
    with ctx.activate():
        return _launch(d1, x2, ctx, smoothing, out_grad, want_value, want_grad, out, grad_out)


def _launch(d1, x2, ctx, smoothing, out_grad, want_value, want_grad, out, grad_out):
    from numba_losses.kernels._options import CUDA_GRID_PER_SM
    from numba_losses.kernels.cuda import SIMULATOR
    from numba_losses.kernels.cuda.sdml import ROW_THREADS, TILE, build_sdml_kernels

    from ._dispatch_cuda import _check_device_buffer, _checked, _overlaps, _wrap

    inputs = {"x1": d1, "x2": _checked("x2", x2)}
    if want_grad and out_grad is not None:
        inputs["out_grad"] = _wrap("out_grad", out_grad, ctx)
    same_device(inputs)
    d2 = inputs["x2"]
    n, d = check_pair(d1.layout.shape, d2.layout.shape)
    cdt = compute_dtype("x1", d1.layout)
    compute_dtype("x2", d2.layout)
    rdt = result_dtype(d1.layout, cdt)
    gdt = (rdt, result_dtype(d2.layout, cdt))

    out_native = out_dev = None
    if want_value:
        if out is not None:
            od = _check_device_buffer("out", out, (n,), rdt)
            out_native, out_dev = out, od.view(od.layout)
        else:
            out_native, out_dev = ctx.empty((n,), rdt)
    else:  # gradient only: the rows kernel still writes the values
        out_dev = ctx.empty((n,), cdt)[1]
    grads_native = [None, None]
    grads_dev = [None, None]
    if want_grad:
        bufs = _grad_buffers(grad_out)
        checked = []
        for k, b in enumerate(bufs):
            if b is not None:
                bd = _check_device_buffer(f"grad_out[{k}]", b, (n, d), gdt[k])
                if any(_overlaps(bd, a) for a in inputs.values()) or any(_overlaps(bd, c) for c in checked):
                    raise ValueError("grad_out buffers must not share memory with the inputs or each other")
                checked.append(bd)
                grads_native[k], grads_dev[k] = b, bd.view(bd.layout)
            else:
                grads_native[k], grads_dev[k] = ctx.empty((n, d), gdt[k])
    # The head gradient as an (n,) view: the caller's array, or a zero-stride view of a device
    # one (also passed, unread, by forward-only calls: one compiled rows kernel for both).
    gd = inputs.get("out_grad")
    if gd is None:
        gd = DeviceArray.wrap("out_grad", ctx.scalar_array(1.0, np.float64))
    try:
        g_layout = np.broadcast_to(gd.layout, (n,))
    except ValueError:
        raise ValueError(f"out_grad has shape {gd.layout.shape}, expected the output's shape {(n,)}") from None
    g = gd.view(g_layout)

    result = (out_native, (grads_native[0], grads_native[1]) if want_grad else None)
    if n == 0:
        return result
    q = targets(smoothing, n, cdt)
    dist_kernel, rows_kernel, grad_kernel = build_sdml_kernels(cdt.name, not SIMULATOR)
    x1v = d1.view(d1.layout)
    x2v = d2.view(d2.layout)
    gmat = ctx.empty((n, n), cdt)[1]
    # Blocks walk their tiles / rows in grid-stride loops; a GPU gets one block per tile (at
    # most CUDA_GRID_PER_SM per multiprocessor for the rows), the simulator a couple.
    cap = ctx.sms if SIMULATOR else 1 << 30
    tiles = -(-n // TILE)
    block = (TILE, TILE)
    dist_kernel[min(tiles * tiles, cap), block, ctx.stream](x1v, x2v, q.qd, gmat)
    blocks = min(n, ctx.sms * CUDA_GRID_PER_SM, cap)
    rows_kernel[blocks, ROW_THREADS, ctx.stream](gmat, q.qd, q.qo, q.log_qd, q.log_qo, q.r, g, want_grad, out_dev)
    if want_grad and d > 0:
        grid = min(tiles * -(-d // TILE), cap)
        grad_kernel[grid, block, ctx.stream](gmat, x1v, x2v, False, q.qd, grads_dev[0])
        grad_kernel[grid, block, ctx.stream](gmat, x2v, x1v, True, q.qd, grads_dev[1])
    return result
