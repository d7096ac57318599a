"""Planning of TripletLoss and CosineEmbeddingLoss (shapes and dtypes only).

TripletLoss: ``positive`` and ``negative`` are reshaped like ``pred``; the
rows are the positions along ``batch_axis``, mapped onto the canonical
``(n_outer, n_rows, n_inner)`` layout without copies (as for the elementwise
losses).

CosineEmbeddingLoss: ``input1`` is reshaped like ``input2``; vectors run
along the last axis, ``M = prod(shape[:-1])`` of them. ``label`` (reshaped to
``(-1, 1)``) broadcasts against ``(M, 1)``, which gives the loss rows ``R``
(``M``, or the label's length when ``M == 1``). ``sample_weight`` broadcasts
against ``(R, 1)`` and may grow the output (``(M, 1) x (M,) -> (M, M)``); when it
does not, it is a per-row scale applied by the kernel; when it does, the
kernel writes the unweighted rows and MXNet's product weighting forms the
output (:mod:`numba_losses._core.weighting`). A single vector broadcast to
``R > 1`` labels is read as a zero-stride row; its gradient rows are summed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._core.validate import as_host_array, compute_dtype, normalize_axis, result_dtype
from .._core.weighting import product_shape

TRIPLET_GRADS = ("pred", "positive", "negative")
COSINE_GRADS = ("input1", "input2")


@dataclass(slots=True)
class TripletSpec:
    """TripletLoss parameters."""

    family: ClassVar[str] = "pairwise"
    margin: float
    weight: float
    batch_axis: int


@dataclass(slots=True)
class CosineSpec:
    """CosineEmbeddingLoss parameters."""

    family: ClassVar[str] = "pairwise"
    margin: float
    weight: float


@dataclass(slots=True)
class TripletPlan:
    """Compute / result dtypes and the ``(n_outer, n_rows, n_inner)`` layout."""

    cdt: np.dtype
    rdt: np.dtype
    shape3: tuple[int, int, int]


def _check_size(name: str, arr: np.ndarray, shape: tuple[int, ...], like: str) -> None:
    """MXNet ``reshape_like``'s condition: the same number of elements."""
    size = math.prod(shape)
    if arr.size != size:
        raise ValueError(
            f"{name} of shape {arr.shape} ({arr.size} elements) cannot be reshaped like "
            f"{like} of shape {shape} ({size} elements)"
        )


def plan_triplet(x: np.ndarray, p: np.ndarray, n: np.ndarray, batch_axis: int) -> TripletPlan:
    """Validate TripletLoss inputs (layout arrays: only shapes and dtypes are read)."""
    cdt = compute_dtype("pred", x)
    as_host_array("positive", p)  # dtype checks
    as_host_array("negative", n)
    _check_size("positive", p, x.shape, "pred")
    _check_size("negative", n, x.shape, "pred")
    ax = normalize_axis(batch_axis, x.ndim)
    shape3 = (math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1 :]))
    return TripletPlan(cdt, result_dtype(x, cdt), shape3)


@dataclass(slots=True)
class CosinePlan:
    """Shapes of a CosineEmbeddingLoss call.

    ``n_src`` vectors of ``k`` elements, ``n_rows`` loss rows (``n_src`` or the
    label's length when ``n_src == 1``), output shape ``out_shape`` and whether
    ``sample_weight`` keeps it at ``(n_rows, 1)`` (``per_row``).
    """

    cdt: np.dtype
    rdt: np.dtype
    n_src: int
    k: int
    n_rows: int
    out_shape: tuple[int, ...]
    per_row: bool


def plan_cosine(a: np.ndarray, b: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> CosinePlan:
    """Validate CosineEmbeddingLoss inputs (layout arrays: only shapes and dtypes are read)."""
    cdt = compute_dtype("input1", a)
    as_host_array("input2", b)
    as_host_array("label", y)
    if b.ndim == 0:
        raise ValueError("input2 must have at least one dimension (vectors run along its last axis)")
    _check_size("input1", a, b.shape, "input2")
    n_src, k = math.prod(b.shape[:-1]), b.shape[-1]
    n_label = y.size
    if n_label in (n_src, 1):
        n_rows = n_src
    elif n_src == 1:
        n_rows = n_label
    else:
        raise ValueError(
            f"label of shape {y.shape} ({n_label} elements, reshaped to ({n_label}, 1)) does not broadcast "
            f"against the {n_src} vectors of input2 {b.shape} (shape ({n_src}, 1))"
        )
    out_shape = product_shape((n_rows, 1), sw.shape if sw is not None else None)
    return CosinePlan(cdt, result_dtype(a, cdt), n_src, k, n_rows, out_shape, out_shape == (n_rows, 1))


def result_shapes(spec: TripletSpec | CosineSpec, inputs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """``((out_shape, dtype), grads)`` for layout arrays ``inputs`` (nothing is read)."""
    arr = {n: (None if a is None else np.asarray(a)) for n, a in inputs.items()}
    if isinstance(spec, TripletSpec):
        p = plan_triplet(arr["pred"], arr["positive"], arr["negative"], spec.batch_axis)
        return ((p.shape3[1],), p.rdt), tuple((arr[name].shape, p.rdt) for name in TRIPLET_GRADS)
    p = plan_cosine(arr["input1"], arr["input2"], arr["label"], arr.get("sample_weight"))
    return (p.out_shape, p.rdt), ((arr["input1"].shape, p.rdt), (arr["input2"].shape, p.rdt))
