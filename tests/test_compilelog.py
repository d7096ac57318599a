"""A first-use compilation logs one INFO line on the ``numba_losses`` logger; a load from the cache logs none."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np

import numba_losses as nl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compiling(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "numba_losses" and r.levelno == logging.INFO]


def test_one_line_per_new_variant_in_this_process(caplog):
    # A user-made loss is compiled per process (never cached on disk): a real first use every time.
    def cube_value(x, y):
        return (x - y) ** 3

    def cube_grad(x, y):
        return 3.0 * (x - y) ** 2

    Cube = nl.elementwise_loss(cube_value, cube_grad, name="Cube")
    x = np.ones((3, 4), np.float32)
    caplog.set_level(logging.INFO, logger="numba_losses")
    Cube()(x, x)
    assert _compiling(caplog) == [
        "compiling Cube float32 forward, small inputs (first use in this process; not cached)"
    ]
    caplog.clear()
    Cube()(x, 2 * x)  # the same variant: nothing
    assert _compiling(caplog) == []
    Cube().backward(x, x)  # another variant, one line although it may compile several functions
    assert _compiling(caplog) == [
        "compiling Cube float32 backward, small inputs (first use in this process; not cached)"
    ]


SCRIPT = """
    import logging, sys
    import numpy as np
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    import numba_losses as nl
    x = np.ones((64, 1024), np.float32)
    nl.L2Loss().forward_backward(x, x)
    nl.L2Loss().forward_backward(x, x)
    print("done")
"""


def test_cached_afterwards_and_silent_when_loaded(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_LOSSES_CACHE", None)

    def run() -> list[str]:
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, text=True, env=env, cwd=ROOT
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()

    assert run() == [
        "numba_losses INFO compiling L2Loss float32 forward+backward (first use; cached afterwards)",
        "done",
    ]
    assert run() == ["done"]  # loaded from the on-disk cache: no line
