"""Sphinx configuration (stub; the documentation issue fills in the site)."""

project = "numba_losses"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
