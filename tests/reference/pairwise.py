"""Independent float64 NumPy references of TripletLoss and CosineEmbeddingLoss.

Used by ``tests/test_pairwise.py``; no code shared with the package.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def triplet_ref(x, p, n, margin=1.0, weight=None, batch_axis=0, g=None):
    """``(out, (dx, dp, dn))`` in float64 (docs/semantics.rst section 12)."""
    x = np.asarray(x, np.float64)
    p = np.asarray(p, np.float64).reshape(x.shape)
    n = np.asarray(n, np.float64).reshape(x.shape)
    ax = batch_axis % x.ndim
    others = tuple(d for d in range(x.ndim) if d != ax)
    s = ((p - x) ** 2 - (n - x) ** 2).sum(axis=others)
    t = s + margin
    r = np.where((t > 0) | np.isnan(t), t, 0.0)
    w = 1.0 if weight is None else weight
    g = np.ones_like(r) if g is None else np.broadcast_to(np.asarray(g, np.float64), r.shape)
    step = np.where(np.isnan(r), np.nan, (r > 0).astype(np.float64))
    m = (g * w * step).reshape([-1 if d == ax else 1 for d in range(x.ndim)])
    return r * w, (2 * m * (n - p), 2 * m * (p - x), -2 * m * (n - x))


def cosine_ref(a, b, y, sw=None, margin=0.0, weight=None, g=None):
    """``(out, (da, db))`` in float64 (docs/semantics.rst section 14), NaN rows included."""
    b = np.asarray(b, np.float64)
    a = np.asarray(a, np.float64).reshape(b.shape)
    k = b.shape[-1]
    a2, b2 = a.reshape(-1, k), b.reshape(-1, k)
    m = a2.shape[0]
    y = np.asarray(y, np.float64).reshape(-1, 1)
    rows = np.broadcast_shapes((m, 1), y.shape)[0]
    ar, br = np.broadcast_to(a2, (rows, k)), np.broadcast_to(b2, (rows, k))
    y = np.broadcast_to(y, (rows, 1))
    na = np.sqrt((ar * ar).sum(-1, keepdims=True))
    nb = np.sqrt((br * br).sum(-1, keepdims=True))
    prod = na * nb
    d = np.maximum(prod, EPS)
    c = (ar * br).sum(-1, keepdims=True) / d
    y1, ym1 = (y == 1).astype(float), (y == -1).astype(float)
    v = ym1 * (c - margin)
    loss = (1 - c) * y1 + np.maximum(0.0, v)
    w = 1.0 if weight is None else weight
    sw = np.ones((1, 1)) if sw is None else np.asarray(sw, np.float64)
    out = loss * sw * w
    g = np.ones(out.shape) if g is None else np.broadcast_to(np.asarray(g, np.float64), out.shape)
    h = g * w * sw
    h = h.reshape((-1,) + h.shape[-2:]).sum(0) if h.ndim > 2 else h  # leading axes
    h = h.sum(-1, keepdims=True)
    if h.shape[0] != rows:
        h = np.broadcast_to(h.sum(0, keepdims=True), (rows, 1))
    coef = h * (-y1 + ym1 * (v > 0))
    keep = prod >= EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        da = coef * (br / d - np.where(keep, c / na**2, 0.0) * ar)
        db = coef * (ar / d - np.where(keep, c / nb**2, 0.0) * br)
    da[((~keep) & (na == 0))[:, 0]] = np.nan
    db[((~keep) & (nb == 0))[:, 0]] = np.nan
    if rows != m:
        da, db = da.sum(0, keepdims=True), db.sum(0, keepdims=True)
    return out, (da.reshape(a.shape), db.reshape(b.shape))
