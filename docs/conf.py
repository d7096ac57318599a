"""Sphinx configuration of the numba_losses documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors).
The loss gallery's images are drawn by the library itself
(:func:`numba_losses.gallery.write_gallery`) each time the site is built, and the
benchmark charts of the performance and index pages by ``_ext/benchmark_chart.py``
from the committed results file ``_data/benchmarks.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numba_losses
from numba_losses.gallery import gallery_rst, write_gallery

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "numba_losses"
author = "the numba_losses developers"
copyright = "2026, the numba_losses developers"  # noqa: A001 - Sphinx's name
release = version = numba_losses.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "benchmark_chart",  # _ext/: charts of _data/benchmarks.json into _benchmarks/
    "training_curves",  # _ext/: two PyTorch trainings, this library's loss against PyTorch's, into _training/
]
benchmark_results = "_data/benchmarks.json"  # written by asv_bench/compare.py --save
benchmark_charts_dir = "_benchmarks"

templates_path = ["_templates"]
exclude_patterns = ["_build", "_gallery", "_benchmarks", "_training", "Thumbs.db", ".DS_Store"]
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_default_options = {"member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"numba_losses {release}"
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
# The site is flat (every page is in the top bar): no primary sidebar, which would only
# show an empty "Section Navigation" box and narrow the content column.
html_sidebars = {"**": []}
html_static_path = ["_static"]
html_css_files = ["layout.css"]  # wide tables and equations scroll inside the column
# Maths render offline: a bundled MathJax 3 (docs/_static/mathjax/README.txt), never a CDN.
mathjax_path = "mathjax/tex-chtml-full.js"

# -- the loss gallery, computed by this library at build time ------------------------------
_GALLERY = HERE / "_gallery"
write_gallery(_GALLERY, titles=False)  # each figure's section heading is its title
(_GALLERY / "figures.rst").write_text(gallery_rst("_gallery"))
