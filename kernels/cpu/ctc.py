r"""CTC loss CPU kernels: fused log-softmax, log-space forward-backward, gradient.

Notation of docs/semantics.rst section 7: sample :math:`b` has :math:`T_b` frames of
:math:`C` activations, a label of length :math:`L` and the extended label
:math:`l'` of length :math:`S = 2L + 1` (blanks at even positions).
Activations are read as rows of ``x``, a ``(rows, C)`` array: frame ``t`` of
sample ``b`` is row ``b * sb + t * st`` (``sb, st = T, 1`` for NTC data,
``1, N`` for TNC), so both layouts are read in place. The gradient ``dx`` has
its own row strides.

Three kernels, each parallel where the work is:

1. :func:`build_ctc_frames_kernel` - over all frames ``t < T_b``: the row
   maximum :math:`m` and :math:`\sigma = \log \sum_k e^{x_k - m}` (one blocked
   pass, vectorised ``exp``; the sum is rounded to the compute dtype before the
   log, as a float32 sum would be), and the log-probabilities of the label's
   classes, :math:`\mathrm{lp}_t(s) = (x_{l'_s} - m) - \sigma`, into the
   sample's ``(T_b, S)`` block of ``lpe``. The full log-softmax is never stored.
2. :func:`build_ctc_paths_kernel` - over samples: the recursions for
   :math:`\alpha` (forward) and :math:`\beta` (backward, warp-ctc's convention
   including the emission at ``t``) in log space, one column of ``S`` at a
   time (vectorised along ``s``: a column depends only on the previous one),
   and the cost :math:`-\log p`. For the gradient it then computes
   :math:`\gamma_t(k) = \mathrm{lse}_{s: l'_s = k}\, \alpha_t(s) + \beta_t(s)`
   for the blank and each distinct label class, in increasing ``s`` as
   warp-ctc does, vectorised along ``t`` over small tiles of frames
   transposed in L1.
3. :func:`build_ctc_grad_kernel` - over all frames: writes
   :math:`c_b\, e^{\mathrm{lp}_t(k)}` for every class, then corrects the
   label's classes with their :math:`\gamma_t(k)` (section 7's rule, warp-ctc's
   ``== 0.0`` branch included); zero beyond the gradient mask and for
   infeasible samples.

Log-space addition follows section 7: ``lse(a, b) = b`` if ``a == -inf``, ``a``
if ``b == -inf``, else :math:`\max + \log(1 + e^{-|a - b|})`; it is written
branch-free (selects) so the column loops vectorise, with
:func:`..vmath.softplus_neg` for :math:`\log(1 + e^{-x})`.
"""

import functools
import math

import numpy as np
from numba import prange, types
from numba.extending import overload, register_jitable

from .._options import CHUNK
from ..vmath import _SQRT2_M1, _log_reduced_32, _log_reduced_64, like, vexp
from .compile import cache_key, compile_kernel
from .softmax import BLOCK, LANES, row_max_sum_exp

# Frames per tile of the gamma pass (a tile of alpha + beta, S x GAMMA_TILE, is transposed in L1).
GAMMA_TILE = 64


def _log_reduced(f, dk):
    """The logarithm step of :func:`..vmath.softplus_neg`, ``log(2**dk * (1 + f))``, by precision."""
    raise NotImplementedError("compiled only")


@overload(_log_reduced, jit_options={"forceinline": True})
def _log_reduced_impl(f, dk):
    if f == types.float32:
        return lambda f, dk: _log_reduced_32(f, dk)
    return lambda f, dk: _log_reduced_64(f, dk, 0.0)


def _softplus_limits(x):
    """``(exact, flush)`` of :func:`log_add` in the precision of ``x``."""
    return (17.0, 87.0) if isinstance(x, np.float32) else (40.0, 708.0)


@overload(_softplus_limits, jit_options={"forceinline": True})
def _softplus_limits_impl(x):
    if x == types.float32:
        return lambda x: (np.float32(17.0), np.float32(87.0))
    return lambda x: (40.0, 708.0)


# |max(a, b)| from which a term below the smallest normal number cannot change the sum
_NEGLIGIBLE_BELOW = 2.0**-60


@register_jitable(forceinline=True)
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
    e = vexp(-(flush if (d > flush and negligible) else d))  # NaN stays NaN
    half = like(d, 0.5)
    el = half if d > exact else e
    f = el
    dk = like(d, 0.0)
    if el >= like(d, _SQRT2_M1):  # softplus_neg's exact reduction of 1 + e
        f = (el - like(d, 1.0)) * half
        dk = like(d, 1.0)
    sp = _log_reduced(f, dk)
    r = hi + (e if d > exact else sp)
    r = a if b == -np.inf else r
    return b if a == -np.inf else r


@register_jitable(forceinline=True)
def ext_class(lab, b, s, blank):
    """Class of position ``s`` of sample ``b``'s extended label."""
    return blank if s % 2 == 0 else lab[b, s // 2]


@functools.cache
def build_ctc_frames_kernel(parallel):
    """Row statistics and label log-probabilities of every frame ``t < T_b``.

    Returns
    -------
    numba dispatcher
        ``kernel(x, sb, st, tlen, lab, llen, blank, off, m, logs, lpe)``:
        ``x`` ``(rows, C)`` activations (compute dtype); ``tlen``, ``llen``
        ``(N,)`` int32; ``lab`` ``(N, >=1)`` int32 packed labels; ``off``
        ``(N + 1,)`` int64 offsets of the samples' ``(T_b, S_b)`` blocks in the
        flat ``lpe``. Writes ``m[b, t]``, ``logs[b, t]`` (``(N, T)``) and ``lpe``.
    """
    key = cache_key(parallel)  # see .compile

    def ctc_frames_kernel(x, sb, st, tlen, lab, llen, blank, off, m, logs, lpe):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n, n_t = m.shape
        n_classes = x.shape[1]
        per = max(1, CHUNK // max(n_classes, 1))
        n_frames = n * n_t
        n_tasks = (n_frames + per - 1) // per
        n_blocks = (n_classes + BLOCK - 1) // BLOCK
        for task in prange(n_tasks):
            buf = np.empty(BLOCK, dtype=x.dtype)
            bmax = np.empty(max(n_blocks, 1) + LANES, dtype=x.dtype)
            for f in range(task * per, min(task * per + per, n_frames)):
                b = f // n_t
                t = f - b * n_t
                if t >= tlen[b]:
                    continue
                xr = x[b * sb + t * st]
                mm, ssum = row_max_sum_exp(xr, buf, False, bmax)
                sr = float(like(mm, ssum))  # the sum rounded as a sum in the compute dtype would be
                ls = like(mm, math.log(sr) if sr > 0.0 else (-math.inf if sr == 0.0 else sr))
                m[b, t] = mm
                logs[b, t] = ls
                n_s = 2 * llen[b] + 1
                base = off[b] + t * n_s
                for s in range(n_s):
                    lpe[base + s] = (xr[ext_class(lab, b, s, blank)] - mm) - ls

    return compile_kernel(ctc_frames_kernel, "ctc_frames", parallel)


@functools.cache
def build_ctc_paths_kernel(parallel):
    r"""Forward-backward recursions per sample: the cost and, for the gradient, :math:`\gamma`.

    Returns
    -------
    numba dispatcher
        ``kernel(lpe, off, goff, tlen, lab, chain, first, llen, blank, feasible, zero_infinity,
        want_grad, ab, gam, ll, cost)``: ``lpe`` from
        :func:`build_ctc_frames_kernel`; ``feasible`` ``(N,)`` uint8
        (:math:`L_b + R_b \le T_b`). Writes ``cost[b]`` (``0``, or ``+inf``
        without ``zero_infinity``, for an infeasible sample; ``0`` for
        :math:`T_b = 0`) and ``ll[b]`` the log-likelihood. With ``want_grad``,
        :math:`\alpha_t(s) + \beta_t(s)` goes to the sample's block of the
        scratch ``ab`` (``lpe``'s ``(T_b, S_b)`` layout) and
        :math:`\gamma_t` of the sample's classes to its ``(1 + U_b, T_b)``
        block of ``gam`` at ``goff[b]``: row 0 the blank, then one row per
        other class in order of first occurrence (``first``), each the
        log-sum over the class's positions in increasing order (``chain``),
        vectorised along ``t``.
    """
    key = cache_key(parallel)  # see .compile

    def ctc_paths_kernel(
        lpe, off, goff, tlen, lab, chain, first, llen, blank, feasible, zero_infinity, want_grad, ab, gam, ll, cost
    ):  # fmt: skip
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n = tlen.shape[0]
        for b in prange(n):
            n_t = tlen[b]
            if not feasible[b]:
                cost[b] = 0.0 if zero_infinity else np.inf
                ll[b] = -np.inf
                continue
            if n_t == 0:  # L = 0 and no frame: the empty path, probability 1
                cost[b] = 0.0
                ll[b] = 0.0
                continue
            n_lab = llen[b]
            n_s = 2 * n_lab + 1
            base = off[b]
            # skip[s]: alpha may come from s - 2; skipb[s]: beta may come from s + 2
            skip = np.zeros(n_s, dtype=np.bool_)
            skipb = np.zeros(n_s, dtype=np.bool_)
            for s in range(n_s):
                k = ext_class(lab, b, s, blank)
                if k != blank and s != 1 and s >= 2:
                    skip[s] = k != ext_class(lab, b, s - 2, blank)
                if k != blank and s != n_s - 2 and s + 2 < n_s:
                    skipb[s] = k != ext_class(lab, b, s + 2, blank)
            # alpha; columns padded with two -inf on the left: col[s + 2] = alpha(s)
            prev = np.full(n_s + 2, -np.inf, dtype=lpe.dtype)
            cur = np.full(n_s + 2, -np.inf, dtype=lpe.dtype)
            ninf = prev[0]  # -inf in the compute dtype
            one = np.uint64(1)
            two = np.uint64(2)
            cur[2] = lpe[base]
            if n_s > 1:
                cur[3] = lpe[base + 1]
            if want_grad:
                for s in range(n_s):
                    ab[base + s] = cur[s + 2]
            for t in range(1, n_t):
                prev, cur = cur, prev  # both keep -inf in their two padding entries
                row = base + t * n_s
                lp_t = lpe[row : row + n_s]
                # Unsigned indices: no negative-index wraparound, so the column loops vectorise. The
                # two log-adds of a position run in two loops: in one, the chain of dependent
                # operations is so long that the vector loop stalls on its latency.
                for s in range(n_s):
                    u = np.uint64(s)
                    cur[u + two] = log_add(prev[u + two], prev[u + one])
                for s in range(n_s):
                    u = np.uint64(s)
                    cur[u + two] = log_add(cur[u + two], prev[u] if skip[u] else ninf) + lp_t[u]
                if want_grad:
                    ab_t = ab[row : row + n_s]
                    for s in range(n_s):
                        u = np.uint64(s)
                        ab_t[u] = cur[u + two]
            llv = log_add(cur[n_s + 1], cur[n_s]) if n_s > 1 else cur[2]
            ll[b] = llv
            cost[b] = -llv
            if not want_grad:
                continue
            # beta; columns padded with two -inf on the right: col[s] = beta(s)
            for s in range(n_s + 2):
                cur[s] = ninf
                prev[s] = ninf
            row = base + (n_t - 1) * n_s
            cur[n_s - 1] = lpe[row + n_s - 1]
            if n_s > 1:
                cur[n_s - 2] = lpe[row + n_s - 2]
            for s in range(n_s):
                ab[row + s] += cur[s]
            for t in range(n_t - 2, -1, -1):
                prev, cur = cur, prev
                row = base + t * n_s
                lp_t = lpe[row : row + n_s]
                ab_t = ab[row : row + n_s]
                for s in range(n_s):
                    u = np.uint64(s)
                    cur[u] = log_add(prev[u], prev[u + one])
                for s in range(n_s):
                    u = np.uint64(s)
                    v = log_add(cur[u], prev[u + two] if skipb[u] else ninf) + lp_t[u]
                    cur[u] = v
                    ab_t[u] += v
            # gamma per class, vectorised along t over tiles of GAMMA_TILE frames transposed in L1
            g0 = goff[b]
            tile = np.empty((n_s, GAMMA_TILE), dtype=lpe.dtype)
            for t0 in range(0, n_t, GAMMA_TILE):
                w = min(GAMMA_TILE, n_t - t0)
                for tt in range(w):
                    row = base + (t0 + tt) * n_s
                    ab_t = ab[row : row + n_s]
                    for s in range(n_s):
                        tile[s, tt] = ab_t[s]
                gu = g0 + t0
                g_u = gam[gu : gu + w]
                for tt in range(w):
                    g_u[tt] = ninf
                for s in range(n_s):
                    if ext_class(lab, b, s, blank) == blank:
                        for tt in range(w):
                            g_u[tt] = log_add(g_u[tt], tile[s, tt])
                u = 0
                for i in range(n_lab):
                    if not first[b, i]:
                        continue
                    u += 1
                    gu = g0 + u * n_t + t0
                    g_u = gam[gu : gu + w]
                    for tt in range(w):
                        g_u[tt] = tile[2 * i + 1, tt]
                    j = chain[b, i]
                    while j >= 0:
                        for tt in range(w):
                            g_u[tt] = log_add(g_u[tt], tile[2 * j + 1, tt])
                        j = chain[b, j]

    return compile_kernel(ctc_paths_kernel, "ctc_paths", parallel)


@register_jitable(forceinline=True)
def _label_grad(dr, k, g, lp, llb, c):
    """Section 7's gradient of class ``k`` from its gamma ``g`` and log-probability ``lp``, times ``c``."""
    if not (g == -np.inf or g == 0.0 or lp == -np.inf):
        dr[k] = c * (vexp(lp) - vexp((g - lp) - llb))


@functools.cache
def build_ctc_grad_kernel(parallel):
    """Gradient w.r.t. the activations, every frame (zero where masked).

    Returns
    -------
    numba dispatcher
        ``kernel(x, sb, st, dsb, dst, n_t, gmask, feasible, m, logs, goff, tlen,
        lab, first, llen, blank, ll, coef, dx)``: ``gmask[b]`` the frames
        ``t < gmask[b]`` that get a gradient (``trunc`` of the pred length),
        ``gam``/``goff`` from :func:`build_ctc_paths_kernel`, ``coef[b]`` the
        head-gradient scale; ``dx`` rows at ``b * dsb + t * dst``.
    """
    key = cache_key(parallel)  # see .compile

    def ctc_grad_kernel(
        x, sb, st, dsb, dst, n_t, gmask, feasible, m, logs, gam, goff, tlen, lab, first, llen, blank, ll, coef, dx
    ):  # fmt: skip
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n = gmask.shape[0]
        n_classes = x.shape[1]
        per = max(1, CHUNK // max(n_classes, 1))
        n_frames = n * n_t
        n_tasks = (n_frames + per - 1) // per
        for task in prange(n_tasks):
            for f in range(task * per, min(task * per + per, n_frames)):
                b = f // n_t
                t = f - b * n_t
                dr = dx[b * dsb + t * dst]
                if not feasible[b] or t >= gmask[b]:
                    for k in range(n_classes):
                        dr[k] = 0.0
                    continue
                xr = x[b * sb + t * st]
                mm = m[b, t]
                ls = logs[b, t]
                c = coef[b]
                for k in range(n_classes):
                    dr[k] = c * vexp((xr[k] - mm) - ls)
                tb = tlen[b]
                gt = goff[b] + t
                llb = ll[b]
                _label_grad(dr, blank, gam[gt], (xr[blank] - mm) - ls, llb, c)
                u = 0
                for i in range(llen[b]):
                    if first[b, i]:
                        u += 1
                        k = lab[b, i]
                        _label_grad(dr, k, gam[gt + u * tb], (xr[k] - mm) - ls, llb, c)

    return compile_kernel(ctc_grad_kernel, "ctc_grad", parallel)
