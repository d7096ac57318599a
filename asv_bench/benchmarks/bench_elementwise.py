"""Elementwise losses: numba_losses vs vectorised NumPy, forward and forward+backward.

Two shapes: ``(4096, 4096)`` float32 (memory-bound, the parallel kernels) and
``(64, 10)`` float32 (call overhead, the serial kernels). ``setup`` draws the
inputs and calls forward and forward_backward once, so compilation (or loading the
on-disk kernel cache) is never timed.
"""

from __future__ import annotations

import numpy as np

from .common import CASES, LARGE, SMALL, USER_MADE, best_ms, make_inputs, traffic_bytes, triad

LOSSES = list(CASES)
WARM_SHAPE = (256, 256)  # above the library's serial threshold: warms the parallel kernels


class ElementwiseLoss:
    """Wall time of one call, for each loss and shape."""

    params = (LOSSES, [LARGE, SMALL])
    param_names = ["loss", "shape"]

    def setup(self, loss, shape):
        case = CASES[loss]
        self.numpy_loss = case.numpy
        self.loss = case.make_loss()
        self.x, self.y = make_inputs(loss, shape)
        # first calls compile (or load from the cache) both kernels; keep the results as buffers
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.loss(self.x, self.y)

    def time_forward(self, loss, shape):
        self.loss(self.x, self.y)

    def time_forward_out(self, loss, shape):
        self.loss(self.x, self.y, out=self.out)

    def time_forward_backward(self, loss, shape):
        self.loss.forward_backward(self.x, self.y)

    def time_forward_backward_out(self, loss, shape):
        self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)

    def time_numpy_forward(self, loss, shape):
        self.numpy_loss(self.x, self.y)

    def time_numpy_forward_backward(self, loss, shape):
        self.numpy_loss(self.x, self.y, True)


class Bandwidth:
    """Effective GB/s of the fused forward+backward at (4096, 4096) float32, and the machine's triad.

    Bytes counted: pred and label read, the per-row output and the gradient
    written (about 12 bytes per element).
    """

    params = (LOSSES,)
    param_names = ["loss"]

    def setup(self, loss):
        self.loss = CASES[loss].make_loss()
        self.x, self.y = make_inputs(loss, LARGE)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.nbytes = traffic_bytes(LARGE, per_row=CASES[loss].per_row)

    def track_forward_backward_out_gbps(self, loss):
        seconds = best_ms(lambda: self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad), 5) / 1e3
        return self.nbytes / seconds / 1e9

    track_forward_backward_out_gbps.unit = "GB/s"


class Triad:
    """The machine's practical bandwidth: ``o = a + 2 b`` on (4096, 4096) float32 with numba threads."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.a = rng.random(LARGE, dtype=np.float32)
        self.b = rng.random(LARGE, dtype=np.float32)
        self.o = np.empty_like(self.a)
        triad(self.a, self.b, self.o)

    def time_triad(self):
        triad(self.a, self.b, self.o)

    def track_triad_gbps(self):
        return 3 * self.a.nbytes / (best_ms(lambda: triad(self.a, self.b, self.o), 5) / 1e3) / 1e9

    track_triad_gbps.unit = "GB/s"


class PeakMemory:
    """Peak resident memory of a forward+backward call at (4096, 4096) float32 (inputs are 128 MiB)."""

    params = (LOSSES,)
    param_names = ["loss"]

    def setup(self, loss):
        case = CASES[loss]
        self.numpy_loss = case.numpy
        self.loss = case.make_loss()
        self.loss.forward_backward(*make_inputs(loss, WARM_SHAPE))
        self.x, self.y = make_inputs(loss, LARGE)

    def peakmem_forward_backward(self, loss):
        self.loss.forward_backward(self.x, self.y)

    def peakmem_numpy_forward_backward(self, loss):
        self.numpy_loss(self.x, self.y, True)


class UserMadeLoss:
    """A loss written with ``elementwise_loss`` against the built-in one (same kernel factory)."""

    params = (list(USER_MADE), [LARGE, SMALL])
    param_names = ["loss", "shape"]

    def setup(self, loss, shape):
        self.builtin = CASES[loss].make_loss()
        self.user = USER_MADE[loss]()
        self.x, self.y = make_inputs(loss, shape)
        self.out, (self.grad,) = self.builtin.forward_backward(self.x, self.y)
        self.user.forward_backward(self.x, self.y)  # compiles the user kernel

    def time_builtin_forward_backward_out(self, loss, shape):
        self.builtin.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)

    def time_user_forward_backward_out(self, loss, shape):
        self.user.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
