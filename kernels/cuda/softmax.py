r"""Softmax cross-entropy and log-softmax CUDA kernels (twins of :mod:`..cpu.softmax`).

Arrays are 3-D views ``(outer, C, inner)`` of the caller's memory (any
strides, any real dtype, converted on load); every ``(outer, inner)`` position
is a row of ``C`` logits. A row is handled by a *group* of ``group``
consecutive threads (a power of two, :func:`softmax_plan`): for a last class
axis (``inner == 1``) the group's threads stride through the row, so
neighbouring threads read neighbouring logits; otherwise ``group == 1`` and
neighbouring threads take neighbouring positions, which are neighbours in
memory. Blocks walk the rows with a grid-stride loop whose trip count is the
same for every thread (the group reductions synchronise the block).

Per row, as on the CPU: each thread keeps an online maximum and a sum of
exponentials rescaled whenever its maximum grows; the group combines them
(maximum first, then the rescaled sums, with the all-lane shared-memory
reductions of :mod:`.reduce`) into
:math:`m` and :math:`\sigma = \log\sum_k e^{x_k - m}`; the gradient pass
re-reads the row (from L2 for rows the group just read) and writes
:math:`c\,(p_k \sum q - q_k)`, :math:`p_k = e^{(x_k - m) - \sigma}`.
NaN and ``+inf`` logits make the row NaN, as on the CPU and in MXNet.
"""

import functools
import math

from numba import cuda, float64

from .._options import CUDA_GRID_PER_SM, CUDA_ITEMS
from ..softmax_math import pick_float, pick_int, smoothing
from ..vmath import like
from . import THREADS, jit_kernel
from .reduce import group_max_all, group_sum_all, group_sum_shared
from .weighting import index3


def softmax_plan(n_rows: int, n_classes: int, inner: int, sm_count: int, threads: int = THREADS) -> tuple[int, int]:
    """``(group, blocks)``: threads per row and blocks of ``threads`` threads."""
    group = 1
    if inner == 1:
        while group < threads and group * CUDA_ITEMS < n_classes:
            group *= 2
    per_block = threads // group
    blocks = max(1, min(math.ceil(n_rows / per_block), sm_count * CUDA_GRID_PER_SM))
    return group, blocks


@cuda.jit(device=True, inline="always")
def _position(it, group, per_block, tid, n_rows, inner):
    """Row ``t`` of this thread's group in grid-stride iteration ``it``: ``(t, active, o, i)``."""
    t = (it * cuda.gridDim.x + cuda.blockIdx.x) * per_block + tid // group
    active = t < n_rows
    o = 0
    i = 0
    if active:
        o = t // inner
        i = t - o * inner
    return t, active, o, i


@cuda.jit(device=True, inline="always")
def _online(x, o, i, start, group, proto):
    """This thread's ``(max, sum of exp(x - max))`` over elements ``start::group`` of row ``(o, i)``."""
    n = x.shape[1]
    m = like(proto, -math.inf)
    s = float64(0.0)
    for k in range(start, n, group):
        v = like(proto, x[o, k, i])
        if v > m:
            # exp(v - v) is 1, or NaN for v = +inf (as MXNet's x - max there)
            s = s * math.exp(float64(m) - float64(v)) + math.exp(v - v)
            m = v
        elif v != -math.inf:  # -inf adds 0; NaN adds NaN
            s += math.exp(v - m)
    return m, s


@cuda.jit(device=True, inline="always")
def _log_sum_exp(x, o, i, active, lane, group, proto, sh, tid):
    """Row ``(o, i)``'s maximum and log-sum of exponentials, on every lane of the group.

    Every thread of the block calls it (it synchronises); inactive ones add nothing.
    """
    m, s = _online(x, o, i, lane if active else x.shape[1], group, proto)
    gm = group_max_all(float64(m), sh, tid, lane, group)
    part = float64(0.0)
    if s != 0.0:  # threads without elements (or with only -inf) add nothing
        part = s * math.exp(float64(m) - gm)
    total = group_sum_all(part, sh, tid, lane, group)
    lsum = -math.inf  # an all -inf row (NaN loss, as in MXNet); spelled out for the simulator's math.log
    if total != 0.0:
        lsum = math.log(total)
    return like(proto, gm), lsum


@functools.cache
def build_softmax_ce_kernel(sparse, from_logits, int_label, want_grad):
    """CUDA twin of :func:`numba_losses.kernels.cpu.softmax.build_softmax_ce_kernel`.

    Returns
    -------
    numba CUDA dispatcher
        ``kernel[blocks, THREADS, stream](x, label, y, coef, ignore, has_ignore,
        eps, proto, loss, dx, group)``: ``x``, ``y`` (dense labels; ``x`` for
        sparse ones) and ``dx`` of shape ``(outer, C, inner)``, ``label`` the
        sparse labels ``(outer, inner)`` (any real dtype), ``coef`` and
        ``loss`` one per row (row ``t = o * inner + i``), ``proto`` a zero of
        the compute dtype.
    """
    threads = THREADS
    pick = pick_int if int_label else pick_float
    dense = not sparse

    def softmax_ce_kernel(x, label, y, coef, ignore, has_ignore, eps, proto, loss, dx, group):
        sh = cuda.shared.array(threads, float64)
        outer, n_classes, inner = x.shape
        n_rows = outer * inner
        tid = cuda.threadIdx.x
        lane = tid & (group - 1)
        per_block = threads // group
        stride = per_block * cuda.gridDim.x
        n_iter = (n_rows + stride - 1) // stride
        smooth = eps != 0.0
        q1, q0 = smoothing(eps, n_classes)
        for it in range(n_iter):
            t, active, o, i = _position(it, group, per_block, tid, n_rows, inner)
            j = 0
            skip = False
            if sparse and active:
                lab = label[o, i]
                skip = has_ignore and float64(lab) == ignore
                j = pick(lab, n_classes)
            m = proto  # log-probabilities are (x - m) - lsum
            lsum = float64(0.0)
            if not from_logits:
                m, lsum = _log_sum_exp(x, o, i, active, lane, group, proto, sh, tid)
            # this thread's share of sum(y * (x - m)), sum(y), sum(x - m): shifted by the
            # maximum, so huge logits with a small spread lose nothing
            syx = float64(0.0)
            sy = float64(0.0)
            sx = float64(0.0)
            mf = float64(m)
            if active and (dense or smooth):
                for k in range(lane, n_classes, group):
                    xv = float64(like(proto, x[o, k, i])) - mf
                    if dense:
                        yv = like(proto, y[o, k, i])
                        syx += float64(yv) * xv
                        sy += yv
                    if smooth:
                        sx += xv
            if dense:
                syx = group_sum_all(syx, sh, tid, lane, group)
                sy = group_sum_all(sy, sh, tid, lane, group)
            if smooth:
                sx = group_sum_all(sx, sh, tid, lane, group)
            if sparse:
                sy = 1.0
                if active:
                    syx = float64(like(proto, x[o, j, i])) - mf
            if not active:
                continue
            if lane == 0:
                val = -(q1 * (syx - lsum * sy))
                if smooth:
                    val -= q0 * (sx - n_classes * lsum)
                if skip:
                    val = 0.0
                loss[t] = val
            if not want_grad:
                continue
            cc = like(proto, coef[t])
            c1 = like(proto, q1)
            c0 = like(proto, q0)
            qs = like(proto, q1 * sy + eps)
            ls = like(proto, lsum)
            for k in range(lane, n_classes, group):
                tk = like(proto, 0.0)
                if dense:
                    tk = like(proto, y[o, k, i])
                elif k == j:
                    tk = like(proto, 1.0)
                if skip:
                    g = like(proto, 0.0)
                elif from_logits:
                    g = -cc * (c1 * tk + c0)
                else:
                    p = math.exp((like(proto, x[o, k, i]) - m) - ls)
                    g = cc * (p * qs - (c1 * tk + c0))
                dx[o, k, i] = g

    name = f"softmax_ce_{'sparse' if sparse else 'dense'}{'_logits' if from_logits else ''}_cuda_kernel"
    softmax_ce_kernel.__qualname__ = softmax_ce_kernel.__name__ = name
    return jit_kernel(softmax_ce_kernel)


@functools.cache
def build_class_target_kernel(sparse, int_label):
    """The dense target of a call with ``class_weight`` that needs one, built on the device.

    The CUDA twin of the target :func:`numba_losses._plan.softmax.lower` builds with NumPy
    on the host, so that the labels and a ``pred``-sized target do not travel to the host
    and back. With class weights :math:`w`, ``q1`` :math:`= 1 - \\varepsilon` and ``q0``
    :math:`= \\varepsilon / C`:

    * sparse labels: :math:`q_c = w_c q_0 + [c = j]\\, q_1 w_j` (each product rounded
      to the compute dtype, then added), 0 at every class of an ignored position;
    * dense labels ``y``: :math:`q_c = (q_1 y_c + q_0)\\, w_c` in the compute dtype
      (``y`` itself when ``q0 == 0``).

    Returns
    -------
    numba CUDA dispatcher
        ``kernel[blocks, THREADS, stream](label, y, cw, q1, q0, has_ignore, ignore, proto, q)``:
        ``label`` the sparse labels ``(outer, inner)`` (any real dtype; a dummy for
        dense ones), ``y`` the dense labels ``(outer, C, inner)`` (a dummy for
        sparse ones), ``cw`` the ``C`` class weights (float64), ``proto`` a zero of
        the compute dtype and ``q`` the target, ``(outer, C, inner)``; a grid-stride
        loop over ``q``'s elements.
    """
    pick = pick_int if int_label else pick_float

    def class_target_kernel(label, y, cw, q1, q0, has_ignore, ignore, proto, q):
        outer, n_classes, inner = q.shape
        start, step = cuda.grid(1), cuda.gridsize(1)
        for t in range(start, outer * n_classes * inner, step):
            o, c, i = index3(t, n_classes, inner)
            if sparse:
                lab = label[o, i]
                v = like(proto, cw[c] * q0)
                if pick(lab, n_classes) == c:
                    v = v + like(proto, q1 * cw[c])
                if has_ignore and float64(lab) == ignore:
                    v = like(proto, 0.0)
            else:
                v = like(proto, y[o, c, i])
                if q0 != 0.0:
                    v = v * like(proto, q1) + like(proto, q0)
                v = v * like(proto, cw[c])
            q[o, c, i] = v

    name = f"class_target_{'sparse' if sparse else 'dense'}_cuda_kernel"
    class_target_kernel.__qualname__ = class_target_kernel.__name__ = name
    return jit_kernel(class_target_kernel)


@functools.cache
def build_class_weight_kernel(int_label):
    """The class weight of each position's label, :math:`w_j` (the host gathers ``cw[picks]``).

    Returns
    -------
    numba CUDA dispatcher
        ``kernel[blocks, THREADS, stream](label, cw, proto, wpos)``: ``label`` the sparse
        labels ``(outer, inner)`` (any real dtype), ``cw`` the ``C`` class weights (float64),
        ``wpos`` ``(outer, inner)``, written in the compute dtype of ``proto``.
    """
    pick = pick_int if int_label else pick_float

    def class_weight_kernel(label, cw, proto, wpos):
        outer, inner = wpos.shape
        start, step = cuda.grid(1), cuda.gridsize(1)
        for t in range(start, outer * inner, step):
            o = t // inner
            i = t - o * inner
            wpos[o, i] = like(proto, cw[pick(label[o, i], cw.shape[0])])

    class_weight_kernel.__qualname__ = class_weight_kernel.__name__ = "class_weight_cuda_kernel"
    return jit_kernel(class_weight_kernel)


@functools.cache
def build_valid_weight_kernels(int_label):
    r"""The per-position weights of sparse ``normalization='valid'``, divisor included, on the device.

    The divisor :math:`D = \sum_{\text{positions not ignored}} w_j` (:math:`w_j = 1` without
    class weights) is summed by one block in a fixed order (each thread a strided
    float64 sum, then a tree), so that the labels need not go to the host; each position's
    weight is then :math:`w_j / D` for the value and the gradient (:math:`w_j` only where the
    class weights are not already in a dense target, else 1), and where :math:`D = 0` the
    value weights are NaN and the gradient weights NaN where counted, 0 where ignored (as
    the host's ``lower``).

    Returns
    -------
    (numba CUDA dispatcher, numba CUDA dispatcher)
        ``divisor[1, THREADS, stream](label, cw, has_cw, has_ignore, ignore, total)`` writes
        :math:`D` to ``total[0]`` (float64); ``weights[blocks, THREADS, stream](label, cw,
        by_class, has_ignore, ignore, total, proto, value_w, grad_w)`` writes both
        ``(outer, inner)`` weights in the compute dtype of ``proto``. ``label``: the sparse
        labels ``(outer, inner)`` (any real dtype); ``cw``: the ``C`` class weights (float64;
        a dummy with ``has_cw`` / ``by_class`` false).
    """
    pick = pick_int if int_label else pick_float

    def valid_divisor_kernel(label, cw, has_cw, has_ignore, ignore, total):
        sh = cuda.shared.array(THREADS, float64)
        outer, inner = label.shape
        tid = cuda.threadIdx.x
        s = float64(0.0)
        for t in range(tid, outer * inner, THREADS):
            o = t // inner
            lab = label[o, t - o * inner]
            if not (has_ignore and float64(lab) == ignore):
                s += cw[pick(lab, cw.shape[0])] if has_cw else float64(1.0)
        s = group_sum_shared(s, sh, tid, tid, THREADS)
        if tid == 0:
            total[0] = s

    def valid_weight_kernel(label, cw, by_class, has_ignore, ignore, total, proto, value_w, grad_w):
        outer, inner = label.shape
        d = total[0]
        start, step = cuda.grid(1), cuda.gridsize(1)
        for t in range(start, outer * inner, step):
            o = t // inner
            i = t - o * inner
            lab = label[o, i]
            w = float64(1.0)
            if by_class:
                w = cw[pick(lab, cw.shape[0])]
            if d != 0.0:
                v = like(proto, w * (1.0 / d))
                g = v
            else:
                v = like(proto, math.nan)
                g = v
                if has_ignore and float64(lab) == ignore:
                    g = like(proto, 0.0)
            value_w[o, i] = v
            grad_w[o, i] = g

    kernels = []
    for fn, name in ((valid_divisor_kernel, "valid_divisor"), (valid_weight_kernel, "valid_weight")):
        fn.__qualname__ = fn.__name__ = f"{name}_{'int' if int_label else 'float'}_cuda_kernel"
        kernels.append(jit_kernel(fn))
    return tuple(kernels)


@jit_kernel
def log_softmax_kernel(x, proto, lp, group):
    """``lp = x - m - log(sum(exp(x - m)))`` along axis 1 of ``(outer, C, inner)`` arrays."""
    sh = cuda.shared.array(THREADS, float64)
    outer, n_classes, inner = x.shape
    n_rows = outer * inner
    tid = cuda.threadIdx.x
    lane = tid & (group - 1)
    per_block = THREADS // group
    stride = per_block * cuda.gridDim.x
    for it in range((n_rows + stride - 1) // stride):
        _, active, o, i = _position(it, group, per_block, tid, n_rows, inner)
        m, lsum = _log_sum_exp(x, o, i, active, lane, group, proto, sh, tid)
        if active:
            ls = like(proto, lsum)
            for k in range(lane, n_classes, group):
                lp[o, k, i] = (like(proto, x[o, k, i]) - m) - ls


@jit_kernel
def log_softmax_backward_kernel(lp, proto, u, group):
    """In place ``u <- u - exp(lp) * sum(u)`` along axis 1 of ``(outer, C, inner)`` arrays."""
    sh = cuda.shared.array(THREADS, float64)
    outer, n_classes, inner = lp.shape
    n_rows = outer * inner
    tid = cuda.threadIdx.x
    lane = tid & (group - 1)
    per_block = THREADS // group
    stride = per_block * cuda.gridDim.x
    for it in range((n_rows + stride - 1) // stride):
        _, active, o, i = _position(it, group, per_block, tid, n_rows, inner)
        s = float64(0.0)
        if active:
            for k in range(lane, n_classes, group):
                s += u[o, k, i]
        s = group_sum_all(s, sh, tid, lane, group)
        if active:
            sc = like(proto, s)
            for k in range(lane, n_classes, group):
                u[o, k, i] = like(proto, u[o, k, i]) - math.exp(like(proto, lp[o, k, i])) * sc
