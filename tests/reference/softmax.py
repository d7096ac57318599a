"""Independent float64 NumPy references of SoftmaxCrossEntropyLoss and KLDivLoss(from_logits=False).

Used by ``tests/test_softmax.py``: log-softmax by ``max`` shift, MXNet's pick
rule, weighting and the mean over the non-batch axes, and the gradients.
"""

from __future__ import annotations

import math

import numpy as np


def pick_ref(label, n_classes):
    """MXNet's class id (docs/semantics.rst section 5), in plain NumPy."""
    lab = np.asarray(label)
    if lab.dtype.kind == "f":
        v = lab.astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(v) & (v >= -(2.0**31)) & (v < 2.0**31)
        j = np.where(ok, np.trunc(np.where(ok, v, 0.0)), -(2.0**31)).astype(np.int64)
    else:
        j = lab.astype(np.int64) & 0xFFFFFFFF
        j = np.where(j >= 2**31, j - 2**32, j)
    return np.clip(j, 0, n_classes - 1)


def _log_softmax(x, ax):
    m = x.max(axis=ax, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        return x - m - np.log(np.exp(x - m).sum(axis=ax, keepdims=True))


def _mean_nb(w, batch_axis, reduce="mean"):
    if w.ndim == 1:
        return w
    moved = np.moveaxis(w, batch_axis, 0).reshape(w.shape[batch_axis], -1)
    return moved.mean(axis=1) if reduce == "mean" else moved.sum(axis=1)


def _unbroadcast(g, shape):
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and g.shape[d] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _head_scale(keep_shape, sw, weight, batch_axis, head):
    """d out / d loss-before-weighting, shape ``keep_shape`` (MXNet's weighting and mean)."""
    wshape = np.broadcast_shapes(keep_shape, np.shape(sw)) if sw is not None else keep_shape
    k = math.prod(wshape) // wshape[batch_axis] if len(wshape) > 1 else 1
    hb = np.ones(wshape[batch_axis]) if head is None else np.asarray(head, np.float64)
    hshape = [1] * len(wshape)
    hshape[batch_axis] = wshape[batch_axis]
    h = np.broadcast_to(hb.reshape(hshape) / k * (1.0 if weight is None else weight), wshape)
    if sw is not None:
        h = h * np.asarray(sw, np.float64)
    return _unbroadcast(h, keep_shape)


def ref_softmax_ce(x, label, sw=None, *, axis=-1, sparse=True, from_logits=False, weight=None, batch_axis=0,
                   ignore=None, eps=0.0, head=None):  # fmt: skip
    """(out, dx) in float64."""
    x = np.asarray(x, np.float64)
    ax = axis % x.ndim
    n = x.shape[ax]
    keep = x.shape[:ax] + (1,) + x.shape[ax + 1 :]
    lp = x if from_logits else _log_softmax(x, ax)
    if sparse:
        lab = np.asarray(label).reshape(keep)
        j = pick_ref(lab, n)
        t = (np.arange(n).reshape([-1 if d == ax else 1 for d in range(x.ndim)]) == j).astype(np.float64)
    else:
        t = np.asarray(label, np.float64).reshape(x.shape)
    q = (1 - eps) * t + eps / n
    with np.errstate(invalid="ignore"):
        ell = -(q * lp).sum(axis=ax, keepdims=True)
        if eps == 0.0 and sparse:  # MXNet picks the element: -inf elsewhere does not poison it
            ell = -np.take_along_axis(lp, np.broadcast_to(j, keep), axis=ax)
    mask = np.zeros(keep, bool)
    if ignore is not None:
        mask = np.asarray(label).reshape(keep).astype(np.float64) == ignore
        ell = np.where(mask, 0.0, ell)
    w = ell if sw is None else ell * np.asarray(sw, np.float64)
    w = w * (1.0 if weight is None else weight)
    out = _mean_nb(w, batch_axis)
    c = _head_scale(keep, sw, weight, batch_axis, head)
    if from_logits:
        dx = -c * q
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            dx = c * (np.exp(lp) * q.sum(axis=ax, keepdims=True) - q)
    dx = np.where(mask, 0.0, dx)
    return out, dx


def ref_kldiv_softmax(x, y, sw=None, *, axis=-1, weight=None, batch_axis=0, head=None):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ax = axis % x.ndim
    lp = _log_softmax(x, ax)
    ell = y * (np.log(y + 1e-12) - lp)
    w = ell if sw is None else ell * np.asarray(sw, np.float64)
    w = w * (1.0 if weight is None else weight)
    out = _mean_nb(w, batch_axis % w.ndim, "sum")
    full = w.shape
    hb = np.ones(full[batch_axis % len(full)]) if head is None else np.asarray(head, np.float64)
    hshape = [1] * len(full)
    hshape[batch_axis % len(full)] = -1
    u = -np.broadcast_to(hb.reshape(hshape), full) * (1.0 if weight is None else weight) * np.broadcast_to(y, full)
    if sw is not None:
        u = u * np.asarray(sw, np.float64)
    u = _unbroadcast(u, x.shape).reshape(x.shape)
    return out, u - np.exp(lp) * u.sum(axis=ax, keepdims=True)
