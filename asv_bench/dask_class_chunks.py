"""SoftmaxCELoss over Dask with the class axis chunked: merged (max, sum of exponentials) vs rechunked.

Usage::

    python asv_bench/dask_class_chunks.py [--rows 2048] [--classes 32000] [--chunks 4] [--repeats 2]

``pred`` is ``(rows, classes)`` float32, generated lazily in ``--chunks``
chunks along the class axis (rows whole), with int32 class-id labels. Each
variant runs in its own process with Dask's synchronous scheduler:
``merge`` (``numba_losses.dask.MERGE_CLASS_CHUNKS = True``, the default) and
``rechunk`` (``False``: the class axis rechunked to one chunk). It computes
``forward_backward``'s value and the sum of squares of the gradient (so the
gradient streams through and is never gathered), and prints the best wall
time, the best CPU time of the process (user + system, all threads: steadier
than wall time on a shared machine) and the peak growth of the resident set over the process's state after a
small warm-up call (kernels compiled).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import threading, time, os
import numpy as np, dask, dask.array as da
import numba_losses as nl
import numba_losses.dask as nld

nld.MERGE_CLASS_CHUNKS = {merge}
rows, classes, chunks, repeats = {rows}, {classes}, {chunks}, {repeats}
loss = nl.SoftmaxCELoss()

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def inputs(r, c, k):
    rng = da.random.default_rng(0)
    x = rng.standard_normal((r, c), chunks=(r, -(-c // k)), dtype=np.float32)
    return x, rng.integers(0, c, r, chunks=r, dtype=np.int32)

def run(x, lab):
    v, (g,) = loss.forward_backward(x, lab)
    return dask.compute(v.sum(), (g * g).sum(), scheduler="synchronous")

run(*inputs(8, 64, chunks))  # compile
base = peak = rss()
done = False

def sample():
    global peak
    while not done:
        peak = max(peak, rss())
        time.sleep(0.002)

t = threading.Thread(target=sample)
t.start()
best = cpu = float("inf")
for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    total = run(*inputs(rows, classes, chunks))
    best = min(best, time.perf_counter() - start)
    cpu = min(cpu, time.process_time() - start_cpu)
done = True
t.join()
print(best, cpu, (peak - base) / 2**20, float(total[0]) / rows)
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--classes", type=int, default=32000)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(q for q in (str(ROOT), os.environ.get("PYTHONPATH")) if q)}
    mib = a.rows * a.classes * 4 / 2**20
    print(f"pred ({a.rows}, {a.classes}) float32 = {mib:.0f} MiB in {a.chunks} class chunks, synchronous scheduler")
    for merge in (True, False):
        code = CHILD.format(merge=merge, rows=a.rows, classes=a.classes, chunks=a.chunks, repeats=a.repeats)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        seconds, cpu, grown, mean = (float(v) for v in out.stdout.split())
        name = "merge" if merge else "rechunk"
        print(
            f"{name:8s} best {seconds:6.2f} s wall, {cpu:6.2f} s CPU   peak RSS growth {grown:5.0f} MiB   "
            f"mean loss {mean:.6f}"
        )


if __name__ == "__main__":
    main()
