"""TripletLoss and CosineEmbeddingLoss CPU kernels (``@njit``, ``prange`` over rows).

Both kernels make one pass over each row for its sums (float64 SIMD lanes:
:func:`.reduce.block_sum` for TripletLoss, :func:`cosine_sums` for the three
sums of CosineEmbeddingLoss; both compiled on their own with ``SUM_FASTMATH``
so the ``reassoc`` flag stays on the sums), evaluate the row head of
:mod:`..pairwise_math`, and, for the gradient, a second pass over the same
row (still in cache).
Rows are split across threads in tasks of whole rows (about ``CHUNK``
elements per task), so results do not depend on the thread count.

:func:`build_triplet_kernel` works on the canonical layout
``(n_outer, n_rows, n_inner)`` (the batch axis in the middle, any C-contiguous
array and any ``batch_axis`` reshape to it without a copy). When
``n_inner == 1`` (the batch axis is the last one, or 1-D inputs) a task sums
a block of rows side by side, column by column, so loads stay contiguous.

:func:`build_cosine_kernel` works on ``(n_src, k)`` vectors (the last axis),
with ``n_src`` equal to the number of output rows or 1 (one vector broadcast
to every label).
"""

import functools

import numpy as np
from numba import prange

from .._options import BLOCK, CHUNK, ERROR_MODEL, NO_WRAPPERS, SUM_FASTMATH
from ..cache import njit_cached
from ..pairwise_math import cosine_grad, cosine_head, triplet_grads, triplet_head, triplet_term
from ..vmath import like
from .compile import cache_key, compile_kernel
from .reduce import block_sum


@njit_cached(fastmath=set(SUM_FASTMATH), error_model=ERROR_MODEL, **NO_WRAPPERS)
def cosine_sums(a, b, src, k):
    """``(a.b, |a|^2, |b|^2)`` of row ``src`` in float64 lanes (``SUM_FASTMATH``: vectorised, fixed order).

    ``a * b`` is rounded to the compute dtype (MXNet's elementwise product);
    the squares are taken in float64, so the norms neither overflow nor
    underflow for float32 data (MXNet's norm is scaled for that reason).
    """
    s_ab = 0.0
    s_aa = 0.0
    s_bb = 0.0
    for i_ in range(k):
        i = np.uint64(i_)  # unsigned: no negative-index wraparound, so loads vectorise
        av = a[src, i]
        bv = b[src, i]
        s_ab += av * bv
        a64 = np.float64(av)
        b64 = np.float64(bv)
        s_aa += a64 * a64
        s_bb += b64 * b64
    return s_ab, s_aa, s_bb


@functools.cache
def build_triplet_kernel(parallel):
    """Compile-on-first-call TripletLoss kernel, parallel or serial.

    Returns
    -------
    numba dispatcher
        ``kernel(x, p, n, margin, w, g, want_grad, out, dx, dp, dn)``: ``x``,
        ``p``, ``n`` (and ``dx``, ``dp``, ``dn`` when ``want_grad``) of shape
        ``(n_outer, n_rows, n_inner)`` in the compute dtype; ``margin`` and
        ``w`` scalars and ``g`` (head gradient, ``(n_rows,)``) in it too.
        Writes ``out[b] = w relu(s_b + margin)`` and the three gradients.
    """
    block = BLOCK
    chunk = CHUNK
    key = cache_key(parallel)  # see .compile

    def triplet(x, p, n, margin, w, g, want_grad, out, dx, dp, dn):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n_outer, n_rows, n_inner = x.shape
        group = max(1, chunk // max(1, n_outer * n_inner))  # rows per task
        for t in prange((n_rows + group - 1) // group):
            b0 = t * group
            b1 = min(b0 + group, n_rows)
            if n_inner == 1:
                # Rows side by side: each column o is contiguous along b.
                acc = np.zeros(b1 - b0, dtype=np.float64)
                for o in range(n_outer):
                    for b in range(b0, b1):
                        acc[b - b0] += triplet_term(x[o, b, 0], p[o, b, 0], n[o, b, 0])
                ms = np.empty(b1 - b0, dtype=x.dtype)
                for b in range(b0, b1):
                    out[b], ms[b - b0] = triplet_head(acc[b - b0], margin, w, g[b])
                if want_grad:
                    for o in range(n_outer):
                        for b in range(b0, b1):
                            dx[o, b, 0], dp[o, b, 0], dn[o, b, 0] = triplet_grads(
                                x[o, b, 0], p[o, b, 0], n[o, b, 0], ms[b - b0]
                            )
                continue
            buf = np.empty(block, dtype=x.dtype)
            for b in range(b0, b1):
                s = 0.0
                for o in range(n_outer):
                    for j0 in range(0, n_inner, block):
                        j1 = min(j0 + block, n_inner)
                        for i_ in range(j0, j1):
                            i = np.uint64(i_)  # unsigned: no negative-index wraparound, so loads vectorise
                            buf[i_ - j0] = triplet_term(x[o, b, i], p[o, b, i], n[o, b, i])
                        s += block_sum(buf, j1 - j0)
                out[b], m = triplet_head(s, margin, w, g[b])
                if want_grad:
                    for o in range(n_outer):
                        for i_ in range(n_inner):
                            i = np.uint64(i_)
                            dx[o, b, i], dp[o, b, i], dn[o, b, i] = triplet_grads(x[o, b, i], p[o, b, i], n[o, b, i], m)

    return compile_kernel(triplet, "triplet", parallel, serial=lambda: build_triplet_kernel(False))


@functools.cache
def build_cosine_kernel(parallel):
    """Compile-on-first-call CosineEmbeddingLoss kernel, parallel or serial.

    Returns
    -------
    numba dispatcher
        ``kernel(a, b, code, margin, g, rsw, w, want_grad, out, da, db)``:
        ``a``, ``b`` of shape ``(n_src, k)`` in the compute dtype, ``n_src``
        equal to ``n_rows = out.shape[0]`` or 1; ``code`` int8 label codes
        (1, -1, 0) and ``g``, ``rsw`` (head gradient, per-row sample weight)
        of shape ``(n_rows,)``; ``margin``, ``w`` scalars. Writes
        ``out[r] = (loss_r * rsw[r]) * w`` and, when ``want_grad``, ``da``,
        ``db`` of shape ``(n_rows, k)`` for the head ``(g[r] * w) * rsw[r]``.
    """
    chunk = CHUNK
    key = cache_key(parallel)  # see .compile

    def cosine(a, b, code, margin, g, rsw, w, want_grad, out, da, db):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n_src, k = a.shape
        n_rows = out.shape[0]
        group = max(1, chunk // max(1, k))
        for t in prange((n_rows + group - 1) // group):
            r0 = t * group
            r1 = min(r0 + group, n_rows)
            for r in range(r0, r1):
                src = r if n_src == n_rows else 0
                s_ab, s_aa, s_bb = cosine_sums(a, b, src, k)
                na = like(margin, np.sqrt(s_aa))
                nb = like(margin, np.sqrt(s_bb))
                sw = rsw[r]
                loss, ddot, dna, dnb = cosine_head(like(margin, s_ab), na, nb, code[r], margin, (g[r] * w) * sw)
                out[r] = (loss * sw) * w
                if want_grad:
                    for i_ in range(k):
                        i = np.uint64(i_)
                        av = a[src, i]
                        bv = b[src, i]
                        da[r, i] = cosine_grad(av, bv, ddot, dna, na)
                        db[r, i] = cosine_grad(bv, av, ddot, dnb, nb)

    return compile_kernel(cosine, "cosine", parallel, serial=lambda: build_cosine_kernel(False))
