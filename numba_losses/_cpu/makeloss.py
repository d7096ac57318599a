"""MakeLoss on the host: NumPy's ``count_nonzero`` and ``full`` already run at memory speed."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._plan.makeloss import float_dtype, head_constant, threshold


def count_valid(data: Any, valid_thresh: float) -> int:
    """Number of elements strictly greater than ``valid_thresh`` (float32, then the data dtype)."""
    a = np.asarray(data)
    return int(np.count_nonzero(a > threshold(a.dtype, valid_thresh)))


def make_loss(data: Any, grad_scale: float, valid_thresh: float, normalization: str) -> tuple[Any, Any]:
    """``(copy of data, head gradient)``: see :func:`numba_losses.make_loss`."""
    a = np.asarray(data)
    dtype = float_dtype("data", a.dtype)
    count = count_valid(a, valid_thresh) if normalization == "valid" else None
    c = head_constant(a.shape, dtype, normalization, grad_scale, count)
    return a.copy(), np.full(a.shape, c, dtype=dtype)
