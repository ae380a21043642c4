"""Sphinx configuration of the documentation site.

Build it with warnings as errors (what .ci/run does):

    pip install ".[docs]" && sphinx-build -W --keep-going -b html docs build/docs

The pages are Markdown (MyST), the API reference comes from the numpydoc
docstrings, and the notebook examples/case_study.ipynb (linked as
docs/case_study.ipynb) is run at build time, in a temporary folder, so the
site shows its outputs and the repository gets no file from it.
"""

from fastspiral import __version__

project = "fastspiral"
author = "the fastspiral developers"
copyright = "the fastspiral developers"
release = version = __version__

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_nb"]
exclude_patterns = ["_build"]
# Every page is a page of the site: one missing from the table of contents is an error.

# Markdown: headings get anchors that pages link to (design.md#glossary).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The notebook: run at every build, in a temporary folder, failing the build if a cell fails.
nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 300
nb_execution_raise_on_error = True

# API reference: numpydoc renders the docstrings' sections; members are listed by autodoc.
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say the types
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = "fastspiral"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
