"""Throughput of the losses over Dask arrays on a LocalCluster of 1 and 2 workers.

Usage::

    python asv_bench/bench_dask.py [--gib 1.0] [--workers 1 2] [--repeats 2] [--drop-gradients] [--smoke]

The side-by-side form of the asv benchmark ``benchmarks/bench_dask.py``
(which has the cases, the NumPy reference and the cluster set-up). For each
worker count it starts a ``LocalCluster`` (``processes=True``, one thread per
worker, ``NUMBA_NUM_THREADS=1`` in the workers), persists float32 inputs of
about ``--gib`` GiB of ``pred`` in the workers' memory, then times, best of
``--repeats``:

* ``L2Loss.forward_backward`` (pred and label ``(rows, 16384)``, blocks of
  512 rows, 32 MiB) and ``SoftmaxCELoss.forward_backward`` (``(rows, 1000)``
  logits, blocks of 8192 rows, 31 MiB, int32 labels), values and gradients
  persisted in the workers (nothing is gathered on the driver); with
  ``--drop-gradients`` each gradient block is handed to a task that returns
  its row count and is then released, so the workers hold only the inputs
  and the values (this is how 4 GiB of ``pred`` fit on a 24 GiB machine);
* the same computed by ``da.blockwise`` of NumPy expressions (the reference).

It prints GB/s (bytes of the float32 inputs read per second), the 1 -> 2
worker scaling and, on a size that fits in memory (1/8 of ``--gib``), the
overhead of the Dask path on the largest cluster against one in-memory call
of the library on the same NumPy arrays (this process, the parallel kernels).
``--smoke`` runs every path once on tiny shapes, checks the library against
the reference and prints ``ok``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.bench_dask import PATHS, cases, reference, timed_run, worker_cluster  # noqa: E402

import numba_losses as nl  # noqa: E402


def run(gib: float, workers: list[int], repeats: int, smoke: bool, drop_gradients: bool = False) -> None:
    import dask.array as da
    from distributed import Client, wait

    rates: dict[tuple[str, str, int], float] = {}
    for n in workers:
        with worker_cluster(n) as cluster, Client(cluster) as client:
            for name, (a, b, fn, nbytes) in cases(gib, da.random.default_rng(0), smoke).items():
                a, b = client.persist([a, b])
                wait([a, b])
                loss = getattr(nl, name)()
                if smoke:
                    value, grads = loss.forward_backward(a, b)
                    got = client.compute([value, *grads], sync=True)
                    want = client.compute(list(reference(fn, a, b)), sync=True)
                    for g, w in zip(got, want, strict=True):
                        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
                    for path in PATHS:
                        timed_run(client, loss, fn, path, a, b, True)
                    continue
                for path in PATHS:
                    timed_run(client, loss, fn, path, a, b, drop_gradients)  # compile in the workers
                    seconds = min(timed_run(client, loss, fn, path, a, b, drop_gradients) for _ in range(repeats))
                    rates[(name, path, n)] = nbytes / seconds / 1e9
                    print(
                        f"{name:14s} {path:18s} {n} worker(s): {nbytes / 2**30:5.2f} GiB in {seconds:6.2f} s "
                        f"= {nbytes / seconds / 1e9:5.2f} GB/s",
                        flush=True,
                    )
                del a, b
            if n == workers[-1] and not smoke:
                _overhead(gib / 8, client, repeats, drop_gradients)
    if smoke:
        print("ok")
        return
    if len(workers) > 1:
        lo, hi = workers[0], workers[-1]
        for (name, path, n), rate in rates.items():
            if n == hi:
                print(f"scaling {lo} -> {hi} workers, {name}, {path}: x{rate / rates[(name, path, lo)]:.2f}")


def _overhead(gib: float, client, repeats: int, drop_gradients: bool) -> None:
    """Dask on the cluster vs one in-memory call (parallel kernels, this process) on the same arrays."""
    import dask
    import dask.array as da
    from distributed import wait

    for name, (a, b, fn, nbytes) in cases(gib, da.random.default_rng(1)).items():
        xa, xb = dask.compute(a, b, scheduler="threads")
        loss = getattr(nl, name)()
        loss.forward_backward(xa, xb)  # compile here
        best_mem = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            loss.forward_backward(xa, xb)
            best_mem = min(best_mem, time.perf_counter() - start)
        pa, pb = client.persist([a, b])
        wait([pa, pb])
        timed_run(client, loss, fn, "numba_losses", pa, pb, drop_gradients)
        dask_s = min(timed_run(client, loss, fn, "numba_losses", pa, pb, drop_gradients) for _ in range(repeats))
        print(
            f"overhead {name}: {nbytes / 2**20:.0f} MiB, in-memory {best_mem:.3f} s, "
            f"Dask on the cluster {dask_s:.3f} s (x{dask_s / best_mem:.2f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of float32 pred per loss (default 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--drop-gradients",
        action="store_true",
        help="release each gradient block once computed (inputs only in memory)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, every path once, prints ok")
    args = parser.parse_args(argv)
    if args.smoke:
        run(0.001, [1], 1, True)
    else:
        run(args.gib, args.workers, args.repeats, False, args.drop_gradients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
