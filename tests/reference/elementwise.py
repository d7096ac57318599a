"""Independent NumPy terms of the elementwise losses: ``f(x, y, a, p) -> (value, d value / dx)``.

Used by ``tests/test_elementwise.py``: float64 arrays of the broadcast shape in,
one ``(value, derivative)`` pair per loss term out (``a`` is the auxiliary
input such as ``pos_weight`` or ``None``, ``p`` the loss parameters); no code
shared with the package.
"""

from __future__ import annotations

import numpy as np

EPS12 = 1e-12


# ---------------------------------------------------------------------------------------------
# Reference terms: f(x, y, a, p) -> (value, d value / dx), float64 arrays of the broadcast shape.
# ---------------------------------------------------------------------------------------------
def _relu(v):
    return np.maximum(v, 0.0)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def term_l2(x, y, a, p):
    return (y - x) ** 2, 2.0 * (x - y)


def term_l1(x, y, a, p):
    return np.abs(y - x), np.sign(x - y)


def term_huber(x, y, a, p):
    rho = p["rho"]
    d = np.abs(y - x)
    val = np.where(d > rho, d - 0.5 * rho, (0.5 / rho) * d**2)
    der = np.sign(x - y) * np.where(d > rho, 1.0, d / rho)
    return val, der


def term_hinge(x, y, a, p):
    v = p["margin"] - x * y
    return _relu(v), -y * (v > 0)


def term_squared_hinge(x, y, a, p):
    v = p["margin"] - x * y
    return _relu(v) ** 2, -2.0 * y * _relu(v)


def _bce_logit(x, z):
    val = _relu(x) - x * z + np.log1p(np.exp(-np.abs(x)))
    der = np.where(x == 0, -z, _sigmoid(x) - z)  # autograd gives exactly -z at x == 0
    return val, der


def _bce_logit_pw(x, z, pw):
    lw = 1.0 + (pw - 1.0) * z
    val = x - x * z + lw * (np.log1p(np.exp(-np.abs(x))) + _relu(-x))
    der = np.where(x == 0, 1.0 - z, 1.0 - z - lw * _sigmoid(-x))  # exactly 1 - z at x == 0
    return val, der


def term_bce(x, y, a, p):
    if p["from_sigmoid"]:
        pw = 1.0 if a is None else a
        val = -(np.log(x + EPS12) * y * pw + np.log((1.0 - x) + EPS12) * (1.0 - y))
        der = -y * pw / (x + EPS12) + (1.0 - y) / ((1.0 - x) + EPS12)
        return val, der
    if a is None:
        return _bce_logit(x, y)
    return _bce_logit_pw(x, y, a)


def term_logistic(x, y, a, p):
    z = (y + 1.0) / 2.0 if p["label_format"] == "signed" else y
    return _bce_logit(x, z)


def term_poisson(x, t, a, p):
    eps = p.get("epsilon", 1e-08)
    if p["from_logits"]:
        val, der = np.exp(x) - t * x, np.exp(x) - t
    else:
        val, der = x - t * np.log(x + eps), 1.0 - t / (x + eps)
    if p["compute_full"]:
        # a product, as MXNet computes it: t == 0 gives 0 * (nan) = nan, 0 < t <= 1 adds 0
        val = val + (t > 1) * (t * np.log(t) - t + 0.5 * np.log(2.0 * t * np.pi))
    return val, der


def term_kldiv(x, y, a, p):
    return y * (np.log(y + EPS12) - x), -y
