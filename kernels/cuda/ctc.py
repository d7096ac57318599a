r"""CTC loss CUDA kernels (twins of :mod:`..cpu.ctc`).

Notation of docs/semantics.rst section 7 and of the CPU kernels: sample :math:`b` has
:math:`T_b` frames of :math:`C` activations, a label of length :math:`L`
and the extended label :math:`l'` of length :math:`S = 2L + 1`. Activations
are read through a strided ``(N, T, C)`` view of the caller's memory in its
own dtype (a TNC array is passed transposed, not copied; float16 is read as
float16 and computed in float32); the gradient is written through a strided
``(N, T, C)`` view of its buffer, in the buffer's dtype.

Three kernels, launched in this order on one stream:

1. :func:`ctc_frames_kernel` - a group of ``group`` threads per frame
   (grid-stride over the ``N * T`` frames, :func:`.softmax.softmax_plan`
   sizes the groups): the row maximum :math:`m` and
   :math:`\sigma = \log \sum_k e^{x_k - m}` with the all-lane group
   reductions of :mod:`.reduce` (the exponentials in the compute dtype, their
   sum in float64, rounded to the compute dtype before the log, as on the
   CPU), then the lanes write the label log-probabilities
   :math:`\mathrm{lp}_t(s) = (x_{l'_s} - m) - \sigma` into the sample's
   ``(T_b, S)`` block of ``lpe``. Frames ``t >= T_b`` are never read.
2. :func:`ctc_paths_kernel` - one block per sample (grid-stride over the
   samples), its threads striding over ``s``: :math:`\alpha` one time step at
   a time with a block barrier between steps, written row by row into the
   sample's block of the global workspace ``ab`` (or, without the gradient,
   into two alternating columns of the block's slice of the scratch
   ``ring``); the log-likelihood; then :math:`\beta` in the two columns of
   ``ring``, added into ``ab`` (``ab = alpha + beta``). Launched with about
   as many threads as the longest extended label needs (a warp for short
   labels, so many short samples run many blocks per multiprocessor).
3. :func:`ctc_grad_kernel` - a group per frame (grid-stride over all
   ``N * T`` frames): zero rows where the sample is infeasible or
   ``t >= gmask[b]``; otherwise the lanes write :math:`c_b e^{\mathrm{lp}_t(k)}`
   for every class, the block synchronises, and one lane per label class
   overwrites its class with section 7's correction from :math:`\gamma_t(k)`
   (the log-sum of ``ab`` over the class's positions: the blank over every
   ``s`` whose class is the blank, in increasing ``s``; another class from its
   first occurrence along ``chain``), as the CPU kernel does.

``sample_weight`` and ``weight`` are applied to the cost, and the head
gradient summed back to one scale per sample, by the product-weighting kernels
of :mod:`.weighting` (shared with CosineEmbeddingLoss).

Log-space addition is section 7's: ``lse(a, b) = b`` if ``a == -inf``, ``a`` if
``b == -inf``, else :math:`\max + \log(1 + e^{\min - \max})`. Under the
simulator every thread is a Python thread computing with ``math``: the
guards below keep ``math.log(0)`` and overflowing ``math.exp`` from raising
(a GPU returns ``-inf`` / ``+inf`` there).
"""

import math

from numba import cuda, float64

from .._options import CUDA_THREADS
from ..vmath import like
from . import SIMULATOR, THREADS, jit_kernel
from .reduce import group_max_all, group_sum_all
from .softmax import _position

# Most threads of a paths block (one sample per block, threads over the extended label).
PATHS_MAX_THREADS = THREADS if SIMULATOR else 4 * CUDA_THREADS
_EXP_MAX = 709.782712893384  # largest float64 argument whose exp is finite


def paths_threads(s_max: int, max_threads: int = PATHS_MAX_THREADS) -> int:
    """Threads of a paths block: enough for the longest extended label ``s_max``, at most ``max_threads``.

    Whole warps on a GPU (a label of up to 15 classes gets one warp, so many short
    samples run many blocks per multiprocessor); the simulator takes ``s_max``.
    """
    want = max(1, s_max) if SIMULATOR else 32 * max(1, -(-s_max // 32))
    return max(1, min(max_threads, want))


@cuda.jit(device=True, inline="always")
def _exp(v):
    """``math.exp``; under the simulator an overflowing argument gives ``+inf`` as on a GPU."""
    if SIMULATOR and v > _EXP_MAX:
        return like(v, math.inf)
    return math.exp(v)


@cuda.jit(device=True, inline="always")
def _log_add(a, b):
    """docs/semantics.rst section 7's ``lse(a, b)`` in the arguments' precision (NaN in gives NaN out)."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi = a if a > b else b
    lo = b if a > b else a
    return hi + math.log1p(math.exp(lo - hi))


@cuda.jit(device=True, inline="always")
def _ext_class(lab, b, s, blank):
    """Class of position ``s`` of sample ``b``'s extended label."""
    return blank if s % 2 == 0 else lab[b, s // 2]


@jit_kernel
def ctc_frames_kernel(x, tlen, lab, llen, blank, off, proto, m, logs, lpe, group):
    """Row statistics and label log-probabilities of every frame ``t < T_b``.

    ``x`` ``(N, T, C)`` activations (any strides, any float dtype); ``tlen``,
    ``llen`` ``(N,)``, ``lab`` ``(N, >=1)`` packed labels, ``off`` ``(N + 1,)``
    offsets of the samples' ``(T_b, S_b)`` blocks in the flat ``lpe``;
    ``proto`` a zero of the compute dtype. Writes ``m[b, t]``, ``logs[b, t]``
    (``(N, T)``, compute dtype) and ``lpe``. Launched with ``THREADS`` threads
    per block, ``group`` (a power of two) per frame.
    """
    sh = cuda.shared.array(THREADS, float64)
    n, n_t, n_classes = x.shape
    n_frames = n * n_t
    tid = cuda.threadIdx.x
    lane = tid & (group - 1)
    per_block = THREADS // group
    stride = per_block * cuda.gridDim.x
    ninf = like(proto, -math.inf)
    for it in range((n_frames + stride - 1) // stride):  # the same trip count for every thread
        _, active, b, t = _position(it, group, per_block, tid, n_frames, n_t)  # frame t of sample b
        if active:
            active = t < tlen[b]
        mx = ninf
        if active:
            for k in range(lane, n_classes, group):
                v = like(proto, x[b, t, k])
                if v > mx:  # NaN never raises the maximum; it reaches the sum below
                    mx = v
        mm = like(proto, group_max_all(float64(mx), sh, tid, lane, group))
        s = float64(0.0)
        if active:
            if mm == -math.inf:  # only -inf (adds 0) and NaN (adds NaN) in the row
                for k in range(lane, n_classes, group):
                    v = like(proto, x[b, t, k])
                    if v != -math.inf:
                        s += float64(v)
            else:
                for k in range(lane, n_classes, group):
                    s += float64(math.exp(like(proto, x[b, t, k]) - mm))
        total = group_sum_all(s, sh, tid, lane, group)
        if not active:
            continue
        sr = like(proto, total)  # the sum rounded as a sum in the compute dtype would be
        ls = sr  # NaN
        if sr > 0.0:
            ls = like(proto, math.log(float64(sr)))
        elif sr == 0.0:
            ls = ninf
        if lane == 0:
            m[b, t] = mm
            logs[b, t] = ls
        n_s = 2 * llen[b] + 1
        base = off[b] + t * n_s
        for j in range(lane, n_s, group):
            lpe[base + j] = (like(proto, x[b, t, _ext_class(lab, b, j, blank)]) - mm) - ls


@jit_kernel
def ctc_paths_kernel(lpe, off, tlen, lab, llen, blank, feasible, zero_infinity, want_grad, proto, ab, ring, ll, cost):
    r"""Forward-backward recursions, one block per sample: the cost and, for the gradient, ``ab``.

    ``lpe`` from :func:`ctc_frames_kernel`; ``feasible`` ``(N,)``
    (:math:`L_b + R_b \le T_b`). Writes ``cost[b]`` (``0``, or ``+inf``
    without ``zero_infinity``, for an infeasible sample; ``0`` for
    :math:`T_b = 0`) and ``ll[b]`` the log-likelihood (``-inf`` when
    infeasible). With ``want_grad``, :math:`\alpha_t(s) + \beta_t(s)` goes to
    the sample's block of ``ab`` (``lpe``'s layout). ``ring`` holds two columns
    of ``S_max`` per block (``gridDim.x * 2 * S_max`` elements): :math:`\beta`,
    or :math:`\alpha` when ``want_grad`` is false (``ab`` is then not used).
    """
    n = tlen.shape[0]
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    ninf = like(proto, -math.inf)
    rbase = cuda.blockIdx.x * (ring.shape[0] // cuda.gridDim.x)
    for b in range(cuda.blockIdx.x, n, cuda.gridDim.x):  # b is the same for the whole block
        n_t = tlen[b]
        if not feasible[b] or n_t == 0:
            if tid == 0:
                if not feasible[b]:
                    cost[b] = 0.0 if zero_infinity else math.inf
                    ll[b] = -math.inf
                else:  # L = 0 and no frame: the empty path, probability 1
                    cost[b] = 0.0
                    ll[b] = 0.0
            continue
        n_s = 2 * llen[b] + 1
        base = off[b]
        # alpha at row t of abuf: abase + (t % aper) * n_s
        abuf = ring
        abase = rbase
        aper = 2
        if want_grad:
            abuf = ab
            abase = base
            aper = n_t
        for s in range(tid, n_s, nthreads):
            v = ninf
            if s < 2:
                v = lpe[base + s]
            abuf[abase + s] = v
        for t in range(1, n_t):
            cuda.syncthreads()  # column t - 1 complete
            prev = abase + ((t - 1) % aper) * n_s
            cur = abase + (t % aper) * n_s
            row = base + t * n_s
            for s in range(tid, n_s, nthreads):
                v = abuf[prev + s]
                if s >= 1:
                    v = _log_add(v, abuf[prev + s - 1])
                if s >= 2:
                    k = _ext_class(lab, b, s, blank)
                    if k != blank and s != 1 and k != _ext_class(lab, b, s - 2, blank):
                        v = _log_add(v, abuf[prev + s - 2])
                abuf[cur + s] = v + lpe[row + s]
        cuda.syncthreads()
        if tid == 0:
            last = abase + ((n_t - 1) % aper) * n_s
            llv = abuf[last]
            if n_s > 1:
                llv = _log_add(abuf[last + n_s - 1], abuf[last + n_s - 2])
            ll[b] = llv
            cost[b] = -llv
        cuda.syncthreads()  # the last alpha column is read before beta is added to it
        if want_grad:
            row = base + (n_t - 1) * n_s
            cur = rbase + ((n_t - 1) & 1) * n_s
            for s in range(tid, n_s, nthreads):
                v = ninf
                if s >= n_s - 2:
                    v = lpe[row + s]
                ring[cur + s] = v
                ab[row + s] += v
            for t in range(n_t - 2, -1, -1):
                cuda.syncthreads()  # column t + 1 complete
                nxt = rbase + ((t + 1) & 1) * n_s
                cur = rbase + (t & 1) * n_s
                row = base + t * n_s
                for s in range(tid, n_s, nthreads):
                    v = ring[nxt + s]
                    if s + 1 < n_s:
                        v = _log_add(v, ring[nxt + s + 1])
                    if s + 2 < n_s:
                        k = _ext_class(lab, b, s, blank)
                        if k != blank and s != n_s - 2 and k != _ext_class(lab, b, s + 2, blank):
                            v = _log_add(v, ring[nxt + s + 2])
                    v = v + lpe[row + s]
                    ring[cur + s] = v
                    ab[row + s] += v
        cuda.syncthreads()  # the ring is reused by the block's next sample


@cuda.jit(device=True, inline="always")
def _label_grad(dx, b, t, k, g, lp, llb, c):
    """Section 7's gradient of class ``k`` from its gamma ``g`` and log-probability ``lp``, times ``c``."""
    if not (g == -math.inf or g == 0.0 or lp == -math.inf):
        dx[b, t, k] = c * (_exp(lp) - _exp((g - lp) - llb))


@jit_kernel
def ctc_grad_kernel(x, dx, gmask, feasible, m, logs, ab, off, lab, chain, first, llen, blank, ll, coef, proto, group):
    """Gradient w.r.t. the activations, every frame (zero where masked).

    ``x``, ``dx`` ``(N, T, C)`` (any strides; ``dx`` in the result dtype);
    ``gmask[b]`` the frames ``t < gmask[b]`` that get a gradient (``trunc`` of
    the pred length); ``m``, ``logs`` from :func:`ctc_frames_kernel`; ``ab``,
    ``ll`` from :func:`ctc_paths_kernel`; ``coef[b]`` the head-gradient scale.
    Launched with ``THREADS`` threads per block, ``group`` per frame.
    """
    n, n_t, n_classes = x.shape
    n_frames = n * n_t
    tid = cuda.threadIdx.x
    lane = tid & (group - 1)
    per_block = THREADS // group
    stride = per_block * cuda.gridDim.x
    ninf = like(proto, -math.inf)
    for it in range((n_frames + stride - 1) // stride):  # the same trip count for every thread
        _, active, b, t = _position(it, group, per_block, tid, n_frames, n_t)  # frame t of sample b
        live = False
        mm = proto
        ls = proto
        c = proto
        if active:
            live = feasible[b] != 0 and t < gmask[b]
            if live:
                mm = m[b, t]
                ls = logs[b, t]
                c = coef[b]
                for k in range(lane, n_classes, group):
                    dx[b, t, k] = c * _exp((like(proto, x[b, t, k]) - mm) - ls)
            else:
                for k in range(lane, n_classes, group):
                    dx[b, t, k] = 0.0
        cuda.syncthreads()  # every class written before the label classes are overwritten
        if not live:
            continue
        n_lab = llen[b]
        n_s = 2 * n_lab + 1
        row = off[b] + t * n_s
        llb = ll[b]
        for i in range(lane, n_lab + 1, group):  # task n_lab is the blank
            if i == n_lab:
                k = blank
                g = ninf
                for s in range(n_s):
                    if _ext_class(lab, b, s, blank) == blank:
                        g = _log_add(g, ab[row + s])
            elif first[b, i]:
                k = lab[b, i]
                g = ab[row + 2 * i + 1]
                j = chain[b, i]
                while j >= 0:
                    g = _log_add(g, ab[row + 2 * j + 1])
                    j = chain[b, j]
            else:
                continue
            _label_grad(dx, b, t, k, g, (like(proto, x[b, t, k]) - mm) - ls, llb, c)
