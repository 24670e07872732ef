"""Sphinx configuration of jrnn's documentation site (``make docs``).

The site is Sphinx with myst-nb and sphinx-book-theme, as optax, flax and chex
publish theirs. Pages are MyST markdown; the API reference is generated from the
docstrings by autodoc (Google-style sections through napoleon, ``.. math::``
blocks through MathJax, bundled by sphinx-mathjax-offline so that equations
render without a network). The notebooks in ``../notebooks`` are copied next to
these pages and executed during the build, so the site shows their outputs and
plots; ``JRNN_FAST=1`` shortens their training, as in the tests.
"""

import os
import pathlib
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import jrnn  # noqa: E402

project = "jrnn"
author = "the jrnn authors"
copyright = "2026, the jrnn authors"
release = jrnn.__version__
version = release

extensions = [
  "myst_nb",
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "sphinx_copybutton",
  "sphinx_design",
  "sphinx-mathjax-offline",
]

# The notebooks live at the top of the repository (where readers and the tests run them); the site
# renders copies, executed here, so that building never writes into notebooks/.
NOTEBOOKS = DOCS / "notebooks"
if NOTEBOOKS.exists():
  shutil.rmtree(NOTEBOOKS)
shutil.copytree(ROOT / "notebooks", NOTEBOOKS, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "notebooks/figures/*.md", "jupyter_execute"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# MyST: $...$ and $$...$$ math, ::: fences, definition lists, and anchors for ## and ### headings.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Execute every notebook in the build (cached between builds by jupyter-cache); a cell that raises
# fails the build.
nb_execution_mode = os.environ.get("JRNN_DOCS_EXECUTE", "cache")
nb_execution_timeout = 1200
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # show `dtype=jnp.float32` as written, not the class repr
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# `xs: jax.typing.ArrayLike` would otherwise print as the eight types of the union it stands for.
autodoc_type_aliases = {"jax.typing.ArrayLike": "jax.typing.ArrayLike", "ArrayLike": "jax.typing.ArrayLike"}
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False  # field types are in the prose (`[T, H]` arrays); jax.Array's path is noise
add_module_names = False

html_theme = "sphinx_book_theme"
html_title = f"jrnn {release}"
html_theme_options = {
  "show_toc_level": 2,
  "home_page_in_toc": True,
  "use_download_button": True,
  "show_navbar_depth": 1,
}
html_static_path: list[str] = []
