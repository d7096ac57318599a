"""Fused "elementwise term, then weighted per-row reduction" CUDA kernels.

The CUDA twin of :mod:`..cpu.elementwise`, built from the same scalar pairs of
:mod:`..scalar` over the same canonical layout ``(n_outer, n_rows, n_inner)``
(the batch axis in the middle; strided and zero-stride views allowed). For
every batch row ``b``, in one pass over the inputs,

.. math::

    \\mathrm{out}_b = s_b \\sum_{o,i} \\ell(x_{obi}, y_{obi}, a_{obi})\\, e_{obi},
    \\qquad
    \\mathrm{dx}_{obi} = c_b\\, e_{obi}\\, \\partial_x \\ell(x_{obi}, y_{obi}, a_{obi}).

Work decomposition (:func:`launch_plan`): a row's ``K = n_outer * n_inner``
elements are cut into ``nck`` chunks; a *task* is one (row, chunk) and is done
by a group of ``group`` consecutive threads (a power of two from 1 to the block
size), each thread striding through the chunk, so neighbouring threads read
neighbouring elements. Short rows get small groups (one thread per row for
``K = 1``, many rows per block), long rows get whole blocks and, when there are
too few rows to fill the GPU, several chunks whose partial sums
:func:`..reduce.finish_rows_kernel` adds in a fixed order. Blocks walk the
tasks with a grid-stride loop. Inputs may have any real dtype: values are
converted to the compute dtype on load (float16 read as float16, computed in
float32) and results are stored in the output arrays' dtype.
"""

import functools
import math

from numba import cuda, float64

from .._options import CUDA_BLOCKS_PER_SM, CUDA_GRID_PER_SM, CUDA_ITEMS
from ..registry import is_builtin
from ..vmath import like
from . import THREADS, jit_kernel
from .reduce import group_sum_shared, group_sum_shuffle


def launch_plan(n_rows: int, k: int, sm_count: int, threads: int = THREADS) -> tuple[int, int, int, int]:
    """``(group, nck, chunk, blocks)`` for ``n_rows`` rows of ``k`` elements.

    ``group`` threads per task, ``nck`` chunks of ``chunk`` elements per row and
    ``blocks`` blocks of ``threads`` threads. Chunks are only cut when the rows
    alone would leave the GPU under-occupied.
    """
    k = max(k, 1)
    group = 1
    while group < threads and group * CUDA_ITEMS < k:
        group *= 2
    per_block = threads // group
    target_tasks = sm_count * CUDA_BLOCKS_PER_SM * per_block
    nck = 1
    if n_rows < target_tasks:
        nck = max(1, min(math.ceil(k / (group * CUDA_ITEMS)), math.ceil(target_tasks / max(n_rows, 1))))
    chunk = math.ceil(math.ceil(k / nck) / group) * group
    nck = math.ceil(k / chunk)
    blocks = max(1, min(math.ceil(n_rows * nck / per_block), sm_count * CUDA_GRID_PER_SM))
    return group, nck, chunk, blocks


@functools.cache
def build_rowmean_kernel(value, grad, has_aux, has_ew, want_grad, shuffle):
    """Compile-on-first-launch CUDA kernel for one loss term and variant.

    Parameters
    ----------
    value, grad, has_aux, has_ew, want_grad
        As for the CPU factory, :func:`numba_losses.kernels.cpu.rowmean.build_rowmean_kernel`.
    shuffle : bool
        Warp-shuffle group sums (real GPUs) or the shared-memory tree (simulator).

    Returns
    -------
    numba CUDA dispatcher
        ``kernel[blocks, THREADS, stream](x, y, aux, ew, p0, p1, fscale, coef,
        out, dx, partial, group, nck, chunk)`` with the launch shape of
        :func:`launch_plan`. ``p0``, ``p1`` and ``coef`` are in the compute
        dtype, ``fscale`` and ``partial`` (``(n_rows, nck)``) float64; the
        other arrays may have any real dtype. Writes ``out[b]`` when
        ``nck == 1``, else ``partial[b, :]``, and ``dx`` if ``want_grad``.
    """
    threads = THREADS
    group_sum = group_sum_shuffle if shuffle else group_sum_shared

    @cuda.jit(device=True, inline="always")
    def load(x, y, aux, ew, e, b, n_outer, n_inner, p0):
        """Element ``e`` of row ``b``: its position and inputs in the compute dtype."""
        o = 0
        i = e
        if n_outer > 1:
            o = e // n_inner
            i = e - o * n_inner
        one = like(p0, 1.0)
        av = one
        if has_aux:
            av = like(p0, aux[o, b, i])
        ev = one
        if has_ew:
            ev = like(p0, ew[o, b, i])
        return o, i, like(p0, x[o, b, i]), like(p0, y[o, b, i]), av, ev

    @cuda.jit(device=True, inline="always")
    def term(xv, yv, av, ev, p0, p1, cb, dx, o, b, i):
        """The weighted term (returned) and its gradient (stored)."""
        if want_grad:
            gv = cb * grad(xv, yv, av, p0, p1)
            if has_ew:
                gv = gv * ev
            dx[o, b, i] = gv
        v = value(xv, yv, av, p0, p1)
        if has_ew:
            v = v * ev
        return v

    def rowmean_kernel(x, y, aux, ew, p0, p1, fscale, coef, out, dx, partial, group, nck, chunk):
        sh = cuda.shared.array(threads, float64)
        n_outer, n_rows, n_inner = x.shape
        k = n_outer * n_inner
        tid = cuda.threadIdx.x
        lane = tid & (group - 1)
        per_block = threads // group
        n_tasks = n_rows * nck
        stride = per_block * cuda.gridDim.x
        n_iter = (n_tasks + stride - 1) // stride  # the same for every thread: group sums synchronise
        for it in range(n_iter):
            t = (it * cuda.gridDim.x + cuda.blockIdx.x) * per_block + tid // group
            s = float64(0.0)
            b = 0
            ck = 0
            if t < n_tasks:
                b = t // nck
                ck = t - b * nck
                cb = coef[b]
                e1 = min(ck * chunk + chunk, k)
                e = ck * chunk + lane
                # Four elements per step, all loaded before any gradient is stored: the
                # loads are independent, so each thread keeps four in flight.
                while e + 3 * group < e1:
                    o0, i0, x0, y0, a0, w0 = load(x, y, aux, ew, e, b, n_outer, n_inner, p0)
                    o1, i1, x1, y1, a1, w1 = load(x, y, aux, ew, e + group, b, n_outer, n_inner, p0)
                    o2, i2, x2, y2, a2, w2 = load(x, y, aux, ew, e + 2 * group, b, n_outer, n_inner, p0)
                    o3, i3, x3, y3, a3, w3 = load(x, y, aux, ew, e + 3 * group, b, n_outer, n_inner, p0)
                    s += term(x0, y0, a0, w0, p0, p1, cb, dx, o0, b, i0)
                    s += term(x1, y1, a1, w1, p0, p1, cb, dx, o1, b, i1)
                    s += term(x2, y2, a2, w2, p0, p1, cb, dx, o2, b, i2)
                    s += term(x3, y3, a3, w3, p0, p1, cb, dx, o3, b, i3)
                    e += 4 * group
                while e < e1:
                    o0, i0, x0, y0, a0, w0 = load(x, y, aux, ew, e, b, n_outer, n_inner, p0)
                    s += term(x0, y0, a0, w0, p0, p1, cb, dx, o0, b, i0)
                    e += group
            s = group_sum(s, sh, tid, lane, group)
            if lane == 0 and t < n_tasks:
                if nck == 1:
                    out[b] = like(p0, s * fscale[b])
                else:
                    partial[b, ck] = s

    variant = "shuffle" if shuffle else "shared"
    rowmean_kernel.__qualname__ = f"{value.__name__.removesuffix('_value')}_rowmean_cuda_{variant}_kernel"
    rowmean_kernel.__name__ = rowmean_kernel.__qualname__
    return jit_kernel(rowmean_kernel, cache=is_builtin(value, grad))


@jit_kernel
def row_scales_kernel(scale, rw, og, has_rw, has_og, fscale, coef):
    """Per-row scales: ``fscale[b] = scale * rw[b]``, ``coef[b] = fscale[b] * og[b]`` (in ``coef``'s dtype).

    ``rw`` (per-row sample weight) and ``og`` (head gradient) may be zero-stride
    views; they are read only when ``has_rw`` / ``has_og``.
    """
    start, step = cuda.grid(1), cuda.gridsize(1)
    for b in range(start, fscale.shape[0], step):
        f = scale
        if has_rw:
            f = f * float64(rw[b])
        fscale[b] = f
        c = f
        if has_og:
            c = c * float64(og[b])
        coef[b] = c
