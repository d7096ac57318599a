"""The softmax family on the device (:mod:`numba_losses.kernels.cuda.softmax`); same plan and results as the host.

``pred`` is passed to the kernels as a strided ``(outer, C, inner)`` view of
the caller's memory in its own dtype (a copy only when no such view exists);
the weighting of the per-position loss runs on the device row kernels
(:mod:`numba_losses._core.weighting`). Outputs are allocated by the caller's
array library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels.cuda import THREADS
from numba_losses.kernels.cuda.softmax import (
    build_class_target_kernel,
    build_class_weight_kernel,
    build_softmax_ce_kernel,
    build_valid_weight_kernels,
    log_softmax_backward_kernel,
    log_softmax_kernel,
    softmax_plan,
)

from .._core.buffers import device_out_grad, device_result, device_target
from .._core.device import (
    DeviceArray,
    DeviceContext,
    checked,
    device_view,
    on_device,
    same_device,
    wrap_input,
)
from .._core.launch import launch
from .._core.request import Call
from .._core.validate import reshape_like
from .._core.weighting import coef_rows_device, weigh_product_device, weigh_rows_device
from .._plan import softmax as family
from .._plan.softmax import KLDivSpec, SoftmaxSpec
from . import elementwise


def _launch_rows(kernel: Any, lay: family.ClassLayout, ctx: DeviceContext, *args: Any) -> None:
    if lay.n_rows == 0 or lay.n_classes == 0:
        return
    group, blocks = softmax_plan(lay.n_rows, lay.n_classes, lay.inner, ctx.sms)
    launch(kernel, blocks, THREADS, ctx.stream, *args, group)


def run(spec: SoftmaxSpec | KLDivSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """The device twin of :func:`numba_losses._cpu.softmax.run`."""
    xd = checked("pred", call.inputs["pred"])
    with on_device(xd) as ctx:
        if isinstance(spec, KLDivSpec):
            return _kldiv(spec, call, xd, ctx)
        inputs = {"pred": xd, "label": checked("label", call.inputs["label"])}
        if call.inputs["sample_weight"] is not None:
            inputs["sample_weight"] = wrap_input("sample_weight", call.inputs["sample_weight"], ctx)
        if call.out_grad is not None:
            inputs["out_grad"] = wrap_input("out_grad", call.out_grad, ctx)
        same_device(inputs)
        yd, swd = inputs["label"], inputs.get("sample_weight")
        x = xd.layout
        p = family.plan(spec, x, swd.layout if swd is not None else None)
        cdt, rdt, lay, rows = p.cdt, p.rdt, p.lay, p.rows
        grad_rows, gswd = rows, swd
        if family.extended(spec):  # class weights / normalization: a call of the plain kernels
            spec, yd, swd, rows, grad_rows, gswd = _lower(spec, x, yd, swd, lay, cdt, ctx)
        n_rows = lay.n_rows
        x3 = device_view(xd, x, lay.shape3, ctx)
        dummy3 = ctx.dummy(3, cdt)
        int_labels = False
        if spec.sparse:
            family.check_sparse_label(yd.layout.shape, lay)
            lab, int_labels = _sparse_labels(yd, lay, ctx)
            y3 = x3
        else:
            y3 = device_view(yd, reshape_like("label", yd.layout, x.shape, "pred"), lay.shape3, ctx)
            lab = ctx.dummy(2, cdt)
        taken: list = []
        grads, dx3, coef = None, dummy3, ctx.dummy(1, cdt)
        if call.want_grad:
            grad_native, target = device_target("grad_out", call.grad_out[0], x.shape, rdt, ctx, inputs, taken)
            grads, dx3 = (grad_native,), target.reshape(lay.shape3)
            og = device_out_grad(inputs.get("out_grad"), rows.out_shape)
            coef = coef_rows_device(grad_rows, lay.keep_shape, gswd, og, cdt, ctx)
        out_native = out_dev = None
        if call.want_value:
            out_native, out_dev = device_target("out", call.out, rows.out_shape, rdt, ctx, inputs, taken)
        loss_native, loss_dev = ctx.empty(lay.keep_shape, cdt)
        kernel = build_softmax_ce_kernel(spec.sparse, spec.from_logits, int_labels, call.want_grad)
        proto = cdt.type(0)
        args = (x3, lab, y3, coef, spec.ignore, spec.has_ignore, spec.eps, proto, loss_dev.reshape(n_rows), dx3)
        _launch_rows(kernel, lay, ctx, *args)
        if call.want_value:
            weigh_rows_device(rows, DeviceArray.wrap("loss", loss_native), swd, out_dev, ctx)
        return out_native, grads


def _upload(host: np.ndarray, ctx: DeviceContext) -> DeviceArray:
    """A device copy of a host array, allocated by the caller's library."""
    native, dev = ctx.empty(host.shape, host.dtype)
    if host.size:
        dev.copy_to_device(np.ascontiguousarray(host), stream=ctx.stream)
    return DeviceArray.wrap("weight", native)


def _lower(spec: SoftmaxSpec, x, yd, swd, lay, cdt, ctx: DeviceContext):
    """:func:`numba_losses._plan.softmax.lower` for a device call: ``(spec, label, sw, rows, grad rows, grad sw)``.

    What needs the label values is made on the device, so the labels never go to the host
    and nothing waits for the stream: a dense target (class weights with label smoothing or
    dense labels, :func:`_class_target`), each position's class weight
    (:func:`_class_weights`) and, for sparse labels with ``normalization='valid'``, the
    divisor with them (:func:`_valid_weights`).
    """
    if spec.sparse:
        family.check_sparse_label(yd.layout.shape, lay)
    low = family.lower(spec, None, lay, cdt, on_host=False)
    cw = _class_weight_vector(spec, ctx)  # uploaded once for the kernels below
    labels = yd  # the class ids, before a dense target replaces them
    if family.needs_target(spec):
        yd = _class_target(spec, x, yd, cw, lay, cdt, ctx)
    value_weight, grad_weight = low.value_weight, low.grad_weight
    if family.divides_per_position(spec):
        value_weight, grad_weight = _valid_weights(spec, labels, cw, lay, cdt, ctx)
    elif family.needs_position_weights(spec):
        value_weight = grad_weight = _class_weights(labels, cw, lay, cdt, ctx)

    def times(weight: np.ndarray | DeviceArray | None) -> DeviceArray | None:
        if weight is None:
            return swd
        wd = weight if isinstance(weight, DeviceArray) else _upload(weight.astype(cdt), ctx)
        if swd is None:
            return wd
        full = family.plan_weighting(low.spec, lay, swd.layout).full
        native, out = ctx.empty(full, cdt)
        weigh_product_device(wd, full, swd, 1.0, out, ctx)
        return DeviceArray.wrap("sample_weight", native)

    vswd = times(value_weight)
    rows = family.plan_weighting(low.spec, lay, None if vswd is None else vswd.layout, low.value_scale)
    gswd, grad_rows = vswd, rows
    if grad_weight is not value_weight or low.grad_scale != low.value_scale:
        gswd = times(grad_weight)
        grad_rows = family.plan_weighting(low.spec, lay, None if gswd is None else gswd.layout, low.grad_scale)
    return low.spec, yd, vswd, rows, grad_rows, gswd


def _sparse_labels(yd: DeviceArray, lay: family.ClassLayout, ctx: DeviceContext) -> tuple[Any, bool]:
    """The class-id labels as the kernels read them, ``(outer, inner)``, and whether they are integers."""
    return device_view(yd, yd.layout, (lay.outer, lay.inner), ctx), family.label_kind(yd.layout.dtype) == "int"


def _class_weights(yd: DeviceArray, cw: Any, lay: family.ClassLayout, cdt: np.dtype, ctx: DeviceContext):
    """Each position's class weight :math:`w_j` (``keep_shape``, compute dtype), gathered on the device from ``cw``."""
    native, wpos = ctx.empty(lay.keep_shape, cdt)
    if wpos.size:
        lab, int_labels = _sparse_labels(yd, lay, ctx)
        kernel = build_class_weight_kernel(int_labels)
        ctx.launch(kernel, wpos.size, lab, cw, cdt.type(0), wpos.reshape(lay.outer, lay.inner))
    return DeviceArray.wrap("sample_weight", native)


def _valid_weights(
    spec: SoftmaxSpec, yd: DeviceArray, cw: Any, lay: family.ClassLayout, cdt: np.dtype, ctx: DeviceContext
):
    """``(value, gradient)`` per-position weights of sparse ``normalization='valid'``: :math:`w_j / D` or :math:`1 / D`.

    :math:`D` is ``spec.total`` when given, else summed on the device in a fixed order
    (:func:`numba_losses.kernels.cuda.softmax.build_valid_weight_kernels`).
    """
    value_native, value_w = ctx.empty(lay.keep_shape, cdt)
    grad_native, grad_w = ctx.empty(lay.keep_shape, cdt)
    if value_w.size:
        has_cw = spec.class_weight is not None
        lab, int_labels = _sparse_labels(yd, lay, ctx)
        divisor_kernel, weight_kernel = build_valid_weight_kernels(int_labels)
        _, total = ctx.empty((1,), np.dtype(np.float64))
        if spec.total is None:
            launch(divisor_kernel, 1, THREADS, ctx.stream, lab, cw, has_cw, spec.has_ignore, spec.ignore, total)
        else:
            total.copy_to_device(np.array([spec.total], dtype=np.float64), stream=ctx.stream)
        by_class = family.needs_position_weights(spec)
        shape2 = (lay.outer, lay.inner)
        ctx.launch(
            weight_kernel,
            value_w.size,
            lab,
            cw,
            by_class,
            spec.has_ignore,
            spec.ignore,
            total,
            cdt.type(0),
            value_w.reshape(shape2),
            grad_w.reshape(shape2),
        )
    return DeviceArray.wrap("sample_weight", value_native), DeviceArray.wrap("sample_weight", grad_native)


def _class_weight_vector(spec: SoftmaxSpec, ctx: DeviceContext) -> Any:
    """``class_weight`` (float64) copied to the device: a Numba view (a dummy without class weights)."""
    if spec.class_weight is None:
        return ctx.dummy(1, np.dtype(np.float64))
    _, cw = ctx.empty((spec.class_weight.shape[0],), np.dtype(np.float64))
    if cw.size:
        cw.copy_to_device(np.ascontiguousarray(spec.class_weight, dtype=np.float64), stream=ctx.stream)
    return cw


def _class_target(
    spec: SoftmaxSpec, x, yd: DeviceArray, cw: Any, lay: family.ClassLayout, cdt: np.dtype, ctx: DeviceContext
):
    """The dense target of :func:`numba_losses._plan.softmax.lower`, made on the device from the labels there."""
    n_classes = lay.n_classes
    q_native, q_dev = ctx.empty(x.shape, cdt)
    q3 = q_dev.reshape(lay.shape3)
    if spec.sparse:
        lab, int_labels = _sparse_labels(yd, lay, ctx)
        y3 = ctx.dummy(3, cdt)
    else:
        y3 = device_view(yd, reshape_like("label", yd.layout, x.shape, "pred"), lay.shape3, ctx)
        lab, int_labels = ctx.dummy(2, cdt), False
    if q3.size:
        kernel = build_class_target_kernel(spec.sparse, int_labels)
        q1, q0 = 1.0 - spec.eps, spec.eps / n_classes
        ctx.launch(kernel, q3.size, lab, y3, cw, q1, q0, spec.has_ignore, spec.ignore, cdt.type(0), q3)
    return DeviceArray.wrap("label", q_native)


def _kldiv(spec: KLDivSpec, call: Call, xd: DeviceArray, ctx: DeviceContext) -> tuple[Any, tuple[Any, ...] | None]:
    x = xd.layout
    p = family.plan(spec, x, None)
    cdt, rdt, lay = p.cdt, p.rdt, p.lay
    # The inner call sees lp, not pred, and (float16 results) none of the buffers: every buffer is
    # checked here against the caller's inputs and the other buffer, before anything is written.
    inputs = {"pred": xd} | {n: wrap_input(n, a, ctx) for n, a in call.arrays(skip=("pred",)).items()}
    taken: list = []
    if call.want_value and call.out is not None:
        out_shape = family.result_shapes(spec, {n: d.layout for n, d in inputs.items()})[0][0]
        device_target("out", call.out, out_shape, rdt, ctx, inputs, taken)
    if call.want_grad and call.grad_out[0] is not None:
        device_target("grad_out", call.grad_out[0], x.shape, rdt, ctx, inputs, taken)
    proto = cdt.type(0)
    lp_native, lp_dev = ctx.empty(x.shape, cdt)
    lp3 = lp_dev.reshape(lay.shape3)
    _launch_rows(log_softmax_kernel, lay, ctx, device_view(xd, x, lay.shape3, ctx), proto, lp3)
    same = rdt == cdt  # the caller's buffers take the term's results directly
    term, inner_call = family.kldiv_term_call(spec, call, lp_native, same)
    value, grads = elementwise.run(term, inner_call)
    if call.want_value and not same:
        value = device_result(value, rdt, call.out, ctx)
    if not call.want_grad:
        return value, None
    u = grads[0]
    ud = DeviceArray.wrap("grad", u)
    _launch_rows(log_softmax_backward_kernel, lay, ctx, lp3, proto, ud.view(ud.layout.reshape(lay.shape3)))
    if not same:
        u = device_result(u, rdt, call.grad_out[0], ctx)
    return value, (u,)
