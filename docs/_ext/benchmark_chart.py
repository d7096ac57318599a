"""Charts of the benchmark results file, drawn when the documentation is built (a Sphinx extension).

``python asv_bench/compare.py --family all --save docs/_data/benchmarks.json``
writes the results file (``asv_bench/results_file.py`` describes it). At
``builder-inited`` this extension checks it (:func:`load_results`), draws
with matplotlib (Agg, 200 dpi PNGs: sharp on high-DPI screens):

* ``speedup.png``: per pass (forward, forward + backward), each case's
  speed-up over PyTorch and over NumPy (their time / this library's), on a
  log scale with a line at 1x;
* ``floor.png``: per pass, this library's share of the bandwidth floor
  (floor time / its time), for the cases that have a floor;
* ``speedup_small.png``: forward + backward speed-ups only, for the index page;

and writes ``performance.rst`` and ``index.rst`` next to them (figures with
a caption naming the date, machine and command), which the pages include.
Configuration: ``benchmark_results`` (the file, relative to the source
directory; default ``_data/benchmarks.json``) and ``benchmark_charts_dir``
(default ``_benchmarks``, to be listed in ``exclude_patterns``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "ResultsFileError",
    "load_results",
    "validate",
    "speedup_figure",
    "floor_figure",
    "write_charts",
    "caption",
    "charts_rst",
    "setup",
]

FORMAT = 1
PASSES = {"forward": "forward", "forward_backward": "forward + backward"}
TIMES = ("numba_losses_ms", "numpy_ms", "torch_ms", "floor_ms")
REFERENCES = {"torch_ms": ("over PyTorch", "#d9603b"), "numpy_ms": ("over NumPy", "#4878a8")}
FLOOR_COLOUR = "#4c9a5b"
DPI = 200
WIDTH_IN = 8.5  # shown at 96 CSS pixels per inch: 816 px wide, drawn at 1700 px
SMALL_WIDTH_IN = 6.5


class ResultsFileError(ValueError):
    """The benchmark results file is missing, is not JSON, or lacks a key the charts need."""


# -- reading and checking --------------------------------------------------------------------
def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results file.

    Parameters
    ----------
    path : str or Path
        The JSON file ``compare.py --save`` wrote.

    Returns
    -------
    dict
        The document, checked by :func:`validate`.

    Raises
    ------
    ResultsFileError
        The file is missing, is not JSON, or is malformed (the message names the key).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsFileError(
            f"benchmark results file {path} cannot be read ({exc.strerror}); make it with "
            f"python asv_bench/compare.py --family all --save {path}"
        ) from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path} is not JSON: {exc}") from exc
    return validate(doc, source=str(path))


def _fail(source: str, where: str, what: str, got: Any) -> ResultsFileError:
    return ResultsFileError(f"{source}: {where} must be {what}, got {got!r}")


def _need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str, where: str) -> Any:
    if key not in obj:
        raise ResultsFileError(f"{source}: {where}{key} is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise _fail(source, where + key, " or ".join(_KIND_NAMES[k] for k in kinds), value)
    return value


_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "an object", list: "a list",
               type(None): "null"}  # fmt: skip


def _time(value: Any, required: bool, source: str, where: str) -> None:
    if value is None and not required:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise _fail(source, where, "a positive number of ms" + ("" if required else " or null"), value)


def validate(doc: Any, source: str = "results") -> dict[str, Any]:
    """Check that ``doc`` has every key the charts and their caption read.

    Parameters
    ----------
    doc : object
        A parsed results file.
    source : str
        Named in error messages (the file's path).

    Returns
    -------
    dict
        ``doc`` itself.

    Raises
    ------
    ResultsFileError
        The first missing or ill-typed key, by its path (``rows[3].forward.torch_ms``).
    """
    if not isinstance(doc, dict):
        raise _fail(source, "the document", "a JSON object", type(doc).__name__)
    fmt = _need(doc, "format", int, source, "")
    if fmt != FORMAT:
        raise ResultsFileError(f"{source}: format {fmt} is not supported (this reader knows format {FORMAT})")
    for key in ("date", "command", "mode", "device"):
        if not _need(doc, key, str, source, "").strip():
            raise _fail(source, key, "a non-empty string", doc[key])
    _need(doc, "quiet", bool, source, "")
    machine = _need(doc, "machine", dict, source, "")
    _need(machine, "cpu", str, source, "machine.")
    _need(machine, "cores", int, source, "machine.")
    _need(machine, "numba_num_threads", int, source, "machine.")
    versions = _need(machine, "versions", dict, source, "machine.")
    _need(versions, "numpy", str, source, "machine.versions.")
    _need(versions, "numba", str, source, "machine.versions.")
    _need(versions, "torch", (str, type(None)), source, "machine.versions.")
    rows = _need(doc, "rows", list, source, "")
    if not rows:
        raise _fail(source, "rows", "a non-empty list", rows)
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(row, dict):
            raise _fail(source, where, "an object", row)
        for key in ("family", "loss", "case"):
            _need(row, key, str, source, where + ".")
        for pass_ in PASSES:
            times = _need(row, pass_, dict, source, where + ".")
            for key in TIMES:
                if key not in times:
                    raise ResultsFileError(f"{source}: {where}.{pass_}.{key} is missing (null if not measured)")
                _time(times[key], key == "numba_losses_ms", source, f"{where}.{pass_}.{key}")
    return doc


# -- what the charts show ----------------------------------------------------------------------
def row_label(row: dict[str, Any]) -> str:
    """A case's label on the charts: the loss without its "Loss" suffix, and its case (shape)."""
    return f"{row['loss'].removesuffix('Loss')} {row['case']}"


def ratios(rows: list[dict[str, Any]], pass_: str, key: str) -> list[float | None]:
    """``row[pass_][key] / row[pass_]["numba_losses_ms"]`` per row (None where ``key`` is null).

    For ``key`` ``torch_ms`` or ``numpy_ms`` this is the speed-up over that
    library; for ``floor_ms`` the share of the floor this library reaches.
    """
    out = []
    for row in rows:
        t = row[pass_]
        out.append(None if t[key] is None else t[key] / t["numba_losses_ms"])
    return out


def _import_figure() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - the docs extra has matplotlib
        raise ImportError('the benchmark charts need matplotlib: pip install "numba-losses[docs]"') from exc
    return Figure


def _ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _times(v: float) -> str:
    return f"{v:.2g}x" if v < 10 else f"{v:.0f}x"


def _family_breaks(ax: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(1, len(rows)):
        if rows[i]["family"] != rows[i - 1]["family"]:
            ax.axhline(i - 0.5, color="0.85", linewidth=0.8)


def _missing(ax: Any, y: float, text: str, fontsize: float) -> None:
    """A grey note at the left edge of the axes where a bar would be."""
    ax.text(0.01, y, text, transform=ax.get_yaxis_transform(), va="center", fontsize=fontsize - 2, color="0.55")


def _speedup_axes(ax: Any, rows: list[dict[str, Any]], pass_: str, fontsize: float) -> list[float]:
    height = 0.38
    shown = []
    for k, (key, (label, colour)) in enumerate(REFERENCES.items()):
        values = ratios(rows, pass_, key)
        ys = [i + (k - 0.5) * height for i in range(len(rows))]
        ax.barh([y for y, v in zip(ys, values, strict=True) if v is not None], [v for v in values if v is not None],
                height=height, color=colour, label=label)  # fmt: skip
        for y, v in zip(ys, values, strict=True):
            if v is None:
                _missing(ax, y, f"{label.removeprefix('over ')}: not measured", fontsize)
            else:
                ax.text(v * 1.06, y, _times(v), va="center", fontsize=fontsize - 1.5, color="0.25")
                shown.append(v)
    ax.axvline(1.0, color="0.2", linewidth=1.0)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_ticker().FuncFormatter(lambda v, _pos: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(_ticker().NullFormatter())
    ax.grid(axis="x", which="major", alpha=0.3)
    _family_breaks(ax, rows)
    return shown


def speedup_figure(results: dict[str, Any], passes: tuple[str, ...] = tuple(PASSES), *, width: float = WIDTH_IN) -> Any:
    """Horizontal bars of each case's speed-up over PyTorch and NumPy, one panel per pass.

    Parameters
    ----------
    results : dict
        A checked results file (:func:`load_results`).
    passes : tuple of str
        ``"forward"`` and / or ``"forward_backward"``, one panel each, side by side.
    width : float
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        Log-scale x axis (other library's time / this library's), a line at 1x.
    """
    figure = _import_figure()
    rows = results["rows"]
    small = width < WIDTH_IN
    fontsize = 8.5 if small else 9.5
    fig = figure(figsize=(width, max(2.0, 0.9 + (0.23 if small else 0.3) * len(rows))), layout="constrained")
    axes = fig.subplots(1, len(passes), sharey=True, squeeze=False)[0]
    shown = []
    for ax, pass_ in zip(axes, passes, strict=True):
        shown += _speedup_axes(ax, rows, pass_, fontsize)
        if len(passes) > 1:  # a lone panel's pass is in the caption
            ax.set_title(PASSES[pass_], fontsize=fontsize + 1)
        ax.set_xlabel("speed-up (their time / ours), log scale", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize)
    lo, hi = min([1.0, *shown]), max([1.0, *shown])
    for ax in axes:
        ax.set_xlim(lo / 1.6, hi * 3.0)  # room for the value labels
    axes[0].set_yticks(range(len(rows)), [row_label(r) for r in rows])
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # first row at the top
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=fontsize, frameon=False)
    return fig


def floor_figure(results: dict[str, Any], *, width: float = WIDTH_IN) -> Any | None:
    """Horizontal bars of this library's share of the bandwidth floor, one panel per pass.

    Only the cases with a floor (in either pass) are shown; ``None`` if none has one.

    Parameters
    ----------
    results : dict
        A checked results file (:func:`load_results`).
    width : float
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure or None
        Per case ``floor_ms / numba_losses_ms`` in percent, a line at 100 %.
    """
    figure = _import_figure()
    rows = [r for r in results["rows"] if any(r[p]["floor_ms"] is not None for p in PASSES)]
    if not rows:
        return None
    fontsize = 9.5
    fig = figure(figsize=(width, max(2.0, 0.9 + 0.25 * len(rows))), layout="constrained")
    axes = fig.subplots(1, len(PASSES), sharey=True)
    top = 100.0
    for ax, pass_ in zip(axes, PASSES, strict=True):
        shares = ratios(rows, pass_, "floor_ms")
        ys = [i for i, s in enumerate(shares) if s is not None]
        vs = [100 * s for s in shares if s is not None]
        ax.barh(ys, vs, height=0.6, color=FLOOR_COLOUR)
        for yy, v in zip(ys, vs, strict=True):
            ax.text(v + 1.5, yy, f"{v:.0f}%", va="center", fontsize=fontsize - 1.5, color="0.25")
        for i, share in enumerate(shares):
            if share is None:
                _missing(ax, i, "no floor computed", fontsize)
        top = max([top, *vs])
        ax.axvline(100.0, color="0.2", linewidth=1.0)
        ax.set_title(PASSES[pass_], fontsize=fontsize + 1)
        ax.set_xlabel("share of the floor (floor time / ours), %", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize)
        ax.grid(axis="x", alpha=0.3)
        _family_breaks(ax, rows)
    for ax in axes:
        ax.set_xlim(0, top * 1.15)
    axes[0].set_yticks(range(len(rows)), [row_label(r) for r in rows])
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    return fig


CHARTS = {
    "speedup": lambda r: speedup_figure(r),
    "floor": lambda r: floor_figure(r),
    "speedup_small": lambda r: speedup_figure(r, ("forward_backward",), width=SMALL_WIDTH_IN),
}


def write_charts(results: dict[str, Any], directory: str | Path, *, dpi: int = DPI) -> dict[str, Path]:
    """Draw the charts of :data:`CHARTS` into ``directory`` (created if missing) as PNGs.

    Parameters
    ----------
    results : dict
        A checked results file (:func:`load_results`).
    directory : str or Path
        Where ``<name>.png`` goes.
    dpi : int
        Pixels per inch (default 200: at least twice the 96 CSS pixels per inch
        they are shown at).

    Returns
    -------
    dict
        Chart name to the file written (``floor`` is absent if no case has a floor).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, draw in CHARTS.items():
        fig = draw(results)
        if fig is None:
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        written[name] = path
    return written


# -- the reStructuredText the pages include ----------------------------------------------------
def caption(results: dict[str, Any]) -> str:
    """One paragraph of reST: when, on what and with which command the numbers were made."""
    m = results["machine"]
    v = m["versions"]
    date = results["date"].replace("T", " ").removesuffix("Z")[:16] + " UTC"
    torch = f", torch {v['torch']}" if v.get("torch") else ", torch not installed"
    how = f"{results['mode']} run" + ("" if results["quiet"] else " on a shared machine: the ratios are rough")
    return (
        f"Measured {date} on {m['cpu']} ({m['cores']} cores, NUMBA_NUM_THREADS={m['numba_num_threads']}), "
        f"numpy {v['numpy']}, numba {v['numba']}{torch}, with ``{results['command']}`` ({how})."
    )


def _figure(image: str, alt: str, width_in: float, text: str) -> list[str]:
    return [
        f".. figure:: {image}",
        f"   :alt: {alt}",
        f"   :width: {round(width_in * 96)}px",
        "",
        f"   {text}",
        "",
    ]


def charts_rst(results: dict[str, Any], image_dir: str, page: str, names: set[str] | None = None) -> str:
    """The figures (and captions) a page includes.

    Parameters
    ----------
    results : dict
        A checked results file.
    image_dir : str
        The images' directory as the including page refers to it (``/_benchmarks`` for source-root-relative).
    page : {"performance", "index"}
        ``performance``: both speed-up panels and the floor chart; ``index``: the small chart.
    names : set of str, optional
        The charts that were drawn (default: all of :data:`CHARTS`).
    """
    names = set(CHARTS) if names is None else names
    when = caption(results)
    bars = (
        "Each bar is PyTorch's or NumPy's time divided by this library's (forward + backward into reused "
        "buffers); right of the 1x line this library is faster; a missing bar was not measured."
    )
    if page == "index":
        return "\n".join(
            _figure(
                f"{image_dir}/speedup_small.png",
                "speed-up over PyTorch and NumPy",
                SMALL_WIDTH_IN,
                f"Forward + backward speed-up over PyTorch and NumPy (CPU, float32). {when}",
            )  # fmt: skip
        )
    if page != "performance":
        raise ValueError(f"page must be 'performance' or 'index', got {page!r}")
    lines = _figure(f"{image_dir}/speedup.png", "speed-up over PyTorch and NumPy per loss", WIDTH_IN,
                    f"Speed-up over PyTorch and NumPy (CPU, float32). {bars} {when}")  # fmt: skip
    if "floor" in names:
        lines += _figure(
            f"{image_dir}/floor.png",
            "share of the bandwidth floor per loss",
            WIDTH_IN,
            "Share of the floor: the time to move the bytes a fused pass must read and write at the bandwidth "
            "of a Numba triad measured in the same run, divided by this library's time (100 % is the floor; "
            f"only cases with a floor are shown). {when}",
        )
    return "\n".join(lines)


# -- the Sphinx hook ---------------------------------------------------------------------------
def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build_charts(app: Any) -> None:
    """``builder-inited``: check the results file, draw the charts, write the pages' includes."""
    src = Path(app.srcdir)
    results = load_results(src / app.config.benchmark_results)
    out = src / app.config.benchmark_charts_dir
    names = set(write_charts(results, out))
    image_dir = "/" + app.config.benchmark_charts_dir
    for page in ("performance", "index"):
        _write_if_changed(out / f"{page}.rst", charts_rst(results, image_dir, page, names) + "\n")


def setup(app: Any) -> dict[str, Any]:
    """Register the configuration values and the ``builder-inited`` hook."""
    app.add_config_value("benchmark_results", "_data/benchmarks.json", "env")
    app.add_config_value("benchmark_charts_dir", "_benchmarks", "env")
    app.connect("builder-inited", build_charts)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
