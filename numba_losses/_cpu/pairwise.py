"""TripletLoss and CosineEmbeddingLoss on the host (:mod:`numba_losses.kernels.cpu.pairwise`).

Inputs are cast to the compute dtype only where needed and read as views;
one pass per row computes the row's sums, the loss and every gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW
from numba_losses.kernels.cpu.pairwise import build_cosine_kernel, build_triplet_kernel

from .._core.buffers import host_empty, host_ones, host_out_grad, host_result, host_target
from .._core.request import Call
from .._core.validate import as_host_array
from .._core.weighting import coef_product_host, view3, weigh_product_host
from .._plan.pairwise import CosineSpec, TripletSpec, plan_cosine, plan_triplet

_DUMMY = {(np.dtype(t), nd): np.zeros((1,) * nd, dtype=t) for t in (np.float32, np.float64) for nd in (2, 3)}


def _view2(a: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    return view3(a, a.shape, (1,) + shape, dtype)[0]


def run(spec: TripletSpec | CosineSpec, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
    """``(out, grads)`` of TripletLoss (3 gradients) or CosineEmbeddingLoss (2)."""
    host = {name: as_host_array(name, a) for name, a in call.inputs.items() if a is not None}
    if isinstance(spec, TripletSpec):
        return _triplet(spec, call, host)
    return _cosine(spec, call, host)


def _triplet(spec: TripletSpec, call: Call, host: dict[str, np.ndarray]) -> tuple[Any, Any]:
    x, p, n = host["pred"], host["positive"], host["negative"]
    plan = plan_triplet(x, p, n, spec.batch_axis)
    cdt, rdt, shape3 = plan.cdt, plan.rdt, plan.shape3
    n_rows = shape3[1]
    x3, p3, n3 = (view3(v, v.shape, shape3, cdt) for v in (x, p, n))
    g = host_out_grad(call.out_grad, (n_rows,))
    g = host_ones(n_rows, cdt) if g is None else g.astype(cdt)
    taken: list = []
    out_c, out_buf = host_target("out", call.out, (n_rows,), rdt, cdt, host, taken)
    targets = [(_DUMMY[cdt, 3], None)] * 3
    if call.want_grad:
        targets = [  # each gradient in its own input's shape (positive, negative: reshaped like pred)
            host_target(f"grad_out[{i}]", buf, arr.shape, rdt, cdt, host, taken)
            for i, (buf, arr) in enumerate(zip(call.grad_out, (x, p, n), strict=True))
        ]
    d3 = [t.reshape(shape3) if call.want_grad else t for t, _ in targets]
    kernel = build_triplet_kernel(x.size >= SERIAL_BELOW)
    kernel(x3, p3, n3, cdt.type(spec.margin), cdt.type(spec.weight), g, call.want_grad, out_c, *d3)
    value = host_result(out_c, out_buf, rdt) if call.want_value else None
    grads = tuple(host_result(t, buf, rdt) for t, buf in targets) if call.want_grad else None
    return value, grads


def _cosine(spec: CosineSpec, call: Call, host: dict[str, np.ndarray]) -> tuple[Any, Any]:
    a, b, y, sw = host["input1"], host["input2"], host["label"], host.get("sample_weight")
    plan = plan_cosine(a, b, y, sw)
    cdt, rdt, n_src, k, n_rows, out_shape = plan.cdt, plan.rdt, plan.n_src, plan.k, plan.n_rows, plan.out_shape
    a2 = _view2(a, (n_src, k), cdt)
    b2 = _view2(b, (n_src, k), cdt)
    flat = y.reshape(-1)
    code = np.equal(flat, 1).view(np.int8)  # label codes 1 / -1 / 0, compared in the label's own dtype
    code -= np.equal(flat, -1).view(np.int8)
    if code.size != n_rows:  # one label broadcast to the rows
        code = np.broadcast_to(code, (n_rows,)).copy()
    g = host_out_grad(call.out_grad, out_shape)
    taken: list = []
    out_full, out_buf = host_target("out", call.out, out_shape, rdt, cdt, host, taken)
    if plan.per_row:  # weighting inside the kernel: per-row sample weight, head gradient and weight
        rsw = host_ones(n_rows, cdt)
        if sw is not None:
            rsw = np.empty(n_rows, dtype=cdt)
            rsw[...] = sw.reshape(-1).astype(cdt)
        g_row = host_ones(n_rows, cdt) if g is None else g.reshape(n_rows).astype(cdt)
        w_kernel = cdt.type(spec.weight)
        out_rows = out_full.reshape(n_rows)
    else:  # sample_weight grows the output: unweighted rows here, the product weighting after
        rsw = g_row = host_ones(n_rows, cdt)
        if call.want_grad:
            g_row = coef_product_host((n_rows, 1), out_shape, sw, spec.weight, g, cdt).reshape(n_rows)
        w_kernel = cdt.type(1)
        out_rows = np.empty(n_rows, dtype=cdt)
    grows = n_src != n_rows  # one vector broadcast to several labels: gradient rows are summed
    targets = [(_DUMMY[cdt, 2], None)] * 2
    d2 = [_DUMMY[cdt, 2]] * 2
    if call.want_grad:
        targets = [
            host_target(f"grad_out[{i}]", buf, arr.shape, rdt, cdt, host, taken)
            for i, (buf, arr) in enumerate(zip(call.grad_out, (a, b), strict=True))
        ]
        d2 = [host_empty((n_rows, k), cdt) if grows else t.reshape(n_src, k) for t, _ in targets]
    kernel = build_cosine_kernel(n_rows * k >= SERIAL_BELOW)
    kernel(a2, b2, code, cdt.type(spec.margin), g_row, rsw, w_kernel, call.want_grad, out_rows, *d2)
    value = None
    if call.want_value:
        if not plan.per_row:
            weigh_product_host(out_rows.reshape(n_rows, 1), out_shape, sw, spec.weight, out_full)
        value = host_result(out_full, out_buf, rdt)
    grads = None
    if call.want_grad:
        res = []
        for (t, buf), d in zip(targets, d2, strict=True):
            if grows:
                t[...] = d.sum(axis=0, dtype=np.float64).reshape(t.shape)
            res.append(host_result(t, buf, rdt))
        grads = tuple(res)
    return value, grads
