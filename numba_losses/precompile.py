"""Warm the on-disk kernel cache ahead of time: :func:`precompile`, ``python -m numba_losses precompile``.

Numba compiles each kernel variant the first time a program needs it (seconds
each) and keeps it in the on-disk cache. :func:`precompile` runs every loss of a
set on sample inputs in every way a program can call it, so that each variant is
compiled once, in a pool of processes over all cores, and later processes only
load it. A Docker image or a CI job runs it at build time (docs/precompile.rst).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
from numba.core import event

from ._catalogue import CASES, cost_rank, sampler_for
from ._progress import Progress
from .elementwise import ElementwiseLoss
from .kernels.cpu import tiered
from .loss import Loss

# Small inputs run the serial kernels; large ones (at least NUMBA_LOSSES_SERIAL_BELOW
# elements, read from the environment as the kernels do) the parallel ones.
SMALL = (4, 6)
ROWS = 64


class Compiled(NamedTuple):
    """What :func:`precompile` did for one loss and dtype."""

    loss: str  #: the loss, with its non-default constructor arguments
    dtype: str  #: the input dtype it was warmed for
    kernels: int  #: kernel variants compiled (0: all were already in the cache)
    seconds: float  #: wall time of the worker for this loss and dtype


def describe(loss: Loss) -> str:
    """``ClassName(arg=value, ...)`` with the constructor arguments that differ from the defaults."""
    cls = type(loss)
    try:
        default = vars(cls())
    except TypeError:
        default = {}
    args = [f"{k.lstrip('_')}={v!r}" for k, v in vars(loss).items() if k in default and default[k] != v]
    return f"{cls.__name__}({', '.join(args)})" if args else cls.__name__


def _large_shape() -> tuple[int, int]:
    from numba_losses.kernels._options import SERIAL_BELOW

    cols = max(1024, 2 ** math.ceil(math.log2(max(2, 2 * SERIAL_BELOW // ROWS))))
    return ROWS, cols


def _cast(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return a.astype(dtype) if a.dtype.kind == "f" else a


def _optional_inputs(loss: Loss, inputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
    """The optional array inputs that select other kernel variants: none, ``sample_weight``, ``pos_weight``."""
    names = type(loss)._inputs
    pred = inputs[0]
    found: list[dict[str, Any]] = [{}]
    if "sample_weight" in names:
        per_row = np.ones((pred.shape[0],) + (1,) * (pred.ndim - 1), dtype=pred.dtype)
        elementwise = np.ones(pred.shape, dtype=pred.dtype)
        found += [{"sample_weight": per_row}, {"sample_weight": elementwise}]
    if "pos_weight" in names:
        found.append({"pos_weight": np.ones(pred.shape[-1:], dtype=pred.dtype)})
    usable = []
    for extra in found:
        try:  # planning only, no kernel: keeps the variants this loss accepts
            loss.result_shapes(*inputs, **extra)
        except (ValueError, TypeError):
            continue
        usable.append(extra)
    return usable


def _label_variants(loss: Loss, inputs: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    """``inputs``; for sparse softmax labels (read in their own dtype) also float64, int64 and int32 class ids."""
    variants = [inputs]
    if getattr(loss, "_sparse_label", False):
        for dt in (np.float64, np.int64, np.int32):
            if inputs[1].dtype != dt:
                variants.append((inputs[0], inputs[1].astype(dt), *inputs[2:]))
    return variants


def _flat_variants(loss: Loss, inputs: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    """``inputs``; for an elementwise loss also its 1-D version (one element per row: a kernel variant of its own)."""
    variants = [inputs]
    if isinstance(loss, ElementwiseLoss) and all(a.shape == inputs[0].shape for a in inputs):
        variants.append(tuple(a.reshape(-1) for a in inputs))
    return variants


def warm(loss: Loss, dtype: str = "float32") -> int:
    """Run ``loss`` in every way that needs its own kernel; return how many kernels were compiled.

    Small and large inputs (serial and parallel kernels) of ``dtype``; forward,
    forward+backward and backward; without ``sample_weight``, with one weight per
    sample and with one per element; with ``pos_weight`` where the loss takes it;
    sparse softmax labels as floats of ``dtype`` and as float64, int64 and int32
    class ids; 1-D inputs of the elementwise losses. C-contiguous inputs only (a
    strided view may compile one more variant at its first use).
    """
    sample = sampler_for(loss)
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    listener = KernelCounter()
    event.register("numba:compile", listener)
    try:
        with tiered.synchronous():  # the parallel kernels compiled in the calls, without serial stand-ins
            for shape in (SMALL, _large_shape()):
                base = tuple(_cast(a, dt) for a in sample(rng, shape))
                for inputs in (v for labels in _label_variants(loss, base) for v in _flat_variants(loss, labels)):
                    for extra in _optional_inputs(loss, inputs):
                        loss(*inputs, **extra)
                        loss.forward_backward(*inputs, **extra)
                        loss.backward(*inputs, **extra)
    finally:
        event.unregister("numba:compile", listener)
    return listener.count


class KernelCounter(event.Listener):
    """Counts the kernels Numba compiles (its ``numba:compile`` event; loads from the cache raise none)."""

    def __init__(self) -> None:
        self.count = 0

    def on_start(self, ev: event.Event) -> None:
        dispatcher = ev.data.get("dispatcher") if ev.data else None
        if getattr(getattr(dispatcher, "py_func", None), "__name__", "").endswith("_kernel"):
            self.count += 1

    def on_end(self, ev: event.Event) -> None:
        pass


def _task(label: str, loss: Loss, dtype: str) -> Compiled:
    start = time.perf_counter()
    n = warm(loss, dtype)
    return Compiled(label, dtype, n, time.perf_counter() - start)


def tour_warm(index: int, shape: tuple[int, int]) -> Compiled:
    """Compile what the tour's CPU row of ``CASES[index]`` needs (``python -m numba_losses``'s first phase)."""
    from ._catalogue import run_cpu_case, tour_inputs

    label, make, sample = CASES[index]
    start = time.perf_counter()
    listener = KernelCounter()
    event.register("numba:compile", listener)
    try:
        with tiered.synchronous():  # the kernels the tour's timed calls load, not serial stand-ins
            run_cpu_case(make(), *tour_inputs(sample, np.random.default_rng(0), shape))
    finally:
        event.unregister("numba:compile", listener)
    return Compiled(label, "", listener.count, time.perf_counter() - start)


def _resolve(losses: Iterable[Any] | None) -> list[tuple[str, Loss]]:
    if losses is None:
        return [(label, make()) for label, make, _ in CASES]
    found = []
    for item in losses:
        loss = item() if isinstance(item, type) and issubclass(item, Loss) else item
        loss = getattr(loss, "loss", loss) if not isinstance(loss, Loss) else loss  # MakeLoss: its wrapped loss
        if not isinstance(loss, Loss):
            raise TypeError(f"losses: expected Loss instances or classes, got {item!r}")
        sampler_for(loss)  # raises TypeError for a loss without known sample inputs
        found.append((describe(loss), loss))
    return found


def precompile(
    losses: Iterable[Loss | type[Loss]] | None = None,
    dtypes: Iterable[str] = ("float32",),
    *,
    jobs: int | None = None,
    progress: bool = True,
) -> list[Compiled]:
    """Compile every CPU kernel variant that ``losses`` can need into the on-disk cache.

    Each loss and dtype is one task (:func:`warm`); tasks run in a pool of
    ``jobs`` processes (started with ``spawn``), which write the kernels into
    Numba's cache directory (``NUMBA_CACHE_DIR`` if set, else next to the
    package). Any later process then loads them from the cache (a few
    milliseconds each, after Numba's start-up in that process: about 0.3 to
    0.5 s at its first kernel).

    Parameters
    ----------
    losses : iterable of Loss instances or Loss classes, optional
        The losses to warm; a class stands for its default configuration and a
        :class:`~numba_losses.MakeLoss` for the loss it wraps. Default: every
        built-in loss in every configuration that has its own kernels.
        User-made elementwise losses are not cached on disk and are refused.
    dtypes : iterable of str
        Input dtypes to warm (``"float32"``, ``"float64"``; ``"float16"`` runs
        the float32 kernels).
    jobs : int, optional
        Worker processes; default: the CPUs this process may use. ``1`` warms
        in this process.
    progress : bool
        Print a progress line per finished task and the total to stderr
        (updated in place on a terminal).

    Returns
    -------
    list of Compiled
        One entry per loss and dtype, in completion order.

    Raises
    ------
    RuntimeError
        When a task failed (after all others finished), naming each.

    Examples
    --------
    >>> import numba_losses as nl
    >>> done = nl.precompile([nl.L2Loss], progress=False)  # doctest: +SKIP
    """
    if os.environ.get("NUMBA_LOSSES_CACHE", "1") == "0":
        raise RuntimeError("precompile: the kernel cache is disabled (NUMBA_LOSSES_CACHE=0)")
    resolved = sorted(_resolve(losses), key=lambda item: -cost_rank(item[1]))  # costly first (stable)
    tasks = [(f"{label} {np.dtype(dt)}", (label, loss, str(np.dtype(dt)))) for label, loss in resolved for dt in dtypes]
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    show = Progress(len(tasks), progress)
    done, failed = run_tasks(_task, tasks, jobs, show)
    show.close(f"precompile: {sum(c.kernels for c in done)} kernels compiled for {len(done)} tasks")
    if failed:
        raise RuntimeError("precompile failed for " + "; ".join(failed))
    return done


def default_jobs() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_tasks(
    fn: Callable[..., Compiled], tasks: list[tuple[str, tuple]], jobs: int, show: Progress
) -> tuple[list[Compiled], list[str]]:
    """``fn(*args)`` for every ``(label, args)``: in this process (one job) or in a pool of spawned processes.

    Returns the results in completion order and a ``"label: error"`` line per failed task.
    """
    done: list[Compiled] = []
    failed: list[str] = []
    if jobs == 1 or len(tasks) <= 1:
        for label, args in tasks:
            show.begin(label)
            try:
                done.append(fn(*args))
            except Exception as exc:  # reported by the caller
                failed.append(f"{label}: {type(exc).__name__}: {exc}")
                show.end(label, "FAILED")
                continue
            show.end(label, _note(done[-1]), done[-1].seconds)
        return done, failed
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(jobs, len(tasks))
    context = multiprocessing.get_context("spawn")  # never fork a process whose threads may be running
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(fn, *args): label for label, args in tasks}
        show.begin(f"{workers} processes", verb="compiling in")
        for future in as_completed(futures):
            label = futures[future]
            try:
                done.append(future.result())
            except Exception as exc:  # reported by the caller
                failed.append(f"{label}: {type(exc).__name__}: {exc}")
                show.end(label, "FAILED")
            else:
                show.end(label, _note(done[-1]), done[-1].seconds)
            if show.done < show.total:
                show.begin(f"{workers} processes", verb="compiling in")
    return done, failed


def _note(c: Compiled) -> str:
    return f"{c.kernels} kernels compiled" if c.kernels else "already in the cache"
