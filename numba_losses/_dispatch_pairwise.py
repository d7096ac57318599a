"""The dispatcher of TripletLoss and CosineEmbeddingLoss: shapes, dtypes, buffers, backend.

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
kernel writes the unweighted rows, the output is formed afterwards and the
head gradient is summed back to the rows first. A single vector broadcast to
``R > 1`` labels is read as a zero-stride row; its gradient rows are summed.

Both backends share the planning (:func:`plan_triplet`, :func:`plan_cosine`,
which read shapes and dtypes only). The CPU path casts inputs to the compute
dtype where needed and allocates with NumPy; the CUDA path passes strided
views of the caller's memory in their own dtype and allocates with the
caller's library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from numba_losses.kernels._options import SERIAL_BELOW

from ._backend import CUDA, select_backend
from ._dispatch import _unbroadcast, _view3
from ._dispatch_cuda import device_view
from ._validate import (
    as_host_array,
    broadcast_shape,
    check_buffer,
    compute_dtype,
    normalize_axis,
    result_dtype,
)

TRIPLET_GRADS = ("pred", "positive", "negative")
COSINE_GRADS = ("input1", "input2")


# ----------------------------------------------------------------------------- planning
@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    out_shape: tuple[int, ...] = (n_rows, 1)
    if sw is not None:
        out_shape = broadcast_shape({"loss": out_shape, "sample_weight": sw.shape})
    return CosinePlan(cdt, result_dtype(a, cdt), n_src, k, n_rows, out_shape, out_shape == (n_rows, 1))


def grad_buffers(grad_out: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """``grad_out`` as one entry (a buffer or None) per differentiable input."""
    if grad_out is None:
        return (None,) * len(names)
    if not isinstance(grad_out, (tuple, list)):
        raise TypeError(f"grad_out must be a tuple of {len(names)} buffers (for {', '.join(names)}) or None")
    if len(grad_out) != len(names):
        raise ValueError(f"grad_out: expected {len(names)} buffers (for {', '.join(names)}), got {len(grad_out)}")
    return tuple(grad_out)


# ----------------------------------------------------------------------------- host helpers
def _host_out_grad(out_grad: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if out_grad is None:
        return None
    g = as_host_array("out_grad", out_grad)
    try:
        return np.broadcast_to(g, shape)
    except ValueError:
        raise ValueError(f"out_grad has shape {g.shape}, expected the output's shape {shape}") from None


_HUGE_PAGE = 1 << 21  # x86-64 transparent huge page


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty``, 2 MiB-aligned when large.

    A fresh multi-MiB NumPy array is a new ``mmap`` that starts at an arbitrary
    4 KiB page: only its aligned 2 MiB stretches can become transparent huge
    pages, the rest is first touched 4 KiB at a time (about a thousand page
    faults per 8 MiB gradient). Aligned, every page is a huge page. The array
    returned is a view of a slightly larger buffer.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < 2 * _HUGE_PAGE:
        return np.empty(shape, dtype=dtype)
    raw = np.empty(nbytes + _HUGE_PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _host_target(
    name: str, buf: Any, shape: tuple[int, ...], rdt: np.dtype, cdt: np.dtype, inputs: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(array the kernel writes, checked user buffer or None)``; the kernel writes the buffer when it can."""
    if buf is None:
        return _empty(shape, cdt), None
    buf = check_buffer(name, buf, shape, rdt)
    if any(np.may_share_memory(buf, a) for a in inputs):
        raise ValueError(f"{name} must not share memory with the inputs (inputs are never written)")
    return (buf if rdt == cdt else _empty(shape, cdt)), buf


def _host_result(arr: np.ndarray, buf: np.ndarray | None, rdt: np.dtype) -> np.ndarray:
    """What the caller gets: its buffer (filled if the kernel could not write it) or ``arr`` in the result dtype."""
    if buf is not None:
        if arr is not buf:
            buf[...] = arr
        return buf
    return arr.astype(rdt) if arr.dtype != rdt else arr


def _view2(a: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    return _view3(a, a.shape, (1,) + shape, dtype)[0]


_DUMMY = {(np.dtype(t), nd): np.zeros((1,) * nd, dtype=t) for t in (np.float32, np.float64) for nd in (2, 3)}


# ----------------------------------------------------------------------------- TripletLoss
def triplet(
    pred: Any,
    positive: Any,
    negative: Any,
    *,
    margin: float,
    weight: float,
    batch_axis: int,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: Any = None,
    grad_out: Any = None,
) -> tuple[Any, tuple[Any, ...] | None]:
    """TripletLoss forward (and gradients): ``(out, (dpred, dpositive, dnegative) or None)``."""
    if not want_grad:
        out_grad = grad_out = None
    backend = select_backend({"pred": pred, "positive": positive, "negative": negative, "out_grad": out_grad})
    bufs = grad_buffers(grad_out, TRIPLET_GRADS)
    if backend == CUDA:
        return _on_device(
            _triplet_cuda, pred, positive, negative, margin, weight, batch_axis, out_grad, want_grad, out, bufs
        )
    x = as_host_array("pred", pred)
    p = as_host_array("positive", positive)
    n = as_host_array("negative", negative)
    plan = plan_triplet(x, p, n, batch_axis)
    cdt, rdt, shape3 = plan.cdt, plan.rdt, plan.shape3
    n_rows = shape3[1]
    x3, p3, n3 = (_view3(v, v.shape, shape3, cdt) for v in (x, p, n))
    g = _host_out_grad(out_grad, (n_rows,))
    g = np.ones(n_rows, dtype=cdt) if g is None else g.astype(cdt)
    inputs = (x, p, n)
    out_c, out_buf = _host_target("out", out, (n_rows,), rdt, cdt, inputs)
    targets = [(_DUMMY[cdt, 3], None)] * 3
    if want_grad:
        targets = [_host_target(f"grad_out[{i}]", buf, x.shape, rdt, cdt, inputs) for i, buf in enumerate(bufs)]
    d3 = [t.reshape(shape3) if want_grad else t for t, _ in targets]
    from numba_losses.kernels.cpu.pairwise import build_triplet_kernel

    kernel = build_triplet_kernel(x.size >= SERIAL_BELOW)
    kernel(x3, p3, n3, cdt.type(margin), cdt.type(weight), g, want_grad, out_c, *d3)
    value = _host_result(out_c, out_buf, rdt) if want_value else None
    grads = tuple(_host_result(t, buf, rdt) for t, buf in targets) if want_grad else None
    return value, grads


# ----------------------------------------------------------------------------- CosineEmbeddingLoss
def cosine(
    input1: Any,
    input2: Any,
    label: Any,
    sample_weight: Any = None,
    *,
    margin: float,
    weight: float,
    out_grad: Any = None,
    want_value: bool = True,
    want_grad: bool = False,
    out: Any = None,
    grad_out: Any = None,
) -> tuple[Any, tuple[Any, ...] | None]:
    """CosineEmbeddingLoss forward (and gradients): ``(out, (dinput1, dinput2) or None)``."""
    if not want_grad:
        out_grad = grad_out = None
    backend = select_backend(
        {"input1": input1, "input2": input2, "label": label, "sample_weight": sample_weight, "out_grad": out_grad}
    )
    bufs = grad_buffers(grad_out, COSINE_GRADS)
    if backend == CUDA:
        return _on_device(
            _cosine_cuda, input1, input2, label, sample_weight, margin, weight, out_grad, want_grad, out, bufs
        )
    a = as_host_array("input1", input1)
    b = as_host_array("input2", input2)
    y = as_host_array("label", label)
    sw = as_host_array("sample_weight", sample_weight) if sample_weight is not None else None
    plan = plan_cosine(a, b, y, sw)
    cdt, rdt, n_src, k, n_rows, out_shape = plan.cdt, plan.rdt, plan.n_src, plan.k, plan.n_rows, plan.out_shape
    a2 = _view2(a, (n_src, k), cdt)
    b2 = _view2(b, (n_src, k), cdt)
    flat = y.reshape(-1)
    code = np.empty(n_rows, dtype=np.int8)  # label codes 1 / -1 / 0, compared in the label's own dtype
    code[...] = (flat == 1).astype(np.int8) - (flat == -1).astype(np.int8)
    wc = cdt.type(weight)
    g = _host_out_grad(out_grad, out_shape)
    inputs = (a, b, y) if sw is None else (a, b, y, sw)
    out_full, out_buf = _host_target("out", out, out_shape, rdt, cdt, inputs)
    if plan.per_row:
        rsw = np.ones(n_rows, dtype=cdt)
        if sw is not None:
            rsw[...] = sw.reshape(-1).astype(cdt)
        g_row = np.ones(n_rows, dtype=cdt) if g is None else g.reshape(n_rows).astype(cdt)
        w_kernel = wc
        out_rows = out_full.reshape(n_rows)
    else:  # sample_weight grows the output: unweighted rows here, weighting below
        sw_c = sw.astype(cdt)
        rsw = np.ones(n_rows, dtype=cdt)
        g_row = rsw
        if want_grad:
            g_c = np.ones((), dtype=cdt) if g is None else g.astype(cdt)
            head = np.broadcast_to((g_c * wc) * sw_c, out_shape).astype(np.float64)
            g_row = _unbroadcast(head, (n_rows, 1)).reshape(n_rows).astype(cdt)
        w_kernel = cdt.type(1)
        out_rows = np.empty(n_rows, dtype=cdt)
    grows = n_src != n_rows  # one vector broadcast to several labels: gradient rows are summed
    targets = [(_DUMMY[cdt, 2], None)] * 2
    if want_grad:
        targets = [
            _host_target(f"grad_out[{i}]", buf, arr.shape, rdt, cdt, inputs)
            for i, (buf, arr) in enumerate(zip(bufs, (a, b), strict=True))
        ]
    d2 = [_DUMMY[cdt, 2]] * 2
    if want_grad:
        d2 = [_empty((n_rows, k), cdt) if grows else t.reshape(n_src, k) for t, _ in targets]
    from numba_losses.kernels.cpu.pairwise import build_cosine_kernel

    kernel = build_cosine_kernel(n_rows * k >= SERIAL_BELOW)
    kernel(a2, b2, code, cdt.type(margin), g_row, rsw, w_kernel, want_grad, out_rows, *d2)
    value = None
    if want_value:
        if not plan.per_row:
            np.multiply(out_rows.reshape(n_rows, 1) * sw_c, wc, out=out_full)
        value = _host_result(out_full, out_buf, rdt)
    grads = None
    if want_grad:
        res = []
        for (t, buf), d in zip(targets, d2, strict=True):
            if grows:
                t[...] = d.sum(axis=0, dtype=np.float64).reshape(t.shape)
            res.append(_host_result(t, buf, rdt))
        grads = tuple(res)
    return value, grads


# ----------------------------------------------------------------------------- CUDA
def _on_device(fn: Any, *args: Any) -> tuple[Any, Any]:
    """Run a CUDA path with the first input's device current (and the simulator's IEEE warnings off)."""
    from ._device import DeviceContext
    from ._dispatch_cuda import _checked, quiet_simulator

    first = _checked(("pred", "input1")[fn is _cosine_cuda], args[0])
    ctx = DeviceContext.of(first)
    with ctx.activate(), quiet_simulator():
        return fn(first, ctx, *args[1:])


def _dev_rows(name: str, d: Any, n: int, ctx: Any) -> Any:
    """``d`` (1 or ``n`` elements) flattened and broadcast to ``(n,)``, as a numba device view."""
    from ._device import DeviceArray

    flat = device_view(d, d.layout, (d.layout.size,), ctx)
    flat_d = DeviceArray.wrap(name, flat)
    return flat_d.view(np.broadcast_to(flat_d.layout, (n,)))


def _dev_broadcast(name: str, d: Any, shape: tuple[int, ...], ctx: Any, rows: bool = False) -> Any:
    """``d`` broadcast to the output ``shape``, viewed as ``(prod(shape[:-2]), shape[-2], shape[-1])``
    or, with ``rows`` (``shape == (n, 1)``), as ``(n,)``."""
    try:
        layout = np.broadcast_to(d.layout, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {d.layout.shape}, expected the output's shape {shape}") from None
    new = (shape[0],) if rows else (math.prod(shape[:-2]), shape[-2], shape[-1])
    return device_view(d, layout, new, ctx)


def _dev_target(name: str, buf: Any, shape: tuple[int, ...], rdt: np.dtype, ctx: Any, inputs: dict) -> tuple[Any, Any]:
    """``(native array returned to the caller, numba view of it)``: a checked user buffer or a new array."""
    from ._dispatch_cuda import _check_device_buffer, _overlaps

    if buf is None:
        return ctx.empty(shape, rdt)
    d = _check_device_buffer(name, buf, shape, rdt)
    if any(_overlaps(d, v) for v in inputs.values()):
        raise ValueError(f"{name} must not share memory with the inputs (inputs are never written)")
    return buf, d.view(d.layout)


def _triplet_cuda(xd, ctx, positive, negative, margin, weight, batch_axis, out_grad, want_grad, out, bufs):
    from numba_losses.kernels.cuda import SIMULATOR, THREADS
    from numba_losses.kernels.cuda.pairwise import build_triplet_kernel, row_groups

    from ._device import same_device
    from ._dispatch_cuda import _wrap

    inputs = {"pred": xd, "positive": _wrap("positive", positive, ctx), "negative": _wrap("negative", negative, ctx)}
    og = _wrap("out_grad", 1.0 if out_grad is None else out_grad, ctx)
    plan = plan_triplet(*(d.layout for d in inputs.values()), batch_axis)
    inputs["out_grad"] = og
    same_device(inputs)
    cdt, rdt, shape3 = plan.cdt, plan.rdt, plan.shape3
    n_rows = shape3[1]
    x3, p3, n3 = (device_view(inputs[name], inputs[name].layout, shape3, ctx) for name in TRIPLET_GRADS)
    try:
        g = og.view(np.broadcast_to(og.layout, (n_rows,)))
    except ValueError:
        raise ValueError(f"out_grad has shape {og.layout.shape}, expected the output's shape {(n_rows,)}") from None
    out_native, out_dev = _dev_target("out", out, (n_rows,), rdt, ctx, inputs)
    dummy = ctx.scalar_array(0.0, cdt).reshape((1, 1, 1))
    natives, views = None, [dummy] * 3
    if want_grad:
        pairs = [_dev_target(f"grad_out[{i}]", buf, xd.layout.shape, rdt, ctx, inputs) for i, buf in enumerate(bufs)]
        natives = tuple(nat for nat, _ in pairs)
        views = [v.reshape(shape3) for _, v in pairs]
    group, blocks = row_groups(n_rows, shape3[0] * shape3[2], ctx.sms)
    kernel = build_triplet_kernel(not SIMULATOR)
    kernel[blocks, THREADS, ctx.stream](
        x3, p3, n3, cdt.type(margin), cdt.type(weight), g, want_grad, out_dev, *views, group
    )  # fmt: skip
    return out_native, natives


def _cosine_cuda(ad, ctx, input2, label, sample_weight, margin, weight, out_grad, want_grad, out, bufs):
    from numba_losses.kernels.cuda import SIMULATOR, THREADS
    from numba_losses.kernels.cuda.pairwise import (
        build_cosine_kernel,
        cosine_head_sum_kernel,
        cosine_weight_kernel,
        row_groups,
    )

    from ._device import same_device
    from ._dispatch_cuda import _sum_to, _wrap

    bd = _wrap("input2", input2, ctx)
    yd = _wrap("label", label, ctx)
    swd = _wrap("sample_weight", sample_weight, ctx) if sample_weight is not None else None
    og = _wrap("out_grad", 1.0 if out_grad is None else out_grad, ctx)
    inputs = {"input1": ad, "input2": bd, "label": yd, "out_grad": og}
    if swd is not None:
        inputs["sample_weight"] = swd
    same_device(inputs)
    plan = plan_cosine(ad.layout, bd.layout, yd.layout, swd.layout if swd else None)
    cdt, rdt, n_src, k, n_rows, out_shape = plan.cdt, plan.rdt, plan.n_src, plan.k, plan.n_rows, plan.out_shape
    a2 = device_view(ad, ad.layout, (n_src, k), ctx)
    b2 = device_view(bd, bd.layout, (n_src, k), ctx)
    lab = _dev_rows("label", yd, n_rows, ctx)
    one = _dev_rows("ones", _wrap("ones", 1.0, ctx), n_rows, ctx)
    wc = cdt.type(weight)
    if plan.per_row:
        rsw = _dev_rows("sample_weight", swd, n_rows, ctx) if swd is not None else one
        g_row = _dev_broadcast("out_grad", og, out_shape, ctx, rows=True)
        w_kernel = wc
        out_native, out_view = _dev_target("out", out, out_shape, rdt, ctx, inputs)
        out_rows = out_view.reshape((n_rows,))
    else:  # sample_weight grows the output: unweighted rows first, then the weighting kernel
        sw3 = _dev_broadcast("sample_weight", swd, out_shape, ctx)
        rsw = g_row = one
        if want_grad:
            g_row = ctx.empty((n_rows,), cdt)[1]
            g3 = _dev_broadcast("out_grad", og, out_shape, ctx)
            ctx.launch(cosine_head_sum_kernel, n_rows, g3, sw3, wc, g_row)
        w_kernel = cdt.type(1)
        out_rows = ctx.empty((n_rows,), cdt)[1]
        out_native, out_view = _dev_target("out", out, out_shape, rdt, ctx, inputs)
    grows = n_src != n_rows
    dummy = ctx.scalar_array(0.0, cdt).reshape((1, 1))
    natives, views, pairs = None, [dummy] * 2, []
    if want_grad:
        shapes = (ad.layout.shape, bd.layout.shape)
        pairs = [
            _dev_target(f"grad_out[{i}]", buf, s, rdt, ctx, inputs)
            for i, (buf, s) in enumerate(zip(bufs, shapes, strict=True))
        ]
        natives = tuple(nat for nat, _ in pairs)
        views = [ctx.empty((n_rows, k), cdt)[1] if grows else v.reshape((n_src, k)) for _, v in pairs]
    group, blocks = row_groups(n_rows, k, ctx.sms)
    kernel = build_cosine_kernel(not SIMULATOR)
    kernel[blocks, THREADS, ctx.stream](
        a2, b2, lab, cdt.type(margin), g_row, rsw, w_kernel, want_grad, out_rows, *views, group
    )  # fmt: skip
    if not plan.per_row:
        shape3 = (math.prod(out_shape[:-2]), out_shape[-2], out_shape[-1])
        ctx.launch(cosine_weight_kernel, math.prod(out_shape), out_rows, sw3, wc, out_view.reshape(shape3))
    if grows and want_grad:
        for (_, target), scratch in zip(pairs, views, strict=True):
            _sum_to(scratch, (1, k), target.reshape((1, k)), ctx)
    return out_native, natives
