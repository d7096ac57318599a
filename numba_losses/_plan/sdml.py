"""Planning of SDMLLoss: two equal 2-D inputs, MXNet's smoothed targets, the centred inputs.

``x1`` decides the compute dtype (float16 computed in float32, integers in
float64); ``x2`` is converted to it. The smoothed targets are computed as
MXNet does, in the compute dtype (:func:`targets`). Both backends take the
squared distances and the gradients as matrix products of the inputs minus
one common vector (:func:`centred`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._core.validate import compute_dtype, result_dtype


@dataclass(slots=True)
class SDMLSpec:
    """SDMLLoss parameters."""

    family: ClassVar[str] = "sdml"
    smoothing: float


@dataclass(slots=True, frozen=True)
class Targets:
    """The smoothed target constants of one call, as compute-dtype scalars.

    ``qd`` / ``qo``: the diagonal / off-diagonal targets; ``log_qd`` /
    ``log_qo``: their :math:`\\log(q + 10^{-12})`; ``r``: the row sum of the
    targets, :math:`q_d + (N - 1) q_o`.
    """

    qd: np.generic
    qo: np.generic
    log_qd: np.generic
    log_qo: np.generic
    r: np.generic


@functools.lru_cache(maxsize=64)
def targets(smoothing: float, n: int, cdt: np.dtype) -> Targets:
    """MXNet's ``eye * (1 - s) + (1 - eye) * s / (N - 1)`` and its logs, in ``cdt``.

    MXNet rounds ``1 - s`` (a Python float) and ``s`` to the data dtype, then
    divides by ``N - 1`` there; the diagonal also receives ``0 / (N - 1)``, so
    ``N = 1`` gives NaN targets (0/0) and NaN results, as in MXNet. The
    ``1e-12`` of the log is rounded to ``cdt`` too. Cached: a training loop
    asks for the same few constants at every step.
    """
    t = cdt.type
    with np.errstate(all="ignore"):
        nm1 = t(n - 1)
        qo = t(smoothing) / nm1
        qd = t(1.0 - smoothing) + t(0.0) / nm1
        eps = t(1e-12)
        log_qd = np.log(qd + eps)
        log_qo = np.log(qo + eps)
        r = t(np.float64(qd) + (n - 1) * np.float64(qo))
    return Targets(qd, qo, log_qd, log_qo, r)


def check_pair(s1: tuple[int, ...], s2: tuple[int, ...]) -> tuple[int, int]:
    """``(N, D)`` of two 2-D shapes that must be equal (MXNet asserts it)."""
    if len(s1) != 2 or len(s2) != 2:
        raise ValueError(f"SDMLLoss needs 2-D inputs (batch, dim); got x1 of shape {s1} and x2 of shape {s2}")
    if s1 != s2:
        raise ValueError(f"SDMLLoss needs x1 and x2 of equal shapes; got {s1} and {s2}")
    return s1


@dataclass(slots=True)
class SDMLPlan:
    """``(N, D)``, the compute dtype and the result dtypes of the two gradients (and the output: ``gdt[0]``)."""

    n: int
    d: int
    cdt: np.dtype
    gdt: tuple[np.dtype, np.dtype]


def plan(x1: np.ndarray, x2: np.ndarray) -> SDMLPlan:
    """Shapes and dtypes of a call (layout arrays: reads no data)."""
    n, d = check_pair(x1.shape, x2.shape)
    cdt = compute_dtype("x1", x1)
    compute_dtype("x2", x2)  # rejects unsupported float dtypes
    return SDMLPlan(n, d, cdt, (result_dtype(x1, cdt), result_dtype(x2, cdt)))


def result_shapes(spec: SDMLSpec, inputs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """``(((N,), dtype), (((N, D), dtype1), ((N, D), dtype2)))`` for layout arrays ``inputs``."""
    p = plan(np.asarray(inputs["x1"]), np.asarray(inputs["x2"]))
    return ((p.n,), p.gdt[0]), (((p.n, p.d), p.gdt[0]), ((p.n, p.d), p.gdt[1]))


def centred(xp: Any, x1: Any, x2: Any, cdt: np.dtype) -> tuple[Any, Any]:
    r"""``(x1 - c, x2 - c)`` as new C-contiguous arrays of ``cdt``, for NumPy or CuPy arrays (``xp``).

    ``c`` is the mean of all :math:`2N` rows (summed in float64, rounded to
    ``cdt``; 0 where it is not finite, e.g. for inf inputs). Squared distances
    :math:`\|x_{1,i} - x_{2,j}\|^2` and the differences in the gradients do
    not change, but the expansion :math:`\|a\|^2 + \|b\|^2 - 2 a \cdot b`
    of the distances no longer cancels a common offset of the inputs: rows near
    ``c`` are subtracted exactly (Sterbenz), so their float32 distances keep
    the accuracy of offset-free inputs.
    """
    n = x1.shape[0]
    c = (x1.sum(axis=0, dtype=xp.float64) + x2.sum(axis=0, dtype=xp.float64)) / max(2 * n, 1)
    c = xp.where(xp.isfinite(c), c, 0.0).astype(cdt)
    a = x1.astype(cdt, order="C")
    b = x2.astype(cdt, order="C")
    a -= c
    b -= c
    return a, b
