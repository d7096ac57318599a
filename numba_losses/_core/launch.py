"""Kernel launches with less host time per call than ``kernel[grid, block, stream](*args)``.

Numba's launch path types every argument (a Numba type built afresh for each
new device-array view), resolves the overload, checks launch-configuration
specialisations and, for grids under 128 blocks, builds and filters a
``NumbaPerformanceWarning``. This library's small grids are chosen on purpose
and its kernels are not launch-configuration sensitive, so after the first
launch of a kernel with a given kind of arguments (through Numba, which
compiles or loads the kernel), :func:`launch` remembers the compiled kernel for
that kind and launches it directly, without the dispatch around it.

The kind of an argument is what Numba's typing reads: for a device array its
dtype, rank and layout ('C', 'F' or 'A', as Numba derives it); for a number
its Python or NumPy type. Arguments of any other kind always take Numba's path.
Under the simulator every launch takes Numba's path.

Device-array arguments are marshalled here (:func:`marshal`): Numba's rule for
them (meminfo and parent as 0, size, itemsize, data pointer, shape, strides in
bytes) written out, without the strided-memory-view object Numba makes for each
array on each launch (about 10 us per array, against 1 us here). Numbers go
through Numba's own rule. Kernels compiled for debugging (which check an error
flag after the launch) or with argument extensions keep Numba's whole launch.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

#: (dispatcher, argument kinds) -> the compiled kernel, or None where Numba's path must be taken
_COMPILED: dict[tuple[Any, tuple[Any, ...]], Any] = {}
_NUMBERS = (float, int, bool)


def _kind(a: Any) -> Any:
    """What Numba's typing of ``a`` depends on, or None when unknown here."""
    t = type(a)
    if t in _NUMBERS:
        return t
    if isinstance(a, np.generic):
        return a.dtype
    if not isinstance(a, _device_array_class()):
        return None
    flags = a.flags
    broadcast = 0 in a.strides and a.size != 0
    if flags["C_CONTIGUOUS"] and not broadcast:
        layout = "C"
    elif flags["F_CONTIGUOUS"] and not broadcast:
        layout = "F"
    else:
        layout = "A"
    return (a.dtype, a.ndim, layout)


def _device_array_class() -> type:
    from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase

    return DeviceNDArrayBase


def _dims(d: Any) -> tuple[int, ...]:
    """A grid or block size as the three integers Numba's launch configuration holds."""
    if isinstance(d, numbers.Integral):
        return (int(d), 1, 1)
    d = tuple(int(n) for n in d)
    return d + (1,) * (3 - len(d))


@functools.cache
def _simulated() -> bool:
    from numba_losses.kernels.cuda import SIMULATOR

    return SIMULATOR


def launch(kernel: Any, griddim: Any, blockdim: Any, stream: Any, *args: Any) -> None:
    """``kernel[griddim, blockdim, stream](*args)``, through the remembered compiled kernel when there is one."""
    if _simulated():
        numba_launch(kernel, griddim, blockdim, stream, args)
        return
    kinds = tuple(_kind(a) for a in args)
    key = (kernel, kinds)
    compiled = _COMPILED.get(key, False)
    if compiled is False:
        numba_launch(kernel, griddim, blockdim, stream, args)  # compiles or loads the kernel, launches it
        _COMPILED[key] = _remember(kernel, args, kinds) if None not in kinds else None
        return
    if compiled is None:
        numba_launch(kernel, griddim, blockdim, stream, args)
        return
    grid, block, core = _dims(griddim), _dims(blockdim), _core_stream(stream)
    k = compiled.kernel
    if compiled.driver_launch is None:
        k.launch(args, grid, block, core, 0)
        return
    kernelargs = marshal(k, compiled.arrays, args, core)
    compiled.driver_launch(core, _config(grid, block, k.cooperative), k._codelibrary.get_cufunc().kernel, *kernelargs)


def numba_launch(kernel: Any, griddim: Any, blockdim: Any, stream: Any, args: tuple[Any, ...]) -> None:
    """``kernel[griddim, blockdim, stream](*args)``, with a clear error for a known version clash.

    Numba's low-occupancy warning for grids under 128 blocks is not shown: this
    library sizes its grids to the work on purpose.

    Raises
    ------
    RuntimeError
        numba-cuda could not compile the kernel because it refers to a NumPy
        function the installed NumPy no longer has (numba-cuda 0.30 with
        NumPy 2.5: ``numpy.row_stack``); the message says what to install.
    """
    try:
        with warnings.catch_warnings():  # the grid sizes are this library's choice, not the user's
            warnings.filterwarnings("ignore", message=".*Grid size .* under-utilization")
            kernel[griddim, blockdim, stream](*args)
    except AttributeError as exc:
        if "module 'numpy' has no attribute" not in str(exc):
            raise
        import numba_cuda
        import numpy

        raise RuntimeError(
            f"numba-cuda {getattr(numba_cuda, '__version__', '?')} cannot compile CUDA kernels with NumPy "
            f"{numpy.__version__} ({exc}); install a NumPy it supports (pip install 'numpy<2.5') or a newer "
            "numba-cuda"
        ) from exc


@dataclass(frozen=True)
class Remembered:
    """A compiled kernel and how :func:`launch` calls it for one kind of arguments."""

    kernel: Any  #: Numba's compiled kernel (``_Kernel``)
    arrays: tuple[bool, ...]  #: which arguments are device arrays (marshalled by :func:`marshal`)
    #: cuda.core's ``launch``, called with the parameters :func:`marshal` makes; None: the kernel's own launch
    driver_launch: Any


def _remember(kernel: Any, args: tuple[Any, ...], kinds: tuple[Any, ...]) -> Remembered | None:
    """The compiled kernel Numba chose for ``args`` (of ``kinds``), or None when a direct call would not be the same."""
    if getattr(kernel, "_launch_config_sensitive", False) or getattr(kernel, "specialized", False):
        return None
    argtypes = tuple(kernel.typeof_pyval(a) for a in args)
    compiled = kernel.overloads.get(argtypes)
    if compiled is None or getattr(compiled, "launch_config_sensitive", False) or not hasattr(compiled, "launch"):
        return None
    arrays = tuple(isinstance(k, tuple) for k in kinds)  # a device array's kind is (dtype, ndim, layout)
    driver_launch = None
    if not getattr(compiled, "debug", True) and not getattr(compiled, "extensions", None):
        try:  # what the direct call uses; another numba-cuda or cuda.core: Numba's launch then
            from cuda.core import LaunchConfig, launch  # noqa: F401 - LaunchConfig: what _config builds
            from numba.cuda._compat import CUDA_CORE_GE_1_0  # noqa: F401

            if callable(compiled._codelibrary.get_cufunc) and hasattr(compiled, "cooperative"):
                driver_launch = launch
        except Exception:  # noqa: BLE001
            pass
    return Remembered(compiled, arrays, driver_launch)


def marshal(compiled: Any, arrays: tuple[bool, ...], args: tuple[Any, ...], stream: Any) -> list[Any]:
    """The kernel parameters Numba's ``_Kernel._prepare_args`` makes for ``args``, device arrays written out here."""
    out: list[Any] = []
    keep: list[Any] = []
    for t, v, is_array in zip(compiled.argument_types, args, arrays, strict=True):
        if is_array:
            out += (0, 0, v.size, v.dtype.itemsize, v.device_ctypes_pointer.value, *v.shape, *v.strides)
        else:
            compiled._prepare_args(t, v, stream, keep, out)
    return out


_CONFIGS: dict[tuple[Any, ...], Any] = {}


def _config(grid: tuple[int, ...], block: tuple[int, ...], cooperative: bool) -> Any:
    """cuda.core's launch configuration (remembered per grid, block and cooperative flag)."""
    key = (grid, block, cooperative)
    config = _CONFIGS.get(key)
    if config is None:
        from cuda.core import LaunchConfig
        from numba.cuda._compat import CUDA_CORE_GE_1_0

        coop = {"is_cooperative": cooperative} if CUDA_CORE_GE_1_0 else {"cooperative_launch": cooperative}
        if len(_CONFIGS) > 256:
            _CONFIGS.clear()
        config = _CONFIGS[key] = LaunchConfig(grid=grid, block=block, shmem_size=0, **coop)
    return config


#: id(stream) -> (stream, its converted form); the stream is held so that its id is not reused
_STREAMS: dict[int, tuple[Any, Any]] = {}


def _core_stream(stream: Any) -> Any:
    """The stream object the compiled kernel's launch takes (Numba's conversion, remembered per stream)."""
    held = _STREAMS.get(id(stream))
    if held is None:
        from numba.cuda.cudadrv.driver import _to_core_stream

        if len(_STREAMS) > 64:
            _STREAMS.clear()
        held = _STREAMS[id(stream)] = (stream, _to_core_stream(stream))
    return held[1]
