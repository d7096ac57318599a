"""SDMLLoss: numba_losses vs vectorised NumPy and PyTorch, forward and forward+backward, on the CPU and on CUDA.

Shapes ``(512, 128)`` and ``(2048, 256)`` float32 (batch, embedding dim): the
work is three ``N x N x D`` products (distances, and the two gradient
products) plus ``N x N`` softmax work. ``setup`` draws the inputs and calls
forward and forward_backward once, so compilation (or loading the on-disk
kernel cache) is never timed.

The NumPy version below is written from docs/semantics.rst section 15 for speed: squared
distances through ``|a|^2 + |b|^2 - 2 a b^T`` (one BLAS matrix product), a
max-shifted log-softmax, and the gradients as two more matrix products
``dx1 = 2 (rowsum(G) x1 - G x2)``, ``dx2 = -2 (G^T x1 - colsum(G) x2)``. The
PyTorch version builds the same graph (``torch.cdist``-free expansion) and
takes the gradients with autograd; torch is imported only by its own class,
in its own benchmark processes.

``device`` is an asv parameter of the library's and PyTorch's classes
(``"cuda"``: CuPy arrays and PyTorch CUDA tensors, every timed call
synchronised; skipped without a GPU or CuPy); the NumPy version runs on the
CPU only (:class:`SDMLLossNumPy`). ``python asv_bench/compare.py --family
sdml`` prints the same comparison side by side in one run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import numba_losses as nl

from .common import DEVICES, Device

SHAPES = [(512, 128), (2048, 256)]
SMOOTHING = 0.3
SEED = 4321


def make_inputs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like float32 inputs: normal entries scaled by ``1/sqrt(D)``."""
    rng = np.random.default_rng(SEED)
    scale = np.float32(1.0 / np.sqrt(shape[1]))
    return (
        rng.standard_normal(shape, dtype=np.float32) * scale,
        rng.standard_normal(shape, dtype=np.float32) * scale,
    )


def _targets(n: int, dtype: np.dtype) -> np.ndarray:
    t = np.dtype(dtype).type
    q = np.full((n, n), t(SMOOTHING) / t(n - 1), dtype=dtype)
    np.fill_diagonal(q, t(1.0 - SMOOTHING))
    return q


def numpy_sdml(x1: np.ndarray, x2: np.ndarray, want_grad: bool = False) -> Any:
    """SDMLLoss values ``(N,)`` and, with ``want_grad``, ``(dx1, dx2)``, in NumPy (head of ones)."""
    dt = x1.dtype
    sq1 = np.einsum("ij,ij->i", x1, x1)
    sq2 = np.einsum("ij,ij->i", x2, x2)
    logits = x1 @ x2.T
    logits *= dt.type(2)
    logits -= sq1[:, None]
    logits -= sq2[None, :]  # -dist
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    total = e.sum(axis=1, keepdims=True)
    logits -= np.log(total)  # log-softmax
    q = _targets(x1.shape[0], dt)
    logq = np.log(q + dt.type(1e-12))
    out = (q * (logq - logits)).sum(axis=1)
    if not want_grad:
        return out
    e /= total  # softmax
    e *= q.sum(axis=1, keepdims=True)
    g = q - e  # G = Q - r P
    dx1 = dt.type(2) * (g.sum(axis=1)[:, None] * x1 - g @ x2)
    dx2 = dt.type(-2) * (g.T @ x1 - g.sum(axis=0)[:, None] * x2)
    return out, (dx1, dx2)


def torch_sdml(x1: Any, x2: Any) -> Any:
    """The same loss on torch tensors (autograd records it when the inputs require grad)."""
    import torch

    n = x1.shape[0]
    dist = (x1 * x1).sum(1)[:, None] + (x2 * x2).sum(1)[None, :] - 2.0 * (x1 @ x2.T)
    lp = torch.log_softmax(-dist, dim=1)
    q = torch.full((n, n), SMOOTHING / (n - 1), dtype=x1.dtype, device=x1.device)
    q.fill_diagonal_(1.0 - SMOOTHING)
    return (q * (torch.log(q + 1e-12) - lp)).sum(1)


class SDMLLoss:
    """Wall time of one call of numba_losses."""

    params = (SHAPES, DEVICES)
    param_names = ["shape", "device"]

    def setup(self, shape, device):
        self.dev = Device(device)
        self.loss = nl.SDMLLoss(smoothing_parameter=SMOOTHING)
        self.x1, self.x2 = (self.dev.asarray(a) for a in make_inputs(shape))
        # first calls compile (or load from the cache) the kernels; keep the results as buffers
        self.out, self.grads = self.loss.forward_backward(self.x1, self.x2)
        self.loss(self.x1, self.x2)
        self.dev.sync()

    def time_forward(self, shape, device):
        self.loss(self.x1, self.x2)
        self.dev.sync()

    def time_forward_backward(self, shape, device):
        self.loss.forward_backward(self.x1, self.x2)
        self.dev.sync()

    def time_forward_backward_out(self, shape, device):
        self.loss.forward_backward(self.x1, self.x2, out=self.out, grad_out=self.grads)
        self.dev.sync()


class SDMLLossNumPy:
    """Wall time of one call of the NumPy version (CPU)."""

    params = (SHAPES,)
    param_names = ["shape"]

    def setup(self, shape):
        self.x1, self.x2 = make_inputs(shape)

    def time_numpy_forward(self, shape):
        numpy_sdml(self.x1, self.x2)

    def time_numpy_forward_backward(self, shape):
        numpy_sdml(self.x1, self.x2, True)


class SDMLLossTorch:
    """Wall time of one call in PyTorch (autograd backward with a head of ones)."""

    params = (SHAPES, DEVICES)
    param_names = ["shape", "device"]

    def setup(self, shape, device):
        self.dev = Device(device)
        torch = self.dev.use_torch()  # asv: skip without PyTorch (or without its CUDA)
        self.torch = torch
        x1, x2 = make_inputs(shape)
        self.x1 = self.dev.tensor(x1)
        self.x2 = self.dev.tensor(x2)
        self.head = torch.ones(shape[0], device=self.x1.device)
        self.time_torch_forward_backward(shape, device)

    def time_torch_forward(self, shape, device):
        with self.torch.no_grad():
            torch_sdml(self.x1, self.x2)
        self.dev.sync()

    def time_torch_forward_backward(self, shape, device):
        a = self.x1.detach().requires_grad_(True)
        b = self.x2.detach().requires_grad_(True)
        torch_sdml(a, b).backward(self.head)
        self.dev.sync()
