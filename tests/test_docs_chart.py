"""The benchmark charts of the documentation and the results file they are drawn from.

* ``asv_bench/results_file.py`` turns ``compare.py``'s raw results into rows,
  with floors from the triad's bandwidth (checked against bytes counted here);
* ``compare.py --save`` writes a file the chart code accepts, naming the command;
* ``docs/_ext/benchmark_chart.py`` draws a small synthetic file into sharp PNGs
  and the reST the pages include, and refuses malformed files naming the key;
* the committed ``docs/_data/benchmarks.json`` has every key the charts read.

The site build itself (``tests/test_site.py``) checks the rendered pages.
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMITTED = DOCS / "_data" / "benchmarks.json"
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT / "asv_bench"))
import benchmark_chart as bc  # noqa: E402
import compare  # noqa: E402
import results_file  # noqa: E402


def _times(lib: float, numpy: float | None, torch: float | None, floor: float | None) -> dict:
    return {"numba_losses_ms": lib, "numpy_ms": numpy, "torch_ms": torch, "floor_ms": floor}


def synthetic() -> dict:
    """A small results file: three cases, some times missing, one case without a floor."""
    return {
        "format": 1,
        "date": "2026-12-01T10:20:30Z",
        "command": "python asv_bench/compare.py --family all --save docs/_data/benchmarks.json",
        "mode": "full",
        "device": "cpu",
        "quiet": True,
        "machine": {
            "cpu": "Test CPU 9000",
            "cores": 4,
            "numba_num_threads": 4,
            "versions": {"numpy": "2.0.0", "numba": "0.60.0", "torch": "2.5.0"},
        },
        "rows": [
            {"family": "elementwise", "loss": "L2Loss", "case": "4096x4096",
             "forward": _times(5.0, 20.0, 15.0, 4.0), "forward_backward": _times(8.0, 80.0, 60.0, 6.0)},
            {"family": "softmax", "loss": "SoftmaxCELoss", "case": "4096x1000",
             "forward": _times(2.0, None, 3.0, None), "forward_backward": _times(6.0, 18.0, 9.0, 3.0)},
            {"family": "sdml", "loss": "SDMLLoss", "case": "512x128",
             "forward": _times(1.0, 0.5, None, None), "forward_backward": _times(2.0, 3.0, None, None)},
        ],
    }  # fmt: skip


# -- the writer ----------------------------------------------------------------------------------
def test_elementwise_rows_use_the_buffered_call_and_the_triad_floor():
    shape = (4, 8)  # 32 elements, one output per row
    data = {
        "triad": {"threads": 2, "gbps_2": 10.0, "gbps_1": 6.0},
        "large_ms": {"L2Loss": {"fb_buf": 1.0, "fb": 2.0, "fwd": 0.5, "numpy_fb": 7.0, "numpy_fwd": 3.0}},
        "torch": {False: {"large_ms": {"L2Loss": 9.0}, "large_fwd_ms": {"L2Loss": 4.0}}, True: {}},
    }
    (row,) = results_file.elementwise_rows(data, shape)
    assert (row["family"], row["loss"], row["case"]) == ("elementwise", "L2Loss", "4x8")
    # forward: read pred and label (2 * 32 * 4 bytes), write 4 outputs (16 bytes) = 272 bytes at 10 GB/s
    assert row["forward"] == {"numba_losses_ms": 0.5, "numpy_ms": 3.0, "torch_ms": 4.0, "floor_ms": 272 / 1e7}
    # forward+backward also writes the 32-element gradient: 400 bytes; the buffered call is ours
    assert row["forward_backward"] == {"numba_losses_ms": 1.0, "numpy_ms": 7.0, "torch_ms": 9.0, "floor_ms": 4e-5}


def test_missing_and_nan_times_become_null():
    data = {"rows": [{"case": (200, 32, 40, 50), "fwd": 2.0, "fb": 4.0, "numpy_fb": 40.0,
                      "torch_fwd": float("nan"), "torch_fb": float("nan"), "of_bound": 0.25}]}  # fmt: skip
    (row,) = results_file.ctc_rows(data)
    assert row["case"] == "T,N,C,L=200,32,40,50"
    assert row["forward"] == {"numba_losses_ms": 2.0, "numpy_ms": None, "torch_ms": None, "floor_ms": None}
    assert row["forward_backward"]["floor_ms"] == 1.0 and row["forward_backward"]["torch_ms"] is None


def test_compare_save_writes_a_file_the_charts_accept(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert compare.main(["--family", "softmax", "--smoke", "--save", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "ok"  # --smoke prints only "ok": --save adds nothing to stdout
    doc = bc.load_results(out)
    assert doc["command"].endswith(f"python asv_bench/compare.py --family softmax --smoke --save {out}")
    assert doc["mode"] == "smoke" and doc["device"] == "cpu"
    assert isinstance(doc["quiet"], bool) and len(doc["load_average"]) == 2
    assert datetime.strptime(doc["date"], "%Y-%m-%dT%H:%M:%SZ")
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"]
    assert {r["family"] for r in doc["rows"]} == {"softmax"} and len(doc["rows"]) == 2
    for row in doc["rows"]:
        assert row["forward_backward"]["floor_ms"] > 0 and row["forward"]["floor_ms"] is None
        assert row["forward_backward"]["numpy_ms"] > 0


def test_compare_save_refuses_cuda(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert compare.main(["--device", "cuda", "--smoke", "--save", str(out)]) == 2
    assert "--save writes CPU results only" in capsys.readouterr().err
    assert not out.exists()


# -- the charts ----------------------------------------------------------------------------------
def test_charts_of_a_synthetic_file_are_sharp_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    path = tmp_path / "bench.json"
    path.write_text(json.dumps(synthetic()))
    written = bc.write_charts(bc.load_results(path), tmp_path / "img")
    assert set(written) == {"speedup", "floor", "speedup_small"}
    for name, png in written.items():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name
        height, width = matplotlib.image.imread(png).shape[:2]
        shown = bc.SMALL_WIDTH_IN if name == "speedup_small" else bc.WIDTH_IN
        assert width >= 2 * 96 * shown, name  # at least 2 device pixels per CSS pixel
        assert 300 < height < width * 1.5, name


def test_floor_chart_is_left_out_when_no_case_has_a_floor(tmp_path):
    pytest.importorskip("matplotlib")
    doc = synthetic()
    for row in doc["rows"]:
        for p in ("forward", "forward_backward"):
            row[p]["floor_ms"] = None
    written = bc.write_charts(bc.validate(doc), tmp_path)
    assert set(written) == {"speedup", "speedup_small"}
    assert "floor.png" not in bc.charts_rst(doc, "/img", "performance", set(written))


def test_ratios_are_their_time_over_ours():
    rows = synthetic()["rows"]
    assert bc.ratios(rows, "forward_backward", "torch_ms") == [7.5, 1.5, None]
    assert bc.ratios(rows, "forward", "numpy_ms") == [4.0, None, 0.5]
    assert bc.ratios(rows, "forward_backward", "floor_ms") == [0.75, 0.5, None]


def test_captions_name_date_machine_and_command():
    doc = synthetic()
    perf = bc.charts_rst(doc, "/_benchmarks", "performance")
    assert perf.count(".. figure:: /_benchmarks/") == 2
    for text in ("2026-12-01 10:20 UTC", "Test CPU 9000 (4 cores, NUMBA_NUM_THREADS=4)", "numpy 2.0.0",
                 "numba 0.60.0", "torch 2.5.0", f"``{doc['command']}``"):  # fmt: skip
        assert text in perf, text
    assert "shared machine" not in perf
    doc["quiet"] = False
    index = bc.charts_rst(doc, "/_benchmarks", "index")
    assert index.count(".. figure:: /_benchmarks/speedup_small.png") == 1
    assert "on a shared machine: the ratios are rough" in index
    with pytest.raises(ValueError, match="page must be"):
        bc.charts_rst(doc, "/_benchmarks", "api")


def _drop(doc: dict, *path: str | int) -> dict:
    *head, last = path
    target = doc
    for key in head:
        target = target[key]
    del target[last]
    return doc


def _set(doc: dict, value: object, *path: str | int) -> dict:
    *head, last = path
    target = doc
    for key in head:
        target = target[key]
    target[last] = value
    return doc


MALFORMED = {
    "no date": (lambda d: _drop(d, "date"), "date is missing"),
    "no command": (lambda d: _drop(d, "command"), "command is missing"),
    "empty command": (lambda d: _set(d, " ", "command"), "command must be a non-empty string"),
    "no machine cpu": (lambda d: _drop(d, "machine", "cpu"), "machine.cpu is missing"),
    "no torch version": (lambda d: _drop(d, "machine", "versions", "torch"), "machine.versions.torch is missing"),
    "cores as text": (lambda d: _set(d, "4", "machine", "cores"), "machine.cores must be an integer, got '4'"),
    "quiet as text": (lambda d: _set(d, "yes", "quiet"), "quiet must be true or false"),
    "future format": (lambda d: _set(d, 2, "format"), "format 2 is not supported"),
    "no rows": (lambda d: _set(d, [], "rows"), "rows must be a non-empty list"),
    "no pass": (lambda d: _drop(d, "rows", 1, "forward"), r"rows\[1\]\.forward is missing"),
    "no floor key": (lambda d: _drop(d, "rows", 0, "forward", "floor_ms"), r"rows\[0\]\.forward\.floor_ms is missing"),
    "our time null": (
        lambda d: _set(d, None, "rows", 2, "forward_backward", "numba_losses_ms"),
        r"rows\[2\]\.forward_backward\.numba_losses_ms must be a positive number of ms, got None",
    ),
    "negative time": (
        lambda d: _set(d, -1.0, "rows", 0, "forward", "torch_ms"),
        r"rows\[0\]\.forward\.torch_ms must be a positive number of ms or null, got -1\.0",
    ),
    "not an object": (lambda d: [d], "the document must be a JSON object"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_are_refused_naming_the_key(case, tmp_path):
    spoil, message = MALFORMED[case]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(spoil(copy.deepcopy(synthetic()))))
    with pytest.raises(bc.ResultsFileError, match=message) as info:
        bc.load_results(path)
    assert str(path) in str(info.value)


def test_unreadable_and_non_json_files_are_refused(tmp_path):
    with pytest.raises(bc.ResultsFileError, match=r"cannot be read .*compare.py --family all --save"):
        bc.load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1,')
    with pytest.raises(bc.ResultsFileError, match="is not JSON"):
        bc.load_results(bad)


def test_the_sphinx_hook_writes_charts_and_includes_and_stops_on_a_bad_file(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "_data").mkdir()
    (tmp_path / "_data" / "b.json").write_text(json.dumps(synthetic()))
    app = SimpleNamespace(srcdir=str(tmp_path), config=SimpleNamespace(benchmark_results="_data/b.json",
                                                                       benchmark_charts_dir="_charts"))  # fmt: skip
    bc.build_charts(app)
    out = tmp_path / "_charts"
    assert sorted(p.name for p in out.iterdir()) == [
        "floor.png", "index.rst", "performance.rst", "speedup.png", "speedup_small.png"
    ]  # fmt: skip
    assert "/_charts/speedup.png" in (out / "performance.rst").read_text()
    (tmp_path / "_data" / "b.json").write_text(json.dumps(_drop(synthetic(), "machine")))
    with pytest.raises(bc.ResultsFileError, match="machine is missing"):
        bc.build_charts(app)


# -- the committed file --------------------------------------------------------------------------
def test_the_committed_results_file_has_every_key_and_family():
    doc = bc.load_results(COMMITTED)
    assert "python asv_bench/compare.py --family all" in doc["command"]  # maybe after NUMBA_NUM_THREADS=N
    assert "--save docs/_data/benchmarks.json" in doc["command"]  # --markdown may follow
    assert doc["device"] == "cpu" and doc["mode"] in ("full", "quick")
    datetime.strptime(doc["date"], "%Y-%m-%dT%H:%M:%SZ")
    assert {r["family"] for r in doc["rows"]} == {"elementwise", "softmax", "ctc", "pairwise", "sdml"}
    losses = {r["loss"] for r in doc["rows"]}
    for name in ("L2Loss", "L1Loss", "HuberLoss", "HingeLoss", "SquaredHingeLoss", "SigmoidBCELoss", "LogisticLoss",
                 "PoissonNLLLoss", "KLDivLoss", "SoftmaxCELoss", "CTCLoss", "TripletLoss", "CosineEmbeddingLoss",
                 "SDMLLoss"):  # fmt: skip
        assert name in losses, name
    for row in doc["rows"]:
        fb = row["forward_backward"]
        assert fb["numpy_ms"] is not None, row["loss"]  # every family has a NumPy forward+backward
        if row["family"] in ("elementwise", "softmax", "ctc"):
            assert fb["floor_ms"] is not None, row["loss"]
        if doc["machine"]["versions"]["torch"]:
            assert fb["torch_ms"] is not None, row["loss"]
