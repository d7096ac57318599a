"""Fused "elementwise term, then weighted per-row reduction" CPU kernels.

:func:`build_rowmean_kernel` turns one scalar pair from :mod:`..scalar` into a
kernel over the canonical layout ``(n_outer, n_rows, n_inner)``: the batch axis
is the middle one, so any C-contiguous array and any ``batch_axis`` reshape to
it for free. For every batch row ``b`` the kernel computes, in one pass over
the inputs,

.. math::

    \\mathrm{out}_b = s_b \\sum_{o,i} \\ell(x_{obi}, y_{obi}, a_{obi})\\, e_{obi},
    \\qquad
    \\mathrm{dx}_{obi} = c_b\\, e_{obi}\\, \\partial_x \\ell(x_{obi}, y_{obi}, a_{obi})

with ``s`` the forward row scale (``weight * sample_weight / K``), ``c`` the
gradient row scale (the same times the head gradient) and ``e`` an optional
elementwise weight (a sample_weight that varies inside a row).

Work is split into tasks of at most ``CHUNK`` elements: short rows are grouped
several to a task, long rows are cut into chunks whose partial sums are
combined in a fixed order, so the result does not depend on the number of
threads. Terms are evaluated in the compute dtype (float32 loops stay 8 lanes
wide); sums are accumulated in float64 through :func:`.reduce.block_sum`.
"""

import functools

import numpy as np
from numba import get_thread_id, prange
from numba.core import config

from .._options import BLOCK, CHUNK
from ..registry import is_builtin
from .compile import cache_key, compile_kernel
from .reduce import block_sum

_ONE = np.float32(1.0)  # promotes exactly to float64 data; keeps float32 loops in float32


def task_layout(n_outer, n_rows, n_inner):
    """``(group, nck, per_row, n_tasks)`` of the general row kernel for ``(n_outer, n_rows, n_inner)`` inputs.

    Tasks of ``group`` whole rows when rows are short (``group > 1``), else one
    chunk of at most ``CHUNK`` elements of one ``(row, outer)`` slice, ``nck``
    chunks per slice and ``per_row`` partial sums per row. Computed in Python and
    passed to the kernel (``layout``), which saves compiling it at a process's
    first call; it also sizes the scratch arrays (:func:`scratch_shapes`).
    """
    nck = (n_inner + CHUNK - 1) // CHUNK
    nck = nck if nck > 1 else 1
    span = n_outer * n_inner
    span = span if span > 1 else 1
    group = 1
    if nck == 1:
        group = CHUNK // span
        group = group if group > 1 else 1
    per_row = n_outer * nck if group == 1 else 1
    n_tasks = ((n_rows + group - 1) // group) * per_row
    return group, nck, per_row, n_tasks


def scratch_shapes(shape3, rowwise=False):
    """``(bufs, partial)`` shapes of the scratch arrays the row kernel of ``shape3`` needs.

    ``bufs``: one ``BLOCK``-element row (compute dtype) per thread of Numba's
    pool, for the block sums (a task uses the row of the thread running it,
    ``numba.get_thread_id()``, which is below ``get_num_threads()`` and so
    below ``NUMBA_NUM_THREADS``); ``partial`` (float64): the partial sums of
    rows cut into several tasks (no rows when every task covers whole rows).
    The kernels take scratch from the caller rather than allocating it, which
    saves compiling ``np.empty`` at a process's first call (about 0.2 s). The
    caller gives each of its threads its own arrays.
    """
    bufs = (config.NUMBA_NUM_THREADS, BLOCK)  # the same for every input: always the kept array
    if rowwise:  # the map variant reads neither
        return bufs, (0, 1)
    _, _, per_row, _ = task_layout(*shape3)
    return bufs, (0 if per_row == 1 else shape3[1], per_row)


def build_rowmean_kernel(value, grad, has_aux, has_ew, want_grad, parallel, rowwise=False):
    """Compile-on-first-call kernel for one loss term and variant (one dispatcher per variant).

    Parameters
    ----------
    value, grad : register_jitable functions ``f(x, y, a, p0, p1)``
        The term and its derivative w.r.t. ``x``.
    has_aux, has_ew : bool
        Whether the auxiliary input / the elementwise weight are real arrays
        (otherwise a dummy is passed and never read).
    want_grad : bool
        Whether to write the gradient as well as the row values.
    parallel : bool
        ``prange`` over tasks (threads) or a serial loop for small inputs.
    rowwise : bool
        The variant for one element per row (``n_outer == n_inner == 1``, 1-D
        losses): a plain map over the rows instead of a reduction per row. The
        caller guarantees the shape; the general variant handles any shape.

    Returns
    -------
    numba dispatcher
        ``kernel(x, y, aux, ew, p0, p1, fscale, coef, out, dx, bufs, partial, layout)``:
        ``x``, ``y``, ``aux``, ``ew``, ``dx`` of shape ``(n_outer, n_rows, n_inner)``
        and ``p0``, ``p1``, ``coef`` in the compute dtype; ``fscale`` float64 and
        ``out`` of shape ``(n_rows,)``; ``bufs`` (compute dtype) and ``partial``
        (float64) scratch of the shapes :func:`scratch_shapes` gives; ``layout`` the
        four integers of :func:`task_layout` for the shape (read by the general variant).
        Writes ``out``, and ``dx`` if ``want_grad``.

    Notes
    -----
    Each variant holds one ``prange`` loop and one copy of the term: the
    parallel lowering compiles every ``prange`` loop into a function of its own,
    and the inlined term is most of the code, so the variants that a call does
    not need are not compiled with it (seconds at a loss's first use).
    """
    return _build(value, grad, bool(has_aux), bool(has_ew), bool(want_grad), bool(parallel), bool(rowwise))


@functools.cache
def _build(value, grad, has_aux, has_ew, want_grad, parallel, rowwise):
    block = BLOCK
    chunk = CHUNK
    key = cache_key(parallel)  # see .compile

    def rowwise_kernel(x, y, aux, ew, p0, p1, fscale, coef, out, dx, bufs, partial, layout):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        # One element per row: a map over rows, vectorised along the batch axis
        # instead of paying the per-row reduction machinery per element.
        n_rows = x.shape[1]
        for t in prange((n_rows + chunk - 1) // chunk):
            b1 = t * chunk + chunk
            for b_ in range(t * chunk, b1 if b1 < n_rows else n_rows):
                b = np.uint64(b_)
                xv = x[0, b, 0]
                yv = y[0, b, 0]
                av = _ONE
                if has_aux:
                    av = aux[0, b, 0]
                ev = _ONE
                if has_ew:
                    ev = ew[0, b, 0]
                out[b] = value(xv, yv, av, p0, p1) * ev * fscale[b]
                if want_grad:
                    dx[0, b, 0] = coef[b] * grad(xv, yv, av, p0, p1) * ev

    def rowmean_kernel(x, y, aux, ew, p0, p1, fscale, coef, out, dx, bufs, partial, layout):
        if key < 0:  # never true: ties the on-disk cache entry to the sources and the variant
            return
        n_outer, n_rows, n_inner = x.shape
        # Tasks of whole rows (``group`` rows each) write ``out`` themselves; otherwise a task is
        # one chunk of one (row, outer) slice and its partial sum is combined in a fixed order below.
        group, nck, per_row, n_tasks = layout  # task_layout(n_outer, n_rows, n_inner)
        direct = per_row == 1
        for t in prange(n_tasks):
            if group == 1:
                b0 = t // per_row
                r = t - b0 * per_row
                o0 = r // nck
                o1 = o0 + 1
                ck = r - o0 * nck
                b1 = b0 + 1
            else:
                b0 = t * group
                b1 = b0 + group
                b1 = b1 if b1 < n_rows else n_rows
                o0 = 0
                o1 = n_outer
                ck = 0
            i0 = ck * chunk
            i1 = i0 + chunk
            i1 = i1 if i1 < n_inner else n_inner
            # The serial variant must not call ``get_thread_id`` (Numba prunes the branch on the
            # constant): a kernel loaded from the on-disk cache has it resolved only once Numba's
            # threading layer is up, which a parallel kernel's load ensures and a serial one's does
            # not (it crashed). Its one block buffer is row 0.
            tid = 0
            if parallel:
                tid = get_thread_id()
            buf = bufs[tid]  # block values in the compute dtype
            for b in range(b0, b1):
                cb = coef[b]
                total = 0.0
                for o in range(o0, o1):
                    s = 0.0
                    for j0 in range(i0, i1, block):
                        j1 = j0 + block
                        j1 = j1 if j1 < i1 else i1
                        for i_ in range(j0, j1):
                            i = np.uint64(i_)  # unsigned: no negative-index wraparound, so loads vectorise
                            xv = x[o, b, i]
                            yv = y[o, b, i]
                            av = _ONE
                            if has_aux:
                                av = aux[o, b, i]
                            ev = _ONE
                            if has_ew:
                                ev = ew[o, b, i]
                            v = value(xv, yv, av, p0, p1)
                            if has_ew:
                                v = v * ev
                            buf[i_ - j0] = v
                            if want_grad:
                                gv = cb * grad(xv, yv, av, p0, p1)
                                if has_ew:
                                    gv = gv * ev
                                dx[o, b, i] = gv
                        s += block_sum(buf, j1 - j0)
                    total += s  # the slices' sums in order (as the combine below)
                if direct:
                    out[b] = total * fscale[b]
                else:
                    partial[b, t - b * per_row] = total
        # A serial loop (one add per task): a second prange loop would be compiled into
        # a function of its own.
        if not direct:
            for b in range(n_rows):
                s = 0.0
                for r in range(per_row):
                    s += partial[b, r]
                out[b] = s * fscale[b]

    name = f"{value.__name__.removesuffix('_value')}_{'rowwise' if rowwise else 'rowmean'}"
    kernel = rowwise_kernel if rowwise else rowmean_kernel
    twin = functools.partial(_build, value, grad, has_aux, has_ew, want_grad, False, rowwise)
    return compile_kernel(kernel, name, parallel, cache=is_builtin(value, grad), serial=twin)


build_rowmean_kernel.cache_info = _build.cache_info  # the variants built so far
