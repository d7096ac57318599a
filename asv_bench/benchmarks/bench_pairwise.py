"""TripletLoss and CosineEmbeddingLoss: numba_losses vs vectorised NumPy, forward and forward+backward.

Shapes: ``(4096, 512)`` float32 (4096 rows of 512-element vectors, batch axis 0;
memory-bound, the parallel kernels) and ``(64, 16)`` (call overhead, the serial
kernels). The NumPy versions below are written here from docs/semantics.rst sections 12
and 14 for speed (row dot products with ``einsum``, few temporaries); they
skip MXNet's measure-zero subtleties (NaN rows of zero vectors, exact
subgradients at ties). ``setup`` runs every timed call once, so compilation (or
loading the on-disk kernel cache) is never timed.

``device`` is an asv parameter (``"cuda"``: the same classes on CuPy arrays,
the NumPy versions through NumPy's dispatch protocols, every timed call
synchronised; skipped without a GPU or CuPy).

``python asv_bench/compare.py --family pairwise`` prints the same comparison
side by side in one run, with PyTorch added.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import numba_losses as nl

from .common import DEVICES, Device

LARGE = (4096, 512)
SMALL = (64, 16)
SEED = 4321
MARGIN_TRIPLET = 1.0
MARGIN_COSINE = 0.1


# -- inputs --------------------------------------------------------------------------------
def triplet_inputs(shape: tuple[int, int], seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchors, positives near the anchors and negatives further away (float32): a mix of active and inactive rows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    p = x + np.float32(0.5) * rng.standard_normal(shape, dtype=np.float32)
    n = x + np.float32(0.5) * rng.standard_normal(shape, dtype=np.float32)
    return x, p, n


def cosine_inputs(shape: tuple[int, int], seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two sets of float32 vectors and labels in {-1, 1} (float32, one per row)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape, dtype=np.float32)
    b = a + rng.standard_normal(shape, dtype=np.float32)
    y = np.where(rng.random(shape[0]) < 0.5, np.float32(-1), np.float32(1))
    return a, b, y


# -- NumPy versions ---------------------------------------------------------------------------
def _rowdot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", u, v)


def numpy_triplet(x: np.ndarray, p: np.ndarray, n: np.ndarray, want_grad: bool = False, margin: float = 1.0) -> Any:
    """``relu(sum((p - x)^2 - (n - x)^2) + margin)`` per row; gradients with a head of ones.

    Returns ``out`` or ``(out, (dx, dp, dn))`` with ``dp = 2 m (p - x)``,
    ``dn = -2 m (n - x)``, ``dx = -dp - dn``, ``m = [out > 0]``.
    """
    u = p - x
    v = n - x
    t = _rowdot(u, u) - _rowdot(v, v) + np.float32(margin)
    out = np.maximum(t, np.float32(0))
    if not want_grad:
        return out
    m2 = np.where(t > 0, np.float32(2), np.float32(0))[:, None]
    u *= m2  # dp
    v *= -m2  # dn
    dx = -u
    dx -= v
    return out, (dx, u, v)


def numpy_cosine(a: np.ndarray, b: np.ndarray, y: np.ndarray, want_grad: bool = False, margin: float = 0.0) -> Any:
    """``(1 - c) [y = 1] + max(0, c - margin) [y = -1]`` with ``c = a.b / max(|a||b|, 1e-12)``, shape ``(M, 1)``.

    Gradients with a head of ones: ``da = dc (b / D - c a / |a|^2)`` and the
    mirror for ``db``, ``dc = -[y = 1] + [y = -1, c - margin > 0]``.
    """
    dot = _rowdot(a, b)
    na2 = _rowdot(a, a)
    nb2 = _rowdot(b, b)
    d = np.maximum(np.sqrt(na2 * nb2), np.float32(1e-12))
    c = dot / d
    pos, neg = y == 1, y == -1
    out = np.where(pos, 1 - c, np.where(neg, np.maximum(c - np.float32(margin), 0), 0)).astype(np.float32)[:, None]
    if not want_grad:
        return out
    dc = np.where(pos, np.float32(-1), np.where(neg & (c - margin > 0), np.float32(1), np.float32(0)))
    k = (dc / d)[:, None]
    da = b * k
    da -= a * (dc * c / na2)[:, None]
    db = a * k
    db -= b * (dc * c / nb2)[:, None]
    return out, (da, db)


# -- asv ----------------------------------------------------------------------------------------
# loss name -> (constructor, inputs, NumPy version, margin)
CASES = {
    "TripletLoss": (nl.TripletLoss, triplet_inputs, numpy_triplet, MARGIN_TRIPLET),
    "CosineEmbeddingLoss": (nl.CosineEmbeddingLoss, cosine_inputs, numpy_cosine, MARGIN_COSINE),
}


class PairwiseLoss:
    """Wall time of one call: the library (with and without output buffers) and NumPy (CuPy on a GPU)."""

    params = (list(CASES), [LARGE, SMALL], DEVICES)
    param_names = ["loss", "shape", "device"]

    def setup(self, loss, shape, device):
        self.dev = Device(device)
        make, inputs, self.numpy_loss, self.margin = CASES[loss]
        self.loss = make(margin=self.margin)
        self.args = tuple(self.dev.asarray(a) for a in inputs(shape))
        self.out, self.grads = self.loss.forward_backward(*self.args)
        self.loss(*self.args)
        self.numpy_loss(*self.args, True, margin=self.margin)
        self.dev.sync()

    def time_forward(self, loss, shape, device):
        self.loss(*self.args)
        self.dev.sync()

    def time_forward_backward(self, loss, shape, device):
        self.loss.forward_backward(*self.args)
        self.dev.sync()

    def time_forward_backward_out(self, loss, shape, device):
        self.loss.forward_backward(*self.args, out=self.out, grad_out=self.grads)
        self.dev.sync()

    def time_numpy_forward(self, loss, shape, device):
        self.numpy_loss(*self.args, margin=self.margin)
        self.dev.sync()

    def time_numpy_forward_backward(self, loss, shape, device):
        self.numpy_loss(*self.args, True, margin=self.margin)
        self.dev.sync()
