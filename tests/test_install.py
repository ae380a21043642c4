"""The compile cache and what `import fastspiral` pulls in.

Read-only installations, processes at once, locks held elsewhere, damaged files.

The cache tests compile into empty caches in fresh processes (about a minute
together on 2 cores), so they are marked slow: `.ci/run` runs them after the
README's command, and `pytest -m slow` runs them here.
"""

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastspiral

TRAIN = (
    "import fastspiral as fs; X, y = fs.make_spiral(seed=0); "
    "fs.train_net(X, y, iters=10); fs.train_linear(X, y, iters=10); print(fs.__file__)"
)


def _run_read_only(site, command, env, cwd):
    """Copy the package to ``site``, bind-mount it read-only in a private mount namespace and run
    ``command`` there (sh); skips the test where unshare or read-only bind mounts are not
    permitted."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to make a read-only bind mount")
    shutil.copytree(
        Path(fastspiral.__file__).parent,
        site / "fastspiral",
        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"),
    )
    script = (
        f"mount --bind {site} {site} && mount -o remount,bind,ro {site} || exit 77; "
        f"touch {site}/probe 2>/dev/null && exit 78; {command}"
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode in (77, 78) or "unshare failed" in proc.stderr:
        pytest.skip(f"read-only bind mounts are not permitted here: {proc.stderr.strip()[:200]}")
    return proc


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_cache_falls_back_to_the_user_cache_when_the_package_is_read_only(tmp_path):
    """Installed read-only (a system site-packages), the kernels still cache and reload."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    site = tmp_path / "site"
    env.update(
        PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "user-cache"), NUMBA_DEBUG_CACHE="1"
    )
    py = f"{shlex.quote(sys.executable)} -c {shlex.quote(TRAIN)}"
    proc = _run_read_only(
        site,
        f"{py} > {tmp_path}/first.log 2>&1 && {py} > {tmp_path}/second.log 2>&1",
        env,
        tmp_path,
    )
    assert proc.returncode == 0, (proc.stderr, (tmp_path / "first.log").read_text()[-2000:])
    first = (tmp_path / "first.log").read_text()
    second = (tmp_path / "second.log").read_text()
    assert str(site) in first  # it really ran the read-only copy
    assert "data saved to" in first and str(tmp_path / "user-cache") in first
    assert not list(site.rglob("*.nbi"))
    assert "data loaded from" in second and "data saved to" not in second


def test_import_is_light():
    code = (
        "import sys, fastspiral; "
        "print(*[m in sys.modules for m in ('sklearn', 'distributed', 'matplotlib', 'tqdm')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 4


CONCURRENT = """
import sys
import fastspiral as fs
X, y = fs.make_spiral(200, 3, seed=0)
order = ["float64", "float32"] if sys.argv[1] == "a" else ["float32", "float64"]
for dtype in order:
    net = fs.train_net(X, y, iters=20, seed=0, dtype=dtype)
    lin = fs.train_linear(X, y, iters=20, seed=0, dtype=dtype)
    print(dtype, repr(net.final_loss), repr(lin.final_loss))
"""


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_processes_compiling_at_once_leave_a_loadable_cache(tmp_path):
    """Several processes compiling into one empty cache, in different orders, then one loading.

    Numba's cache can be corrupted by concurrent writers (a later load then
    segfaults); fastspiral serialises first calls with a file lock.
    """
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, order],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in "abab"
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    later = subprocess.run(
        [sys.executable, "-c", CONCURRENT, "a"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert later.returncode == 0, later.stderr[-2000:]
    assert sorted(later.stdout.splitlines()) == sorted(outs[0][0].splitlines())
    assert list(tmp_path.joinpath("cache").rglob("*.nbc"))


SETUP = """
import numpy as np
import fastspiral as fs
from fastspiral.numba_backend import loops as _loops
from fastspiral.numba_backend.update import gd_optimizer
from fastspiral.numba_backend.workspace import net_layout, net_workspace, new_net_params
X, y = fs.make_spiral(400, 3, seed=0)
rng = np.random.default_rng(0)
W1, b1 = 0.01 * rng.standard_normal((2, 100)), np.zeros(100)
W2, b2 = 0.01 * rng.standard_normal((100, 3)), np.zeros(3)
p = new_net_params({"W1": W1, "b1": b1, "W2": W2, "b2": b2}, np.float64)
opt = gd_optimizer(1.0, 1e-3, p.flat.size, net_layout(2, 100, 3, np.float64).b1, np.float64)
ws = net_workspace(1200, 2, 100, 3, np.dtype(np.float64), 2)
"""
STEPS = {
    "kernel": SETUP + "print(_loops.net_loss_grad(X, y, p, 1e-3, ws))",
    "train": "import fastspiral as fs; X, y = fs.make_spiral(400, 3, seed=0); "
    "print(fs.train_net(X, y, iters=10).final_loss)",
    "loop": SETUP + "h = np.empty(10); k = _loops.net_kernels(X, y, p, opt, ws); "
    "_loops.train_net_parallel(k, _loops.new_batches(X, y), p, opt, h, 0, 10, 2, ws); print(h[-1])",
}


BITS = """
import hashlib
import numpy as np
import fastspiral as fs
X, y = fs.make_spiral(seed=0)
rng = np.random.default_rng(0)
Xg, yg = rng.standard_normal((2000, 64)), rng.integers(0, 10, 2000)
for model in (fs.train_net(X, y, iters=30, seed=0), fs.train_net(Xg, yg, iters=50, seed=0),
              fs.train_linear(Xg, yg, iters=30, seed=0)):
    h = hashlib.sha1(model.loss_history.tobytes())
    for name in sorted(model.params):
        h.update(model.params[name].tobytes())
    print(h.hexdigest())
"""


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_a_first_run_gives_the_bits_of_later_runs(tmp_path):
    """A process that compiles the kernels and one that loads them from the cache train alike.

    A kernel another kernel called was linked into its caller, so a process
    held it twice, optimised apart and with the caller; the one that had
    compiled it ran one copy and a later process the other, and the general
    form's losses and weights differed in their last bits. Callees are now
    inlined or called by address (fastspiral.numba_backend.jit).
    """
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [_run_python(BITS, env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert len(runs[0].stdout.split()) == 3
    assert runs[0].stdout == runs[1].stdout


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_cached_training_loop_loads_in_a_later_process(tmp_path):
    """Call a kernel directly, then train, then run the parallel loop from a third process.

    When a compiled loop called a cached parallel kernel, the loop's cache
    entry was written without the prange's code and the third process
    segfaulted. The parallel loop is called from Python only, and cached on
    its own.
    """
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    for name in ("kernel", "train", "loop", "loop"):
        proc = subprocess.run(
            [sys.executable, "-c", STEPS[name]],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (name, proc.returncode, proc.stderr[-2000:])


WARM = """
import sys, warnings
import fastspiral.numba_backend.cache as cache
cache.COMPILE_WAIT = cache.SAVE_WAIT = float(sys.argv[1])
warnings.simplefilter("always", cache.CacheWarning)
import fastspiral as fs
X, y = fs.make_spiral(seed=0)
print(repr(fs.train_linear(X, y, iters=10, seed=0).final_loss))
"""


def _run_python(code, env, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    """A compile cache holding the case study's kernels, and what the script printed with it."""
    folder = tmp_path_factory.mktemp("filled") / "cache"
    # The linear kernels only: they compile in ~3 s, the net's in ~10 s, and behave the same.
    proc = _run_python(WARM, dict(os.environ, NUMBA_CACHE_DIR=str(folder)), 60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder, proc.stdout


LOCK_PATHS = """
import sys
import fastspiral
from fastspiral import _problem as _setup
from fastspiral.numba_backend import cache as _cache
from fastspiral.numba_backend import trainer as _numba_backend

X, y = fastspiral.make_spiral(seed=0)
dtype = sys.argv[1]
problems = [_setup.net_problem(X, y, dtype=dtype), _setup.linear_problem(X, y, dtype=dtype)]
for problem in problems:
    print(_cache._compile_lock_path(_numba_backend.prepare(problem)._key))
"""


def _lock_paths(dtype, env):
    """The compile-lock files of the case study's first calls in ``dtype``, in a process with
    ``env`` (they lie in its cache folder)."""
    proc = _run_python(LOCK_PATHS, env, dtype, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_locks_held_elsewhere_cost_a_bounded_wait_and_loads_wait_for_nothing(
    tmp_path, filled_cache
):
    """An outside process holds fastspiral's locks. A warm process beside an unrelated compile
    (float32 here) and held cache-write locks loads without waiting; a cold one whose own
    compile lock is held waits at most COMPILE_WAIT, cannot save, warns once each, and trains."""
    pytest.importorskip("fcntl", reason="file locks are POSIX's; elsewhere fastspiral takes none")
    from fastspiral.numba_backend.cache import file_lock

    cache = tmp_path / "cache"
    shutil.copytree(filled_cache[0], cache)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    save_locks = [str(f / ".fastspiral-save.lock") for f in cache.iterdir() if f.is_dir()]
    with contextlib.ExitStack() as stack:
        for path in save_locks + _lock_paths("float32", env):
            assert stack.enter_context(file_lock(path, 1)) == "held"
        warm = _run_python(WARM, env, 1000, timeout=120)  # a hang would time out
        assert warm.returncode == 0, warm.stderr[-2000:]
        assert warm.stdout == filled_cache[1] and "CacheWarning" not in warm.stderr

        for path in _lock_paths("float64", env):
            assert stack.enter_context(file_lock(path, 1)) == "held"
        for entry in cache.rglob("*linear*.nb[ic]"):  # the linear kernels must compile again
            entry.unlink()
        cold = _run_python(WARM, env, 1, timeout=300)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert cold.stdout == filled_cache[1]
    assert cold.stderr.count("waited 1 s for another process") == 1
    assert cold.stderr.count("kernels are kept in memory, not saved") == 1
    assert not list(cache.rglob("*linear*.nbc"))


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_a_damaged_cache_is_rebuilt(tmp_path, filled_cache):
    """Truncated, emptied and random index and data files: one warning, the same results, and the
    next process loads everything again."""
    cache = tmp_path / "cache"
    shutil.copytree(filled_cache[0], cache)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    rng = np.random.default_rng(0)
    damage = [lambda d: d[: len(d) // 2], lambda d: b"", lambda d: rng.bytes(len(d)), lambda d: d]
    for i, path in enumerate(sorted(cache.rglob("*.nb[ic]"))):
        path.write_bytes(damage[i % len(damage)](path.read_bytes()))
    healing = _run_python(WARM, env, 60)
    assert healing.returncode == 0, healing.stderr[-2000:]
    assert healing.stdout == filled_cache[1]
    assert healing.stderr.count("damaged compile-cache entry") == 1
    healed = _run_python(WARM, dict(env, NUMBA_DEBUG_CACHE="1"), 60)
    assert healed.returncode == 0, healed.stderr[-2000:]
    printed = [line for line in healed.stdout.splitlines() if not line.startswith("[cache]")]
    assert printed == filled_cache[1].splitlines()
    assert "CacheWarning" not in healed.stderr and "data saved to" not in healed.stdout


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_no_writable_cache_folder_compiles_in_memory(tmp_path):
    """Read-only package, unwritable NUMBA_CACHE_DIR and user cache: train, with one warning."""
    site = tmp_path / "site"
    env = dict(
        os.environ,
        PYTHONPATH=str(site),
        NUMBA_CACHE_DIR="/dev/null/cache",
        XDG_CACHE_HOME="/dev/null/cache",
        HOME="/dev/null",
    )
    proc = _run_read_only(
        site, f"{shlex.quote(sys.executable)} -c {shlex.quote(WARM)} 60", env, tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.split()) == 1
    assert proc.stderr.count("no writable folder for the compile cache") == 1
    assert not list(site.rglob("*.nbi"))


@pytest.mark.slow  # compiles into empty caches in subprocesses
def test_processes_with_other_caches_do_not_wait_for_each_other(tmp_path):
    """The compile lock lies in the cache folder: a process holding it for one NUMBA_CACHE_DIR
    makes no process of another wait. Kept in /tmp and keyed by the kernel alone, two cold
    processes with different caches waited for each other and then both compiled."""
    pytest.importorskip("fcntl", reason="file locks are POSIX's; elsewhere fastspiral takes none")
    from fastspiral.numba_backend.cache import file_lock

    env_a = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "a"))
    env_b = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "b"))
    paths_a, paths_b = _lock_paths("float64", env_a), _lock_paths("float64", env_b)
    assert len(paths_a) == 2 and not set(paths_a) & set(paths_b)
    assert all(p.startswith(str(tmp_path / "a")) for p in paths_a)
    with contextlib.ExitStack() as stack:
        for path in paths_a:
            assert stack.enter_context(file_lock(path, 1)) == "held"
        cold = _run_python(WARM, env_b, 1, timeout=300)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert "waited" not in cold.stderr and "CacheWarning" not in cold.stderr
    assert list((tmp_path / "b").rglob("*linear*.nbc"))  # it compiled and saved


NO_JIT = """
import os, tempfile
import numpy as np
import fastspiral as fs
X, y = fs.make_spiral(seed=0)
net = fs.train_net(X, y, iters=20, seed=0, backend="numpy")
lin = fs.train_linear(X, y, iters=20, seed=0, backend="numpy")
path = os.path.join(tempfile.mkdtemp(), "net.npz")
net.save(path)
assert np.array_equal(fs.load(path).predict(X), net.predict(X))
print(repr(net.final_loss), repr(lin.final_loss))
try:
    fs.train_net(X, y, iters=20, seed=0)
except RuntimeError as exc:
    print(exc)
"""


def test_import_and_the_numpy_backend_work_without_the_jit():
    """NUMBA_DISABLE_JIT=1 (how kernel bodies get coverage): import fastspiral raised
    AttributeError ("py_func"), so even the numpy backend was unusable. It trains as with the JIT,
    and the numba backend, whose kernels cannot run as Python, says why it cannot."""
    plain = _run_python(NO_JIT, dict(os.environ), timeout=300)
    off = _run_python(NO_JIT, dict(os.environ, NUMBA_DISABLE_JIT="1"), timeout=300)
    assert off.returncode == 0, off.stderr[-2000:]
    losses, refusal = off.stdout.splitlines()
    assert losses == plain.stdout.splitlines()[0]  # the numpy backend: the same bits
    assert "backend='numba' needs Numba's compiler, which NUMBA_DISABLE_JIT=1 turns off" in refusal
