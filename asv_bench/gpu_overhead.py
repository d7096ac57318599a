"""Where a GPU call's time goes: host time per call, its profile, and device time with the host hidden.

Usage, on a machine with an NVIDIA GPU, CuPy and PyTorch CUDA::

    python asv_bench/gpu_overhead.py [--profile-calls N] [--out DIR]

Three tables:

1. wall time per synchronised call at (64, 10) for a few losses (CuPy arrays), next to the floor of
   a bare ``@cuda.jit`` launch with the same kind of arguments (CuPy arrays, Numba device arrays, on
   the default and on an external stream) and the cost of one ``cuda.from_cuda_array_interface``;
2. the ``cProfile`` top entries (own time) of L2Loss forward and SoftmaxCELoss forward+backward
   at (64, 10), written to ``DIR/gpu_profile.txt`` (the 15 largest are printed);
3. device time per call at large shapes with the host's launch time hidden: the stream is first
   kept busy by ``torch.cuda._sleep`` and the CUDA events around the call then time the GPU work
   only (this library on PyTorch CUDA tensors, against PyTorch's own loss).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

import cupy as cp
import numpy as np
import torch
from numba import cuda

import numba_losses as nl


def wall_us(fn, calls: int = 300) -> float:
    """Median over 3 runs of the mean wall time of ``calls`` calls, device synchronised (microseconds)."""
    fn()
    cp.cuda.Device().synchronize()
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        cp.cuda.Device().synchronize()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(runs)[1]


@cuda.jit
def _add(o, a, b):
    i = cuda.grid(1)
    if i < o.size:
        o[i] = a[i] + b[i]


def host_table() -> list[str]:
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((64, 10)).astype(np.float32))
    y = cp.asarray(rng.standard_normal((64, 10)).astype(np.float32))
    lab = cp.asarray(rng.integers(0, 10, 64))
    l2, ce, tri = nl.L2Loss(), nl.SoftmaxCELoss(), nl.TripletLoss()
    a, b, o = cp.ones(640, np.float32), cp.ones(640, np.float32), cp.empty(640, np.float32)
    na, nb, no = (cuda.as_cuda_array(v) for v in (a, b, o))
    ext = cuda.external_stream(cp.cuda.get_current_stream().ptr)
    desc = a.__cuda_array_interface__
    rows = {
        "L2Loss forward": lambda: l2(x, y),
        "L2Loss forward+backward": lambda: l2.forward_backward(x, y),
        "SoftmaxCELoss forward": lambda: ce(x, lab),
        "SoftmaxCELoss forward+backward": lambda: ce.forward_backward(x, lab),
        "TripletLoss forward+backward": lambda: tri.forward_backward(x, y, x),
        "torch F.cross_entropy forward": lambda: torch.nn.functional.cross_entropy(
            torch.as_tensor(x, device="cuda"), torch.as_tensor(lab, device="cuda"), reduction="none"
        ),
        "bare @cuda.jit launch, CuPy args": lambda: _add[1, 640](o, a, b),
        "bare @cuda.jit launch, CuPy args, external stream": lambda: _add[1, 640, ext](o, a, b),
        "bare @cuda.jit launch, Numba device arrays": lambda: _add[1, 640](no, na, nb),
        "cuda.from_cuda_array_interface (one array)": lambda: cuda.from_cuda_array_interface(desc, owner=a, sync=False),
    }
    lines = ["| call at (64, 10) | us per call |", "|---|---:|"]
    lines += [f"| {name} | {wall_us(fn):.1f} |" for name, fn in rows.items()]
    return lines


def profile(calls: int, out: Path) -> list[str]:
    rng = np.random.default_rng(1)
    x = cp.asarray(rng.standard_normal((64, 10)).astype(np.float32))
    y = cp.asarray(rng.standard_normal((64, 10)).astype(np.float32))
    lab = cp.asarray(rng.integers(0, 10, 64))
    l2, ce = nl.L2Loss(), nl.SoftmaxCELoss()
    text = []
    for name, fn in (
        ("L2Loss forward", lambda: l2(x, y)),
        ("SoftmaxCELoss fwd+bwd", lambda: ce.forward_backward(x, lab)),
    ):
        fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            fn()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(40)
        text.append(f"==== {name}: {calls} calls\n{buf.getvalue()}")
    (out / "gpu_profile.txt").write_text("\n".join(text))
    short = []
    for block in text:
        lines = block.splitlines()
        head = [ln for ln in lines if "function calls" in ln]
        table = [ln for ln in lines if ln.strip() and ln.strip()[0].isdigit() and "/" in ln][:15]
        short += [lines[0], *head, *table, ""]
    return short


def device_ms(fn, reps: int = 5) -> float:
    """Best device time of ``fn`` in ms, the host's launch time hidden behind a busy stream."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(20_000_000)  # about 10 ms: every launch of fn is queued before the GPU reaches start
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop))
    return best


def device_table() -> list[str]:
    F = torch.nn.functional
    g = torch.Generator(device="cuda").manual_seed(0)
    p = torch.randn(8192, 8192, device="cuda", generator=g)
    t = torch.randn(8192, 8192, device="cuda", generator=g)
    logits = torch.randn(8192, 32000, device="cuda", generator=g)
    labels = torch.randint(0, 32000, (8192,), device="cuda", generator=g)
    ctc_x = torch.randn(200, 32, 40, device="cuda", generator=g).log_softmax(-1)
    ctc_lab = torch.randint(1, 40, (32, 50), device="cuda", generator=g)
    l2, ce, ctc = nl.L2Loss(), nl.SoftmaxCELoss(), nl.CTCLoss(layout="TNC")
    lens_in, lens_lab = torch.full((32,), 200), torch.full((32,), 50)
    ours_lab = (ctc_lab - 1).float()  # blank is the last class here, the first in PyTorch

    def torch_l2_fb():
        q = p.detach().requires_grad_()
        out = 0.5 * ((q - t) ** 2).mean(1)
        return torch.autograd.grad(out.sum(), q)

    def torch_ce_fb():
        q = logits.detach().requires_grad_()
        return torch.autograd.grad(F.cross_entropy(q, labels, reduction="none").sum(), q)

    def torch_ctc_fb():
        q = ctc_x.detach().requires_grad_()
        loss = F.ctc_loss(q, ctc_lab, lens_in, lens_lab, reduction="none")
        return torch.autograd.grad(loss.sum(), q)

    rows = {
        "L2Loss 8192x8192 forward": (lambda: l2(p, t), lambda: 0.5 * ((p - t) ** 2).mean(1), 2 * p.nbytes),
        "L2Loss 8192x8192 fwd+bwd": (lambda: l2.forward_backward(p, t), torch_l2_fb, 3 * p.nbytes),
        "SoftmaxCE 8192x32000 fwd+bwd": (lambda: ce.forward_backward(logits, labels), torch_ce_fb, 2 * logits.nbytes),
        "CTC 200,32,40,50 fwd+bwd": (
            lambda: ctc.forward_backward(ctc_x, ours_lab),
            torch_ctc_fb,
            0,
        ),
    }
    lines = ["| case | numba_losses ms | GB/s | torch ms |", "|---|---:|---:|---:|"]
    for name, (ours, theirs, nbytes) in rows.items():
        a, b = device_ms(ours), device_ms(theirs)
        rate = f"{nbytes / a / 1e6:.0f}" if nbytes else "-"
        lines.append(f"| {name} | {a:.3f} | {rate} | {b:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile-calls", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [*host_table(), "", *profile(args.profile_calls, args.out), *device_table()]
    text = "\n".join(parts)
    (args.out / "gpu_overhead.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
