"""Outputs, the caller's ``out`` / ``grad_out`` buffers and the head gradient, host and device.

Every family allocates and delivers its results through these functions, so
the rules are the same for all losses:

* a buffer must have the result's exact shape and dtype and be writable
  (C-contiguous on the host);
* no output buffer may share memory with an input or with another output
  buffer (``ValueError`` naming the buffer): inputs are never written;
* the kernel writes straight into a buffer when the compute dtype is the
  result dtype, otherwise into a temporary that is then copied in;
* ``out_grad`` must broadcast to the output's shape (``ValueError``).

Fresh host outputs of 4 MiB and more are 2 MiB-aligned so that the kernel's
first touch of them maps transparent huge pages (about a thousand fewer page
faults per 8 MiB); passing ``out=`` / ``grad_out=`` buffers avoids the
allocation altogether. Internal scratch arrays smaller than that are kept per
thread between calls (:func:`host_scratch`).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from .device import DeviceArray, DeviceContext, gather, overlaps
from .request import is_device_array
from .validate import SHARE_INPUTS, as_host_array, check_buffer

_HUGE_PAGE = 1 << 21  # x86-64 transparent huge page


# ------------------------------------------------------------------------------------ host
def host_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty``, 2 MiB-aligned when large (a view of a slightly larger buffer)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < 2 * _HUGE_PAGE:
        return np.empty(shape, dtype=dtype)
    raw = np.empty(nbytes + _HUGE_PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def host_target(
    name: str,
    buf: Any,
    shape: tuple[int, ...],
    rdt: np.dtype,
    cdt: np.dtype,
    inputs: Mapping[str, Any],
    taken: list,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(array the kernel writes, checked caller's buffer or None)``: the buffer itself when it can be."""
    if buf is None:
        return host_empty(shape, cdt), None
    buf = check_buffer(name, buf, shape, rdt, inputs, taken)
    return (buf if rdt == cdt else host_empty(shape, cdt)), buf


def host_result(arr: np.ndarray, buf: np.ndarray | None, rdt: np.dtype) -> np.ndarray:
    """What the caller gets: its buffer (filled if the kernel wrote elsewhere) or ``arr`` in the result dtype."""
    if buf is not None:
        if arr is not buf:
            buf[...] = arr
        return buf
    return arr.astype(rdt) if arr.dtype != rdt else arr


def host_out_grad(out_grad: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The head gradient broadcast to the output's ``shape`` (``None`` stays ``None``: ones)."""
    if out_grad is None:
        return None
    g = as_host_array("out_grad", out_grad)
    if g.shape == shape:  # read-only like the broadcast view below, without broadcast_to's Python cost
        view = g.view()
        view.flags.writeable = False
        return view
    try:
        return np.broadcast_to(g, shape)
    except ValueError:
        raise ValueError(f"out_grad has shape {g.shape}, expected the output's shape {tuple(shape)}") from None


# Scratch arrays below this size are kept per thread for the next call (they would be 4 KiB pages;
# from 4 MiB on, host_empty's huge pages make a fresh allocation cheap). At most one array per key.
SCRATCH_KEEP_BELOW = 2 * _HUGE_PAGE
_scratch = threading.local()


def host_full(shape: tuple[int, ...], value: float, dtype: np.dtype) -> np.ndarray:
    """``np.full(shape, value, dtype)`` (``value`` rounded once to ``dtype``) without its Python-level cost."""
    a = np.empty(shape, dtype=dtype)
    a.fill(value)
    return a


def host_constant(n: int, value: float, dtype: np.dtype) -> np.ndarray:
    """``n`` copies of ``value`` (rounded once to ``dtype``), kept per size, value and dtype, for
    kernels that read them as weights or scales.

    Never written and never handed out (no copy per call). Writable all the same: every other
    array a kernel gets is, and a read-only one would be another Numba signature to compile. NaN
    and zeros are made afresh: equal keys would not tell their bits apart (NaN != NaN, -0.0 == 0.0).
    """
    if value != value or value == 0:
        return host_full((n,), value, dtype)
    return _kept_constant(n, value, np.dtype(dtype))


@functools.lru_cache(maxsize=64)
def _kept_constant(n: int, value: float, dtype: np.dtype) -> np.ndarray:
    return host_full((n,), value, dtype)


def host_ones(n: int, dtype: np.dtype) -> np.ndarray:
    """Ones of length ``n``, kept per size and dtype, for kernels that read them as unit weights
    (:func:`host_constant`)."""
    return host_constant(n, 1.0, dtype)


_last_args = threading.local()


def last_kept(slot: str, key: Any, make: Any) -> Any:
    """What ``make()`` returns for ``key``, reusing this thread's last result in ``slot`` when its key is equal.

    A kernel's scratch arguments (and what they are sized from) are the same from one call to
    the next of a training loop: one comparison instead of their :func:`host_scratch` lookups.
    ``make`` returns ``(value, keep)``; a value is kept only where ``keep`` is true.
    """
    last = getattr(_last_args, slot, None)
    if last is not None and last[0] == key:
        return last[1]
    value, keep = make()
    setattr(_last_args, slot, (key, value) if keep else None)
    return value


def host_scratch(key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array that a kernel call uses internally and never hands out.

    A host call that allocates and frees the same few mid-size arrays every
    time can pay for every page of them again: the C allocator returns such
    blocks to the system when they are freed, and touching them afresh costs a
    page fault per 4 KiB (here about 650 per SDMLLoss (512, 256) forward call,
    1.6 ms of a 2.7 ms call on a virtual machine). Arrays below
    :data:`SCRATCH_KEEP_BELOW` are therefore kept, one per ``key`` and thread,
    and the next request of this thread for the same key, shape and dtype gets
    the same array back. A caller must be done with it before it asks for the
    key again, and must not return it or keep it past the call.
    """
    dtype = np.dtype(dtype)
    kept = getattr(_scratch, "arrays", None)
    if kept is None:
        kept = _scratch.arrays = {}
    a = kept.get(key)
    if a is not None and a.shape == shape and a.dtype == dtype:
        return a
    a = host_empty(shape, dtype)
    if a.nbytes < SCRATCH_KEEP_BELOW:
        kept[key] = a
    else:
        kept.pop(key, None)
    return a


# ---------------------------------------------------------------------------------- device
def device_buffer(
    name: str,
    buf: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    inputs: Mapping[str, DeviceArray],
    taken: list,
) -> DeviceArray:
    """A checked caller's device buffer (the host rules, on device address ranges)."""
    if not is_device_array(buf):
        raise TypeError(f"{name} must be a device array (the inputs are), got {type(buf).__name__}")
    d = DeviceArray.wrap(name, buf)
    check_buffer(name, d.layout, shape, dtype)
    for other, a in inputs.items():
        if d.layout.size and overlaps(d, a):
            raise ValueError(f"{name} {SHARE_INPUTS}: it overlaps {other}")
    if d.layout.size and any(overlaps(d, t) for t in taken):
        raise ValueError(f"{name}: output buffers must not share memory with each other")
    taken.append(d)
    return d


def device_target(
    name: str,
    buf: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    ctx: DeviceContext,
    inputs: Mapping[str, DeviceArray],
    taken: list,
) -> tuple[Any, Any]:
    """``(array returned to the caller, Numba view the kernel writes)``: a checked buffer or a new array."""
    if buf is None:
        return ctx.empty(shape, dtype)
    d = device_buffer(name, buf, shape, dtype, inputs, taken)
    return buf, d.view(d.layout)


def device_result(native: Any, rdt: np.dtype, buf: Any, ctx: DeviceContext) -> Any:
    """``native`` (compute dtype) in the result dtype, written into ``buf`` when given (float16 results)."""
    src = DeviceArray.wrap("result", native)
    if src.layout.dtype == rdt and buf is None:
        return native
    shape = src.layout.shape
    if buf is not None:
        dst = DeviceArray.wrap("buffer", buf)
        check_buffer("buffer", dst.layout, shape, rdt)
        result, target = buf, dst.view(dst.layout)
    else:
        result, target = ctx.empty(shape, rdt)
    gather(src, src.layout, ctx, dst=target.reshape(math.prod(shape)))
    return result


def device_out_grad(ogd: DeviceArray | None, shape: tuple[int, ...]) -> Any:
    """The head gradient as a (possibly zero-stride) Numba view of the output's ``shape``; ``None`` for ones."""
    if ogd is None:
        return None
    try:
        layout = np.broadcast_to(ogd.layout, shape)
    except ValueError:
        raise ValueError(f"out_grad has shape {ogd.layout.shape}, expected the output's shape {tuple(shape)}") from None
    return ogd.view(layout)
