"""The code in the README and the documentation pages runs and prints what the page shows.

A page's blocks, as a reader meets them:

* a ```python block followed by a ```text block prints that text; a ```python
  block without one prints nothing;
* a ```console block holds commands (``$ fastspiral ...``), each followed by
  what it prints;
* ```bash blocks are shown and not run (installs, a Dask cluster, the
  benchmark suite).

A page's blocks run in order in one fresh process, in a fresh folder, as a
reader following the page would run them; each README block runs alone, as
pasted into a fresh folder. Output is compared as doctest does (``...``
matches anything, runs of whitespace are equal), and a printed decimal number
matches when it is within one unit of its last printed digit (pytest's
doctest ``NUMBER`` rule): the compiled kernels round differently on AVX2 and
AVX-512, and a figure that straddles a rounding boundary may print either way.
"""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.(\d+)(?:[eE][-+]?\d+)?(?![\w.])")


class Block(NamedTuple):
    kind: str  # "python" or "console"
    code: str
    want: str  # what it prints
    line: int  # where it starts in its page


def blocks(path: Path) -> list[Block]:
    """The runnable blocks of a Markdown page, each with the output the page shows for it."""
    text = path.read_text()
    fences = [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, m)
        for m in _FENCE.finditer(text)
    ]
    found = []
    for i, (lang, body, line, match) in enumerate(fences):
        if lang == "python":
            want = ""
            if i + 1 < len(fences) and fences[i + 1][0] == "text":
                between = text[match.end() : fences[i + 1][3].start()]
                if not between.strip():
                    want = fences[i + 1][1]
            found.append(Block("python", body, want, line))
        elif lang == "console":
            for command in re.split(r"^(?=\$ )", body, flags=re.MULTILINE):
                if command.startswith("$ "):
                    cmd, _, want = command[2:].partition("\n")
                    found.append(Block("console", cmd, want, line))
    return found


# The runner: executes blocks in order, one output per block, stopping at the first failure.
_RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, os, shlex, subprocess, sys, traceback
    import matplotlib
    matplotlib.use("Agg")
    blocks, results, namespace = json.load(open(sys.argv[1])), [], {"__name__": "__main__"}
    for kind, code in blocks:
        out = io.StringIO()
        try:
            if kind == "python":
                with contextlib.redirect_stdout(out):
                    exec(compile(code, "<block>", "exec"), namespace)
            else:
                args = shlex.split(code)
                if args[0] == "fastspiral":  # the package under test, whatever PATH holds
                    args = [sys.executable, "-m", "fastspiral", *args[1:]]
                proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
                out.write(proc.stdout)
                if proc.returncode != 0:
                    raise RuntimeError(f"exit status {proc.returncode}: {proc.stderr[-3000:]}")
        except BaseException:
            results.append({"out": out.getvalue(), "error": traceback.format_exc()})
            break
        results.append({"out": out.getvalue(), "error": None})
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def run_blocks(found: list[Block], folder: Path) -> list[dict]:
    """Run ``found`` in order in one fresh Python process whose working folder is ``folder``."""
    (folder / "blocks.json").write_text(json.dumps([(b.kind, b.code) for b in found]))
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, "blocks.json", "results.json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((folder / "results.json").read_text())


def _tolerate_last_digit(want: str, got: str) -> str:
    """``got`` with each decimal number replaced by the one ``want`` shows in its place, where
    they differ by at most one unit of ``want``'s last digit (pytest's doctest NUMBER rule)."""
    wants, gots = list(_DECIMAL.finditer(want)), list(_DECIMAL.finditer(got))
    if len(wants) != len(gots):
        return got
    pieces, end = [], 0
    for w, g in zip(wants, gots):
        unit = 10.0 ** -len(w.group(1))
        if abs(float(w.group()) - float(g.group())) <= unit * (1 + 1e-9):
            pieces += [got[end : g.start()], w.group()]
            end = g.end()
    return "".join(pieces) + got[end:]


def output_matches(want: str, got: str) -> bool:
    """Whether ``got`` is what a page shows as ``want`` (see the module's docstring)."""
    got = _tolerate_last_digit(want, got)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return doctest.OutputChecker().check_output(want.strip() + "\n", got.strip() + "\n", flags)


def check(page: Path, found: list[Block], results: list[dict]) -> None:
    name = page.relative_to(ROOT)
    for block, result in zip(found, results):
        where = f"{name}, the {block.kind} block at line {block.line}:\n{block.code}"
        assert result["error"] is None, f"{where}\nraised:\n{result['error']}"
        assert output_matches(block.want, result["out"]), (
            f"{where}\nprinted:\n{result['out']}\nwhere the page shows:\n{block.want}"
        )
    assert len(results) == len(found)


def test_output_matching_follows_the_rules():
    assert output_matches("loss 0.245", "loss 0.245\n")
    assert output_matches("loss 0.245", "loss 0.246")  # one unit of the last digit
    assert not output_matches("loss 0.245", "loss 0.247")
    assert not output_matches("1500 iterations", "1501 iterations")  # integers are exact
    assert output_matches("trained in ... s\nok", "trained in 0.162 s\nok")
    assert output_matches("", "")
    assert not output_matches("", "something\n")  # a block shown without output prints nothing


def test_blocks_pair_code_with_the_output_shown_after_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nprint(1)\n```\n\n```text\n1\n```\n\n```python\nx = 2\n```\n"
        "Text.\n\n```text\nnot an output: text between\n```\n"
        "```console\n$ echo a\na\n$ echo b\nb\n```\n```bash\npip install nothing\n```\n"
    )
    found = blocks(page)
    assert [(b.kind, b.code.strip(), b.want.strip()) for b in found] == [
        ("python", "print(1)", "1"),
        ("python", "x = 2", ""),
        ("console", "echo a", "a"),
        ("console", "echo b", "b"),
    ]


def test_the_readme_and_the_pages_have_code():
    assert len(blocks(README)) >= 1
    assert sum(len(blocks(p)) for p in PAGES) + len(blocks(README)) >= 4


def test_the_readme_stays_short():
    """The README says what fastspiral is and points to the rest (issue 23: about 200 lines)."""
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path):
    """Links to files of the repository resolve where the repository is browsed."""
    text = _FENCE.sub("", path.read_text())
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target and not target.startswith("mailto:"):
            assert (path.parent / target).exists(), f"{path.name} links to a missing {target}"


@pytest.mark.parametrize("index", range(len(blocks(README))))
def test_each_readme_block_runs_on_its_own(tmp_path, index):
    """Pasted alone into a fresh folder (its own imports, files written there), each README block
    runs and prints what the README shows."""
    found = [blocks(README)[index]]
    check(README, found, run_blocks(found, tmp_path))


# The guide's pages run under -m slow: each is a fresh process that trains, sweeps or draws, about
# 50 s together on an empty compile cache, which took the README's pytest past five minutes.
# The README's blocks and getting-started.md, a newcomer's first contact, stay in it.
@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=[pytest.mark.slow] if "guide" in p.parts else [])
        for p in PAGES
        if blocks(p)
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_each_page_runs_as_a_reader_follows_it(tmp_path, page):
    """A page's blocks, in order, in one process and a fresh folder, print what the page shows."""
    found = blocks(page)
    check(page, found, run_blocks(found, tmp_path))
