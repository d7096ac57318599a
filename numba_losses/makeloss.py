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

from typing import Any

import numpy as np

from ._core.device import DeviceArray
from ._core.params import check_real
from ._core.request import is_dask_array, is_device_array, select_backend
from ._core.validate import as_host_array, compute_dtype, numpy_dtype, result_dtype
from ._plan.makeloss import check_normalization, head_constant
from .loss import Loss, family_module


def count_valid(data: Any, valid_thresh: float) -> int:
    """Number of elements of ``data`` (host or device) strictly greater than ``valid_thresh``."""
    return family_module(select_backend({"data": data}), "makeloss").count_valid(data, valid_thresh)


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
        Unknown ``normalization`` (the message lists the valid values);
        ``grad_scale`` or ``valid_thresh`` NaN or infinite.
    TypeError
        ``data`` not of a floating-point dtype; ``grad_scale`` or
        ``valid_thresh`` not a real number.
    """
    check_normalization(normalization)
    grad_scale = check_real("make_loss", "grad_scale", grad_scale)
    valid_thresh = check_real("make_loss", "valid_thresh", valid_thresh)
    return family_module(select_backend({"data": data}), "makeloss").make_loss(
        data, grad_scale, valid_thresh, normalization
    )


def _result_dtype(a: Any) -> Any:
    """Dtype of a loss's output for ``pred`` = ``a`` (every family's rule)."""
    if is_dask_array(a):  # its dtype only: never computed here, and its chunks (shape) may be unknown
        a = np.empty(0, dtype=numpy_dtype("pred", a.dtype))
    layout = DeviceArray.wrap("pred", a).layout if is_device_array(a) else as_host_array("pred", a)
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
        check_normalization(normalization)
        if not isinstance(loss, Loss):
            raise TypeError(f"MakeLoss wraps a numba_losses Loss, got {type(loss).__name__}")
        self.loss = loss
        self.grad_scale = check_real("MakeLoss", "grad_scale", grad_scale)
        self.valid_thresh = check_real("MakeLoss", "valid_thresh", valid_thresh)
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
        if is_dask_array(value):  # the count is one more lazy reduction
            from .dask import makeloss_head

            c = makeloss_head(value, dtype, self.normalization, self.grad_scale, self.valid_thresh)
            return value, self.loss.backward(*args, out_grad=c, grad_out=grad_out, **kwargs)
        count = count_valid(value, self.valid_thresh) if self.normalization == "valid" else None
        c = head_constant(tuple(value.shape), dtype, self.normalization, self.grad_scale, count)
        return value, self.loss.backward(*args, out_grad=float(c), grad_out=grad_out, **kwargs)

    def result_shapes(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped loss's :meth:`~numba_losses.Loss.result_shapes` (MakeLoss changes no shape)."""
        return self.loss.result_shapes(*args, **kwargs)

    def backward(self, *args: Any, out_grad: Any = None, grad_out: Any = None, **kwargs: Any) -> tuple[Any, ...]:
        """Gradients only (same arguments as :meth:`forward_backward`)."""
        return self.forward_backward(*args, out_grad=out_grad, grad_out=grad_out, **kwargs)[1]
