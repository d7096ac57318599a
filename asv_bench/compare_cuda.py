"""Side-by-side GPU timings: numba_losses vs CuPy array expressions vs PyTorch CUDA.

Usage::

    python asv_bench/compare_cuda.py [--markdown] [--smoke]

One run prints, for every elementwise loss:

* at 2**26 float32 elements (8192 x 8192): GPU time per call (CUDA events
  around a batch of calls) of this library's forward, forward+backward, and
  forward+backward into reused ``out`` / ``grad_out`` buffers; the same loss
  written with CuPy array expressions (the NumPy versions of
  ``benchmarks/common.py`` run on CuPy arrays through NumPy's dispatch
  protocols); PyTorch CUDA forward and autograd backward (head of ones);
* the effective bandwidth of the buffered forward+backward (pred and label
  read, the per-row output and the gradient written: 12 bytes per element) as
  a fraction of the device-to-device copy bandwidth measured in the same run
  (``cupy`` copy of a 2**26-element float32 array: 8 bytes per element);
* at (64, 10): wall time per call (Python overhead included, synchronised).

``--smoke`` runs every code path once on tiny shapes (works in Numba's CUDA
simulator, without CuPy or PyTorch) and prints nothing but "ok"; the test
suite uses it to keep this script working on machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmarks.common import CASES, SMALL, make_inputs, torch_forward_backward, traffic_bytes  # noqa: E402

LARGE_GPU = (8192, 8192)  # 2**26 elements


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


class Timer:
    """GPU time per call with CUDA events (CuPy's when present, else Numba's)."""

    def __init__(self) -> None:
        from numba import cuda

        self.cuda = cuda
        self.simulated = bool(cuda.config.ENABLE_CUDASIM)

    def sync(self) -> None:
        self.cuda.synchronize()
        if _have("cupy") and not self.simulated:
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def gpu_ms(self, fn: Callable[[], Any], calls: int, repeats: int = 3) -> float:
        """Best over ``repeats`` of the mean GPU time of ``calls`` back-to-back calls (ms)."""
        fn()
        self.sync()
        best = float("inf")
        for _ in range(repeats):
            if self.simulated:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                best = min(best, (time.perf_counter() - t0) * 1e3 / calls)
                continue
            import cupy

            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(calls):
                fn()
            stop.record()
            stop.synchronize()
            self.sync()  # PyTorch and Numba launch on their own current streams
            best = min(best, cupy.cuda.get_elapsed_time(start, stop) / calls)
        return best

    def wall_us(self, fn: Callable[[], Any], calls: int) -> float:
        """Median wall time of one synchronised call (us)."""
        fn()
        self.sync()
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            self.sync()
            samples.append(time.perf_counter() - t0)
        return float(np.median(samples)) * 1e6


def _device(a: np.ndarray, use_cupy: bool) -> Any:
    if use_cupy:
        import cupy

        return cupy.asarray(a)
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def copy_gbps(timer: Timer, n: int) -> float:
    """Device-to-device copy bandwidth (read + write) of ``n`` float32 elements."""
    import cupy

    src = cupy.ones(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    ms = timer.gpu_ms(lambda: dst.__setitem__(Ellipsis, src), calls=20)
    return 2 * src.nbytes / (ms / 1e3) / 1e9


def measure(name: str, shape: tuple[int, int], timer: Timer, use_cupy: bool, use_torch: bool, calls: int) -> dict:
    case = CASES[name]
    loss = case.make_loss()
    x_h, y_h = make_inputs(name, shape)
    x, y = _device(x_h, use_cupy), _device(y_h, use_cupy)
    out, (grad,) = loss.forward_backward(x, y)
    res: dict[str, Any] = {"loss": name, "shape": list(shape)}
    large = shape[0] * shape[1] >= 1 << 20
    measure_fn = (lambda f: timer.gpu_ms(f, calls)) if large else (lambda f: timer.wall_us(f, calls))
    res["unit"] = "ms (GPU)" if large else "us (wall)"
    res["forward"] = measure_fn(lambda: loss(x, y))
    res["forward_backward"] = measure_fn(lambda: loss.forward_backward(x, y))
    res["forward_backward_out"] = measure_fn(lambda: loss.forward_backward(x, y, out=out, grad_out=grad))
    if use_cupy:
        res["cupy_forward"] = measure_fn(lambda: case.numpy(x, y))
        res["cupy_forward_backward"] = measure_fn(lambda: case.numpy(x, y, True))
    if use_torch:
        import torch

        xt = torch.as_tensor(x_h, device="cuda").requires_grad_(True)
        yt = torch.as_tensor(y_h, device="cuda")
        res["torch_forward"] = measure_fn(lambda: case.torch_forward(xt.detach(), yt))
        res["torch_forward_backward"] = measure_fn(lambda: torch_forward_backward(case.torch_forward, xt, yt))
    if large:
        nbytes = traffic_bytes(shape, per_row=case.per_row)
        res["gbps"] = nbytes / (res["forward_backward_out"] / 1e3) / 1e9
    return res


SOFTMAX_SHAPES = [(8192, 32000), (4096, 1000)]


def measure_softmax(shape: tuple[int, int], timer: Timer, use_cupy: bool, use_torch: bool, calls: int) -> dict:
    """SoftmaxCELoss (sparse int64 labels) vs a CuPy expression vs ``F.cross_entropy``, forward+backward."""
    import numba_losses as nl

    rng = np.random.default_rng(0)
    x_h = (3 * rng.standard_normal(shape)).astype(np.float32)
    lab_h = rng.integers(0, shape[1], shape[0])
    x, lab = _device(x_h, use_cupy), _device(lab_h, use_cupy)
    loss = nl.SoftmaxCELoss()
    out, (grad,) = loss.forward_backward(x, lab)
    res: dict[str, Any] = {"loss": "SoftmaxCE", "shape": list(shape)}
    measure_fn = lambda f: timer.gpu_ms(f, calls)  # noqa: E731
    res["forward"] = measure_fn(lambda: loss(x, lab))
    res["forward_backward_out"] = measure_fn(lambda: loss.forward_backward(x, lab, out=out, grad_out=grad))
    if use_cupy:
        import cupy

        rows = cupy.arange(shape[0])

        def cupy_fb() -> None:
            m = x.max(axis=1, keepdims=True)
            e = cupy.exp(x - m)
            s = e.sum(axis=1, keepdims=True)
            (cupy.log(s[:, 0]) + m[:, 0]) - x[rows, lab]
            e /= s
            e[rows, lab] -= 1

        res["cupy_forward_backward"] = measure_fn(cupy_fb)
    if use_torch:
        import torch
        import torch.nn.functional as F

        xt = torch.as_tensor(x_h, device="cuda").requires_grad_(True)
        lt = torch.as_tensor(lab_h, device="cuda")

        def torch_fb() -> None:
            xt.grad = None
            v = F.cross_entropy(xt, lt, reduction="none")
            v.backward(torch.ones_like(v))

        res["torch_forward"] = measure_fn(lambda: F.cross_entropy(xt.detach(), lt, reduction="none"))
        res["torch_forward_backward"] = measure_fn(torch_fb)
    # read the logits twice and write the gradient once
    res["gbps"] = 3 * x_h.nbytes / (res["forward_backward_out"] / 1e3) / 1e9
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, every path once (simulator-friendly)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)

    timer = Timer()
    use_cupy = _have("cupy") and not timer.simulated
    use_torch = False
    if _have("torch") and not timer.simulated:
        import torch

        use_torch = torch.cuda.is_available()
    if args.smoke:
        for name in CASES:
            measure(name, (4, 8), timer, use_cupy, use_torch, calls=1)
        measure_softmax((4, 8), timer, use_cupy, use_torch, calls=1)
        print("ok")
        return 0
    if not use_cupy:
        print("needs a GPU with CuPy (pip install -e '.[cupy]')", file=sys.stderr)
        return 2

    from numba import cuda

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    n = LARGE_GPU[0] * LARGE_GPU[1]
    copy = copy_gbps(timer, n)
    print(f"device: {name} ({dev.MULTIPROCESSOR_COUNT} SMs); torch: {use_torch}")
    print(f"device-to-device copy of 2**26 float32: {copy:.0f} GB/s\n")
    rows = [measure(k, LARGE_GPU, timer, use_cupy, use_torch, calls=10) for k in CASES]
    small = [measure(k, SMALL, timer, use_cupy, use_torch, calls=200) for k in CASES]

    sep = " | " if args.markdown else "  "

    def line(cells: list[str]) -> None:
        print(("| " + sep.join(cells) + " |") if args.markdown else sep.join(f"{c:>12s}" for c in cells))

    def table(results: list[dict], unit: str, with_bw: bool) -> None:
        head = ["loss", "fwd", "fwd+bwd", "fwd+bwd buf", "cupy fwd", "cupy f+b", "torch fwd", "torch f+b"]
        if with_bw:
            head += ["GB/s", "% of copy", "vs torch f+b"]
        print(f"times in {unit}")
        line(head)
        if args.markdown:
            line(["---"] * len(head))
        for r in results:
            cells = [r["loss"]] + [
                f"{r[k]:.3f}" if k in r else "-"
                for k in (
                    "forward",
                    "forward_backward",
                    "forward_backward_out",
                    "cupy_forward",
                    "cupy_forward_backward",
                    "torch_forward",
                    "torch_forward_backward",
                )
            ]
            if with_bw:
                speedup = r["torch_forward_backward"] / r["forward_backward"] if "torch_forward_backward" in r else 0
                cells += [f"{r['gbps']:.0f}", f"{100 * r['gbps'] / copy:.0f}%", f"{speedup:.2f}x"]
            line(cells)
        print()

    print(f"## {LARGE_GPU[0]} x {LARGE_GPU[1]} float32")
    table(rows, "ms of GPU time per call", True)
    print(f"## {SMALL[0]} x {SMALL[1]} float32")
    table(small, "us of wall time per synchronised call", False)
    softmax = [measure_softmax(shape, timer, use_cupy, use_torch, calls=10) for shape in SOFTMAX_SHAPES]
    print("## SoftmaxCELoss, float32 logits, int64 labels (ms of GPU time; GB/s for 2 reads + 1 write)")
    line(["shape", "fwd", "fwd+bwd buf", "cupy f+b", "torch fwd", "torch f+b", "GB/s", "% of copy", "vs torch"])
    if args.markdown:
        line(["---"] * 9)
    for r in softmax:
        cells = ["x".join(map(str, r["shape"]))]
        keys = ("forward", "forward_backward_out", "cupy_forward_backward", "torch_forward", "torch_forward_backward")
        cells += [f"{r[k]:.3f}" if k in r else "-" for k in keys]
        speedup = r["torch_forward_backward"] / r["forward_backward_out"] if "torch_forward_backward" in r else 0
        cells += [f"{r['gbps']:.0f}", f"{100 * r['gbps'] / copy:.0f}%", f"{speedup:.2f}x"]
        line(cells)
    if args.json:
        results = {"copy_gbps": copy, "large": rows, "small": small, "softmax": softmax}
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
