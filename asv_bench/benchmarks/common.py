"""Inputs and independent reference versions of the benchmarked losses.

Shared by the asv benchmarks (``bench_elementwise.py``) and the side-by-side
script ``asv_bench/compare.py``. Every loss is described by one :class:`Case`:

* how to build the ``numba_losses`` object;
* how to draw realistic float32 inputs (signed labels for the hinge losses,
  0/1 targets for BCE, counts for Poisson, probabilities for KL);
* a vectorised NumPy version of the loss and its gradient, written here from
  the semantics in docs/semantics.rst (2-D inputs, batch axis 0, no weights, head
  gradient of ones);
* a PyTorch CPU version using ``torch.nn.functional`` (autograd for the
  gradient). ``torch`` is imported only when that version is called.

The NumPy versions return ``out`` or ``(out, dpred)``; they are written for
speed in plain NumPy (stable formulas, few temporaries), not for MXNet's exact
subgradients at measure-zero points such as ``x == 0`` for BCE.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

import numba_losses as nl

LARGE = (4096, 4096)
LARGE_GPU = (8192, 8192)  # 2**26 float32 elements: the "large" shape on a GPU
SMALL = (64, 10)
SEED = 1234
BLOCK = 1 << 20  # distinct random elements per input array

Arrays = tuple[np.ndarray, np.ndarray]


# -- inputs -------------------------------------------------------------------
def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def regression_data(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    """Normal predictions and normal labels."""
    return _normal(rng, shape), _normal(rng, shape)


def signed_data(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    """Normal scores and labels in {-1, 1}."""
    labels = np.where(_uniform(rng, shape) < 0.5, np.float32(-1), np.float32(1))
    return _normal(rng, shape), labels


def binary_data(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    """Normal logits and targets in {0, 1}."""
    return _normal(rng, shape), (_uniform(rng, shape) < 0.5).astype(np.float32)


def count_data(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    """Log-rates around 0 and small integer counts (as float32)."""
    return np.float32(0.5) * _normal(rng, shape), np.floor(np.float32(3) * _uniform(rng, shape))


def probability_data(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    """Log-probabilities (finite, <= 0) and probabilities in [0, 1)."""
    return np.log1p(-_uniform(rng, shape)), _uniform(rng, shape)


# -- NumPy versions ------------------------------------------------------------
def _finish(out: np.ndarray, dpred: np.ndarray | None) -> Any:
    return out if dpred is None else (out, dpred)


def numpy_l2(x: np.ndarray, y: np.ndarray, want_grad: bool = False) -> Any:
    """``mean(0.5 (y - x)^2)`` per row; gradient ``(x - y) / K``."""
    d = x - y
    out = 0.5 * np.mean(d * d, axis=1)
    if want_grad:
        d *= np.float32(1.0 / x.shape[1])
    return _finish(out, d if want_grad else None)


def numpy_l1(x: np.ndarray, y: np.ndarray, want_grad: bool = False) -> Any:
    """``mean(|y - x|)`` per row; gradient ``sign(x - y) / K``."""
    d = x - y
    out = np.mean(np.abs(d), axis=1)
    if want_grad:
        np.sign(d, out=d)
        d *= np.float32(1.0 / x.shape[1])
    return _finish(out, d if want_grad else None)


def numpy_huber(x: np.ndarray, y: np.ndarray, want_grad: bool = False, rho: float = 1.0) -> Any:
    """Huber with threshold ``rho``; gradient ``clip((x - y) / rho, -1, 1) / K``."""
    d = x - y
    a = np.abs(d)
    out = np.mean(np.where(a > rho, a - 0.5 * rho, (0.5 / rho) * a * a), axis=1)
    if want_grad:
        d *= np.float32(1.0 / rho)
        np.clip(d, -1, 1, out=d)
        d *= np.float32(1.0 / x.shape[1])
    return _finish(out, d if want_grad else None)


def numpy_hinge(x: np.ndarray, y: np.ndarray, want_grad: bool = False, margin: float = 1.0) -> Any:
    """``mean(max(0, m - x y))``; gradient ``-y [m - x y > 0] / K``."""
    m = margin - x * y
    out = np.mean(np.maximum(m, 0), axis=1)
    if want_grad:
        m = np.where(m > 0, y * np.float32(-1.0 / x.shape[1]), np.float32(0))
    return _finish(out, m if want_grad else None)


def numpy_squared_hinge(x: np.ndarray, y: np.ndarray, want_grad: bool = False, margin: float = 1.0) -> Any:
    """``mean(max(0, m - x y)^2)``; gradient ``-2 y max(0, m - x y) / K``."""
    r = np.maximum(margin - x * y, 0)
    out = np.mean(r * r, axis=1)
    if want_grad:
        r *= y
        r *= np.float32(-2.0 / x.shape[1])
    return _finish(out, r if want_grad else None)


def numpy_bce_logits(x: np.ndarray, z: np.ndarray, want_grad: bool = False) -> Any:
    """Stable BCE on logits, ``max(x, 0) - x z + log1p(exp(-|x|))``; gradient ``(sigmoid(x) - z) / K``."""
    e = np.exp(-np.abs(x))
    out = np.mean(np.maximum(x, 0) - x * z + np.log1p(e), axis=1)
    if not want_grad:
        return out
    inv = 1 / (1 + e)
    sig = np.where(x >= 0, inv, e * inv)  # sigmoid(x) without overflow
    sig -= z
    sig *= np.float32(1.0 / x.shape[1])
    return out, sig


def numpy_logistic_signed(x: np.ndarray, y: np.ndarray, want_grad: bool = False) -> Any:
    """Logistic loss with labels in {-1, 1}: BCE on logits with ``z = (y + 1) / 2``."""
    return numpy_bce_logits(x, (y + 1) * np.float32(0.5), want_grad)


def numpy_poisson_logits(x: np.ndarray, t: np.ndarray, want_grad: bool = False) -> Any:
    """``mean(exp(x) - t x)`` over all elements, shape ``(1,)``; gradient ``(exp(x) - t) / M``."""
    ex = np.exp(x)
    out = np.mean(ex - t * x, keepdims=True).reshape(1)
    if want_grad:
        ex -= t
        ex *= np.float32(1.0 / x.size)
    return _finish(out, ex if want_grad else None)


def numpy_kldiv_logits(x: np.ndarray, y: np.ndarray, want_grad: bool = False) -> Any:
    """``sum(y (log(y + 1e-12) - x))`` per row (``x`` are log-probabilities); gradient ``-y``."""
    out = np.sum(y * (np.log(y + np.float32(1e-12)) - x), axis=1)
    return _finish(out, np.negative(y) if want_grad else None)


# -- PyTorch versions ----------------------------------------------------------
def _torch_functional() -> Any:
    import torch.nn.functional as F  # noqa: N812 - the usual alias

    return F


def torch_l2(x: Any, y: Any) -> Any:
    """PyTorch forward of L2Loss (per-row)."""
    return 0.5 * _torch_functional().mse_loss(x, y, reduction="none").mean(1)


def torch_l1(x: Any, y: Any) -> Any:
    """PyTorch forward of L1Loss (per-row)."""
    return _torch_functional().l1_loss(x, y, reduction="none").mean(1)


def torch_huber(x: Any, y: Any) -> Any:
    """PyTorch forward of HuberLoss(rho=1): smooth L1 with ``beta = rho`` (per-row)."""
    return _torch_functional().smooth_l1_loss(x, y, reduction="none", beta=1.0).mean(1)


def torch_hinge(x: Any, y: Any) -> Any:
    """PyTorch forward of HingeLoss(margin=1) (per-row)."""
    return _torch_functional().relu(1.0 - x * y).mean(1)


def torch_squared_hinge(x: Any, y: Any) -> Any:
    """PyTorch forward of SquaredHingeLoss(margin=1) (per-row)."""
    return _torch_functional().relu(1.0 - x * y).square().mean(1)


def torch_bce_logits(x: Any, z: Any) -> Any:
    """PyTorch forward of SigmoidBCELoss on logits (per-row)."""
    return _torch_functional().binary_cross_entropy_with_logits(x, z, reduction="none").mean(1)


def torch_logistic_signed(x: Any, y: Any) -> Any:
    """PyTorch forward of LogisticLoss(label_format='signed') (per-row)."""
    return torch_bce_logits(x, (y + 1) * 0.5)


def torch_poisson_logits(x: Any, t: Any) -> Any:
    """PyTorch forward of PoissonNLLLoss(from_logits=True), shape ``(1,)``."""
    return _torch_functional().poisson_nll_loss(x, t, log_input=True, full=False, reduction="mean").reshape(1)


def torch_kldiv_logits(x: Any, y: Any) -> Any:
    """PyTorch forward of KLDivLoss(from_logits=True) (per-row sum)."""
    return _torch_functional().kl_div(x, y, reduction="none").sum(1)


def torch_forward_backward(forward: Callable[[Any, Any], Any], x: Any, y: Any) -> Any:
    """Forward and backward through autograd with a head gradient of ones.

    Parameters
    ----------
    forward : callable
        One of the ``torch_*`` forwards above.
    x : torch.Tensor
        Predictions with ``requires_grad=True``; its ``.grad`` is reset first so
        every call allocates a fresh gradient, as the other versions do.
    y : torch.Tensor
        Labels.

    Returns
    -------
    out, dpred : torch.Tensor
    """
    x.grad = None
    out = forward(x, y)
    out.backward(_torch_ones_like(out))
    return out, x.grad


def _torch_ones_like(t: Any) -> Any:
    import torch

    return torch.ones_like(t)


# -- the cases -----------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One benchmarked loss: the library object, inputs and reference versions."""

    name: str
    make_loss: Callable[[], nl.Loss]
    make_data: Callable[[np.random.Generator, tuple[int, ...]], Arrays]
    numpy: Callable[..., Any]
    torch_forward: Callable[[Any, Any], Any]
    per_row: bool = True  # output has one value per row (else shape (1,))


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("L2Loss", nl.L2Loss, regression_data, numpy_l2, torch_l2),
        Case("L1Loss", nl.L1Loss, regression_data, numpy_l1, torch_l1),
        Case("HuberLoss", lambda: nl.HuberLoss(rho=1), regression_data, numpy_huber, torch_huber),
        Case("HingeLoss", lambda: nl.HingeLoss(margin=1), signed_data, numpy_hinge, torch_hinge),
        Case(
            "SquaredHingeLoss",
            lambda: nl.SquaredHingeLoss(margin=1),
            signed_data,
            numpy_squared_hinge,
            torch_squared_hinge,
        ),
        Case(
            "SigmoidBCELoss",
            lambda: nl.SigmoidBCELoss(from_sigmoid=False),
            binary_data,
            numpy_bce_logits,
            torch_bce_logits,
        ),
        Case(
            "LogisticLoss",
            lambda: nl.LogisticLoss(label_format="signed"),
            signed_data,
            numpy_logistic_signed,
            torch_logistic_signed,
        ),
        Case(
            "PoissonNLLLoss",
            lambda: nl.PoissonNLLLoss(from_logits=True),
            count_data,
            numpy_poisson_logits,
            torch_poisson_logits,
            per_row=False,
        ),
        Case(
            "KLDivLoss",
            lambda: nl.KLDivLoss(from_logits=True),
            probability_data,
            numpy_kldiv_logits,
            torch_kldiv_logits,
        ),
    )
}


def make_inputs(name: str, shape: tuple[int, ...], seed: int = SEED) -> Arrays:
    """The (pred, label) pair of case ``name`` at ``shape``, reproducibly.

    At most ``BLOCK`` distinct random elements are drawn, and repeated to fill
    larger shapes (drawing 16 M normals costs about 0.3 s per array; the kernels
    still stream every byte from memory, and a 1 M pattern defeats branch
    prediction as well as fresh data would).
    """
    n = int(np.prod(shape))
    pred, label = CASES[name].make_data(np.random.default_rng(seed), (min(n, BLOCK),))
    if n > BLOCK:
        pred, label = np.resize(pred, n), np.resize(label, n)
    return pred.reshape(shape), label.reshape(shape)


def traffic_bytes(shape: tuple[int, ...], itemsize: int = 4, per_row: bool = True, grad: bool = True) -> int:
    """Bytes a fused pass must move: read pred and label, write the output (and the gradient)."""
    n = int(np.prod(shape))
    n_out = shape[0] if per_row else 1
    return itemsize * (2 * n + n_out + (n if grad else 0))


# -- machine bandwidth -----------------------------------------------------------
@njit(parallel=True, cache=True)
def _triad_kernel(a, b, o):
    for i in prange(a.size):
        o[i] = a[i] + np.float32(2) * b[i]


def triad(a: np.ndarray, b: np.ndarray, o: np.ndarray) -> None:
    """STREAM-like triad ``o = a + 2 b`` with numba's threads (contiguous float32 arrays)."""
    _triad_kernel(a.reshape(-1), b.reshape(-1), o.reshape(-1))


# -- timing -----------------------------------------------------------------------
def best_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Shortest wall time of ``repeats`` calls of ``fn``, in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


# -- user-made losses (elementwise_loss) ------------------------------------------
def user_l1_value(pred: float, label: float) -> float:
    """L1 written by a user: ``|label - pred|``."""
    return abs(label - pred)


def user_l1_grad(pred: float, label: float) -> float:
    """Its derivative ``sign(pred - label)`` (branches: numba-cuda has no ``np.sign``)."""
    if pred > label:
        return 1.0
    if pred < label:
        return -1.0
    return 0.0


def user_huber_value(pred: float, label: float, rho: float) -> float:
    """Huber written by a user."""
    d = abs(label - pred)
    if d > rho:
        return d - 0.5 * rho
    return 0.5 / rho * d * d


def user_huber_grad(pred: float, label: float, rho: float) -> float:
    """Its derivative, ``clip((pred - label) / rho, -1, 1)``."""
    d = pred - label
    if d > rho:
        return 1.0
    if d < -rho:
        return -1.0
    return d / rho


USER_MADE = {
    "L1Loss": lambda: nl.elementwise_loss(user_l1_value, user_l1_grad, name="UserL1")(),
    "HuberLoss": lambda: nl.elementwise_loss(user_huber_value, user_huber_grad, name="UserHuber", params=("rho",))(
        rho=1.0
    ),
}


# -- devices (asv parameter ``device``) --------------------------------------------
DEVICES = ["cpu", "cuda"]


def skip_shape(shape: tuple[int, ...], device: str) -> None:
    """asv skip: ``LARGE`` is timed on the CPU only, ``LARGE_GPU`` on the GPU only."""
    if (shape == LARGE and device == "cuda") or (shape == LARGE_GPU and device == "cpu"):
        raise NotImplementedError(f"{shape} is not timed on {device}")


class Device:
    """Where a benchmark's arrays live: NumPy arrays on the CPU, CuPy arrays on the GPU.

    ``Device("cuda")`` raises ``NotImplementedError`` (asv's way to skip, from
    ``setup``) where there is no GPU or no CuPy. Timed GPU calls end with
    :meth:`sync`, so asv's wall clock measures the GPU work.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.torch: Any = None
        if name == "cpu":
            self.xp: Any = np
            return
        if importlib.util.find_spec("cupy") is None:
            raise NotImplementedError("needs CuPy")
        from numba import cuda

        if cuda.config.ENABLE_CUDASIM or not cuda.is_available():
            raise NotImplementedError("needs a CUDA GPU")
        import cupy

        self.xp = cupy

    @property
    def gpu(self) -> bool:
        return self.name == "cuda"

    def asarray(self, a: np.ndarray) -> Any:
        """``a`` on this device (the array itself on the CPU)."""
        return self.xp.asarray(a) if self.gpu else a

    def use_torch(self) -> Any:
        """The ``torch`` module for this device; ``NotImplementedError`` without PyTorch (or its CUDA)."""
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("PyTorch is not installed")
        import torch

        if self.gpu and not torch.cuda.is_available():
            raise NotImplementedError("needs PyTorch with CUDA")
        self.torch = torch
        return torch

    def tensor(self, a: np.ndarray, grad: bool = False) -> Any:
        """A PyTorch tensor of ``a`` on this device (sharing memory on the CPU)."""
        t = self.torch.as_tensor(a, device="cuda") if self.gpu else self.torch.from_numpy(a)
        return t.requires_grad_(True) if grad else t

    def sync(self) -> None:
        """Wait for the GPU work queued so far (CuPy's stream, and PyTorch's when used); nothing on the CPU."""
        if self.gpu:
            self.xp.cuda.get_current_stream().synchronize()
            if self.torch is not None:
                self.torch.cuda.synchronize()

    def seconds(self, fn: Callable[[], Any]) -> float:
        """Seconds per call of ``fn``: the best of 5 wall times on the CPU, CUDA events over 10 calls on a GPU."""
        if not self.gpu:
            return best_ms(fn, 5) / 1e3
        fn()
        start, stop = self.xp.cuda.Event(), self.xp.cuda.Event()
        start.record()
        for _ in range(10):
            fn()
        stop.record()
        stop.synchronize()
        return self.xp.cuda.get_elapsed_time(start, stop) / 1e3 / 10
