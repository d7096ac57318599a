"""``numba_losses.precompile`` and ``python -m numba_losses precompile``: a warmed cache compiles nothing later.

Each process runs with its own empty ``NUMBA_CACHE_DIR``; "compiled nothing" is
read from Numba's ``numba:compile`` event (raised for a real compilation, never
for a load from the on-disk cache), not from timings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numba_losses as nl
from numba_losses.precompile import _large_shape, _optional_inputs, describe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Counts every compilation in the process (kernels and the helpers they call) while
# the losses run the way precompile runs them, plus a plain call as a user writes it.
COUNT_COMPILES = """
    import numpy as np
    from numba.core import event
    import numba_losses as nl
    from numba_losses.precompile import warm

    class Count(event.Listener):
        n = 0
        def on_start(self, ev):
            Count.n += 1
        def on_end(self, ev):
            pass

    event.register("numba:compile", Count())
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    nl.L2Loss().forward_backward(x, np.zeros_like(x))
    {extra}
    print("compiled", Count.n)
"""


def _python(code: str, cache: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    env.pop("NUMBA_LOSSES_CACHE", None)
    cmd = [sys.executable, *(args or ("-c", textwrap.dedent(code)))]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert res.returncode == 0, res.stderr
    return res


def _compiles(res: subprocess.CompletedProcess) -> int:
    return int(res.stdout.split("compiled")[-1])


def test_precompile_in_two_processes_then_a_fresh_process_compiles_nothing(tmp_path):
    cache = str(tmp_path / "cache")
    done = _python(
        """
        import numba_losses as nl
        for c in nl.precompile([nl.L2Loss, nl.HingeLoss()], jobs=2):
            print(c.loss, c.dtype, c.kernels)
        """,
        cache,
    )
    rows = sorted(line.split() for line in done.stdout.splitlines())
    # serial and parallel x forward and forward+backward x with and without an elementwise weight,
    # and the same for 1-D inputs (one element per row) without one
    assert rows == [["HingeLoss", "float32", "12"], ["L2Loss", "float32", "12"]]
    assert "[2/2]" in done.stderr and "precompile: 24 kernels compiled for 2 tasks" in done.stderr
    assert any(name.endswith(".nbi") for _, _, files in os.walk(cache) for name in files)

    warm = "print(warm(nl.L2Loss()), warm(nl.HingeLoss()), end=' ')"
    later = _python(COUNT_COMPILES.format(extra=warm), cache)
    assert later.stdout.split() == ["0", "0", "compiled", "0"]
    # the control: the same script with an empty cache does compile
    cold = _python(COUNT_COMPILES.format(extra=""), str(tmp_path / "empty"))
    assert _compiles(cold) > 0


def test_the_command_line_warms_the_named_losses(tmp_path):
    cache = str(tmp_path / "cache")
    res = _python("", cache, "-m", "numba_losses", "precompile", "--jobs", "1", "--loss", "L1Loss")
    assert "[1/1] L1Loss float32 12 kernels compiled" in res.stderr
    calls = "Count.n = 0; nl.L1Loss()(x, x); nl.L1Loss().backward(x, 2 * x, sample_weight=x); nl.L1Loss()(x[0], x[1])"
    assert _compiles(_python(COUNT_COMPILES.format(extra=calls), cache)) == 0


def test_the_command_line_refuses_bad_arguments():
    for bad in (["--jobs", "0"], ["--loss", "NoSuchLoss"], ["--dtype", "int8"]):
        res = subprocess.run(
            [sys.executable, "-m", "numba_losses", "precompile", *bad], capture_output=True, text=True, cwd=ROOT
        )
        assert res.returncode == 2, bad
        assert bad[0] in res.stderr


def test_precompile_refuses_what_it_cannot_cache():
    mine = nl.elementwise_loss(lambda x, y: x - y, lambda x, y: 1.0)
    with pytest.raises(TypeError, match="no sample inputs"):
        nl.precompile([mine()], progress=False)
    with pytest.raises(TypeError, match="losses"):
        nl.precompile(["L2Loss"], progress=False)
    with pytest.raises(ValueError, match="jobs"):
        nl.precompile([nl.L2Loss], jobs=0, progress=False)


def test_variants_and_names():
    x = np.ones((4, 6), np.float32)
    kinds = [sorted(e) for e in _optional_inputs(nl.SigmoidBCELoss(), (x, x))]
    assert kinds == [[], ["sample_weight"], ["sample_weight"], ["pos_weight"]]
    assert [sorted(e) for e in _optional_inputs(nl.TripletLoss(), (x, x, x))] == [[]]
    rows, cols = _large_shape()
    from numba_losses.kernels._options import SERIAL_BELOW

    assert rows * cols >= SERIAL_BELOW and 4 * 6 < SERIAL_BELOW
    assert describe(nl.SoftmaxCELoss(sparse_label=False)) == "SoftmaxCrossEntropyLoss(sparse_label=False)"
    assert describe(nl.HuberLoss()) == "HuberLoss"
