"""Planning of CTCLoss: shapes, lengths and the packed labels, for both backends.

Labels and lengths are small (``N`` rows of at most ``T`` entries); they are
validated and packed on the host by :func:`plan_ctc` (MXNet's rounding and
padding rules, docs/semantics.rst section 7, with a ``ValueError`` naming the
sample for every input MXNet would read out of bounds); the device backend
copies them to the host first. The activations are never read here.

Weighting is MXNet's product weighting (no mean,
:mod:`numba_losses._core.weighting`): the cost per sample times
``sample_weight`` (broadcast, which can grow the output, e.g. ``(N, 1)``
gives ``(N, N)``) and ``weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from numba_losses.kernels.ctc_labels import BAD_LENGTH, BAD_PRED_LENGTH, NOT_FINITE, OK, plan_labels

from .._core.validate import compute_dtype, result_dtype
from .._core.weighting import product_shape

LAYOUTS = ("NTC", "TNC")
LABEL_LAYOUTS = ("NT", "TN")
BLANKS = ("first", "last")


@dataclass(slots=True)
class CTCSpec:
    """CTCLoss parameters (layouts and blank checked by the constructor)."""

    family: ClassVar[str] = "ctc"
    layout: str
    label_layout: str
    blank_label: str
    zero_infinity: bool
    weight: float


@dataclass(slots=True)
class CtcPlan:
    """Shapes and per-sample integers of one CTC call (host arrays).

    ``tlen`` (:math:`T_b`, frames used for the cost), ``gmask`` (frames
    ``t < gmask`` get a gradient: ``trunc`` of the pred length), ``llen``
    (:math:`L_b`), ``feasible`` (:math:`L_b + R_b \\le T_b`), the packed labels
    ``lab`` with their ``chain`` / ``first`` (see
    :mod:`numba_losses.kernels.ctc_labels`) and ``off``, the offsets of the
    samples' ``(T_b, 2 L_b + 1)`` blocks in the flat workspaces (``goff``:
    of their ``(1 + U_b, T_b)`` gamma blocks). ``ints`` (rows ``tlen``,
    ``gmask``, ``llen``, ``feasible``, ...) and ``offs`` (``off``, ``goff``)
    are the arrays these are views of, as the CPU kernel takes them.
    """

    n: int
    t: int
    c: int
    blank: int
    tlen: np.ndarray
    gmask: np.ndarray
    llen: np.ndarray
    feasible: np.ndarray
    lab: np.ndarray
    chain: np.ndarray
    first: np.ndarray
    off: np.ndarray
    goff: np.ndarray
    ints: np.ndarray
    offs: np.ndarray

    @property
    def workspace(self) -> int:
        return int(self.off[-1])


def pred_dims(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    """``(N, T, C)`` of ``pred``, which must be 3-D."""
    if len(shape) != 3:
        raise ValueError(f"CTCLoss needs a 3-D pred ({layout}); got shape {tuple(shape)}")
    n, t, c = shape if layout == "NTC" else (shape[1], shape[0], shape[2])
    if c == 0:
        raise ValueError(f"pred of shape {tuple(shape)} has no classes (the last axis is empty)")
    return n, t, c


def label_rows(shape: tuple[int, ...], label_layout: str, n: int, t: int) -> tuple[int, int]:
    """``(N, Lw)`` of the label, checked against ``pred``'s ``N`` and ``T``."""
    if len(shape) != 2:
        raise ValueError(f"CTCLoss needs a 2-D label ({label_layout}); got shape {tuple(shape)}")
    nb, width = shape if label_layout == "NT" else (shape[1], shape[0])
    if nb != n:
        raise ValueError(f"label of shape {tuple(shape)} ({label_layout}) has batch size {nb}, pred has {n}")
    if width > t:
        raise ValueError(
            f"the label width {width} exceeds the sequence length T = {t}: the max number of labels "
            "cannot exceed the maximum sequence length of the data (MXNet's check)"
        )
    return nb, width


def _lengths(name: str, a: np.ndarray | None, n: int) -> np.ndarray:
    if a is None:
        return _UNUSED
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-D of length N = {n}; got shape {a.shape}")
    return np.asarray(a, dtype=np.float64)


_UNUSED = np.zeros(0)  # stands for absent lengths (never read)


def _lround(v: np.ndarray) -> np.ndarray:
    """C's ``lround`` (halves away from zero) of finite values."""
    a = np.abs(v)
    r = np.floor(a)
    r += a - r >= 0.5
    return np.copysign(r, v)


def plan_ctc(pred_shape: tuple[int, ...], spec: CTCSpec, host: Mapping[str, np.ndarray]) -> CtcPlan:
    """Validate shapes, lengths and labels and pack the labels (docs/semantics.rst section 7).

    ``host`` holds the host arrays of ``label`` and, when given, ``pred_lengths`` and ``label_lengths``.
    Everything past the shape checks is one compiled call (:func:`~numba_losses.kernels.ctc_labels.plan_labels`).
    """
    layout, label_layout, blank_label = spec.layout, spec.label_layout, spec.blank_label
    label, pred_lengths, label_lengths = host["label"], host.get("pred_lengths"), host.get("label_lengths")
    n, t, c = pred_dims(pred_shape, layout)
    _, width = label_rows(label.shape, label_layout, n, t)
    rows = np.ascontiguousarray(label if label_layout == "NT" else label.T, dtype=np.float64)
    pl = _lengths("pred_lengths", pred_lengths, n)
    ll = _lengths("label_lengths", label_lengths, n)

    blank = c - 1 if blank_label == "last" else 0
    pad = -1.0 if blank_label == "last" else 0.0
    w1 = max(width, 1)
    ints = np.empty((6, n), dtype=np.int32)
    labs = np.empty((2, n, w1), dtype=np.int32)
    first = np.empty((n, w1), dtype=np.uint8)
    offs = np.empty((2, n + 1), dtype=np.int64)
    use_ll = label_lengths is not None
    code, b, i, v = plan_labels(
        rows, ll, use_ll, pl, pred_lengths is not None, t, pad, blank, c, ints, labs, first, offs
    )
    if code != OK:
        if code == BAD_PRED_LENGTH:
            raise ValueError(f"pred_lengths[{b}] = {v} (sample {b}) must round to a frame count in [0, T = {t}]")
        if code == BAD_LENGTH:
            raise ValueError(
                f"label_lengths[{b}] = {v} (sample {b}) must round to a length in [0, {width}] (the label width)"
            )
        what = "NaN or infinite" if code == NOT_FINITE else "outside the alphabet"
        hint = f"[0, {c})" if blank_label == "last" else f"[1, {c}) (0 is the blank and the padding)"
        if use_ll and code != NOT_FINITE and _lround(np.array([v]))[0] == pad:
            what = f"the padding value {int(pad)} inside its label length {_lround(np.array([ll[b]]))[0]:.0f}"
        raise ValueError(
            f"label of sample {b} has {v} at position {i}: {what}; used labels must be class ids in {hint}"
        )
    tlen, gmask, llen, feasible = ints[0], ints[1], ints[2], ints[3]
    return CtcPlan(n, t, c, blank, tlen, gmask, llen, feasible, labs[0], labs[1], first, offs[0], offs[1], ints, offs)


def check_layouts(layout: Any, label_layout: Any) -> None:
    """The constructor's assertions (MXNet's messages)."""
    assert layout in LAYOUTS, f"Only 'NTC' and 'TNC' layouts for pred are supported. Got: {layout}"
    assert label_layout in LABEL_LAYOUTS, f"Only 'NT' and 'TN' layouts for label are supported. Got: {label_layout}"


def check_blank(blank_label: Any) -> str:
    if blank_label not in BLANKS:
        raise ValueError(f"blank_label must be 'first' or 'last', got {blank_label!r}")
    return blank_label


def result_shapes(spec: CTCSpec, inputs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """``((out_shape, dtype), ((grad_shape, dtype),))`` from shapes and dtypes alone (labels are not read)."""
    x = np.asarray(inputs["pred"])
    n, t, _ = pred_dims(x.shape, spec.layout)
    label_rows(np.shape(inputs["label"]), spec.label_layout, n, t)
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    sw = inputs.get("sample_weight")
    return (product_shape((n,), None if sw is None else np.shape(sw)), rdt), ((x.shape, rdt),)
