"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest


def _gpu_present() -> bool:
    """Whether the CUDA driver loads and sees a device (asked without importing Numba)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


# Without a GPU the CUDA tests run in Numba's simulator. This must be decided before
# Numba is imported; an explicit NUMBA_ENABLE_CUDASIM from the environment wins.
GPU = _gpu_present()
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# A parallel kernel's first call runs its serial twin while the parallel one compiles in the
# background; in the suite, a test that reaches for the parallel kernel (large inputs) must run
# it, and no test process should compile serial twins nothing else needs. So the suite (and the
# processes it starts) compiles in the call; tests/test_tiered.py checks the default mode in
# processes of its own, and that serial twins give bit-identical results.
os.environ.setdefault("NUMBA_LOSSES_BACKGROUND_COMPILE", "0")
# CuPy arrays exist only on a real GPU (the simulator has Numba device arrays only).
CUPY_ON_GPU = not SIMULATED and importlib.util.find_spec("cupy") is not None


def _race_free_simulator_shared_arrays() -> None:
    """Make the CUDA simulator's ``cuda.shared.array`` give every thread of a block the same array.

    The simulator runs one Python thread per GPU thread and keys a block's shared arrays by the
    calling line; it looks the key up and creates the array without a lock. Two threads that
    switch between the lookup and the store (likelier under the short GIL switch interval some
    tests set) get different arrays, and a block reduction then reads values no other thread
    wrote: a test failed now and then with the same inputs (SDML's rows kernel, 2 isolated runs
    in 87). This replacement does the lookup and the store under one lock and names the calling
    line from the caller's frame (the same key, without formatting the whole stack).
    """
    import sys
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # an error, or the dynamic buffer: no per-line array
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            arr = self._allocations.get(key)
            if arr is None:
                arr = self._allocations[key] = np.empty(shape, dtype)
        return arr

    kernelapi.FakeCUDAShared.array = array


if SIMULATED:
    _race_free_simulator_shared_arrays()

GOLDEN = Path(__file__).parent / "golden"

# Per-dtype tolerances for comparisons against independent float64 math.
RTOL = {np.float32: 2e-5, np.float64: 1e-11}
FLOAT_DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


@pytest.fixture(autouse=True)
def _rng_per_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each test its own draws from its module's ``RNG``, whatever ran before it.

    A module-level generator is shared by the module's tests, so without this what a test drew
    depended on which tests had run before it in the same worker, which ``pytest-xdist``
    changes from run to run: a failure could neither be relied on nor reproduced alone. The
    module's generator is replaced, for the test's duration, by one seeded from the module's own
    seed and the test's id.
    """
    rng = getattr(request.module, "RNG", None)
    if isinstance(rng, np.random.Generator):
        seed = [rng.bit_generator.seed_seq.entropy, zlib.crc32(request.node.nodeid.encode())]
        monkeypatch.setattr(request.module, "RNG", np.random.default_rng(seed))
