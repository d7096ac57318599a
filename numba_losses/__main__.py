"""The tour: ``python -m numba_losses``.

Shows the backends found, runs every implemented loss on sample data, checks
each gradient against finite differences and prints one table. Exits non-zero
if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numba
import numpy as np

import numba_losses as nl

from .gradcheck import GradientCheckError, check_gradient

Sample = Callable[[np.random.Generator, tuple[int, int]], tuple[np.ndarray, ...]]


def _regression(rng, shape):
    return rng.standard_normal(shape), rng.standard_normal(shape)


def _signed(rng, shape):
    return rng.standard_normal(shape), rng.choice([-1.0, 1.0], size=shape)


def _binary(rng, shape):
    return rng.standard_normal(shape), rng.integers(0, 2, size=shape).astype(np.float64)


def _probabilities(rng, shape):
    return rng.uniform(0.05, 0.95, shape), rng.integers(0, 2, size=shape).astype(np.float64)


def _counts(rng, shape):
    return 0.5 * rng.standard_normal(shape), rng.poisson(2.0, size=shape).astype(np.float64)


def _rates(rng, shape):
    return rng.uniform(0.5, 3.0, shape), rng.poisson(2.0, size=shape).astype(np.float64)


def _distributions(rng, shape):
    logits = rng.standard_normal(shape)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    q = rng.random(shape)
    return logp, q / q.sum(axis=-1, keepdims=True)


TOUR: list[tuple[str, Callable[[], nl.Loss], Sample]] = [
    ("L2Loss", nl.L2Loss, _regression),
    ("L1Loss", nl.L1Loss, _regression),
    ("HuberLoss(rho=0.5)", lambda: nl.HuberLoss(rho=0.5), _regression),
    ("HingeLoss", nl.HingeLoss, _signed),
    ("SquaredHingeLoss", nl.SquaredHingeLoss, _signed),
    ("SigmoidBCELoss", nl.SigmoidBCELoss, _binary),
    ("SigmoidBCELoss(from_sigmoid)", lambda: nl.SigmoidBCELoss(from_sigmoid=True), _probabilities),
    ("LogisticLoss", nl.LogisticLoss, _signed),
    ("LogisticLoss(binary)", lambda: nl.LogisticLoss(label_format="binary"), _binary),
    ("PoissonNLLLoss", nl.PoissonNLLLoss, _counts),
    ("PoissonNLLLoss(rates)", lambda: nl.PoissonNLLLoss(from_logits=False), _rates),
    ("KLDivLoss", nl.KLDivLoss, _distributions),
]


def _time_per_call(fn: Callable[[], object], budget: float = 0.05) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed > budget:
            return elapsed / n


def main(argv: list[str] | None = None) -> int:
    """Run the tour; return the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m numba_losses", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 1024), help="timing shape (default 256 1024)")
    args = parser.parse_args(argv)

    print(f"numba_losses {nl.__version__}  numba {numba.__version__}  numpy {np.__version__}")
    print(
        f"backends: cpu ({numba.config.NUMBA_NUM_THREADS} threads, layer {numba.config.THREADING_LAYER}); "
        "cuda: not in this version"
    )
    print("first run compiles each kernel once (a few seconds each); later runs load them from the cache\n")

    rng = np.random.default_rng(0)
    rows, failures = [], 0
    for name, make, sample in TOUR:
        if sys.stderr.isatty():
            print(f"  {name:30s} compiling / checking ...", end="\r", file=sys.stderr, flush=True)
        else:
            print(f"  {name}: compiling / checking ...", file=sys.stderr, flush=True)
        loss = make()
        small = sample(rng, (4, 6))
        try:
            err = max(check_gradient(loss, *small).values())
            status = "ok"
        except GradientCheckError as exc:
            err, status = float("nan"), "FAIL"
            failures += 1
            print(exc, file=sys.stderr)
        big = tuple(a.astype(np.float32) for a in sample(rng, tuple(args.shape)))
        value = float(np.mean(loss(*big)))
        out = np.empty(loss(*big).shape, np.float32)
        grad = np.empty(big[0].shape, np.float32)
        t_fb = _time_per_call(
            lambda loss=loss, big=big, out=out, grad=grad: loss.forward_backward(*big, out=out, grad_out=grad)
        )
        rows.append((name, "cpu", value, err, t_fb * 1e6, status))
    if sys.stderr.isatty():
        print(" " * 60, end="\r", file=sys.stderr)

    header = ("loss", "backend", "mean value", "grad error", f"fwd+bwd {args.shape[0]}x{args.shape[1]} f32 (us)", "")
    print(f"{header[0]:30s} {header[1]:7s} {header[2]:>12s} {header[3]:>11s} {header[4]:>28s}")
    for name, backend, value, err, t, status in rows:
        print(f"{name:30s} {backend:7s} {value:12.6g} {err:11.2e} {t:28.1f} {status}")
    print(f"\ngradient checks: {len(rows) - failures} of {len(rows)} within tolerance")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
