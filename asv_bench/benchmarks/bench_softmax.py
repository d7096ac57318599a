"""Softmax cross-entropy and KLDivLoss(from_logits=False): numba_losses vs NumPy (CuPy) vs PyTorch, CPU and CUDA.

Shapes: ``(4096, 1000)`` and ``(1024, 32000)`` float32 logits with int64 class
labels (a vocabulary-sized row is the case the online softmax is for), and
``(8, 21, 64, 64)`` with ``axis=1`` (segmentation: the class axis is not last).
``device`` is an asv parameter (``"cuda"``: CuPy arrays and PyTorch CUDA
tensors, every timed call synchronised; skipped without a GPU or CuPy).
``setup`` calls everything once, so compilation is never timed.
"""

from __future__ import annotations

import importlib.util

import numpy as np

import numba_losses as nl

from .common import DEVICES, Device, best_ms

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


def array_softmax_ce(xp, x, lab, axis):
    """The same in any array module ``xp`` (CuPy on the GPU): the label's one-hot subtracted from the softmax."""
    m = x.max(axis=axis, keepdims=True)
    e = xp.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    idx = xp.expand_dims(lab, axis)
    loss = (xp.log(s) + m - xp.take_along_axis(x, idx, axis=axis)).squeeze(axis)
    e /= s
    classes = xp.arange(x.shape[axis]).reshape([-1 if d == axis % x.ndim else 1 for d in range(x.ndim)])
    e -= classes == idx
    return loss, e


class SoftmaxCrossEntropy:
    """Wall time of one call."""

    params = (SHAPES, DEVICES)
    param_names = ["shape", "device"]

    def setup(self, shape, device):
        self.dev = Device(device)
        x, lab, axis = _inputs(shape)
        self.x, self.lab = self.dev.asarray(x), self.dev.asarray(lab)
        self.axis = axis
        self.loss = nl.SoftmaxCELoss(axis=axis)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.lab)
        self.loss(self.x, self.lab)
        self.torch_ok = False
        if HAS_TORCH:
            try:
                self.dev.use_torch()
            except NotImplementedError:  # PyTorch without CUDA: only the torch timings are missing
                pass
            else:
                import torch.nn.functional as F

                self.tx = self.dev.tensor(x, grad=True)
                self.tl = self.dev.tensor(lab)
                self.F = F
                self.torch_ok = True
        self.dev.sync()

    def time_forward(self, shape, device):
        self.loss(self.x, self.lab)
        self.dev.sync()

    def time_forward_backward_out(self, shape, device):
        self.loss.forward_backward(self.x, self.lab, out=self.out, grad_out=self.grad)
        self.dev.sync()

    def time_numpy_forward_backward(self, shape, device):
        if self.dev.gpu:
            array_softmax_ce(self.dev.xp, self.x, self.lab, self.axis)
        else:
            numpy_softmax_ce(self.x, self.lab, self.axis)
        self.dev.sync()

    def time_torch_forward_backward(self, shape, device):
        if not self.torch_ok:
            raise NotImplementedError("PyTorch is not installed" if not HAS_TORCH else "needs PyTorch with CUDA")
        self.tx.grad = None
        loss = self.F.cross_entropy(self.tx, self.tl, reduction="none")
        loss.backward(loss.new_ones(loss.shape))
        self.dev.sync()

    def track_speedup_vs_torch(self, shape, device):
        if not self.torch_ok:
            raise NotImplementedError("PyTorch is not installed" if not HAS_TORCH else "needs PyTorch with CUDA")
        mine = best_ms(lambda: self.time_forward_backward_out(shape, device), 5)
        theirs = best_ms(lambda: self.time_torch_forward_backward(shape, device), 5)
        return theirs / mine

    track_speedup_vs_torch.unit = "x"


class KLDivFromLogits:
    """KLDivLoss(from_logits=False) forward+backward against a soft target."""

    params = ([(4096, 1000)], DEVICES)
    param_names = ["shape", "device"]

    def setup(self, shape, device):
        self.dev = Device(device)
        rng = np.random.default_rng(1)
        x = rng.standard_normal(shape).astype(np.float32)
        q = rng.random(shape).astype(np.float32)
        self.x, self.y = self.dev.asarray(x), self.dev.asarray(q / q.sum(axis=-1, keepdims=True))
        self.loss = nl.KLDivLoss(from_logits=False)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.dev.sync()

    def time_forward_backward_out(self, shape, device):
        self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
        self.dev.sync()
