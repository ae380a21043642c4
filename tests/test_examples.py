"""The example notebook runs as a reader would run it.

(The README's and the documentation pages' code blocks: tests/test_docs.py.)
"""

import base64
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "case_study.ipynb"


@pytest.mark.slow  # a Jupyter kernel and the whole case study: 10 s, under -m slow with the guide
def test_the_notebook_runs(tmp_path):
    """examples/case_study.ipynb from top to bottom, in a fresh kernel, in a fresh folder."""
    nbformat = pytest.importorskip(
        "nbformat", reason="the notebook needs the test extra's nbformat"
    )
    nbclient = pytest.importorskip(
        "nbclient", reason="the notebook needs the test extra's nbclient"
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError at the first failing cell (one cell asserts)
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    images = [o for o in outputs if {"image/png", "image/gif"} & set(o.get("data", {}))]
    assert len(images) >= 6  # data, both regions, the animation, the losses, the grid
    gifs = [base64.b64decode(o["data"]["image/gif"]) for o in images if "image/gif" in o["data"]]
    assert len(gifs) == 1 and gifs[0].startswith(b"GIF89a")
    # The animation went to a temporary folder: running the notebook writes nothing where it runs.
    assert list(tmp_path.iterdir()) == []
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "largest loss difference" in text  # the NumPy pass beside the compiled one
    assert "True True" in text  # the exercise's check of a backward pass passes as given


def test_the_notebook_is_stored_without_outputs():
    """The notebook is kept as source: outputs come from running it (the docs build runs it)."""
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
