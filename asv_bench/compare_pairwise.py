"""Side-by-side timings of TripletLoss and CosineEmbeddingLoss: numba_losses, NumPy, PyTorch CPU.

Usage::

    python asv_bench/compare_pairwise.py [--repeats N] [--rounds R] [--markdown]

At (4096, 512) float32 (4096 rows of 512-element vectors) it times, for both
losses, the forward pass and forward+backward (head gradient of ones):

* numba_losses: ``loss(...)``, ``loss.forward_backward(...)`` and the same into
  reused ``out`` / ``grad_out`` buffers;
* the vectorised NumPy versions of ``benchmarks/bench_pairwise.py``;
* PyTorch CPU expressions computing the same math (``F.triplet_margin_loss``
  uses distances, not MXNet's sum of squared differences, and
  ``F.cosine_embedding_loss`` puts its epsilon elsewhere), with the gradients
  of every differentiable input from autograd. PyTorch runs in a child
  process (``--torch-worker``) so its OpenMP runtime stays away from numba's.

Each time is the minimum over ``R`` rounds of the minimum of ``N`` calls after
a warm-up call: the machine may be shared, and the minimum is the least
disturbed measurement. Ratios are NumPy or PyTorch time over numba_losses time
(forward vs forward; forward+backward vs forward+backward without buffers, and
in the last column vs the buffered call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmarks.bench_pairwise import CASES, LARGE, MARGIN_COSINE, MARGIN_TRIPLET  # noqa: E402
from benchmarks.common import best_ms  # noqa: E402


# -- the three implementations ------------------------------------------------------------
def library_and_numpy(repeats: int) -> dict[str, dict[str, float]]:
    """Times (ms) of numba_losses and NumPy for both losses."""
    return {name: _library_and_numpy(name, repeats) for name in CASES}


def _library_and_numpy(name: str, repeats: int) -> dict[str, float]:
    make, inputs, numpy_loss, margin = CASES[name]
    loss = make(margin=margin)
    args = inputs(LARGE)
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

    return torch.relu(((p - x) ** 2 - (n - x) ** 2).sum(1) + MARGIN_TRIPLET)


def torch_cosine(a: Any, b: Any, y: Any) -> Any:
    """MXNet's CosineEmbeddingLoss in PyTorch, shape ``(M, 1)``."""
    import torch

    c = (a * b).sum(1) / torch.clamp(a.norm(dim=1) * b.norm(dim=1), min=1e-12)
    neg = torch.where(y == -1, torch.relu(c - MARGIN_COSINE), torch.zeros_like(c))
    return torch.where(y == 1, 1 - c, neg).unsqueeze(1)


def torch_worker(repeats: int) -> dict[str, Any]:
    """PyTorch times (ms) of both losses; run in a child process."""
    try:
        import torch
    except ImportError as exc:
        return {"error": f"import torch failed: {exc}"}
    res: dict[str, Any] = {"version": torch.__version__, "threads": torch.get_num_threads()}
    for name, fn, arrays, n_diff in (
        ("TripletLoss", torch_triplet, CASES["TripletLoss"][1](LARGE), 3),
        ("CosineEmbeddingLoss", torch_cosine, CASES["CosineEmbeddingLoss"][1](LARGE), 2),
    ):
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

        res[name] = {"torch_fwd": best_ms(fwd, repeats), "torch_fb": best_ms(fb, repeats)}
    return res


def run_torch(repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"torch worker exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


# -- output ---------------------------------------------------------------------------------
def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _x(num: float | None, den: float) -> str:
    return "n/a" if num is None else f"{num / den:.1f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="calls per measurement (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds, the minimum is kept (default 3)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--torch-worker", type=int, metavar="REPEATS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        print(json.dumps(torch_worker(args.torch_worker)))
        return

    import numba

    load0 = os.getloadavg()[0]
    best: dict[str, dict[str, float]] = {}
    torch_info: dict[str, Any] = {}
    for _ in range(args.rounds):
        for name, times in library_and_numpy(args.repeats).items():
            for key, v in times.items():
                best.setdefault(name, {})[key] = min(v, best.get(name, {}).get(key, float("inf")))
        t = run_torch(args.repeats)
        if "error" in t:
            torch_info = t
            continue
        torch_info.update({k: t[k] for k in ("version", "threads")})
        for name in best:
            for key, v in t[name].items():
                best[name][key] = min(v, best[name].get(key, float("inf")))
    load1 = os.getloadavg()[0]

    print(
        f"python {platform.python_version()}  numpy {np.__version__}  numba {numba.__version__} "
        f"({numba.get_num_threads()} threads)  numba_losses {__import__('numba_losses').__version__}; "
        f"cpus {os.cpu_count()}"
    )
    if "error" in torch_info:
        print(f"torch: skipped ({torch_info['error']})")
    else:
        print(f"torch {torch_info['version']} CPU, {torch_info['threads']} intra-op threads (child process)")
    print(f"load average (1 min) {load0:.2f} at start, {load1:.2f} at end (shared machine: minima are reported)")
    headers = [
        "loss",
        "fwd ms",
        "fb ms",
        "fb+buf ms",
        "NumPy fwd",
        "NumPy fb",
        "torch fwd",
        "torch fb",
        "x NumPy fwd",
        "x NumPy fb",
        "x torch fwd",
        "x torch fb",
        "x NumPy fb (buf)",
    ]
    rows = []
    for name, r in best.items():
        tf, tb = r.get("torch_fwd"), r.get("torch_fb")
        rows.append(
            [
                name,
                _ms(r["lib_fwd"]),
                _ms(r["lib_fb"]),
                _ms(r["lib_fb_buf"]),
                _ms(r["numpy_fwd"]),
                _ms(r["numpy_fb"]),
                _ms(tf),
                _ms(tb),
                _x(r["numpy_fwd"], r["lib_fwd"]),
                _x(r["numpy_fb"], r["lib_fb"]),
                _x(tf, r["lib_fwd"]),
                _x(tb, r["lib_fb"]),
                _x(r["numpy_fb"], r["lib_fb_buf"]),
            ]
        )
    print(
        f"\n{LARGE} float32, min over {args.rounds} rounds of the min of {args.repeats} calls; fwd = forward, "
        "fb = forward+backward (new outputs), fb+buf = into reused buffers; x = other time / numba_losses time"
    )
    print(render(headers, rows, args.markdown))


if __name__ == "__main__":
    main()
