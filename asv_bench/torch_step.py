"""One loss step (forward + backward of the loss only) with PyTorch's losses and with numba_losses.torch.

Usage::

    NUMBA_NUM_THREADS=2 python asv_bench/torch_step.py [--threads 2] [--full] [--repeats N] [--layers N] [--smoke]

Cases (float32, CPU):

* SoftmaxCE (2048, 32000) (``--full``: (8192, 32000), about 3 GB for PyTorch) and (256, 1000):
  ``F.cross_entropy(x, y)`` against ``nlt.SoftmaxCELoss()(x, y).mean()`` (the module) and
  ``nlf.cross_entropy(x, y)`` (the drop-in function);
* CTC T=200, N=32, C=40, L=50 on raw activations: ``F.ctc_loss(F.log_softmax(x))`` against
  ``nlt.CTCLoss(layout='TNC')(x, ...)`` (the library applies the log-softmax itself) and
  ``nlf.ctc_loss(F.log_softmax(x), ...)`` (the drop-in function on log-probabilities);
* a training step of a small model plus the loss (gradients zeroed, forward, loss, backward; no
  optimizer step): an MLP 256 -> 512 -> 1000 on a batch of 256 with SoftmaxCE, and a linear layer
  64 -> 40 applied per frame of (T=200, N=32) with CTC (L=50);
* the adapter's overhead at (64, 10): ``nlt.L2Loss()`` / ``nlt.SoftmaxCELoss()`` forward+backward
  against the NumPy call ``loss.forward_backward`` on the same memory.

The header names Numba's threading layer. ``--layers N`` runs the cases in N alternating pairs of
fresh processes, Numba's default layer then ``NUMBA_THREADING_LAYER=omp`` (the loss kernels on
PyTorch's own OpenMP threads, see the PyTorch page of the docs), and prints each step's median over
the processes of each layer.

Each step clears the input's ``.grad`` first; the time is the median of ``--repeats`` steps after
two warm-up steps (kernels compiled, caches warm); the large SoftmaxCE case takes five warm-up steps
and at least five timed ones, as the first steps of a process map fresh memory for its
gradient-sized buffers. ``--smoke`` runs every case once on tiny shapes and prints "ok" (the test
suite uses it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numba
import numpy as np
import torch
import torch.nn.functional as F

import numba_losses as nl
import numba_losses.torch as nlt
from numba_losses.torch import functional as nlf


def _median_ms(step: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _backward_step(x: torch.Tensor, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        loss().backward()

    return step


def _softmax_losses(y: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """``{name: loss of the logits}`` for class ids ``y``: PyTorch's, the module's mean, the drop-in function."""
    module = nlt.SoftmaxCELoss()
    return {
        "torch F.cross_entropy": lambda z: F.cross_entropy(z, y),
        "nlt.SoftmaxCELoss().mean()": lambda z: module(z, y).mean(),
        "nlf.cross_entropy": lambda z: nlf.cross_entropy(z, y),
    }


def _ctc_losses(labels: torch.Tensor, t: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """``{name: loss of the raw (T, N, C) activations}`` for ``labels`` (N, L), every sample T frames long."""
    n, length = labels.shape
    in_len, tg_len = torch.full((n,), t), torch.full((n,), length)
    module = nlt.CTCLoss(layout="TNC", blank_label="first")
    return {
        "torch F.ctc_loss(log_softmax)": lambda a: F.ctc_loss(F.log_softmax(a, 2), labels, in_len, tg_len),
        "nlt.CTCLoss('TNC').mean()": lambda a: module(a, labels, in_len, tg_len).mean(),
        "nlf.ctc_loss(log_softmax)": lambda a: nlf.ctc_loss(F.log_softmax(a, 2), labels, in_len, tg_len),
    }


def softmax_steps(n: int, c: int) -> dict[str, Callable[[], None]]:
    """``{name: step}``: one SoftmaxCE step at (n, c), PyTorch's loss and the library's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g).requires_grad_()
    losses = _softmax_losses(torch.randint(0, c, (n,), generator=g))
    return {name: _backward_step(x, functools.partial(loss, x)) for name, loss in losses.items()}


def ctc_steps(t: int, n: int, c: int, length: int) -> dict[str, Callable[[], None]]:
    """``{name: step}``: one CTC step on raw activations (T, N, C), labels of ``length``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(t, n, c, generator=g).requires_grad_()
    losses = _ctc_losses(torch.randint(1, c, (n, length), generator=g), t)
    return {name: _backward_step(x, functools.partial(loss, x)) for name, loss in losses.items()}


def model_softmax_steps(n: int, features: int, hidden: int, c: int) -> dict[str, Callable[[], None]]:
    """``{name: step}``: one training step of a small MLP ``features -> hidden -> c`` plus SoftmaxCE (zero
    the gradients, forward, loss, backward; no optimizer step), batch ``n``."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, c))
    x = torch.randn(n, features, generator=g)
    losses = _softmax_losses(torch.randint(0, c, (n,), generator=g))
    return {name: _model_step(model, x, loss) for name, loss in losses.items()}


def model_ctc_steps(t: int, n: int, features: int, c: int, length: int) -> dict[str, Callable[[], None]]:
    """``{name: step}``: one training step of a linear layer ``features -> c`` applied per frame of
    (T, N) plus CTC, labels of ``length``."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(features, c)
    x = torch.randn(t, n, features, generator=g)
    losses = _ctc_losses(torch.randint(1, c, (n, length), generator=g), t)
    return {name: _model_step(model, x, loss) for name, loss in losses.items()}


def _model_step(
    model: torch.nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss(model(x)).backward()

    return step


def _timed(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[str, float]:
    return {name: _median_ms(step, repeats, warmup) for name, step in steps.items()}


class _EmptyLoss(torch.autograd.Function):
    """The floor of any autograd loss: a Function whose forward and backward do no work."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        ctx.shape = x.shape
        return x.new_empty(x.shape[:1])

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return g.reshape(-1, 1).expand(ctx.shape)


def overhead_case(repeats: int) -> dict[str, float]:
    """``{name: ms}``: the adapter's forward+backward against the NumPy call at (64, 10), and the floor
    (an empty ``autograd.Function`` through the same ``.sum().backward()``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g).requires_grad_()
    t = torch.randn(64, 10, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    xn, tn, yn = x.detach().numpy(), t.numpy(), y.numpy()
    l2, ce = nlt.L2Loss(), nlt.SoftmaxCELoss()
    ones = np.ones(64, np.float32)
    return {
        "L2 NumPy forward_backward": _median_ms(lambda: nl.L2Loss().forward_backward(xn, tn, out_grad=ones), repeats),
        "L2 nlt module fwd+bwd": _median_ms(_backward_step(x, lambda: l2(x, t).sum()), repeats),
        "torch F.mse_loss fwd+bwd": _median_ms(_backward_step(x, lambda: F.mse_loss(x, t)), repeats),
        "SoftmaxCE NumPy forward_backward": _median_ms(
            lambda: nl.SoftmaxCELoss().forward_backward(xn, yn, out_grad=ones), repeats
        ),
        "SoftmaxCE nlt module fwd+bwd": _median_ms(_backward_step(x, lambda: ce(x, y).sum()), repeats),
        "torch F.cross_entropy fwd+bwd": _median_ms(_backward_step(x, lambda: F.cross_entropy(x, y)), repeats),
        "floor: empty autograd.Function fwd+bwd": _median_ms(
            _backward_step(x, lambda: _EmptyLoss.apply(x).sum()), repeats
        ),
    }


def _layer() -> str:
    """Numba's threading layer in use (``NUMBA_THREADING_LAYER=omp`` shares PyTorch's OpenMP threads)."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel ran in this process
        return f"not started ({numba.config.THREADING_LAYER} requested)"


def compare_layers(pairs: int, child_args: list[str]) -> dict[str, dict[str, float]]:
    """Run the cases in ``pairs`` alternating pairs of fresh processes, Numba's default threading layer then
    ``omp``, and print each step's median over the processes of each layer; returns ``{layer: {step: ms}}``.

    Numba chooses its layer once per process, at the first parallel kernel, hence the processes.
    """
    runs: dict[str, dict[str, list[float]]] = {}
    for _ in range(pairs):
        for requested in ("default", "omp"):
            env = dict(os.environ, NUMBA_THREADING_LAYER=requested)
            proc = subprocess.run(
                [sys.executable, __file__, *child_args, "--json"], env=env, capture_output=True, text=True, check=True
            )
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            steps = runs.setdefault(child["layer"], {})
            for case, row in child["results"].items():
                for name, ms in row.items():
                    steps.setdefault(f"{case}: {name}", []).append(ms)
    medians = {layer: {k: statistics.median(v) for k, v in steps.items()} for layer, steps in runs.items()}
    layers = list(medians)
    print(f"medians over {pairs} processes per layer, ms; layers: {', '.join(layers)}")
    for step in medians[layers[0]]:
        print(f"  {step:68s}" + "".join(f" {medians[lay].get(step, float('nan')):10.3f}" for lay in layers))
    return medians


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the cases and print a table; returns ``{case: {name: ms}}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    parser.add_argument("--full", action="store_true", help="SoftmaxCE at (8192, 32000) instead of (2048, 32000)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="every case once on tiny shapes; prints 'ok'")
    parser.add_argument(
        "--layers",
        type=int,
        default=0,
        metavar="N",
        help="N alternating pairs of child processes, Numba's default threading layer and OpenMP; medians",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child's results, for --layers
    args = parser.parse_args(argv)
    if args.layers:
        child = ["--repeats", str(args.repeats)]
        child += ["--full"] * args.full + ["--smoke"] * args.smoke
        child += ["--threads", str(args.threads)] if args.threads else []
        return compare_layers(args.layers, child)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        results = {
            "softmax": _timed(softmax_steps(4, 7), 1),
            "ctc": _timed(ctc_steps(6, 2, 5, 2), 1),
            "overhead": overhead_case(1),
            "model softmax": _timed(model_softmax_steps(4, 3, 5, 7), 1),
            "model ctc": _timed(model_ctc_steps(6, 2, 3, 5, 2), 1),
        }
    else:
        results = _full_results(args)
    if args.json:
        print(json.dumps({"layer": _layer(), "results": results}))
    elif args.smoke:
        print("ok")
    else:
        _print_table(results)
    return results


def _full_results(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    big = 8192 if args.full else 2048
    return {
        # Gradient-sized buffers of hundreds of MB: the first steps of a process map fresh memory
        # (huge pages compacted on the way, 5-10x a steady step here), so more warm-up steps.
        f"SoftmaxCE ({big}, 32000)": _timed(softmax_steps(big, 32000), max(5, args.repeats // 2), warmup=5),
        "SoftmaxCE (256, 1000)": _timed(softmax_steps(256, 1000), args.repeats * 5),
        "CTC T=200 N=32 C=40 L=50": _timed(ctc_steps(200, 32, 40, 50), args.repeats),
        "MLP 256-512-1000 + SoftmaxCE, batch 256": _timed(model_softmax_steps(256, 256, 512, 1000), args.repeats * 5),
        "Linear 64-40 per frame + CTC, T=200 N=32 L=50": _timed(model_ctc_steps(200, 32, 64, 40, 50), args.repeats),
        "overhead (64, 10)": overhead_case(args.repeats * 20),
    }


def _print_table(results: dict[str, dict[str, float]]) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, numba threads: ", end="")
    print(f"{numba.config.NUMBA_NUM_THREADS}, numba threading layer: {_layer()}")
    for case, row in results.items():
        print(f"\n{case}")
        for name, ms in row.items():
            print(f"  {name:36s} {ms:10.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
