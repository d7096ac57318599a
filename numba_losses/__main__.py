"""The tour: ``python -m numba_losses``.

Shows the backends found, runs every implemented loss on sample data, checks
each gradient against finite differences and prints one table. ``--plot DIR``
also writes the loss gallery's PNGs (:mod:`numba_losses.gallery`, needs
matplotlib). Exits non-zero if any check fails or the gallery cannot be drawn.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numba
import numpy as np
from numba.core import event

import numba_losses as nl

from ._catalogue import CASES, _regression, cost_rank, run_cpu_case, tour_inputs  # noqa: F401 (_regression: for tests' tours)
from ._progress import Progress
from .precompile import KernelCounter, default_jobs, run_tasks, tour_warm

TOUR = CASES  # (label, loss factory, sample inputs) per loss configuration
FIRST_RUN = "30 seconds"  # cold tour, 2 processes: 28 s wall, 52 s CPU (empty NUMBA_CACHE_DIR, 2026-12-04)


def _time_per_call(fn: Callable[[], object], budget: float = 0.05) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed > budget:
            return elapsed / n


def _cuda_backend() -> tuple[str | None, str]:
    """``(kind, description)``: kind is "gpu", "simulator" or None (no CUDA backend here)."""
    try:
        from numba import cuda
    except ImportError:
        return None, "cuda: numba-cuda not installed (pip install -e '.[cuda]')"
    if cuda.config.ENABLE_CUDASIM:
        return "simulator", "cuda: numba simulator (NUMBA_ENABLE_CUDASIM=1; small shapes, no timings)"
    if not cuda.is_available():
        return None, "cuda: no GPU found (NUMBA_ENABLE_CUDASIM=1 runs the CUDA kernels in Numba's simulator)"
    names = ", ".join(f"cuda:{g.id} {_name(g)}" for g in cuda.gpus)
    return "gpu", f"cuda: {names}"


def _name(gpu) -> str:
    with gpu:
        n = gpu.name
    return n.decode() if isinstance(n, bytes) else str(n)


def _to_device(a: np.ndarray):
    from numba import cuda

    try:
        import cupy

        if not cuda.config.ENABLE_CUDASIM:
            return cupy.asarray(a)
    except ImportError:
        pass
    return cuda.to_device(np.ascontiguousarray(a))


def _to_host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else a.copy_to_host()


def _device_check(loss: nl.Loss, inputs: tuple[np.ndarray, ...]) -> float:
    """Largest relative difference between the device's and the CPU's forward_backward."""
    c_out, c_grads = loss.forward_backward(*inputs)
    d_out, d_grads = loss.forward_backward(*(_to_device(a) for a in inputs))
    err = 0.0
    for c, d in zip((c_out, *c_grads), (d_out, *d_grads), strict=True):
        d = _to_host(d)
        err = max(err, float(np.max(np.abs(d - c) / (np.abs(c) + 1e-30), initial=0.0)))
    return err


def _device_time(loss: nl.Loss, big: tuple[np.ndarray, ...]) -> float:
    from numba import cuda

    dev = tuple(_to_device(a) for a in big)

    def call():
        loss.forward_backward(*dev)
        cuda.synchronize()

    return _time_per_call(call)


def main(argv: list[str] | None = None) -> int:
    """Run the tour (or ``precompile``); return the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["precompile"]:
        return precompile_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m numba_losses",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "The tour of numba_losses: runs every loss on sample data on the CPU (and on CUDA when\n"
            "a GPU, or Numba's CUDA simulator, is available), checks each gradient against finite\n"
            "differences, times forward+backward and prints one table. The first run compiles every\n"
            f"kernel and caches it on disk (about {FIRST_RUN} on an idle 2-core machine); later runs take seconds."
        ),
        epilog=(
            "Exit status: 0 when every check passes, 1 when a check fails or --plot cannot write the gallery.\n"
            "'python -m numba_losses precompile --help': compile every kernel into the on-disk cache ahead of time."
        ),
    )
    parser.add_argument(
        "--shape", type=int, nargs=2, default=(256, 1024), metavar=("ROWS", "COLS"), help="timing shape (256 1024)"
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=None,
        metavar="N",
        help="processes that compile the kernels first (default: all CPUs; 1: compile in this process)",
    )
    parser.add_argument("--plot", metavar="DIR", help="also write the loss gallery's PNGs into DIR (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.plot is not None:  # before the tour, not after minutes of it
        problem = _plot_problem(args.plot)
        if problem:
            print(f"gallery: {problem}", file=sys.stderr)
            return 1

    print(f"numba_losses {nl.__version__}  numba {numba.__version__}  numpy {np.__version__}")
    cuda_kind, cuda_desc = _cuda_backend()
    print(
        f"backends: cpu ({numba.config.NUMBA_NUM_THREADS} threads, layer {numba.config.THREADING_LAYER}); {cuda_desc}"
    )
    print(
        f"the first run compiles about 40 kernels and caches them on disk (about {FIRST_RUN} on an idle 2-core"
        " machine); later runs load them and take seconds\n"
    )

    jobs = args.jobs if args.jobs is not None else default_jobs()
    _warm_in_processes(tuple(args.shape), jobs)
    show = Progress(len(TOUR))
    rng = np.random.default_rng(0)
    rows, failures = [], 0
    counter = KernelCounter()
    event.register("numba:compile", counter)
    for name, make, sample in TOUR:
        counter.count = 0
        show.begin(name, "compiling / checking" if jobs == 1 else "checking")
        loss = make()
        small, big = tour_inputs(sample, rng, tuple(args.shape))
        value, err, t_fb, failure = run_cpu_case(loss, small, big, _time_per_call)
        status = "ok"
        if failure is not None:
            err, status = float("nan"), "FAIL"
            failures += 1
            print(failure, file=sys.stderr)
        rows.append((name, "cpu", value, err, t_fb * 1e6, status))
        if cuda_kind is not None:
            # the device result against the CPU's (float64), the gradient check above covering both
            d_err = _device_check(loss, small)
            d_status = "ok" if d_err < 1e-9 else "FAIL"
            failures += d_status != "ok"
            d_value = float(np.mean(_to_host(loss(*(_to_device(a) for a in small)))))
            t_dev = _device_time(loss, big) * 1e6 if cuda_kind == "gpu" else float("nan")
            rows.append((name, "cuda" if cuda_kind == "gpu" else "cudasim", d_value, d_err, t_dev, d_status))
        show.end(name, f"checked ({counter.count} kernels compiled)" if counter.count else "checked")
    event.unregister("numba:compile", counter)
    show.close(f"tour: {len(TOUR)} losses")
    print()

    header = ("loss", "backend", "value (4x6)", "grad error*", f"fwd+bwd {args.shape[0]}x{args.shape[1]} f32 (us)", "")
    print(f"{header[0]:32s} {header[1]:7s} {header[2]:>12s} {header[3]:>11s} {header[4]:>28s}")
    for name, backend, value, err, t, status in rows:
        shown = f"{t:28.1f}" if t == t else f"{'-':>28s}"
        print(f"{name:32s} {backend:7s} {value:12.6g} {err:11.2e} {shown} {status}")
    print(
        "\n* cpu: float64 finite differences (check_gradient); cuda: largest relative difference from the CPU's"
        " float64 value and gradient"
    )
    print(f"checks: {len(rows) - failures} of {len(rows)} within tolerance")
    if args.plot is not None and not _plot(args.plot):
        return 1
    return 1 if failures else 0


def _warm_in_processes(shape: tuple[int, int], jobs: int) -> None:
    """Compile the kernels of the tour's built-in losses into the on-disk cache in ``jobs`` processes.

    The tour then loads them: its timings run on idle cores, after every compilation.
    Nothing to do with one job, without the on-disk cache, or for a tour that is not the built-in one.
    """
    from numba_losses.kernels._options import CACHE

    indices = [i for i, case in enumerate(TOUR) if i < len(CASES) and case is CASES[i]]
    indices.sort(key=lambda i: -cost_rank(TOUR[i][1]()))  # costly first: no process left alone at the end
    if jobs == 1 or not CACHE or not indices:
        return
    show = Progress(len(indices))
    done, failed = run_tasks(tour_warm, [(TOUR[i][0], (i, shape)) for i in indices], jobs, show)
    show.close(f"compiled {sum(c.kernels for c in done)} kernels in {min(jobs, len(indices))} processes")
    for line in failed:  # the tour itself then runs (and reports) these losses
        print(f"warm-up: {line}", file=sys.stderr)


def precompile_main(argv: list[str]) -> int:
    """``python -m numba_losses precompile``: :func:`numba_losses.precompile` from the command line."""
    from ._catalogue import CASES
    from .precompile import precompile

    names = sorted({type(make()).__name__ for _, make, _ in CASES} | {"SoftmaxCELoss", "SigmoidBCELoss"})
    parser = argparse.ArgumentParser(
        prog="python -m numba_losses precompile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Compile every CPU kernel variant of the losses into Numba's on-disk cache (NUMBA_CACHE_DIR, or\n"
            "next to the package), in a pool of processes over all cores, so that later processes load the\n"
            "kernels instead of compiling them. Run it when building a Docker image or at the start of a CI job."
        ),
        epilog="Exit status: 0 when every kernel compiled, 1 otherwise.",
    )
    parser.add_argument("--jobs", "-j", type=int, default=None, metavar="N", help="processes (default: all CPUs)")
    parser.add_argument(
        "--dtype",
        nargs="+",
        default=["float32"],
        choices=["float16", "float32", "float64"],
        help="input dtypes to compile for (default: float32)",
    )
    parser.add_argument(
        "--loss",
        nargs="+",
        metavar="NAME",
        choices=names,
        help="only these loss classes, in their default configuration (default: every loss and configuration)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    losses = None if args.loss is None else [getattr(nl, name) for name in args.loss]
    try:
        precompile(losses, args.dtype, jobs=args.jobs, progress=not args.quiet)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _plot_problem(directory: str) -> str | None:
    """Why the gallery could not be written into ``directory`` (None when it can)."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib (pip install matplotlib, or the package's docs extra)"
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"cannot write into {directory}: {exc}"
    return None


def _plot(directory: str) -> bool:
    """Write the gallery into ``directory``; False (with the reason on stderr) when it cannot."""
    from .gallery import write_gallery

    print(f"\ngallery: drawing into {directory} ...", file=sys.stderr, flush=True)
    try:
        paths = write_gallery(directory)
    except (ImportError, OSError) as exc:
        print(f"gallery: {exc}", file=sys.stderr)
        return False
    print(f"gallery: {len(paths)} images in {directory}: {', '.join(p.name for p in paths)}")
    return True


if __name__ == "__main__":
    sys.exit(main())
