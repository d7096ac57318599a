"""SDMLLoss on the device (:mod:`numba_losses.kernels.cuda.sdml`): distance tiles, rows, gradient tiles."""

from __future__ import annotations

from typing import Any

from numba_losses.kernels._options import CUDA_GRID_PER_SM
from numba_losses.kernels.cuda import SIMULATOR
from numba_losses.kernels.cuda.sdml import ROW_THREADS, TILE, build_sdml_kernels

from .._core.buffers import device_out_grad, device_target
from .._core.device import checked, on_device, same_device, wrap_input
from .._core.request import Call
from .._plan.sdml import SDMLSpec, plan, targets


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
        gmat = ctx.empty((n, n), cdt)[1]
        # Blocks walk their tiles / rows in grid-stride loops; a GPU gets one block per tile (at
        # most CUDA_GRID_PER_SM per multiprocessor for the rows), the simulator a couple.
        cap = ctx.sms if SIMULATOR else 1 << 30
        tiles = -(-n // TILE)
        block = (TILE, TILE)
        dist_kernel[min(tiles * tiles, cap), block, ctx.stream](x1v, x2v, q.qd, gmat)
        blocks = min(n, ctx.sms * CUDA_GRID_PER_SM, cap)
        rows_kernel[blocks, ROW_THREADS, ctx.stream](
            gmat, q.qd, q.qo, q.log_qd, q.log_qo, q.r, g, call.want_grad, out_dev
        )
        if call.want_grad and d > 0:
            grid = min(tiles * -(-d // TILE), cap)
            grad_kernel[grid, block, ctx.stream](gmat, x1v, x2v, False, q.qd, grads_dev[0])
            grad_kernel[grid, block, ctx.stream](gmat, x2v, x1v, True, q.qd, grads_dev[1])
        return out_native, grads_native
