"""Kernels of MakeLoss on the GPU: count the valid elements, fill the head gradient.

On the CPU, NumPy's ``count_nonzero`` and ``full`` already run at memory
speed, so :mod:`numba_losses.makeloss` uses them directly; this file has no
CPU twin.
"""

from numba import cuda, int64

from . import THREADS, jit_kernel
from .reduce import group_sum_shared


@jit_kernel
def count_greater_kernel(src, thr, count):
    """``count[0] += #{i : src[i] > thr}`` (strict; NaN is not counted), one atomic add per block."""
    sh = cuda.shared.array(THREADS, int64)
    tid = cuda.threadIdx.x
    start, step = cuda.grid(1), cuda.gridsize(1)
    c = 0
    for i in range(start, src.shape[0], step):
        if src[i] > thr:
            c += 1
    total = group_sum_shared(c, sh, tid, tid, THREADS)  # the whole block is one group
    if tid == 0:
        cuda.atomic.add(count, 0, total)


@jit_kernel
def fill_kernel(dst, value):
    """``dst[:] = value`` (converted to ``dst``'s dtype)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dst.shape[0], step):
        dst[i] = value
