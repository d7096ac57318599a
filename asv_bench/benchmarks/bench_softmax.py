"""Softmax cross-entropy and KLDivLoss(from_logits=False): numba_losses vs NumPy vs PyTorch CPU.

Shapes: ``(4096, 1000)`` and ``(1024, 32000)`` float32 logits with int64 class
labels (a vocabulary-sized row is the case the online softmax is for), and
``(8, 21, 64, 64)`` with ``axis=1`` (segmentation: the class axis is not last).
``setup`` calls everything once, so compilation is never timed.
"""

from __future__ import annotations

import importlib.util

import numpy as np

import numba_losses as nl

from .common import best_ms

SHAPES = [(4096, 1000), (1024, 32000), (8, 21, 64, 64)]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _inputs(shape):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    axis = 1 if len(shape) == 4 else -1
    keep = tuple(n for d, n in enumerate(shape) if d != axis % len(shape))
    return x, rng.integers(0, shape[axis], keep), axis


def numpy_softmax_ce(x, lab, axis):
    """Loss per position and gradient w.r.t. ``x`` (NumPy, float32)."""
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    idx = np.expand_dims(lab, axis)
    loss = (np.log(s) + m - np.take_along_axis(x, idx, axis=axis)).squeeze(axis)
    e /= s
    np.put_along_axis(e, idx, np.take_along_axis(e, idx, axis=axis) - 1, axis=axis)
    return loss, e


class SoftmaxCrossEntropy:
    """Wall time of one call."""

    params = (SHAPES,)
    param_names = ["shape"]

    def setup(self, shape):
        self.x, self.lab, axis = _inputs(shape)
        self.axis = axis
        self.loss = nl.SoftmaxCELoss(axis=axis)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.lab)
        self.loss(self.x, self.lab)
        if HAS_TORCH:
            import torch
            import torch.nn.functional as F

            self.tx = torch.from_numpy(self.x).requires_grad_(True)
            self.tl = torch.from_numpy(self.lab)
            self.F = F

    def time_forward(self, shape):
        self.loss(self.x, self.lab)

    def time_forward_backward_out(self, shape):
        self.loss.forward_backward(self.x, self.lab, out=self.out, grad_out=self.grad)

    def time_numpy_forward_backward(self, shape):
        numpy_softmax_ce(self.x, self.lab, self.axis)

    def time_torch_forward_backward(self, shape):
        if not HAS_TORCH:
            raise NotImplementedError("PyTorch is not installed")
        self.tx.grad = None
        loss = self.F.cross_entropy(self.tx, self.tl, reduction="none")
        loss.backward(loss.new_ones(loss.shape))

    def track_speedup_vs_torch(self, shape):
        if not HAS_TORCH:
            raise NotImplementedError("PyTorch is not installed")
        mine = best_ms(lambda: self.time_forward_backward_out(shape), 5)
        theirs = best_ms(lambda: self.time_torch_forward_backward(shape), 5)
        return theirs / mine

    track_speedup_vs_torch.unit = "x"


class KLDivFromLogits:
    """KLDivLoss(from_logits=False) forward+backward against a soft target."""

    params = ([(4096, 1000)],)
    param_names = ["shape"]

    def setup(self, shape):
        rng = np.random.default_rng(1)
        self.x = rng.standard_normal(shape).astype(np.float32)
        q = rng.random(shape).astype(np.float32)
        self.y = q / q.sum(axis=-1, keepdims=True)
        self.loss = nl.KLDivLoss(from_logits=False)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)

    def time_forward_backward_out(self, shape):
        self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
