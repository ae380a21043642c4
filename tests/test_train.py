"""End-to-end training: backends agree, the case study's numbers, init, precision, divergence."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastspiral as fs
from fastspiral.numba_backend.workspace import MAX_SLOTS, n_slots, net_workspace

from .conftest import assert_close


def _fixed_init(D, H, K, seed=5):
    rng = np.random.default_rng(seed)
    return {
        "W1": 0.01 * rng.standard_normal((D, H)),
        "b1": np.zeros(H),
        "W2": 0.01 * rng.standard_normal((H, K)),
        "b2": np.zeros(K),
    }


@pytest.mark.parametrize(
    "n_per_class,hidden,n_classes", [(100, 100, 3), (1000, 100, 3), (40, 7, 5)]
)
def test_net_backends_agree_over_300_iterations(n_per_class, hidden, n_classes):
    X, y = fs.make_spiral(n_per_class, n_classes, seed=1)
    init = _fixed_init(2, hidden, n_classes)
    fast = fs.train_net(X, y, init=init, iters=300, backend="numba")
    ref = fs.train_net(X, y, init=init, iters=300, backend="numpy")
    np.testing.assert_allclose(fast.loss_history, ref.loss_history, rtol=1e-9)
    for name in ref.params:
        np.testing.assert_allclose(
            fast.params[name],
            ref.params[name],
            rtol=1e-9,
            atol=1e-9 * np.abs(ref.params[name]).max(),
            err_msg=name,
        )


def test_net_backends_agree_in_float32(spiral):
    """float32 training follows the float64 trajectory within what its rounding allows.

    The tolerance comes from the arithmetic, not from one machine's run: each
    iteration's float32 gradient sums N terms, a relative error of about
    sqrt(N) u (u = 2**-24, rounding errors adding like a random walk), and
    the dynamics amplify a perturbation of the weights of size u by a factor
    ``sensitivity``, measured here in float64 by starting from the float32
    rounding of the initial weights. Errors injected at each of t iterations
    add up to at most t times that, so at iteration t the relative deviation
    is bounded by ``(t + 1) * sensitivity * sqrt(N) * u``. (BLAS kernels
    differ in how they order the sums: NumPy's float32 run was 3x further
    from float64 with OpenBLAS's Haswell kernels than with its SkylakeX ones.)
    """
    X, y = spiral
    init = _fixed_init(2, 100, 3)
    iters = 300
    exact = fs.train_net(X, y, init=init, iters=iters)
    rounded = {k: v.astype(np.float32).astype(np.float64) for k, v in init.items()}
    perturbed = fs.train_net(X, y, init=rounded, iters=iters)
    u = np.finfo(np.float32).eps / 2

    def deviation(history):
        return np.abs(history - exact.loss_history) / exact.loss_history

    sensitivity = max(deviation(perturbed.loss_history).max() / u, 1.0)
    bound = (np.arange(iters) + 1) * sensitivity * np.sqrt(X.shape[0]) * u
    assert bound[-1] < 0.05  # the bound itself must be tight enough to catch a broken float32 path
    for backend in ("numba", "numpy"):
        run = fs.train_net(X, y, init=init, iters=iters, dtype="float32", backend=backend)
        assert run.params["W1"].dtype == np.float32
        assert (deviation(run.loss_history) <= bound).all(), backend
        for name in exact.params:
            scale = np.abs(exact.params[name]).max()
            np.testing.assert_allclose(run.params[name], exact.params[name], atol=bound[-1] * scale)


def test_linear_backends_agree(spiral, dtype):
    X, y = spiral
    W = 0.01 * np.random.default_rng(0).standard_normal((2, 3))
    init = {"W": W, "b": np.zeros(3)}
    fast = fs.train_linear(X, y, init=init, dtype=dtype.name)
    ref = fs.train_linear(X, y, init=init, dtype=dtype.name, backend="numpy")
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(fast.loss_history, ref.loss_history, rtol=rtol)
    for name in ref.params:
        assert_close(fast.params[name], ref.params[name], dtype, factor=1e3)


SAME_BITS = textwrap.dedent("""
    import sys, numba, numpy as np
    import fastspiral as fs
    X, y = fs.make_spiral(400, 3, seed=2)
    runs = []
    for threads in (1, 2, 3, 8):
        numba.set_num_threads(threads)
        net = fs.train_net(X, y, seed=4, iters=10_000)
        runs.append([net.loss_history] + [net.params[k] for k in ("W1", "b1", "W2", "b2")])
    same = [all(np.array_equal(a, b) for a, b in zip(run, runs[0])) for run in runs]
    print(*same)
""")


def test_same_bits_on_any_thread_count():
    """train_net on 1, 2, 3 and 8 threads: the same bits over 10,000 iterations.

    N=1,200, H=100 splits into 8 slots; every slot is computed by the same
    compiled code whichever thread runs it, and the slots are summed in a
    fixed order (the compiled loop's own count of workers is tested in
    tests/test_kernels.py::test_train_net_steps_on_threads).
    """
    assert n_slots(1200, 100) == MAX_SLOTS
    env = dict(os.environ, NUMBA_NUM_THREADS="8")
    proc = subprocess.run(
        [sys.executable, "-c", SAME_BITS], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True"] * 4


def test_slot_count_does_not_depend_on_the_workers():
    """More workers than slots are capped; the slots are the problem's, whatever the workers."""
    ws = {n: net_workspace(1200, 2, 100, 3, np.dtype(np.float64), n) for n in (1, 2, 3, 8, 64)}
    assert {w.n_slots for w in ws.values()} == {MAX_SLOTS}
    assert [w.n_workers for w in ws.values()] == [1, 2, 3, 8, 8]


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_compiled_loop_gives_the_same_bits_on_any_number_of_workers(workers):
    """The compiled loop itself, on 1 worker and on ``workers`` (more than this machine's cores)."""
    from fastspiral._problem import net_problem
    from fastspiral.numba_backend import loops as _loops
    from fastspiral.numba_backend.trainer import NetTrainer

    X, y = fs.make_spiral(400, 3, seed=2)
    problem = net_problem(X, y, seed=1)
    results = []
    for n in (1, workers):
        t = NetTrainer(problem)
        t.ws = net_workspace(1200, 2, 100, 3, np.dtype(np.float64), n)
        history = np.empty(2000)
        kernels = _loops.net_kernels(t.X, t.y, t.p, t.opt, t.ws)
        bad = _loops.train_net_parallel(kernels, t.data, t.p, t.opt, history, 0, 2000, n, t.ws)
        assert bad == -1
        results.append([history] + list(t.params().values()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_case_study_replay_with_its_legacy_random_stream():
    """np.random.RandomState(0) through data, linear init and net init: the published run."""
    rs = np.random.RandomState(0)
    X, y = fs.make_spiral(seed=rs)
    lin = fs.train_linear(X, y, seed=rs)
    net = fs.train_net(X, y, seed=rs)
    assert lin.loss_history[190] == pytest.approx(0.786302, abs=2e-6)  # printed: 0.786302
    assert round(lin.score(X, y), 2) == 0.49
    assert net.final_loss == pytest.approx(0.245, abs=1e-3)
    assert round(net.score(X, y), 2) == 0.98


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_headline_numbers(seed):
    X, y = fs.make_spiral(seed=seed)
    net = fs.train_net(X, y, seed=seed)
    assert net.loss_history.shape == (10_000,)
    assert net.final_loss == pytest.approx(0.245, abs=0.012)
    assert net.score(X, y) >= 0.97
    assert net.loss_history[0] == pytest.approx(
        np.log(3), abs=0.01
    )  # small init: uniform probabilities
    lin = fs.train_linear(X, y, seed=seed)
    assert lin.loss_history.shape == (200,)
    assert 0.72 <= lin.final_loss <= 0.83
    assert 0.45 <= lin.score(X, y) <= 0.58


def test_float32_reaches_case_study_accuracy(spiral):
    X, y = spiral
    net = fs.train_net(X, y, seed=0, dtype="float32")
    assert net.params["W2"].dtype == np.float32
    assert net.score(X, y) >= 0.97
    assert net.final_loss == pytest.approx(0.245, abs=0.012)


def test_same_seed_same_result_on_every_backend(spiral):
    X, y = spiral
    a = fs.train_net(X, y, seed=7, iters=50)
    b = fs.train_net(X, y, seed=7, iters=50)
    c = fs.train_net(X, y, seed=7, iters=50, backend="numpy")
    d = fs.train_net(X, y, seed=8, iters=50)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name])
        np.testing.assert_allclose(a.params[name], c.params[name], rtol=1e-9, atol=1e-12)
    assert not np.array_equal(a.params["W1"], d.params["W1"])


def test_init_continues_training_and_is_not_modified(spiral):
    X, y = spiral
    first = fs.train_net(X, y, seed=3, iters=150)
    snapshot = {k: v.copy() for k, v in first.params.items()}
    resumed = fs.train_net(X, y, init=first, iters=150)
    straight = fs.train_net(X, y, seed=3, iters=300)
    for name in snapshot:
        assert np.array_equal(first.params[name], snapshot[name])
        np.testing.assert_allclose(
            resumed.params[name], straight.params[name], rtol=1e-12, atol=1e-15
        )
    # A continued model's history holds the whole run: the first model's, then its own.
    assert np.array_equal(resumed.loss_history[:150], first.loss_history)
    np.testing.assert_allclose(resumed.loss_history[150:], straight.loss_history[150:], rtol=1e-12)
    lin = fs.train_linear(X, y, seed=3, iters=100)
    lin2 = fs.train_linear(X, y, init=lin.params, iters=100)
    np.testing.assert_allclose(
        lin2.loss_history, fs.train_linear(X, y, seed=3).loss_history[100:], rtol=1e-12
    )


def test_zero_iterations_returns_the_initial_model(spiral):
    X, y = spiral
    init = _fixed_init(2, 10, 3)
    net = fs.train_net(X, y, init=init, iters=0)
    assert net.loss_history.shape == (0,)
    for name in init:
        assert np.array_equal(net.params[name], init[name])


def test_other_shapes_train(dtype):
    """K and D come from the data: 7 classes in 5 dimensions, and H = 1."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((210, 5))
    y = np.argmax(X @ rng.standard_normal((5, 7)), axis=1)
    net = fs.train_net(X, y, hidden=20, iters=300, seed=0, dtype=dtype.name)
    assert net.params["W1"].shape == (5, 20) and net.params["W2"].shape == (20, 7)
    assert net.loss_history[-1] < 0.6 * net.loss_history[0]
    assert net.predict_proba(X).shape == (210, 7)
    tiny = fs.train_net(X, y, hidden=1, iters=20, seed=0, dtype=dtype.name)
    assert np.isfinite(tiny.loss_history).all()
    lin = fs.train_linear(X, y, iters=300, seed=0, dtype=dtype.name)
    assert lin.score(X, y) > 0.8


@pytest.mark.parametrize("which", ["net", "linear"])
def test_divergence_raises_floating_point_error(spiral, backend, which):
    X, y = spiral
    trainer = fs.train_net if which == "net" else fs.train_linear
    with pytest.raises(FloatingPointError, match=r"iteration \d+.*smaller step_size"):
        trainer(X, y, step_size=1e8, iters=500, seed=0, backend=backend)


def test_verbose_prints_the_case_study_lines(spiral, capsys):
    X, y = spiral
    fs.train_net(X, y, seed=0, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert [
        int(re.fullmatch(r"iteration (\d+): loss \d+\.\d{6}", s).group(1)) for s in lines
    ] == list(range(0, 10_000, 1000))
    fs.train_linear(X, y, seed=0, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and lines[-1].startswith("iteration 190: loss ")


def test_accepted_input_forms_give_the_same_model(spiral):
    X, y = spiral
    base = fs.train_net(X, y, seed=0, iters=30, hidden=8)
    variants = [
        (X.tolist(), y.tolist()),
        (np.asfortranarray(X), y.astype(np.uint8)),
        (np.repeat(X, 2, axis=1)[:, ::2], y.astype(np.int32)),  # strided view
        (X, y.astype(np.float64)),
    ]
    for Xv, yv in variants:
        m = fs.train_net(Xv, yv, seed=0, iters=30, hidden=8)
        for name in base.params:
            assert np.array_equal(m.params[name], base.params[name])
    m32 = fs.train_net(X.astype(np.float32), y, seed=0, iters=30, hidden=8)
    assert m32.params["W1"].dtype == np.float64
    Xi = np.round(X * 10).astype(np.int64)
    assert np.isfinite(fs.train_net(Xi, y, seed=0, iters=5, hidden=8).loss_history).all()
