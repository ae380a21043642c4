"""Threads, forked and spawned processes, Ctrl-C and the progress bar."""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import fastspiral as fs
from fastspiral.numba_backend.workspace import n_slots

from .conftest import interrupt, start_interruptible

# 1200 rows x 100 hidden units: several slots, so the parallel loop runs.
BIG = dict(n_per_class=400, hidden=100)
assert n_slots(3 * BIG["n_per_class"], BIG["hidden"]) > 1


def _train(seed, n_per_class=BIG["n_per_class"], hidden=BIG["hidden"], iters=200):
    X, y = fs.make_spiral(n_per_class, 3, seed=0)
    net = fs.train_net(X, y, hidden=hidden, seed=seed, iters=iters)
    return net.params["W1"], net.loss_history


@pytest.mark.parametrize(
    "size", [dict(n_per_class=100, hidden=30), BIG], ids=["serial", "parallel"]
)
def test_concurrent_threads_match_calls_made_alone(size):
    seeds = [0, 1, 2, 3]
    alone = [_train(s, **size) for s in seeds]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda s: _train(s, **size), seeds * 2))
    for (w, hist), (w_ref, hist_ref) in zip(together, alone * 2):
        np.testing.assert_allclose(hist, hist_ref, rtol=1e-12)
        np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=1e-15)


SCRIPT_THREADS = textwrap.dedent("""
    import numba, numpy as np
    from concurrent.futures import ThreadPoolExecutor
    import fastspiral as fs
    X, y = fs.make_spiral(400, 3, seed=0)
    run = lambda s: fs.train_net(X, y, seed=s, iters=100).loss_history
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, range(8)))
    alone = [run(s) for s in range(8)]
    assert all(np.allclose(a, b, rtol=1e-12) for a, b in zip(together, alone))
    print(numba.threading_layer())
""")


def test_threads_are_safe_on_the_workqueue_layer():
    """workqueue aborts on concurrent launches; fastspiral serialises them."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT_THREADS], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "workqueue"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_child_processes_train_after_the_parent(method):
    parent = _train(5)  # the parent has run the parallel kernels (and started the thread pool)
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [pool.submit(_train, 5) for _ in range(2)]
        results = [f.result(timeout=240) for f in futures]
    for w, hist in results:
        np.testing.assert_allclose(hist, parent[1], rtol=1e-9)
        np.testing.assert_allclose(w, parent[0], rtol=1e-9, atol=1e-12)


SCRIPT_LONG = textwrap.dedent("""
    import sys, time
    import fastspiral as fs
    X, y = fs.make_spiral(100, 3, seed=0)
    fs.train_{model}(X, y, iters=5, backend="{backend}")   # compile (or load the cache) first
    print("started", flush=True)
    fs.train_{model}(X, y, iters=10**8, backend="{backend}")
""")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("model", ["net", "linear"])
def test_ctrl_c_stops_a_long_training_within_a_second(backend, model):
    proc = start_interruptible(
        [sys.executable, "-c", SCRIPT_LONG.format(model=model, backend=backend)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(1.0)  # well into the long run
    finally:
        elapsed = interrupt(proc)
    stderr = proc.stderr.read()
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert elapsed < 1.0, f"took {elapsed:.2f} s to stop"


def test_progress_bar_shows_the_loss(capsys):
    X, y = fs.make_spiral(seed=0)
    fs.train_net(X, y, iters=3000, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "train_net" in err and "3000/3000" in err and "loss=" in err
