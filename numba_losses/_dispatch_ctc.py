"""CTCLoss dispatcher: validated inputs, the label plan, and the CPU kernels.

Labels and lengths are small (``N`` rows of at most ``T`` entries); they are
validated and packed on the host for both targets by :func:`plan_ctc`
(MXNet's rounding and padding rules, SPEC section 7, with a ``ValueError``
naming the sample for every input MXNet would read out of bounds). The
activations stay where they are: frames are read as rows in either layout
(no transposed copy), the log-softmax is fused into the kernels of
:mod:`numba_losses.kernels.cpu.ctc` (CUDA: :mod:`._dispatch_ctc_cuda`).

Weighting: the cost per sample is multiplied by ``sample_weight``
(broadcast, which can grow the output, e.g. ``(N, 1)`` gives ``(N, N)``) and
``weight``, with no mean; the gradient scale of sample ``b`` is the sum of
``out_grad * sample_weight * weight`` over the copies of ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW

from ._backend import CUDA, select_backend
from ._validate import as_host_array, broadcast_shape, check_buffer, compute_dtype, result_dtype

LAYOUTS = ("NTC", "TNC")
LABEL_LAYOUTS = ("NT", "TN")
BLANKS = ("first", "last")


@dataclass(frozen=True)
class CtcPlan:
    """Shapes and per-sample integers of one CTC call (host arrays).

    ``tlen`` (:math:`T_b`, frames used for the cost), ``gmask`` (frames
    ``t < gmask`` get a gradient: ``trunc`` of the pred length), ``llen``
    (:math:`L_b`), ``feasible`` (:math:`L_b + R_b \\le T_b`), the packed labels
    ``lab`` with their ``chain`` / ``first`` (see
    :mod:`numba_losses.kernels.ctc_labels`) and ``off``, the offsets of the
    samples' ``(T_b, 2 L_b + 1)`` blocks in the flat workspaces.
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


def _lengths(name: str, a: np.ndarray | None, n: int) -> np.ndarray | None:
    if a is None:
        return None
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-D of length N = {n}; got shape {a.shape}")
    return a.astype(np.float64)


def _lround(v: np.ndarray) -> np.ndarray:
    """C's ``lround`` (halves away from zero) of finite values."""
    a = np.abs(v)
    r = np.floor(a)
    r += a - r >= 0.5
    return np.copysign(r, v)


def plan_ctc(
    pred_shape: tuple[int, ...],
    layout: str,
    label: np.ndarray,
    label_layout: str,
    pred_lengths: np.ndarray | None,
    label_lengths: np.ndarray | None,
    blank_label: str,
) -> CtcPlan:
    """Validate shapes, lengths and labels (host arrays) and pack the labels (SPEC section 7)."""
    from numba_losses.kernels.ctc_labels import BAD_LENGTH, NOT_FINITE, OK, scan_labels

    n, t, c = pred_dims(pred_shape, layout)
    _, width = label_rows(label.shape, label_layout, n, t)
    rows = np.ascontiguousarray((label if label_layout == "NT" else label.T).astype(np.float64))
    pl = _lengths("pred_lengths", pred_lengths, n)
    ll = _lengths("label_lengths", label_lengths, n)

    if pl is None:
        tlen = np.full(n, t, dtype=np.int32)
        gmask = tlen
    else:
        with np.errstate(invalid="ignore"):
            r = _lround(np.where(np.isfinite(pl), pl, -1.0))
            bad = ~np.isfinite(pl) | (r < 0) | (r > t)
        if bad.any():
            b = int(np.argmax(bad))
            raise ValueError(f"pred_lengths[{b}] = {pl[b]} (sample {b}) must round to a frame count in [0, T = {t}]")
        tlen = r.astype(np.int32)
        gmask = np.maximum(np.trunc(pl), 0).astype(np.int32)  # MXNet's SequenceMask truncates

    blank = c - 1 if blank_label == "last" else 0
    pad = -1.0 if blank_label == "last" else 0.0
    w1 = max(width, 1)
    lab = np.zeros((n, w1), dtype=np.int32)
    chain = np.full((n, w1), -1, dtype=np.int32)
    first = np.zeros((n, w1), dtype=np.uint8)
    llen = np.zeros(n, dtype=np.int32)
    reps = np.zeros(n, dtype=np.int32)
    lengths = ll if ll is not None else np.zeros(0)
    code, b, i, v = scan_labels(rows, lengths, ll is not None, pad, blank, c, lab, llen, reps, chain, first)
    if code != OK:
        if code == BAD_LENGTH:
            raise ValueError(
                f"label_lengths[{b}] = {v} (sample {b}) must round to a length in [0, {width}] (the label width)"
            )
        what = "NaN or infinite" if code == NOT_FINITE else "outside the alphabet"
        hint = f"[0, {c})" if blank_label == "last" else f"[1, {c}) (0 is the blank and the padding)"
        if ll is not None and code != NOT_FINITE and _lround(np.array([v]))[0] == pad:
            what = f"the padding value {int(pad)} inside its label length {_lround(np.array([ll[b]]))[0]:.0f}"
        raise ValueError(
            f"label of sample {b} has {v} at position {i}: {what}; used labels must be class ids in {hint}"
        )
    feasible = (llen + reps <= tlen).astype(np.uint8)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(tlen.astype(np.int64) * (2 * llen.astype(np.int64) + 1), out=off[1:])
    goff = np.zeros(n + 1, dtype=np.int64)  # (1 + distinct non-blank classes, T_b) gamma blocks
    np.cumsum(tlen.astype(np.int64) * (1 + first.sum(axis=1, dtype=np.int64)), out=goff[1:])
    return CtcPlan(n, t, c, blank, tlen, gmask, llen, feasible, lab, chain, first, off, goff)


def output_shape(n: int, sw_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The cost ``(N,)`` broadcast with ``sample_weight`` (it can grow: ``(N, 1)`` gives ``(N, N)``)."""
    if sw_shape is None:
        return (n,)
    return broadcast_shape({"the cost (N,)": (n,), "sample_weight": tuple(sw_shape)})


def frame_rows(a: np.ndarray, layout: str) -> tuple[np.ndarray, int, int] | None:
    """``(rows, sb, st)``: ``a`` (pred's shape) as a ``(N*T, C)`` view whose row ``b*sb + t*st``
    is frame ``t`` of sample ``b``; ``None`` when the frames are not the rows of a C-ordered view."""
    nt = a if layout == "NTC" else a.transpose(1, 0, 2)
    n, t, c = nt.shape
    if nt.flags.c_contiguous:
        return nt.reshape(n * t, c), t, 1
    tn = nt.transpose(1, 0, 2)
    if tn.flags.c_contiguous:
        return tn.reshape(t * n, c), 1, n
    return None


def ctc(
    pred: Any,
    label: Any,
    pred_lengths: Any,
    label_lengths: Any,
    sample_weight: Any,
    *,
    layout: str,
    label_layout: str,
    blank_label: str,
    zero_infinity: bool,
    weight: float,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: Any = None,
    grad_out: Any = None,
) -> tuple[Any, Any]:
    """CTC cost per sample (weighted) and its gradient w.r.t. ``pred`` (SPEC section 7)."""
    named = {
        "pred": pred, "label": label, "pred_lengths": pred_lengths, "label_lengths": label_lengths,
        "sample_weight": sample_weight, "out_grad": out_grad if want_grad else None,
    }  # fmt: skip
    if select_backend(named) == CUDA:
        from ._dispatch_ctc_cuda import ctc_cuda

        return ctc_cuda(
            pred, label, pred_lengths, label_lengths, sample_weight, layout=layout, label_layout=label_layout,
            blank_label=blank_label, zero_infinity=zero_infinity, weight=weight, out_grad=out_grad,
            want_value=want_value, want_grad=want_grad, out=out, grad_out=grad_out,
        )  # fmt: skip
    x = as_host_array("pred", pred)
    cdt = compute_dtype("pred", x)
    rdt = result_dtype(x, cdt)
    plan = plan_ctc(
        x.shape, layout, as_host_array("label", label), label_layout,
        as_host_array("pred_lengths", pred_lengths) if pred_lengths is not None else None,
        as_host_array("label_lengths", label_lengths) if label_lengths is not None else None,
        blank_label,
    )  # fmt: skip
    sw = as_host_array("sample_weight", sample_weight) if sample_weight is not None else None
    full = output_shape(plan.n, sw.shape if sw is not None else None)
    if want_value and out is not None:
        out = check_buffer("out", out, full, rdt)
    if want_grad and grad_out is not None:
        grad_out = check_buffer("grad_out", grad_out, x.shape, rdt)
        if any(np.may_share_memory(grad_out, a) for a in (x, label, pred_lengths, label_lengths) if a is not None):
            raise ValueError("grad_out must not share memory with the inputs (inputs are never written)")
    coef = head_scale(plan.n, full, sw, weight, out_grad, cdt) if want_grad else None
    cost, dx = _run_cpu(plan, x.astype(cdt, copy=False), layout, zero_infinity, coef, grad_out, rdt)
    value = None
    if want_value:
        value = weigh(cost, full, sw, weight, cdt)
        value = _deliver(value, rdt, out)
    if not want_grad:
        return value, None
    return value, _deliver(dx, rdt, grad_out)


def head_scale(
    n: int, full: tuple[int, ...], sw: np.ndarray | None, weight: float, out_grad: Any, cdt: np.dtype
) -> np.ndarray:
    """``c_b``: the sum of ``out_grad * sample_weight * weight`` over the copies of sample ``b``."""
    h = np.ones(full)
    if out_grad is not None:
        g = as_host_array("out_grad", out_grad)
        try:
            h = np.broadcast_to(g.astype(np.float64), full)
        except ValueError:
            raise ValueError(f"out_grad has shape {g.shape}, expected the output's shape {full}") from None
    if sw is not None:
        h = h * sw.astype(np.float64)
    h = h * weight
    h = np.broadcast_to(h, full)
    if h.shape != (n,):  # copies of the samples along the last axis (grown, or N = 1 broadcast up)
        h = h.reshape(-1, n).sum(axis=0) if n else np.zeros(0)
    return np.ascontiguousarray(h, dtype=cdt)


def weigh(cost: np.ndarray, full: tuple[int, ...], sw: np.ndarray | None, weight: float, cdt: np.dtype) -> np.ndarray:
    """MXNet's ``broadcast_mul(cost, sample_weight) * weight`` in the compute dtype (no mean)."""
    w = cost if sw is None else np.multiply(cost, sw.astype(cdt, copy=False))
    w = np.multiply(np.broadcast_to(w, full), cdt.type(weight))
    return np.ascontiguousarray(w, dtype=cdt)


def _deliver(result: np.ndarray, rdt: np.dtype, buf: np.ndarray | None) -> np.ndarray:
    if buf is not None:
        if result is not buf:
            buf[...] = result
        return buf
    return result.astype(rdt) if result.dtype != rdt else result


def _run_cpu(
    plan: CtcPlan,
    x: np.ndarray,
    layout: str,
    zero_infinity: bool,
    coef: np.ndarray | None,
    grad_out: np.ndarray | None,
    rdt: np.dtype,
) -> tuple[np.ndarray, np.ndarray | None]:
    from numba_losses.kernels.cpu.ctc import build_ctc_frames_kernel, build_ctc_grad_kernel, build_ctc_paths_kernel

    cdt = x.dtype
    n, t = plan.n, plan.t
    rows = frame_rows(x, layout)
    if rows is None:
        rows = frame_rows(np.ascontiguousarray(x), layout)
    x2, sb, st = rows
    want_grad = coef is not None
    parallel = x.size + plan.workspace >= SERIAL_BELOW
    m = np.empty((n, t), dtype=cdt)
    logs = np.empty((n, t), dtype=cdt)
    lpe = np.empty(plan.workspace, dtype=cdt)
    ab = np.empty(plan.workspace if want_grad else 0, dtype=cdt)
    gam = np.empty(int(plan.goff[-1]) if want_grad else 0, dtype=cdt)
    ll = np.empty(n, dtype=cdt)
    cost = np.empty(n, dtype=cdt)
    if n == 0:
        return cost, (np.zeros(x.shape, dtype=cdt) if want_grad else None)
    build_ctc_frames_kernel(parallel)(x2, sb, st, plan.tlen, plan.lab, plan.llen, plan.blank, plan.off, m, logs, lpe)
    build_ctc_paths_kernel(plan.n > 1 and parallel)(
        lpe, plan.off, plan.goff, plan.tlen, plan.lab, plan.chain, plan.first, plan.llen, plan.blank, plan.feasible,
        zero_infinity, want_grad, ab, gam, ll, cost,
    )  # fmt: skip
    if not want_grad:
        return cost, None
    dx = grad_out if (grad_out is not None and rdt == cdt) else np.empty(x.shape, dtype=cdt)
    d2, dsb, dst = frame_rows(dx, layout)
    if t:
        build_ctc_grad_kernel(parallel)(
            x2, sb, st, dsb, dst, t, plan.gmask, plan.feasible, m, logs, gam, plan.goff, plan.tlen, plan.lab,
            plan.first, plan.llen, plan.blank, ll, coef, d2,
        )  # fmt: skip
    return cost, dx


def check_layouts(layout: Any, label_layout: Any) -> None:
    """The constructor's assertions (MXNet's messages)."""
    assert layout in LAYOUTS, f"Only 'NTC' and 'TNC' layouts for pred are supported. Got: {layout}"
    assert label_layout in LABEL_LAYOUTS, f"Only 'NT' and 'TN' layouts for label are supported. Got: {label_layout}"


def check_blank(blank_label: Any) -> str:
    if blank_label not in BLANKS:
        raise ValueError(f"blank_label must be 'first' or 'last', got {blank_label!r}")
    return blank_label
