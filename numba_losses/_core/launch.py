"""Kernel launches with less host time per call than ``kernel[grid, block, stream](*args)``.

Numba's launch path types every argument (a Numba type built afresh for each
new device-array view), resolves the overload, checks launch-configuration
specialisations and, for grids under 128 blocks, builds and filters a
``NumbaPerformanceWarning``. This library's small grids are chosen on purpose
and its kernels are not launch-configuration sensitive, so after the first
launch of a kernel with a given kind of arguments (through Numba, which
compiles or loads the kernel), :func:`launch` remembers the compiled kernel for
that kind and calls its own launch directly: the same argument marshalling,
the same driver call, without the dispatch around it.

The kind of an argument is what Numba's typing reads: for a device array its
dtype, rank and layout ('C', 'F' or 'A', as Numba derives it); for a number
its Python or NumPy type. Arguments of any other kind always take Numba's path.
Under the simulator every launch takes Numba's path.
"""

from __future__ import annotations

import numbers
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


def launch(kernel: Any, griddim: Any, blockdim: Any, stream: Any, *args: Any) -> None:
    """``kernel[griddim, blockdim, stream](*args)``, through the remembered compiled kernel when there is one."""
    from numba_losses.kernels.cuda import SIMULATOR

    if SIMULATOR:
        kernel[griddim, blockdim, stream](*args)
        return
    kinds = tuple(_kind(a) for a in args)
    key = (kernel, kinds)
    compiled = _COMPILED.get(key, False)
    if compiled is False:
        kernel[griddim, blockdim, stream](*args)  # compiles or loads the kernel, launches it
        _COMPILED[key] = _remember(kernel, args) if None not in kinds else None
        return
    if compiled is None:
        kernel[griddim, blockdim, stream](*args)
        return
    compiled.launch(args, _dims(griddim), _dims(blockdim), _core_stream(stream), 0)


def _remember(kernel: Any, args: tuple[Any, ...]) -> Any:
    """The compiled kernel Numba chose for ``args``, or None when the direct call would not be the same."""
    if getattr(kernel, "_launch_config_sensitive", False) or getattr(kernel, "specialized", False):
        return None
    argtypes = tuple(kernel.typeof_pyval(a) for a in args)
    compiled = kernel.overloads.get(argtypes)
    if compiled is None or getattr(compiled, "launch_config_sensitive", False) or not hasattr(compiled, "launch"):
        return None
    return compiled


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
