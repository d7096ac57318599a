r"""SDMLLoss CPU kernel: squared distances from a matrix product, row softmax / KL, :math:`G`.

The host runner (:mod:`numba_losses._cpu.sdml`) centres the inputs
(:math:`a = x_1 - c`, :math:`b = x_2 - c`; distances do not change) and takes
the product :math:`P = a b^T` with BLAS; the gradients are two more products
with :math:`G`. :func:`build_sdml_kernels` builds the part in between, which is
elementwise over the :math:`N \times N` matrix, in one pass per row:

.. math::

    d_{ij} = \max\big(0,\ \|a_i\|^2 + \|b_j\|^2 - 2 P_{ij}\big),

then the max-shifted log-softmax of :math:`-d`, the KL value and, for the
gradient, :math:`G_{ij}` (:mod:`..sdml_math`), written over :math:`P`, with
its row sums and, per task, its column sums. Where a squared norm is not
finite (inf or NaN inputs, overflow), and where :math:`d_{ij}` is below
:data:`..sdml_math.NEAR` times :math:`\|a_i\|^2 + \|b_j\|^2` (the expansion cancels: close
pairs far from the centre), the distance is summed directly,
:math:`\sum_k (a_{ik} - b_{jk})^2`; so distances keep the relative accuracy of the
direct formula within a factor of about :math:`1 / \mathrm{NEAR}`, and non-finite
inputs give its values. Typical inputs need a direct sum for a pair's own
distance at most (:math:`O(N D)` in all); a row whose only such entry is its own
pair's takes it without a second scan of the row.

Tasks are fixed blocks of :data:`ROWS` rows and every sum has a fixed order, so
this kernel's results do not depend on the number of threads (the BLAS
products may change in the last bits with the BLAS's own thread count). The per-element math runs in
the compute dtype (float32 loops stay 8 lanes wide); norms, row and column sums
are accumulated in float64.
"""

import functools
import math

import numpy as np
from numba import prange

from .._options import ERROR_MODEL, NO_WRAPPERS, SUM_FASTMATH
from ..cache import njit_cached
from ..sdml_math import NEAR, dist_grad, expanded_dist, kl_term
from ..vmath import vexp_nonpos_ftz
from .compile import cache_key, compile_kernel
from .fmax import minnum, minnum_no_nan, range_min
from .reduce import block_sum

ROWS = 32  # rows per task (and per block of column sums)

# The sums are compiled on their own with ``reassoc`` so LLVM vectorises them.
_SUM = {"fastmath": set(SUM_FASTMATH), "error_model": ERROR_MODEL, **NO_WRAPPERS}


@njit_cached(**_SUM)
def sq_norm(a, d):
    """:math:`\\sum_k a_k^2` of a row of length ``d``, accumulated in float64."""
    s = 0.0
    for k in range(d):
        s += a[k] * a[k]
    return s


@njit_cached(**_SUM)
def sq_dist(a, b, d):
    """Squared distance of rows ``a`` and ``b`` (length ``d``), summed directly in float64."""
    s = 0.0
    for k in range(d):
        t = a[k] - b[k]
        s += t * t
    return s


@njit_cached(**_SUM)
def add_to(acc, row, n):
    """``acc[:n] += row[:n]`` (float64 ``acc``)."""
    for j in range(n):
        acc[j] += row[j]


@njit_cached(error_model=ERROR_MODEL)
def centre_into(x1, x2, a, b):
    """``a = x1 - c``, ``b = x2 - c`` for C-contiguous ``(n, d)`` arrays of the compute dtype.

    ``c`` is the mean of all :math:`2n` rows, summed in float64 row after row
    (the order of NumPy's ``sum(axis=0)``, as :func:`numba_losses._plan.sdml.centred`
    does for device arrays), rounded to the compute dtype, and 0 where it is not
    finite (inf or NaN inputs). Two passes over the inputs instead of about ten
    NumPy calls: at small shapes those cost more than the whole kernel.
    """
    n, d = x1.shape
    dt = a.dtype.type
    s1 = np.zeros(d)
    s2 = np.zeros(d)
    for i in range(n):
        for k in range(d):
            s1[k] += x1[i, k]
            s2[k] += x2[i, k]
    count = max(2 * n, 1)
    c = np.empty(d, dtype=a.dtype)
    for k in range(d):
        v = (s1[k] + s2[k]) / count
        c[k] = dt(v) if math.isfinite(v) else dt(0.0)
    for i in range(n):
        for k in range(d):
            a[i, k] = x1[i, k] - c[k]
            b[i, k] = x2[i, k] - c[k]


@njit_cached(error_model=ERROR_MODEL)
def finish_gradients(dx1, dx2, a, b, rs, cs):
    r"""The gradients from the two products: ``dx1 = 2 (rs a - G b)``, ``dx2 = 2 (gamma b - G^T a)``.

    On entry ``dx1`` holds :math:`G b` and ``dx2`` :math:`G^T a` (BLAS); ``rs``
    are the float64 row sums of :math:`G` and ``cs`` the column sums of its
    row blocks, summed here in block order to :math:`\gamma`. The factors
    :math:`2 \rho_i` and :math:`2 \gamma_j` are rounded to the compute dtype.
    """
    n, d = a.shape
    dt = a.dtype.type
    minus_two = dt(-2.0)
    for i in range(n):
        r = dt(2.0 * rs[i])
        for k in range(d):
            dx1[i, k] = minus_two * dx1[i, k] + r * a[i, k]
    for j in range(n):
        s = 0.0
        for t in range(cs.shape[0]):
            s += cs[t, j]
        r = dt(2.0 * s)
        for k in range(d):
            dx2[j, k] = minus_two * dx2[j, k] + r * b[j, k]


@functools.cache
def build_sdml_kernels(parallel):
    """Compile-on-first-call SDMLLoss kernel, ``rows_kernel``.

    Parameters
    ----------
    parallel : bool
        ``prange`` over row blocks (threads) or serial loops for small inputs.

    Returns
    -------
    rows_kernel : numba dispatcher
        ``rows_kernel(p, a, b, qd, qo, log_qd, log_qo, r, g, want_grad, out, rs, cs)``.
        ``a``, ``b``: the centred inputs, C-contiguous ``(n, d)`` in the compute
        dtype; ``p`` ``(n, n)``: :math:`a b^T`, overwritten (with :math:`G` when
        ``want_grad``). ``qd``, ``qo``: the diagonal and off-diagonal targets,
        ``log_qd``, ``log_qo`` their :math:`\\log(q + 10^{-12})`, ``r`` the row
        sum of the targets, ``g`` the head gradient ``(n,)``, all in the compute
        dtype. Writes ``out`` ``(n,)`` and, when ``want_grad``, the float64 row
        sums of :math:`G` ``rs`` ``(n,)`` and the column sums of its row blocks
        ``cs`` ``(ceil(n / ROWS), n)`` (summed over blocks by the caller);
        otherwise ``rs`` and ``cs`` may be dummies.
    """
    rows = ROWS
    near_frac = NEAR
    key = cache_key(parallel)  # see .compile

    def sdml_rows_kernel(p, a, b, qd, qo, log_qd, log_qo, r, g, want_grad, out, rs, cs):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n, d = a.shape
        dt = a.dtype.type
        zero = dt(0.0)
        frac = dt(near_frac)
        inf = dt(np.inf)
        na = np.empty(n, dtype=a.dtype)
        nb = np.empty(n, dtype=a.dtype)
        for i in prange(n):
            na[i] = dt(sq_norm(a[i], d))
            nb[i] = dt(sq_norm(b[i], d))
        bad = np.empty(n, dtype=np.int64)  # columns whose norm is not finite: direct distances
        n_bad = 0
        for j in range(n):
            if not math.isfinite(nb[j]):
                bad[n_bad] = j
                n_bad += 1
        n_tasks = (n + rows - 1) // rows
        for t in prange(n_tasks):
            i0 = t * rows
            i1 = min(i0 + rows, n)
            ebuf = np.empty(n, dtype=a.dtype)  # exp of the shifted logits
            tbuf = np.empty(n, dtype=a.dtype)  # KL terms
            if want_grad:
                cs[t, :] = 0.0
            for i in range(i0, i1):
                row = p[i]  # a_i . b_j, then distances, logits and G
                ni = na[i]
                # m: the smallest distance (the largest logit), NaN skipped (+inf when every
                # distance is NaN); a NaN distance makes the whole row NaN through the sum below.
                m = inf
                if math.isfinite(ni):
                    near = 0  # distances below NEAR * (|a_i|^2 + |b_j|^2): summed again, directly
                    for j_ in range(n):
                        j = np.uint64(j_)  # unsigned: no wraparound checks, the loop vectorises
                        s = ni + nb[j]
                        v = expanded_dist(s, row[j], zero)
                        row[j] = v
                        near += 1 if v < frac * s else 0
                        m = minnum_no_nan(m, minnum(v, inf))
                    if near == 1 and row[i] < frac * (ni + nb[i]):  # the row's own pair only (typical)
                        row[i] = dt(sq_dist(a[i], b[i], d))
                    elif near:
                        for j in range(n):
                            if row[j] < frac * (ni + nb[j]):
                                row[j] = dt(sq_dist(a[i], b[j], d))
                    for u in range(n_bad):
                        j = bad[u]
                        row[j] = dt(sq_dist(a[i], b[j], d))
                    if near or n_bad:
                        m = range_min(row, 0, n, inf)
                else:
                    for j in range(n):
                        row[j] = dt(sq_dist(a[i], b[j], d))
                    m = range_min(row, 0, n, inf)
                for j_ in range(n):
                    j = np.uint64(j_)
                    v = m - row[j]
                    row[j] = v  # the shifted logit: <= 0 (or NaN)
                    # Flushed below 2**-126.5 in float32: most logits of a row sit far below its
                    # maximum (a distance of hundreds), and subnormal results cost a microcode assist
                    # each (8 ns a logit instead of 0.5). The row sum it feeds is at least 1.
                    ebuf[j] = vexp_nonpos_ftz(v)
                total = block_sum(ebuf, n)
                lse = dt(math.log(total))
                for j_ in range(n):
                    j = np.uint64(j_)
                    tbuf[j] = kl_term(qo, log_qo, row[j] - lse)
                tbuf[i] = kl_term(qd, log_qd, row[i] - lse)
                out[i] = block_sum(tbuf, n)
                if want_grad:
                    gi = g[i]
                    inv = dt(1.0 / total)  # P = e / total
                    for j_ in range(n):
                        j = np.uint64(j_)
                        row[j] = dist_grad(gi, qo, r, ebuf[j] * inv)
                    row[i] = dist_grad(gi, qd, r, ebuf[i] * inv)
                    rs[i] = block_sum(row, n)
                    add_to(cs[t], row, n)

    return compile_kernel(sdml_rows_kernel, "sdml_rows", parallel, serial=lambda: build_sdml_kernels(False))
