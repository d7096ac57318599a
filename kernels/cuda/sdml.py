r"""SDMLLoss CUDA kernels, the twins of :mod:`..cpu.sdml`.

Two ways through, chosen by :mod:`numba_losses._cuda.sdml`:

* CuPy arrays and PyTorch CUDA tensors (with CuPy installed): the runner takes
  :math:`P = a b^T` of the centred inputs and the gradient products with
  cuBLAS (CuPy's matmul); ``rows_kernel`` with ``expand`` turns :math:`P` into
  the distances (:func:`..sdml_math.expanded_dist`, summed directly where that
  loses digits, :data:`..sdml_math.NEAR`, or where a norm is not finite), then
  does the row work below.
* Other device arrays: all three kernels.

``dist_kernel``
    :math:`d_{ij} = \sum_k (x_{1,ik} - x_{2,jk})^2` in square tiles of
    :data:`TILE` x :data:`TILE` threads: each block stages a tile of ``x1``
    rows and one of ``x2`` rows (:data:`TILE` columns at a time) in shared
    memory and each thread accumulates one distance.
``rows_kernel``
    One block per row (grid-stride over rows): the row minimum of the
    distances (shared-memory tree), the float64 sum of
    :math:`e^{m - d_{ij}}` (:func:`..reduce.group_sum_shuffle`, or the
    shared-memory tree under the simulator), then the KL value of the row and,
    for the gradient, :math:`G_{ij}` (:mod:`..sdml_math`) written over the
    distances.
``grad_kernel``
    :math:`\mathrm{dx}_{pk} = 2 \sum_q W_{pq} (a_{pk} - b_{qk})` in tiles, with
    :math:`W` = :math:`G` (``dx1``: ``a = x1``, ``b = x2``) or :math:`G^T`
    (``dx2``: ``a = x2``, ``b = x1``): tiles of :math:`W` and ``b`` staged in
    shared memory, the per-tile sums (compute dtype) added in float64. The
    differences are taken directly, as MXNet's autograd does.

Inputs are strided views of the caller's arrays in their own dtype (float16
read as float16, computed in float32); results are stored in the output
arrays' dtype.
"""

import functools
import math

from numba import cuda, float32, float64

from ..sdml_math import NEAR, dist_grad, expanded_dist, kl_term
from ..vmath import like
from . import SIMULATOR, THREADS, jit_kernel
from .reduce import group_sum_shared, group_sum_shuffle

# Edge of the square thread tiles of the distance and gradient kernels (TILE x TILE threads per
# block); the simulator runs a Python thread per GPU thread, so it gets small tiles.
TILE = 4 if SIMULATOR else 16
# Threads per block of the rows kernel (a power of two).
ROW_THREADS = 8 if SIMULATOR else THREADS


@functools.cache
def build_sdml_kernels(dtype_name, shuffle):
    """Compile-on-first-launch SDMLLoss kernels for one compute dtype.

    Parameters
    ----------
    dtype_name : {"float32", "float64"}
        The compute dtype (the type of the shared-memory tiles).
    shuffle : bool
        Warp-shuffle row sums (real GPUs) or the shared-memory tree (simulator).

    Returns
    -------
    dist_kernel : numba CUDA dispatcher
        ``dist_kernel[(ceil(n/TILE), ceil(n/TILE)), (TILE, TILE), stream](x1, x2, proto, dist)``;
        ``x1``, ``x2`` ``(n, d)`` of any real dtype, ``proto`` a scalar of the
        compute dtype, writes ``dist`` ``(n, n)`` (compute dtype).
    rows_kernel : numba CUDA dispatcher
        ``rows_kernel[blocks, THREADS, stream](dist, expand, na, nb, a, b, qd, qo, log_qd, log_qo, r, g,
        want_grad, out)``; the target constants in the compute dtype, ``g`` the
        head gradient ``(n,)`` (any dtype, zero stride allowed). Writes ``out``
        ``(n,)`` and, when ``want_grad``, :math:`G` over ``dist``. With
        ``expand``, ``dist`` holds :math:`a b^T` of the centred inputs ``a``,
        ``b`` ``(n, d)`` (compute dtype), whose squared row norms are ``na``,
        ``nb`` ``(n,)``, and the kernel first writes the distances over it;
        otherwise those four arrays are not read.
    grad_kernel : numba CUDA dispatcher
        ``grad_kernel[(ceil(d/TILE), ceil(n/TILE)), (TILE, TILE), stream](gmat, a, b, trans, proto, dx)``:
        ``dx[p, k] = 2 sum_q W[p, q] (a[p, k] - b[q, k])`` with ``W = gmat``
        or, when ``trans``, its transpose.
    """
    tile = TILE
    pitch = TILE + 1  # shared rows padded by one: conflict-free column reads
    threads = ROW_THREADS
    sdt = float32 if dtype_name == "float32" else float64
    group_sum = group_sum_shuffle if shuffle else group_sum_shared

    def sdml_dist_kernel(x1, x2, proto, dist):
        sa = cuda.shared.array((tile, pitch), sdt)
        sb = cuda.shared.array((tile, pitch), sdt)
        n, d = x1.shape
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        nt = (n + tile - 1) // tile
        zero = like(proto, 0.0)
        for t in range(cuda.blockIdx.x, nt * nt, cuda.gridDim.x):  # tiles, the same for the whole block
            bi = t // nt
            i = bi * tile + ty  # this thread's x1 row (and the row it stages)
            j0 = (t - bi * nt) * tile
            j = j0 + tx  # this thread's x2 row
            jl = j0 + ty  # the x2 row this thread stages
            acc = zero
            for k0 in range(0, d, tile):
                k = k0 + tx
                va = zero
                vb = zero
                if k < d:
                    if i < n:
                        va = like(proto, x1[i, k])
                    if jl < n:
                        vb = like(proto, x2[jl, k])
                sa[ty, tx] = va
                sb[ty, tx] = vb
                cuda.syncthreads()
                for kk in range(min(tile, d - k0)):
                    e = sa[ty, kk] - sb[tx, kk]
                    acc += e * e
                cuda.syncthreads()
            if i < n and j < n:
                dist[i, j] = acc

    def sdml_rows_kernel(dist, expand, na, nb, a, b, qd, qo, log_qd, log_qo, r, g, want_grad, out):
        sh = cuda.shared.array(threads, float64)
        slot = cuda.shared.array(1, float64)
        n = dist.shape[0]
        d = a.shape[1]
        tid = cuda.threadIdx.x
        zero = like(qd, 0.0)
        frac = like(qd, NEAR)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):  # the same row for the whole block
            # Row minimum (the largest logit); NaN distances are skipped here and make the row
            # NaN through the sum below. Each thread reads the same columns in every pass below,
            # so the distances it writes here need no barrier.
            m = like(qd, math.inf)
            for j in range(tid, n, threads):
                v = dist[i, j]
                if expand:
                    s = na[i] + nb[j]
                    v = expanded_dist(s, v, zero)
                    if not (v >= frac * s and math.isfinite(s)):  # cancellation, or inf / NaN norms
                        acc = zero
                        for k in range(d):
                            e = a[i, k] - b[j, k]
                            acc += e * e
                        v = acc
                    dist[i, j] = v
                if v < m:
                    m = v
            sh[tid] = m
            cuda.syncthreads()
            off = threads // 2
            while off > 0:
                if tid < off and sh[tid + off] < sh[tid]:
                    sh[tid] = sh[tid + off]
                cuda.syncthreads()
                off //= 2
            mi = like(qd, sh[0])
            cuda.syncthreads()
            s = float64(0.0)
            for j in range(tid, n, threads):
                s += math.exp(mi - dist[i, j])
            s = group_sum(s, sh, tid, tid, threads)
            if tid == 0:
                slot[0] = s
            cuda.syncthreads()
            total = slot[0]
            lse = like(qd, math.log(total))
            inv = like(qd, 1.0 / total)
            gi = like(qd, 0.0)
            if want_grad:
                gi = like(qd, g[i])
            t = float64(0.0)
            for j in range(tid, n, threads):
                v = mi - dist[i, j]  # the shifted logit
                q = qo
                log_q = log_qo
                if j == i:
                    q = qd
                    log_q = log_qd
                t += kl_term(q, log_q, v - lse)
                if want_grad:
                    dist[i, j] = dist_grad(gi, q, r, math.exp(v) * inv)
            t = group_sum(t, sh, tid, tid, threads)
            if tid == 0:
                out[i] = like(qd, t)

    def sdml_grad_kernel(gmat, a, b, trans, proto, dx):
        sw = cuda.shared.array((tile, pitch), sdt)  # sw[p, q] = W[p0 + p, q0 + q]
        sb = cuda.shared.array((tile, pitch), sdt)  # sb[q, k] = b[q0 + q, k0 + k]
        n, d = a.shape
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        ntk = (d + tile - 1) // tile
        n_tiles = (n + tile - 1) // tile * ntk
        zero = like(proto, 0.0)
        for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):  # tiles, the same for the whole block
            bp = t // ntk
            p0 = bp * tile
            p = p0 + ty
            k = (t - bp * ntk) * tile + tx
            av = zero
            if p < n and k < d:
                av = like(proto, a[p, k])
            total = float64(0.0)
            for q0 in range(0, n, tile):
                w = zero
                if trans:  # W[p, q] = gmat[q, p]: read rows of gmat (coalesced), store transposed
                    if q0 + ty < n and p0 + tx < n:
                        w = gmat[q0 + ty, p0 + tx]
                    sw[tx, ty] = w
                else:
                    if p < n and q0 + tx < n:
                        w = gmat[p, q0 + tx]
                    sw[ty, tx] = w
                vb = zero
                if q0 + ty < n and k < d:
                    vb = like(proto, b[q0 + ty, k])
                sb[ty, tx] = vb
                cuda.syncthreads()
                acc = zero
                for qq in range(min(tile, n - q0)):
                    acc += sw[ty, qq] * (av - sb[qq, tx])
                total += acc
                cuda.syncthreads()
            if p < n and k < d:
                dx[p, k] = like(proto, 2.0 * total)

    variant = "shuffle" if shuffle else "shared"
    kernels = []
    for fn in (sdml_dist_kernel, sdml_rows_kernel, sdml_grad_kernel):
        fn.__qualname__ = fn.__name__ = f"{fn.__name__}_{dtype_name}_{variant}"
        kernels.append(jit_kernel(fn))
    return tuple(kernels)
