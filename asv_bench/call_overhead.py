"""Per-call overhead of the losses at tiny shapes on the CPU (warm kernels), in microseconds.

Usage (from the repository root)::

    NUMBA_NUM_THREADS=2 python asv_bench/call_overhead.py [NAME ...] [--calls N] [--smoke]

Each row is the lowest of five medians of ``--calls`` warm calls (the lowest median resists other
load on a shared machine). Shapes: (64, 10) for L2 and SoftmaxCE, (64, 16) for Triplet,
CosineEmbedding and SDML, CTC (N, T, C, L) = (2, 8, 5, 3); "bufs" passes ``out=`` / ``grad_out=``
buffers. SDML at (64, 16) does real work (4096 distances, three matrix products); its (8, 4) row
is the fixed cost of a call. NAME filters rows by substring. ``--smoke`` runs every row for a few
calls and prints ``ok``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import numba_losses as nl


def lowest_median_us(call: Callable[[], object], calls: int, batches: int = 5) -> float:
    """The lowest of ``batches`` medians of ``calls`` timed calls, in microseconds (after 50 warm-up calls)."""
    for _ in range(min(calls, 50)):
        call()
    best = float("inf")
    for _ in range(batches):
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times))
    return 1e6 * best


def cases() -> dict[str, Callable[[], object]]:
    """``{name: call}``: every call on fixed random inputs."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    x, t = rng.standard_normal((64, 10)).astype(f32), rng.standard_normal((64, 10)).astype(f32)
    y = rng.integers(0, 10, 64)
    ones = np.ones(64, f32)
    out, g = np.empty(64, f32), np.empty((64, 10), f32)
    ctc_x = rng.standard_normal((2, 8, 5)).astype(f32)
    ctc_y = rng.integers(1, 5, (2, 3)).astype(np.int32)
    ctc_out, ctc_g = np.empty(2, f32), np.empty_like(ctc_x)
    a, p, n = (rng.standard_normal((64, 16)).astype(f32) for _ in range(3))
    sign = np.sign(rng.standard_normal(64)).astype(f32)
    ga, gp, gn = (np.empty((64, 16), f32) for _ in range(3))
    a8, p8 = a[:8, :4].copy(), p[:8, :4].copy()
    ga8, gp8 = np.empty((8, 4), f32), np.empty((8, 4), f32)
    l2, ce, ctc = nl.L2Loss(), nl.SoftmaxCELoss(), nl.CTCLoss(layout="NTC")
    triplet, cosine, sdml = nl.TripletLoss(), nl.CosineEmbeddingLoss(), nl.SDMLLoss()
    return {
        "L2 forward": lambda: l2(x, t),
        "L2 fwd+bwd bufs": lambda: l2.forward_backward(x, t, out=out, grad_out=g),
        "SoftmaxCE forward": lambda: ce(x, y),
        "SoftmaxCE fwd+bwd": lambda: ce.forward_backward(x, y),
        "SoftmaxCE fwd+bwd bufs": lambda: ce.forward_backward(x, y, out=out, grad_out=g),
        "SoftmaxCE fwd+bwd out_grad=ones": lambda: ce.forward_backward(x, y, out_grad=ones),
        "CTC fwd+bwd bufs": lambda: ctc.forward_backward(ctc_x, ctc_y, out=ctc_out, grad_out=ctc_g),
        "Triplet fwd+bwd bufs": lambda: triplet.forward_backward(a, p, n, out=out, grad_out=(ga, gp, gn)),
        "CosineEmbedding fwd+bwd bufs": lambda: cosine.forward_backward(
            a, p, sign, out=out.reshape(64, 1), grad_out=(ga, gp)
        ),
        "SDML fwd+bwd": lambda: sdml.forward_backward(a, p),
        "SDML fwd+bwd bufs": lambda: sdml.forward_backward(a, p, out=out, grad_out=(ga, gp)),
        "SDML (8, 4) fwd+bwd bufs": lambda: sdml.forward_backward(a8, p8, out=out[:8], grad_out=(ga8, gp8)),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print one row per case; returns ``{name: us}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="substrings selecting rows (default: all)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="a few calls per row; prints 'ok'")
    args = parser.parse_args(argv)
    calls = 3 if args.smoke else args.calls
    results = {}
    for name, call in cases().items():
        if args.names and not any(s in name for s in args.names):
            continue
        results[name] = lowest_median_us(call, calls, 1 if args.smoke else 5)
        if not args.smoke:
            print(f"{name:34s} {results[name]:8.1f} us", flush=True)
    if args.smoke:
        print("ok")
    return results


if __name__ == "__main__":
    main()
