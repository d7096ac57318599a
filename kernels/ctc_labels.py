r"""CTC label preparation, shared by the CPU and CUDA paths (runs on the host).

The dispatcher hands the label rows (as float64, in ``(N, Lw)`` order) and the
optional label lengths to :func:`scan_labels`, which applies MXNet's rules of
docs/semantics.rst section 7 in one compiled pass over the labels:

* every value is rounded by ``lround`` (half away from zero);
* with label lengths, sample :math:`b` uses its first
  :math:`L_b = \mathrm{lround}(\mathrm{label\_lengths}_b)` entries; without
  them, the entries before the first padding value (``-1`` when the blank is
  the last class, ``0`` when it is the first);
* entries after those are never read (NaN included).

It writes the packed class ids, :math:`L_b`, the number of repeats
:math:`R_b` (adjacent equal labels, which need a blank between them) and,
for the gradient, a chain through equal labels: ``first[b, i]`` marks the
first occurrence of a non-blank class in the label and ``chain[b, i]`` the
next position with the same class (``-1`` at the end). A class's
:math:`\gamma` is the log-sum over its chain, in increasing position.

:func:`plan_labels` runs it after the frame counts (``pred_lengths``) and
adds what the kernels need per sample: the feasibility
:math:`L_b + R_b \le T_b` and the offsets of the samples' blocks in the flat
scratch arrays, in one compiled call.

Nothing is raised here: a problem is returned as ``(code, sample, position,
value)`` for the dispatcher to turn into a ``ValueError`` (the codes are
:data:`OK`, :data:`BAD_LENGTH`, :data:`NOT_FINITE`, :data:`OUT_OF_ALPHABET`,
:data:`BAD_PRED_LENGTH`).
"""

import math

import numpy as np

from ._options import NO_WRAPPERS
from .cache import njit_cached

OK = 0
BAD_LENGTH = 1  # label_lengths[b] NaN/inf, or lround outside [0, Lw]
NOT_FINITE = 2  # a used label value is NaN or infinite
OUT_OF_ALPHABET = 3  # a used label value rounds outside [0, C)
BAD_PRED_LENGTH = 4  # pred_lengths[b] NaN/inf, or lround outside [0, T]

# The helpers below are called from compiled code only (NO_WRAPPERS); plan_labels, called from
# Python, keeps its CPython wrapper.


@njit_cached(**NO_WRAPPERS)
def lround(v):
    """C's ``lround`` of a finite float64: nearest integer, halves away from zero."""
    a = abs(v)
    r = math.floor(a)
    if a - r >= 0.5:  # a - r is exact
        r += 1.0
    return -r if v < 0.0 else r


@njit_cached(**NO_WRAPPERS)
def length_or_minus_one(v, limit):
    """``lround(v)`` as an int when ``v`` is finite and that lies in ``[0, limit]``, else -1."""
    if not math.isfinite(v):
        return -1
    r = lround(v)
    if r < 0.0 or r > limit:
        return -1
    return int(r)


@njit_cached(**NO_WRAPPERS)
def scan_labels(rows, lengths, use_lengths, pad, blank, n_classes, lab, llen, reps, chain, first):
    """Fill ``lab``, ``llen``, ``reps``, ``chain``, ``first`` from ``rows`` (see the module docstring).

    ``rows``: ``(N, Lw)`` float64; ``lengths``: ``(N,)`` float64 (read when
    ``use_lengths``); ``lab``/``chain``: ``(N, max(Lw, 1))`` int32;
    ``first``: same shape, uint8; ``llen``/``reps``: ``(N,)`` int32.
    Returns ``(code, sample, position, value)``; ``code == OK`` on success.
    """
    n, width = rows.shape
    # per class: the sample that last touched it (row 0) and its latest position there (row 1);
    # np.empty and a loop rather than np.full / np.zeros (fewer functions to compile at first use)
    seen_last = np.empty((2, n_classes), dtype=np.int64)
    seen = seen_last[0]
    last = seen_last[1]
    for k in range(n_classes):
        seen[k] = -1
        last[k] = 0
    for b in range(n):
        if use_lengths:
            v = lengths[b]
            n_used = length_or_minus_one(v, width)
            if n_used < 0:
                return BAD_LENGTH, b, -1, v
        else:
            n_used = width
        count = 0
        for i in range(n_used):
            v = rows[b, i]
            if not math.isfinite(v):
                return NOT_FINITE, b, i, v
            r = lround(v)
            if not use_lengths and r == pad:
                break
            if r < 0.0 or r >= n_classes:
                return OUT_OF_ALPHABET, b, i, v
            lab[b, i] = int(r)
            count += 1
        llen[b] = count
        rep = 0
        for i in range(count):
            k = lab[b, i]
            if i > 0 and k == lab[b, i - 1]:
                rep += 1
            chain[b, i] = -1
            first[b, i] = 0
            if k == blank:  # the blank's gamma is summed over all its positions directly
                continue
            if seen[k] == b:
                chain[b, last[k]] = i
            else:
                first[b, i] = 1
                seen[k] = b
            last[k] = i
        reps[b] = rep
    return OK, -1, -1, 0.0


@njit_cached(no_cfunc_wrapper=True)
def plan_labels(
    rows, lengths, use_lengths, pred_lengths, use_pred_lengths, n_t, pad, blank, n_classes, ints, labs, first, offs
):
    """Frame counts, packed labels, feasibility and block offsets of one CTC call.

    ``rows``: ``(N, Lw)`` float64 label rows; ``lengths``, ``pred_lengths``:
    ``(N,)`` float64 (read when ``use_lengths`` / ``use_pred_lengths``);
    ``n_t`` the frames of ``pred``. Fills ``ints`` ``(6, N)`` int32 with the
    rows :math:`T_b` (``lround`` of the pred length, else ``n_t``), ``gmask``
    (``max(trunc(pred length), 0)``, else ``n_t``), :math:`L_b`, ``feasible``
    (0/1), :math:`R_b` and the distinct non-blank classes :math:`U_b`;
    ``labs`` ``(2, N, max(Lw, 1))`` int32 with the packed labels and their
    ``chain`` (``-1`` where unused); ``first`` ``(N, max(Lw, 1))`` uint8 (0
    where unused); ``offs`` ``(2, N + 1)`` int64 with the cumulative sizes
    :math:`T_b (2 L_b + 1)` and :math:`T_b (1 + U_b)`. Returns ``(code,
    sample, position, value)`` as :func:`scan_labels` does; the pred lengths
    are checked first (:data:`BAD_PRED_LENGTH`, position ``-1``).
    """
    n = ints.shape[1]
    tlen = ints[0]
    gmask = ints[1]
    llen = ints[2]
    feasible = ints[3]
    reps = ints[4]
    distinct = ints[5]
    for b in range(n):
        if use_pred_lengths:
            v = pred_lengths[b]
            tb = length_or_minus_one(v, n_t)
            if tb < 0:
                return BAD_PRED_LENGTH, b, -1, v
            tlen[b] = tb
            g = math.trunc(v)  # MXNet's SequenceMask truncates
            gmask[b] = int(g) if g > 0.0 else 0
        else:
            tlen[b] = n_t
            gmask[b] = n_t
    lab = labs[0]
    chain = labs[1]
    for b in range(n):
        for i in range(lab.shape[1]):
            lab[b, i] = 0
            chain[b, i] = -1
            first[b, i] = 0
    code, b, i, v = scan_labels(rows, lengths, use_lengths, pad, blank, n_classes, lab, llen, reps, chain, first)
    if code != OK:
        return code, b, i, v
    off = offs[0]
    goff = offs[1]
    off[0] = 0
    goff[0] = 0
    for b in range(n):
        feasible[b] = 1 if llen[b] + reps[b] <= tlen[b] else 0
        u = 0
        for i in range(llen[b]):
            u += first[b, i]
        distinct[b] = u
        off[b + 1] = off[b] + np.int64(tlen[b]) * (2 * np.int64(llen[b]) + 1)
        goff[b + 1] = goff[b] + np.int64(tlen[b]) * (1 + np.int64(u))
    return OK, -1, -1, 0.0
