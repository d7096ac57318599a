"""Side-by-side timings of softmax cross-entropy: numba_losses vs NumPy vs PyTorch CPU.

Usage::

    python asv_bench/compare_softmax.py [--quick] [--markdown]

One run prints, for float32 logits of shape (8192, 32000) and (4096, 1000)
with sparse int64 labels:

* this library's ``SoftmaxCELoss().forward_backward`` into reused ``out`` /
  ``grad_out`` buffers, without buffers, and the forward alone;
* a vectorised NumPy version (max shift, ``exp``, ``log``, one-hot gradient);
* PyTorch's ``F.cross_entropy(reduction='none')`` forward and autograd
  backward (head of ones), when PyTorch is installed;
* effective bandwidth against two bounds measured in the same run: the
  2-thread numba triad (two reads, one write) and "read the logits twice,
  write the gradient once" at the triad's rate;
* whether LLVM vectorised the exponentials: the fused kernel's ns per element
  next to a loop of scalar ``math.exp`` (libm) over the same data.

Times are the minimum of N calls after one warm-up call. Ratios are the
figures to quote; the absolute times depend on the (shared) machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
from numba import njit, prange

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmarks.common import best_ms, triad  # noqa: E402

import numba_losses as nl  # noqa: E402

SHAPES = [(8192, 32000), (4096, 1000)]


def numpy_softmax_ce(x: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss per row and its gradient, NumPy only (float32 throughout)."""
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


def _torch_case(x: np.ndarray, lab: np.ndarray, repeats: int) -> dict[str, float] | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch
    import torch.nn.functional as F

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


def _triad_gbs(repeats: int) -> float:
    """The 2-thread numba triad ``o = a + 2 b`` on 3 x 64 MiB, in GB/s."""
    a = np.ones(1 << 24, np.float32)
    b = np.ones_like(a)
    o = np.empty_like(a)
    return 3 * a.nbytes / best_ms(lambda: triad(a, b, o), repeats) / 1e6


def _measure(shape: tuple[int, int], loss: nl.SoftmaxCELoss, repeats: int, triad_gbs: float) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 3
    lab = rng.integers(0, shape[1], shape[0])
    out_buf = np.empty(shape[0], np.float32)
    grad_buf = np.empty(shape, np.float32)
    t_buf = best_ms(lambda: loss.forward_backward(x, lab, out=out_buf, grad_out=grad_buf), repeats)
    t_nobuf = best_ms(lambda: loss.forward_backward(x, lab), repeats)
    t_fwd = best_ms(lambda: loss(x, lab), repeats)
    t_np = best_ms(lambda: numpy_softmax_ce(x, lab), max(2, repeats // 2))
    sums = np.empty(shape[0])
    t_libm = best_ms(lambda: _libm_exp_rows(x, sums), repeats)
    torch_t = _torch_case(x, lab, repeats)
    bound_ms = 3 * x.nbytes / (triad_gbs * 1e6)  # logits twice + gradient once at triad speed
    return {
        "shape": shape,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller large shape")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    shapes = [(2048, 32000), (4096, 1000)] if args.quick else SHAPES

    triad_gbs = _triad_gbs(repeats)
    loss = nl.SoftmaxCELoss()
    rows = [_measure(shape, loss, repeats, triad_gbs) for shape in shapes]

    sep = "|" if args.markdown else " "
    print(f"numba {__import__('numba').__version__}, numpy {np.__version__}; triad {triad_gbs:.1f} GB/s (2 threads)")
    head = ["shape", "lib f+b buf ms", "lib f+b ms", "lib fwd ms", "NumPy f+b ms", "torch fwd ms", "torch f+b ms",
            "vs torch", "vs NumPy", "GB/s (3 passes)", "of bound", "ns/elem", "libm exp ns/elem"]  # fmt: skip
    print(sep.join(head))
    if args.markdown:
        print("|".join("---" for _ in head))
    for r in rows:
        cells = [
            "x".join(map(str, r["shape"])),
            f"{r['lib_fb_buffers']:.1f}",
            f"{r['lib_fb']:.1f}",
            f"{r['lib_fwd']:.1f}",
            f"{r['numpy_fb']:.1f}",
            f"{r['torch_fwd']:.1f}",
            f"{r['torch_fb']:.1f}",
            f"{r['torch_fb'] / r['lib_fb_buffers']:.2f}x",
            f"{r['numpy_fb'] / r['lib_fb_buffers']:.2f}x",
            f"{r['gbs']:.1f}",
            f"{100 * r['of_bound']:.0f}%",
            f"{r['ns_per_elem']:.2f}",
            f"{r['libm_ns_per_elem']:.2f}",
        ]
        print(sep.join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
