"""Device arrays: recognise them, describe their layout, view, allocate, find the stream.

The dispatcher plans a CUDA call with the same NumPy code as a CPU call by
working on a *layout array* per device input: a NumPy array with the device
array's shape, strides and dtype. On a real GPU it is a "ghost" (a strided view
of a one-element host buffer, never read); under Numba's simulator it is the
simulated array's host data. Reshapes and broadcasts of a layout array give new
shapes, strides and offsets, which :meth:`DeviceArray.view` turns back into a
zero-copy Numba device view of the caller's memory.

Outputs are allocated by the caller's own library (CuPy's memory pool, PyTorch's
caching allocator, or Numba for Numba device arrays and other
``__cuda_array_interface__`` producers) and returned as that library's array.
Kernels are launched on the caller's current stream (CuPy's / PyTorch's,
wrapped with :func:`numba.cuda.external_stream`); nothing synchronises the device.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .launch import launch
from .request import is_scalar, is_simulated_array
from .validate import as_host_array


def _library(a: Any) -> str:
    mod = type(a).__module__.split(".")[0]
    if mod in ("cupy", "torch"):
        return mod
    return "numba"


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


@dataclass
class DeviceArray:
    """One device input: its layout array, where its memory is, and who owns it."""

    source: Any
    layout: np.ndarray
    ptr: int
    device: int
    library: str

    @classmethod
    def wrap(cls, name: str, a: Any) -> DeviceArray:
        if is_simulated_array(a):
            return cls(a, a._ary, a._ary.__array_interface__["data"][0], 0, "simulator")
        try:
            desc = a.__cuda_array_interface__
            dtype = np.dtype(desc["typestr"])
        except Exception as exc:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name}: unreadable __cuda_array_interface__ ({exc})") from exc
        if desc.get("mask") is not None:
            raise TypeError(f"{name}: masked device arrays are not supported")
        shape = tuple(int(n) for n in desc["shape"])
        strides = desc.get("strides") or _c_strides(shape, dtype.itemsize)
        ghost = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape=shape, strides=strides)
        ptr = int(desc["data"][0] or 0)
        return cls(a, ghost, ptr, _device_of(a, ptr), _library(a))

    def view(self, layout_view: np.ndarray) -> Any:
        """The Numba device array for ``layout_view`` (a reshape/broadcast of :attr:`layout`)."""
        from numba import cuda

        if self.library == "simulator":
            return cuda.simulator.cudadrv.devicearray.FakeCUDAArray(layout_view)
        offset = layout_view.__array_interface__["data"][0] - self.layout.__array_interface__["data"][0]
        desc = {
            "shape": layout_view.shape,
            "strides": layout_view.strides,
            "typestr": layout_view.dtype.str,
            "data": (self.ptr + offset, False),
            "version": 3,
        }
        return cuda.from_cuda_array_interface(desc, owner=self.source, sync=False)

    def byte_range(self) -> tuple[int, int]:
        """``[first, last)`` device addresses the array spans (for overlap checks)."""
        lo, hi = np.lib.array_utils.byte_bounds(self.layout)
        base = self.layout.__array_interface__["data"][0]
        return self.ptr + lo - base, self.ptr + hi - base


def _device_of(a: Any, ptr: int) -> int:
    lib = _library(a)
    if lib == "cupy":
        return int(a.device.id)
    if lib == "torch":
        return int(a.device.index)
    gpu_data = getattr(a, "gpu_data", None)
    ctx = getattr(gpu_data, "context", None)
    if ctx is not None:
        return int(ctx.device.id)
    return _pointer_device(ptr)


def _pointer_device(ptr: int) -> int:
    """Device ordinal of a device pointer (the current device when it cannot be asked)."""
    from numba import cuda

    try:
        from cuda.bindings import driver as drv

        err, dev = drv.cuPointerGetAttribute(drv.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)
        if int(err) == 0:
            return int(dev)
    except Exception:  # noqa: BLE001 - bindings absent or pointer unknown: assume current
        pass
    return int(getattr(cuda.get_current_device(), "id", 0))  # the simulator's device has no id


def same_device(named: dict[str, DeviceArray]) -> int:
    """The one device all inputs live on, or ``ValueError`` naming where each is."""
    devices = {d.device for d in named.values()}
    if len(devices) > 1:
        where = ", ".join(f"{n} on cuda:{d.device}" for n, d in named.items())
        raise ValueError(f"device inputs are on different GPUs ({where}); move them to one device")
    return devices.pop()


@dataclass
class DeviceContext:
    """Where a call runs: library of the caller (for outputs), device and stream."""

    library: str
    device: int
    stream: Any

    @classmethod
    def of(cls, first: DeviceArray) -> DeviceContext:
        return cls(first.library, first.device, _current_stream(first))

    @property
    def sms(self) -> int:
        """Multiprocessors of this call's device (sizes the launches)."""
        return sm_count(self.device, self.library == "simulator")

    def launch(self, kernel: Any, n: int, *args: Any) -> None:
        """Launch a grid-stride ``kernel`` over ``n`` items on this call's stream."""
        from numba_losses.kernels.cuda import THREADS, grid_blocks

        launch(kernel, grid_blocks(n, self.sms), THREADS, self.stream, *args)

    def activate(self) -> Any:
        """A context that makes this call's device current (a no-op with one GPU or the simulator)."""
        if self.library == "simulator" or _gpu_count() < 2:
            return contextlib.nullcontext()
        from numba import cuda

        return cuda.gpus[self.device]

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, Any]:
        """A new array in the caller's library and its Numba device view: ``(native, numba)``."""
        from numba import cuda

        shape = tuple(shape)
        if self.library == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                native = cupy.empty(shape, dtype=dtype)
        elif self.library == "torch":
            import torch

            native = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=f"cuda:{self.device}")
        else:
            native = cuda.device_array(shape, dtype=dtype, stream=self.stream)
            return native, native
        return native, cuda.from_cuda_array_interface(native.__cuda_array_interface__, owner=native, sync=False)

    def scalar_array(self, value: float, dtype: np.dtype) -> Any:
        """A one-element Numba device array holding ``value`` (a dummy or a broadcast source)."""
        return _constant(self.library == "simulator", self.device, np.dtype(dtype).name, value)

    def dummy(self, ndim: int, dtype: np.dtype = np.float64) -> Any:
        """A ``(1,) * ndim`` device array of zeros: the argument of a kernel input that is not read."""
        return self.scalar_array(0.0, dtype).reshape((1,) * ndim)


@functools.lru_cache(maxsize=64)
def _constant(simulated: bool, device: int, dtype: str, value: float) -> Any:
    from numba import cuda

    host = np.full((1,), value, dtype=dtype)
    if simulated:
        return cuda.to_device(host)
    with cuda.gpus[device]:
        return cuda.to_device(host)


def _current_stream(first: DeviceArray) -> Any:
    from numba import cuda

    if first.library == "simulator":
        return 0
    if first.library == "cupy":
        import cupy

        with cupy.cuda.Device(first.device):
            ptr = cupy.cuda.get_current_stream().ptr
    elif first.library == "torch":
        import torch

        ptr = torch.cuda.current_stream(first.device).cuda_stream
    else:
        stream = getattr(first.source, "stream", 0)
        return stream if stream else cuda.default_stream()
    return _external_stream(ptr) if ptr else cuda.default_stream()


@functools.lru_cache(maxsize=32)
def _external_stream(ptr: int) -> Any:
    """Numba's wrapper of a foreign stream handle (reused: wrapping is per call otherwise)."""
    from numba import cuda

    return cuda.external_stream(ptr)


@functools.cache
def _gpu_count() -> int:
    from numba import cuda

    return len(cuda.gpus)


@functools.cache
def sm_count(device: int, simulated: bool) -> int:
    """Multiprocessors of ``device`` (a small fixed number under the simulator)."""
    if simulated:
        return 2
    from numba import cuda

    with cuda.gpus[device]:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def checked(name: str, a: Any) -> DeviceArray:
    """``a`` wrapped, with the host path's dtype check run on its layout (reads nothing)."""
    d = DeviceArray.wrap(name, a)
    as_host_array(name, d.layout)
    return d


def wrap_input(name: str, a: Any, ctx: DeviceContext) -> DeviceArray:
    """A device input, or a Python / NumPy number as a 0-d view of a device constant."""
    if is_scalar(a):
        value = a.item() if isinstance(a, np.generic) else a
        d = DeviceArray.wrap(name, ctx.scalar_array(float(value), np.float64))
        d.layout = d.layout.reshape(())
        return d
    return checked(name, a)


def overlaps(a: DeviceArray, b: DeviceArray) -> bool:
    """Whether the device address ranges of ``a`` and ``b`` intersect."""
    (a0, a1), (b0, b1) = a.byte_range(), b.byte_range()
    return a0 < b1 and b0 < a1


@contextlib.contextmanager
def quiet_simulator() -> Iterator[None]:
    """Silence RuntimeWarnings under the simulator, whose threads compute with NumPy
    scalars (0 * inf, ...); a GPU computes the same values without warning. A no-op on GPUs."""
    from numba_losses.kernels.cuda import SIMULATOR

    if not SIMULATOR:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@contextlib.contextmanager
def on_device(first: DeviceArray) -> Iterator[DeviceContext]:
    """The call's context (library, device, stream) with its device current and the simulator quiet."""
    ctx = DeviceContext.of(first)
    with ctx.activate(), quiet_simulator():
        yield ctx


def device_view(d: DeviceArray, layout: np.ndarray, shape: tuple[int, ...], ctx: DeviceContext) -> Any:
    """A Numba view of ``layout`` (a view of ``d``'s layout) reshaped to ``shape``; a gathered copy if none exists."""
    try:
        return d.view(np.reshape(layout, shape, copy=False))
    except ValueError:  # no strided view of this reshape
        return gather(d, layout, ctx).reshape(shape)


def broadcast_view(name: str, d: DeviceArray, full: tuple[int, ...], shape: tuple[int, ...], ctx: DeviceContext) -> Any:
    """``d`` broadcast to ``full`` and viewed as ``shape`` (error naming ``name`` if it does not broadcast)."""
    try:
        layout = np.broadcast_to(d.layout, full)
    except ValueError:
        raise ValueError(f"{name} has shape {d.layout.shape}, expected the output's shape {full}") from None
    return device_view(d, layout, shape, ctx)


def sum_to(src: Any, shape: tuple[int, ...], target: Any, ctx: DeviceContext) -> None:
    """Sum the contiguous ``src`` (a broadcast shape) over broadcast axes into ``target`` (``shape``)."""
    from numba_losses.kernels.cuda.reduce import sum_middle_kernel

    full = tuple(src.shape)
    lead = len(full) - len(shape)
    padded = (1,) * lead + tuple(shape)
    axes = [d for d in range(len(full)) if padded[d] == 1 and full[d] != 1]
    if not axes:
        ctx.launch(
            sum_middle_kernel,
            math.prod(full),
            src.reshape((1, 1, math.prod(full))),
            target.reshape((1, math.prod(full))),
        )
        return
    cur, cur_shape = src, list(full)
    for n, d in enumerate(axes):
        before, mid, after = math.prod(cur_shape[:d]), cur_shape[d], math.prod(cur_shape[d + 1 :])
        cur_shape[d] = 1
        last = n == len(axes) - 1
        dst = target.reshape((before, after)) if last else ctx.empty((before, after), np.float64)[1]
        ctx.launch(sum_middle_kernel, before * after, cur.reshape((before, mid, after)), dst)
        cur = dst


def gather(d: DeviceArray, layout: np.ndarray, ctx: DeviceContext, dst: Any = None) -> Any:
    """A contiguous 1-D copy of ``layout`` (a view of ``d``) into ``dst`` (new, same dtype, when None)."""
    from numba_losses.kernels.cuda.gather import gather_kernel

    item = layout.itemsize
    if any(s % item for s in layout.strides):
        raise ValueError("device arrays with strides that are not a multiple of the item size are not supported")
    strides = tuple(s // item for s in layout.strides)
    shape = layout.shape
    lowest = layout
    for ax, s in enumerate(strides):  # flip negative-stride axes: the data pointer moves to the lowest address
        if s < 0:
            lowest = np.flip(lowest, axis=ax)
    base = sum((n - 1) * -s for n, s in zip(shape, strides, strict=True) if s < 0 and n > 0)
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(shape, strides, strict=True) if n > 0)
    flat = np.lib.stride_tricks.as_strided(lowest, shape=(span,), strides=(item,))
    size = math.prod(shape)
    if dst is None:
        dst = ctx.empty((size,), layout.dtype)[1]
    if size:
        ctx.launch(gather_kernel, size, d.view(flat), base, shape, strides, dst)
    return dst


def to_host(d: DeviceArray, ctx: DeviceContext) -> np.ndarray:
    """A host copy of the (small) device input ``d``, in ``d``'s shape and dtype (waits for the stream)."""
    lay = d.layout
    if d.library == "simulator":
        return np.array(lay)
    if lay.size == 0:
        return np.empty(lay.shape, dtype=lay.dtype)
    src = d.view(lay) if lay.flags.c_contiguous else gather(d, lay, ctx)
    host = src.copy_to_host(stream=ctx.stream)
    ctx.stream.synchronize()
    return host.reshape(lay.shape)
