"""Every CUDA kernel compiles to PTX for sm_80 and sm_90, without a GPU.

``tests/ptx/catalogue.py`` compiles the whole catalogue (every loss term's row
kernel with the shuffle and the shared-memory group sum, float32, float64 and
float16 inputs, plus every helper kernel) with real NVVM from the ``cuda``
extra. It runs in a subprocess with the simulator off, because this session
may be running the CUDA tests in the simulator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# One xdist worker builds the catalogue once for both tests.
pytestmark = pytest.mark.xdist_group("ptx")


@pytest.fixture(scope="module")
def report():
    if importlib.util.find_spec("numba.cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install -e '.[cuda]')")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ptx.catalogue"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200
    )
    assert proc.stdout.strip(), f"no report; stderr:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def test_every_cuda_kernel_compiles_to_ptx(report):
    failures = "\n".join(f"{f['job']}: {f.get('error') or f.get('checks')}" for f in report["failures"])
    assert not report["failures"], f"{len(report['failures'])} of {report['total']} kernels failed:\n{failures}"
    print(f"{report['compiled']} CUDA kernels compiled to PTX in {report['seconds']:.0f} s")


def test_catalogue_covers_every_term_path_and_target(report):
    from numba_losses.kernels.registry import ELEMENTWISE
    from tests.ptx.catalogue import extra_modules

    # per term (and the weighting's "computed" pair): 2 targets x 3 dtype paths x 2 reductions,
    # plus the forward-only kernel; a user-made term on 2 targets; 8 helper kernels x 2 targets
    # x 3 dtype paths; plus the structured losses' kernels listed by the other modules of tests/ptx/
    extra = sum(len(module.jobs()) for module in extra_modules())
    assert report["total"] == (len(ELEMENTWISE) + 1) * (2 * 3 * 2 + 1) + 2 + 8 * 2 * 3 + extra
