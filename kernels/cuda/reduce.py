"""Reductions for the CUDA kernels: groups of threads, row partials, broadcast axes.

A *group* is ``group`` consecutive threads of a block (a power of two, at most
the block size) that work on one task. Two interchangeable group sums:

* :func:`group_sum_shuffle`: warp shuffles (``shfl_down_sync``) inside each
  warp, then one shared-memory slot per warp for groups wider than a warp.
  Used on real GPUs.
* :func:`group_sum_shared`: a tree in shared memory with ``syncthreads``
  between levels. Used under the simulator, which has no warp shuffles.

Both are called by every thread of the block the same number of times (they
synchronise the block) and return the group's sum on its first thread
(``lane == 0``); other lanes get partial values. Sums are float64.
:func:`group_sum_all` and :func:`group_max_all` (shared-memory trees) return
the result to every lane, for kernels whose threads all need it (softmax).

The kernels here finish what the row kernels leave: :func:`finish_rows_kernel`
adds the per-chunk partial sums of long rows in a fixed order (so results do
not depend on scheduling), :func:`sum_middle_kernel` sums a gradient over one
broadcast axis.
"""

from numba import cuda, float64

from ..vmath import like
from . import jit_kernel

_FULL_MASK = 0xFFFFFFFF


@cuda.jit(device=True, inline="always")
def group_sum_shared(s, sh, tid, lane, group):
    """Tree sum of ``s`` over each group of ``group`` threads through ``sh`` (no shuffles)."""
    sh[tid] = s
    cuda.syncthreads()
    off = group // 2
    while off > 0:
        if lane < off:
            sh[tid] += sh[tid + off]
        cuda.syncthreads()
        off //= 2
    total = sh[tid]
    cuda.syncthreads()  # the caller may reuse ``sh`` right away
    return total


@cuda.jit(device=True, inline="always")
def _group_tree(v, sh, tid, lane, group, take_max):
    sh[tid] = v
    cuda.syncthreads()
    off = group // 2
    while off > 0:
        if lane < off:
            w = sh[tid + off]
            if not take_max:
                sh[tid] += w
            elif w > sh[tid]:
                sh[tid] = w
        cuda.syncthreads()
        off //= 2
    total = sh[tid - lane]
    cuda.syncthreads()  # the caller may reuse ``sh`` right away
    return total


@cuda.jit(device=True, inline="always")
def group_sum_all(v, sh, tid, lane, group):
    """Sum of ``v`` over each group (fixed tree order), returned to every lane of the group."""
    return _group_tree(v, sh, tid, lane, group, False)


@cuda.jit(device=True, inline="always")
def group_max_all(v, sh, tid, lane, group):
    """Maximum of ``v`` over each group (NaN never wins), returned to every lane of the group."""
    return _group_tree(v, sh, tid, lane, group, True)


@cuda.jit(device=True, inline="always")
def _warp_sum(s, width):
    off = width // 2
    while off > 0:
        s += cuda.shfl_down_sync(_FULL_MASK, s, off)
        off //= 2
    return s


@cuda.jit(device=True, inline="always")
def group_sum_shuffle(s, sh, tid, lane, group):
    """Sum of ``s`` over each group of ``group`` threads: warp shuffles, then per-warp slots."""
    s = _warp_sum(s, min(group, 32))
    if group > 32:  # uniform across the block
        if tid % 32 == 0:
            sh[tid // 32] = s
        cuda.syncthreads()
        if lane < 32:  # the group's first warp, whole: the shuffle below is warp-uniform
            first = (tid - lane) // 32
            v = 0.0
            if lane < group // 32:
                v = sh[first + lane]
            s = _warp_sum(v, 32)
        cuda.syncthreads()
    return s


@jit_kernel
def finish_rows_kernel(partial, fscale, proto, out):
    """``out[b] = sum_r partial[b, r] * fscale[b]``, the partials added in order.

    ``proto`` is a scalar in the compute dtype: the sum is rounded to it before
    being stored (float16 results are computed in float32, as on the CPU).
    """
    n_rows, n_parts = partial.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for b in range(start, n_rows, step):
        s = float64(0.0)
        for r in range(n_parts):
            s += partial[b, r]
        out[b] = like(proto, s * fscale[b])


@jit_kernel
def sum_middle_kernel(src, dst):
    """``dst[o, i] = sum_m src[o, m, i]`` (float64 accumulation), one thread per output."""
    n_outer, n_mid, n_inner = src.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, n_outer * n_inner, step):
        o = t // n_inner
        i = t - o * n_inner
        s = float64(0.0)
        for m in range(n_mid):
            s += src[o, m, i]
        dst[o, i] = s
