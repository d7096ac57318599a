"""Elementwise losses on the GPU: numba_losses vs CuPy array expressions vs PyTorch CUDA.

Skipped (``NotImplementedError`` in ``setup``, asv's convention) where there
is no GPU or no CuPy. Shapes: 2**26 float32 elements (8192 x 8192) and
(64, 10). Every timed call ends with a device synchronisation, so asv's wall
clock measures the GPU work; ``setup`` compiles the kernels first.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from .common import CASES, SMALL, make_inputs, torch_forward_backward, traffic_bytes

LARGE_GPU = (8192, 8192)
LOSSES = list(CASES)


def _require_gpu():
    if importlib.util.find_spec("cupy") is None:
        raise NotImplementedError("needs CuPy")
    from numba import cuda

    if cuda.config.ENABLE_CUDASIM or not cuda.is_available():
        raise NotImplementedError("needs a CUDA GPU")
    import cupy

    return cupy


class CudaElementwiseLoss:
    """Time of one synchronised call, for each loss and shape."""

    params = (LOSSES, [LARGE_GPU, SMALL])
    param_names = ["loss", "shape"]

    def setup(self, loss, shape):
        cupy = _require_gpu()
        self.cupy = cupy
        case = CASES[loss]
        self.case = case
        self.loss = case.make_loss()
        x, y = make_inputs(loss, shape)
        self.x, self.y = cupy.asarray(x), cupy.asarray(y)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.loss(self.x, self.y)
        self.torch = None
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
                self.xt = torch.as_tensor(x, device="cuda").requires_grad_(True)
                self.yt = torch.as_tensor(y, device="cuda")
        self._sync()

    def _sync(self):
        self.cupy.cuda.get_current_stream().synchronize()
        if self.torch is not None:
            self.torch.cuda.synchronize()

    def time_forward(self, loss, shape):
        self.loss(self.x, self.y)
        self._sync()

    def time_forward_backward(self, loss, shape):
        self.loss.forward_backward(self.x, self.y)
        self._sync()

    def time_forward_backward_out(self, loss, shape):
        self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad)
        self._sync()

    def time_cupy_forward_backward(self, loss, shape):
        self.case.numpy(self.x, self.y, True)
        self._sync()

    def time_torch_forward_backward(self, loss, shape):
        if self.torch is None:
            raise NotImplementedError("needs PyTorch with CUDA")
        torch_forward_backward(self.case.torch_forward, self.xt, self.yt)
        self._sync()


class CudaBandwidth:
    """Effective GB/s of the buffered forward+backward at 2**26 float32, and the copy bandwidth."""

    params = (LOSSES,)
    param_names = ["loss"]

    def setup(self, loss):
        cupy = _require_gpu()
        self.cupy = cupy
        self.loss = CASES[loss].make_loss()
        x, y = make_inputs(loss, LARGE_GPU)
        self.x, self.y = cupy.asarray(x), cupy.asarray(y)
        self.out, (self.grad,) = self.loss.forward_backward(self.x, self.y)
        self.nbytes = traffic_bytes(LARGE_GPU, per_row=CASES[loss].per_row)
        self.src = cupy.ones(LARGE_GPU[0] * LARGE_GPU[1], dtype=np.float32)
        self.dst = cupy.empty_like(self.src)

    def _gpu_seconds(self, fn, calls=10):
        fn()
        start, stop = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        return self.cupy.cuda.get_elapsed_time(start, stop) / 1e3 / calls

    def track_forward_backward_out_gbps(self, loss):
        s = self._gpu_seconds(lambda: self.loss.forward_backward(self.x, self.y, out=self.out, grad_out=self.grad))
        return self.nbytes / s / 1e9

    track_forward_backward_out_gbps.unit = "GB/s"

    def track_copy_gbps(self, loss):
        s = self._gpu_seconds(lambda: self.dst.__setitem__(Ellipsis, self.src))
        return 2 * self.src.nbytes / s / 1e9

    track_copy_gbps.unit = "GB/s"
