"""SDMLLoss on the device (:mod:`numba_losses.kernels.cuda.sdml`).

CuPy arrays and PyTorch CUDA tensors, when CuPy can be imported, take the
three matrix products from cuBLAS through CuPy (:func:`_run_cublas`, the
algebra of :mod:`numba_losses._cpu.sdml`) around the rows kernel; other device
arrays (Numba's, other ``__cuda_array_interface__`` producers, the simulator)
run the distance tiles, the rows kernel and the gradient tiles.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

from numba_losses.kernels._options import CUDA_GRID_PER_SM
from numba_losses.kernels.cuda import SIMULATOR
from numba_losses.kernels.cuda.sdml import ROW_THREADS, TILE, build_sdml_kernels

from .._core.buffers import device_out_grad, device_target
from .._core.device import DeviceContext, checked, on_device, same_device, wrap_input
from .._core.launch import launch
from .._core.request import Call
from .._plan.sdml import SDMLSpec, Targets, centred, plan, targets


def run(spec: SDMLSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """The device twin of :func:`numba_losses._cpu.sdml.run`."""
    d1 = checked("x1", call.inputs["x1"])
    with on_device(d1) as ctx:
        inputs = {"x1": d1, "x2": checked("x2", call.inputs["x2"])}
        if call.out_grad is not None:
            inputs["out_grad"] = wrap_input("out_grad", call.out_grad, ctx)
        same_device(inputs)
        d2 = inputs["x2"]
        p = plan(d1.layout, d2.layout)
        n, d, cdt, gdt = p.n, p.d, p.cdt, p.gdt
        taken: list = []
        if call.want_value:
            out_native, out_dev = device_target("out", call.out, (n,), gdt[0], ctx, inputs, taken)
        else:  # gradient only: the rows kernel still writes the values
            out_native, out_dev = None, ctx.empty((n,), cdt)[1]
        grads_native, grads_dev = None, [None, None]
        if call.want_grad:
            pairs = [
                device_target(f"grad_out[{k}]", b, (n, d), gdt[k], ctx, inputs, taken)
                for k, b in enumerate(call.grad_out)
            ]
            grads_native = tuple(nat for nat, _ in pairs)
            grads_dev = [v for _, v in pairs]
        # The head gradient as an (n,) view: the caller's array, or a zero-stride view of a device
        # one (also passed, unread, by forward-only calls: one compiled rows kernel for both).
        g = device_out_grad(inputs.get("out_grad") or wrap_input("out_grad", 1.0, ctx), (n,))
        if n == 0:
            return out_native, grads_native
        q = targets(spec.smoothing, n, cdt)
        dist_kernel, rows_kernel, grad_kernel = build_sdml_kernels(cdt.name, not SIMULATOR)
        x1v = d1.view(d1.layout)
        x2v = d2.view(d2.layout)
        cp = _cupy() if ctx.library in ("cupy", "torch") else None
        if cp is not None:
            _run_cublas(cp, ctx, rows_kernel, x1v, x2v, q, g, call.want_grad, out_dev, grads_dev)
            return out_native, grads_native
        gmat = ctx.empty((n, n), cdt)[1]
        # Blocks walk their tiles / rows in grid-stride loops; a GPU gets one block per tile (at
        # most CUDA_GRID_PER_SM per multiprocessor for the rows), the simulator a couple.
        cap = ctx.sms if SIMULATOR else 1 << 30
        tiles = -(-n // TILE)
        block = (TILE, TILE)
        launch(dist_kernel, min(tiles * tiles, cap), block, ctx.stream, x1v, x2v, q.qd, gmat)
        blocks = min(n, ctx.sms * CUDA_GRID_PER_SM, cap)
        unused = ctx.dummy(2, cdt)  # the expansion's inputs, not read
        launch(
            rows_kernel,
            blocks,
            ROW_THREADS,
            ctx.stream,
            gmat,
            False,
            unused[0],
            unused[0],
            unused,
            unused,
            q.qd,
            q.qo,
            q.log_qd,
            q.log_qo,
            q.r,
            g,
            call.want_grad,
            out_dev,
        )
        if call.want_grad and d > 0:
            grid = min(tiles * -(-d // TILE), cap)
            launch(grad_kernel, grid, block, ctx.stream, gmat, x1v, x2v, False, q.qd, grads_dev[0])
            launch(grad_kernel, grid, block, ctx.stream, gmat, x2v, x1v, True, q.qd, grads_dev[1])
        return out_native, grads_native


@functools.cache
def _cupy() -> Any:
    """The ``cupy`` module, or ``None`` when it cannot be imported (the Numba kernels run instead)."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _numba(a: Any) -> Any:
    """A Numba view of the CuPy array ``a`` (no stream synchronisation)."""
    from numba import cuda

    return cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)


def _cupy_stream(cp: Any, ctx: DeviceContext) -> Any:
    """CuPy's stream for this call: its own current one, or PyTorch's current one wrapped."""
    if ctx.library == "cupy":
        return contextlib.nullcontext()
    import torch

    return cp.cuda.ExternalStream(torch.cuda.current_stream(ctx.device).cuda_stream, ctx.device)


def _run_cublas(
    cp: Any,
    ctx: DeviceContext,
    rows_kernel: Any,
    x1v: Any,
    x2v: Any,
    q: Targets,
    g: Any,
    want_grad: bool,
    out_dev: Any,
    grads_dev: list,
) -> None:
    """Values into ``out_dev`` and, with ``want_grad``, gradients into ``grads_dev`` (Numba views).

    The centred inputs ``a``, ``b`` (:func:`numba_losses._plan.sdml.centred`),
    :math:`P = a b^T` by cuBLAS, the rows kernel (``expand``) writing :math:`G`
    over :math:`P`, then ``dx1 = 2 (rowsum(G) a - G b)`` and
    ``dx2 = 2 (colsum(G) b - G^T a)`` with the sums in float64.
    """
    n = x1v.shape[0]
    cdt = np.dtype(type(q.qd))
    with cp.cuda.Device(ctx.device), _cupy_stream(cp, ctx):
        a, b = centred(cp, cp.asarray(x1v), cp.asarray(x2v), cdt)
        na = (a * a).sum(axis=1, dtype=cp.float64).astype(cdt)
        nb = (b * b).sum(axis=1, dtype=cp.float64).astype(cdt)
        gm = a @ b.T
        blocks = min(n, ctx.sms * CUDA_GRID_PER_SM)
        launch(
            rows_kernel,
            blocks,
            ROW_THREADS,
            ctx.stream,
            _numba(gm),
            True,
            _numba(na),
            _numba(nb),
            _numba(a),
            _numba(b),
            q.qd,
            q.qo,
            q.log_qd,
            q.log_qo,
            q.r,
            g,
            want_grad,
            out_dev,
        )
        if not want_grad:
            return
        for gmat, own, other, dx in ((gm, a, b, grads_dev[0]), (gm.T, b, a, grads_dev[1])):
            sums = gmat.sum(axis=1, dtype=cp.float64)
            cp.asarray(dx)[...] = 2.0 * (sums[:, None] * own - gmat @ other)
