r"""CTC loss CPU kernels: fused log-softmax, log-space forward-backward, gradient.

Notation of docs/semantics.rst section 7: sample :math:`b` has :math:`T_b` frames of
:math:`C` activations, a label of length :math:`L` and the extended label
:math:`l'` of length :math:`S = 2L + 1` (blanks at even positions).
Activations are read as rows of ``x``, a ``(rows, C)`` array: frame ``t`` of
sample ``b`` is row ``b * sb + t * st`` (``sb, st = T, 1`` for NTC data,
``1, N`` for TNC), so both layouts are read in place. The gradient ``dx`` has
its own row strides.

One kernel (:func:`build_ctc_kernel`, one call) in two phases, each a
parallel loop:

1. over all frames (:func:`_frames_task`): the row maximum :math:`m` and
   :math:`\sigma = \log \sum_k e^{x_k - m}` of frames ``t < T_b`` (one
   blocked pass, vectorised ``exp``; the sum is rounded to the compute dtype
   before the log, as a float32 sum would be), and for the gradient the
   softmax term :math:`c_b\, e^{\mathrm{lp}_t(k)}` of every class (zero
   beyond the gradient mask and for infeasible samples). The full
   log-softmax is never stored.
2. over samples (:func:`_paths_sample`), in scratch of the sample alone
   (it stays in cache): the log-probabilities of the label's classes,
   :math:`\mathrm{lp}_t(s) = (x_{l'_s} - m) - \sigma`, a ``(T_b, S)`` block
   (above :data:`GATHER_EARLY_ABOVE` classes phase 1 gathers them instead,
   while the frame is in cache);
   the recursions for :math:`\alpha` (forward) and :math:`\beta` (backward,
   warp-ctc's convention including the emission at ``t``) in log space, one
   column of ``S`` at a time (vectorised along ``s``: a column depends only
   on the previous one), and the cost :math:`-\log p`. For the gradient,
   :math:`\gamma_t(k) = \mathrm{lse}_{s: l'_s = k}\, \alpha_t(s) + \beta_t(s)`
   for the blank and each distinct label class, in increasing ``s`` as
   warp-ctc does, vectorised along ``t`` over tiles of frames transposed in
   cache; each class's :math:`\gamma` then replaces its softmax term on the
   tile's frames by section 7's rule (warp-ctc's ``== 0.0`` branch
   included, :func:`_class_grad`).

Log-space addition follows section 7: ``lse(a, b) = b`` if ``a == -inf``, ``a``
if ``b == -inf``, else :math:`\max + \log(1 + e^{-|a - b|})`; it is written
branch-free (selects) so the column loops vectorise, bit-identical to
:func:`..vmath.softplus_neg` for :math:`\log(1 + e^{-x})` but without its
subnormal intermediates (see :func:`log_add`).
"""

import functools

import numpy as np
from numba import prange, types
from numba.extending import overload, register_jitable

from .._options import HELPER
from ..vmath import like, log1p_unit, vexp, vexp_nonpos
from .compile import cache_key, compile_kernel
from .softmax import BLOCK, log_of_sum, row_max_sum_exp, rows_per_task

# Above this many classes, phase 1 gathers the label log-probabilities while the frame is in cache
# (into one array for the batch); at most this many, phase 2 gathers them into the sample's scratch.
GATHER_EARLY_ABOVE = 1024
# Frames per tile of the gamma pass (a tile of alpha + beta, S x GAMMA_TILE, is transposed in L1).
GAMMA_TILE = 64
# The recursions' rows are padded to a multiple of this many states: the width of the column
# loops' vectors (8 float32 lanes; twice float64's 4). Padding to 16 was slower for short labels.
PAD = 8


def _softplus_limits(x):
    """``(exact, flush)`` of :func:`log_add` in the precision of ``x``."""
    return (17.0, 87.0) if isinstance(x, np.float32) else (40.0, 708.0)


@overload(_softplus_limits, jit_options=HELPER)
def _softplus_limits_impl(x):
    if x == types.float32:
        return lambda x: (np.float32(17.0), np.float32(87.0))
    return lambda x: (40.0, 708.0)


# |max(a, b)| from which a term below the smallest normal number cannot change the sum
_NEGLIGIBLE_BELOW = 2.0**-60


@register_jitable(**HELPER)
def log_add(a, b):
    r"""docs/semantics.rst section 7's ``lse(a, b)`` in the arguments' precision (NaN in gives NaN out).

    Bit-identical to ``max(a, b) + softplus_neg(d)``, :math:`d = |a - b|`
    (:func:`..vmath.softplus_neg`), with the same steps arranged so that no
    intermediate is subnormal unless the result needs one (a subnormal costs a
    microcode assist per vector instruction on x86, which made the recursions
    several times slower):

    * for :math:`d` above ``exact`` (17 in float32, 40 in float64) the
      logarithm rounds to :math:`e^{-d}` itself (checked for every float32 and
      a sample of float64 up to overflow), so that is the term and the
      logarithm's polynomial runs on a harmless stand-in;
    * above ``flush`` (87, 708) :math:`e^{-d}` is subnormal; it cannot change
      a maximum of magnitude at least :math:`2^{-60}`, so there
      :math:`e^{-\mathrm{flush}}` (normal, and as negligible) is added
      instead. Only a maximum closer to zero (a saturated float32 path, whose
      log-probability is a subnormal) takes the subnormal term.
    """
    hi = a if a > b else b
    lo = b if a > b else a
    d = hi - lo
    exact, flush = _softplus_limits(d)
    negligible = abs(hi) >= like(d, _NEGLIGIBLE_BELOW)  # False for NaN
    e = vexp_nonpos(-(flush if (d > flush and negligible) else d))  # d >= 0; NaN stays NaN
    el = like(d, 0.5) if d > exact else e
    r = hi + (e if d > exact else log1p_unit(el))  # softplus_neg's logarithm
    r = a if b == -np.inf else r
    return b if a == -np.inf else r


@register_jitable(**HELPER)
def ext_class(lab, b, s, blank):
    """Class of position ``s`` of sample ``b``'s extended label."""
    return blank if s % 2 == 0 else lab[b, s // 2]


@register_jitable(**HELPER)
def padded(n_s):
    """The row length of the recursions for ``n_s`` states: the next multiple of :data:`PAD`."""
    return (n_s + PAD - 1) // PAD * PAD


@register_jitable(**HELPER)
def _frames_task(
    task, per, n_frames, n_t, x, sb, st, tlen, gmask, feasible, m, logs, want_grad, coef, dx, dsb, dst,
    early, lab, llen, blank, offp, lpe_all,
):  # fmt: skip
    """Phase 1 for the frames ``[task * per, task * per + per)`` of the ``N * T`` grid."""
    n_classes = x.shape[1]
    n_blocks = (n_classes + BLOCK - 1) // BLOCK
    buf = np.empty(BLOCK, dtype=x.dtype)
    bmax = np.empty(n_blocks if n_blocks > 1 else 1, dtype=x.dtype)
    f1 = task * per + per  # ternaries, not min / max: those compile at a process's first call
    for f in range(task * per, f1 if f1 < n_frames else n_frames):
        b = f // n_t
        t = f - b * n_t
        if want_grad:
            dr = dx[b * dsb + t * dst]
            if not feasible[b] or t >= gmask[b]:
                for k in range(n_classes):
                    dr[k] = 0.0
        if t >= tlen[b]:
            continue
        xr = x[b * sb + t * st]
        mm, ssum = row_max_sum_exp(xr, buf, False, bmax)
        sr = float(like(mm, ssum))  # the sum rounded as a sum in the compute dtype would be
        ls = like(mm, log_of_sum(sr))
        m[b, t] = mm
        logs[b, t] = ls
        if early:  # the frame's row of the sample's padded (T_b, n_p) block, see _paths_sample
            n_s = 2 * llen[b] + 1
            n_p = padded(n_s)
            base = offp[b] + t * n_p
            for s in range(n_s):
                lpe_all[base + s] = (xr[ext_class(lab, b, s, blank)] - mm) - ls
            for s in range(n_s, n_p):
                lpe_all[base + s] = -np.inf
        if want_grad and feasible[b] and t < gmask[b]:
            c = coef[b]
            for k in range(n_classes):  # unsigned indices: the loop vectorises
                u = np.uint64(k)
                dr[u] = c * vexp_nonpos((xr[u] - mm) - ls)  # a log-probability: <= 0


@register_jitable(**HELPER)
def _paths_sample(
    b, x, sb, st, m, logs, tlen, gmask, lab, chain, first, llen, blank, feasible, zero_infinity, want_grad,
    coef, dx, dsb, dst, cost, early, offp, lpe_all,
):  # fmt: skip
    """Phase 2 for sample ``b``: ``lpe``, alpha and the cost; with ``want_grad``, beta, gamma and the
    label classes' gradient."""
    n_t = tlen[b]
    if not feasible[b]:
        cost[b] = 0.0 if zero_infinity else np.inf
        return
    if n_t == 0:  # L = 0 and no frame: the empty path, probability 1
        cost[b] = 0.0
        return
    n_lab = llen[b]
    n_s = 2 * n_lab + 1
    # Rows of the recursions are padded to n_p, a multiple of PAD, with -inf log-probabilities: the
    # column loops then have no scalar remainder (each remainder element cost as much as a whole
    # vector of them). A padded state only ever reads padded or real states and adds -inf, so it
    # stays -inf (or NaN after a NaN input), and no real state reads a padded one.
    n_p = padded(n_s)
    # the sample's label log-probabilities, (T_b, n_p): gathered by phase 1 (many classes), else
    # here into scratch of this sample alone (it stays in cache)
    ninf = x.dtype.type(-np.inf)
    if early:
        lpe = lpe_all[offp[b] : offp[b] + n_t * n_p]
    else:
        lpe = np.empty(n_t * n_p, dtype=x.dtype)
        for t in range(n_t):
            row = t * n_p
            xr = x[b * sb + t * st]
            mm = m[b, t]
            ls = logs[b, t]
            for s in range(n_s):
                lpe[row + s] = (xr[ext_class(lab, b, s, blank)] - mm) - ls
            for s in range(n_s, n_p):
                lpe[row + s] = ninf
    # skip[s]: alpha may come from s - 2; skipb[s]: beta may come from s + 2 (never for padding)
    # (np.empty and loops rather than np.zeros / np.full: fewer NumPy functions for Numba to
    # compile at a process's first call)
    skips = np.empty(2 * n_p, dtype=np.bool_)
    for s in range(2 * n_p):
        skips[s] = False
    skip = skips[:n_p]
    skipb = skips[n_p:]
    for s in range(n_s):
        k = ext_class(lab, b, s, blank)
        if k != blank and s != 1 and s >= 2:
            skip[s] = k != ext_class(lab, b, s - 2, blank)
        if k != blank and s != n_s - 2 and s + 2 < n_s:
            skipb[s] = k != ext_class(lab, b, s + 2, blank)
    # alpha; columns with two -inf on the left: col[s + 2] = alpha(s)
    cols = np.empty(2 * (n_p + 2), dtype=x.dtype)
    for s in range(2 * (n_p + 2)):
        cols[s] = ninf
    prev = cols[: n_p + 2]
    cur = cols[n_p + 2 :]
    one = np.uint64(1)
    two = np.uint64(2)
    ab = np.empty(n_t * n_p if want_grad else 0, dtype=x.dtype)  # alpha + beta, lpe's layout
    cur[2] = lpe[0]
    if n_s > 1:
        cur[3] = lpe[1]
    if want_grad:
        for s in range(n_s):
            ab[s] = cur[s + 2]
    for t in range(1, n_t):
        prev, cur = cur, prev  # both keep -inf in their two left entries
        row = t * n_p
        lp_t = lpe[row : row + n_p]
        # Unsigned indices: no negative-index wraparound, so the column loops vectorise. The
        # two log-adds of a position run in two loops: in one, the chain of dependent
        # operations is so long that the vector loop stalls on its latency.
        for s in range(n_p):
            u = np.uint64(s)
            cur[u + two] = log_add(prev[u + two], prev[u + one])
        for s in range(n_p):
            u = np.uint64(s)
            cur[u + two] = log_add(cur[u + two], prev[u] if skip[u] else ninf) + lp_t[u]
        if want_grad:
            ab_t = ab[row : row + n_p]
            for s in range(n_p):
                u = np.uint64(s)
                ab_t[u] = cur[u + two]
    llb = log_add(cur[n_s + 1], cur[n_s]) if n_s > 1 else cur[2]
    cost[b] = -llb
    if not want_grad:
        return
    # beta; columns with -inf from s = n_s on (padding included): col[s] = beta(s)
    for s in range(n_p + 2):
        cur[s] = ninf
        prev[s] = ninf
    row = (n_t - 1) * n_p
    cur[n_s - 1] = lpe[row + n_s - 1]
    if n_s > 1:
        cur[n_s - 2] = lpe[row + n_s - 2]
    for s in range(n_s):
        ab[row + s] += cur[s]
    for t in range(n_t - 2, -1, -1):
        prev, cur = cur, prev
        row = t * n_p
        lp_t = lpe[row : row + n_p]
        ab_t = ab[row : row + n_p]
        for s in range(n_p):
            u = np.uint64(s)
            cur[u] = log_add(prev[u], prev[u + one])
        for s in range(n_p):
            u = np.uint64(s)
            v = log_add(cur[u], prev[u + two] if skipb[u] else ninf) + lp_t[u]
            cur[u] = v
            ab_t[u] += v
    # gamma per class, vectorised along t over tiles of GAMMA_TILE frames transposed in L1, and
    # right away the gradient of that class on the tile's frames below the gradient mask
    c = coef[b]
    gm = gmask[b]
    tile = np.empty((n_s, GAMMA_TILE), dtype=x.dtype)
    g = np.empty(GAMMA_TILE, dtype=x.dtype)
    for t0 in range(0, n_t, GAMMA_TILE):
        w = n_t - t0 if n_t - t0 < GAMMA_TILE else GAMMA_TILE
        wg = gm - t0 if gm - t0 < w else w  # frames of the tile that get a gradient
        wg = wg if wg > 0 else 0
        for tt in range(w):
            row = (t0 + tt) * n_p
            ab_t = ab[row : row + n_s]
            for s in range(n_s):
                tile[s, tt] = ab_t[s]
        for tt in range(w):
            g[tt] = ninf
        for s in range(n_s):
            if ext_class(lab, b, s, blank) == blank:
                for tt in range(w):
                    g[tt] = log_add(g[tt], tile[s, tt])
        _class_grad(g, lpe, t0, wg, n_p, 0, blank, llb, c, dx, b, dsb, dst)
        for i in range(n_lab):
            if not first[b, i]:
                continue
            for tt in range(w):
                g[tt] = tile[2 * i + 1, tt]
            j = chain[b, i]
            while j >= 0:
                for tt in range(w):
                    g[tt] = log_add(g[tt], tile[2 * j + 1, tt])
                j = chain[b, j]
            _class_grad(g, lpe, t0, wg, n_p, 2 * i + 1, lab[b, i], llb, c, dx, b, dsb, dst)


@register_jitable(**HELPER)
def _class_grad(g, lpe, t0, wg, stride, s, k, llb, c, dx, b, dsb, dst):
    """Section 7's gradient of class ``k`` (first at position ``s``) on frames ``t0 .. t0 + wg``
    from its gamma ``g`` and log-probability ``lp`` (``lpe``'s rows are ``stride`` long;
    warp-ctc's ``== 0.0`` branch included): ``c (e^lp - e^(g - lp - ll))``, else the softmax term
    phase 1 wrote stays."""
    for tt in range(wg):
        t = t0 + tt
        gv = g[tt]
        lp = lpe[t * stride + s]
        if not (gv == -np.inf or gv == 0.0 or lp == -np.inf):
            dx[b * dsb + t * dst, k] = c * (vexp(lp) - vexp((gv - lp) - llb))


@functools.cache
def build_ctc_kernel(parallel):
    r"""CTCLoss in one kernel: two phases, each a parallel loop.

    Returns
    -------
    numba dispatcher
        ``kernel(x, sb, st, n_t, dx, dsb, dst, ints, lab, chain, first, blank,
        zero_infinity, want_grad, coef, cost)``: ``x`` ``(rows, C)``
        activations (compute dtype), frame ``t`` of sample ``b`` at row
        ``b * sb + t * st``; ``n_t`` the frames per sample of the grid;
        ``ints`` ``(>=4, N)`` int32 rows :math:`T_b`, ``gmask`` (the frames
        ``t < gmask[b]`` get a gradient: ``trunc`` of the pred length),
        :math:`L_b` and ``feasible`` (:math:`L_b + R_b \le T_b`); ``lab``,
        ``chain``, ``first`` ``(N, >=1)`` the packed labels
        (:mod:`..ctc_labels`). Writes ``cost[b]`` (``0``, or ``+inf`` without
        ``zero_infinity``, for an infeasible sample; ``0`` for :math:`T_b = 0`)
        and, with ``want_grad``, every row of ``dx`` (rows at
        ``b * dsb + t * dst``; zero beyond ``gmask`` and for infeasible
        samples) scaled by ``coef[b]``.
    """
    key = cache_key(parallel)  # see .compile

    def ctc_kernel(
        x, sb, st, n_t, dx, dsb, dst, ints, lab, chain, first, blank, zero_infinity, want_grad, coef, cost
    ):  # fmt: skip
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n = cost.shape[0]
        tlen = ints[0]
        gmask = ints[1]
        llen = ints[2]
        feasible = ints[3]
        m = np.empty((n, n_t), dtype=x.dtype)
        logs = np.empty((n, n_t), dtype=x.dtype)
        early = x.shape[1] > GATHER_EARLY_ABOVE
        offp = np.empty(n + 1 if early else 1, dtype=np.int64)  # the samples' padded blocks in lpe_all
        offp[0] = 0
        if early:
            for b in range(n):
                offp[b + 1] = offp[b] + np.int64(tlen[b]) * padded(2 * llen[b] + 1)
        lpe_all = np.empty(offp[-1], dtype=x.dtype)
        per = rows_per_task(x.shape[1])  # frames per task
        n_frames = n * n_t
        n_tasks = (n_frames + per - 1) // per
        for task in prange(n_tasks):
            _frames_task(
                task, per, n_frames, n_t, x, sb, st, tlen, gmask, feasible, m, logs, want_grad, coef, dx, dsb, dst,
                early, lab, llen, blank, offp, lpe_all,
            )  # fmt: skip
        for b in prange(n):
            _paths_sample(
                b, x, sb, st, m, logs, tlen, gmask, lab, chain, first, llen, blank, feasible, zero_infinity,
                want_grad, coef, dx, dsb, dst, cost, early, offp, lpe_all,
            )  # fmt: skip

    return compile_kernel(ctc_kernel, "ctc", parallel, serial=lambda: build_ctc_kernel(False))
