"""The headline rows of the structured losses, this library against PyTorch, with a memory floor.

Usage::

    NUMBA_NUM_THREADS=2 python asv_bench/headline.py [--repeats N] [--spread] [--smoke]
    NUMBA_NUM_THREADS=1 python asv_bench/headline.py --cpu-time [--repeats N]

Rows (float32, CPU): SoftmaxCELoss at (8192, 32000), (256, 1000) and (64, 10) with integer labels,
at (256, 1000) with dense (probability) labels and with ``label_smoothing=0.1``, at
(16, 21, 128, 128) with the class axis 1, and KLDivLoss(from_logits=False) at (256, 1000) and at
(16, 21, 128, 128) with the class axis 1 (PyTorch: ``kl_div(log_softmax(x), y)``),
CTCLoss at T=200 N=32 C=40 L=50 and T=20 N=4 C=10 L=5 (``'TNC'``, raw activations: PyTorch gets
``log_softmax`` first), SDMLLoss at (512, 256) and (4096, 512), and SigmoidBinaryCrossEntropyLoss,
LogisticLoss and KLDivLoss at (4096, 4096) forward+backward as a share of a same-run 2-thread triad.
Times are medians of ``--repeats`` calls after a warm-up call; the library's forward+backward writes
fresh outputs (no ``out=`` / ``grad_out=``), as PyTorch's does. PyTorch runs in a child process (its
OpenMP runtime stays away from Numba's threads) with ``torch.set_num_threads`` equal to
``NUMBA_NUM_THREADS``. The floor is the time to stream the bytes a pass must read and write at the
triad's bandwidth (4 bytes per logit forward, 8 forward+backward).

``--spread`` also prints min / median / max of 7 forward+backward calls of the elementwise rows
(fresh outputs each call: the page-fault cost shows as spread). To time an older checkout, install it
with ``pip install --no-deps --target /tmp/nl-old /old/checkout`` and run this script with
``PYTHONPATH=/tmp/nl-old``.

``--cpu-time`` (one thread only) times every call by the CPU time of the calling thread and reports
the minimum over the calls instead of the median of wall-clock times. On a shared or virtual machine
the wall clock of one call can vary by half or more from one process to the next (other tenants,
stolen cycles); the CPU time the thread itself spends leaves those out (on a 2-core virtual machine
the same call's minimum still varied by 15-25% between processes, as the cores share their execution
units with work the thread cannot see). With one thread every side runs on the calling thread
(Numba's kernels, PyTorch's operators, the triad), so the clock sees all the work; with more threads
it would not, and the option refuses them. It also turns off the library's background compile of
parallel kernels (``NUMBA_LOSSES_BACKGROUND_COMPILE=0``): a compile still running on the other core
slowed the calls timed meanwhile by up to 2x there (a version whose kernels were not in the on-disk
cache yet looked that much slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

THREADS = int(os.environ.get("NUMBA_NUM_THREADS", "2"))
#: The clock of every timing and the statistic of a row (``--cpu-time``: the calling thread's CPU time, minimum).
_CLOCK: Callable[[], float] = time.perf_counter
_STAT: Callable[[list[float]], float] = statistics.median


def _times(step: Callable[[], object], repeats: int) -> list[float]:
    step()
    out = []
    for _ in range(repeats):
        t0 = _CLOCK()
        step()
        out.append(_CLOCK() - t0)
    return out


def _row_ms(step: Callable[[], object], repeats: int) -> float:
    """Milliseconds of ``step``: the median of ``repeats`` calls (the minimum with ``--cpu-time``)."""
    return 1e3 * _STAT(_times(step, repeats))


def _softmax_inputs(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c), dtype=np.float32) * 3, rng.integers(0, c, n).astype(np.int64)


def _dense_inputs(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and a probability label per row (rows of a softmax)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c), dtype=np.float32)
    p = np.exp(rng.standard_normal((n, c), dtype=np.float32))
    return x, p / p.sum(axis=1, keepdims=True)


def _axis1_inputs(shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C, H, W)`` (class axis 1) and class ids ``(N, H, W)``."""
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    return rng.standard_normal(shape, dtype=np.float32), rng.integers(0, c, (n, h, w)).astype(np.int32)


def _dense_axis1_inputs(shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C, H, W)`` and a probability label per position (a softmax along axis 1)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    p = np.exp(rng.standard_normal(shape, dtype=np.float32))
    return x, p / p.sum(axis=1, keepdims=True)


def _ctc_inputs(t: int, n: int, c: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n, c), dtype=np.float32)
    lab = rng.integers(1, c, (n, length)).astype(np.int64)
    return x, lab


def _pair_inputs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n, d), dtype=np.float32)
    return x1, x1 + 0.1 * rng.standard_normal((n, d), dtype=np.float32)


def cases(smoke: bool) -> list[tuple[str, str, tuple]]:
    """``(row name, kind, shape)`` of every row."""
    if smoke:
        return [
            ("SoftmaxCE 16x10", "softmax", (16, 10)),
            ("SoftmaxCE 16x10 dense", "softmax-dense", (16, 10)),
            ("SoftmaxCE 16x10 smoothing", "softmax-smooth", (16, 10)),
            ("SoftmaxCE 2x3x4x5 axis=1", "softmax-axis1", (2, 3, 4, 5)),
            ("KLDiv softmax 16x10", "kldiv", (16, 10)),
            ("KLDiv softmax 2x3x4x5 axis=1", "kldiv-axis1", (2, 3, 4, 5)),
            ("CTC T=6 N=2 C=5 L=2", "ctc", (6, 2, 5, 2)),
            ("SDML 8x4", "sdml", (8, 4)),
        ]
    return [
        ("SoftmaxCE 8192x32000", "softmax", (8192, 32000)),
        ("SoftmaxCE 256x1000", "softmax", (256, 1000)),
        ("SoftmaxCE 64x10", "softmax", (64, 10)),
        ("SoftmaxCE 256x1000 dense", "softmax-dense", (256, 1000)),
        ("SoftmaxCE 256x1000 smoothing", "softmax-smooth", (256, 1000)),
        ("SoftmaxCE 16x21x128x128 axis=1", "softmax-axis1", (16, 21, 128, 128)),
        ("KLDiv softmax 256x1000", "kldiv", (256, 1000)),
        ("KLDiv softmax 16x21x128x128 axis=1", "kldiv-axis1", (16, 21, 128, 128)),
        ("CTC T=200 N=32 C=40 L=50", "ctc", (200, 32, 40, 50)),
        ("CTC T=20 N=4 C=10 L=5", "ctc", (20, 4, 10, 5)),
        ("SDML 512x256", "sdml", (512, 256)),
        ("SDML 4096x512", "sdml", (4096, 512)),
    ]


def _library_steps(kind: str, shape: tuple) -> tuple[Callable[[], object], Callable[[], object]]:
    import numba_losses as nl

    if kind == "softmax":
        loss, args = nl.SoftmaxCELoss(), _softmax_inputs(*shape)
    elif kind == "softmax-dense":
        loss, args = nl.SoftmaxCELoss(sparse_label=False), _dense_inputs(*shape)
    elif kind == "softmax-smooth":
        loss, args = nl.SoftmaxCELoss(label_smoothing=0.1), _softmax_inputs(*shape)
    elif kind == "softmax-axis1":
        loss, args = nl.SoftmaxCELoss(axis=1), _axis1_inputs(shape)
    elif kind == "kldiv":
        loss, args = nl.KLDivLoss(from_logits=False), _dense_inputs(*shape)
    elif kind == "kldiv-axis1":
        loss, args = nl.KLDivLoss(from_logits=False, axis=1), _dense_axis1_inputs(shape)
    elif kind == "ctc":
        x, lab = _ctc_inputs(*shape)
        loss, args = nl.CTCLoss(layout="TNC"), (x, lab.astype(np.float32))
    else:
        loss, args = nl.SDMLLoss(), _pair_inputs(*shape)
    return (lambda: loss(*args)), (lambda: loss.forward_backward(*args))


def _torch_steps(kind: str, shape: tuple) -> tuple[Callable[[], object], Callable[[], object]]:
    import torch
    import torch.nn.functional as F

    if kind in ("softmax", "softmax-smooth", "softmax-dense", "softmax-axis1"):
        make = {"softmax-dense": lambda: _dense_inputs(*shape), "softmax-axis1": lambda: _axis1_inputs(shape)}
        x, y = (torch.from_numpy(v) for v in make.get(kind, lambda: _softmax_inputs(*shape))())
        y = y.long() if y.dtype == torch.int32 else y
        eps = 0.1 if kind == "softmax-smooth" else 0.0

        def loss(xg):
            return F.cross_entropy(xg, y, reduction="none", label_smoothing=eps)

    elif kind == "kldiv":
        x, y = (torch.from_numpy(v) for v in _dense_inputs(*shape))

        def loss(xg):
            return F.kl_div(F.log_softmax(xg, -1), y, reduction="none").mean(-1)

    elif kind == "kldiv-axis1":
        x, y = (torch.from_numpy(v) for v in _dense_axis1_inputs(shape))

        def loss(xg):
            return F.kl_div(F.log_softmax(xg, 1), y, reduction="none").mean(dim=(1, 2, 3))

    elif kind == "ctc":
        t, n, c, length = shape
        xn, lab = _ctc_inputs(*shape)
        x, lt = torch.from_numpy(xn), torch.from_numpy(lab)
        il, tl = torch.full((n,), t, dtype=torch.long), torch.full((n,), length, dtype=torch.long)

        def loss(xg):
            return F.ctc_loss(F.log_softmax(xg, -1), lt, il, tl, blank=0, reduction="none")

    else:  # SDML: KL divergence from the smoothed identity to the softmax of minus squared distances
        n = shape[0]
        x, b = (torch.from_numpy(v) for v in _pair_inputs(*shape))
        q = torch.full((n, n), 0.3 / (n - 1))
        q.fill_diagonal_(0.7)

        def loss(xg):
            return F.kl_div(F.log_softmax(-(torch.cdist(xg, b) ** 2), 1), q, reduction="none").sum(1)

    def fb():
        xg = x.detach().requires_grad_()
        loss(xg).sum().backward()
        return xg.grad

    return (lambda: loss(x)), fb


def run(rows, repeats: int, steps) -> dict[str, tuple[float, float]]:
    """``{row name: (forward ms, forward+backward ms)}`` with ``steps(kind, shape)`` giving the two calls."""
    res = {}
    for name, kind, shape in rows:
        fwd, fb = steps(kind, shape)
        r = 3 if int(np.prod(shape)) >= 1 << 26 else repeats
        res[name] = (_row_ms(fwd, r), _row_ms(fb, r))
    return res


def triad_gbs() -> float:
    """Bytes per second of ``a = b + 2 c`` on 2**24 float32, NUMBA_NUM_THREADS threads."""
    from numba import njit, prange

    @njit(parallel=True)
    def triad(a, b, c):
        for i in prange(a.size):
            a[i] = b[i] + np.float32(2.0) * c[i]

    a, b, c = (np.ones(1 << 24, dtype=np.float32) for _ in range(3))
    return 3 * a.nbytes / min(_times(lambda: triad(a, b, c), 9))


def elementwise_rows(bw: float, spread: bool, smoke: bool) -> list[str]:
    import numba_losses as nl

    n = 64 if smoke else 4096
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n), dtype=np.float32)
    y = (rng.random((n, n)) > 0.5).astype(np.float32)
    p = np.abs(rng.standard_normal((n, n), dtype=np.float32))
    out, g = np.empty(n, np.float32), np.empty_like(x)
    lines = [
        "| loss (4096x4096 fwd+bwd) | buffers ms | % triad | fresh min / median / max of 7 ms |",
        "|---|---:|---:|---|",
    ]
    for name, loss, args in [
        ("SigmoidBCE", nl.SigmoidBinaryCrossEntropyLoss(), (x, y)),
        ("Logistic", nl.LogisticLoss(label_format="binary"), (x, y)),
        ("KLDiv (from_logits)", nl.KLDivLoss(from_logits=True), (x, p)),
        ("L2", nl.L2Loss(), (x, y)),
    ]:
        t = min(_times(lambda: loss.forward_backward(*args, out=out, grad_out=(g,)), 9))  # noqa: B023
        share = 3 * x.nbytes / t / bw
        col = ""
        if spread:
            ts = [1e3 * v for v in _times(lambda: loss.forward_backward(*args), 7)]  # noqa: B023
            col = f"{min(ts):.1f} / {statistics.median(ts):.1f} / {max(ts):.1f}"
        lines.append(f"| {name} | {1e3 * t:.2f} | {100 * share:.0f}% | {col} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--spread", action="store_true", help="min / median / max of the elementwise rows")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, every path once")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time by the calling thread's CPU time, minimum (one thread only)"
    )
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.cpu_time:
        if THREADS != 1:
            parser.error("--cpu-time times the calling thread only: run it with NUMBA_NUM_THREADS=1")
        global _CLOCK, _STAT
        _CLOCK, _STAT = time.thread_time, min
        os.environ["NUMBA_LOSSES_BACKGROUND_COMPILE"] = "0"  # before numba_losses is imported; see above
    rows = cases(opts.smoke)
    repeats = 1 if opts.smoke else opts.repeats
    if opts.torch_only:
        import torch

        torch.set_num_threads(THREADS)
        print(json.dumps(run(rows, repeats, _torch_steps)))
        return
    bw = triad_gbs()
    mine = run(rows, repeats, _library_steps)
    cmd = [sys.executable, __file__, "--torch-only", "--repeats", str(repeats)]
    cmd += (["--smoke"] if opts.smoke else []) + (["--cpu-time"] if opts.cpu_time else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, ImportError) as exc:  # PyTorch missing: library only
        print(f"(PyTorch side skipped: {exc})", file=sys.stderr)
        theirs = {}
    clock = "CPU time of the calling thread, minimum" if opts.cpu_time else "wall clock, median"
    print(f"triad {bw / 1e9:.1f} GB/s, NUMBA_NUM_THREADS={THREADS}, {clock} of {repeats} calls")
    head = ["case", "this library fwd / fwd+bwd ms", "PyTorch fwd / fwd+bwd ms", "x PyTorch fwd / fwd+bwd", "floor ms"]
    print("| " + " | ".join(head) + " |")
    print("|---|---:|---:|---:|---:|")
    for name, kind, shape in rows:
        f, fb = mine[name]
        tf, tfb = theirs.get(name, (float("nan"), float("nan")))
        floor = ""
        if kind.startswith(("softmax", "kldiv")):
            logits = int(np.prod(shape))
            floor = f"{4e3 * logits / bw:.3f} / {8e3 * logits / bw:.3f}"
        print(f"| {name} | {f:.3f} / {fb:.3f} | {tf:.3f} / {tfb:.3f} | {tf / f:.2f} / {tfb / fb:.2f} | {floor} |")
    print()
    print("\n".join(elementwise_rows(bw, opts.spread, opts.smoke)))


if __name__ == "__main__":
    main()
