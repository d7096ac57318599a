"""Threads and fork: concurrent callers get exact results, and a fork after a parallel call works.

The package depends on TBB, which Numba picks first for its parallel kernels:
TBB is safe to fork after use and safe to call from several threads at once.
(With GNU OpenMP, a child forked after a parallel call is terminated by Numba at
its next parallel call; workqueue refuses concurrent callers.) Each scenario
runs in a fresh subprocess with a timeout, so a hang or a crash fails the test
instead of stopping the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numba_losses as nl

TIMEOUT = 240  # seconds: first-use compiles of the parallel kernels included

_SETUP = """
import os, sys, numpy as np, numba, numba_losses as nl
rng = np.random.default_rng(0)
x = rng.random((1024, 1024), dtype=np.float32)   # large enough for the parallel kernels
y = rng.random((1024, 1024), dtype=np.float32)
logits = rng.standard_normal((2048, 512), dtype=np.float32)
labels = rng.integers(0, 512, 2048).astype(np.float32)

def work():
    out, (g,) = nl.L2Loss().forward_backward(x, y)
    ce, (gc,) = nl.SoftmaxCELoss().forward_backward(logits, labels)
    return float(out.sum()), float(g.sum()), float(ce.sum()), float(gc.sum())
"""


def _run(body: str) -> str:
    script = _SETUP + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["NUMBA_NUM_THREADS"] = "2"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_parallel_kernels_run_on_tbb():
    out = _run("work(); print(numba.threading_layer())")
    assert out.strip().splitlines()[-1] == "tbb"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_after_a_parallel_call_computes_the_same_results():
    out = _run(
        """
        parent = work()
        pid = os.fork()
        if pid == 0:  # the child: its first call is a parallel one
            os._exit(0 if work() == parent else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    assert out.strip().splitlines()[-1] == "child 0"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_fork_started_process_pool_after_use_works():
    out = _run(
        """
        import multiprocessing as mp
        parent = work()
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.starmap(work, [()] * 4)
        print(all(r == parent for r in results))
        """
    )
    assert out.strip().splitlines()[-1] == "True"


def test_eight_threads_calling_at_once_get_exact_results():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    x, y = rng.random((512, 700), dtype=np.float32), rng.random((512, 700), dtype=np.float32)
    logits = rng.standard_normal((1024, 300))
    labels = rng.integers(0, 300, 1024)
    l2, ce = nl.L2Loss(), nl.SoftmaxCELoss()
    want = (l2.forward_backward(x, y), ce.forward_backward(logits, labels))

    def call(_):
        return [(l2.forward_backward(x, y), ce.forward_backward(logits, labels)) for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(call, range(8)) for r in batch]
    assert len(results) == 40
    for got in results:
        for (o, (g,)), (wo, (wg,)) in zip(got, want, strict=True):
            np.testing.assert_array_equal(o, wo)  # bitwise: results never depend on the schedule
            np.testing.assert_array_equal(g, wg)
