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

Nothing is raised here: a problem is returned as ``(code, sample, position,
value)`` for the dispatcher to turn into a ``ValueError`` (the codes are
:data:`OK`, :data:`BAD_LENGTH`, :data:`NOT_FINITE`, :data:`OUT_OF_ALPHABET`).
"""

import math

import numpy as np

from .cache import njit_cached

OK = 0
BAD_LENGTH = 1  # label_lengths[b] NaN/inf, or lround outside [0, Lw]
NOT_FINITE = 2  # a used label value is NaN or infinite
OUT_OF_ALPHABET = 3  # a used label value rounds outside [0, C)


@njit_cached()
def lround(v):
    """C's ``lround`` of a finite float64: nearest integer, halves away from zero."""
    a = abs(v)
    r = math.floor(a)
    if a - r >= 0.5:  # a - r is exact
        r += 1.0
    return -r if v < 0.0 else r


@njit_cached()
def scan_labels(rows, lengths, use_lengths, pad, blank, n_classes, lab, llen, reps, chain, first):
    """Fill ``lab``, ``llen``, ``reps``, ``chain``, ``first`` from ``rows`` (see the module docstring).

    ``rows``: ``(N, Lw)`` float64; ``lengths``: ``(N,)`` float64 (read when
    ``use_lengths``); ``lab``/``chain``: ``(N, max(Lw, 1))`` int32;
    ``first``: same shape, uint8; ``llen``/``reps``: ``(N,)`` int32.
    Returns ``(code, sample, position, value)``; ``code == OK`` on success.
    """
    n, width = rows.shape
    seen = np.full(n_classes, -1, dtype=np.int64)  # sample that last touched the class
    last = np.zeros(n_classes, dtype=np.int64)  # its latest position in that sample
    for b in range(n):
        if use_lengths:
            v = lengths[b]
            if not math.isfinite(v):
                return BAD_LENGTH, b, -1, v
            r = lround(v)
            if r < 0.0 or r > width:
                return BAD_LENGTH, b, -1, v
            n_used = int(r)
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
