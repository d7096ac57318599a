"""Planning of MXNet's ``MakeLoss``: the constant head gradient and its dtype rules."""

from __future__ import annotations

import math

import numpy as np

NORMALIZATIONS = ("null", "batch", "valid")


def check_normalization(normalization: str) -> None:
    """``ValueError`` listing the valid values for anything else."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(repr(n) for n in NORMALIZATIONS)}, got {normalization!r}"
        )


def float_dtype(name: str, dtype: np.dtype) -> np.dtype:
    """MakeLoss data must be floating point (float16, float32 or float64)."""
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


def threshold(dtype: np.dtype, valid_thresh: float) -> np.generic:
    """``valid_thresh`` as MXNet compares it: stored as float32, then in the data dtype."""
    return dtype.type(np.float32(valid_thresh))
