"""The built documentation as a reader sees it: no raw markup, no empty sidebar, offline maths, sharp images.

Builds the site once (``python -m sphinx -W``), then reads the HTML; the last
test opens every page in headless Chromium (``docs/check_site.py``) and checks
that no main column overflows, no page shows raw TeX and no page has the
primary sidebar.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import check_site  # noqa: E402

pytestmark = pytest.mark.xdist_group("docs")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("sphinx") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the docs extra; sphinx is missing")
        pytest.skip('needs the docs extra: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site") / "html"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if not p.name.startswith(("_", "search", "genindex")))


def _text(page: Path) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", "", page.read_text(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_no_page_shows_literal_double_backticks(site):
    # reST markup that reached the reader unparsed, e.g. a paragraph numpydoc took for a parameter
    bad = {str(p.relative_to(site)): _text(p).count("``") for p in _pages(site) if "``" in _text(p)}
    assert not bad, bad


def test_loss_pages_list_inputs_in_a_rendered_section(site):
    page = (site / "generated" / "numba_losses.L2Loss.html").read_text()
    assert "Notes" in page and "Inputs:" in page
    params = re.search(r"Parameters.*?</dl>", page, re.S).group(0)
    assert "Inputs" not in params  # not a fake parameter entry


def test_no_empty_section_navigation_and_maths_from_the_site_itself(site):
    for page in _pages(site):
        text = page.read_text()
        assert "Section Navigation" not in text, page.name
        assert "cdn.jsdelivr" not in text and "mathjax@" not in text, page.name
    api = (site / "generated" / "numba_losses.SoftmaxCrossEntropyLoss.html").read_text()
    src = re.search(r'<script[^>]*src="([^"]*tex-chtml[^"]*)"', api)
    assert src is not None
    script = (site / "generated" / src.group(1).split("?")[0]).resolve()
    assert script.is_file() and script.stat().st_size > 500_000
    assert (site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_gallery_has_one_title_per_figure_and_high_dpi_images(site):
    import matplotlib.image

    from numba_losses.gallery import FIGURES, WIDTH_PX

    page = (site / "gallery.html").read_text()
    for spec in FIGURES:
        assert len(re.findall(rf"<h2>{re.escape(html.escape(spec.title))}<", page)) == 1, spec.title
    shown = re.findall(r'<img[^>]*src="(_images/[^"]+\.png)"[^>]*>', page)
    assert len(shown) == len(FIGURES)
    for tag in re.findall(r"<img[^>]*_images/[^>]*>", page):
        assert f"width: {WIDTH_PX}px" in tag or f'width="{WIDTH_PX}' in tag, tag
    for src in shown:
        assert matplotlib.image.imread(site / src).shape[1] >= 2 * WIDTH_PX - 2, src


def test_a_browser_finds_no_overflow_raw_tex_or_sidebar(site):
    if check_site.chromium() is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    records = check_site.measure(site)
    assert len(records) >= len(_pages(site))
    assert check_site.problems(records) == []


def test_performance_and_index_pages_show_the_benchmark_charts(site):
    """The charts of ``docs/_data/benchmarks.json``: on both pages, captioned, drawn at 2x their shown width."""
    import json

    import matplotlib.image

    sys.path.insert(0, str(DOCS / "_ext"))
    import benchmark_chart

    results = json.loads((DOCS / "_data" / "benchmarks.json").read_text())
    date = results["date"].replace("T", " ")[:16] + " UTC"
    expected = {
        "performance": {"speedup.png": benchmark_chart.WIDTH_IN, "floor.png": benchmark_chart.WIDTH_IN},
        "index": {"speedup_small.png": benchmark_chart.SMALL_WIDTH_IN},
    }
    for page, charts in expected.items():
        html_text = (site / f"{page}.html").read_text()
        tags = {Path(src).name: tag for tag, src in re.findall(r'(<img[^>]*src="(_images/[^"]+)"[^>]*>)', html_text)}
        text = _text(site / f"{page}.html")
        assert text.count(results["command"]) == len(charts), page  # one caption per chart
        assert text.count(date) == len(charts) and results["machine"]["cpu"] in text, page
        for name, width_in in charts.items():
            assert name in tags, (page, name)
            shown = round(96 * width_in)
            assert f"width: {shown}px" in tags[name] or f'width="{shown}' in tags[name], tags[name]
            assert matplotlib.image.imread(site / "_images" / name).shape[1] >= 2 * shown, name
