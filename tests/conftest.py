"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
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
# CuPy arrays exist only on a real GPU (the simulator has Numba device arrays only).
CUPY_ON_GPU = not SIMULATED and importlib.util.find_spec("cupy") is not None

GOLDEN = Path(__file__).parent / "golden"

# Per-dtype tolerances for comparisons against independent float64 math.
RTOL = {np.float32: 2e-5, np.float64: 1e-11}
FLOAT_DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())
