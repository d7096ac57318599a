"""Independent float64 NumPy reference of SDMLLoss.

Used by ``tests/test_sdml.py``: the full ``(N, N, D)`` difference tensor, a
max-shifted log-softmax of ``-dist``, MXNet's smoothed targets and the
gradients; no code shared with the package.
"""

from __future__ import annotations

import numpy as np


def sdml_ref(x1, x2, s=0.3, g=None):
    """``(out, dx1, dx2)`` in float64 from docs/semantics.rst section 15."""
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    n = x1.shape[0]
    diff = x1[:, None, :] - x2[None, :, :]  # (N, N, D): x1_i - x2_j
    logits = -(diff**2).sum(axis=2)
    shifted = logits - logits.max(axis=1, keepdims=True)
    lp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    eye = np.eye(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = eye * (1.0 - s) + ((1.0 - eye) * s) / np.float64(n - 1)
        out = (q * (np.log(q + 1e-12) - lp)).sum(axis=1)
    g = np.ones(n) if g is None else np.broadcast_to(np.asarray(g, dtype=np.float64), (n,))
    gmat = g[:, None] * (q - q.sum(axis=1, keepdims=True) * np.exp(lp))
    dx1 = 2.0 * (gmat[:, :, None] * diff).sum(axis=1)
    dx2 = -2.0 * (gmat[:, :, None] * diff).sum(axis=0)
    return out, dx1, dx2
