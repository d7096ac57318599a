"""First use: a loss's first ``forward_backward`` in a fresh process with an empty kernel cache.

This is what a newcomer waits for before the first result: Numba compiles the
kernel variant the call needs (and its own helpers). Each measurement starts a
new Python process with ``NUMBA_CACHE_DIR`` pointing at an empty temporary
directory and ``NUMBA_LOSSES_CACHE=0``, builds float32 inputs, and times the
first call only (imports and input building excluded). Small inputs run the
serial kernels. Large inputs run the parallel kernels, but a parallel kernel's
first call in a process runs its serial twin while the parallel kernel compiles
in a background thread, which the process waits for at exit: so the whole
process's time (start to exit, imports included) is tracked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

# Runs in the child process: argv = [loss name, "small" | "large"]; prints the seconds.
_FIRST_CALL = """
import sys, time
import numpy as np
import numba_losses as nl

name, size = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
big = size == "large"
if name == "CTCLoss":
    n, t, c, length = (32, 200, 40, 50) if big else (4, 20, 10, 5)
    args = (rng.standard_normal((n, t, c)).astype(np.float32), rng.integers(1, c, (n, length)).astype(np.float32))
    loss = nl.CTCLoss(layout="NTC")
else:
    shape = (4096, 256) if big else (64, 10)
    x = rng.standard_normal(shape).astype(np.float32)
    if name == "SoftmaxCELoss":
        y = rng.integers(0, shape[1], shape[0]).astype(np.float32)
    elif name == "SigmoidBinaryCrossEntropyLoss":
        y = (rng.random(shape) < 0.5).astype(np.float32)
    else:
        y = rng.standard_normal(shape).astype(np.float32)
    args, loss = (x, y), getattr(nl, name)()
t0 = time.perf_counter()
loss.forward_backward(*args)
print(time.perf_counter() - t0)
"""


def cold_seconds(loss: str, size: str) -> tuple[float, float]:
    """``(first call, whole process)`` seconds of ``loss``'s first ``forward_backward`` on ``size`` inputs in a
    fresh process with an empty cache (the library's default settings)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_LOSSES_CACHE="0")
        for name in ("NUMBA_ENABLE_CUDASIM", "NUMBA_LOSSES_BACKGROUND_COMPILE"):
            env.pop(name, None)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _FIRST_CALL, loss, size], env=env, capture_output=True, text=True, timeout=600
        )
        process = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"first call of {loss} ({size}) failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.split()[-1]), process


def cold_first_call_seconds(loss: str, size: str) -> float:
    """Seconds of ``loss``'s first ``forward_backward`` on ``size`` inputs in a fresh process, empty cache."""
    return cold_seconds(loss, size)[0]


class FirstUse:
    """Cold first call per loss and input size (seconds; lower is better)."""

    params = (["L2Loss", "SigmoidBinaryCrossEntropyLoss", "SoftmaxCELoss", "CTCLoss"], ["small", "large"])
    param_names = ["loss", "size"]
    timeout = 900

    def track_cold_first_call(self, loss: str, size: str) -> float:
        return cold_first_call_seconds(loss, size)

    track_cold_first_call.unit = "seconds"

    def track_cold_process(self, loss: str, size: str) -> float:
        return cold_seconds(loss, size)[1]

    track_cold_process.unit = "seconds"
