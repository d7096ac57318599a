"""One-shot GPU check: install, run the CUDA tests on real CuPy and PyTorch CUDA arrays, run the GPU
benchmarks, and write one Markdown report.

Usage, from the repository root on a machine with an NVIDIA GPU (about 5 to 8 minutes)::

    python asv_bench/gpu_check.py [--out DIR] [--no-install] [--jobs N]

On a machine without a package index, give ``--no-install`` and make the package importable
first, e.g. ``ln -s ../kernels numba_losses/kernels && export PYTHONPATH=$PWD`` (the source
layout maps ``numba_losses.kernels`` to ``kernels/``). ``--select`` (a pytest ``-k`` expression)
picks the tests that touch a device; the CPU-only tests of the same files run in CI.

And, without a GPU (the test suite does this, so the script cannot rot)::

    python asv_bench/gpu_check.py --smoke --out DIR

Steps, each in its own process with a time limit, each recorded in the report whatever happens:

1. install ``.[test,cuda,cupy,torch]`` (skipped with ``--no-install`` and in ``--smoke``);
2. the environment: GPU model (``nvidia-smi -L``), driver, and the versions of Python, NumPy,
   Numba, numba-cuda, CuPy and PyTorch;
3. the tests: ``tests/test_cuda.py`` and the family tests, which compare the CUDA kernels with
   the CPU ones on CuPy arrays (and PyTorch CUDA tensors) when a GPU is present; ``--smoke`` runs
   ``tests/test_cuda_plan.py`` in Numba's simulator instead;
4. the benchmarks: ``asv_bench/compare.py --device cuda --family all --markdown`` (this library
   against CuPy expressions and PyTorch CUDA: elementwise losses at 2**26 float32 as a share of
   device-to-device copy bandwidth, SoftmaxCE at (8192, 32000), CTC, the pairwise losses, SDML,
   per-call overhead at (64, 10)); ``--smoke``: every timed path once on tiny shapes, simulated;
5. on a GPU, ``asv_bench/gpu_overhead.py``: host time per call and where it goes, and device time
   with the host's launch time hidden (``DIR/gpu_overhead.md``, ``DIR/gpu_profile.txt``).

The report is ``DIR/gpu_report.md`` (default ``DIR``: ``gpu_check_out``); the raw benchmark
results are ``DIR/gpu_results.json``. Exit status 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILY_TESTS = [
    "tests/test_cuda.py",
    "tests/test_buffers.py",
    "tests/test_elementwise.py",
    "tests/test_softmax.py",
    "tests/test_ctc.py",
    "tests/test_pairwise.py",
    "tests/test_sdml.py",
    "tests/test_makeloss.py",
    "tests/test_dlpack.py",
    "tests/test_class_weight.py",
    "tests/test_custom.py",
    "tests/test_readme.py",
    "tests/test_torch_cuda.py",
    "tests/test_jax.py",
]
#: The tests of FAMILY_TESTS that touch a device (the CPU-only ones run in CI; the smoke run of this
#: script itself runs in the simulator, 80 s even on a GPU machine).
DEVICE_TESTS = "(cuda or gpu or device or cupy or torch or jax or readme) and not smoke_mode"
VERSIONS = (
    "import importlib, platform\n"
    "for m in ('numpy', 'numba', 'numba_cuda', 'cupy', 'torch'):\n"
    "    try:\n"
    "        print(f'{m} {importlib.import_module(m).__version__}')\n"
    "    except Exception as e:\n"
    "        print(f'{m}: not available ({type(e).__name__})')\n"
    "from numba import cuda\n"
    "print('numba.cuda.is_available()', cuda.is_available())\n"
)


@dataclass
class Step:
    """One step of the check: its command, outcome and the tail of its output."""

    name: str
    command: list[str]
    returncode: int | None = None
    seconds: float = 0.0
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def run_step(step: Step, env: dict[str, str], timeout: int) -> Step:
    """Run ``step.command`` from the repository root; a time-out counts as a failure."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            step.command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        step.returncode, step.output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        step.returncode = 124
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else (p or "") for p in (exc.stdout, exc.stderr)]
        step.output = "".join(parts) + f"\ntimed out after {timeout} s"
    except OSError as exc:  # the command does not exist (no nvidia-smi)
        step.returncode, step.output = 127, str(exc)
    step.seconds = time.perf_counter() - start
    return step


def plan(args: argparse.Namespace, out: Path) -> list[tuple[Step, int]]:
    """The steps and their time limits (seconds) for this mode."""
    py = sys.executable
    steps: list[tuple[Step, int]] = []
    if not args.smoke and not args.no_install:
        steps.append((Step("install", [py, "-m", "pip", "install", "-q", "-e", ".[test,cuda,cupy,torch]"]), 300))
    if shutil.which("nvidia-smi") and not args.smoke:
        steps.append((Step("gpu", ["nvidia-smi", "-L"]), 30))
    steps.append((Step("versions", [py, "-c", VERSIONS]), 120))
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra"]
    if args.smoke:
        steps.append((Step("tests", [*pytest, "-p", "no:xdist", "tests/test_cuda_plan.py"]), 600))
    else:
        workers = ["-n", str(args.jobs), "--dist", "loadgroup", "--durations=10", "--tb=short", "-k", args.select]
        if importlib.util.find_spec("pytest_timeout") is not None:  # one hung test must not eat the step
            workers += ["--timeout", "90"]
        steps.append((Step("tests", [*pytest, *workers, *FAMILY_TESTS]), args.test_timeout))
    bench = [py, "asv_bench/compare.py", "--device", "cuda", "--family", "all"]
    if args.smoke:
        steps.append((Step("benchmarks", [*bench, "--smoke"]), 600))
    else:
        steps.append(
            (Step("benchmarks", [*bench, "--markdown", "--json", str(out / "gpu_results.json")]), args.bench_timeout)
        )
        overhead = [py, "asv_bench/gpu_overhead.py", "--out", str(out)]
        steps.append((Step("overhead", overhead), 180))
    return steps


def _tail(text: str, lines: int) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


def report(steps: list[Step], smoke: bool) -> str:
    """The Markdown report: a summary table, then each step's command and output tail."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "smoke (Numba's CUDA simulator, tiny shapes)" if smoke else "GPU"
    parts = [
        "# numba_losses GPU check",
        "",
        f"{stamp}, {platform.node()}, Python {platform.python_version()}, mode: {mode}.",
        "",
        "| step | result | seconds |",
        "|---|---|---:|",
    ]
    parts += [f"| {s.name} | {'passed' if s.passed else f'FAILED ({s.returncode})'} | {s.seconds:.1f} |" for s in steps]
    for s in steps:
        keep = 200 if s.name in ("benchmarks", "overhead") else 40
        shown = [("<script>" if i and s.command[i - 1] == "-c" else a) for i, a in enumerate(s.command)]
        parts += ["", f"## {s.name}", "", f"`{' '.join(shown)}`", "", "```", _tail(s.output, keep), "```"]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="report directory")
    parser.add_argument("--smoke", action="store_true", help="no GPU: simulator, tiny shapes, no install")
    parser.add_argument("--no-install", action="store_true", help="skip the pip install step")
    parser.add_argument("--jobs", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)), help="test workers")
    parser.add_argument(
        "--select", default=DEVICE_TESTS, help=f"pytest -k expression of the tests to run (default {DEVICE_TESTS!r})"
    )
    parser.add_argument("--test-timeout", type=int, default=480, help="seconds for the test step (default 480)")
    parser.add_argument("--bench-timeout", type=int, default=480, help="seconds for the benchmarks (default 480)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.smoke:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    # JAX takes 75% of the GPU's memory at its first use unless told not to: the test workers share one GPU
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    steps = []
    for step, timeout in plan(args, out):
        steps.append(run_step(step, env, timeout))
        print(f"{step.name}: {'passed' if step.passed else 'FAILED'} in {step.seconds:.1f} s", flush=True)
        (out / f"{step.name}.log").write_text(step.output)
        (out / "gpu_report.md").write_text(report(steps, args.smoke))  # kept current: a killed run leaves one
    print(f"report: {out / 'gpu_report.md'}")
    return 0 if all(s.passed for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
