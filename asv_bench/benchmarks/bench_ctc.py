"""CTCLoss: numba_losses vs a batch-vectorised NumPy version vs PyTorch, on the CPU and on CUDA.

Cases (the issue's): T=200, N=32, C=40 with labels of length 50 (short
sequences, the recursions dominate) and T=1000, N=8, C=5000 with labels of
length 100 (a large alphabet, the log-softmax and the gradient dominate).
float32 activations in 'TNC' layout, full lengths, labels drawn from the
non-blank classes. PyTorch's side is ``F.ctc_loss(F.log_softmax(x))`` (the
log-softmax is part of the loss here, MXNet-style), backward with a head of
ones. ``device`` is an asv parameter of :class:`CTC` (``"cuda"``: CuPy arrays
and PyTorch CUDA tensors, every timed call synchronised; skipped without a
GPU or CuPy); the NumPy version runs on the CPU only (:class:`CTCNumPy`).
``setup`` calls everything once, so compilation is never timed.
"""

from __future__ import annotations

import importlib.util

import numpy as np

import numba_losses as nl

from .common import DEVICES, Device

CASES = [(200, 32, 40, 50), (1000, 8, 5000, 100)]  # (T, N, C, label length)
HAS_TORCH = importlib.util.find_spec("torch") is not None


def ctc_inputs(case: tuple[int, int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 activations ``(T, N, C)`` and int32 labels ``(N, L)`` in ``[0, C - 1)``."""
    t, n, c, length = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n, c), dtype=np.float32)
    return x, rng.integers(0, c - 1, (n, length)).astype(np.int32)


def numpy_ctc(x: np.ndarray, lab: np.ndarray, want_grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """CTC cost ``(N,)`` and gradient w.r.t. the activations ``(T, N, C)``, NumPy only.

    What a user would write without a kernel library: log-softmax, then the
    alpha / beta recursions in log space with ``np.logaddexp``, one time step
    at a time, vectorised over the batch and the extended label; the blank is
    the last class, every sample uses all frames and its whole label.
    """
    t_max, n, c = x.shape
    blank = c - 1
    m = x.max(axis=2, keepdims=True)
    lp = x - m - np.log(np.exp(x - m).sum(axis=2, keepdims=True))
    s_len = 2 * lab.shape[1] + 1
    ext = np.full((n, s_len), blank, dtype=np.int64)
    ext[:, 1::2] = lab
    skip = np.zeros((n, s_len), dtype=bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    lpe = np.take_along_axis(lp, np.broadcast_to(ext, (t_max, n, s_len)), axis=2)
    ninf = np.float32(-np.inf)

    def step(prev: np.ndarray, mask: np.ndarray, shift: int) -> np.ndarray:
        one = np.full_like(prev, ninf)
        two = np.full_like(prev, ninf)
        if shift > 0:
            one[:, 1:] = prev[:, :-1]
            two[:, 2:] = np.where(mask[:, 2:], prev[:, :-2], ninf)
        else:
            one[:, :-1] = prev[:, 1:]
            two[:, :-2] = np.where(mask[:, :-2], prev[:, 2:], ninf)
        with np.errstate(invalid="ignore"):
            return np.logaddexp(np.logaddexp(prev, one), two)

    alpha = np.full((t_max, n, s_len), ninf, dtype=x.dtype)
    alpha[0, :, :2] = lpe[0, :, :2]
    for t in range(1, t_max):
        alpha[t] = step(alpha[t - 1], skip, 1) + lpe[t]
    ll = np.logaddexp(alpha[-1, :, -1], alpha[-1, :, -2])
    if not want_grad:
        return -ll, None
    skipb = np.zeros((n, s_len), dtype=bool)
    skipb[:, :-2] = (ext[:, :-2] != blank) & (ext[:, :-2] != ext[:, 2:])
    beta = np.full((t_max, n, s_len), ninf, dtype=x.dtype)
    beta[-1, :, -2:] = lpe[-1, :, -2:]
    for t in range(t_max - 2, -1, -1):
        beta[t] = step(beta[t + 1], skipb, -1) + lpe[t]
    with np.errstate(invalid="ignore", over="ignore"):
        occupancy = np.exp(alpha + beta - ll[None, :, None] - lpe)  # exp(gamma - lp - ll) per position
    grad = np.exp(lp)
    tt, bb = np.meshgrid(np.arange(t_max), np.arange(n), indexing="ij")
    np.subtract.at(grad, (tt[..., None], bb[..., None], np.broadcast_to(ext, (t_max, n, s_len))), occupancy)
    return -ll, grad


class CTC:
    """Wall time of one call: forward, and forward+backward into reused buffers; PyTorch's."""

    params = (CASES, DEVICES)
    param_names = ["case", "device"]

    def setup(self, case, device):
        self.dev = Device(device)
        x, lab = ctc_inputs(case)
        self.blank = x.shape[2] - 1
        self.x, self.lab = self.dev.asarray(x), self.dev.asarray(lab)
        self.loss = nl.CTCLoss(layout="TNC")
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.lab)
        self.loss(self.x, self.lab)
        self.torch_ok = False
        if HAS_TORCH:
            try:
                torch = self.dev.use_torch()
            except NotImplementedError:  # PyTorch without CUDA: only the torch timings are missing
                pass
            else:
                t, n, _, length = case
                self.tx = self.dev.tensor(x, grad=True)
                self.tl = self.dev.tensor(lab).long()
                self.il = torch.full((n,), t, dtype=torch.long, device=self.tx.device)
                self.tll = torch.full((n,), length, dtype=torch.long, device=self.tx.device)
                self.torch_ok = True
                self.time_torch_forward_backward(case, device)
        self.dev.sync()

    def time_forward(self, case, device):
        self.loss(self.x, self.lab)
        self.dev.sync()

    def time_forward_backward(self, case, device):
        self.loss.forward_backward(self.x, self.lab, out=self.out, grad_out=self.grad)
        self.dev.sync()

    def _torch_cost(self):
        import torch.nn.functional as F

        return F.ctc_loss(F.log_softmax(self.tx, -1), self.tl, self.il, self.tll, blank=self.blank, reduction="none")

    def time_torch_forward(self, case, device):
        if not self.torch_ok:
            raise NotImplementedError("PyTorch is not installed" if not HAS_TORCH else "needs PyTorch with CUDA")
        with self.dev.torch.no_grad():
            self._torch_cost()
        self.dev.sync()

    def time_torch_forward_backward(self, case, device):
        if not self.torch_ok:
            raise NotImplementedError("PyTorch is not installed" if not HAS_TORCH else "needs PyTorch with CUDA")
        self.tx.grad = None
        cost = self._torch_cost()
        cost.backward(self.dev.torch.ones_like(cost))
        self.dev.sync()


class CTCNumPy:
    """Wall time of the NumPy version's forward+backward (CPU)."""

    params = (CASES,)
    param_names = ["case"]

    def setup(self, case):
        self.x, self.lab = ctc_inputs(case)

    def time_numpy_forward_backward(self, case):
        numpy_ctc(self.x, self.lab)
