"""The README's asv commands work as written, from a home directory asv has never seen.

The documented line is run word for word, with ``--bench`` added to pick one
small benchmark (one loss, one shape) so that the test takes seconds.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ONE = r"time_forward_backward_out\('L1Loss', \(64, 10\), 'cpu'\)"


def _documented() -> str:
    found = re.search(r"`(cd asv_bench && asv machine --yes && asv run [^`]*)`", (ROOT / "README.md").read_text())
    assert found is not None, "README: the asv command line is missing"
    return found.group(1)


@pytest.mark.asv
def test_readme_install_line_installs_asv():
    setup = re.search(r"## Set up and run\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    extras = re.search(r'pip install -e "\.\[([a-z,]+)\]"', setup.group(1)) if setup else None
    assert extras is not None and "bench" in extras.group(1).split(",")
    assert re.search(r'^bench = \["asv', (ROOT / "pyproject.toml").read_text(), re.M)


@pytest.mark.asv
def test_the_documented_asv_command_runs_one_benchmark(tmp_path):
    if shutil.which("asv") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the bench extra (README's install line); asv is missing")
        pytest.skip('needs the bench extra: pip install -e ".[bench]"')
    command = f"{_documented()} --bench {shlex.quote(ONE)}"
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(ROOT))  # no ~/.asv-machine.json yet
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    bindir = os.path.dirname(sys.executable)  # the asv of this interpreter
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / ".asv-machine.json").is_file()
    rows = [line for line in proc.stdout.splitlines() if "L1Loss" in line and "(64, 10)" in line]
    assert len(rows) == 1 and re.search(r"\d[\d.]*±[\d.]+\s*[μmn]?s", rows[0]), proc.stdout[-3000:]


@pytest.mark.parametrize("threads, flags", [("2", []), ("1", ["--cpu-time"])])
def test_headline_script_prints_every_row(threads, flags):
    """``asv_bench/headline.py --smoke``: every structured row against PyTorch (when installed) and the
    elementwise rows, on tiny shapes; timed by the wall clock, or by the thread's CPU time."""
    pytest.importorskip("torch")
    env = {**os.environ, "NUMBA_NUM_THREADS": threads}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "asv_bench" / "headline.py"), "--smoke", "--spread", *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("CPU time of the calling thread, minimum" in proc.stdout) == bool(flags), proc.stdout[:500]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    for name in ("SoftmaxCE 16x10", "CTC T=6 N=2 C=5 L=2", "SDML 8x4", "SigmoidBCE", "Logistic", "L2"):
        assert name in rows, proc.stdout
    ratios = rows["SoftmaxCE 16x10"].split("|")[4]  # "x PyTorch fwd / fwd+bwd": measured on both sides
    assert all(float(r) > 0 for r in ratios.split("/")), ratios


def test_headline_cpu_time_refuses_more_than_one_thread():
    """The calling thread's CPU time misses the work of other threads: ``--cpu-time`` needs one thread."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "asv_bench" / "headline.py"), "--cpu-time"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "NUMBA_NUM_THREADS=1" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.distributed
def test_dask_benchmark_script_checks_and_times_every_path():
    """``asv_bench/bench_dask.py --smoke``: a LocalCluster of worker processes, the library's values and
    gradients checked against the NumPy reference, every timed path run once."""
    pytest.importorskip("distributed")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "asv_bench" / "bench_dask.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok", proc.stdout


def test_first_use_benchmark_measures_a_cold_first_call():
    """``bench_first_use.py``'s measurement runs as asv runs it (a fresh process with an empty cache)
    and returns seconds; the smallest case keeps it short."""
    sys.path.insert(0, str(ROOT / "asv_bench"))
    try:
        from benchmarks.bench_first_use import FirstUse
    finally:
        sys.path.remove(str(ROOT / "asv_bench"))
    seconds = FirstUse().track_cold_first_call("L2Loss", "small")
    assert 0.0 < seconds < 120.0
    process = FirstUse().track_cold_process("L2Loss", "small")
    assert 0.0 < process < 120.0


def test_torch_training_step_benchmark_builds_and_runs_every_case():
    """``bench_torch_step.py``: every case's step on both sides runs as asv runs it (setup, then the timed step)."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "asv_bench"))
    try:
        from benchmarks.bench_torch_step import TorchTrainingStep
    finally:
        sys.path.remove(str(ROOT / "asv_bench"))
    cases, sides = TorchTrainingStep.params
    assert sides == ["torch", "numba_losses"] and len(cases) == 4
    for case in cases:
        for side in sides:
            bench = TorchTrainingStep()
            bench.setup(case, side)
            bench.time_step(case, side)
