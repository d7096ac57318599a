"""The measurements and tables of ``asv_bench/compare.py``, one pair of functions per loss family.

``CPU[family](opts)`` and ``CUDA[family](opts)`` run one family's measurements
and return a :class:`Section` (its printed tables, and raw results for
``--json``). ``opts`` is ``compare.py``'s parsed arguments (``quick``,
``smoke``, ``markdown``, ``repeats``, ``rounds``).

Only the public API of ``numba_losses`` is used (``import numba_losses as
nl``), through the input makers and reference versions of ``benchmarks/``, so
the same script times any checkout of the package that is importable.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numba  # noqa: E402
from benchmarks import bench_ctc, bench_pairwise, bench_sdml, bench_softmax  # noqa: E402
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
from numba import njit, prange  # noqa: E402

import numba_losses as nl  # noqa: E402

# Inputs under this many elements run the library's serial kernels (public knob, default 32768).
SERIAL_BELOW = int(os.environ.get("NUMBA_LOSSES_SERIAL_BELOW", "32768"))
# a shape that takes the parallel kernel variant and costs nothing to compute
PARALLEL_SHAPE = (256, max(256, -(-2 * SERIAL_BELOW // 256)))


@dataclass
class Section:
    """One family's output: the text to print and the raw results (``--json``)."""

    text: str
    data: Any = field(default_factory=dict)


def mode(opts: Any) -> str:
    return "smoke" if opts.smoke else "quick" if opts.quick else "full"


# -- shared helpers ------------------------------------------------------------------------
def median_us(fn: Callable[[], Any], calls: int, warmup: int = 200) -> float:
    """Median wall time of ``calls`` back-to-back calls of ``fn``, in microseconds."""
    for _ in range(min(warmup, calls)):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A right-aligned plain-text table, or a Markdown one."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _num(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _ratio(num: float | None, den: float, spec: str = ".1f") -> str:
    return "n/a" if num is None or (isinstance(num, float) and math.isnan(num)) else f"{num / den:{spec}}x"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def torch_note(info: dict[str, Any] | None = None) -> str:
    """One line on PyTorch: its version and threads, or why its columns are n/a."""
    if not have("torch"):
        return "torch not installed: the torch columns are n/a"
    if info is None:
        return f"torch {_dist_version('torch')} CPU, 2 intra-op threads (this process)"
    if "error" in info:
        return f"torch: skipped ({info['error']}); the torch columns are n/a"
    return f"torch {info['version']} CPU, {info['threads']} intra-op threads (child process)"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def environment_lines() -> list[str]:
    """Versions, threads and machine facts worth printing with timings (torch is not imported here)."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    torch = f"torch {_dist_version('torch')}" if have("torch") else "torch not installed"
    return [
        f"python {platform.python_version()}  numpy {np.__version__}  numba {numba.__version__}  "
        f"llvmlite {__import__('llvmlite').__version__}  numba_losses {getattr(nl, '__version__', '?')} "
        f"({Path(nl.__file__).parent})  {torch}",
        f"numba threads {numba.get_num_threads()} (NUMBA_NUM_THREADS {numba.config.NUMBA_NUM_THREADS}), "
        f"threading layer {_threading_layer()}; cpus {os.cpu_count()}; {platform.processor() or platform.machine()}",
        f"transparent hugepages: {thp.read_text().strip() if thp.exists() else 'unknown'}",
    ]


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def _rel(a: Any, b: Any) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _triad_gbs(repeats: int, n: int = 1 << 24) -> float:
    """The numba triad ``o = a + 2 b`` on 3 x ``n`` float32 with the current threads, in GB/s."""
    a = np.ones(n, np.float32)
    b = np.ones_like(a)
    o = np.empty_like(a)
    return 3 * a.nbytes / best_ms(lambda: triad(a, b, o), repeats) / 1e6


def run_torch_worker(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run :func:`torch_worker` in a child interpreter (``compare.py --torch-worker JOB``)."""
    cmd = [sys.executable, str(HERE / "compare.py"), "--torch-worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"torch worker exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


def torch_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """PyTorch timings for ``spec["family"]`` (run in a child process); ``{"error": ...}`` without torch."""
    try:
        import torch
    except ImportError as exc:
        return {"error": f"import torch failed: {exc}"}
    res = {"version": torch.__version__, "threads": torch.get_num_threads()}
    res.update(TORCH_WORKERS[spec["family"]](torch, spec))
    return res


# =========================================================================================
# elementwise, CPU
# =========================================================================================
ELEMENTWISE_SETTINGS = {
    # shapes, repeats at the large shape, triad repeats, calls at the small shape, losses timed for compilation
    "full": {"large": LARGE, "small": SMALL, "repeats": 10, "triad": 30, "calls": 20000, "compile": list(CASES)},
    "quick": {
        "large": LARGE,
        "small": SMALL,
        "repeats": 3,
        "triad": 10,
        "calls": 3000,
        "compile": ["L2Loss", "SigmoidBCELoss", "KLDivLoss"],
    },
    "smoke": {"large": (64, 512), "small": (4, 8), "repeats": 1, "triad": 1, "calls": 4, "compile": ["L2Loss"]},
}


def measure_triad(repeats: int, shape: tuple[int, int]) -> dict[str, float]:
    """Triad bandwidth in GB/s with 2 numba threads (or all there are, if fewer) and with 1."""
    rng = np.random.default_rng(0)
    a, b = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
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


def measure_elementwise(name: str, shape: tuple[int, int], timer: Callable[..., float], n: int) -> dict[str, float]:
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
        "numpy_fwd": timer(lambda: case.numpy(x, y), n),
    }


def _torch_elementwise(torch: Any, spec: dict[str, Any]) -> dict[str, Any]:
    large, small, large_fwd = {}, {}, {}
    for name, case in CASES.items():
        for shape, store in ((tuple(spec["large"]), large), (tuple(spec["small"]), small)):
            x, y = make_inputs(name, shape)
            xt = torch.from_numpy(x).requires_grad_()
            yt = torch.from_numpy(y)
            step = _torch_step(case.torch_forward, xt, yt)
            store[name] = best_ms(step, spec["repeats"]) if store is large else median_us(step, spec["calls"])
            if store is large:
                with torch.no_grad():
                    large_fwd[name] = best_ms(lambda f=case.torch_forward, a=xt, b=yt: f(a, b), spec["repeats"])
    return {
        "thp": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
        "large_ms": large,
        "large_fwd_ms": large_fwd,
        "small_us": small,
    }


def _torch_step(forward: Callable[[Any, Any], Any], x: Any, y: Any) -> Callable[[], Any]:
    return lambda: torch_forward_backward(forward, x, y)


def run_torch_elementwise(cfg: dict[str, Any], thp: bool) -> dict[str, Any]:
    """PyTorch timings in a child interpreter, with or without ``THP_MEM_ALLOC_ENABLE=1``.

    Its allocator reads ``THP_MEM_ALLOC_ENABLE`` once at start-up, and keeping torch
    out of this process keeps its OpenMP runtime away from numba's threads.
    """
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    spec = {
        "family": "elementwise",
        "repeats": cfg["repeats"],
        "calls": max(1, cfg["calls"] // 4),
        "large": cfg["large"],
        "small": cfg["small"],
    }
    return run_torch_worker(spec, env)


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


def measure_compile(name: str, variants: dict[str, tuple[int, int]]) -> dict[str, Any]:
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
    for variant, shape in variants.items():
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


def cpu_elementwise(opts: Any) -> Section:
    """The elementwise losses on the CPU: bandwidth tables, call overhead, compile times.

    1. the machine's practical bandwidth, a 2-thread numba triad ``o = a + 2 b``
       on (4096, 4096) float32 (3 x 64 MiB moved);
    2. for every loss at (4096, 4096) float32: the library's forward+backward
       into reused ``out`` / ``grad_out`` buffers, without buffers, and forward
       only; the NumPy version of ``benchmarks/common.py``; PyTorch forward and
       autograd backward (head of ones), plain and with
       ``THP_MEM_ALLOC_ENABLE=1``. Effective GB/s count pred and label read
       plus the per-row output and the gradient written (12 bytes per element
       fused, 8 forward only); speed-ups compare the buffered call. The
       forward-only times of NumPy and PyTorch are measured too but only
       recorded in the raw results (``--json``, ``--save``), not printed;
    3. the per-call overhead at (64, 10) float32 (median of many calls);
    4. the cold-compile and cached first-call time of each loss's
       forward_backward (serial and parallel kernel variants), each in a fresh
       interpreter with ``NUMBA_CACHE_DIR`` pointed at a new temporary
       directory (cold), then at the same one (cached).
    """
    cfg = ELEMENTWISE_SETTINGS[mode(opts)]
    large, small_shape = cfg["large"], cfg["small"]
    tri = measure_triad(cfg["triad"], large)
    lib = {name: measure_elementwise(name, large, best_ms, cfg["repeats"]) for name in CASES}
    small = {name: measure_elementwise(name, small_shape, median_us, cfg["calls"]) for name in CASES}
    torch_runs = {thp: run_torch_elementwise(cfg, thp) for thp in (False, True)}
    variants = {"serial": small_shape, "parallel": PARALLEL_SHAPE}
    compiled = {name: measure_compile(name, variants) for name in cfg["compile"]}

    out = [torch_note(torch_runs[False])]
    threads = tri["threads"]
    triad_gbps = tri[f"gbps_{threads}"]
    out.append(
        f"\ntriad o = a + 2*b, {large} float32, numba: {threads} threads {tri[f'ms_{threads}']:.1f} ms = "
        f"{triad_gbps:.1f} GB/s; 1 thread {tri['ms_1']:.1f} ms = {tri['gbps_1']:.1f} GB/s"
    )

    torch_ms = [r.get("large_ms", {}) for r in (torch_runs[False], torch_runs[True])]
    headers = ["loss", "fb+buf ms", "fb ms", "fwd ms", "NumPy fb ms", "torch fb ms", "torch THP ms", "fb+buf GB/s",
               "% triad", "fwd GB/s", "x NumPy", "x torch", "x torch THP"]  # fmt: skip
    rows = []
    for name, r in lib.items():
        per_row = CASES[name].per_row
        gbps = traffic_bytes(large, per_row=per_row) / r["fb_buf"] / 1e6
        fwd_gbps = traffic_bytes(large, per_row=per_row, grad=False) / r["fwd"] / 1e6
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
    out.append(
        f"\n{large} float32, min of {cfg['repeats']} calls; fb = forward_backward, fwd = forward only; "
        "x = speed-up of fb+buf"
    )
    out.append(render(headers, rows, opts.markdown))

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
    out.append(
        f"\nper-call overhead at {small_shape} float32, median of {cfg['calls']} calls "
        f"(torch: {max(1, cfg['calls'] // 4)}); L2Loss forward_backward with buffers: "
        f"{small['L2Loss']['fb_buf']:.2f} us"
    )
    out.append(render(headers, rows, opts.markdown))

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
    if rows:
        out.append(
            f"\nfirst forward_backward call in a fresh process (seconds / ms): serial kernel at {small_shape}, "
            f"parallel kernel at {PARALLEL_SHAPE}, each with its own NUMBA_CACHE_DIR: cold = empty, cached = the "
            "same directory again; import = numba_losses import in the cached child"
        )
        out.append(render(headers, rows, opts.markdown))
    data = {"triad": tri, "large_ms": lib, "small_us": small, "torch": torch_runs, "compile": compiled}
    return Section("\n".join(out), data)


# =========================================================================================
# softmax cross-entropy, CPU
# =========================================================================================
# (shape, class axis); the 4-D case is segmentation (class axis 1, read through strides)
SOFTMAX_SETTINGS = {
    "full": {"cases": [((8192, 32000), -1), ((4096, 1000), -1), ((16, 21, 128, 128), 1)], "repeats": 7},
    "quick": {"cases": [((2048, 32000), -1), ((4096, 1000), -1), ((4, 21, 64, 64), 1)], "repeats": 3},
    "smoke": {"cases": [((8, 50), -1), ((2, 5, 3, 4), 1)], "repeats": 1},
}


def numpy_softmax_ce(x: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss per row and its gradient, NumPy only (float32 throughout), classes on the last axis of a 2-D ``x``."""
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(x.shape[0])
    out = (np.log(s[:, 0]) + m[:, 0]) - x[rows, lab]
    e /= s
    e[rows, lab] -= 1.0
    return out, e


@njit(parallel=True, cache=True)
def _libm_exp_rows(x: np.ndarray, out: np.ndarray) -> None:
    for r in prange(x.shape[0]):
        s = 0.0
        for k in range(x.shape[1]):
            s += math.exp(x[r, k])
        out[r] = s


def _torch_softmax(x: np.ndarray, lab: np.ndarray, repeats: int) -> dict[str, float] | None:
    if not have("torch"):
        return None
    import torch
    import torch.nn.functional as F  # noqa: N812 - the usual alias

    torch.set_num_threads(2)
    tx = torch.from_numpy(x).requires_grad_(True)
    tl = torch.from_numpy(lab)

    def fwd() -> None:
        with torch.no_grad():
            F.cross_entropy(tx, tl, reduction="none")

    def fwd_bwd() -> None:
        tx.grad = None
        loss = F.cross_entropy(tx, tl, reduction="none")
        loss.backward(torch.ones_like(loss))

    return {"forward": best_ms(fwd, repeats), "forward_backward": best_ms(fwd_bwd, repeats)}


def _measure_softmax(shape: tuple[int, ...], axis: int, repeats: int, triad_gbs: float) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 3
    keep = tuple(n for d, n in enumerate(shape) if d != axis % len(shape))
    lab = rng.integers(0, shape[axis], keep)
    loss = nl.SoftmaxCELoss(axis=axis)
    out_buf, (grad_buf,) = loss.forward_backward(x, lab)
    t_buf = best_ms(lambda: loss.forward_backward(x, lab, out=out_buf, grad_out=grad_buf), repeats)
    t_nobuf = best_ms(lambda: loss.forward_backward(x, lab), repeats)
    t_fwd = best_ms(lambda: loss(x, lab), repeats)
    if len(shape) == 2:
        t_np = best_ms(lambda: numpy_softmax_ce(x, lab), max(2, repeats // 2))
    else:
        t_np = best_ms(lambda: bench_softmax.numpy_softmax_ce(x, lab, axis), max(2, repeats // 2))
    rows2d = x.reshape(shape[0], -1)
    sums = np.empty(shape[0])
    t_libm = best_ms(lambda: _libm_exp_rows(rows2d, sums), repeats)
    torch_t = _torch_softmax(x, lab, repeats)
    bound_ms = 3 * x.nbytes / (triad_gbs * 1e6)  # logits twice + gradient once at triad speed
    return {
        "shape": shape,
        "axis": axis,
        "lib_fb_buffers": t_buf,
        "lib_fb": t_nobuf,
        "lib_fwd": t_fwd,
        "numpy_fb": t_np,
        "torch_fwd": torch_t["forward"] if torch_t else math.nan,
        "torch_fb": torch_t["forward_backward"] if torch_t else math.nan,
        "gbs": 3 * x.nbytes / t_buf / 1e6,
        "of_bound": bound_ms / t_buf,
        "ns_per_elem": t_buf * 1e6 / x.size,
        "libm_ns_per_elem": t_libm * 1e6 / x.size,
    }


def cpu_softmax(opts: Any) -> Section:
    """Softmax cross-entropy (sparse int64 labels, float32 logits): numba_losses vs NumPy vs PyTorch CPU.

    For each shape: the library's ``forward_backward`` into reused buffers,
    without buffers, and the forward alone; a vectorised NumPy version (max
    shift, ``exp``, ``log``, one-hot gradient); PyTorch's
    ``F.cross_entropy(reduction='none')`` forward and autograd backward (head
    of ones, 2 threads); effective bandwidth against the 2-thread numba triad
    and against "read the logits twice, write the gradient once" at the
    triad's rate; and the fused kernel's ns per element next to a loop of
    scalar ``math.exp`` (libm) over the same data (did LLVM vectorise the
    exponentials?).
    """
    cfg = SOFTMAX_SETTINGS[mode(opts)]
    repeats = cfg["repeats"]
    triad_gbs = _triad_gbs(repeats, 1 << 10 if opts.smoke else 1 << 24)
    rows = [_measure_softmax(shape, axis, repeats, triad_gbs) for shape, axis in cfg["cases"]]
    head = ["shape", "lib f+b buf ms", "lib f+b ms", "lib fwd ms", "NumPy f+b ms", "torch fwd ms", "torch f+b ms",
            "vs torch", "vs NumPy", "GB/s (3 passes)", "of bound", "ns/elem", "libm exp ns/elem"]  # fmt: skip
    cells = []
    for r in rows:
        label = _shape(r["shape"]) + ("" if r["axis"] == -1 else f" axis={r['axis']}")
        cells.append(
            [
                label,
                _num(r["lib_fb_buffers"]),
                _num(r["lib_fb"]),
                _num(r["lib_fwd"]),
                _num(r["numpy_fb"]),
                _num(r["torch_fwd"]),
                _num(r["torch_fb"]),
                _ratio(r["torch_fb"], r["lib_fb_buffers"], ".2f"),
                _ratio(r["numpy_fb"], r["lib_fb_buffers"], ".2f"),
                _num(r["gbs"]),
                f"{100 * r['of_bound']:.0f}%",
                _num(r["ns_per_elem"], ".2f"),
                _num(r["libm_ns_per_elem"], ".2f"),
            ]
        )
    text = "\n".join(
        [
            f"{torch_note()}; triad {triad_gbs:.1f} GB/s (numba threads)",
            f"\nfloat32 logits, int64 labels, min of {repeats} calls (NumPy: {max(2, repeats // 2)}); "
            "vs = other f+b time / lib f+b buf time",
            render(head, cells, opts.markdown),
        ]
    )
    return Section(text, {"triad_gbs": triad_gbs, "rows": rows})


# =========================================================================================
# CTC, CPU
# =========================================================================================
CTC_SETTINGS = {
    "full": {"cases": bench_ctc.CASES, "repeats": 7},
    "quick": {"cases": bench_ctc.CASES, "repeats": 3},
    "smoke": {"cases": [(6, 2, 5, 2)], "repeats": 1},
}


def _torch_ctc(x: np.ndarray, lab: np.ndarray, repeats: int) -> dict[str, Any] | None:
    if not have("torch"):
        return None
    import torch
    import torch.nn.functional as F  # noqa: N812 - the usual alias

    torch.set_num_threads(2)
    t, n, c = x.shape
    tx = torch.from_numpy(x).requires_grad_(True)
    tl = torch.from_numpy(lab).long()
    il = torch.full((n,), t, dtype=torch.long)
    ll = torch.full((n,), lab.shape[1], dtype=torch.long)

    def cost() -> Any:
        return F.ctc_loss(F.log_softmax(tx, -1), tl, il, ll, blank=c - 1, reduction="none")

    def fwd() -> None:
        with torch.no_grad():
            cost()

    def fwd_bwd() -> None:
        tx.grad = None
        out = cost()
        out.backward(torch.ones_like(out))

    fwd_bwd()
    out = cost().detach().numpy()
    return {"fwd": best_ms(fwd, repeats), "fb": best_ms(fwd_bwd, repeats), "out": out, "grad": tx.grad.numpy().copy()}


def _measure_ctc(case: tuple[int, int, int, int], repeats: int, triad_gbs: float) -> dict:
    x, lab = bench_ctc.ctc_inputs(case)
    loss = nl.CTCLoss(layout="TNC")
    out, (grad,) = loss.forward_backward(x, lab)
    t_fb = best_ms(lambda: loss.forward_backward(x, lab, out=out, grad_out=grad), repeats)
    t_fwd = best_ms(lambda: loss(x, lab), repeats)
    np_out, np_grad = bench_ctc.numpy_ctc(x, lab)
    t_np = best_ms(lambda: bench_ctc.numpy_ctc(x, lab), max(2, repeats // 3))
    tr = _torch_ctc(x, lab, repeats)
    bound_ms = 3 * x.nbytes / (triad_gbs * 1e6)
    return {
        "case": case,
        "fwd": t_fwd,
        "fb": t_fb,
        "numpy_fb": t_np,
        "torch_fwd": tr["fwd"] if tr else math.nan,
        "torch_fb": tr["fb"] if tr else math.nan,
        "diff_numpy": max(_rel(out, np_out), _rel(grad, np_grad)),
        "diff_torch": max(_rel(out, tr["out"]), _rel(grad, tr["grad"])) if tr else math.nan,
        "gbs": 3 * x.nbytes / t_fb / 1e6,
        "of_bound": bound_ms / t_fb,
    }


def cpu_ctc(opts: Any) -> Section:
    """CTCLoss: numba_losses vs NumPy vs PyTorch CPU (``F.ctc_loss(F.log_softmax(x))``, 2 threads).

    For each case of ``benchmarks.bench_ctc.CASES`` (float32 'TNC'
    activations, full lengths): the library's forward and forward+backward
    (into reused ``out`` / ``grad_out`` buffers), the NumPy version of
    ``benchmarks.bench_ctc.numpy_ctc``, PyTorch's forward and forward+backward
    (autograd, head of ones); the ratios; and the library's effective bandwidth
    for "read the activations twice, write the gradient once" against the
    numba triad. Before timing, the three implementations' costs and gradients
    are compared (largest relative difference printed).
    """
    cfg = CTC_SETTINGS[mode(opts)]
    repeats = cfg["repeats"]
    triad_gbs = _triad_gbs(repeats, 1 << 10 if opts.smoke else 1 << 24)
    rows = [_measure_ctc(case, repeats, triad_gbs) for case in cfg["cases"]]
    head = ["T,N,C,L", "lib fwd ms", "lib f+b ms", "NumPy f+b ms", "torch fwd ms", "torch f+b ms", "f+b vs torch",
            "fwd vs torch", "f+b vs NumPy", "GB/s (3 passes)", "of bound", "max rel diff NumPy/torch"]  # fmt: skip
    cells = []
    for r in rows:
        cells.append(
            [
                ",".join(map(str, r["case"])),
                _num(r["fwd"], ".2f"),
                _num(r["fb"], ".2f"),
                _num(r["numpy_fb"]),
                _num(r["torch_fwd"], ".2f"),
                _num(r["torch_fb"], ".2f"),
                _ratio(r["torch_fb"], r["fb"], ".2f"),
                _ratio(r["torch_fwd"], r["fwd"], ".2f"),
                _ratio(r["numpy_fb"], r["fb"]),
                _num(r["gbs"]),
                f"{100 * r['of_bound']:.0f}%",
                f"{r['diff_numpy']:.1e} / {_num(r['diff_torch'], '.1e')}",
            ]
        )
    text = "\n".join(
        [
            f"{torch_note()}; triad {triad_gbs:.1f} GB/s (numba threads)",
            f"\nfloat32 'TNC' activations, full lengths, min of {repeats} calls (NumPy: {max(2, repeats // 3)}); "
            "lib f+b into reused buffers",
            render(head, cells, opts.markdown),
        ]
    )
    return Section(text, {"triad_gbs": triad_gbs, "rows": rows})


# =========================================================================================
# TripletLoss and CosineEmbeddingLoss, CPU
# =========================================================================================
PAIRWISE_SETTINGS = {
    "full": {"shape": bench_pairwise.LARGE, "repeats": 20, "rounds": 3},
    "quick": {"shape": bench_pairwise.LARGE, "repeats": 5, "rounds": 1},
    "smoke": {"shape": (8, 4), "repeats": 1, "rounds": 1},
}


def _pairwise_library_and_numpy(name: str, shape: tuple[int, int], repeats: int) -> dict[str, float]:
    make, inputs, numpy_loss, margin = bench_pairwise.CASES[name]
    loss = make(margin=margin)
    args = inputs(shape)
    out, grads = loss.forward_backward(*args)
    return {
        "lib_fwd": best_ms(lambda: loss(*args), repeats),
        "lib_fb": best_ms(lambda: loss.forward_backward(*args), repeats),
        "lib_fb_buf": best_ms(lambda: loss.forward_backward(*args, out=out, grad_out=grads), repeats),
        "numpy_fwd": best_ms(lambda: numpy_loss(*args, margin=margin), repeats),
        "numpy_fb": best_ms(lambda: numpy_loss(*args, True, margin=margin), repeats),
    }


def torch_triplet(x: Any, p: Any, n: Any) -> Any:
    """MXNet's TripletLoss in PyTorch: ``relu(sum((p - x)^2 - (n - x)^2, 1) + margin)``."""
    import torch

    return torch.relu(((p - x) ** 2 - (n - x) ** 2).sum(1) + bench_pairwise.MARGIN_TRIPLET)


def torch_cosine(a: Any, b: Any, y: Any) -> Any:
    """MXNet's CosineEmbeddingLoss in PyTorch, shape ``(M, 1)``."""
    import torch

    c = (a * b).sum(1) / torch.clamp(a.norm(dim=1) * b.norm(dim=1), min=1e-12)
    neg = torch.where(y == -1, torch.relu(c - bench_pairwise.MARGIN_COSINE), torch.zeros_like(c))
    return torch.where(y == 1, 1 - c, neg).unsqueeze(1)


# loss name -> (PyTorch version, number of differentiable inputs)
TORCH_PAIRWISE = {"TripletLoss": (torch_triplet, 3), "CosineEmbeddingLoss": (torch_cosine, 2)}


def _torch_pairwise(torch: Any, spec: dict[str, Any]) -> dict[str, Any]:
    res = {}
    for name, (fn, n_diff) in TORCH_PAIRWISE.items():
        arrays = bench_pairwise.CASES[name][1](tuple(spec["shape"]))
        ts = [torch.from_numpy(a) for a in arrays]
        for t in ts[:n_diff]:
            t.requires_grad_()

        def fb(fn=fn, ts=ts, n_diff=n_diff):
            for t in ts[:n_diff]:
                t.grad = None
            out = fn(*ts)
            out.backward(torch.ones_like(out))
            return out, [t.grad for t in ts[:n_diff]]

        def fwd(fn=fn, ts=ts):
            with torch.no_grad():
                return fn(*ts)

        res[name] = {"torch_fwd": best_ms(fwd, spec["repeats"]), "torch_fb": best_ms(fb, spec["repeats"])}
    return res


def cpu_pairwise(opts: Any) -> Section:
    """TripletLoss and CosineEmbeddingLoss at (4096, 512) float32: numba_losses, NumPy, PyTorch CPU.

    For both losses, the forward pass and forward+backward (head gradient of
    ones): the library (``loss(...)``, ``forward_backward`` and the same into
    reused buffers); the vectorised NumPy versions of
    ``benchmarks/bench_pairwise.py``; PyTorch CPU expressions computing the
    same math, gradients of every differentiable input from autograd, in a
    child process. Each time is the minimum over ``R`` rounds of the minimum of
    ``N`` calls after a warm-up call.
    """
    cfg = PAIRWISE_SETTINGS[mode(opts)]
    shape = cfg["shape"]
    repeats = opts.repeats or cfg["repeats"]
    rounds = opts.rounds or cfg["rounds"]
    best: dict[str, dict[str, float]] = {}
    torch_info: dict[str, Any] = {}
    for _ in range(rounds):
        for name in bench_pairwise.CASES:
            for key, v in _pairwise_library_and_numpy(name, shape, repeats).items():
                best.setdefault(name, {})[key] = min(v, best.get(name, {}).get(key, float("inf")))
        t = run_torch_worker({"family": "pairwise", "repeats": repeats, "shape": shape})
        if "error" in t:
            torch_info = t
            continue
        torch_info.update({k: t[k] for k in ("version", "threads")})
        for name in best:
            for key, v in t[name].items():
                best[name][key] = min(v, best[name].get(key, float("inf")))
    headers = ["loss", "fwd ms", "fb ms", "fb+buf ms", "NumPy fwd", "NumPy fb", "torch fwd", "torch fb", "x NumPy fwd",
               "x NumPy fb", "x torch fwd", "x torch fb", "x NumPy fb (buf)"]  # fmt: skip
    rows = []
    for name, r in best.items():
        tf, tb = r.get("torch_fwd"), r.get("torch_fb")
        rows.append(
            [
                name,
                _num(r["lib_fwd"], ".2f"),
                _num(r["lib_fb"], ".2f"),
                _num(r["lib_fb_buf"], ".2f"),
                _num(r["numpy_fwd"], ".2f"),
                _num(r["numpy_fb"], ".2f"),
                _num(tf, ".2f"),
                _num(tb, ".2f"),
                _ratio(r["numpy_fwd"], r["lib_fwd"]),
                _ratio(r["numpy_fb"], r["lib_fb"]),
                _ratio(tf, r["lib_fwd"]),
                _ratio(tb, r["lib_fb"]),
                _ratio(r["numpy_fb"], r["lib_fb_buf"]),
            ]
        )
    text = "\n".join(
        [
            torch_note(torch_info),
            f"\n{shape} float32, min over {rounds} rounds of the min of {repeats} calls; fwd = forward, "
            "fb = forward+backward (new outputs), fb+buf = into reused buffers; x = other time / numba_losses time",
            render(headers, rows, opts.markdown),
        ]
    )
    return Section(text, {"shape": shape, "times_ms": best, "torch": torch_info})


# =========================================================================================
# SDMLLoss, CPU
# =========================================================================================
SDML_SETTINGS = {
    "full": {"shapes": bench_sdml.SHAPES, "repeats": 7},
    "quick": {"shapes": bench_sdml.SHAPES[:1], "repeats": 3},
    "smoke": {"shapes": [(8, 4)], "repeats": 1},
}


def _torch_sdml(torch: Any, spec: dict[str, Any]) -> dict[str, Any]:
    res = {}
    for shape in spec["shapes"]:
        x1, x2 = (torch.from_numpy(a) for a in bench_sdml.make_inputs(tuple(shape)))
        head = torch.ones(shape[0])

        def fwd(x1=x1, x2=x2):
            with torch.no_grad():
                bench_sdml.torch_sdml(x1, x2)

        def fb(x1=x1, x2=x2, head=head):
            a = x1.detach().requires_grad_(True)
            b = x2.detach().requires_grad_(True)
            bench_sdml.torch_sdml(a, b).backward(head)

        res[_shape(shape)] = {"torch_fwd": best_ms(fwd, spec["repeats"]), "torch_fb": best_ms(fb, spec["repeats"])}
    return res


def _measure_sdml(shape: tuple[int, int], repeats: int) -> dict[str, float]:
    loss = nl.SDMLLoss(smoothing_parameter=bench_sdml.SMOOTHING)
    x1, x2 = bench_sdml.make_inputs(shape)
    out, grads = loss.forward_backward(x1, x2)
    np_out, np_grads = bench_sdml.numpy_sdml(x1, x2, True)
    diff = max(_rel(out, np_out), *(_rel(g, h) for g, h in zip(grads, np_grads, strict=True)))
    return {
        "lib_fwd": best_ms(lambda: loss(x1, x2), repeats),
        "lib_fb": best_ms(lambda: loss.forward_backward(x1, x2), repeats),
        "lib_fb_buf": best_ms(lambda: loss.forward_backward(x1, x2, out=out, grad_out=grads), repeats),
        "numpy_fwd": best_ms(lambda: bench_sdml.numpy_sdml(x1, x2), repeats),
        "numpy_fb": best_ms(lambda: bench_sdml.numpy_sdml(x1, x2, True), repeats),
        "diff_numpy": diff,
    }


def cpu_sdml(opts: Any) -> Section:
    """SDMLLoss: numba_losses vs the NumPy and PyTorch versions of ``benchmarks/bench_sdml.py``.

    For each (batch, dim) float32 shape: the library's forward, forward+backward
    and forward+backward into reused buffers; NumPy's forward and
    forward+backward (BLAS matrix products); PyTorch CPU forward and autograd
    backward (head of ones) in a child process; and the largest relative
    difference between the library's and NumPy's values and gradients.
    """
    cfg = SDML_SETTINGS[mode(opts)]
    repeats = cfg["repeats"]
    rows_data = {_shape(shape): _measure_sdml(shape, repeats) for shape in cfg["shapes"]}
    torch_info = run_torch_worker({"family": "sdml", "repeats": repeats, "shapes": cfg["shapes"]})
    headers = ["shape", "fwd ms", "fb ms", "fb+buf ms", "NumPy fwd", "NumPy fb", "torch fwd", "torch fb",
               "x NumPy fb (buf)", "x torch fb (buf)", "max rel diff NumPy"]  # fmt: skip
    rows = []
    for key, r in rows_data.items():
        t = torch_info.get(key, {})
        tf, tb = t.get("torch_fwd"), t.get("torch_fb")
        rows.append(
            [
                key,
                _num(r["lib_fwd"], ".2f"),
                _num(r["lib_fb"], ".2f"),
                _num(r["lib_fb_buf"], ".2f"),
                _num(r["numpy_fwd"], ".2f"),
                _num(r["numpy_fb"], ".2f"),
                _num(tf, ".2f"),
                _num(tb, ".2f"),
                _ratio(r["numpy_fb"], r["lib_fb_buf"]),
                _ratio(tb, r["lib_fb_buf"]),
                f"{r['diff_numpy']:.1e}",
            ]
        )
    text = "\n".join(
        [
            torch_note(torch_info),
            f"\nSDMLLoss(smoothing_parameter={bench_sdml.SMOOTHING}), float32 (batch, dim), min of {repeats} calls; "
            "fb = forward+backward, fb+buf = into reused buffers; x = other time / numba_losses time",
            render(headers, rows, opts.markdown),
        ]
    )
    return Section(text, {"times_ms": rows_data, "torch": torch_info})


TORCH_WORKERS = {"elementwise": _torch_elementwise, "pairwise": _torch_pairwise, "sdml": _torch_sdml}

CPU = {
    "elementwise": cpu_elementwise,
    "softmax": cpu_softmax,
    "ctc": cpu_ctc,
    "pairwise": cpu_pairwise,
    "sdml": cpu_sdml,
}


# =========================================================================================
# CUDA
# =========================================================================================
LARGE_GPU = (8192, 8192)  # 2**26 elements
SOFTMAX_SHAPES_GPU = [(8192, 32000), (4096, 1000)]


class Timer:
    """GPU time per call with CUDA events (CuPy's), or wall time in Numba's simulator."""

    def __init__(self) -> None:
        from numba import cuda

        self.cuda = cuda
        self.simulated = bool(cuda.config.ENABLE_CUDASIM)

    def sync(self) -> None:
        self.cuda.synchronize()
        if have("cupy") and not self.simulated:
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def gpu_ms(self, fn: Callable[[], Any], calls: int, repeats: int = 3) -> float:
        """Best over ``repeats`` of the mean GPU time of ``calls`` back-to-back calls (ms)."""
        fn()
        self.sync()
        best = float("inf")
        for _ in range(repeats):
            if self.simulated:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                best = min(best, (time.perf_counter() - t0) * 1e3 / calls)
                continue
            import cupy

            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(calls):
                fn()
            stop.record()
            stop.synchronize()
            self.sync()  # PyTorch and Numba launch on their own current streams
            best = min(best, cupy.cuda.get_elapsed_time(start, stop) / calls)
        return best

    def wall_us(self, fn: Callable[[], Any], calls: int) -> float:
        """Median wall time of one synchronised call (us)."""
        fn()
        self.sync()
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            self.sync()
            samples.append(time.perf_counter() - t0)
        return float(np.median(samples)) * 1e6


@dataclass
class Gpu:
    """What a CUDA run uses: the timer, CuPy arrays (else Numba device arrays), PyTorch CUDA or not."""

    timer: Timer
    use_cupy: bool
    use_torch: bool

    def to_device(self, a: np.ndarray) -> Any:
        if self.use_cupy:
            import cupy

            return cupy.asarray(a)
        return self.timer.cuda.to_device(np.ascontiguousarray(a))

    def torch(self, a: np.ndarray, grad: bool = False) -> Any:
        import torch

        t = torch.as_tensor(a, device="cuda")
        return t.requires_grad_(True) if grad else t


@cache
def gpu() -> Gpu:
    timer = Timer()
    use_cupy = have("cupy") and not timer.simulated
    use_torch = False
    if have("torch") and not timer.simulated:
        import torch

        use_torch = torch.cuda.is_available()
    return Gpu(timer, use_cupy, use_torch)


@cache
def copy_gbps(n: int = LARGE_GPU[0] * LARGE_GPU[1]) -> float:
    """Device-to-device copy bandwidth (read + write) of ``n`` float32 elements."""
    import cupy

    src = cupy.ones(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    ms = gpu().timer.gpu_ms(lambda: dst.__setitem__(Ellipsis, src), calls=20)
    return 2 * src.nbytes / (ms / 1e3) / 1e9


def device_lines() -> list[str]:
    g = gpu()
    if g.timer.simulated:
        return ["device: Numba's CUDA simulator (smoke run: times mean nothing)"]
    dev = g.timer.cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    return [
        f"device: {name} ({dev.MULTIPROCESSOR_COUNT} SMs); torch CUDA: {g.use_torch}",
        f"device-to-device copy of 2**26 float32: {copy_gbps():.0f} GB/s",
    ]


def _gpu_table(results: list[dict], unit: str, copy: float | None, markdown: bool) -> str:
    """The elementwise table: library, CuPy and PyTorch times, and for the large shape the bandwidth."""
    head = ["loss", "fwd", "fwd+bwd", "fwd+bwd buf", "cupy fwd", "cupy f+b", "torch fwd", "torch f+b"]
    if copy is not None:
        head += ["GB/s", "% of copy", "vs torch f+b"]
    keys = ("forward", "forward_backward", "forward_backward_out", "cupy_forward", "cupy_forward_backward",
            "torch_forward", "torch_forward_backward")  # fmt: skip
    rows = []
    for r in results:
        cells = [r["loss"]] + [f"{r[k]:.3f}" if k in r else "-" for k in keys]
        if copy is not None:
            tb = r.get("torch_forward_backward")
            speedup = "-" if tb is None else f"{tb / r['forward_backward']:.2f}x"
            cells += [f"{r['gbps']:.0f}", f"{100 * r['gbps'] / copy:.0f}%", speedup]
        rows.append(cells)
    return f"times in {unit}\n" + render(head, rows, markdown)


def measure_elementwise_gpu(name: str, shape: tuple[int, int], calls: int) -> dict:
    g = gpu()
    case = CASES[name]
    loss = case.make_loss()
    x_h, y_h = make_inputs(name, shape)
    x, y = g.to_device(x_h), g.to_device(y_h)
    out, (grad,) = loss.forward_backward(x, y)
    res: dict[str, Any] = {"loss": name, "shape": list(shape)}
    large = shape[0] * shape[1] >= 1 << 20
    measure_fn = (lambda f: g.timer.gpu_ms(f, calls)) if large else (lambda f: g.timer.wall_us(f, calls))
    res["unit"] = "ms (GPU)" if large else "us (wall)"
    res["forward"] = measure_fn(lambda: loss(x, y))
    res["forward_backward"] = measure_fn(lambda: loss.forward_backward(x, y))
    res["forward_backward_out"] = measure_fn(lambda: loss.forward_backward(x, y, out=out, grad_out=grad))
    if g.use_cupy:  # the NumPy versions of benchmarks/common.py on CuPy arrays (NumPy's dispatch protocols)
        res["cupy_forward"] = measure_fn(lambda: case.numpy(x, y))
        res["cupy_forward_backward"] = measure_fn(lambda: case.numpy(x, y, True))
    if g.use_torch:
        xt, yt = g.torch(x_h, grad=True), g.torch(y_h)
        res["torch_forward"] = measure_fn(lambda: case.torch_forward(xt.detach(), yt))
        res["torch_forward_backward"] = measure_fn(lambda: torch_forward_backward(case.torch_forward, xt, yt))
    if large:
        nbytes = traffic_bytes(shape, per_row=case.per_row)
        res["gbps"] = nbytes / (res["forward_backward_out"] / 1e3) / 1e9
    return res


def cuda_elementwise(opts: Any) -> Section:
    """The elementwise losses on the GPU: numba_losses vs CuPy array expressions vs PyTorch CUDA.

    At 2**26 float32 elements (8192 x 8192): GPU time per call (CUDA events
    around a batch of calls) of the library's forward, forward+backward, and
    forward+backward into reused buffers; the NumPy versions of
    ``benchmarks/common.py`` run on CuPy arrays; PyTorch CUDA forward and
    autograd backward (head of ones); the effective bandwidth of the buffered
    forward+backward (12 bytes per element) as a fraction of the
    device-to-device copy. At (64, 10): wall time per synchronised call.
    """
    if opts.smoke:
        for name in CASES:
            measure_elementwise_gpu(name, (4, 8), calls=1)
        return Section("ok")
    rows = [measure_elementwise_gpu(k, LARGE_GPU, calls=10) for k in CASES]
    small = [measure_elementwise_gpu(k, SMALL, calls=200) for k in CASES]
    text = "\n".join(
        [
            f"## {LARGE_GPU[0]} x {LARGE_GPU[1]} float32",
            _gpu_table(rows, "ms of GPU time per call", copy_gbps(), opts.markdown),
            f"\n## {SMALL[0]} x {SMALL[1]} float32",
            _gpu_table(small, "us of wall time per synchronised call", None, opts.markdown),
        ]
    )
    return Section(text, {"large": rows, "small": small})


def measure_softmax_gpu(shape: tuple[int, int], calls: int) -> dict:
    """SoftmaxCELoss (sparse int64 labels) vs a CuPy expression vs ``F.cross_entropy``, forward+backward."""
    g = gpu()
    rng = np.random.default_rng(0)
    x_h = (3 * rng.standard_normal(shape)).astype(np.float32)
    lab_h = rng.integers(0, shape[1], shape[0])
    x, lab = g.to_device(x_h), g.to_device(lab_h)
    loss = nl.SoftmaxCELoss()
    out, (grad,) = loss.forward_backward(x, lab)
    res: dict[str, Any] = {"loss": "SoftmaxCE", "shape": list(shape)}
    measure_fn = lambda f: g.timer.gpu_ms(f, calls)  # noqa: E731
    res["forward"] = measure_fn(lambda: loss(x, lab))
    res["forward_backward_out"] = measure_fn(lambda: loss.forward_backward(x, lab, out=out, grad_out=grad))
    if g.use_cupy:
        import cupy

        rows = cupy.arange(shape[0])

        def cupy_fb() -> None:
            m = x.max(axis=1, keepdims=True)
            e = cupy.exp(x - m)
            s = e.sum(axis=1, keepdims=True)
            (cupy.log(s[:, 0]) + m[:, 0]) - x[rows, lab]
            e /= s
            e[rows, lab] -= 1

        res["cupy_forward_backward"] = measure_fn(cupy_fb)
    if g.use_torch:
        import torch
        import torch.nn.functional as F  # noqa: N812 - the usual alias

        xt, lt = g.torch(x_h, grad=True), g.torch(lab_h)

        def torch_fb() -> None:
            xt.grad = None
            v = F.cross_entropy(xt, lt, reduction="none")
            v.backward(torch.ones_like(v))

        res["torch_forward"] = measure_fn(lambda: F.cross_entropy(xt.detach(), lt, reduction="none"))
        res["torch_forward_backward"] = measure_fn(torch_fb)
    # read the logits twice and write the gradient once
    res["gbps"] = 3 * x_h.nbytes / (res["forward_backward_out"] / 1e3) / 1e9
    return res


def cuda_softmax(opts: Any) -> Section:
    """SoftmaxCELoss on the GPU (float32 logits, int64 labels): library vs CuPy expression vs PyTorch CUDA."""
    if opts.smoke:
        measure_softmax_gpu((4, 8), calls=1)
        return Section("ok")
    copy = copy_gbps()
    results = [measure_softmax_gpu(shape, calls=10) for shape in SOFTMAX_SHAPES_GPU]
    head = ["shape", "fwd", "fwd+bwd buf", "cupy f+b", "torch fwd", "torch f+b", "GB/s", "% of copy", "vs torch"]
    keys = ("forward", "forward_backward_out", "cupy_forward_backward", "torch_forward", "torch_forward_backward")
    rows = []
    for r in results:
        cells = [_shape(r["shape"])] + [f"{r[k]:.3f}" if k in r else "-" for k in keys]
        tb = r.get("torch_forward_backward")
        speedup = "-" if tb is None else f"{tb / r['forward_backward_out']:.2f}x"
        cells += [f"{r['gbps']:.0f}", f"{100 * r['gbps'] / copy:.0f}%", speedup]
        rows.append(cells)
    text = "## SoftmaxCELoss, float32 logits, int64 labels (ms of GPU time; GB/s for 2 reads + 1 write)\n" + render(
        head, rows, opts.markdown
    )
    return Section(text, results)


def _measure_structured_gpu(
    label: str,
    loss: Any,
    host_args: tuple[np.ndarray, ...],
    calls: int,
    torch_fn: Callable[..., Any] | None = None,
    n_diff: int = 0,
    cupy_fn: Callable[..., Any] | None = None,
) -> dict:
    """GPU ms of the library's forward, forward+backward and buffered forward+backward, and PyTorch's.

    ``torch_fn(*tensors)`` computes the loss from CUDA tensors of ``host_args``
    (the first ``n_diff`` require grad); ``cupy_fn(*arrays)`` an array-expression
    version on the device arrays (skipped, with a note, if it fails).
    """
    g = gpu()
    args = tuple(g.to_device(a) for a in host_args)
    out, grads = loss.forward_backward(*args)
    measure_fn = lambda f: g.timer.gpu_ms(f, calls)  # noqa: E731
    res: dict[str, Any] = {"case": label}
    res["forward"] = measure_fn(lambda: loss(*args))
    res["forward_backward"] = measure_fn(lambda: loss.forward_backward(*args))
    res["forward_backward_out"] = measure_fn(lambda: loss.forward_backward(*args, out=out, grad_out=grads))
    if g.use_cupy and cupy_fn is not None:
        try:
            res["cupy_forward_backward"] = measure_fn(lambda: cupy_fn(*args))
        except Exception as exc:  # noqa: BLE001 - an optional column
            print(f"{label}: CuPy version skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    if g.use_torch and torch_fn is not None:
        import torch

        ts = [g.torch(a, grad=i < n_diff) for i, a in enumerate(host_args)]

        def fwd() -> None:
            with torch.no_grad():
                torch_fn(*ts)

        def fb() -> None:
            for t in ts[:n_diff]:
                t.grad = None
            v = torch_fn(*ts)
            v.backward(torch.ones_like(v))

        res["torch_forward"] = measure_fn(fwd)
        res["torch_forward_backward"] = measure_fn(fb)
    return res


def _structured_table(title: str, results: list[dict], markdown: bool) -> str:
    head = ["case", "fwd", "fwd+bwd", "fwd+bwd buf", "cupy f+b", "torch fwd", "torch f+b", "vs torch f+b"]
    keys = ("forward", "forward_backward", "forward_backward_out", "cupy_forward_backward", "torch_forward",
            "torch_forward_backward")  # fmt: skip
    rows = []
    for r in results:
        cells = [r["case"]] + [f"{r[k]:.3f}" if k in r else "-" for k in keys]
        tb = r.get("torch_forward_backward")
        cells.append("-" if tb is None else f"{tb / r['forward_backward']:.2f}x")
        rows.append(cells)
    return f"## {title} (ms of GPU time per call; vs torch = torch f+b / fwd+bwd)\n" + render(head, rows, markdown)


def _torch_ctc_cost(x: Any, lab: Any) -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the usual alias

    t, n, c = x.shape
    il = torch.full((n,), t, dtype=torch.long, device=x.device)
    ll = torch.full((n,), lab.shape[1], dtype=torch.long, device=x.device)
    return F.ctc_loss(F.log_softmax(x, -1), lab.long(), il, ll, blank=c - 1, reduction="none")


def cuda_ctc(opts: Any) -> Section:
    """CTCLoss ('TNC', full lengths) on the GPU: library vs PyTorch CUDA ``F.ctc_loss(F.log_softmax(x))``."""
    cases = [(6, 2, 5, 2)] if opts.smoke else bench_ctc.CASES
    results = [
        _measure_structured_gpu(
            ",".join(map(str, case)),
            nl.CTCLoss(layout="TNC"),
            bench_ctc.ctc_inputs(case),
            1 if opts.smoke else 10,
            _torch_ctc_cost,
            1,
        )
        for case in cases
    ]
    if opts.smoke:
        return Section("ok")
    return Section(_structured_table("CTCLoss, float32 'TNC', T,N,C,L", results, opts.markdown), results)


def cuda_pairwise(opts: Any) -> Section:
    """TripletLoss and CosineEmbeddingLoss on the GPU: library vs NumPy versions on CuPy arrays vs PyTorch CUDA."""
    shape = (8, 4) if opts.smoke else bench_pairwise.LARGE
    results = []
    for name, (make, inputs, numpy_loss, margin) in bench_pairwise.CASES.items():
        torch_fn, n_diff = TORCH_PAIRWISE[name]
        results.append(
            _measure_structured_gpu(
                f"{name} {_shape(shape)}",
                make(margin=margin),
                inputs(shape),
                1 if opts.smoke else 10,
                torch_fn,
                n_diff,
                lambda *a, f=numpy_loss, m=margin: f(*a, True, margin=m),
            )
        )
    if opts.smoke:
        return Section("ok")
    return Section(_structured_table("TripletLoss and CosineEmbeddingLoss, float32", results, opts.markdown), results)


def cuda_sdml(opts: Any) -> Section:
    """SDMLLoss on the GPU: library vs the PyTorch CUDA version of ``benchmarks/bench_sdml.py``."""
    shapes = [(8, 4)] if opts.smoke else bench_sdml.SHAPES
    results = [
        _measure_structured_gpu(
            _shape(shape),
            nl.SDMLLoss(smoothing_parameter=bench_sdml.SMOOTHING),
            bench_sdml.make_inputs(shape),
            1 if opts.smoke else 10,
            bench_sdml.torch_sdml,
            2,
        )
        for shape in shapes
    ]
    if opts.smoke:
        return Section("ok")
    return Section(_structured_table("SDMLLoss, float32 (batch, dim)", results, opts.markdown), results)


CUDA = {
    "elementwise": cuda_elementwise,
    "softmax": cuda_softmax,
    "ctc": cuda_ctc,
    "pairwise": cuda_pairwise,
    "sdml": cuda_sdml,
}
FAMILIES = list(CPU)
