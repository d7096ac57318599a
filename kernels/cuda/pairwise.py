"""TripletLoss and CosineEmbeddingLoss CUDA kernels, the twins of :mod:`..cpu.pairwise`.

A row is handled by a *group* of ``group`` consecutive threads (a power of
two, :func:`row_groups`): each thread strides through the row accumulating
float64 partial sums, :func:`..reduce.group_sum_shuffle` (or the shared-memory
tree under the simulator) adds them, the group's first thread evaluates the
row head of :mod:`..pairwise_math` and shares its gradient scalars through
shared memory, and the group then walks the row again writing the gradient.
Blocks take rows in a grid-stride loop. Inputs are read in their own dtype
(float16 computed in float32) and may be strided or zero-stride views.

When CosineEmbeddingLoss's ``sample_weight`` grows the output beyond
``(rows, 1)``, the kernel writes unweighted rows and the product-weighting
kernels of :mod:`.weighting` form the output and the rows' head gradient.
"""

import functools
import math

from numba import cuda, float64

from .._options import CUDA_GRID_PER_SM
from ..pairwise_math import cosine_grad, cosine_head, label_code, triplet_grads, triplet_head, triplet_term
from ..vmath import like
from . import THREADS, jit_kernel
from .elementwise import launch_plan
from .reduce import group_sum_shared, group_sum_shuffle


def row_groups(n_rows: int, k: int, sm_count: int, threads: int = THREADS) -> tuple[int, int]:
    """``(group, blocks)``: threads per row of ``k`` elements and blocks of ``threads`` for ``n_rows`` rows."""
    group = launch_plan(max(n_rows, 1), k, sm_count, threads)[0]
    per_block = threads // group
    blocks = max(1, min(-(-n_rows // per_block), sm_count * CUDA_GRID_PER_SM))
    return group, blocks


@cuda.jit(device=True, inline="always")
def _split(e, n_outer, n_inner):
    """Position ``(o, i)`` of element ``e`` of a row; no integer division in the usual layouts."""
    if n_outer == 1:
        return 0, e
    if n_inner == 1:
        return e, 0
    o = e // n_inner
    return o, e - o * n_inner


@functools.cache
def build_triplet_kernel(shuffle):
    """Compile-on-first-launch TripletLoss kernel.

    Returns
    -------
    numba CUDA dispatcher
        ``kernel[blocks, THREADS, stream](x, p, n, margin, w, g, want_grad,
        out, dx, dp, dn, group)`` with ``x``, ``p``, ``n`` (any real dtype) and
        ``dx``, ``dp``, ``dn`` of shape ``(n_outer, n_rows, n_inner)``, ``g``
        the head gradient ``(n_rows,)``, ``margin`` and ``w`` in the compute
        dtype. Writes ``out`` and, when ``want_grad``, the three gradients.
    """
    threads = THREADS
    group_sum = group_sum_shuffle if shuffle else group_sum_shared

    def triplet_kernel(x, p, n, margin, w, g, want_grad, out, dx, dp, dn, group):
        sh = cuda.shared.array(threads, float64)
        head = cuda.shared.array(threads, float64)  # one slot per group: the row's gradient scale
        n_outer, n_rows, n_inner = x.shape
        k = n_outer * n_inner
        tid = cuda.threadIdx.x
        lane = tid & (group - 1)
        slot = tid // group
        per_block = threads // group
        stride = per_block * cuda.gridDim.x
        n_iter = (n_rows + stride - 1) // stride  # the same for every thread: group sums synchronise
        for it in range(n_iter):
            b = (it * cuda.gridDim.x + cuda.blockIdx.x) * per_block + slot
            s = float64(0.0)
            if b < n_rows:
                e = lane
                while e < k:
                    o, i = _split(e, n_outer, n_inner)
                    s += triplet_term(like(margin, x[o, b, i]), like(margin, p[o, b, i]), like(margin, n[o, b, i]))
                    e += group
            s = group_sum(s, sh, tid, lane, group)
            if lane == 0 and b < n_rows:
                value, m = triplet_head(s, margin, w, like(margin, g[b]))
                out[b] = value
                head[slot] = m
            if want_grad:  # uniform across the block
                cuda.syncthreads()
                if b < n_rows:
                    m = like(margin, head[slot])
                    e = lane
                    while e < k:
                        o, i = _split(e, n_outer, n_inner)
                        gx, gp, gn = triplet_grads(
                            like(margin, x[o, b, i]), like(margin, p[o, b, i]), like(margin, n[o, b, i]), m
                        )
                        dx[o, b, i] = gx
                        dp[o, b, i] = gp
                        dn[o, b, i] = gn
                        e += group
                cuda.syncthreads()  # ``head`` is rewritten by the next row

    variant = "shuffle" if shuffle else "shared"
    triplet_kernel.__qualname__ = triplet_kernel.__name__ = f"triplet_cuda_{variant}_kernel"
    return jit_kernel(triplet_kernel)


@functools.cache
def build_cosine_kernel(shuffle):
    """Compile-on-first-launch CosineEmbeddingLoss kernel.

    Returns
    -------
    numba CUDA dispatcher
        ``kernel[blocks, THREADS, stream](a, b, label, margin, g, rsw, w,
        want_grad, out, da, db, group)``: ``a``, ``b`` of shape ``(n_src, k)``
        with ``n_src`` equal to ``n_rows = out.shape[0]`` or 1; ``label``,
        ``g`` (head gradient) and ``rsw`` (per-row sample weight) of shape
        ``(n_rows,)``, any real dtype; ``margin``, ``w`` in the compute dtype.
        Writes ``out[r] = (loss_r * rsw[r]) * w`` and, when ``want_grad``,
        ``da``, ``db`` of shape ``(n_rows, k)`` for the head
        ``(g[r] * w) * rsw[r]``.
    """
    threads = THREADS
    group_sum = group_sum_shuffle if shuffle else group_sum_shared

    def cosine_kernel(a, b, label, margin, g, rsw, w, want_grad, out, da, db, group):
        sh = cuda.shared.array(threads, float64)
        head = cuda.shared.array((5, threads), float64)  # per group: ddot, dna, dnb, na, nb
        n_src, k = a.shape
        n_rows = out.shape[0]
        tid = cuda.threadIdx.x
        lane = tid & (group - 1)
        slot = tid // group
        per_block = threads // group
        stride = per_block * cuda.gridDim.x
        n_iter = (n_rows + stride - 1) // stride
        for it in range(n_iter):
            r = (it * cuda.gridDim.x + cuda.blockIdx.x) * per_block + slot
            src = r
            if n_src != n_rows:
                src = 0
            s_ab = float64(0.0)
            s_aa = float64(0.0)
            s_bb = float64(0.0)
            if r < n_rows:
                e = lane
                while e < k:
                    av = like(margin, a[src, e])
                    bv = like(margin, b[src, e])
                    s_ab += av * bv
                    s_aa += float64(av) * float64(av)
                    s_bb += float64(bv) * float64(bv)
                    e += group
            s_ab = group_sum(s_ab, sh, tid, lane, group)
            s_aa = group_sum(s_aa, sh, tid, lane, group)
            s_bb = group_sum(s_bb, sh, tid, lane, group)
            if lane == 0 and r < n_rows:
                na = like(margin, math.sqrt(s_aa))
                nb = like(margin, math.sqrt(s_bb))
                sw = like(margin, rsw[r])
                h = (like(margin, g[r]) * w) * sw
                loss, ddot, dna, dnb = cosine_head(like(margin, s_ab), na, nb, label_code(label[r]), margin, h)
                out[r] = (loss * sw) * w
                head[0, slot] = ddot
                head[1, slot] = dna
                head[2, slot] = dnb
                head[3, slot] = na
                head[4, slot] = nb
            if want_grad:  # uniform across the block
                cuda.syncthreads()
                if r < n_rows:
                    ddot = like(margin, head[0, slot])
                    dna = like(margin, head[1, slot])
                    dnb = like(margin, head[2, slot])
                    na = like(margin, head[3, slot])
                    nb = like(margin, head[4, slot])
                    e = lane
                    while e < k:
                        av = like(margin, a[src, e])
                        bv = like(margin, b[src, e])
                        da[r, e] = cosine_grad(av, bv, ddot, dna, na)
                        db[r, e] = cosine_grad(bv, av, ddot, dnb, nb)
                        e += group
                cuda.syncthreads()  # ``head`` is rewritten by the next row

    variant = "shuffle" if shuffle else "shared"
    cosine_kernel.__qualname__ = cosine_kernel.__name__ = f"cosine_cuda_{variant}_kernel"
    return jit_kernel(cosine_kernel)
