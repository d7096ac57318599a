"""The direct CUDA launch (``numba_losses._core.launch``) marshals arguments exactly as Numba does.

Runs without a GPU: Numba's device arrays can be made on the host around a
made-up device pointer (nothing is allocated or read; an empty array would ask
the driver for a context, so it is left to the GPU runs), and Numba's own
``_Kernel._prepare_args`` turns them into kernel parameters the same way as on
a GPU. The check runs in a subprocess with the simulator off (the test suite
itself runs under the simulator on machines without a GPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent(
    """
    import ctypes, functools
    from types import SimpleNamespace
    import numpy as np
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.dispatcher import _Kernel
    from numba.cuda.typing.typeof import Purpose, typeof
    from numba.np.numpy_support import as_dtype
    from numba_losses._core.launch import _kind, marshal

    class Memory:  # a device pointer Numba's arrays can carry; nothing is allocated
        def __init__(self, ptr):
            self.device_ctypes_pointer = ctypes.c_void_p(ptr)

    def array(shape, strides, dtype, ptr=0x7F0000001000):
        return DeviceNDArray(shape, strides, np.dtype(dtype), gpu_data=Memory(ptr))

    args = [
        array((4, 6), (24, 4), np.float32),  # C
        array((4, 6), (8, 32), np.float64),  # F
        array((4, 3), (24, 8), np.float32, 0x7F0000001004),  # strided rows, offset pointer
        array((5, 3), (0, 4), np.float32),  # broadcast
        array((64, 1, 10), (40, 999, 4), np.float16),  # a size-1 axis with any stride
        array((1, 7), (56, 8), np.int64),  # C and F contiguous
        array((), (), np.float64),  # 0-d
        1.5, 3, True, np.float32(0.25), np.int64(7), np.float64(-2.0),
    ]
    types = [typeof(a, Purpose.argument) for a in args]
    kernel = SimpleNamespace(extensions=[])
    kernel._prepare_args = functools.partial(_Kernel._prepare_args, kernel)
    kernel.argument_types = types
    numba_params = []
    for t, v in zip(types, args):
        _Kernel._prepare_args(kernel, t, v, 0, [], numba_params)
    arrays = tuple(isinstance(a, DeviceNDArray) for a in args)
    ours = marshal(kernel, arrays, tuple(args), 0)

    def plain(p):  # ctypes numbers compare by identity: compare their type and value
        return (type(p).__name__, p.value) if isinstance(p, ctypes._SimpleCData) else (type(p).__name__, p)

    assert [plain(p) for p in ours] == [plain(p) for p in numba_params], (ours, numba_params)
    for a, t in zip(args, types):
        if isinstance(a, DeviceNDArray):
            assert _kind(a) == (as_dtype(t.dtype), t.ndim, t.layout), (a.shape, a.strides, t)
    print("ok", len(ours))
    """
)


def test_marshal_matches_numbas_own_argument_rule():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok")


class _ClashingKernel:
    """A kernel whose compilation fails as numba-cuda 0.30 does under NumPy 2.5."""

    def __getitem__(self, config):
        def run(*args):
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")

        return run


class _BrokenKernel:
    def __getitem__(self, config):
        def run(*args):
            raise AttributeError("'NoneType' object has no attribute 'shape'")

        return run


def test_a_numpy_version_clash_is_reported_with_what_to_install():
    pytest.importorskip("numba_cuda")
    from numba_losses._core.launch import numba_launch

    with pytest.raises(RuntimeError, match=r"numba-cuda .* cannot compile CUDA kernels with NumPy .*numpy<2\.5"):
        numba_launch(_ClashingKernel(), 1, 32, 0, ())
    with pytest.raises(AttributeError, match="NoneType"):  # other errors pass through unchanged
        numba_launch(_BrokenKernel(), 1, 32, 0, ())
