"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"

# Per-dtype tolerances for comparisons against independent float64 math.
RTOL = {np.float32: 2e-5, np.float64: 1e-11}
FLOAT_DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())
