"""Throughput of the losses over Dask arrays on a LocalCluster of 1 and 2 workers.

Usage::

    python asv_bench/bench_dask.py [--gib 1.0] [--workers 1 2] [--repeats 2] [--drop-gradients] [--smoke]

For each worker count it starts a ``LocalCluster`` (``processes=True``, one
thread per worker, ``NUMBA_NUM_THREADS=1`` in the workers, so that workers
and not kernel threads are what scales), persists float32 inputs of about
``--gib`` GiB of ``pred`` in the workers' memory, then times, best of
``--repeats``:

* ``L2Loss.forward_backward`` (pred and label ``(rows, 16384)``, blocks of
  512 rows, 32 MiB) and ``SoftmaxCELoss.forward_backward`` (``(rows, 1000)``
  logits, blocks of 8192 rows, 31 MiB, int32 labels), values and gradients
  persisted in the workers (nothing is gathered on the driver); with
  ``--drop-gradients`` each gradient block is handed to a task that returns
  its row count and is then released, so the workers hold only the inputs
  and the values (this is how 4 GiB of ``pred`` fit on a 24 GiB machine);
* the same computed by ``da.map_blocks`` of NumPy expressions (the reference).

It prints GB/s (bytes of the float32 inputs read per second), the 1 -> 2
worker scaling and, on a size that fits in memory (1/8 of ``--gib``), the
overhead of the Dask path on 2 workers against one in-memory call of the
library on the same NumPy arrays (all cores, the parallel kernels).
``--smoke`` runs every path once on tiny shapes and prints ``ok``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _np_l2(x, y):
    d = x - y
    return (0.5 * d * d).mean(axis=1, dtype=np.float64).astype(np.float32), d / np.float32(x.shape[1])


def _np_softmax(x, lab):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    rows = np.arange(x.shape[0])
    value = (np.log(s[:, 0]) + m[:, 0] - x[rows, lab]).astype(np.float32)
    grad = e / s
    grad[rows, lab] -= 1
    return value, grad


def _reference(fn, a, b):
    """``fn`` on every block of rows (NumPy), split into the value and the gradient."""
    import dask.array as da

    meta = np.empty((0,), object)
    pair = da.blockwise(fn, "i", a, "ij", b, "i" if b.ndim == 1 else "ij", dtype=object, meta=meta, concatenate=True)
    value = da.blockwise(_first, "i", pair, "i", dtype=np.float32, meta=np.empty((0,), np.float32))
    grad = da.blockwise(
        _second, "ij", pair, "i", new_axes={"j": a.shape[1]}, dtype=np.float32, meta=np.empty((0, 0), np.float32)
    )
    return value, grad


def _rows(g):
    """One int per gradient block: a task that needs the block, so it is computed, then released."""
    return np.array([g.shape[0]])


def _drop(grad):
    """``grad`` reduced to its per-block row counts (the blocks are computed and not kept)."""
    return grad.map_blocks(_rows, drop_axis=1, chunks=((1,) * grad.numblocks[0],), dtype=np.int64)


def _first(t):
    return t[0]


def _second(t):
    return t[1]


def _best(run, repeats):
    """Best wall time of ``run(tag)``, which persists its results in the workers; waits for every block."""
    from distributed import futures_of, wait

    best = float("inf")
    for _ in range(repeats):
        tag = next(_TAGS)
        start = time.perf_counter()
        results = run(tag)
        wait(futures_of(results))
        best = min(best, time.perf_counter() - start)
        del results
    return best


_TAGS = iter(range(10**9))


def _fresh(a, tag):
    """``a`` under new task keys (an identity per block): a repeated run is computed again, not reused."""
    return a.map_blocks(_identity, name=f"bench-input-{tag}-{a.name}", dtype=a.dtype, meta=a._meta)


def _identity(x):
    return x


def _cases(gib, rng, smoke=False):
    """``name -> (pred, label, NumPy reference, bytes of float32 inputs)``, lazily generated."""
    cols_l2, block_l2, cols_ce, block_ce = (64, 256, 10, 512) if smoke else (16384, 512, 1000, 8192)
    rows_l2 = max(4 * block_l2, int(gib * 2**30 / (cols_l2 * 4)))
    x = rng.standard_normal((rows_l2, cols_l2), chunks=(block_l2, cols_l2), dtype=np.float32)
    y = rng.standard_normal((rows_l2, cols_l2), chunks=(block_l2, cols_l2), dtype=np.float32)
    rows_ce = max(4 * block_ce, int(gib * 2**30 / (cols_ce * 4)))
    z = rng.standard_normal((rows_ce, cols_ce), chunks=(block_ce, cols_ce), dtype=np.float32)
    lab = rng.integers(0, cols_ce, rows_ce, chunks=block_ce, dtype=np.int32)
    return {"L2Loss": (x, y, _np_l2, 2 * x.nbytes), "SoftmaxCELoss": (z, lab, _np_softmax, z.nbytes)}


def run(gib: float, workers: list[int], repeats: int, smoke: bool, drop_gradients: bool = False) -> None:
    import dask
    import dask.array as da
    from distributed import Client, wait

    import numba_losses as nl

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    losses = {"L2Loss": nl.L2Loss(), "SoftmaxCELoss": nl.SoftmaxCELoss()}
    rates: dict[tuple[str, str, int], float] = {}
    for n in workers:
        with _worker_cluster(n) as cluster:
            with Client(cluster) as client, dask.config.set(scheduler=client.get):
                for name, (a, b, fn, nbytes) in _cases(gib, da.random.default_rng(0), smoke).items():
                    a, b = client.persist([a, b])
                    wait([a, b])
                    loss = losses[name]

                    keep = _dropper if drop_gradients else _flat

                    def lib(tag, loss=loss, a=a, b=b, keep=keep):
                        return client.persist(list(keep(loss.forward_backward(_fresh(a, tag), _fresh(b, tag)))))

                    def ref(tag, fn=fn, a=a, b=b, keep=keep):
                        value, grad = _reference(fn, _fresh(a, tag), _fresh(b, tag))
                        return client.persist(list(keep((value, (grad,)))))

                    if smoke:
                        got = client.compute(list(_flat(loss.forward_backward(a, b))), sync=True)
                        want = client.compute(list(_reference(fn, a, b)), sync=True)
                        for g, w in zip(got, want, strict=True):
                            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
                        continue
                    _best(lib, 1)  # compile in the workers
                    _best(ref, 1)
                    for kind, fn_run in (("numba_losses", lib), ("map_blocks NumPy", ref)):
                        seconds = _best(fn_run, repeats)
                        rates[(name, kind, n)] = nbytes / seconds / 1e9
                        print(
                            f"{name:14s} {kind:18s} {n} worker(s): {nbytes / 2**30:5.2f} GiB in {seconds:6.2f} s "
                            f"= {nbytes / seconds / 1e9:5.2f} GB/s",
                            flush=True,
                        )
                    del a, b
            if n == workers[-1] and not smoke:
                _overhead(gib / 8, losses, client_cluster=cluster, repeats=repeats)
    if smoke:
        print("ok")
        return
    if len(workers) > 1:
        lo, hi = workers[0], workers[-1]
        for (name, kind, n), rate in rates.items():
            if n == hi:
                print(f"scaling {lo} -> {hi} workers, {name}, {kind}: x{rate / rates[(name, kind, lo)]:.2f}")


def _overhead(gib, losses, client_cluster, repeats):
    """Dask on the cluster vs one in-memory call (parallel kernels, this process) on the same arrays."""
    import dask
    import dask.array as da
    from distributed import Client, wait

    cases = _cases(gib, da.random.default_rng(1))
    with Client(client_cluster) as client, dask.config.set(scheduler=client.get):
        for name, (a, b, _, nbytes) in cases.items():
            xa, xb = dask.compute(a, b, scheduler="threads")
            loss = losses[name]
            loss.forward_backward(xa, xb)  # compile here
            best_mem = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                loss.forward_backward(xa, xb)
                best_mem = min(best_mem, time.perf_counter() - start)
            pa, pb = client.persist([a, b])
            wait([pa, pb])
            dask_s = _best(
                lambda tag, loss=loss, pa=pa, pb=pb: client.persist(
                    list(_flat(loss.forward_backward(_fresh(pa, tag), _fresh(pb, tag))))
                ),
                repeats,
            )
            print(
                f"overhead {name}: {nbytes / 2**20:.0f} MiB, in-memory {best_mem:.3f} s, "
                f"Dask on the cluster {dask_s:.3f} s (x{dask_s / best_mem:.2f})"
            )


def _worker_cluster(n):
    """A LocalCluster of ``n`` one-thread worker processes with ``NUMBA_NUM_THREADS=1`` (set while they start)."""
    from distributed import LocalCluster

    old = os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = "1"  # the workers inherit it; this process's Numba keeps its threads
    try:
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    finally:
        if old is None:
            os.environ.pop("NUMBA_NUM_THREADS")
        else:
            os.environ["NUMBA_NUM_THREADS"] = old


def _flat(vg):
    return (vg[0], *vg[1])


def _dropper(vg):
    return (vg[0], *(_drop(g) for g in vg[1]))


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
