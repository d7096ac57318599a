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
    from numba_losses.kernels.cpu import tiered
    x = np.ones((64, 1024), np.float32)
    nl.L2Loss().forward_backward(x, x)
    nl.L2Loss().forward_backward(x, x)
    tiered.wait()
    print("done")
"""


def _run_script(tmp_path, script: str = SCRIPT, **env_vars) -> list[str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **env_vars)
    env.pop("NUMBA_LOSSES_CACHE", None)
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_cached_afterwards_and_silent_when_loaded(tmp_path):
    # A large input's first call: the serial twin compiles in the call, the parallel kernel in the background.
    assert _run_script(tmp_path, NUMBA_LOSSES_BACKGROUND_COMPILE="1") == [
        "numba_losses INFO compiling L2Loss float32 forward+backward, serial kernel now, parallel kernel in the "
        "background (first use; cached afterwards)",
        "done",
    ]
    loaded = _run_script(tmp_path, NUMBA_LOSSES_BACKGROUND_COMPILE="1")
    assert loaded == ["done"]  # loaded from the on-disk cache: no line


def test_one_line_when_background_compiles_are_off(tmp_path):
    assert _run_script(tmp_path, NUMBA_LOSSES_BACKGROUND_COMPILE="0") == [
        "numba_losses INFO compiling L2Loss float32 forward+backward (first use; cached afterwards)",
        "done",
    ]
    assert _run_script(tmp_path, NUMBA_LOSSES_BACKGROUND_COMPILE="0") == ["done"]


def test_the_background_compile_logs_when_the_call_compiled_nothing(tmp_path):
    # Small inputs first compile the serial kernel; a large input's first call then only
    # starts the parallel kernel's compile, which logs the line.
    script = SCRIPT.replace("x = np.ones((64, 1024), np.float32)", "x = np.ones((64, 1024), np.float32)\n"
                            "    nl.L2Loss().forward_backward(x[:4], x[:4])")  # fmt: skip
    assert _run_script(tmp_path, script, NUMBA_LOSSES_BACKGROUND_COMPILE="1") == [
        "numba_losses INFO compiling L2Loss float32 forward+backward, small inputs (first use; cached afterwards)",
        "numba_losses INFO compiling L2Loss float32 forward+backward, parallel kernel, in the background (first use; "
        "cached afterwards)",
        "done",
    ]
