"""The compile cache from a read-only installation, and what `import fastspiral` pulls in."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastspiral

TRAIN = ("import fastspiral as fs; X, y = fs.make_spiral(seed=0); "
         "fs.train_net(X, y, iters=10); fs.train_linear(X, y, iters=10); print(fs.__file__)")


def test_cache_falls_back_to_the_user_cache_when_the_package_is_read_only(tmp_path):
    """Installed read-only (a system site-packages), the kernels still cache and reload."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to make a read-only bind mount")
    site = tmp_path / "site"
    shutil.copytree(Path(fastspiral.__file__).parent, site / "fastspiral",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "user-cache"), NUMBA_DEBUG_CACHE="1")
    py = f"{shlex.quote(sys.executable)} -c {shlex.quote(TRAIN)}"
    script = (f"mount --bind {site} {site} && mount -o remount,bind,ro {site} || exit 77; "
              f"touch {site}/probe 2>/dev/null && exit 78; "
              f"{py} > {tmp_path}/first.log 2>&1 && {py} > {tmp_path}/second.log 2>&1")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode in (77, 78) or "unshare failed" in proc.stderr:
        pytest.skip(f"read-only bind mounts are not permitted here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, (proc.stderr, (tmp_path / "first.log").read_text()[-2000:])
    first = (tmp_path / "first.log").read_text()
    second = (tmp_path / "second.log").read_text()
    assert str(site) in first  # it really ran the read-only copy
    assert "data saved to" in first and str(tmp_path / "user-cache") in first
    assert not list(site.rglob("*.nbi"))
    assert "data loaded from" in second and "data saved to" not in second


def test_import_is_light():
    code = ("import sys, fastspiral; "
            "print(*[m in sys.modules for m in ('sklearn', 'distributed', 'matplotlib', 'tqdm')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 4
