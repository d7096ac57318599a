r"""SDMLLoss CPU kernels: tiled squared distances, row softmax / KL, gradient products.

Two kernels, built per variant (``parallel`` or serial) by :func:`build_sdml_kernels`:

``rows_kernel``
    For blocks of :data:`ROWS` rows of ``x1`` (one task each): the block of
    squared distances :math:`d_{ij} = \sum_k (x_{1,ik} - x_{2,jk})^2` against
    all of ``x2`` in tiles of :data:`COLS` rows, computed by the 2x4 register
    tile :func:`sqdist_2x4` (inner loop over ``k`` in SIMD lanes); then per row
    the max-shifted log-softmax of :math:`-d`, the KL value and, for the
    gradient, :math:`G_{ij}` (:mod:`..sdml_math`) with its row sum, and, while
    the block of :math:`G` is in cache, its columns of :math:`G^T` and the rows of
    ``dx1`` (below).
``cols_kernel``
    The rows of ``dx2``, from :math:`G^T`.

The gradients are matrix products with :math:`G`, taken with the centring
vector :math:`c` (the column means of ``x2``, which keeps the products free of
the cancellation a common offset of the inputs would cause):

.. math::

    \mathrm{dx1}_i = 2\Big(\big(\textstyle\sum_j G_{ij}\big)(x_{1,i} - c) - \sum_j G_{ij} (x_{2,j} - c)\Big),

    \mathrm{dx2}_j = -2\Big(\sum_i G_{ij} (x_{1,i} - c) - \big(\textstyle\sum_i G_{ij}\big)(x_{2,j} - c)\Big),

equal to :math:`2\sum_j G_{ij}(x_{1,i} - x_{2,j})` and
:math:`-2\sum_i G_{ij}(x_{1,i} - x_{2,j})`. Each product is a set of dot
products of contiguous rows (:func:`dot_2x4`, against the centred inputs
transposed) over chunks of :data:`SPAN`, the chunk sums added in float64.

Tasks are fixed blocks of rows and every sum has a fixed order, so results do
not depend on the number of threads. Squared distances, products and the
per-element math run in the compute dtype (float32 loops stay 8 lanes wide);
row sums are accumulated in float64 (:func:`.reduce.block_sum`).
"""

import functools
import math

import numpy as np
from numba import prange

from .._options import CPU_FASTMATH, ERROR_MODEL, SUM_FASTMATH
from ..cache import njit_cached
from ..sdml_math import dist_grad, kl_term
from ..vmath import vexp
from .compile import cache_key, compile_kernel
from .reduce import block_sum

ROWS = 32  # rows of x1 (and of dx1 / dx2) per task: each task streams x2 (or its transpose) once
COLS = 16  # rows of x2 per distance tile (16 KiB at D = 256 float32: stays in L1 while x1 rows pass)
SPAN = 1024  # length of the reduction chunks of the gradient products

# The tiles are sums: compiled on their own with ``reassoc`` so LLVM vectorises them.
_TILE = {"fastmath": set(SUM_FASTMATH), "error_model": ERROR_MODEL}


@njit_cached(**_TILE)
def sqdist_2x4(a0, a1, b0, b1, b2, b3, d):
    """Squared distances of rows ``a0, a1`` to rows ``b0..b3`` (length ``d``), row-major 2x4."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = a0.dtype.type(0)
    for k in range(d):
        u = a0[k]
        v = a1[k]
        t0 = b0[k]
        t1 = b1[k]
        t2 = b2[k]
        t3 = b3[k]
        s00 += (u - t0) * (u - t0)
        s01 += (u - t1) * (u - t1)
        s02 += (u - t2) * (u - t2)
        s03 += (u - t3) * (u - t3)
        s10 += (v - t0) * (v - t0)
        s11 += (v - t1) * (v - t1)
        s12 += (v - t2) * (v - t2)
        s13 += (v - t3) * (v - t3)
    return s00, s01, s02, s03, s10, s11, s12, s13


@njit_cached(**_TILE)
def sqdist_1(a, b, d):
    """Squared distance of rows ``a`` and ``b`` (length ``d``)."""
    s = a.dtype.type(0)
    for k in range(d):
        t = a[k] - b[k]
        s += t * t
    return s


# The dot tiles run over a chunk [j0, j1) of long rows: they take whole 2-D arrays and row
# numbers (no row views to build per call) and index with unsigned integers (no
# negative-index wraparound, so the loads vectorise).
@njit_cached(**_TILE)
def dot_2x4(a, r, b, k, j0, j1):
    """Dot products of rows ``r, r+1`` of ``a`` with rows ``k..k+3`` of ``b`` over ``[j0, j1)``, row-major 2x4."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = a.dtype.type(0)
    r0 = np.uint64(r)
    r1 = r0 + np.uint64(1)
    k0 = np.uint64(k)
    k1 = k0 + np.uint64(1)
    k2 = k0 + np.uint64(2)
    k3 = k0 + np.uint64(3)
    for j_ in range(j0, j1):
        j = np.uint64(j_)
        u = a[r0, j]
        v = a[r1, j]
        t0 = b[k0, j]
        t1 = b[k1, j]
        t2 = b[k2, j]
        t3 = b[k3, j]
        s00 += u * t0
        s01 += u * t1
        s02 += u * t2
        s03 += u * t3
        s10 += v * t0
        s11 += v * t1
        s12 += v * t2
        s13 += v * t3
    return s00, s01, s02, s03, s10, s11, s12, s13


@njit_cached(**_TILE)
def dot_1(a, r, b, k, j0, j1):
    """Dot product of row ``r`` of ``a`` and row ``k`` of ``b`` over ``[j0, j1)``."""
    s = a.dtype.type(0)
    r0 = np.uint64(r)
    k0 = np.uint64(k)
    for j_ in range(j0, j1):
        j = np.uint64(j_)
        s += a[r0, j] * b[k0, j]
    return s


_KERNEL = {"fastmath": set(CPU_FASTMATH), "error_model": ERROR_MODEL}


@njit_cached(**_KERNEL)
def _dist_block(x1, x2, i0, i1, blk):
    """``blk[i - i0, j] = dist[i, j]`` for rows ``i0 <= i < i1``, tiles of :data:`COLS` rows of ``x2``."""
    n, d = x2.shape
    for j0 in range(0, n, COLS):
        j1 = min(j0 + COLS, n)
        j4 = j0 + (j1 - j0) // 4 * 4
        i = i0
        while i + 1 < i1:
            r = i - i0
            a0 = x1[i]
            a1 = x1[i + 1]
            for j in range(j0, j4, 4):
                s = sqdist_2x4(a0, a1, x2[j], x2[j + 1], x2[j + 2], x2[j + 3], d)
                blk[r, j] = s[0]
                blk[r, j + 1] = s[1]
                blk[r, j + 2] = s[2]
                blk[r, j + 3] = s[3]
                blk[r + 1, j] = s[4]
                blk[r + 1, j + 1] = s[5]
                blk[r + 1, j + 2] = s[6]
                blk[r + 1, j + 3] = s[7]
            for j in range(j4, j1):
                blk[r, j] = sqdist_1(a0, x2[j], d)
                blk[r + 1, j] = sqdist_1(a1, x2[j], d)
            i += 2
        if i < i1:
            for j in range(j0, j1):
                blk[i - i0, j] = sqdist_1(x1[i], x2[j], d)


@njit_cached(**_KERNEL)
def _products(a, bt, r0, r1, acc):
    """``acc[r - r0, k] += sum_j a[r, j] * bt[k, j]`` for rows ``r0 <= r < r1`` (float64 ``acc``)."""
    n = a.shape[1]
    d = bt.shape[0]
    d4 = d // 4 * 4
    for j0 in range(0, n, SPAN):
        j1 = min(j0 + SPAN, n)
        for k in range(0, d4, 4):
            r = r0
            while r + 1 < r1:
                s = dot_2x4(a, r, bt, k, j0, j1)
                u = r - r0
                acc[u, k] += s[0]
                acc[u, k + 1] += s[1]
                acc[u, k + 2] += s[2]
                acc[u, k + 3] += s[3]
                acc[u + 1, k] += s[4]
                acc[u + 1, k + 1] += s[5]
                acc[u + 1, k + 2] += s[6]
                acc[u + 1, k + 3] += s[7]
                r += 2
            if r < r1:
                for q in range(k, k + 4):
                    acc[r - r0, q] += dot_1(a, r, bt, q, j0, j1)
        for k in range(d4, d):
            for r in range(r0, r1):
                acc[r - r0, k] += dot_1(a, r, bt, k, j0, j1)


@njit_cached(**_KERNEL)
def _transpose_8x8(src, shift, dst, i0, j0, t0):
    """``dst[j, t0 + a] = src[i0 + a, j] - shift[j]`` for ``a < 8`` and ``j0 <= j < j0 + 8``."""
    i0 = np.uint64(i0)  # unsigned: no negative-index wraparound in the inner loops
    j0 = np.uint64(j0)
    t0 = np.uint64(t0)
    for a_ in range(8):
        a = np.uint64(a_)
        row = src[i0 + a]
        for b_ in range(8):
            b = np.uint64(b_)
            dst[j0 + b, t0 + a] = row[j0 + b] - shift[j0 + b]


@njit_cached(**_KERNEL)
def _transpose_rows(src, i0, i1, shift, dst, t0):
    """``dst[j, t0 + i - i0] = src[i, j] - shift[j]`` for rows ``i0 <= i < i1`` of ``src``, all columns."""
    m = src.shape[1]
    i8 = i0 + (i1 - i0) // 8 * 8
    m8 = m // 8 * 8
    for j0 in range(0, m8, 8):
        for a in range(i0, i8, 8):
            _transpose_8x8(src, shift, dst, a, j0, t0 + a - i0)
    for i in range(i0, i1):
        for j in range(m8 if i < i8 else 0, m):
            dst[j, t0 + i - i0] = src[i, j] - shift[j]


@functools.cache
def build_sdml_kernels(parallel):
    """Compile-on-first-call SDMLLoss kernels, ``(rows_kernel, cols_kernel)``.

    Parameters
    ----------
    parallel : bool
        ``prange`` over row blocks (threads) or serial loops for small inputs.

    Returns
    -------
    rows_kernel : numba dispatcher
        ``rows_kernel(x1, x2, qd, qo, log_qd, log_qo, r, g, want_grad, out, gt, zeros, c, x1t, x2t, dx1)``.
        ``x1``, ``x2``: C-contiguous ``(n, d)`` in the compute dtype; ``qd``,
        ``qo``: the diagonal and off-diagonal targets, ``log_qd``, ``log_qo``
        their :math:`\\log(q + 10^{-12})`, ``r`` the row sum of the targets,
        ``g`` the head gradient ``(n,)``, all in the compute dtype. Writes
        ``out`` ``(n,)``. When ``want_grad``, also the scratch arrays ``gt``
        ``(n, n)`` (:math:`G^T`; each task keeps its rows of :math:`G` in its
        distance block), ``c`` ``(d,)`` (the centring vector), ``x1t``, ``x2t``
        ``(d, n)`` (the inputs minus ``c``, transposed), and the gradient
        ``dx1`` ``(n, d)``; ``zeros`` is ``(n,)`` of zeros. Otherwise those
        arrays may be dummies.
    cols_kernel : numba dispatcher
        ``cols_kernel(x2, gt, c, x1t, dx2)`` with the arrays the rows kernel
        wrote; writes ``dx2`` ``(n, d)``.
    """
    rows = ROWS
    key = cache_key(parallel)  # see .compile

    def sdml_rows_kernel(x1, x2, qd, qo, log_qd, log_qo, r, g, want_grad, out, gt, zeros, c, x1t, x2t, dx1):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n, d = x1.shape
        n_tasks = (n + rows - 1) // rows
        if want_grad:
            # Centring vector: column means of x2 (0 where not finite, e.g. inf inputs).
            cs = np.zeros(d)
            for i in range(n):
                for k in range(d):
                    cs[k] += x2[i, k]
            for k in range(d):
                v = cs[k] / n
                c[k] = v if math.isfinite(v) else 0.0
            for t in prange(n_tasks):
                i0 = t * rows
                i1 = min(i0 + rows, n)
                _transpose_rows(x1, i0, i1, c, x1t, i0)
                _transpose_rows(x2, i0, i1, c, x2t, i0)
        for t in prange(n_tasks):
            i0 = t * rows
            i1 = min(i0 + rows, n)
            blk = np.empty((i1 - i0, n), dtype=x1.dtype)  # distances, then logits, then G
            ebuf = np.empty(n, dtype=x1.dtype)  # exp of the shifted logits
            tbuf = np.empty(n, dtype=x1.dtype)  # KL terms
            rs = np.empty(i1 - i0)  # row sums of G
            _dist_block(x1, x2, i0, i1, blk)
            for i in range(i0, i1):
                row = blk[i - i0]
                # m: the smallest distance (the largest logit), NaN skipped; a NaN
                # distance makes the whole row NaN through the sum below anyway.
                m = row[0]
                for j in range(1, n):
                    if row[j] < m or m != m:
                        m = row[j]
                for j_ in range(n):
                    j = np.uint64(j_)
                    v = m - row[j]
                    row[j] = v  # the shifted logit
                    ebuf[j] = vexp(v)
                total = block_sum(ebuf, n)
                lse = x1.dtype.type(math.log(total))
                for j_ in range(n):
                    j = np.uint64(j_)
                    tbuf[j] = kl_term(qo, log_qo, row[j] - lse)
                tbuf[i] = kl_term(qd, log_qd, row[i] - lse)
                out[i] = block_sum(tbuf, n)
                if want_grad:
                    gi = g[i]
                    inv = x1.dtype.type(1.0 / total)  # P = e / total
                    grow = row  # G overwrites the logits
                    for j_ in range(n):
                        j = np.uint64(j_)
                        grow[j] = dist_grad(gi, qo, r, ebuf[j] * inv)
                    grow[i] = dist_grad(gi, qd, r, ebuf[i] * inv)
                    rs[i - i0] = block_sum(grow, n)
            if want_grad:
                # While this block of G is in cache: its columns of G^T, and dx1.
                _transpose_rows(blk, 0, i1 - i0, zeros, gt, i0)
                acc = np.zeros((i1 - i0, d))
                _products(blk, x2t, 0, i1 - i0, acc)
                for i in range(i0, i1):
                    ri = rs[i - i0]
                    for k in range(d):
                        dx1[i, k] = 2.0 * (ri * (x1[i, k] - c[k]) - acc[i - i0, k])

    def sdml_cols_kernel(x2, gt, c, x1t, dx2):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n, d = x2.shape
        n_tasks = (n + rows - 1) // rows
        for t in prange(n_tasks):
            j0 = t * rows
            j1 = min(j0 + rows, n)
            acc = np.zeros((j1 - j0, d))
            _products(gt, x1t, j0, j1, acc)
            for j in range(j0, j1):
                cj = block_sum(gt[j], n)  # column sum of G
                for k in range(d):
                    dx2[j, k] = -2.0 * (acc[j - j0, k] - cj * (x2[j, k] - c[k]))

    return compile_kernel(sdml_rows_kernel, "sdml_rows", parallel), compile_kernel(
        sdml_cols_kernel, "sdml_cols", parallel
    )
