"""Tensors to the arrays the loss kernels read, and results back to tensors, without copies.

A CPU tensor is read through ``tensor.detach().numpy()``, a NumPy view of the
same memory (strided views included); a CUDA tensor is handed over as is,
since it exposes ``__cuda_array_interface__`` (tested on an NVIDIA H200). A
NumPy result becomes a tensor with ``torch.from_numpy`` (shared memory); a
device result with ``torch.as_tensor`` on the input's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: dtypes computed in float32 and returned in their own dtype.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def to_array(t: torch.Tensor) -> Any:
    """The array the kernels read for tensor ``t`` (no copy)."""
    if t.is_cpu:  # force=True: the view without a detach() first (no copy for a real CPU tensor), or the
        # values of a tensor with a lazy negation (z.conj().imag), which numpy() refuses (a copy)
        return t.numpy(force=True) if t.requires_grad or t.is_neg() else t.numpy()
    t = t.detach().resolve_neg()  # __cuda_array_interface__ exports the memory without a lazy negation
    if t.device.type == "cuda":
        return t
    raise ValueError(f"tensors on device {t.device} are not supported (CPU and CUDA only)")


def to_tensor(a: Any, device: torch.device) -> torch.Tensor:
    """A tensor viewing result ``a`` (a NumPy array, or a device array on ``device``)."""
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.as_tensor(a, device=device)


class Meta:
    """``.shape`` and a NumPy ``.dtype`` of a (possibly fake) tensor: what ``Loss.result_shapes`` reads."""

    __slots__ = ("shape", "dtype")

    def __init__(self, t: torch.Tensor) -> None:
        self.shape = tuple(int(n) for n in t.shape)
        self.dtype = numpy_dtype(t.dtype)


_NUMPY = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.bool: np.bool_,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
}


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype of a torch dtype the kernels accept (``TypeError`` otherwise)."""
    try:
        return np.dtype(_NUMPY[dtype])
    except KeyError:
        raise TypeError(f"dtype {dtype} is not supported by the loss kernels") from None


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy result dtype."""
    return torch.from_numpy(np.empty(0, dtype)).dtype
