"""Side-by-side timings of CTCLoss: numba_losses vs NumPy vs PyTorch CPU, in one run.

Usage::

    python asv_bench/compare_ctc.py [--quick] [--markdown]

For each case of :data:`benchmarks.bench_ctc.CASES` (float32 'TNC'
activations, full lengths) it prints this library's forward and
forward+backward (into reused ``out`` / ``grad_out`` buffers), the NumPy
version of :func:`benchmarks.bench_ctc.numpy_ctc`, and PyTorch's
``F.ctc_loss(F.log_softmax(x))`` forward and forward+backward (autograd, head
of ones) with 2 threads; the ratios; and the library's effective bandwidth
for "read the activations twice, write the gradient once" against the
2-thread numba triad measured in the same run. Before timing, the three
implementations' costs and gradients are compared (largest relative
difference printed), so the table compares equal work.

Times are the minimum of several calls after a warm-up call; the ratios are
the figures to quote.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmarks.bench_ctc import CASES, ctc_inputs, numpy_ctc  # noqa: E402
from benchmarks.common import best_ms, triad  # noqa: E402

import numba_losses as nl  # noqa: E402


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _torch(x: np.ndarray, lab: np.ndarray, repeats: int) -> dict[str, float] | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    t, n, c = x.shape
    tx = torch.from_numpy(x).requires_grad_(True)
    tl = torch.from_numpy(lab).long()
    il = torch.full((n,), t, dtype=torch.long)
    ll = torch.full((n,), lab.shape[1], dtype=torch.long)

    def cost() -> torch.Tensor:
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
    return {
        "fwd": best_ms(fwd, repeats),
        "fb": best_ms(fwd_bwd, repeats),
        "out": out,
        "grad": tx.grad.numpy().copy(),
    }


def _triad_gbs(repeats: int) -> float:
    a = np.ones(1 << 24, np.float32)
    b = np.ones_like(a)
    o = np.empty_like(a)
    return 3 * a.nbytes / best_ms(lambda: triad(a, b, o), repeats) / 1e6


def measure(case: tuple[int, int, int, int], repeats: int, triad_gbs: float) -> dict:
    x, lab = ctc_inputs(case)
    loss = nl.CTCLoss(layout="TNC")
    out, (grad,) = loss.forward_backward(x, lab)
    t_fb = best_ms(lambda: loss.forward_backward(x, lab, out=out, grad_out=grad), repeats)
    t_fwd = best_ms(lambda: loss(x, lab), repeats)
    np_out, np_grad = numpy_ctc(x, lab)
    t_np = best_ms(lambda: numpy_ctc(x, lab), max(2, repeats // 3))
    tr = _torch(x, lab, repeats)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    triad_gbs = _triad_gbs(repeats)
    rows = [measure(case, repeats, triad_gbs) for case in CASES]

    sep = "|" if args.markdown else " "
    print(f"numba {__import__('numba').__version__}, numpy {np.__version__}; triad {triad_gbs:.1f} GB/s (2 threads)")
    head = ["T,N,C,L", "lib fwd ms", "lib f+b ms", "NumPy f+b ms", "torch fwd ms", "torch f+b ms", "f+b vs torch",
            "fwd vs torch", "f+b vs NumPy", "GB/s (3 passes)", "of bound", "max rel diff NumPy/torch"]  # fmt: skip
    print(sep.join(head))
    if args.markdown:
        print("|".join("---" for _ in head))
    for r in rows:
        cells = [
            ",".join(map(str, r["case"])),
            f"{r['fwd']:.2f}",
            f"{r['fb']:.2f}",
            f"{r['numpy_fb']:.1f}",
            f"{r['torch_fwd']:.2f}",
            f"{r['torch_fb']:.2f}",
            f"{r['torch_fb'] / r['fb']:.2f}x",
            f"{r['torch_fwd'] / r['fwd']:.2f}x",
            f"{r['numpy_fb'] / r['fb']:.1f}x",
            f"{r['gbs']:.1f}",
            f"{100 * r['of_bound']:.0f}%",
            f"{r['diff_numpy']:.1e} / {r['diff_torch']:.1e}",
        ]
        print(sep.join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
