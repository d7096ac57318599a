"""An independent NumPy transcription of docs/semantics.rst section 7 (CTCLoss), used by tests/test_ctc.py.

Written from that section's text only: log-softmax by ``max`` shift, the extended label,
the alpha/beta recursions with the skip rules exactly as written (skipα and skipβ
differ when the blank index is used as a label), γ with warp-ctc's ``== 0.0``
branch, infeasible samples, lround for lengths and labels, truncation for the
gradient mask, then weighting. Every operation runs in the compute dtype given
(float32 reproduces MXNet's float32 rounding; float64 is the exact reference).
"""

from __future__ import annotations

import numpy as np


def lround(v):
    """C's lround: half away from zero (float64 in, int64 out)."""
    v = np.asarray(v, np.float64)
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def lse(a, b):
    """Section 7's log-space add, elementwise, in the dtype of ``a`` and ``b``."""
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.maximum(a, b) + np.log1p(np.exp(-np.abs(a - b)))
    return np.where(a == -np.inf, b, np.where(b == -np.inf, a, r))


def log_softmax(a):
    """``A - max_k A - log(sum_k exp(A - max_k A))`` along the last axis, in a's dtype."""
    m = a.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        d = a - m
        s = np.zeros(a.shape[:-1] + (1,), a.dtype)
        for k in range(a.shape[-1]):  # sequential sum in the compute dtype
            s = s + np.exp(d[..., k : k + 1])
        return d - np.log(s)


def ctc_sample(lp, lab, blank):
    """(cost, G) of one feasible sample: ``lp`` (T_b, C) log-probabilities, ``lab`` the used labels.

    ``G`` has shape (T_b, C): the gradient w.r.t. the activations before masking and weighting.
    """
    dt = lp.dtype
    tb, c = lp.shape
    lab = [int(v) for v in lab]
    s_len = 2 * len(lab) + 1
    ext = np.full(s_len, blank, np.int64)
    ext[1::2] = lab
    ninf = dt.type(-np.inf)
    skip_a = np.array([s >= 2 and ext[s] != blank and s != 1 and ext[s] != ext[s - 2] for s in range(s_len)], bool)
    skip_b = np.array(
        [s + 2 < s_len and ext[s] != blank and s != s_len - 2 and ext[s] != ext[s + 2] for s in range(s_len)], bool
    )

    alpha = np.full((tb, s_len), ninf, dt)
    alpha[0, 0] = lp[0, blank]
    if s_len > 1:
        alpha[0, 1] = lp[0, ext[1]]
    for t in range(1, tb):
        prev = alpha[t - 1]
        p1 = np.concatenate([[ninf], prev[:-1]]).astype(dt)
        p2 = np.concatenate([[ninf, ninf], prev[:-2]]).astype(dt)[:s_len]
        acc = lse(prev, p1)
        acc = np.where(skip_a, lse(acc, p2), acc)
        alpha[t] = lp[t, ext] + acc
    if s_len > 1:
        ll = lse(alpha[tb - 1, s_len - 1], alpha[tb - 1, s_len - 2])[()]
    else:
        ll = alpha[tb - 1, 0]
    cost = -ll

    beta = np.full((tb, s_len), ninf, dt)
    beta[tb - 1, s_len - 1] = lp[tb - 1, blank]
    if s_len > 1:
        beta[tb - 1, s_len - 2] = lp[tb - 1, ext[s_len - 2]]
    for t in range(tb - 2, -1, -1):
        nxt = beta[t + 1]
        n1 = np.concatenate([nxt[1:], [ninf]]).astype(dt)
        n2 = np.concatenate([nxt[2:], [ninf, ninf]]).astype(dt)[:s_len]
        acc = lse(nxt, n1)
        acc = np.where(skip_b, lse(acc, n2), acc)
        beta[t] = lp[t, ext] + acc

    with np.errstate(invalid="ignore", over="ignore"):
        ab = alpha + beta
        gamma = np.full((tb, c), ninf, dt)
        for s in range(s_len):
            gamma[:, ext[s]] = lse(gamma[:, ext[s]], ab[:, s])
        e = np.exp(lp)
        special = (gamma == -np.inf) | (gamma == 0.0) | (lp == -np.inf)
        g = np.where(special, e, e - np.exp(gamma - lp - ll))
    return dt.type(cost), g.astype(dt)


def used_labels(row, label_length, blank_label):
    """The label values one sample uses (docs/semantics.rst section 7), as int64."""
    pad = -1 if blank_label == "last" else 0
    if label_length is not None:
        n = int(lround(label_length))
        return lround(np.asarray(row[:n], np.float64))
    out = []
    for v in np.asarray(row, np.float64):
        r = int(lround(v))
        if r == pad:
            break
        out.append(r)
    return np.array(out, np.int64)


def ref_ctc_loss(pred, label, pred_lengths=None, label_lengths=None, sample_weight=None, *, layout="NTC",
                 label_layout="NT", weight=None, zero_infinity=True, blank_label="last", out_grad=None,
                 dtype=np.float64):  # fmt: skip
    """(out, dpred) of CTCLoss computed in ``dtype`` (docs/semantics.rst section 7), dpred in pred's layout."""
    dt = np.dtype(dtype)
    a = np.asarray(pred).astype(dt)
    if layout == "NTC":
        a = a.transpose(1, 0, 2)
    t_max, n, c = a.shape
    lab = np.asarray(label, np.float64)
    if label_layout == "TN":
        lab = lab.T
    blank = c - 1 if blank_label == "last" else 0
    cost = np.zeros(n, dt)
    g_all = np.zeros((t_max, n, c), dt)
    for b in range(n):
        tb = t_max if pred_lengths is None else int(lround(pred_lengths[b]))
        keep = t_max if pred_lengths is None else int(np.trunc(float(pred_lengths[b])))
        ll = None if label_lengths is None else label_lengths[b]
        used = used_labels(lab[b], ll, blank_label)
        n_lab = len(used)
        rep = int(np.sum(used[1:] == used[:-1])) if n_lab > 1 else 0
        if tb == 0 and n_lab == 0:
            continue  # cost 0, G 0 whatever zero_infinity is
        if n_lab + rep > tb:
            cost[b] = 0.0 if zero_infinity else np.inf
            continue
        lp = log_softmax(a[:tb, b])
        cost[b], g = ctc_sample(lp, used, blank)
        g_all[: min(keep, tb), b] = g[: min(keep, tb)]

    full = (n,) if sample_weight is None else np.broadcast_shapes((n,), np.shape(sample_weight))
    out = cost if sample_weight is None else cost * np.asarray(sample_weight).astype(dt)
    if weight is not None:
        out = out * dt.type(weight)
    out = np.broadcast_to(out, full).astype(dt)

    h = np.ones(full, dt) if out_grad is None else np.broadcast_to(np.asarray(out_grad).astype(dt), full)
    h = h * (1.0 if weight is None else weight)
    if sample_weight is not None:
        h = h * np.asarray(sample_weight).astype(dt)
    h = np.broadcast_to(h, full).reshape(-1, full[-1]).sum(axis=0)
    if h.shape[0] != n:  # N == 1 broadcast against a wider sample_weight
        h = h.sum(keepdims=True)
    dpred = (g_all * h.astype(dt)[None, :, None]).astype(dt)
    if layout == "NTC":
        dpred = dpred.transpose(1, 0, 2)
    return out, dpred
