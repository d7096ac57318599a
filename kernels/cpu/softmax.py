r"""Softmax cross-entropy and log-softmax CPU kernels.

Rows are the positions of the class axis: with ``pred`` of shape
``(outer, C, inner)`` around the class axis there are ``outer * inner``
positions, each a row of ``C`` logits. Two layouts, chosen by the factories'
``contiguous`` flag:

* ``contiguous``: the class axis is last (``inner == 1``); arrays are 2-D
  ``(positions, C)`` and rows are contiguous, so the inner loops vectorise;
* tiled (the class axis is not last): arrays are ``(outer, C, inner)``; a
  task takes ``TILE`` neighbouring positions of one ``outer`` index and walks
  the class axis over all of them at once, so the inner loops run along the
  positions, contiguous in memory, and vectorise there.

For one row :math:`x` with target :math:`q` (one-hot or the dense label,
smoothed, see :mod:`..softmax_math`) the fused kernel computes, reading the
row from memory once (the second pass finds it in cache),

.. math::

    m = \max_k x_k, \quad \sigma = \log \sum_k e^{x_k - m}, \quad
    \ell = -\sum_k q_k \big((x_k - m) - \sigma\big), \quad
    \mathrm{dx}_k = c \big(p_k \textstyle\sum_j q_j - q_k\big),
    \quad p_k = e^{(x_k - m) - \sigma}

(``from_logits``: :math:`\ell = -\sum_k q_k x_k`, :math:`\mathrm{dx}_k = -c q_k`).
The max and the sum of exponentials come from one blocked pass (an "online"
softmax): each block of ``BLOCK`` logits is scanned for its maximum (a SIMD
maximum, :func:`.fmax.range_max`), the running sum is rescaled when the
maximum grows, then the block's exponentials (vectorisable
:func:`..vmath.vexp_nonpos_ftz`: every argument is at most 0; float32 values below
2**-126.5 are 0) are stored in the
gradient row and summed
in float64 lanes; the gradient pass rescales them by one factor per block
instead of exponentiating again (one ``exp`` per logit); dense labels are
summed in the same pass (:func:`row_max_sum_exp_labels`). NaN and
``+inf`` logits make the row NaN, as MXNet's ``log_softmax`` does.
"""

import functools
import math

import numpy as np
from numba import get_thread_id, prange
from numba.core import config
from numba.extending import register_jitable

from .._options import CHUNK, HELPER
from ..scalar import kldiv_label_term
from ..softmax_math import pick_float, pick_int, smoothing
from ..vmath import like, vexp_nonpos_ftz, vlog
from .compile import cache_key, compile_kernel
from .fmax import maxnum, range_max
from .reduce import block_sum, range_sum

# Logits per block of the online max / sum-of-exponentials pass (fits in L1 twice).
BLOCK = 256


def scratch_shapes(n_classes):
    """The shape of the per-thread scratch array of the class-last kernels.

    A task of :func:`build_softmax_ce_kernel`, :func:`build_log_softmax_kernel` or
    :func:`build_log_softmax_backward_kernel` (contiguous variants) works in the row of the
    thread running it (``numba.get_thread_id()``, below ``NUMBA_NUM_THREADS``) of a
    compute-dtype array (a block of values, the per-block maxima of a row of ``n_classes``,
    then a block of dense-label terms). The caller allocates it: an ``np.empty`` in a kernel compiles three more
    functions at a process's first call (about 0.1 s).
    """
    return config.NUMBA_NUM_THREADS, 2 * BLOCK + (n_classes + BLOCK - 1) // BLOCK


@register_jitable(**HELPER)
def rows_per_task(n_classes):
    """Rows of ``n_classes`` values a parallel task takes: about ``CHUNK`` values, at least one row.

    Ternaries rather than ``min`` / ``max``: those are functions Numba compiles at a process's
    first call."""
    per = CHUNK // n_classes if n_classes > 0 else 1
    return per if per > 1 else 1


@register_jitable(**HELPER)
def log_of_sum(s):
    """``log(s)`` of a float64 sum of exponentials: ``-inf`` for 0 (all ``-inf`` logits), NaN stays NaN."""
    return math.log(s) if s > 0.0 else (-math.inf if s == 0.0 else s)


@register_jitable(**HELPER)
def _block_max(xr, j0, m, s, bmax):
    """``(j1, m, s)`` at the block of ``xr`` from ``j0``: its end, the running maximum raised to the
    block's (NaN never raises it; it reaches the sums) and the float64 sum of exponentials rescaled
    to it; the maximum stored in ``bmax`` for the block."""
    n = xr.shape[0]
    j1 = j0 + BLOCK if j0 + BLOCK < n else n
    bm = range_max(xr, j0, j1, m)
    if bm > m:
        s = s * math.exp(np.float64(m) - np.float64(bm))  # float64: Numba's float() keeps float32
        m = bm
    bmax[j0 // BLOCK] = m
    return j1, m, s


@register_jitable(**HELPER)
def row_max_sum_exp(xr, dest, into_row, bmax):
    """``(m, sum(exp(x - m)))`` of one row, ``m`` its maximum, in one blocked pass.

    The exponentials of block ``b`` are taken relative to ``bmax[b]``, the
    running maximum when the block was reached, and stored in ``dest``: at the
    row's own positions when ``into_row`` (``dest`` is the gradient row, so the
    gradient pass rescales them instead of exponentiating again), else in the
    ``BLOCK``-element scratch ``dest``. Blocks seen while the maximum is still
    ``-inf`` add 0 (masked logits); an all ``-inf`` row gives a sum of 0
    (``log 0 = -inf``, a NaN loss, as MXNet's ``x - max`` does). ``m`` is in
    the row's dtype, the sum in float64. ``bmax`` holds (at least) one entry
    per block.
    """
    n = xr.shape[0]
    m = like(xr[0], -np.inf)
    s = 0.0
    for j0 in range(0, n, BLOCK):
        j1, m, s = _block_max(xr, j0, m, s, bmax)
        off = 0 if into_row else j0
        if m == -np.inf:  # only -inf (adds 0) and NaN (adds NaN) so far
            for j in range(j0, j1):
                v = xr[j]
                dest[j - off] = 0.0 if v == -np.inf else v
            s += range_sum(dest, j0 - off, j1 - off)
            continue
        for j in range(j0, j1):  # unsigned indices (no negative-index wraparound): the loop vectorises
            dest[np.uint64(j - off)] = vexp_nonpos_ftz(xr[np.uint64(j)] - m)  # x - m <= 0 or NaN
        s += range_sum(dest, j0 - off, j1 - off)
    return m, s


@register_jitable(**HELPER)
def _label_term(y, d, kl):
    r"""One dense label's term of the row sums: :math:`y d`, or with ``kl``
    :math:`y d - y \log(y + 10^{-12})` (``d`` the shifted logit or log-probability)."""
    t = y * d
    return t - kldiv_label_term(y) if kl else t


@register_jitable(**HELPER)
def row_max_sum_exp_labels(xr, dest, into_row, bmax, yr, tbuf, kl):
    r""":func:`row_max_sum_exp` with a row of dense labels ``yr``: ``(m, s, syx, sy)``.

    ``syx`` and ``sy`` are :math:`\sum t` over :func:`_label_term`'s :math:`t = y (x - m)` (or with
    ``kl`` :math:`t = y (x - m) - y \log(y + 10^{-12})`) and :math:`\sum y`, in float64, from the
    same pass over the row, not a second one: block ``b`` takes its terms as
    :math:`y (x - \mathrm{bmax}_b)` in the row's dtype, from the differences its exponentials use,
    in the ``BLOCK``-element scratch ``tbuf``, and the running sum moves by
    :math:`(m_\mathrm{old} - m_\mathrm{new}) \sum y` (float64) whenever the maximum grows, as the
    sum of exponentials is rescaled. Each term is rounded once, from a difference no larger than
    :math:`x - m`, and a row of huge logits with a small spread (``-1e30`` everywhere) stays exact.
    A block met while the maximum is still ``-inf`` holds only ``-inf`` and NaN logits: its terms
    are :math:`y x` (``-inf`` times the label, NaN for a zero label: what :math:`y (x - m)` gives
    for any finite ``m``) and are not shifted; an all ``-inf`` row gives ``syx`` NaN
    (:math:`x - m` is NaN there). (A second function rather than a flag of
    :func:`row_max_sum_exp`: its sparse and CTC callers would type the label loops too, about
    0.5 s more of their first compile.)
    """
    n = xr.shape[0]
    m = like(xr[0], -np.inf)
    s = 0.0
    syx = 0.0
    sy = 0.0
    for j0 in range(0, n, BLOCK):
        m_old = m
        j1, m, s = _block_max(xr, j0, m, s, bmax)
        if m != m_old and m_old != -np.inf:  # the terms so far move with the maximum
            syx += (np.float64(m_old) - np.float64(m)) * sy
        off = 0 if into_row else j0
        if m == -np.inf:  # only -inf (adds 0) and NaN (adds NaN) so far
            for j in range(j0, j1):
                v = xr[j]
                dest[j - off] = 0.0 if v == -np.inf else v
                tbuf[j - j0] = _label_term(yr[j], v, kl)
        else:
            for j in range(j0, j1):  # unsigned indices (no negative-index wraparound): the loop vectorises
                u = np.uint64(j)
                d = xr[u] - m  # <= 0 or NaN
                dest[np.uint64(j - off)] = vexp_nonpos_ftz(d)
                tbuf[np.uint64(j - j0)] = _label_term(yr[u], d, kl)
        s += range_sum(dest, j0 - off, j1 - off)
        syx += block_sum(tbuf, j1 - j0)
        sy += range_sum(yr, j0, j1)
    if m == -np.inf:
        syx = math.nan
    return m, s, syx, sy


@register_jitable(**HELPER)
def _row_label_sums(xr, yr, buf, kl):
    r"""``(sum(t), sum(y))`` of one row of log-probabilities ``xr`` with dense labels (``from_logits``),
    summed in float64, with the terms :func:`_label_term` :math:`t = y x`, or with ``kl``
    :math:`t = y x - y \log(y + 10^{-12})` (so that :math:`-\sum t` is the cross-entropy, or
    KLDivLoss's sum of :math:`y (\log(y + 10^{-12}) - x)`; a zero label on a ``-inf`` value gives
    ``0 * inf = NaN``, as MXNet's elementwise term does).

    The terms are taken in the row's dtype (as MXNet's float32 loss takes them; the loop stays as
    wide as the data) in the ``BLOCK``-element scratch ``buf`` of that dtype. Rows of logits get
    the same sums, shifted by the row maximum, from :func:`row_max_sum_exp_labels`.
    """
    n = xr.shape[0]
    syx = 0.0
    sy = 0.0
    for j0 in range(0, n, BLOCK):
        j1 = j0 + BLOCK if j0 + BLOCK < n else n
        for j in range(j0, j1):
            u = np.uint64(j)
            buf[np.uint64(j - j0)] = _label_term(yr[u], xr[u], kl)
        syx += block_sum(buf, j1 - j0)
        sy += range_sum(yr, j0, j1)
    return syx, sy


@register_jitable(**HELPER)
def _shift_sum(xr, m, buf):
    """``sum(x - m)`` of one row in float64 (label smoothing's uniform part).

    float32 rows: ``sum(x) - n m``, one vectorised float64 sum of the row (in cache after the
    exponential pass) instead of a pass over the differences. The float32 values, their sums
    while the exponents of the row span fewer than ``29 - log2(n)`` binades, and ``n m`` are exact
    in float64, so a row of equal logits gives exactly 0 and a wider row rounds relative to its
    largest magnitudes, which its differences from ``m`` reach; nothing overflows. float64 rows
    (neither holds: ``n`` equal values need more bits, and ``n`` values near the largest float
    overflow): the differences, rounded one by one in the ``BLOCK``-element scratch ``buf`` of the
    row's dtype and summed. An all ``-inf`` row gives NaN either way, as ``x - m`` does.
    """
    n = xr.shape[0]
    if xr.itemsize == 4:  # a compile-time constant: one branch is compiled
        return range_sum(xr, 0, n) - n * np.float64(m)  # float64(m): Numba's float() keeps float32
    s = 0.0
    for j0 in range(0, n, BLOCK):
        j1 = j0 + BLOCK if j0 + BLOCK < n else n
        for j in range(j0, j1):
            buf[np.uint64(j - j0)] = xr[np.uint64(j)] - m
        s += block_sum(buf, j1 - j0)
    return s


@functools.cache
def build_softmax_ce_kernel(sparse, from_logits, int_label, want_grad, contiguous, parallel, kl=False, smooth=True):
    r"""Fused softmax cross-entropy: per-row loss and, if ``want_grad``, the gradient.

    Parameters
    ----------
    sparse : bool
        Class-id labels (one per row) or dense labels (one per logit).
    from_logits : bool
        ``pred`` already holds log-probabilities (no softmax).
    int_label : bool
        Sparse labels of an integer (or bool) dtype: int32 wrap-around pick rule.
    want_grad, contiguous, parallel : bool
        Write the gradient; ``contiguous``: rows of ``(positions, C)`` arrays,
        else the tiled kernel on ``(outer, C, inner)`` arrays (see
        :func:`_build_tiled_ce_kernel`); ``prange``.
    smooth : bool
        Whether ``eps`` may be nonzero (label smoothing). Without it the
        smoothing term is not compiled (a third of the class-last kernel's
        compile time) and ``eps`` must be 0.
    kl : bool
        Dense labels only, no smoothing: the loss of a position is the KL
        divergence :math:`\sum_j y_j (\log(y_j + 10^{-12}) - \mathrm{lp}_j)`
        (KLDivLoss from logits): the cross-entropy plus the labels' own
        :math:`\sum_j y_j \log(y_j + 10^{-12})`. The gradient is the same.

    Returns
    -------
    numba dispatcher
        ``kernel(x, label, y, coef, ignore, has_ignore, eps, inner, loss, dx, scratch)``:
        ``x``, ``y`` (dense labels in the compute dtype and ``x``'s layout;
        ``x`` itself for sparse labels) and ``dx`` in the row layout;
        ``label`` the sparse labels, one per row (any real dtype); ``coef`` the
        gradient scale per row (compute dtype); ``ignore`` (float64) the label
        value whose rows get loss and gradient 0 when ``has_ignore``; ``eps``
        the label smoothing; ``scratch`` the per-thread rows of
        :func:`scratch_shapes` (read by the contiguous variant only). Writes ``loss``
        (one per row, compute dtype).
    """
    if kl and (sparse or from_logits):
        raise ValueError("kl needs dense labels and logits")
    if not contiguous:
        return _build_tiled_ce_kernel(sparse, from_logits, int_label, want_grad, parallel, kl, smooth)
    pick = pick_int if int_label else pick_float
    dense = not sparse
    key = cache_key(parallel)  # see .compile

    def softmax_ce_kernel(x, label, y, coef, ignore, has_ignore, eps, inner, loss, dx, scratch):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n_rows = loss.shape[0]
        n_classes = x.shape[-1]
        per = rows_per_task(n_classes)
        n_tasks = (n_rows + per - 1) // per
        n_blocks = (n_classes + BLOCK - 1) // BLOCK
        for task in prange(n_tasks):
            tid = 0  # the serial variant must not call get_thread_id (see .elementwise); pruned
            if parallel:
                tid = get_thread_id()
            buf = scratch[tid, :BLOCK]
            bmax = scratch[tid, BLOCK : BLOCK + n_blocks]
            tbuf = scratch[tid, BLOCK + n_blocks : 2 * BLOCK + n_blocks]
            t1 = task * per + per
            for t in range(task * per, t1 if t1 < n_rows else n_rows):
                xr = x[t]
                yr = y[t]  # sparse variants get ``y = x``, never read
                cc = like(xr[0], 1.0)
                if want_grad:
                    cc = coef[t]
                target = 0
                if sparse:
                    lab = label[t]
                    if has_ignore and float(lab) == ignore:
                        loss[t] = 0.0
                        if want_grad:
                            dr = dx[t]
                            for k in range(n_classes):
                                dr[k] = 0.0
                        continue
                    target = pick(lab, n_classes)
                q1, q0 = smoothing(eps, n_classes)
                m = like(xr[0], 0.0)  # log-probabilities are (x - m) - lsum
                lsum = 0.0
                syx = 0.0
                sy = 1.0  # the one-hot target's sum
                # the exponentials go to the gradient row (rescaled below) or to the scratch block;
                # dense labels: their sums come from the same pass
                if from_logits:
                    if dense:
                        syx, sy = _row_label_sums(xr, yr, buf, kl)
                elif dense:
                    if want_grad:
                        m, se, syx, sy = row_max_sum_exp_labels(xr, dx[t], True, bmax, yr, tbuf, kl)
                    else:
                        m, se, syx, sy = row_max_sum_exp_labels(xr, buf, False, bmax, yr, tbuf, kl)
                    lsum = log_of_sum(se)
                else:
                    if want_grad:
                        m, se = row_max_sum_exp(xr, dx[t], True, bmax)
                    else:
                        m, se = row_max_sum_exp(xr, buf, False, bmax)
                    lsum = log_of_sum(se)
                if not dense:
                    syx = np.float64(xr[target]) - np.float64(m)  # exact (float() keeps float32)
                val = -(q1 * (syx - lsum * sy))  # kl: no smoothing, q1 = 1
                if smooth and eps != 0.0:
                    val -= q0 * (_shift_sum(xr, m, buf) - n_classes * lsum)
                qsum = q1 * sy + eps  # sum of the smoothed target
                loss[t] = val
                if not want_grad:
                    continue
                dr = dx[t]
                c1 = like(cc, q1)
                c0 = like(cc, q0)
                # The one-hot target of a class id is read in the loops (``tk``), not written to its slot
                # after them: a store after the loops was lost in the parallel variant (Numba's parfor
                # lowering), and this form is as exact (one rounding per element either way).
                one = like(cc, 1.0)
                zero = like(cc, 0.0)
                if from_logits:
                    for k_ in range(n_classes):
                        k = np.uint64(k_)
                        tk = yr[k] if dense else (one if k_ == target else zero)
                        dr[k] = -cc * (c1 * tk + c0)
                else:
                    qs = like(cc, qsum)
                    # p_k = e_k * exp(bmax[b] - m - lsum), e_k = exp(x_k - bmax[b]) stored in dr
                    for b in range(n_blocks):
                        f = like(cc, math.exp(np.float64(bmax[b]) - np.float64(m) - lsum))  # exact difference
                        k1 = b * BLOCK + BLOCK
                        for k_ in range(b * BLOCK, k1 if k1 < n_classes else n_classes):
                            k = np.uint64(k_)
                            tk = yr[k] if dense else (one if k_ == target else zero)
                            dr[k] = cc * ((dr[k] * f) * qs - (c1 * tk + c0))

    name = f"softmax_ce_{'sparse' if sparse else 'dense'}{'_logits' if from_logits else ''}{'_kl' if kl else ''}"
    twin = functools.partial(build_softmax_ce_kernel, sparse, from_logits, int_label, want_grad)
    return compile_kernel(softmax_ce_kernel, name, parallel, serial=lambda: twin(True, False, kl, smooth))


# Positions per task of the strided (class axis not last) kernel: the loops run along
# them, contiguous in memory, while the class index walks the rows of a tile.
TILE = 256


@register_jitable(**HELPER)
def _tile(task, n_tiles, n_inner):
    """``(o, i0, w)`` of tiled task ``task``: outer index, first inner position (unsigned) and width."""
    o = task // n_tiles
    i0 = (task - o * n_tiles) * TILE
    w = n_inner - i0  # a ternary: min compiles at a process's first call
    return o, np.uint64(i0), w if w < TILE else TILE


@register_jitable(**HELPER)
def _tile_max(x, o, i0, w, m):
    """The first walk of a tile of ``x`` ``(outer, C, inner)``: ``m[k]`` the maximum over the classes
    (NaN never raises it; it reaches the sums). Unsigned indices (no negative-index wraparound): the
    loops of this and the next helpers vectorise."""
    for c in range(x.shape[1]):
        for k_ in range(w):
            k = np.uint64(k_)
            m[k] = maxnum(m[k], x[o, c, i0 + k])


@register_jitable(**HELPER)
def _tile_max_pick(x, o, i0, w, m, jj, xj):
    """:func:`_tile_max` that also picks ``xj[k] = x[o, jj[k], i0 + k]`` (left as is where ``jj[k]``
    is -1): a compare and a select per logit in a walk that waits on memory, instead of a gather
    per position that would keep the position loops from vectorising."""
    for c in range(x.shape[1]):
        cc = np.int32(c)
        for k_ in range(w):
            k = np.uint64(k_)
            v = x[o, c, i0 + k]
            m[k] = maxnum(m[k], v)
            xj[k] = v if jj[k] == cc else xj[k]


# Classes per partial sum of the tiled sum of exponentials (see :func:`_tile_sum_exp`).
CLASS_BLOCK = 8


@register_jitable(**HELPER)
def _tile_sum_exp(x, o, i0, w, m, s, part, ties, dest):
    """The second walk: ``s[k] = sum_c exp(x - m[k])`` in float64, and unless ``dest`` is ``None`` the
    exponentials written to ``dest`` (``x``'s layout; Numba prunes the store on a ``None`` argument).

    The exponentials are summed in the dtype of ``part`` and ``ties`` (float32 lanes hold twice as
    many as float64 ones) over ``CLASS_BLOCK`` classes at a time, each block's partial sum then added
    to ``s`` in float64.
    A maximum's exponential is exactly 1: it is counted in ``ties`` and left out of ``part``, whose
    terms are then all below 1, so that a confident position's small ``s - 1`` keeps its relative
    accuracy (a float32 ``1 + small`` would lose it). NaN, ``+inf`` or an all ``-inf`` position
    give NaN, as ``x - m`` does."""
    n_classes = x.shape[1]
    one = like(m[0], 1.0)
    zero = like(m[0], 0.0)
    for c0 in range(0, n_classes, CLASS_BLOCK):
        c1 = c0 + CLASS_BLOCK
        for k_ in range(w):
            k = np.uint64(k_)
            part[k] = zero
            ties[k] = zero
        for c in range(c0, c1 if c1 < n_classes else n_classes):
            for k_ in range(w):
                k = np.uint64(k_)
                d = x[o, c, i0 + k] - m[k]
                e = vexp_nonpos_ftz(d)
                if dest is not None:
                    dest[o, c, i0 + k] = e
                t = one if d == zero else zero
                part[k] += e - t
                ties[k] += t
        for k_ in range(w):
            k = np.uint64(k_)
            s[k] += np.float64(part[k]) + np.float64(ties[k])


def _build_tiled_ce_kernel(sparse, from_logits, int_label, want_grad, parallel, kl, smooth):
    """The class-axis-not-last variant of :func:`build_softmax_ce_kernel`.

    ``x``, ``y`` and ``dx`` are ``(outer, C, inner)`` arrays; a task takes one
    ``outer`` index and a tile of up to ``TILE`` neighbouring ``inner``
    positions, keeps their maxima and sums in small arrays and walks the class
    axis three times over the tile (maximum, and the target logit of class-id
    labels; exponentials, stored in ``dx``, and label sums; gradient), each
    inner loop vectorised along the positions (see :func:`_tile_sum_exp` for
    the sums' precision). The tile (``C * TILE`` logits) stays in cache between
    the walks.
    """
    pick = pick_int if int_label else pick_float
    dense = not sparse
    key = cache_key(parallel)  # see .compile

    def softmax_ce_tiled_kernel(x, label, y, coef, ignore, has_ignore, eps, inner, loss, dx, scratch):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        outer, n_classes, _ = x.shape
        q1, q0 = smoothing(eps, n_classes)
        n_tiles = (inner + TILE - 1) // TILE
        for task in prange(outer * n_tiles):
            o, ui0, w = _tile(task, n_tiles, inner)
            i0 = int(ui0)
            base = o * inner + i0
            acc = np.zeros((6 if kl else 4, TILE))  # float64 per position: sum of exponentials, label sums
            s, syx, sy, sx = acc[0], acc[1], acc[2], acc[3]
            small = np.zeros((5, TILE), dtype=x.dtype)  # in the data's dtype: maxima, picked logits, ...
            m, xj, part, ties, cw = small[0], small[1], small[2], small[3], small[4]
            jj = np.empty(TILE, dtype=np.int32)  # class ids; -1 at ignored positions
            if sparse:
                for k in range(w):
                    lab = label[base + k]
                    jj[k] = -1 if has_ignore and float(lab) == ignore else np.int32(pick(lab, n_classes))
            if not from_logits:
                for k_ in range(w):
                    m[np.uint64(k_)] = -np.inf
                if sparse:
                    _tile_max_pick(x, o, ui0, w, m, jj, xj)
                else:
                    _tile_max(x, o, ui0, w, m)
                if want_grad:  # a closure constant: the exponentials go to dx, rescaled below
                    _tile_sum_exp(x, o, ui0, w, m, s, part, ties, dx)
                else:
                    _tile_sum_exp(x, o, ui0, w, m, s, part, ties, None)
            elif sparse:  # no walk over the classes: gather the target logits
                for k in range(w):
                    j = jj[k]
                    xj[k] = x[o, j if j >= 0 else 0, i0 + k]
            if dense or smooth:  # the label sums (_label_term's terms), sum(x - m)
                # in the data's dtype over CLASS_BLOCK classes, then added to float64 totals (as the
                # exponentials; part, ties and cw are free until the per-position loop below). KL
                # divergence: in float64 (its value, sum(y log y) - sum(y lp), cancels where the
                # two distributions are close, and float32 partial sums were 1.5x less accurate).
                if kl:
                    py, pw = acc[4], acc[5]
                else:
                    py, pw = part, ties
                for c0 in range(0, n_classes, CLASS_BLOCK):
                    for k_ in range(w):
                        k = np.uint64(k_)
                        py[k] = 0.0
                        pw[k] = 0.0
                        cw[k] = 0.0
                    c1 = c0 + CLASS_BLOCK
                    for c in range(c0, c1 if c1 < n_classes else n_classes):
                        for k_ in range(w):
                            k = np.uint64(k_)
                            xv = x[o, c, ui0 + k]
                            if dense:
                                yv = y[o, c, ui0 + k]
                                py[k] += _label_term(yv, xv - m[k], kl)
                                pw[k] += yv
                            if smooth:
                                cw[k] += xv - m[k]
                    for k_ in range(w):
                        k = np.uint64(k_)
                        if dense:
                            syx[k] += np.float64(py[k])
                            sy[k] += np.float64(pw[k])
                        if smooth:
                            sx[k] += np.float64(cw[k])
            one = like(m[0], 1.0)
            c1 = like(one, q1)
            c0 = like(one, q0)
            scale, qsum = part, ties  # free after the sums
            # Per position: the log of the sum, the loss and (gradient) the factors of the gradient walk,
            # a loop without gathers, so that the log vectorises.
            for k_ in range(w):
                k = np.uint64(k_)
                lsum = 0.0 if from_logits else vlog(s[k])  # s = 0 -> -inf; NaN stays NaN
                skip = sparse and jj[k] < 0
                if sparse:  # the one-hot target: sum(y (x - m)) is the picked logit's, sum(y) is 1
                    syk, sk = np.float64(xj[k] - m[k]), 1.0
                else:
                    syk, sk = syx[k], sy[k]
                val = -(q1 * (syk - lsum * sk))  # kl: no smoothing, q1 = 1
                if smooth and eps != 0.0:
                    val -= q0 * (sx[k] - n_classes * lsum)
                loss[np.uint64(base) + k] = 0.0 if skip else val
                if want_grad:
                    scale[k] = like(one, 1.0 / s[k])  # the softmax scale (0 -> inf, NaN stays NaN)
                    qsum[k] = like(one, q1 * sk + eps)  # the sum of the smoothed target
                    cw[k] = like(one, 0.0) if skip else coef[np.uint64(base) + k]
            if not want_grad:
                continue
            for c in range(n_classes):
                cc = np.int32(c)  # compared with the int32 class ids in lanes of their width
                for k_ in range(w):
                    k = np.uint64(k_)
                    ii = ui0 + k
                    if dense:
                        tk = y[o, c, ii]
                    else:
                        tk = one if cc == jj[k] else like(one, 0.0)
                    if from_logits:
                        g = -cw[k] * (c1 * tk + c0)
                    else:
                        g = cw[k] * ((dx[o, c, ii] * scale[k]) * qsum[k] - (c1 * tk + c0))
                    dx[o, c, ii] = like(one, 0.0) if sparse and jj[k] < 0 else g

    name = f"softmax_ce_{'sparse' if sparse else 'dense'}{'_logits' if from_logits else ''}{'_kl' if kl else ''}_tiled"
    twin = functools.partial(build_softmax_ce_kernel, sparse, from_logits, int_label, want_grad)
    return compile_kernel(softmax_ce_tiled_kernel, name, parallel, serial=lambda: twin(False, False, kl, smooth))


@functools.cache
def build_log_softmax_kernel(contiguous, parallel):
    """``lp = x - m - log(sum(exp(x - m)))`` along each row.

    Returns ``kernel(x, inner, n_rows, lp, scratch)``: with ``contiguous``, both arrays
    are ``(positions, C)`` rows and ``scratch`` the compute-dtype rows of :func:`scratch_shapes`;
    otherwise both are ``(outer, C, inner)`` arrays, walked in tiles of ``TILE`` positions as in
    :func:`_build_tiled_ce_kernel` (``inner``, ``n_rows`` and ``scratch`` unused).
    """
    if not contiguous:
        return _build_tiled_log_softmax_kernel(parallel)
    key = cache_key(parallel)  # see .compile

    def log_softmax_kernel(x, inner, n_rows, lp, scratch):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n_classes = x.shape[-1]
        per = rows_per_task(n_classes)
        n_blocks = (n_classes + BLOCK - 1) // BLOCK
        for task in prange((n_rows + per - 1) // per):
            tid = 0
            if parallel:
                tid = get_thread_id()
            buf = scratch[tid, :BLOCK]
            bmax = scratch[tid, BLOCK : BLOCK + n_blocks]
            t1 = task * per + per
            for t in range(task * per, t1 if t1 < n_rows else n_rows):
                xr = x[t]
                m, se = row_max_sum_exp(xr, buf, False, bmax)
                lsum = log_of_sum(se)
                ls = like(xr[0], lsum)
                lr = lp[t]
                for k_ in range(n_classes):
                    k = np.uint64(k_)
                    lr[k] = (xr[k] - m) - ls

    twin = functools.partial(build_log_softmax_kernel, True, False)
    return compile_kernel(log_softmax_kernel, "log_softmax", parallel, serial=twin)


def _build_tiled_log_softmax_kernel(parallel):
    """The class-axis-not-last variant of :func:`build_log_softmax_kernel`: a task walks the class
    axis of ``TILE`` neighbouring positions three times (maximum; sum of exponentials; ``lp``)."""
    key = cache_key(parallel)  # see .compile

    def log_softmax_tiled_kernel(x, inner, n_rows, lp, scratch):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        outer, n_classes, n_inner = x.shape
        n_tiles = (n_inner + TILE - 1) // TILE
        for task in prange(outer * n_tiles):
            o, ui0, w = _tile(task, n_tiles, n_inner)
            small = np.empty((2, TILE), dtype=x.dtype)  # maxima, the logs of the sums
            m, ls = small[0], small[1]
            # float64 partial sums: log-probabilities as accurate as before the cross-entropy kernel's
            # float32 ones (not measured here; this pass's speed was not the aim)
            acc = np.zeros((3, TILE))
            s, part, ties = acc[0], acc[1], acc[2]
            for k_ in range(w):
                m[np.uint64(k_)] = -np.inf
            _tile_max(x, o, ui0, w, m)
            _tile_sum_exp(x, o, ui0, w, m, s, part, ties, None)
            for k_ in range(w):
                k = np.uint64(k_)
                ls[k] = vlog(s[k])  # rounded to x's dtype
            for c in range(n_classes):
                for k_ in range(w):
                    k = np.uint64(k_)
                    lp[o, c, ui0 + k] = (x[o, c, ui0 + k] - m[k]) - ls[k]

    twin = functools.partial(build_log_softmax_kernel, False, False)
    return compile_kernel(log_softmax_tiled_kernel, "log_softmax_tiled", parallel, serial=twin)


@functools.cache
def build_log_softmax_backward_kernel(contiguous, parallel):
    """In place ``u <- u - exp(lp) * sum(u)`` along each row (log-softmax's backward).

    Returns ``kernel(lp, inner, n_rows, u, scratch)``, the arrays as for
    :func:`build_log_softmax_kernel` with the same ``contiguous``.
    """
    if not contiguous:
        return _build_tiled_log_softmax_backward_kernel(parallel)
    key = cache_key(parallel)  # see .compile

    def log_softmax_backward_kernel(lp, inner, n_rows, u, scratch):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n_classes = lp.shape[-1]
        per = rows_per_task(n_classes)
        for task in prange((n_rows + per - 1) // per):
            tid = 0
            if parallel:
                tid = get_thread_id()
            buf = scratch[tid, :BLOCK]
            t1 = task * per + per
            for t in range(task * per, t1 if t1 < n_rows else n_rows):
                ur = u[t]
                lr = lp[t]
                s = 0.0
                for j0 in range(0, n_classes, BLOCK):
                    j1 = j0 + BLOCK if j0 + BLOCK < n_classes else n_classes
                    for j in range(j0, j1):
                        buf[np.uint64(j - j0)] = ur[np.uint64(j)]
                    s += block_sum(buf, j1 - j0)
                sc = like(ur[0], s)
                for k_ in range(n_classes):
                    k = np.uint64(k_)
                    ur[k] = ur[k] - vexp_nonpos_ftz(lr[k]) * sc  # lr <= 0 or NaN; float32: 0 below 2**-126.5

    twin = functools.partial(build_log_softmax_backward_kernel, True, False)
    return compile_kernel(log_softmax_backward_kernel, "log_softmax_backward", parallel, serial=twin)


def _build_tiled_log_softmax_backward_kernel(parallel):
    """The class-axis-not-last variant of :func:`build_log_softmax_backward_kernel` (tiles of
    ``TILE`` positions: the sums of ``u`` in float64, then the update)."""
    key = cache_key(parallel)  # see .compile

    def log_softmax_backward_tiled_kernel(lp, inner, n_rows, u, scratch):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        outer, n_classes, n_inner = u.shape
        n_tiles = (n_inner + TILE - 1) // TILE
        for task in prange(outer * n_tiles):
            o, ui0, w = _tile(task, n_tiles, n_inner)
            s = np.zeros(TILE)
            for c in range(n_classes):
                for k_ in range(w):
                    k = np.uint64(k_)
                    s[k] += u[o, c, ui0 + k]
            sc = np.empty(TILE, dtype=u.dtype)
            for k_ in range(w):
                k = np.uint64(k_)
                sc[k] = s[k]  # rounded to u's dtype
            for c in range(n_classes):
                for k_ in range(w):
                    k = np.uint64(k_)
                    p = vexp_nonpos_ftz(lp[o, c, ui0 + k])  # lp <= 0 or NaN; float32: 0 below 2**-126.5
                    u[o, c, ui0 + k] = u[o, c, ui0 + k] - p * sc[k]

    twin = functools.partial(build_log_softmax_backward_kernel, False, False)
    return compile_kernel(log_softmax_backward_tiled_kernel, "log_softmax_backward_tiled", parallel, serial=twin)
