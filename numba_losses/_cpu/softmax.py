r"""The softmax family on the host (:mod:`numba_losses.kernels.cpu.softmax`).

SoftmaxCrossEntropyLoss: the gradient scale of every position comes first
from the weighting (:func:`numba_losses._core.weighting.coef_rows_host`), the
fused kernel then writes the loss per position and the gradient in one pass
over the logits, and the weighting reduces the losses.

KLDivLoss(from_logits=False): when the label has ``pred``'s shape and
``sample_weight`` is constant along the class axis
(:func:`numba_losses._plan.softmax.kldiv_as_cross_entropy`), the same fused
kernel with dense labels, which adds the labels' :math:`\sum y \log(y + 10^{-12})`
to each position's loss (one pass, as cross-entropy). Otherwise
``log_softmax(pred)`` into a scratch array, the elementwise family's
``kldiv_logits`` term on it (same backend), then the log-softmax backward in
place on the gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW
from numba_losses.kernels.cpu.softmax import (
    build_log_softmax_backward_kernel,
    build_log_softmax_kernel,
    build_softmax_ce_kernel,
    scratch_shapes,
)

from .._core.buffers import host_empty, host_out_grad, host_result, host_scratch, last_kept
from .._core.request import Call
from .._core.validate import as_host_array, check_buffer, reshape_like
from .._core.weighting import coef_rows_host, unweighted, weigh_rows_host
from .._plan import softmax as family
from .._plan.softmax import KLDivSpec, SoftmaxSpec
from . import elementwise


def _rows(a: np.ndarray, lay: family.ClassLayout, contiguous: bool) -> np.ndarray:
    """``a`` (``pred``'s shape) in a kernel layout, a view when one exists.

    ``contiguous``: C-contiguous ``(positions, C)`` rows (a copy only for an input that is not
    C-contiguous; outputs always are); else ``(outer, C, inner)`` (the tiled kernels).
    """
    if contiguous:
        return np.ascontiguousarray(a).reshape(lay.n_rows, lay.n_classes)
    try:
        return a.reshape(lay.shape3, copy=False)
    except ValueError:
        return np.ascontiguousarray(a).reshape(lay.shape3)


def _flat(a: np.ndarray, n: int) -> np.ndarray:
    try:
        return a.reshape(n, copy=False)
    except ValueError:
        return np.ascontiguousarray(a).reshape(n)


# Never-read arguments of the kernel's unused slots, made once (writable: a read-only array
# would be another Numba signature, compiled again).
_DUMMY = {np.dtype(t): np.zeros(1, dtype=t) for t in (np.float32, np.float64)}


def run(spec: SoftmaxSpec | KLDivSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """``(out, (dpred,))`` of softmax cross-entropy or KLDivLoss from logits (``None`` where not wanted)."""
    x = as_host_array("pred", call.inputs["pred"])
    y = as_host_array("label", call.inputs["label"])
    sample_weight = call.inputs["sample_weight"]
    sw = as_host_array("sample_weight", sample_weight) if sample_weight is not None else None
    kl = False
    if isinstance(spec, KLDivSpec):
        dense = family.kldiv_as_cross_entropy(
            spec, family.spec_layout(spec, x.shape), y.shape, None if sw is None else sw.shape
        )
        if dense is None:
            return _kldiv(spec, call)
        spec, kl = dense, True
    p = family.plan(spec, x, sw)
    cdt, rdt, lay, rows = p.cdt, p.rdt, p.lay, p.rows
    inputs, taken = {"pred": x, "label": y, "sample_weight": sw}, []  # the caller's (buffer overlap checks)
    grad_rows = grad_sw = None  # the gradient's weighting when it differs from the value's
    if family.extended(spec):  # class weights / normalization: a call of the plain kernels
        if spec.sparse:
            family.check_sparse_label(y.shape, lay)
            low = family.lower(spec, y, lay, cdt)
        else:
            low = family.lower(spec, reshape_like("label", y, x.shape, "pred").astype(cdt, copy=False), lay, cdt)
        spec, y = low.spec, low.label
        sw0 = sw
        sw = _times(low.value_weight, sw0, cdt)
        rows = family.plan_weighting(spec, lay, sw, low.value_scale)
        if low.grad_weight is not low.value_weight or low.grad_scale != low.value_scale:
            grad_sw = _times(low.grad_weight, sw0, cdt)
            grad_rows = family.plan_weighting(spec, lay, grad_sw, low.grad_scale)
    n_rows = lay.n_rows
    grad_buf = out_buf = None
    if call.want_grad and call.grad_out[0] is not None:
        grad_buf = check_buffer("grad_out", call.grad_out[0], x.shape, rdt, inputs, taken)
    if call.want_value and call.out is not None:
        out_buf = check_buffer("out", call.out, rows.out_shape, rdt, inputs, taken)

    xc = x.astype(cdt, copy=False)
    contiguous = lay.inner == 1  # rows of C logits; otherwise the tiled kernel on (outer, C, inner)
    x_rows = _rows(xc, lay, contiguous)
    if spec.sparse:
        family.check_sparse_label(y.shape, lay)
        lab = y
        if y.dtype == np.float16:
            lab = y.astype(np.float32)
        elif y.dtype == np.bool_:
            lab = y.view(np.uint8)
        lab = _flat(lab, n_rows)
        y_rows = x_rows
    else:
        yd = reshape_like("label", y, x.shape, "pred").astype(cdt, copy=False)
        y_rows = _rows(yd, lay, contiguous)
        lab = _DUMMY[cdt]

    direct = unweighted(rows, n_rows)  # the kernel's per-sample losses are the output itself
    write_out = direct and out_buf is not None and rdt == cdt
    loss_rows = out_buf if write_out else np.empty(n_rows, dtype=cdt)
    coef = _DUMMY[cdt]
    dx = dx_rows = x_rows  # dummies of the right type when no gradient is written
    if call.want_grad:
        head = host_out_grad(call.out_grad, rows.out_shape)
        if grad_rows is None:
            grad_rows, grad_sw = rows, sw
        coef = _flat(coef_rows_host(grad_rows, lay.keep_shape, grad_sw, head, cdt), n_rows).astype(cdt, copy=False)
        dx = grad_buf if (grad_buf is not None and rdt == cdt) else host_empty(x.shape, cdt)
        dx_rows = _rows(dx, lay, contiguous)

    int_labels = spec.sparse and family.label_kind(lab.dtype) == "int"
    kernel = build_softmax_ce_kernel(
        spec.sparse, spec.from_logits, int_labels, call.want_grad, contiguous, x.size >= SERIAL_BELOW, kl, spec.eps != 0
    )
    if n_rows and lay.n_classes:
        scratch = _scratch(lay.n_classes, contiguous, cdt)
        kernel(
            x_rows, lab, y_rows, coef, spec.ignore, spec.has_ignore, spec.eps, lay.inner, loss_rows, dx_rows,
            scratch,
        )  # fmt: skip

    value = None
    if call.want_value:
        if direct:
            out_c = loss_rows
        else:
            out_c = out_buf if (out_buf is not None and rdt == cdt) else np.empty(rows.out_shape, dtype=cdt)
            weigh_rows_host(rows, loss_rows.reshape(lay.keep_shape), sw, out_c)
        value = host_result(out_c, out_buf, rdt)
    return value, ((host_result(dx, grad_buf, rdt),) if call.want_grad else None)


def _scratch(n_classes: int, contiguous: bool, cdt: np.dtype) -> np.ndarray:
    """The per-thread scratch array of the class-last kernels (``scratch_shapes``); a tiny dummy for the tiled ones.

    Kept with its key per thread (:func:`.._core.buffers.last_kept`): one lookup when the next
    call has the same class count, as in a training loop.
    """

    def make() -> tuple[np.ndarray, bool]:
        shape = scratch_shapes(n_classes) if contiguous else (1, 1)
        return host_scratch("softmax.rows", shape, cdt), True

    return last_kept("softmax", (n_classes, contiguous, cdt), make)


def _times(position_weight: np.ndarray | None, sw: np.ndarray | None, cdt: np.dtype) -> np.ndarray | None:
    """The per-position weight (``keep_shape``) times ``sample_weight`` (broadcast), in the compute dtype."""
    if position_weight is None:
        return sw
    if sw is None:
        return position_weight.astype(cdt)
    return np.multiply(position_weight, sw.astype(cdt, copy=False), dtype=np.float64).astype(cdt)


def _kldiv(spec: KLDivSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    x = as_host_array("pred", call.inputs["pred"])
    p = family.plan(spec, x, None)
    cdt, rdt, lay = p.cdt, p.rdt, p.lay
    # The inner call sees lp, not pred, and (float16 results) none of the buffers: every buffer is
    # checked here against the caller's inputs and the other buffer, before anything is written.
    inputs, taken = {**call.inputs, "pred": x}, []
    out_buf = grad_buf = None
    if call.want_value and call.out is not None:
        out_shape = family.result_shapes(spec, inputs)[0][0]
        out_buf = check_buffer("out", call.out, out_shape, rdt, inputs, taken)
    if call.want_grad and call.grad_out[0] is not None:
        grad_buf = check_buffer("grad_out", call.grad_out[0], x.shape, rdt, inputs, taken)
    parallel = x.size >= SERIAL_BELOW
    lp = host_scratch("kldiv.lp", x.shape, cdt)  # read by the term and the backward only
    xc = x.astype(cdt, copy=False)
    contiguous = lay.inner == 1  # rows of C logits; otherwise the tiled kernels on (outer, C, inner)
    if lay.n_rows and lay.n_classes:
        build_log_softmax_kernel(contiguous, parallel)(
            _rows(xc, lay, contiguous), lay.inner, lay.n_rows, _rows(lp, lay, contiguous),
            _scratch(lay.n_classes, contiguous, cdt),
        )  # fmt: skip
    term, inner_call = family.kldiv_term_call(spec, call, lp, rdt == cdt)
    value, grads = elementwise.run(term, inner_call)
    if call.want_value and rdt != cdt:
        value = host_result(value, out_buf, rdt)
    if not call.want_grad:
        return value, None
    u = grads[0]
    if lay.n_rows and lay.n_classes:  # lp and u are C-contiguous arrays of pred's shape
        build_log_softmax_backward_kernel(contiguous, parallel)(
            _rows(lp, lay, contiguous), lay.inner, lay.n_rows, _rows(u, lay, contiguous),
            _scratch(lay.n_classes, contiguous, cdt),
        )  # fmt: skip
    if rdt != cdt:
        u = host_result(u, grad_buf, rdt)
    return value, (u,)
