"""The documentation: its code examples run, the site builds with -W, the gallery and the tour work.

* every ``.. code-block:: python`` of ``docs/*.rst`` runs, page by page in one
  namespace, as written (blocks importing CuPy only where a GPU and CuPy exist);
* every ``>>>`` example in the package's docstrings passes :mod:`doctest`;
* ``sphinx-build -W`` builds the site (API page for every public name, gallery images);
* the gallery's PNGs exist, are real images and are not blank;
* ``python -m numba_losses --plot DIR`` exits 0 and writes them; a failing check exits 1.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numba_losses as nl
from tests.conftest import CUPY_ON_GPU

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.rst"))
BLOCK = re.compile(r"^\.\. code-block:: python\n((?:[ \t]+:.*\n)*)\n((?:(?:[ \t]+.*)?\n)+)", re.M)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def python_blocks(page: Path) -> list[str]:
    """The page's python code blocks, dedented, in order."""
    blocks = []
    for match in BLOCK.finditer(page.read_text()):
        lines = match.group(2).rstrip("\n").splitlines()
        indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
        blocks.append("\n".join(ln[indent:] for ln in lines) + "\n")
    return blocks


CODE_PAGES = [p for p in PAGES if python_blocks(p)]
CODE_PAGES_NAMES = [p.name for p in CODE_PAGES]


def test_docs_have_examples():
    counts = {p.name: len(python_blocks(p)) for p in PAGES}
    expected = {"index.rst", "getting_started.rst", "mxnet.rst", "custom_losses.rst", "backends.rst"}
    assert expected <= set(CODE_PAGES_NAMES), counts
    assert sum(counts.values()) >= 12, counts
    assert counts["getting_started.rst"] >= 5 and counts["custom_losses.rst"] >= 3


@pytest.mark.parametrize("page", CODE_PAGES, ids=lambda p: p.name)
def test_doc_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    if page.name == "torch.rst" and importlib.util.find_spec("torch") is None:
        pytest.skip('needs the torch extra: pip install -e ".[torch]"')
    ns: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for i, block in enumerate(python_blocks(page)):
        if "import cupy" in block and not CUPY_ON_GPU:
            continue
        try:
            exec(compile(block, f"{page.name} block {i + 1}", "exec"), ns)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"{page.name}, python block {i + 1} failed:\n{block}") from exc
        ran += 1
    assert ran > 0


def _package_modules() -> list[str]:
    names = ["numba_losses"]
    for info in pkgutil.walk_packages(nl.__path__, "numba_losses."):
        if ".kernels.cuda" in info.name:
            continue  # importing CUDA kernel modules needs numba-cuda; they carry no examples
        if info.name.startswith("numba_losses.torch") and importlib.util.find_spec("torch") is None:
            continue  # the PyTorch adapter needs the torch extra
        names.append(info.name)
    return names


def test_docstring_examples_pass():
    """Every ``>>>`` example in the package's docstrings (doctest)."""
    attempted, failures = 0, []
    for name in _package_modules():
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
        attempted += result.attempted
        if result.failed:
            failures.append(f"{name}: {result.failed} of {result.attempted} failed")
    assert not failures, failures
    assert attempted >= 5


def test_doctest_catches_a_wrong_example():
    """The doctest runner above would notice a wrong docstring example."""

    def wrong():
        """>>> import numpy as np, numba_losses as nl
        >>> nl.L2Loss()(np.ones((1, 2)), np.zeros((1, 2)))
        array([1.])
        """

    runner = doctest.DocTestRunner(verbose=False)
    for test in doctest.DocTestFinder().find(wrong, "wrong", globs={}):
        runner.run(test, out=lambda _: None)
    assert runner.failures == 1


# -- the gallery --------------------------------------------------------------------------


def _check_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 5000, f"{path.name} is only {len(data)} bytes"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    rgb = pixels[..., :3]
    assert (rgb.std(axis=(0, 1)) > 0.02).all(), f"{path.name} is (nearly) blank"
    # more than the axes: at least 0.5% of the pixels are coloured (curves, heat-map cells; at the
    # gallery's 192 dpi a curve covers half the share of pixels it covered at 96 dpi)
    colour = rgb.max(axis=-1) - rgb.min(axis=-1)
    assert (colour > 0.2).mean() > 0.005, f"{path.name} has no coloured content"


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    pytest.importorskip("matplotlib")
    from numba_losses.gallery import write_gallery

    out = tmp_path_factory.mktemp("gallery")
    paths = write_gallery(out)
    return out, paths


def test_gallery_images_exist_and_are_not_empty(gallery_dir):
    from numba_losses.gallery import FIGURES

    out, paths = gallery_dir
    assert [p.name for p in paths] == [f"{f.name}.png" for f in FIGURES]
    assert len(FIGURES) >= 10
    for path in paths:
        _check_png(path)


def test_gallery_covers_the_losses_the_issue_names():
    from numba_losses.gallery import FIGURES

    titles = " ".join(f.title for f in FIGURES)
    for loss in (
        "L1Loss",
        "L2Loss",
        "HuberLoss",
        "LogisticLoss",
        "HingeLoss",
        "SquaredHingeLoss",
        "SigmoidBCELoss",
        "PoissonNLLLoss",
        "SoftmaxCrossEntropyLoss",
        "CTCLoss",
    ):
        assert loss in titles


def test_gallery_curves_are_the_losses():
    """The plotted values are the library's, checked against the textbook formulas."""
    from numba_losses.gallery import loss_curve

    x = np.linspace(-3, 3, 24)  # not through 0, where MXNet's subgradients differ from the formulas
    value, grad = loss_curve(nl.HuberLoss(), x, 0.0)
    np.testing.assert_allclose(value, np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5), rtol=1e-12)
    np.testing.assert_allclose(grad, np.clip(x, -1, 1), rtol=1e-12)
    value, grad = loss_curve(nl.SigmoidBCELoss(), x, 1.0)
    np.testing.assert_allclose(value, np.log1p(np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(grad, -1 / (1 + np.exp(x)), rtol=1e-12)  # sigmoid(x) - 1 without cancellation
    assert loss_curve(nl.SigmoidBCELoss(), np.zeros(1), 1.0)[1][0] == -1.0  # semantics section 4: exactly -label at 0
    value, grad = loss_curve(nl.PoissonNLLLoss(), x, 1.0)  # averaged to (1,) for one element: the term itself
    np.testing.assert_allclose(value, np.exp(x) - x, rtol=1e-12)
    np.testing.assert_allclose(grad, np.exp(x) - 1, rtol=1e-12, atol=1e-15)


def test_ctc_occupancy_is_a_posterior():
    """Each frame's occupancy sums to 1 and, for a label as long as the input, is the only path."""
    from numba_losses.gallery import ctc_occupancy

    rng = np.random.default_rng(3)
    cost, probs, occ = ctc_occupancy(rng.standard_normal((9, 5)), np.array([0, 2, 3]))
    np.testing.assert_allclose(occ.sum(axis=1), 1.0, atol=1e-12)
    assert (occ > -1e-12).all() and cost > 0
    x = rng.standard_normal((3, 4))
    cost, probs, occ = ctc_occupancy(x, np.array([2, 0, 1]))  # T = L: one alignment, no blanks
    np.testing.assert_allclose(occ, np.eye(4)[[2, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(cost, -np.log(probs[[0, 1, 2], [2, 0, 1]]).sum(), rtol=1e-12)


def test_write_gallery_rejects_unknown_names(tmp_path):
    pytest.importorskip("matplotlib")
    from numba_losses.gallery import write_gallery

    with pytest.raises(ValueError, match="unknown gallery figure"):
        write_gallery(tmp_path, names=["l2", "nope"])
    assert [p.name for p in write_gallery(tmp_path, names=["l1"])] == ["l1.png"]


# -- the tour ------------------------------------------------------------------------------


def _tour_env() -> dict[str, str]:
    """The environment of a user's shell: no simulator forced by this test session."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.xdist_group("tour")
def test_tour_plot_writes_the_gallery(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pngs"
    proc = subprocess.run(
        [sys.executable, "-m", "numba_losses", "--plot", str(out)],
        capture_output=True,
        text=True,
        env=_tour_env(),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "checks: " in proc.stdout and "gallery: 10 images" in proc.stdout
    for name in ("l2", "hinge", "softmax_ce", "ctc_alignment"):
        _check_png(out / f"{name}.png")


def test_tour_exits_non_zero_when_a_check_fails(monkeypatch, capsys):
    import math

    from numba_losses import __main__ as tour

    def sq(pred, label):
        return (pred - label) * (pred - label)

    def wrong(pred, label):
        return math.sin(pred)  # not the derivative

    Bad = nl.elementwise_loss(sq, wrong, name="BadLoss")
    monkeypatch.setattr(tour, "TOUR", [("BadLoss", Bad, tour._regression)])
    assert tour.main(["--shape", "8", "16"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_tour_plot_fails_cleanly_on_an_unwritable_directory(tmp_path, monkeypatch, capsys):
    from numba_losses import __main__ as tour

    monkeypatch.setattr(tour, "TOUR", [("L1Loss", nl.L1Loss, tour._regression)])
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert tour.main(["--shape", "8", "16", "--plot", str(blocker / "sub")]) == 1
    captured = capsys.readouterr()
    assert "gallery: cannot write into" in captured.err
    assert "compiling" not in captured.err and "checks:" not in captured.out  # refused before the tour


def test_tour_help_says_what_it_does_and_how_long_the_first_run_takes():
    proc = subprocess.run([sys.executable, "-m", "numba_losses", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for text in ("finite", "first run compiles", "later runs take seconds", "--plot DIR", "Exit status"):
        assert text in proc.stdout, text


# -- the site ------------------------------------------------------------------------------


@pytest.mark.xdist_group("docs")
def test_docs_build_with_warnings_as_errors(tmp_path):
    if importlib.util.find_spec("sphinx") is None:  # the build runs `python -m sphinx`
        if os.environ.get("CI"):
            pytest.fail("CI installs the docs extra; sphinx is missing")
        pytest.skip('needs the docs extra: pip install -e ".[docs]"')
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env=_tour_env(),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for page in ("index", "getting_started", "gallery", "mxnet", "custom_losses", "backends", "performance", "api"):
        assert (out / f"{page}.html").is_file(), page
    for name in nl.__all__:
        if name in ("SigmoidBCELoss", "SoftmaxCELoss"):
            continue  # aliases, documented under their long names
        assert (out / "generated" / f"numba_losses.{name}.html").is_file(), name
    images = sorted((out / "_images").glob("*.png"))
    assert len(images) >= 10
    for path in images:
        _check_png(path)
    gallery = (out / "gallery.html").read_text()
    assert gallery.count("<img") >= 10
