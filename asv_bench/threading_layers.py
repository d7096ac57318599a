"""Per-call cost of Numba's threading layers (TBB, OpenMP, workqueue) for this library's kernels.

Usage::

    NUMBA_NUM_THREADS=2 python asv_bench/threading_layers.py [--layers tbb omp] [--repeats N] [--markdown]

Each layer runs in its own fresh process (Numba picks a layer once per
process, at the first parallel call), on the same inputs, one after the other;
the table gives the median wall time per call (microseconds) and the ratio to
the first layer. Kernels are compiled (or loaded from the cache) before
timing. Shapes: a tiny elementwise call (serial kernels: the layer only costs
its dispatch), a large elementwise and a softmax cross-entropy call (parallel
kernels), and CTC.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = ("L2 fb (64,10)", "L2 fb+buf (4096,4096)", "SoftmaxCE fb (4096,1000)", "CTC fb T=200 N=32 C=40 L=50")

_WORKER = r"""
import json, sys, time
import numpy as np, numba, numba_losses as nl

repeats = int(sys.argv[1])
rng = np.random.default_rng(0)


def timed(fn):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


small = rng.random((64, 10), dtype=np.float32), rng.random((64, 10), dtype=np.float32)
big = rng.random((4096, 4096), dtype=np.float32), rng.random((4096, 4096), dtype=np.float32)
out, grad = np.empty(4096, np.float32), np.empty((4096, 4096), np.float32)
logits, labels = rng.standard_normal((4096, 1000), dtype=np.float32), rng.integers(0, 1000, 4096).astype(np.float32)
ctc_pred = rng.standard_normal((32, 200, 40), dtype=np.float32)
ctc_label = rng.integers(0, 39, (32, 50)).astype(np.float32)
l2, ce, ctc = nl.L2Loss(), nl.SoftmaxCELoss(), nl.CTCLoss()
result = {
    "L2 fb (64,10)": timed(lambda: l2.forward_backward(*small)),
    "L2 fb+buf (4096,4096)": timed(lambda: l2.forward_backward(*big, out=out, grad_out=grad)),
    "SoftmaxCE fb (4096,1000)": timed(lambda: ce.forward_backward(logits, labels)),
    "CTC fb T=200 N=32 C=40 L=50": timed(lambda: ctc.forward_backward(ctc_pred, ctc_label)),
}
result["layer"] = numba.threading_layer()
print(json.dumps(result))
"""


def run_layer(layer: str, repeats: int) -> dict:
    """Time every case in a fresh process with ``NUMBA_THREADING_LAYER=layer``."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(repeats)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["tbb", "omp"])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    results = {layer: run_layer(layer, args.repeats) for layer in args.layers}
    first = args.layers[0]
    header = ["case"] + [f"{layer} (us)" for layer in args.layers] + [f"{layer} / {first}" for layer in args.layers[1:]]
    rows = []
    for case in CASES:
        cells = [case]
        for layer in args.layers:
            r = results[layer]
            cells.append(f"{r[case]:.1f}" if case in r else r.get("error", "?"))
        for layer in args.layers[1:]:
            a, b = results[first].get(case), results[layer].get(case)
            cells.append(f"{b / a:.2f}" if a and b else "-")
        rows.append(cells)
    threads = os.environ.get("NUMBA_NUM_THREADS", "default")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for cells in rows:
            print("| " + " | ".join(cells) + " |")
    else:
        for cells in [header, *rows]:
            print("  ".join(f"{c:>28}" if i == 0 else f"{c:>12}" for i, c in enumerate(cells)))
    print(f"NUMBA_NUM_THREADS={threads}; medians of {args.repeats} calls; one fresh process per layer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
