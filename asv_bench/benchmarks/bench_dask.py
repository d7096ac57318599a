"""Losses over Dask arrays on a ``LocalCluster``: numba_losses against ``map_blocks`` of NumPy.

Two float32 cases, each about ``GIB`` GiB of ``pred`` (environment variable
``NUMBA_LOSSES_BENCH_DASK_GIB``, default 0.25 for asv; the script
``asv_bench/bench_dask.py`` takes ``--gib``):

* ``L2Loss.forward_backward``: ``pred`` and ``label`` ``(rows, 16384)``,
  blocks of 512 rows (32 MiB);
* ``SoftmaxCELoss.forward_backward``: logits ``(rows, 1000)``, blocks of
  8192 rows (31 MiB), int32 class ids.

The reference computes the same values and gradients with NumPy expressions,
one ``da.blockwise`` task per block (the way one would write it by hand).
Inputs are persisted in the workers before timing; each timed run computes
every block again (fresh task keys) and waits for all of them. Gradient
blocks are either kept in the workers' memory or handed to a task that
returns their row count and are then released (``drop_gradients``), so the
workers need only the inputs' memory.

The cluster: ``LocalCluster(n_workers, threads_per_worker=1,
processes=True)`` with ``NUMBA_NUM_THREADS=1`` in the workers, so that
workers and not kernel threads are what scales.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import numba_losses as nl

GIB = float(os.environ.get("NUMBA_LOSSES_BENCH_DASK_GIB", "0.25"))
LOSSES = ("L2Loss", "SoftmaxCELoss")
PATHS = ("numba_losses", "map_blocks NumPy")


def numpy_l2(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L2Loss of a block of rows and its gradient, in NumPy: ``mean(0.5 (x - y)^2)``, ``(x - y) / K``."""
    d = x - y
    return (0.5 * d * d).mean(axis=1, dtype=np.float64).astype(np.float32), d / np.float32(x.shape[1])


def numpy_softmax(x: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax cross-entropy of a block of rows and its gradient ``softmax(x) - onehot(lab)``, in NumPy."""
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    rows = np.arange(x.shape[0])
    value = (np.log(s[:, 0]) + m[:, 0] - x[rows, lab]).astype(np.float32)
    grad = e / s
    grad[rows, lab] -= 1
    return value, grad


def cases(gib: float, rng: Any, smoke: bool = False) -> dict[str, tuple[Any, Any, Callable, int]]:
    """``name -> (pred, label, NumPy reference, bytes of the float32 inputs read)``, lazily drawn."""
    cols_l2, block_l2, cols_ce, block_ce = (64, 256, 10, 512) if smoke else (16384, 512, 1000, 8192)
    rows_l2 = max(4 * block_l2, int(gib * 2**30 / (cols_l2 * 4)))
    x = rng.standard_normal((rows_l2, cols_l2), chunks=(block_l2, cols_l2), dtype=np.float32)
    y = rng.standard_normal((rows_l2, cols_l2), chunks=(block_l2, cols_l2), dtype=np.float32)
    rows_ce = max(4 * block_ce, int(gib * 2**30 / (cols_ce * 4)))
    z = rng.standard_normal((rows_ce, cols_ce), chunks=(block_ce, cols_ce), dtype=np.float32)
    lab = rng.integers(0, cols_ce, rows_ce, chunks=block_ce, dtype=np.int32)
    return {"L2Loss": (x, y, numpy_l2, 2 * x.nbytes), "SoftmaxCELoss": (z, lab, numpy_softmax, z.nbytes)}


def reference(fn: Callable, a: Any, b: Any) -> tuple[Any, Any]:
    """``fn`` on every block of rows of ``a`` and ``b`` (one task per block), as ``(value, gradient)``."""
    import dask.array as da

    meta = np.empty((0,), object)
    pair = da.blockwise(fn, "i", a, "ij", b, "i" if b.ndim == 1 else "ij", dtype=object, meta=meta, concatenate=True)
    value = da.blockwise(_first, "i", pair, "i", dtype=np.float32, meta=np.empty((0,), np.float32))
    grad = da.blockwise(
        _second, "ij", pair, "i", new_axes={"j": a.shape[1]}, dtype=np.float32, meta=np.empty((0, 0), np.float32)
    )
    return value, grad


def _first(t: tuple) -> Any:
    return t[0]


def _second(t: tuple) -> Any:
    return t[1]


def _rows(g: np.ndarray) -> np.ndarray:
    """One int per gradient block: a task that needs the block, so it is computed, then released."""
    return np.array([g.shape[0]])


def results(value: Any, grads: tuple, drop_gradients: bool) -> list:
    """The arrays to persist: the value and the gradients, or their per-block row counts."""
    if not drop_gradients:
        return [value, *grads]
    return [value, *(g.map_blocks(_rows, drop_axis=1, chunks=((1,) * g.numblocks[0],), dtype=np.int64) for g in grads)]


_TAGS = itertools.count()


def fresh(a: Any) -> Any:
    """``a`` under new task keys (an identity per block): a repeated run is computed again, not reused."""
    return a.map_blocks(_identity, name=f"bench-input-{next(_TAGS)}-{a.name}", dtype=a.dtype, meta=a._meta)


def _identity(x: Any) -> Any:
    return x


def worker_cluster(n: int) -> Any:
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


def timed_run(client: Any, loss: Any, fn: Callable, path: str, a: Any, b: Any, drop_gradients: bool) -> float:
    """Seconds to compute one loss path over the persisted ``a``, ``b`` and persist its results."""
    from distributed import futures_of, wait

    start = time.perf_counter()
    if path == "numba_losses":
        value, grads = loss.forward_backward(fresh(a), fresh(b))
    else:
        value, grad = reference(fn, fresh(a), fresh(b))
        grads = (grad,)
    kept = client.persist(results(value, grads, drop_gradients))
    wait(futures_of(kept))
    seconds = time.perf_counter() - start
    del kept
    return seconds


class DaskLocalCluster:
    """Forward+backward over Dask arrays persisted on a LocalCluster of 1 or 2 worker processes.

    The cluster starts and the inputs are persisted in ``setup`` (not timed);
    one untimed run compiles the kernels in the workers (or loads them from
    the on-disk cache). Gradient blocks are released once computed.
    """

    params = ([1, 2], list(LOSSES), list(PATHS))
    param_names = ["workers", "loss", "path"]
    number = 1
    repeat = 3
    warmup_time = 0
    timeout = 600

    def setup(self, workers: int, loss: str, path: str) -> None:
        try:
            import dask.array as da
            from distributed import Client, wait
        except ImportError as exc:  # the dask extra is not installed
            raise NotImplementedError(str(exc)) from exc
        self.cluster = worker_cluster(workers)
        self.client = Client(self.cluster)
        a, b, self.fn, self.nbytes = cases(GIB, da.random.default_rng(0))[loss]
        self.a, self.b = self.client.persist([a, b])
        wait([self.a, self.b])
        self.loss = getattr(nl, loss)()
        timed_run(self.client, self.loss, self.fn, path, self.a, self.b, True)

    def teardown(self, workers: int, loss: str, path: str) -> None:
        self.client.close()
        self.cluster.close()

    def time_forward_backward(self, workers: int, loss: str, path: str) -> None:
        timed_run(self.client, self.loss, self.fn, path, self.a, self.b, True)
