"""The benchmark results file (``compare.py --save FILE``) that the documentation's charts are drawn from.

One JSON document says when, where and how the numbers were made, and gives
one row per measured case with the four times the charts need, for the
forward pass and for forward+backward::

    {
      "format": 1,
      "date": "2026-12-03T23:10:04Z",             # UTC, when the run ended
      "command": "python asv_bench/compare.py --family all --save docs/_data/benchmarks.json",
      "mode": "full",                              # or "quick" (fewer repeats, some smaller shapes)
      "device": "cpu",
      "quiet": true,                               # 1-minute load average under 0.5 at the start
      "load_average": [0.03, 2.11],                # at start and at end of the run
      "duration_s": 412.0,
      "machine": {"cpu": "...", "cores": 2, "numba_num_threads": 2,
                  "versions": {"python": "...", "numpy": "...", "numba": "...", "torch": "...", ...}},
      "rows": [
        {"family": "elementwise", "loss": "L2Loss", "case": "4096x4096",
         "forward": {"numba_losses_ms": 7.1, "numpy_ms": 30.2, "torch_ms": 25.0, "floor_ms": 6.0},
         "forward_backward": {...}},
        ...
      ]
    }

A time that was not measured is ``null``. ``floor_ms`` is the time to move
the bytes the fused pass must read and write at the bandwidth of the numba
triad measured in the same run (elementwise: both passes; softmax and CTC:
forward+backward); the library's forward+backward time is the call into
reused ``out`` / ``grad_out`` buffers. ``docs/_ext/benchmark_chart.py``
reads and checks the file.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.common import CASES, traffic_bytes

FORMAT = 1
QUIET_LOAD = 0.5  # 1-minute load average at the start under which the machine counts as quiet
PASSES = ("forward", "forward_backward")
TIMES = ("numba_losses_ms", "numpy_ms", "torch_ms", "floor_ms")
NOTES = {
    "numba_losses_ms": "this library; forward+backward into reused out/grad_out buffers",
    "numpy_ms": "the hand-written NumPy version of asv_bench/benchmarks (null: not measured)",
    "torch_ms": "PyTorch CPU, autograd for the backward (null: not measured or torch missing)",
    "floor_ms": "bytes the fused pass must move / the numba triad's bandwidth in the same run (null: none computed)",
}


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, Numba's thread count and the versions that matter (torch is not imported)."""
    import numba

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            **{name: _version(name) for name in ("numpy", "numba", "llvmlite", "torch", "numba-losses")},
        },
    }


def _ms(v: Any) -> float | None:
    """A time in ms to 4 significant digits, or None for a missing or NaN one."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else float(f"{v:.4g}")


def _row(family: str, loss: str, case: str, fwd: dict[str, Any], fb: dict[str, Any]) -> dict[str, Any]:
    return {
        "family": family,
        "loss": loss,
        "case": case,
        "forward": {k: _ms(fwd.get(k)) for k in TIMES},
        "forward_backward": {k: _ms(fb.get(k)) for k in TIMES},
    }


def _shape(shape: Any) -> str:
    return "x".join(str(int(n)) for n in shape)


def elementwise_rows(data: dict[str, Any], shape: tuple[int, int]) -> list[dict[str, Any]]:
    """Rows of ``cpu_elementwise``'s data: the large shape, floors from the triad's bandwidth."""
    tri = data["triad"]
    bytes_per_ms = tri[f"gbps_{tri['threads']}"] * 1e6  # GB/s = 1e6 bytes per ms
    torch = data["torch"][False]  # the run without transparent huge pages, the printed tables' "x torch"
    rows = []
    for name, r in data["large_ms"].items():
        per_row = CASES[name].per_row
        fwd = {
            "numba_losses_ms": r["fwd"],
            "numpy_ms": r.get("numpy_fwd"),
            "torch_ms": torch.get("large_fwd_ms", {}).get(name),
            "floor_ms": traffic_bytes(shape, per_row=per_row, grad=False) / bytes_per_ms,
        }
        fb = {
            "numba_losses_ms": r["fb_buf"],
            "numpy_ms": r["numpy_fb"],
            "torch_ms": torch.get("large_ms", {}).get(name),
            "floor_ms": traffic_bytes(shape, per_row=per_row) / bytes_per_ms,
        }
        rows.append(_row("elementwise", name, _shape(shape), fwd, fb))
    return rows


def _structured_row(family: str, loss: str, case: str, fwd: float, torch_fwd: Any, fb: float, r: dict) -> dict:
    """A softmax or CTC row: forward against PyTorch, forward+backward against NumPy and PyTorch, and the
    forward+backward floor (``of_bound``, the share of the bound, times the measured time)."""
    fwd_times = {"numba_losses_ms": fwd, "torch_ms": torch_fwd}
    fb_times = {
        "numba_losses_ms": fb,
        "numpy_ms": r["numpy_fb"],
        "torch_ms": r["torch_fb"],
        "floor_ms": r["of_bound"] * fb,
    }
    return _row(family, loss, case, fwd_times, fb_times)


def softmax_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``cpu_softmax``'s data (one per shape); the floor of forward+backward only."""
    return [
        _structured_row(
            "softmax",
            "SoftmaxCELoss",
            _shape(r["shape"]) + ("" if r["axis"] == -1 else f" axis={r['axis']}"),
            r["lib_fwd"],
            r["torch_fwd"],
            r["lib_fb_buffers"],
            r,
        )
        for r in data["rows"]
    ]


def ctc_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``cpu_ctc``'s data (one per T,N,C,L case); the floor of forward+backward only."""
    return [
        _structured_row(
            "ctc",
            "CTCLoss",
            "T,N,C,L=" + ",".join(str(int(n)) for n in r["case"]),
            r["fwd"],
            r["torch_fwd"],
            r["fb"],
            r,
        )
        for r in data["rows"]
    ]


def pairwise_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``cpu_pairwise``'s data (TripletLoss, CosineEmbeddingLoss); no floor."""
    rows = []
    for name, r in data["times_ms"].items():
        fwd = {"numba_losses_ms": r["lib_fwd"], "numpy_ms": r["numpy_fwd"], "torch_ms": r.get("torch_fwd")}
        fb = {"numba_losses_ms": r["lib_fb_buf"], "numpy_ms": r["numpy_fb"], "torch_ms": r.get("torch_fb")}
        rows.append(_row("pairwise", name, _shape(data["shape"]), fwd, fb))
    return rows


def sdml_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``cpu_sdml``'s data (one per shape); no floor."""
    rows = []
    for case, r in data["times_ms"].items():
        t = data["torch"].get(case, {})
        fwd = {"numba_losses_ms": r["lib_fwd"], "numpy_ms": r["numpy_fwd"], "torch_ms": t.get("torch_fwd")}
        fb = {"numba_losses_ms": r["lib_fb_buf"], "numpy_ms": r["numpy_fb"], "torch_ms": t.get("torch_fb")}
        rows.append(_row("sdml", "SDMLLoss", case, fwd, fb))
    return rows


def cpu_rows(sections: dict[str, Any], elementwise_shape: tuple[int, int]) -> list[dict[str, Any]]:
    """All rows of a CPU run, family by family, from each family's raw results (``Section.data``)."""
    convert = {
        "elementwise": lambda d: elementwise_rows(d, elementwise_shape),
        "softmax": softmax_rows,
        "ctc": ctc_rows,
        "pairwise": pairwise_rows,
        "sdml": sdml_rows,
    }
    rows = []
    for family, data in sections.items():
        rows += convert[family](data)
    return rows


def command_line(argv: list[str] | None) -> str:
    """The command as typed from the repository root: ``python asv_bench/compare.py ARGS``."""
    args = sys.argv[1:] if argv is None else argv
    script = Path(sys.argv[0]) if argv is None and sys.argv[0] else Path("asv_bench/compare.py")
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    env = f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']} " if "NUMBA_NUM_THREADS" in os.environ else ""
    return env + shlex.join(["python", str(script), *args])


def results_document(
    rows: list[dict[str, Any]],
    *,
    command: str,
    mode: str,
    device: str,
    load_average: tuple[float, float],
    duration_s: float,
) -> dict[str, Any]:
    """The whole results file as a dict (see the module docstring)."""
    return {
        "format": FORMAT,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "mode": mode,
        "device": device,
        "quiet": load_average[0] < QUIET_LOAD,
        "load_average": [round(x, 2) for x in load_average],
        "duration_s": round(duration_s, 1),
        "machine": machine_info(),
        "notes": NOTES,
        "rows": rows,
    }
