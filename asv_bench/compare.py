"""Side-by-side timings of numba_losses, NumPy and PyTorch CPU on the elementwise losses.

Usage::

    python asv_bench/compare.py [--quick] [--markdown]

One run prints:

1. the environment and the machine's practical bandwidth, a 2-thread numba
   triad ``o = a + 2 b`` on (4096, 4096) float32 (3 x 64 MiB moved);
2. for every loss at (4096, 4096) float32: this library's forward+backward
   into reused ``out`` / ``grad_out`` buffers, without buffers, and forward
   only; the NumPy version of ``benchmarks/common.py``; PyTorch forward and
   autograd backward (head of ones), plain and with ``THP_MEM_ALLOC_ENABLE=1``.
   Effective GB/s count pred and label read plus the per-row output and the
   gradient written (12 bytes per element fused, 8 forward only); speed-ups
   compare the buffered call, the way a training loop uses the library;
3. the per-call overhead at (64, 10) float32 (median of many calls);
4. the cold-compile and cached first-call time of each loss's
   forward_backward (serial and parallel kernel variants), each in a fresh
   interpreter with ``NUMBA_CACHE_DIR`` pointed at a new temporary directory
   (cold), then at the same one (cached).

Times are the minimum of N calls after one warm-up call (``time.perf_counter``).
PyTorch runs in child processes of this script (``--torch-worker``): its
allocator reads ``THP_MEM_ALLOC_ENABLE`` once at start-up, and keeping torch
out of this process keeps its OpenMP runtime away from numba's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numba  # noqa: E402
from benchmarks.common import (  # noqa: E402
    CASES,
    LARGE,
    SMALL,
    best_ms,
    make_inputs,
    torch_forward_backward,
    traffic_bytes,
    triad,
)

try:
    from numba_losses.kernels._options import SERIAL_BELOW
except ImportError:  # the knob moved: any shape well above the default threshold will do
    SERIAL_BELOW = 32768

# a shape that takes the parallel kernel variant and costs nothing to compute
PARALLEL_SHAPE = (256, max(256, -(-2 * SERIAL_BELOW // 256)))

SETTINGS = {
    # repeats at (4096, 4096), triad repeats, calls at (64, 10), losses timed for compilation
    "full": {"repeats": 10, "triad": 30, "calls": 20000, "compile": list(CASES)},
    "quick": {"repeats": 3, "triad": 10, "calls": 3000, "compile": ["L2Loss", "SigmoidBCELoss", "KLDivLoss"]},
}


# -- timing ----------------------------------------------------------------------
def median_us(fn: Callable[[], Any], calls: int, warmup: int = 200) -> float:
    """Median wall time of ``calls`` back-to-back calls of ``fn``, in microseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


# -- the measurements ------------------------------------------------------------
def measure_triad(repeats: int) -> dict[str, float]:
    """Triad bandwidth in GB/s with 2 numba threads (or all there are, if fewer) and with 1."""
    rng = np.random.default_rng(0)
    a, b = rng.random(LARGE, dtype=np.float32), rng.random(LARGE, dtype=np.float32)
    o = np.empty_like(a)
    nbytes = 3 * a.nbytes
    default = numba.get_num_threads()
    res = {}
    try:
        for threads in (min(2, numba.config.NUMBA_NUM_THREADS), 1):
            numba.set_num_threads(threads)
            ms = best_ms(lambda: triad(a, b, o), repeats)
            res[f"ms_{threads}"] = ms
            res[f"gbps_{threads}"] = nbytes / ms / 1e6
    finally:
        numba.set_num_threads(default)
    res["threads"] = min(2, numba.config.NUMBA_NUM_THREADS)
    return res


def measure(name: str, shape: tuple[int, int], timer: Callable[..., float], n: int) -> dict[str, float]:
    """Times of the library's three entry points and of NumPy for loss ``name`` at ``shape``.

    ``timer(fn, n)`` is :func:`best_ms` for the large shape, :func:`median_us` for the small one.
    """
    case = CASES[name]
    loss = case.make_loss()
    x, y = make_inputs(name, shape)
    out, (grad,) = loss.forward_backward(x, y)  # compiles, or loads the kernel cache
    loss(x, y)
    return {
        "fb_buf": timer(lambda: loss.forward_backward(x, y, out=out, grad_out=grad), n),
        "fb": timer(lambda: loss.forward_backward(x, y), n),
        "fwd": timer(lambda: loss(x, y), n),
        "numpy_fb": timer(lambda: case.numpy(x, y, True), n),
    }


def torch_worker(repeats: int, calls: int) -> dict[str, Any]:
    """PyTorch timings of every loss (run in a child process); ``{"error": ...}`` without torch."""
    try:
        import torch
    except ImportError as exc:
        return {"error": f"import torch failed: {exc}"}
    large, small = {}, {}
    for name, case in CASES.items():
        for shape, store in ((LARGE, large), (SMALL, small)):
            x, y = make_inputs(name, shape)
            xt = torch.from_numpy(x).requires_grad_()
            yt = torch.from_numpy(y)
            step = _torch_step(case.torch_forward, xt, yt)
            store[name] = best_ms(step, repeats) if shape == LARGE else median_us(step, calls)
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "thp": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
        "large_ms": large,
        "small_us": small,
    }


def _torch_step(forward: Callable[[Any, Any], Any], x: Any, y: Any) -> Callable[[], Any]:
    return lambda: torch_forward_backward(forward, x, y)


def run_torch(repeats: int, calls: int, thp: bool) -> dict[str, Any]:
    """Run :func:`torch_worker` in a child interpreter, with or without ``THP_MEM_ALLOC_ENABLE=1``."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", str(repeats), str(calls)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"torch worker exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


_COMPILE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {here!r})
from benchmarks.common import CASES, make_inputs
t1 = time.perf_counter()
loss = CASES[{name!r}].make_loss()
x, y = make_inputs({name!r}, {shape!r})
t2 = time.perf_counter()
loss.forward_backward(x, y)
print(json.dumps({{"import": t1 - t0, "first": time.perf_counter() - t2}}))
"""

VARIANTS = {"serial": SMALL, "parallel": PARALLEL_SHAPE}


def measure_compile(name: str) -> dict[str, Any]:
    """First-call seconds of ``forward_backward`` in fresh interpreters, cold and then from the cache.

    For each kernel variant (serial at ``SMALL``, parallel at ``PARALLEL_SHAPE``)
    one child runs with an empty ``NUMBA_CACHE_DIR`` (cold) and a second one
    with the same directory (cached). Each variant gets its own directory, so
    one variant's cache entry can never stand in for the other's.

    Returns
    -------
    dict
        ``{variant: {"cold": {...}, "cached": {...}}}`` with ``import`` and
        ``first`` seconds per child, or ``{"error": stderr}``.
    """
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_LOSSES_CACHE"}
    res: dict[str, Any] = {}
    for variant, shape in VARIANTS.items():
        code = _COMPILE_CHILD.format(here=str(HERE), name=name, shape=shape)
        res[variant] = {}
        with tempfile.TemporaryDirectory(prefix="nl-cache-") as cache_dir:
            env["NUMBA_CACHE_DIR"] = cache_dir
            for run in ("cold", "cached"):
                proc = subprocess.run(
                    [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
                )
                if proc.returncode != 0:
                    return {"error": proc.stderr.strip()[-500:]}
                res[variant][run] = json.loads(proc.stdout.strip().splitlines()[-1])
    return res


# -- output ------------------------------------------------------------------------
def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A right-aligned plain-text table, or a Markdown one."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _num(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def _ratio(num: float | None, den: float) -> str:
    return "n/a" if num is None else f"{num / den:.1f}x"


def environment_lines(torch_info: dict[str, Any]) -> list[str]:
    """Versions, threads and machine facts worth printing with timings."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    lines = [
        f"python {platform.python_version()}  numpy {np.__version__}  numba {numba.__version__}  "
        f"llvmlite {__import__('llvmlite').__version__}  numba_losses {__import__('numba_losses').__version__}",
        f"numba threads {numba.get_num_threads()} (NUMBA_NUM_THREADS {numba.config.NUMBA_NUM_THREADS}), "
        f"threading layer {_threading_layer()}; cpus {os.cpu_count()}; {platform.processor() or platform.machine()}",
        f"transparent hugepages: {thp.read_text().strip() if thp.exists() else 'unknown'}",
    ]
    if "error" in torch_info:
        lines.append(f"torch: skipped ({torch_info['error']})")
    else:
        lines.append(f"torch {torch_info['version']}, {torch_info['threads']} intra-op threads (child processes)")
    return lines


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run every measurement and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; compile times for 3 losses only")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--torch-worker", nargs=2, type=int, metavar=("REPEATS", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        print(json.dumps(torch_worker(*args.torch_worker)))
        return

    cfg = SETTINGS["quick" if args.quick else "full"]
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    tri = measure_triad(cfg["triad"])
    lib = {name: measure(name, LARGE, best_ms, cfg["repeats"]) for name in CASES}
    small = {name: measure(name, SMALL, median_us, cfg["calls"]) for name in CASES}
    torch_runs = {thp: run_torch(cfg["repeats"], cfg["calls"] // 4, thp) for thp in (False, True)}
    compiled = {name: measure_compile(name) for name in cfg["compile"]}
    load1 = os.getloadavg()[0]

    print("\n".join(environment_lines(torch_runs[False])))
    print(f"load average (1 min) {load0:.2f} at start, {load1:.2f} at end: the machine is shared, times are noisy")
    print(
        f"\ntriad o = a + 2*b, (4096, 4096) float32, numba: {tri['threads']} threads {tri['ms_2']:.1f} ms = "
        f"{tri['gbps_2']:.1f} GB/s; 1 thread {tri['ms_1']:.1f} ms = {tri['gbps_1']:.1f} GB/s"
    )
    triad_gbps = tri["gbps_2"]

    torch_ms = [r.get("large_ms", {}) for r in (torch_runs[False], torch_runs[True])]
    headers = [
        "loss",
        "fb+buf ms",
        "fb ms",
        "fwd ms",
        "NumPy fb ms",
        "torch fb ms",
        "torch THP ms",
        "fb+buf GB/s",
        "% triad",
        "fwd GB/s",
        "x NumPy",
        "x torch",
        "x torch THP",
    ]
    rows = []
    for name, r in lib.items():
        per_row = CASES[name].per_row
        gbps = traffic_bytes(LARGE, per_row=per_row) / r["fb_buf"] / 1e6
        fwd_gbps = traffic_bytes(LARGE, per_row=per_row, grad=False) / r["fwd"] / 1e6
        t_plain, t_thp = (t.get(name) for t in torch_ms)
        rows.append(
            [
                name,
                _num(r["fb_buf"]),
                _num(r["fb"]),
                _num(r["fwd"]),
                _num(r["numpy_fb"]),
                _num(t_plain),
                _num(t_thp),
                _num(gbps),
                _num(100 * gbps / triad_gbps, ".0f"),
                _num(fwd_gbps),
                _ratio(r["numpy_fb"], r["fb_buf"]),
                _ratio(t_plain, r["fb_buf"]),
                _ratio(t_thp, r["fb_buf"]),
            ]
        )
    print(
        f"\n(4096, 4096) float32, min of {cfg['repeats']} calls; fb = forward_backward, fwd = forward only; "
        "x = speed-up of fb+buf"
    )
    print(render(headers, rows, args.markdown))

    torch_us = [r.get("small_us", {}) for r in (torch_runs[False], torch_runs[True])]
    headers = ["loss", "fb+buf us", "fb us", "fwd us", "NumPy fb us", "torch fb us", "torch THP us"]
    rows = [
        [
            name,
            *(_num(r[k], ".2f") for k in ("fb_buf", "fb", "fwd", "numpy_fb")),
            *(_num(t.get(name), ".2f") for t in torch_us),
        ]
        for name, r in small.items()
    ]
    print(
        f"\nper-call overhead at (64, 10) float32, median of {cfg['calls']} calls "
        f"(torch: {cfg['calls'] // 4}); L2Loss forward_backward with buffers: {small['L2Loss']['fb_buf']:.2f} us"
    )
    print(render(headers, rows, args.markdown))

    headers = ["loss", "cold serial s", "cold parallel s", "cached serial ms", "cached parallel ms", "import s"]
    rows = []
    for name, c in compiled.items():
        if "error" in c:
            rows.append([name, "error", "", "", "", ""])
            print(f"{name}: compile child failed: {c['error']}", file=sys.stderr)
            continue
        ser, par = c["serial"], c["parallel"]
        rows.append(
            [
                name,
                _num(ser["cold"]["first"], ".2f"),
                _num(par["cold"]["first"], ".2f"),
                _num(1e3 * ser["cached"]["first"], ".1f"),
                _num(1e3 * par["cached"]["first"], ".1f"),
                _num(ser["cached"]["import"], ".2f"),
            ]
        )
    print(
        f"\nfirst forward_backward call in a fresh process (seconds / ms): serial kernel at {SMALL}, parallel "
        f"kernel at {PARALLEL_SHAPE}, each with its own NUMBA_CACHE_DIR: cold = empty, cached = the same "
        "directory again; import = numba_losses import in the cached child"
    )
    print(render(headers, rows, args.markdown))
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
