"""
Sphinx configuration of the provider's documentation site (``make docs`` builds it into docs/_build/html).

Laid out like the official providers' docs: an index, the connection, one how-to page per operator,
sensor or feature under ``howto/`` (picked up by a glob, so a new page needs no edit here), the
emulator, the reliability tables, the benchmarks, the changelog and an API reference built from the
docstrings. Markdown pages (``ARCHITECTURE.md``, the tables) are read with MyST.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Importing the provider's modules for autodoc needs an Airflow home; keep it out of ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / "docs" / "_build" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_getimage import __version__  # noqa: E402

project = "airflow-provider-getimage"
author = "airflow-provider-getimage contributors"
copyright = "2026, airflow-provider-getimage contributors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Names in type hints that autodoc cannot resolve to a documented object are not errors.
nitpicky = False

html_theme = "furo"
html_title = f"airflow-provider-getimage {release}"
html_show_sourcelink = False
