"""The README's Python blocks and the example notebook run as a reader would run them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(
    r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.DOTALL | re.MULTILINE
)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_readme_block_runs_on_its_own(tmp_path, index):
    """Pasted alone into a fresh folder (its own imports, files written there), each block runs."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"README block {index + 1}:\n{BLOCKS[index]}\n{proc.stderr[-3000:]}"
    )


def test_the_notebook_runs(tmp_path):
    """examples/case_study.ipynb from top to bottom, in a fresh kernel, in a fresh folder."""
    nbformat = pytest.importorskip(
        "nbformat", reason="the notebook needs the test extra's nbformat"
    )
    nbclient = pytest.importorskip(
        "nbclient", reason="the notebook needs the test extra's nbclient"
    )
    notebook = nbformat.read(ROOT / "examples" / "case_study.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError at the first failing cell (the last one asserts)
    images = [
        o
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {}) or "image/gif" in o.get("data", {})
    ]
    assert len(images) >= 6  # data, both regions, the animation, the losses, the grid
    assert (tmp_path / "training_net.gif").read_bytes().startswith(b"GIF89a")
