"""Elementwise losses: numba_losses vs vectorised NumPy (CuPy on a GPU) and PyTorch, on the CPU and on CUDA.

``device`` is an asv parameter: ``"cpu"`` times NumPy arrays, ``"cuda"`` CuPy
arrays, and is skipped (``NotImplementedError`` in ``setup``, asv's
convention) where there is no GPU or no CuPy. Shapes: ``(4096, 4096)``
float32 on the CPU and 2**26 float32 elements ``(8192, 8192)`` on the GPU
(memory-bound, the parallel kernels), and ``(64, 10)`` on both (call
overhead, the serial kernels). On the GPU the "NumPy" versions of
``common.py`` run on CuPy arrays (NumPy's dispatch protocols) and every timed
call ends with a device synchronisation, so asv's wall clock measures the GPU
work. ``setup`` draws the inputs and calls forward and forward_backward once,
so compilation (or loading the on-disk kernel cache) is never timed.
"""

from __future__ import annotations

import numpy as np

from .common import (
    CASES,
    DEVICES,
    LARGE,
    LARGE_GPU,
    SMALL,
    USER_MADE,
    Device,
    best_ms,
    make_inputs,
    skip_shape,
    torch_forward_backward,
    traffic_bytes,
    triad,
)

LOSSES = list(CASES)
SHAPES = [LARGE, LARGE_GPU, SMALL]  # LARGE on the CPU only, LARGE_GPU on the GPU only
WARM_SHAPE = (256, 256)  # above the library's serial threshold: warms the parallel kernels


class ElementwiseLoss:
    """Wall time of one call, for each loss, shape and device."""

    params = (LOSSES, SHAPES, DEVICES)
    param_names = ["loss", "shape", "device"]

    def setup(self, loss, shape, device):
        skip_shape(shape, device)
        self.dev = Device(device)
        case = CASES[loss]
        self.numpy_loss = case.numpy
        self.loss = case.make_loss()
        x, y = make_inputs(loss, shape)
        self.x, self.y = self.dev.asarray(x), self.dev.asarray(y)
        # first calls compile (or load from the cache) both kernels; keep the results as buffers
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.loss(self.x, self.y)
        self.dev.sync()

    def time_forward(self, loss, shape, device):
        self.loss(self.x, self.y)
        self.dev.sync()

    def time_forward_out(self, loss, shape, device):
        self.loss(self.x, self.y, out=self.out)
        self.dev.sync()

    def time_forward_backward(self, loss, shape, device):
        self.loss.forward_backward(self.x, self.y)
        self.dev.sync()

    def time_forward_backward_out(self, loss, shape, device):
        self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
        self.dev.sync()

    def time_numpy_forward(self, loss, shape, device):
        self.numpy_loss(self.x, self.y)
        self.dev.sync()

    def time_numpy_forward_backward(self, loss, shape, device):
        self.numpy_loss(self.x, self.y, True)
        self.dev.sync()


class ElementwiseTorch:
    """PyTorch forward and autograd backward (head of ones) of the same loss; skipped without PyTorch."""

    params = (LOSSES, SHAPES, DEVICES)
    param_names = ["loss", "shape", "device"]

    def setup(self, loss, shape, device):
        skip_shape(shape, device)
        self.dev = Device(device)
        self.dev.use_torch()
        self.forward = CASES[loss].torch_forward
        x, y = make_inputs(loss, shape)
        self.xt, self.yt = self.dev.tensor(x, grad=True), self.dev.tensor(y)
        torch_forward_backward(self.forward, self.xt, self.yt)
        self.dev.sync()

    def time_torch_forward_backward(self, loss, shape, device):
        torch_forward_backward(self.forward, self.xt, self.yt)
        self.dev.sync()


class Bandwidth:
    """Effective GB/s of the fused forward+backward at the large shape.

    Bytes counted: pred and label read, the per-row output and the gradient
    written (about 12 bytes per element). The CPU's bound is :class:`Triad`,
    the GPU's :class:`CopyBandwidth`.
    """

    params = (LOSSES, DEVICES)
    param_names = ["loss", "device"]

    def setup(self, loss, device):
        self.dev = Device(device)
        shape = LARGE_GPU if self.dev.gpu else LARGE
        self.loss = CASES[loss].make_loss()
        x, y = make_inputs(loss, shape)
        self.x, self.y = self.dev.asarray(x), self.dev.asarray(y)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.nbytes = traffic_bytes(shape, per_row=CASES[loss].per_row)

    def track_forward_backward_out_gbps(self, loss, device):
        seconds = self.dev.seconds(lambda: self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad))
        return self.nbytes / seconds / 1e9

    track_forward_backward_out_gbps.unit = "GB/s"


class Triad:
    """The CPU's practical bandwidth: ``o = a + 2 b`` on (4096, 4096) float32 with numba threads."""

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


class CopyBandwidth:
    """The GPU's practical bandwidth: a device-to-device copy of 2**26 float32 (skipped on the CPU: see Triad)."""

    params = (DEVICES,)
    param_names = ["device"]

    def setup(self, device):
        if device == "cpu":
            raise NotImplementedError("the CPU's bound is Triad")
        self.dev = Device(device)
        self.src = self.dev.xp.ones(LARGE_GPU[0] * LARGE_GPU[1], dtype=np.float32)
        self.dst = self.dev.xp.empty_like(self.src)

    def track_copy_gbps(self, device):
        return 2 * self.src.nbytes / self.dev.seconds(lambda: self.dst.__setitem__(Ellipsis, self.src)) / 1e9

    track_copy_gbps.unit = "GB/s"


class PeakMemory:
    """Peak resident memory of a forward+backward call at (4096, 4096) float32 on the CPU (inputs are 128 MiB)."""

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

    params = (list(USER_MADE), SHAPES, DEVICES)
    param_names = ["loss", "shape", "device"]

    def setup(self, loss, shape, device):
        skip_shape(shape, device)
        self.dev = Device(device)
        self.builtin = CASES[loss].make_loss()
        self.user = USER_MADE[loss]()
        x, y = make_inputs(loss, shape)
        self.x, self.y = self.dev.asarray(x), self.dev.asarray(y)
        self.out, (self.grad,) = self.builtin.forward_backward(self.x, self.y)
        self.user.forward_backward(self.x, self.y)  # compiles the user kernel
        self.dev.sync()

    def time_builtin_forward_backward_out(self, loss, shape, device):
        self.builtin.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
        self.dev.sync()

    def time_user_forward_backward_out(self, loss, shape, device):
        self.user.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
        self.dev.sync()
