r"""The softmax family over Dask arrays whose class axis is chunked: merged, never rechunked.

A row of logits :math:`x` (one position of ``pred`` along the class axis) is
cut into class chunks :math:`k`. Pass 1 runs blockwise on every
(position chunk, class chunk) block and writes, per position, the chunk's

.. math::

    m_k = \max_{i \in k} x_i, \quad s_k = \sum_{i \in k} e^{x_i - m_k}, \quad
    a_k = \sum_{i \in k} y_i (x_i - m_k), \quad b_k = \sum_{i \in k} y_i, \quad
    c_k = \sum_{i \in k} (x_i - m_k), \quad n_k, \quad x_{j}\,[j \in k]

(dense label :math:`y`; :math:`x_j` the logit of a class-id label when the
chunk holds it, else 0). These seven numbers are merged exactly by a Dask
tree reduction over the class chunks, the online-softmax combine: with
:math:`M = \max_k m_k` and :math:`\delta_k = m_k - M`,

.. math::

    S = \sum_k s_k e^{\delta_k}, \quad A = \sum_k (a_k + b_k \delta_k), \quad
    C' = \sum_k (c_k + n_k \delta_k)

(:math:`A = \sum_i y_i (x_i - M)` and :math:`C' = \sum_i (x_i - M)`: the shift
by the row maximum keeps huge logits exact, as the in-memory kernel does).
With :math:`L = \log S`, the target :math:`q = q_1 t + q_0` of
``label_smoothing`` :math:`\varepsilon` (:math:`q_1 = 1 - \varepsilon`,
:math:`q_0 = \varepsilon / C`), the loss of a position is

.. math:: \ell = -q_1 (A - L B) - q_0 (C' - C L)

(class ids: :math:`A = x_j - M`, :math:`B = 1`), weighted and averaged over
the non-batch axes as in memory. ``from_logits`` needs no maximum: every
:math:`m_k = 0` and the merge is a plain sum. Pass 2 (gradients only) runs
blockwise again, from each block's logits and its positions' :math:`(M, L)`:
:math:`c\,(p\,(q_1 B + \varepsilon) - q)`, :math:`p = e^{x - M - L}`, the
in-memory gradient with the same per-position scale :math:`c`.

KLDivLoss(from_logits=False) uses the merged :math:`(M, L)` to form the
log-probabilities :math:`x - M - L` blockwise, runs the elementwise KLDivLoss
on them (whose rows may be split), and forms the log-softmax backward
:math:`u - p \sum u` with one more tree sum over the class chunks.

Masked logits follow the in-memory call: a chunk whose logits are all
``-inf`` (or NaN) keeps its sums unshifted (0 or NaN), a row whose maximum is
``-inf`` gives NaN, a NaN or ``+inf`` logit makes its row NaN.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from ._core.request import Call, is_dask_array, is_scalar
from ._core.validate import compute_dtype, normalize_axis
from ._plan.softmax import KLDivSpec, SoftmaxSpec, class_layout, extended, label_values, pick_classes

__all__ = ["merge_applies", "run_merged"]

_NSTATS = 7  # m, s, sum y (x - m), sum y, sum (x - m), n, picked logit
_M, _S, _YX, _Y, _X, _N, _PICK = range(_NSTATS)
_MAX_NDIM = 24  # blockwise index letters: a, b, ... for pred's axes; "z" and "Z" are taken


def _is_dask(a: Any) -> bool:
    return is_dask_array(a) and hasattr(a, "chunks")


def reshaped(a: Any, shape: tuple[int, ...]) -> Any:
    """``a.reshape(shape)`` for a NumPy or Dask array of as many elements (MXNet's ``reshape_like``).

    Dask reshapes lazily only what merges or splits whole dimensions (``(8, 30) -> (8, 6, 5)``);
    any other pair of shapes (``(5, 7) -> (7, 5)``) goes through the flat array, which Dask can
    always rechunk to.
    """
    shape = tuple(shape)
    if tuple(a.shape) == shape:
        return a
    if not _is_dask(a):
        return a.reshape(shape)
    try:
        return a.reshape(shape)
    except NotImplementedError:
        return a.reshape(-1).reshape(shape)


def merge_applies(spec: SoftmaxSpec | KLDivSpec, named: dict[str, Any], og: Any) -> bool:
    """Whether a softmax-family call over Dask arrays takes the merged path.

    It does when ``pred`` is a Dask array of NumPy chunks whose class axis is
    in several chunks, nothing is empty, and (SoftmaxCELoss) the batch axis is
    not the class axis and ``sample_weight`` does not grow the per-position
    loss. Otherwise the caller rechunks the class axis to one chunk.
    """
    x = named["pred"]
    if not _is_dask(x) or not 0 < x.ndim <= _MAX_NDIM or 0 in x.shape:
        return False
    arrays = [a for a in (*named.values(), og) if _is_dask(a)]
    if not all(type(a._meta) is np.ndarray for a in arrays):
        return False  # CuPy chunks: the blockwise calls of the in-memory kernels (class axis whole)
    lay = class_layout(tuple(x.shape), spec.axis)
    if len(x.chunks[lay.axis]) < 2:
        return False
    if isinstance(spec, KLDivSpec):
        return True
    if extended(spec):
        return False  # class_weight / normalization: the in-memory kernels, on whole class axes
    if normalize_axis(spec.batch_axis, x.ndim) == lay.axis:
        return False
    sw = named.get("sample_weight")
    if sw is not None and not is_scalar(sw):
        shape = tuple(np.shape(sw))
        try:
            grows = len(shape) > x.ndim or np.broadcast_shapes(shape, lay.keep_shape) != lay.keep_shape
        except ValueError:
            return False
        if grows:
            return False
    return True


def run_merged(
    loss: Any, spec: SoftmaxSpec | KLDivSpec, call: Call, named: dict[str, Any], og: Any, out_sd: Any, grad_sds: Any
) -> tuple[Any, tuple[Any, ...] | None]:
    """``(value or None, grads or None)`` as Dask arrays, by the merged passes (see the module docstring).

    ``loss`` is the loss object (KLDivLoss runs a ``from_logits=True`` copy
    of it on the log-probabilities); ``named`` holds the call's inputs (lists already made arrays), ``og`` the
    head gradient (or None), ``out_sd`` / ``grad_sds`` the shapes and dtypes
    from :meth:`~numba_losses.Loss.result_shapes`; the inputs were checked there.
    """
    x = named["pred"]
    lay = class_layout(tuple(x.shape), spec.axis)
    cdt = compute_dtype("pred", x)
    if isinstance(spec, KLDivSpec):
        return _kldiv(loss, spec, call, named, og, out_sd, grad_sds, x, lay, cdt)
    return _softmax_ce(spec, call, named, og, out_sd, grad_sds, x, lay, cdt)


# ------------------------------------------------------------------------------- graph building
class _Axes:
    """Blockwise index letters: ``full`` for ``pred``, ``keep`` with the class axis of size 1."""

    def __init__(self, ndim: int, cax: int) -> None:
        self.full = "".join(chr(ord("a") + i) for i in range(ndim))
        self.cls = self.full[cax]
        self.keep = self.full.replace(self.cls, "Z")  # one chunk of size 1: contracted where not in the output


def _keep_chunks(x: Any, cax: int) -> tuple[tuple[int, ...], ...]:
    return tuple((1,) if d == cax else c for d, c in enumerate(x.chunks))


def _as_dask(a: Any, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """``a`` (NumPy or Dask) as a Dask array of ``chunks``."""
    import dask.array as da

    return a.rechunk(chunks) if _is_dask(a) else da.from_array(np.asarray(a), chunks=chunks)


def _broadcastable(a: Any, shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> Any:
    """``a`` with ``len(shape)`` dimensions, chunked like ``chunks`` where it spans an axis (size 1 elsewhere)."""
    a = a if _is_dask(a) else np.asarray(a)
    a = a.reshape((1,) * (len(shape) - a.ndim) + tuple(a.shape))
    return _as_dask(a, tuple(c if n == s else (1,) for n, s, c in zip(a.shape, shape, chunks, strict=True)))


def _class_offsets(x: Any, cax: int) -> Any:
    """The class ids, chunked like ``pred``'s class axis: a block's first entry is its offset."""
    import dask.array as da

    return da.arange(x.shape[cax], chunks=(x.chunks[cax],), dtype=np.int64)


def _stats(x, lab, cdt, lay, ax: _Axes, sparse: bool, dense: bool, smooth: bool, from_logits: bool) -> Any:
    """Pass 1 and the tree merge: per position the merged seven numbers (``keep_shape + (7,)``, float64)."""
    import dask.array as da

    n = x.ndim
    args: list[Any] = [x, ax.full]
    if lab is None:
        args += [None, None]
    else:
        args += [lab, ax.full if dense else ax.keep]
    args += [_class_offsets(x, lay.axis), ax.cls]
    pass1 = _Pass1(lay.axis, lay.n_classes, cdt, sparse, dense, smooth, from_logits)
    parts = da.blockwise(
        pass1,
        ax.full + "z",
        *args,
        new_axes={"z": _NSTATS},
        adjust_chunks={ax.cls: 1},
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0,) * (n + 1), np.float64),
        token="softmax-pass1",
    )
    merge = _Merge()
    return da.reduction(
        parts,
        _identity,
        merge,
        combine=merge,
        axis=lay.axis,
        keepdims=True,
        dtype=np.float64,
        concatenate=True,
        meta=np.empty((0,) * (n + 1), np.float64),
        name="softmax-merge",
    )


def _identity(a: np.ndarray, axis: Any = None, keepdims: bool = True, **_: Any) -> np.ndarray:
    return a


# ------------------------------------------------------------------------------- SoftmaxCELoss
def _softmax_ce(spec: SoftmaxSpec, call: Call, named, og, out_sd, grad_sds, x, lay, cdt):
    import dask.array as da

    ax = _Axes(x.ndim, lay.axis)
    keep_chunks = _keep_chunks(x, lay.axis)
    sparse, smooth = spec.sparse, spec.eps != 0.0
    label = named["label"]
    if sparse:
        label = label if _is_dask(label) else np.asarray(label)
        label = _as_dask(reshaped(label, lay.keep_shape), keep_chunks)  # the class axis put back, of size 1
    else:  # MXNet's reshape_like, then pred's chunks
        label = label if _is_dask(label) else np.asarray(label)
        label = _as_dask(reshaped(label, x.shape), x.chunks)
    st = _stats(x, label, cdt, lay, ax, sparse, not sparse, smooth, spec.from_logits)
    fin = da.blockwise(
        _Finish(spec, lay.n_classes),
        ax.keep + "z",
        st,
        ax.keep + "z",
        label if sparse else None,
        ax.keep if sparse else None,
        adjust_chunks={"z": 4},
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0,) * (x.ndim + 1), np.float64),
        token="softmax-finish",
    )
    ba = normalize_axis(spec.batch_axis, x.ndim)
    others = tuple(d for d in range(x.ndim) if d != ba)
    k = math.prod(lay.keep_shape[d] for d in others)
    scale = spec.weight / k
    sw = named.get("sample_weight")
    swc = None if sw is None else _broadcastable(_cast(sw, cdt), lay.keep_shape, keep_chunks).astype(np.float64)

    value = None
    if call.want_value:
        ell = fin[..., 0].map_blocks(_Cast(cdt, np.float64), dtype=np.float64)  # the kernel's loss dtype
        weighted = ell if swc is None else ell * swc
        value = (weighted.sum(axis=others) * scale).map_blocks(_Cast(cdt, out_sd.dtype), dtype=out_sd.dtype)
    grads = None
    if call.want_grad:
        coef = da.full(lay.keep_shape, scale, dtype=np.float64, chunks=keep_chunks)
        if og is not None:
            g = og if _is_dask(og) else np.asarray(og, dtype=np.float64)
            shape_b = [1] * x.ndim
            shape_b[ba] = int(np.prod(g.shape, dtype=np.int64))
            coef = coef * _broadcastable(g.reshape(shape_b), lay.keep_shape, keep_chunks).astype(np.float64)
        if swc is not None:
            coef = coef * swc
        coef = coef.astype(cdt).rechunk(keep_chunks)
        dx = da.blockwise(
            _Pass2(spec, lay.axis, lay.n_classes, cdt, np.dtype(grad_sds[0].dtype)),
            ax.full,
            x,
            ax.full,
            label,
            ax.full if not sparse else ax.keep,
            fin,
            ax.keep + "z",
            coef,
            ax.keep,
            _class_offsets(x, lay.axis),
            ax.cls,
            concatenate=True,
            dtype=grad_sds[0].dtype,
            meta=np.empty((0,) * x.ndim, grad_sds[0].dtype),
            token="softmax-pass2",
        )
        grads = (dx,)
    return value, grads


def _cast(a: Any, dtype: np.dtype) -> Any:
    """``a`` in ``dtype`` (the in-memory call casts ``sample_weight`` to the compute dtype first)."""
    return a.astype(dtype) if _is_dask(a) else np.asarray(a).astype(dtype)


# ------------------------------------------------------------------------------- KLDivLoss
def _kldiv(loss, spec: KLDivSpec, call: Call, named, og, out_sd, grad_sds, x, lay, cdt):
    import dask.array as da

    ax = _Axes(x.ndim, lay.axis)
    st = _stats(x, None, cdt, lay, ax, False, False, False, False)
    lp = da.blockwise(
        _LogProb(cdt),
        ax.full,
        x,
        ax.full,
        st,
        ax.keep + "z",
        concatenate=True,
        dtype=cdt,
        meta=np.empty((0,) * x.ndim, cdt),
        token="kldiv-logsoftmax",
    )
    inner = copy.copy(loss)  # the same weight and batch axis, on log-probabilities: the elementwise family
    inner._from_logits = True
    rest = {"label": named["label"], "sample_weight": named.get("sample_weight")}
    rest = {k: v for k, v in rest.items() if v is not None}
    if call.want_grad:
        value, (u,) = inner.forward_backward(lp, out_grad=og, **rest)
        if not call.want_value:
            value = None
    else:
        value, u = inner(lp, **rest), None
    if value is not None and value.dtype != out_sd.dtype:
        value = value.map_blocks(_Cast(out_sd.dtype), dtype=out_sd.dtype)
    grads = None
    if u is not None:
        total = u.astype(np.float64).sum(axis=lay.axis, keepdims=True)  # a tree sum over the class chunks
        rdt = np.dtype(grad_sds[0].dtype)
        dx = da.blockwise(
            _LogSoftmaxBackward(rdt),
            ax.full,
            u,
            ax.full,
            lp,
            ax.full,
            total,
            ax.keep,
            concatenate=True,
            dtype=rdt,
            meta=np.empty((0,) * x.ndim, rdt),
            token="kldiv-backward",
        )
        grads = (dx,)
    return value, grads


class _LogProb:
    """Per block: the in-memory log-softmax ``(x - M) - log S``, each step in the compute dtype."""

    def __init__(self, cdt: np.dtype) -> None:
        self.cdt = np.dtype(cdt)

    def __call__(self, x: np.ndarray, st: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            top = st[..., _M].astype(self.cdt)
            lse = np.log(st[..., _S]).astype(self.cdt)
            return (x.astype(self.cdt, copy=False) - top) - lse


class _LogSoftmaxBackward:
    """Per block: ``u - exp(lp) * sum(u)`` (the row sum merged over the class chunks), then the result dtype."""

    def __init__(self, rdt: np.dtype) -> None:
        self.rdt = rdt

    def __call__(self, u: np.ndarray, lp: np.ndarray, total: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            return (u - np.exp(lp) * total.astype(u.dtype)).astype(self.rdt, copy=False)


class _Cast:
    """``astype`` without overflow warnings (the in-memory call rounds huge values to inf silently)."""

    def __init__(self, *dtypes: np.dtype) -> None:
        self.dtypes = dtypes

    def __call__(self, a: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            for dt in self.dtypes:
                a = a.astype(dt, copy=False)
            return a


# ------------------------------------------------------------------------------- block functions
class _Pass1:
    """Per block: the seven numbers of every position over the block's classes."""

    def __init__(self, cax, n_classes, cdt, sparse, dense, smooth, from_logits) -> None:
        self.cax, self.n_classes, self.cdt = cax, n_classes, np.dtype(cdt)
        self.sparse, self.dense, self.smooth, self.from_logits = sparse, dense, smooth, from_logits

    def __call__(self, x: np.ndarray, lab: np.ndarray | None, off: np.ndarray) -> np.ndarray:
        ax = self.cax
        x = x.astype(self.cdt, copy=False)
        n = x.shape[ax]
        keep = x.shape[:ax] + (1,) + x.shape[ax + 1 :]
        out = np.zeros(keep + (_NSTATS,), np.float64)
        out[..., _N] = n
        if self.from_logits:
            shift = np.zeros(keep, self.cdt)
        else:
            m = np.fmax.reduce(x, axis=ax, keepdims=True, initial=-np.inf)  # NaN ignored, as the kernel
            shift = np.where(m == -np.inf, 0, m).astype(self.cdt)  # all -inf or NaN: sums kept unshifted
            with np.errstate(invalid="ignore", over="ignore"):
                # exponentials in the compute dtype, summed in float64 (the kernel's rounding)
                e = np.subtract(x, shift)
                np.exp(e, out=e)
                out[..., _S] = e.sum(axis=ax, dtype=np.float64, keepdims=True)
                del e
            out[..., _M] = m
        if self.dense or self.smooth:
            with np.errstate(invalid="ignore"):
                d = x.astype(np.float64) - shift.astype(np.float64)
                if self.dense:
                    y = lab.astype(self.cdt, copy=False).astype(np.float64)
                    out[..., _YX] = (y * d).sum(axis=ax, keepdims=True)
                    out[..., _Y] = y.sum(axis=ax, keepdims=True)
                if self.smooth:
                    out[..., _X] = d.sum(axis=ax, keepdims=True)
        if self.sparse and n:  # a block of no classes (a zero-length chunk) holds no label
            local = pick_classes(lab, self.n_classes) - int(off[0])
            inside = (local >= 0) & (local < n)
            picked = np.take_along_axis(x, np.clip(local, 0, n - 1), axis=ax).astype(np.float64)
            out[..., _PICK] = np.where(inside, picked, 0.0)
        return out


class _Merge:
    """The online-softmax combine of several chunks' seven numbers along ``axis`` (exact, associative)."""

    def __call__(self, st: np.ndarray, axis: Any = None, keepdims: bool = True, **_: Any) -> np.ndarray:
        m = st[..., _M]
        top = m.max(axis=axis, keepdims=True)
        with np.errstate(invalid="ignore", over="ignore"):
            delta = np.where((m == top) | (m == -np.inf), 0.0, m - top)
            out = np.empty(top.shape + (_NSTATS,), np.float64)
            out[..., _M] = top
            out[..., _S] = (st[..., _S] * np.exp(delta)).sum(axis=axis, keepdims=True)
            out[..., _YX] = (st[..., _YX] + st[..., _Y] * delta).sum(axis=axis, keepdims=True)
            out[..., _Y] = st[..., _Y].sum(axis=axis, keepdims=True)
            out[..., _X] = (st[..., _X] + st[..., _N] * delta).sum(axis=axis, keepdims=True)
            out[..., _N] = st[..., _N].sum(axis=axis, keepdims=True)
            out[..., _PICK] = st[..., _PICK].sum(axis=axis, keepdims=True)
        return out


class _Finish:
    """Per position, from the merged numbers: ``(loss, M, log S, sum of the target)`` (float64)."""

    def __init__(self, spec: SoftmaxSpec, n_classes: int) -> None:
        self.spec, self.n_classes = spec, n_classes

    def __call__(self, st: np.ndarray, lab: np.ndarray | None) -> np.ndarray:
        spec, c = self.spec, self.n_classes
        q1, q0 = 1.0 - spec.eps, spec.eps / c
        top = st[..., _M]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            lse = np.zeros_like(top) if spec.from_logits else np.log(st[..., _S])
            if spec.sparse:
                yx, y = st[..., _PICK] - top, 1.0
            else:
                yx, y = st[..., _YX], st[..., _Y]
            val = -(q1 * (yx - lse * y))
            if spec.eps != 0.0:
                val = val - q0 * (st[..., _X] - c * lse)
            if not spec.from_logits:
                val = np.where(top == -np.inf, np.nan, val)  # x - max is NaN on such a row in memory
        if spec.has_ignore:
            val = np.where(label_values(lab) == spec.ignore, 0.0, val)
        out = np.empty(top.shape + (4,), np.float64)
        out[..., 0] = val
        out[..., 1] = top
        out[..., 2] = lse
        out[..., 3] = q1 * y + spec.eps
        return out


class _Pass2:
    """Per block: the gradient ``c (p (q_1 B + eps) - q)`` from the block's logits and its rows' ``(M, log S)``."""

    def __init__(self, spec: SoftmaxSpec, cax: int, n_classes: int, cdt: np.dtype, rdt: np.dtype) -> None:
        self.spec, self.cax, self.n_classes, self.cdt, self.rdt = spec, cax, n_classes, np.dtype(cdt), rdt

    def __call__(self, x, lab, fin, coef, off) -> np.ndarray:
        spec, ax, cdt = self.spec, self.cax, self.cdt
        x = x.astype(cdt, copy=False)
        n = x.shape[ax]
        q1, q0 = cdt.type(1.0 - spec.eps), cdt.type(spec.eps / self.n_classes)
        with np.errstate(invalid="ignore", over="ignore"):
            if spec.from_logits:
                g = np.zeros(x.shape, cdt)
            else:  # in place: one block-sized array (the largest blocks are the reason to chunk classes)
                top, qsum = fin[..., 1].astype(cdt), fin[..., 3].astype(cdt)
                g = np.subtract(x, top)
                np.exp(g, out=g)
                g *= np.exp(-fin[..., 2]).astype(cdt)  # 1 / S
                g *= qsum
            if spec.sparse and n:  # minus q0 everywhere and q1 + q0 (rounded once, as in memory) at the label
                local = pick_classes(lab, self.n_classes) - int(off[0])
                inside = (local >= 0) & (local < n)
                local = np.clip(local, 0, n - 1)
                at = np.take_along_axis(g, local, axis=ax)
                if q0:
                    g -= q0
                np.put_along_axis(g, local, np.where(inside, at - (q1 + q0), at - q0), axis=ax)
            else:
                g -= q1 * lab.astype(cdt, copy=False) + q0
            g *= coef
        if spec.has_ignore:
            g[np.broadcast_to(label_values(lab) == spec.ignore, g.shape)] = 0
        return g.astype(self.rdt, copy=False)
