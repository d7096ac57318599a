"""Compile every CUDA kernel of the package to PTX; print one JSON report.

Run by ``tests/test_ptx.py`` in a subprocess with the simulator off (the test
session itself may run with ``NUMBA_ENABLE_CUDASIM=1``). Needs numba-cuda with
NVVM (the ``cuda`` extra), no GPU: ``compile_device`` asks for the current
device's compute capability, so that lookup is replaced by a stand-in with the
target cc; the compilation itself is real NVVM.

What is compiled, for compute capabilities 8.0 and 9.0 and the float32,
float64 and float16-input paths:

* for every loss term, the row kernel with every optional input and the
  gradient (the superset of all variants' code), once with the warp-shuffle
  group sum and once with the shared-memory one;
* for every loss term, the forward-only row kernel (float32, sm_90);
* a user-made term through ``elementwise_loss``'s adapter (float32, both targets);
* every helper kernel (row scales, partial sums, broadcast sums, gather,
  MakeLoss's valid count and fill);
* the kernels of the structured losses, listed by the other modules of this
  package, ``tests/ptx/<family>.py`` (found by :func:`extra_modules`; each has
  ``jobs()``, a list of hashable job descriptions, and
  ``build(job) -> (py_func, signature, cc, checks)`` where ``checks`` maps a
  name to a substring the PTX must contain).

Usage, from the repository root: ``python -m tests.ptx.catalogue [--jobs N] [--only TEXT]``
(``python tests/ptx/catalogue.py`` works too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from unittest import mock

if not __package__:  # run by its file path: make ``tests`` importable from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CCS = [(8, 0), (9, 0)]
HELPERS = (
    "row_scales",
    "finish_rows",
    "sum_middle",
    "gather",
    "count_greater",
    "fill",
    "weigh_product",
    "head_product",
)
# (compute dtype, input/output dtype): float16 inputs are computed in float32.
PATHS = [("float32", "float32"), ("float64", "float64"), ("float32", "float16")]


class _Device:
    def __init__(self, cc):
        self.compute_capability = cc


def _jobs():
    from numba_losses.kernels.registry import ELEMENTWISE

    jobs = []
    for term in [*sorted(ELEMENTWISE), "computed"]:  # "computed": the weighting of a structured loss
        for cc in CCS:
            for path in PATHS:
                for shuffle in (True, False):
                    jobs.append(("rowmean", term, cc, path, shuffle, True))
        jobs.append(("rowmean", term, (9, 0), PATHS[0], True, False))
    for cc in CCS:
        jobs.append(("rowmean", "user_l1", cc, PATHS[0], True, True))
    for name in HELPERS:
        for cc in CCS:
            for path in PATHS:
                jobs.append((name, None, cc, path, True, True))
    for module in extra_modules():
        jobs += [("extra", module.__name__, job) for job in module.jobs()]
    return jobs


def extra_modules():
    """The modules of this package besides this one, each listing one family's kernels, sorted by name."""
    import importlib
    import pkgutil

    package = __spec__.parent if __spec__ is not None else "tests.ptx"
    here = os.path.dirname(os.path.abspath(__file__))
    names = sorted(m.name for m in pkgutil.iter_modules([here]) if m.name != "catalogue" and not m.ispkg)
    return [importlib.import_module(f"{package}.{name}") for name in names]


def _compile_extra(job):
    import importlib

    _, module, inner = job
    fn, sig, cc, want = importlib.import_module(module).build(inner)
    return _ptx_report(job, fn, sig, cc, {name: (text, True) for name, text in want.items()})


def _ptx_report(job, fn, sig, cc, want):
    """Compile ``fn`` for ``cc`` with real NVVM; ``want`` maps a check name to (PTX substring, expected presence)."""
    from numba import cuda
    from numba.cuda import dispatcher

    t0 = time.perf_counter()
    try:
        with mock.patch.object(dispatcher, "get_current_device", return_value=_Device(cc)):
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
    except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
        return {"job": _label(job), "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    checks = {"target": f".target sm_{cc[0]}{cc[1]}" in ptx, "entry": ".entry" in ptx}
    checks.update({name: (text in ptx) == present for name, (text, present) in want.items()})
    return {"job": _label(job), "ok": all(checks.values()), "checks": checks, "seconds": time.perf_counter() - t0}


def _compile(job):
    if job[0] == "extra":
        return _compile_extra(job)
    from numba import types

    from numba_losses.kernels.cuda.elementwise import build_rowmean_kernel, row_scales_kernel
    from numba_losses.kernels.cuda.gather import gather_kernel
    from numba_losses.kernels.cuda.makeloss import count_greater_kernel, fill_kernel
    from numba_losses.kernels.cuda.reduce import finish_rows_kernel, sum_middle_kernel
    from numba_losses.kernels.cuda.weighting import head_product_kernel, weigh_product_kernel
    from numba_losses.kernels.registry import COMPUTED, ELEMENTWISE

    kind, term, cc, (cdt, iodt), shuffle, full = job
    c = getattr(types, cdt)
    io = getattr(types, iodt)
    f64 = types.float64
    i64 = types.int64
    a3 = io[:, :, ::1]
    s3 = io[:, :, :]  # strided views of the caller's arrays
    if kind == "rowmean":
        value, grad = ELEMENTWISE.get(term) or (COMPUTED if term == "computed" else _user_l1())
        fn = build_rowmean_kernel(value, grad, full, full, full, shuffle).py_func
        sig = (s3, s3, a3, a3, c, c, f64[::1], c[::1], io[::1], a3, f64[:, ::1], i64, i64, i64)
    elif kind == "row_scales":
        fn = row_scales_kernel.py_func
        sig = (f64, io[:], io[:], types.boolean, types.boolean, f64[::1], c[::1])
    elif kind == "finish_rows":
        fn = finish_rows_kernel.py_func
        sig = (f64[:, ::1], f64[::1], c, io[::1])
    elif kind == "sum_middle":
        fn = sum_middle_kernel.py_func
        sig = (c[:, :, ::1], io[:, ::1])
    elif kind == "gather":
        fn = gather_kernel.py_func
        sig = (io[::1], i64, types.UniTuple(i64, 3), types.UniTuple(i64, 3), c[::1])
    elif kind == "count_greater":
        fn = count_greater_kernel.py_func
        sig = (io[::1], io, i64[::1])
    elif kind == "weigh_product":  # loss (compute dtype) and sample_weight broadcast to the output
        fn = weigh_product_kernel.py_func
        sig = (c[:, :, :], s3, types.boolean, f64, c, io[:, :, ::1])
    elif kind == "head_product":  # out_grad and sample_weight broadcast to the output, float64 products
        fn = head_product_kernel.py_func
        sig = (s3, types.boolean, s3, types.boolean, f64, f64[:, :, ::1])
    else:
        fn = fill_kernel.py_func
        sig = (io[::1], io)
    want = {"shuffle": ("shfl.sync", shuffle)} if kind == "rowmean" else {}
    return _ptx_report(job, fn, sig, cc, want)


def _user_l1():
    """A user-made term (``elementwise_loss``'s adapter around plain Python functions)."""
    from numba_losses.kernels.user_terms import make_term
    from tests.user_losses import l1_grad, l1_value

    return make_term(l1_value, l1_grad, 0, "user_l1")


def _label(job):
    if job[0] == "extra":
        return f"{job[1].rsplit('.', 1)[-1]}/" + "/".join(str(part) for part in job[2])
    kind, term, cc, (cdt, iodt), shuffle, full = job
    parts = [kind]
    if term:
        parts.append(term)
    parts += [f"sm_{cc[0]}{cc[1]}", iodt if iodt == cdt else f"{iodt}->{cdt}"]
    if kind == "rowmean":
        parts += ["shuffle" if shuffle else "shared", "fwd+grad" if full else "fwd"]
    return "/".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", help="compile only the jobs whose label contains this text")
    args = parser.parse_args()
    jobs = [job for job in _jobs() if not args.only or args.only in _label(job)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(_compile, jobs, chunksize=4))
    report = {
        "compiled": sum(r["ok"] for r in results),
        "total": len(results),
        "seconds": time.perf_counter() - t0,
        "failures": [r for r in results if not r["ok"]],
    }
    json.dump(report, sys.stdout)
    return 0 if not report["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
