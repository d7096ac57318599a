"""Planning of the elementwise family: one scalar term per element, then MXNet's weighting.

The inputs ``pred``, ``label`` (MXNet's ``reshape_like`` onto ``pred``, or
broadcast for KLDivLoss), an optional auxiliary input (``pos_weight``) and
``sample_weight`` broadcast together to ``full``; that shape is mapped onto
the row kernels' ``(n_outer, n_rows, n_inner)`` layout by
:func:`numba_losses._core.weighting.plan_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from numba_losses.kernels.registry import ELEMENTWISE

from .._core.validate import broadcast_shape, compute_dtype, reshape_like, result_dtype
from .._core.weighting import Rows, plan_rows


@dataclass(slots=True)
class ElementwiseSpec:
    """What an elementwise loss asks for.

    ``term`` is a registry name (:data:`numba_losses.kernels.registry.ELEMENTWISE`)
    or a user-made ``(value, grad)`` pair; ``p0``, ``p1`` its scalar parameters;
    ``pred``, ``label``, ``aux`` the names of the inputs in those roles (also
    used in error messages); ``reduce`` is ``"mean"`` (over the non-batch
    axes), ``"sum"`` or ``"all"`` (mean over every element, output ``(1,)``);
    ``label_mode`` is ``"reshape"`` (MXNet ``reshape_like``) or ``"broadcast"``.
    """

    family: ClassVar[str] = "elementwise"
    term: Any
    p0: float = 0.0
    p1: float = 0.0
    weight: float = 1.0
    batch_axis: int = 0
    reduce: str = "mean"
    label_mode: str = "reshape"
    pred: str = "pred"
    label: str = "label"
    aux: str | None = None

    @property
    def pair(self) -> tuple[Any, Any]:
        """The ``(value, grad)`` scalar functions of the term."""
        return ELEMENTWISE[self.term] if isinstance(self.term, str) else self.term


@dataclass(slots=True)
class ElementwisePlan:
    """Compute / result dtypes, the label as the kernel sees it, and the weighting rows.

    ``grows``: ``sample_weight`` or ``pos_weight`` broadcast ``pred`` to a larger
    shape; the gradient is then summed back to ``pred``'s shape.
    """

    cdt: np.dtype
    rdt: np.dtype
    y: np.ndarray
    rows: Rows
    grows: bool


def plan(
    spec: ElementwiseSpec, x: np.ndarray, y: np.ndarray, a: np.ndarray | None, sw: np.ndarray | None
) -> ElementwisePlan:
    """Validate shapes and dtypes (layout arrays: reads no data) and plan the reduction."""
    cdt = compute_dtype(spec.pred, x)
    rdt = result_dtype(x, cdt)
    if spec.label_mode == "reshape":
        y = reshape_like(spec.label, y, x.shape, spec.pred)
    shapes = {spec.pred: x.shape, spec.label: y.shape}
    if a is not None:
        shapes[spec.aux] = a.shape
    if sw is not None:
        shapes["sample_weight"] = sw.shape
    full = x.shape if a is None and sw is None and y.shape == x.shape else broadcast_shape(shapes)
    rows = plan_rows(full, sw, spec.weight, spec.batch_axis, spec.reduce)
    return ElementwisePlan(cdt, rdt, y, rows, x.shape != full)


def result_shapes(spec: ElementwiseSpec, inputs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """``((out_shape, dtype), ((grad_shape, dtype),))`` for layout arrays ``inputs`` (nothing is read)."""
    x, y = inputs[spec.pred], inputs[spec.label]
    a = inputs.get(spec.aux) if spec.aux else None
    sw = inputs.get("sample_weight")
    p = plan(spec, np.asarray(x), np.asarray(y), _array(a), _array(sw))
    return (p.rows.out_shape, p.rdt), ((np.shape(x), p.rdt),)


def _array(a: Any) -> np.ndarray | None:
    return None if a is None else np.asarray(a)
