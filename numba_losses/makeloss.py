r"""MXNet's ``MakeLoss``: identity forward, constant head gradient.

``MakeLoss(data)`` returns ``data`` unchanged and, in the backward pass,
ignores the head gradient and writes one constant :math:`c` to every element
of the gradient:

.. math::

    c = \begin{cases}
        g & \text{normalization = 'null'} \\
        g / B, \; B = \prod_{d < n-1} \mathrm{shape}_d & \text{'batch' (1 for 1-D data)} \\
        g / \max(1, \#\{i : \mathrm{data}_i > t\}) & \text{'valid' (strict, NaN not counted)}
    \end{cases}

with ``g = grad_scale`` and ``t = valid_thresh`` stored as float32 (as MXNet
stores them). 'batch' divides in float32; 'valid' converts ``g`` and ``t`` to
the data dtype and divides there, the count being accumulated in the data
dtype (it stops growing at ``2**(mantissa bits + 1)``: 2048 for float16,
2**24 for float32), as MXNet's reduction does.

:func:`make_loss` applies this to a raw array; :class:`MakeLoss` wraps a loss
of this library so that its gradients are taken under that head gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._device import DeviceArray, DeviceContext, is_device_array
from ._loss import Loss
from ._validate import compute_dtype, result_dtype

NORMALIZATIONS = ("null", "batch", "valid")


def _check(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(repr(n) for n in NORMALIZATIONS)}, got {normalization!r}"
        )


def _float_dtype(name: str, dtype: np.dtype) -> np.dtype:
    if dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(f"{name}: MakeLoss data must be float16, float32 or float64, got {dtype}")
    return np.dtype(dtype)


def head_constant(
    shape: tuple[int, ...], dtype: np.dtype, normalization: str, grad_scale: float, count: int | None = None
) -> np.generic:
    """The constant head gradient ``c`` for data of ``shape`` / ``dtype`` (``count`` for 'valid')."""
    gs = np.float32(grad_scale)
    if normalization == "null":
        return dtype.type(gs)
    if normalization == "batch":
        b = math.prod(shape[:-1]) if len(shape) > 1 else 1
        return dtype.type(gs / np.float32(b))
    limit = 2 ** (np.finfo(dtype).nmant + 1)  # where adding 1.0 in this dtype stops counting
    n = dtype.type(min(int(count), limit))
    return dtype.type(gs) / max(dtype.type(1), n)


def _threshold(dtype: np.dtype, valid_thresh: float) -> np.generic:
    return dtype.type(np.float32(valid_thresh))


def count_valid(data: Any, valid_thresh: float) -> int:
    """Number of elements strictly greater than ``valid_thresh`` (float32, then the data dtype)."""
    if not is_device_array(data):
        a = np.asarray(data)
        return int(np.count_nonzero(a > _threshold(a.dtype, valid_thresh)))
    from ._dispatch_cuda import _gather

    d = DeviceArray.wrap("data", data)
    ctx = DeviceContext.of(d)
    with ctx.activate():
        flat = d.view(d.layout.reshape(-1)) if d.layout.flags.c_contiguous else _gather(d, d.layout, ctx)
        return _device_count(flat, _threshold(d.layout.dtype, valid_thresh), ctx)


def _device_count(flat: Any, thr: np.generic, ctx: DeviceContext) -> int:
    """``count_valid`` of a contiguous 1-D Numba device array: a device reduction, read back on the stream."""
    from numba_losses.kernels.cuda.makeloss import count_greater_kernel, fill_kernel

    counts = ctx.empty((1,), np.int64)[1]
    ctx.launch(fill_kernel, 1, counts, 0)
    if flat.shape[0]:
        ctx.launch(count_greater_kernel, flat.shape[0], flat, thr, counts)
    return int(counts.copy_to_host(stream=ctx.stream)[0])  # waits for this stream only


def make_loss(
    data: Any, grad_scale: float = 1.0, valid_thresh: float = 0.0, normalization: str = "null"
) -> tuple[Any, Any]:
    """MXNet ``MakeLoss`` on an array: ``(data copy, head gradient)``.

    Parameters
    ----------
    data : array_like or device array
        float16, float32 or float64 values (the loss to minimise).
    grad_scale : float, default 1.0
    valid_thresh : float, default 0.0
    normalization : {'null', 'batch', 'valid'}, default 'null'

    Returns
    -------
    out : array
        A copy of ``data`` (MXNet's forward is the identity).
    head : array
        ``data``'s shape and dtype, every element the constant ``c`` of the
        module docstring: the gradient MXNet's backward writes.

    Raises
    ------
    ValueError
        Unknown ``normalization`` (the message lists the valid values).
    TypeError
        ``data`` not of a floating-point dtype.
    """
    _check(normalization)
    if not is_device_array(data):
        a = np.asarray(data)
        dtype = _float_dtype("data", a.dtype)
        count = count_valid(a, valid_thresh) if normalization == "valid" else None
        c = head_constant(a.shape, dtype, normalization, grad_scale, count)
        return a.copy(), np.full(a.shape, c, dtype=dtype)
    from numba_losses.kernels.cuda.makeloss import fill_kernel

    from ._dispatch_cuda import _gather

    d = DeviceArray.wrap("data", data)
    dtype = _float_dtype("data", d.layout.dtype)
    shape, n = d.layout.shape, d.layout.size
    ctx = DeviceContext.of(d)
    with ctx.activate():
        copy_native, copy_view = ctx.empty(shape, dtype)
        flat_copy = copy_view.reshape(n)
        _gather(d, d.layout, ctx, dst=flat_copy)  # any strides; the count then reads the contiguous copy
        count = _device_count(flat_copy, _threshold(dtype, valid_thresh), ctx) if normalization == "valid" else None
        c = head_constant(shape, dtype, normalization, grad_scale, count)
        head_native, head_view = ctx.empty(shape, dtype)
        if n:
            ctx.launch(fill_kernel, n, head_view.reshape(n), c)
    return copy_native, head_native


def _result_dtype(a: Any) -> np.dtype:
    """Dtype of a loss's output for ``pred`` = ``a`` (the dispatcher's rule)."""
    layout = DeviceArray.wrap("pred", a).layout if is_device_array(a) else np.asarray(a)
    return result_dtype(layout, compute_dtype("pred", layout))


class MakeLoss:
    """Wrap a loss so that its gradients are taken under MXNet ``MakeLoss``'s head gradient.

    ``M(*inputs)`` is the wrapped loss's output, unchanged.
    ``M.forward_backward(*inputs)`` returns that output and the gradients of
    the loss inputs when the head gradient is the constant ``c`` of
    :func:`make_loss` for that output (any ``out_grad`` passed is ignored, as
    in MXNet).

    For 'null', and 'batch' on losses with 1-D outputs (``B = 1``), ``c`` is
    known before the call and is folded into the loss's fused
    forward+backward pass. 'valid' needs the output values to count them, so
    it runs the forward pass, counts, then the backward pass with ``c``.

    Parameters
    ----------
    loss : Loss
        Any loss of this library (built-in or from :func:`elementwise_loss`).
    grad_scale : float, default 1.0
    valid_thresh : float, default 0.0
    normalization : {'null', 'batch', 'valid'}, default 'null'
    """

    def __init__(
        self, loss: Loss, grad_scale: float = 1.0, valid_thresh: float = 0.0, normalization: str = "null"
    ) -> None:
        _check(normalization)
        if not isinstance(loss, Loss):
            raise TypeError(f"MakeLoss wraps a numba_losses Loss, got {type(loss).__name__}")
        self.loss = loss
        self.grad_scale = float(grad_scale)
        self.valid_thresh = float(valid_thresh)
        self.normalization = normalization

    def __repr__(self) -> str:
        return (
            f"MakeLoss({self.loss!r}, grad_scale={self.grad_scale!r}, valid_thresh={self.valid_thresh!r}, "
            f"normalization={self.normalization!r})"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped loss's output (MakeLoss's forward is the identity)."""
        return self.loss(*args, **kwargs)

    def forward_backward(
        self, *args: Any, out_grad: Any = None, out: Any = None, grad_out: Any = None, **kwargs: Any
    ) -> tuple[Any, tuple[Any, ...]]:
        """Output and gradients under the MakeLoss head gradient; ``out_grad`` is ignored.

        ``out`` / ``grad_out`` buffers are passed on to the wrapped loss.
        """
        del out_grad  # MXNet's MakeLoss does not read the head gradient
        pred = args[0] if args else kwargs.get(self.loss._inputs[0])
        dtype = _result_dtype(pred)
        if self.normalization == "null" or (self.normalization == "batch" and self.loss._output_ndim == 1):
            c = head_constant((1,), dtype, self.normalization, self.grad_scale)
            return self.loss.forward_backward(*args, out_grad=float(c), out=out, grad_out=grad_out, **kwargs)
        value = self.loss(*args, out=out, **kwargs)
        count = count_valid(value, self.valid_thresh) if self.normalization == "valid" else None
        c = head_constant(tuple(value.shape), dtype, self.normalization, self.grad_scale, count)
        return value, self.loss.backward(*args, out_grad=float(c), grad_out=grad_out, **kwargs)

    def backward(self, *args: Any, out_grad: Any = None, grad_out: Any = None, **kwargs: Any) -> tuple[Any, ...]:
        """Gradients only (same arguments as :meth:`forward_backward`)."""
        return self.forward_backward(*args, out_grad=out_grad, grad_out=grad_out, **kwargs)[1]
