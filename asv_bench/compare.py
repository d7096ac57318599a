"""Side-by-side timings of numba_losses, NumPy (or CuPy) and PyTorch, one loss family at a time.

Usage::

    python asv_bench/compare.py [--family FAMILY] [--device {cpu,cuda}] [--quick] [--markdown]
                                [--smoke] [--repeats N] [--rounds R] [--json FILE] [--save FILE]

``--family`` is one of ``elementwise`` (the default), ``softmax``, ``ctc``,
``pairwise``, ``sdml``, or ``all``; ``--device`` is ``cpu`` (the default) or
``cuda``. Each family's section times this library, a hand-written NumPy
version (CuPy array expressions on the GPU, where there is one) and PyTorch
on the same inputs in one run, and prints ratios from that run.

CPU (``compare_families.cpu_<family>`` has the details):

* ``elementwise``: every elementwise loss at (4096, 4096) float32 (buffered
  and plain forward+backward, forward), bandwidth against a 2-thread numba
  triad, PyTorch with and without transparent huge pages, the per-call
  overhead at (64, 10), and cold / cached compile times in fresh processes;
* ``softmax``: SoftmaxCELoss at (8192, 32000), (4096, 1000) and a
  segmentation shape (class axis 1), bandwidth bounds and libm ``exp``;
* ``ctc``: CTCLoss, short sequences and a large alphabet, after checking that
  the three implementations agree;
* ``pairwise``: TripletLoss and CosineEmbeddingLoss at (4096, 512);
* ``sdml``: SDMLLoss at (512, 128) and (2048, 256).

CUDA (CuPy arrays; GPU time from CUDA events around a batch of calls): the
elementwise losses at 2**26 elements against CuPy expressions and PyTorch
CUDA, with bandwidth as a fraction of a device-to-device copy, and (64, 10)
wall time; SoftmaxCELoss likewise; CTC, pairwise and SDML against PyTorch
CUDA. Without CuPy and a GPU only ``--smoke`` runs.

``--quick`` uses fewer repeats (and smaller shapes where the full ones take
long); ``--smoke`` runs every code path once on tiny shapes (on the CUDA side
also in Numba's simulator, without CuPy or PyTorch) and prints only "ok": the
test suite uses it. ``--repeats`` / ``--rounds`` override the pairwise
family's calls per measurement and rounds (the minimum is kept). ``--json``
writes the raw results. ``--save`` (CPU only) writes the results file the
documentation's charts are drawn from (``results_file.py``: date, machine,
command, and per loss this library's, NumPy's and PyTorch's times and the
bandwidth floor, forward and forward+backward); the published one is
``docs/_data/benchmarks.json``, made by
``python asv_bench/compare.py --family all --save docs/_data/benchmarks.json``.

Only numba_losses' public API is used, so the script times whichever installed
version of the package the interpreter imports, with the same inputs: to time
another checkout, ``pip install --no-deps --target /tmp/nl-old /old/checkout``
and run ``PYTHONPATH=/tmp/nl-old python asv_bench/compare.py ...``. PyTorch
runs in child processes of this script (``--torch-worker``) for the
elementwise, pairwise and SDML families: keeping it out of this process keeps
its OpenMP runtime away from numba's threads. Times are minima of several
calls after a warm-up call; the machine may be shared, quote the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_families as cf  # noqa: E402
import results_file  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=[*cf.FAMILIES, "all"], default="elementwise", help="default elementwise")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller shapes where they take long")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--smoke", action="store_true", help="every code path once on tiny shapes; prints 'ok'")
    parser.add_argument("--repeats", type=int, help="pairwise: calls per measurement (default 20, --quick 5)")
    parser.add_argument("--rounds", type=int, help="pairwise: measurement rounds, the minimum is kept (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--save", type=Path, metavar="FILE", help="also write the results file the docs' charts read (CPU only)"
    )
    parser.add_argument("--torch-worker", metavar="JOB", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the chosen families' measurements and print their tables."""
    args = parse_args(argv)
    if args.torch_worker:
        print(json.dumps(cf.torch_worker(json.loads(args.torch_worker))))
        return 0
    families = cf.FAMILIES if args.family == "all" else [args.family]
    table = cf.CPU if args.device == "cpu" else cf.CUDA
    if args.device == "cuda" and not args.smoke and not cf.gpu().use_cupy:
        print("needs a GPU with CuPy (pip install -e '.[cupy]'); --smoke runs without one", file=sys.stderr)
        return 2
    if args.save and args.device != "cpu":
        print("--save writes CPU results only; use --json for --device cuda", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    sections = {}
    for family in families:
        print(f"measuring {family} ({args.device}) ...", file=sys.stderr, flush=True)
        if args.smoke:
            with contextlib.redirect_stdout(io.StringIO()):
                sections[family] = table[family](args)
        else:
            sections[family] = table[family](args)
    load1 = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps({f: s.data for f, s in sections.items()}, indent=1, default=_jsonable))
    if args.save:
        save_results(args, argv, sections, (load0, load1), time.perf_counter() - t_start)
    if args.smoke:
        print("ok")
        return 0

    print("\n".join(cf.environment_lines()))
    if args.device == "cuda":
        print("\n".join(cf.device_lines()))
    print(f"load average (1 min) {load0:.2f} at start, {load1:.2f} at end: the machine may be shared, times are noisy")
    for family, section in sections.items():
        print(f"\n# {family} ({args.device})\n")
        print(section.text)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


def save_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    sections: dict[str, cf.Section],
    load_average: tuple[float, float],
    duration_s: float,
) -> None:
    """Write ``--save``'s results file (``results_file.py`` says what it holds)."""
    shape = cf.ELEMENTWISE_SETTINGS[cf.mode(args)]["large"]
    doc = results_file.results_document(
        results_file.cpu_rows({f: s.data for f, s in sections.items()}, shape),
        command=results_file.command_line(argv),
        mode=cf.mode(args),
        device=args.device,
        load_average=load_average,
        duration_s=duration_s,
    )
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.save}", file=sys.stderr)


def _jsonable(v: object) -> object:
    return v.tolist() if hasattr(v, "tolist") else str(v)


if __name__ == "__main__":
    sys.exit(main())
