"""The update rules, the schedules and the batches: each against its formula, written out here,
and in training: both backends, every thread count, continuing, held-out data."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastspiral as fs
from fastspiral import optim
from fastspiral._plan import BatchOrder, batch_bounds, shuffle_rows
from fastspiral.numba_backend import update as compiled
from fastspiral.numba_backend.workspace import net_layout, net_views, new_net_params

from .conftest import assert_close

D, H, K = 2, 3, 2
NAMES = {"W1": (D, H), "b1": (H,), "W2": (H, K), "b2": (K,)}


def _formula(rule, x, dx, state, t, lr):
    """One update of one array as CS231n's notes write it (float64); state: the rule's arrays."""
    if rule.name in ("gd", "sgd"):
        return x - lr * dx
    if rule.name == "momentum":
        state[0] = rule.mu * state[0] - lr * dx
        return x + state[0]
    if rule.name == "nesterov":
        v_prev = state[0].copy()
        state[0] = rule.mu * state[0] - lr * dx
        return x - rule.mu * v_prev + (1 + rule.mu) * state[0]
    if rule.name == "adagrad":
        state[0] = state[0] + dx**2
        return x - lr * dx / (np.sqrt(state[0]) + rule.eps)
    if rule.name == "rmsprop":
        state[0] = rule.decay * state[0] + (1 - rule.decay) * dx**2
        return x - lr * dx / (np.sqrt(state[0]) + rule.eps)
    if rule.name == "adam":
        state[0] = rule.beta1 * state[0] + (1 - rule.beta1) * dx
        state[1] = rule.beta2 * state[1] + (1 - rule.beta2) * dx**2
        mt, vt = state[0] / (1 - rule.beta1**t), state[1] / (1 - rule.beta2**t)
        return x - lr * mt / (np.sqrt(vt) + rule.eps)
    raise AssertionError(rule)


RULES = [
    optim.GD(),
    optim.SGD(),
    optim.Momentum(mu=0.9),
    optim.Nesterov(mu=0.8),
    optim.Adagrad(eps=1e-6),
    optim.RMSProp(decay=0.9, eps=1e-6),
    optim.Adam(beta1=0.8, beta2=0.95, eps=1e-6),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_rule_follows_its_formula(rule, dtype):
    """Five updates of a tiny net's parameters: the compiled rule, the NumPy rule and the
    formula agree; L2 acts on the weights and not on the biases; the gradient is only read."""
    rng = np.random.default_rng(0)
    start = {k: rng.standard_normal(s) for k, s in NAMES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in NAMES.items()} for _ in range(5)]
    lr, reg, first = 0.1, 0.05, 3  # a continued training: its updates count from 4
    theta = new_net_params(start, dtype)
    layout = net_layout(D, H, K, dtype)
    n_weights = layout.b1
    opt = compiled.new_optimizer(rule, None, lr, reg, theta.flat.size, n_weights, dtype, first)
    numpy_params = {k: v.astype(dtype) for k, v in start.items()}
    numpy_state = {s: {k: np.zeros(v.shape, dtype) for k, v in start.items()} for s in rule.state}
    formula = {k: v.copy() for k, v in start.items()}
    formula_state = {k: [np.zeros(v.shape) for _ in rule.state] for k, v in start.items()}
    for i, g in enumerate(grads):
        grad = new_net_params(g, dtype)
        before = grad.flat.copy()
        compiled.RULES[rule.name](theta.flat, grad.flat, opt, i)
        assert np.array_equal(grad.flat, before)
        t = first + i + 1
        full = {
            k: (g[k] + reg * numpy_params[k] if k.startswith("W") else g[k]).astype(dtype)
            for k in g
        }
        rule.step(numpy_params, full, numpy_state, t, lr)
        for k in formula:
            dx = g[k] + (reg * formula[k] if k.startswith("W") else 0)
            formula[k] = _formula(rule, formula[k], dx, formula_state[k], t, lr)
    got = {"W1": theta.W1, "b1": theta.b1, "W2": theta.W2T.T, "b2": theta.b2}
    for k in formula:
        # Five updates of O(1) values: rounding of a few operations per update, times a
        # small growth through the state (the adaptive rules divide by sqrt(cache) ~ |dx|).
        assert_close(got[k], formula[k], dtype, factor=100)
        assert_close(numpy_params[k], formula[k], dtype, factor=100)
    # The padding between the parts of the flat vectors stays zero.
    gaps = np.ones(layout.size, bool)
    for first, size in ((0, D * H), (layout.W2T, K * H), (layout.b1, H), (layout.b2, K)):
        gaps[first : first + size] = False
    assert gaps.any() and not theta.flat[gaps].any() and not opt.state[:, gaps].any()
    for i in range(len(rule.state)):
        v = net_views(opt.state[i], layout)
        expect = {k: formula_state[k][i] for k in formula}
        for part, key in ((v.W1, "W1"), (v.b1, "b1"), (v.W2T.T, "W2"), (v.b2, "b2")):
            assert_close(part, expect[key], dtype, factor=100)


SCHEDULES = [
    optim.StepDecay(every=3, factor=0.5),
    optim.ExpDecay(k=0.1),
    optim.InverseTimeDecay(k=0.5),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedules_follow_their_formula(schedule):
    lr = 0.3
    formula = {
        "StepDecay": lambda u: lr * 0.5 ** (u // 3),
        "ExpDecay": lambda u: lr * math.exp(-0.1 * u),
        "InverseTimeDecay": lambda u: lr / (1 + 0.5 * u),
    }[type(schedule).__name__]
    theta = np.zeros(16)
    opt = compiled.new_optimizer(optim.GD(), schedule, lr, 0.0, 16, 0, np.float64, first_update=2)
    for it in range(8):
        u = 2 + it
        assert schedule.rate(lr, u) == pytest.approx(formula(u), rel=1e-15)
        # the compiled rate, read off a gd step of a unit gradient on a zero vector
        theta[:] = 0
        compiled.gd_update(theta, np.ones(16), opt, it)
        assert -theta[0] == pytest.approx(formula(u), rel=1e-14)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.Momentum(mu=1.0), "mu must be in"),
        (lambda: optim.Nesterov(mu=-0.1), "mu must be in"),
        (lambda: optim.Adam(beta1=1.0), "beta1 must be in"),
        (lambda: optim.Adam(beta2=1.5), "beta2 must be in"),
        (lambda: optim.Adam(eps=0.0), "eps must be > 0"),
        (lambda: optim.Adagrad(eps=-1e-8), "eps must be > 0"),
        (lambda: optim.RMSProp(decay=1.0), "decay must be in"),
        (lambda: optim.StepDecay(every=0), "every must be >= 1"),
        (lambda: optim.StepDecay(every=5, factor=0.0), "factor must be > 0"),
        (lambda: optim.ExpDecay(k=-1.0), "k must be > 0"),
        (lambda: optim.InverseTimeDecay(k=float("nan")), "k must be finite"),
        (lambda: optim.get_optimizer("adamw"), "optimizer must be one of"),
    ],
)
def test_hyperparameters_out_of_range_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.Momentum(mu="0.9"), "mu must be a real number"),
        (lambda: optim.StepDecay(every=2.5), "every must be an integer"),
        (lambda: optim.get_optimizer(optim.Adam), "optimizer must be a name or an object"),
        (lambda: optim.get_schedule("exp"), "schedule must be None or an object"),
    ],
)
def test_hyperparameters_of_the_wrong_type_are_refused(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_rules_round_trip_through_their_config():
    for rule in RULES:
        assert optim.optimizer_from_config(rule.config()) == rule
    for schedule in SCHEDULES:
        assert optim.schedule_from_config(schedule.config()) == schedule
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.optimizer_from_config({"name": "lbfgs"})


@pytest.mark.parametrize("n", [1, 2, 3, 300, 1001])
def test_shuffles_are_permutations(n):
    draws = np.random.default_rng(n).integers(0, 2**62, n)
    order = np.full(n, -1, np.int64)
    shuffle_rows(order, draws)
    assert np.array_equal(np.sort(order), np.arange(n))
    again = np.empty_like(order)
    shuffle_rows(again, draws)
    assert np.array_equal(order, again)  # the draws alone decide the order
    if n >= 300:
        assert (order != np.arange(n)).mean() > 0.9


@pytest.mark.parametrize("n, batch", [(300, 32), (300, 300), (10, 3), (7, 7), (5, 1)])
def test_batches_cover_each_epoch_once_the_last_smaller(n, batch):
    per_epoch = -(-n // batch)
    for epoch in range(3):
        seen = []
        for b in range(per_epoch):
            e, first, stop = batch_bounds(epoch * per_epoch + b, n, batch)
            assert e == epoch and stop - first == (batch if b < per_epoch - 1 else n - b * batch)
            seen.extend(range(first, stop))
        assert seen == list(range(n))


def test_batch_order_continues_from_its_state():
    """Drawn in chunks, or restored from the state at any update, the epochs' draws are the same."""
    whole = BatchOrder(50, 8, np.random.default_rng(3))
    draws, first = whole.draws(0, 7 * 6)
    assert first == 0 and draws.shape == (6, 50)
    pieces = BatchOrder(50, 8, np.random.default_rng(3))
    rows = []
    for start, stop in [(0, 3), (3, 7), (7, 20), (20, 42)]:
        d, e0 = pieces.draws(start, stop)
        rows.extend((e0 + i, r) for i, r in enumerate(d))
    for epoch, row in rows:
        assert np.array_equal(row, draws[epoch])
    resumed = BatchOrder.from_state(50, 8, pieces.state(23))  # update 23 is in epoch 3
    d, e0 = resumed.draws(23, 42)
    assert e0 == 3 and np.array_equal(d, draws[3:6])


# -- the rules in training: both backends, every thread count, continuing, held-out data -------


def _fixed_init(D, H, K, seed=7):
    rng = np.random.default_rng(seed)
    return {
        "W1": 0.3 * rng.standard_normal((D, H)),
        "b1": np.zeros(H),
        "W2": 0.3 * rng.standard_normal((H, K)),
        "b2": np.zeros(K),
    }


#: (optimizer, batch size, step size): each rule once, full batch and mini-batches among them.
TRAININGS = [
    ("momentum", None, 0.3),
    ("nesterov", 32, 0.1),
    ("adagrad", None, 0.1),
    ("rmsprop", 50, 1e-2),
    ("adam", 32, 1e-2),
    ("sgd", 16, 0.3),
]


@pytest.mark.parametrize("optimizer, batch_size, step_size", TRAININGS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_both_backends_train_alike_with_every_rule(optimizer, batch_size, step_size, dtype):
    """numba and numpy follow one trajectory within what rounding and its amplification allow.

    As in tests/test_train.py::test_net_backends_agree_in_float32, the bound
    comes from the arithmetic: a gradient of n rows carries a relative error
    of about sqrt(n) u per update (u the unit roundoff), and the dynamics
    amplify a perturbation of size u by ``sensitivity``, measured here in
    float64 from initial weights perturbed by u; t updates add up to
    ``(t + 1) * sensitivity * sqrt(n) * u``. The adaptive rules divide by
    sqrt(cache), which makes the sensitivity, not the tolerance, large.
    """
    X, y = fs.make_data("moons", n_per_class=100, seed=2)
    init = _fixed_init(2, 20, 2)
    iters = 120
    kw = dict(iters=iters, optimizer=optimizer, batch_size=batch_size, step_size=step_size, seed=5)
    exact = fs.train_net(X, y, init=init, **kw)
    u = np.finfo(dtype).eps / 2
    rng = np.random.default_rng(0)
    nudged = {k: v * (1 + u * rng.choice([-1.0, 1.0], v.shape)) for k, v in init.items()}
    perturbed = fs.train_net(X, y, init=nudged, **kw)

    def deviation(history):
        return np.abs(history - exact.loss_history) / exact.loss_history

    sensitivity = max(deviation(perturbed.loss_history).max() / u, 1.0)
    rows = batch_size or X.shape[0]
    bound = (np.arange(iters) + 1) * sensitivity * np.sqrt(rows) * u
    assert bound[-1] < 0.05  # tight enough to catch a wrong rule
    for backend in ("numba", "numpy"):
        run = fs.train_net(X, y, init=init, dtype=dtype, backend=backend, **kw)
        assert run.params["W1"].dtype == np.dtype(dtype)
        assert (deviation(run.loss_history) <= bound).all(), backend


SAME_BITS = """
import sys, numba, numpy as np
import fastspiral as fs
X, y = fs.make_spiral(200, 3, seed=2)
rng = np.random.default_rng(3)
Xg, yg = rng.standard_normal((1200, 12)), rng.integers(0, 5, 1200)
trainings = [
    (X, y, dict(optimizer="adam", batch_size=600, step_size=1e-2)),
    (X, y, dict(optimizer="nesterov", batch_size=300, step_size=0.1)),
    (X, y, dict(optimizer="rmsprop", step_size=1e-3)),
    (Xg, yg, dict(optimizer="adagrad", batch_size=300, step_size=0.1)),
    (Xg, yg, dict(optimizer="momentum", step_size=0.1)),
]
for X_, y_, kw in trainings:
    runs = []
    for threads in (1, 2, 3, 8):
        numba.set_num_threads(threads)
        net = fs.train_net(X_, y_, seed=4, iters=200, **kw)
        runs.append([net.loss_history] + [net.params[k] for k in ("W1", "b1", "W2", "b2")])
    print(all(all(np.array_equal(a, b) for a, b in zip(run, runs[0])) for run in runs))
"""


def test_every_rule_and_batch_size_gives_the_same_bits_on_any_thread_count():
    """Mini-batches of 300 and 600 rows (several slots each) and full batches, small and general
    forms, on 1, 2, 3 and 8 threads: the slots' fixed-order sum makes each rule's bits the same."""
    from fastspiral.numba_backend.workspace import batch_slots

    assert batch_slots(600, 2, 100, 3) > 2 and batch_slots(300, 12, 100, 5) > 2
    env = dict(os.environ, NUMBA_NUM_THREADS="8")
    proc = subprocess.run(
        [sys.executable, "-c", SAME_BITS], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True"] * 5


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("optimizer, batch_size, step_size", TRAININGS)
def test_two_trainings_of_half_give_the_bits_of_one(
    tmp_path, backend, optimizer, batch_size, step_size
):
    """Continued from a saved and loaded model, a training carries on exactly: the rule's state,
    its update count, the schedule and the batches' order; the history holds the whole run."""
    X, y = fs.make_data("circles", n_per_class=60, seed=1)
    kw = dict(hidden=15, optimizer=optimizer, batch_size=batch_size, step_size=step_size,
              schedule=optim.ExpDecay(k=1e-3), backend=backend)  # fmt: skip
    whole = fs.train_net(X, y, iters=300, seed=9, **kw)
    half = fs.train_net(X, y, iters=150, seed=9, **kw)
    half.save(tmp_path / "half.npz")
    rest = fs.train_net(X, y, iters=150, init=fs.load(tmp_path / "half.npz"), **kw)
    assert np.array_equal(rest.loss_history, whole.loss_history)
    for name in whole.params:
        assert np.array_equal(rest.params[name], whole.params[name]), name
    assert rest.info["updates"] == whole.info["updates"] == 300 and rest.info["iters"] == 150
    for vector in optim.get_optimizer(optimizer).state:
        for name in whole.params:
            assert np.array_equal(
                rest.optimizer_state[vector][name], whole.optimizer_state[vector][name]
            )
    # another rule starts afresh: its own state, its count from 0
    other = fs.train_net(X, y, iters=10, init=half, hidden=15, optimizer="adam", step_size=1e-3)
    assert other.info["updates"] == 10 and set(other.optimizer_state) == {"m", "v"}


def test_epochs_and_batch_losses_are_recorded():
    X, y = fs.make_data("xor", n_per_class=50, seed=0)  # 100 rows: batches of 30 make 4 an epoch
    net = fs.train_net(X, y, hidden=10, optimizer="sgd", batch_size=30, iters=10, seed=0,
                       step_size=0.1)  # fmt: skip
    # an epoch is its 4 updates (the last of 10 rows): 10 updates are 2.5 epochs, not 10 * 30 / 100
    assert net.info["updates"] == 10 and net.info["epochs"] == 2.5
    assert net.info["batch_size"] == 30 and net.info["optimizer"] == {"name": "sgd"}
    # update 0's loss is its batch's: the first 30 rows of epoch 0's order, at the initial weights
    start = fs.train_net(X, y, hidden=10, iters=0, seed=0)
    from fastspiral._plan import BatchOrder, shuffle_rows
    from fastspiral.data import random_source

    rng = random_source(0)
    rng.standard_normal((2, 10)), rng.standard_normal((10, 2))  # the initial weights' draws
    from fastspiral._plan import _shuffle_generator

    draws, _ = BatchOrder(100, 30, _shuffle_generator(rng)).draws(0, 1)
    order = np.empty(100, np.int64)
    shuffle_rows(order, draws[0])
    rows = order[:30]
    from fastspiral import reference

    expected, _ = reference.net_loss_grad(start.params, X[rows], y[rows], 1e-3)
    assert net.loss_history[0] == pytest.approx(expected, rel=1e-12)


def test_validation_history_and_early_stopping():
    X, y = fs.make_data("moons", n_per_class=80, seed=0)
    Xv, yv = fs.make_data("moons", n_per_class=80, seed=1)
    net = fs.train_net(X, y, hidden=20, optimizer="adam", step_size=5e-2, batch_size=20, seed=0,
                       iters=2000, validation=(Xv, yv), validate_every=40, early_stopping=True,
                       patience=4)  # fmt: skip
    h = net.validation_history
    assert h["iteration"][0] == 0 and np.all(np.diff(h["iteration"]) == 40)
    assert np.all((0 <= h["accuracy"]) & (h["accuracy"] <= 1)) and np.isfinite(h["loss"]).all()
    best = net.info["best_iteration"]
    stopped = net.info["stopped_iteration"]
    assert stopped < 2000 and stopped == h["iteration"][-1] == net.loss_history.size
    # Four evaluations after the best did not beat it by tol; the model holds the best weights.
    i = list(h["iteration"]).index(best)
    assert len(h["iteration"]) - 1 - i == 4 and h["loss"][i] == h["loss"].min()
    from fastspiral import reference

    loss, _ = reference.softmax_loss(reference.scores(net.params, Xv), yv)
    assert loss == pytest.approx(h["loss"][i], rel=1e-9)
    assert net.score(Xv, yv) == pytest.approx(h["accuracy"][i])
    # Without early stopping every evaluation is kept, the last after the last iteration.
    plain = fs.train_net(X, y, hidden=20, iters=90, seed=0, validation=(Xv, yv), validate_every=40)
    assert list(plain.validation_history["iteration"]) == [0, 40, 80, 90]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(optimizer="adamw"), ValueError, "optimizer must be one of"),
        (dict(optimizer=optim.Adam), TypeError, "optimizer must be a name or an object"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(batch_size=301), ValueError, "batch_size must be <= the 300 rows"),
        (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
        (dict(schedule="step"), TypeError, "schedule must be None or an object"),
        (dict(early_stopping=True), ValueError, "early_stopping=True needs held-out data"),
        (dict(validation=(np.zeros((5, 3)), np.zeros(5))), ValueError, "validation X has 3"),
        (dict(validation=(np.zeros((5, 2)), np.full(5, 3))), ValueError, "validation y holds"),
        (dict(validation=np.zeros((5, 2))), TypeError, "validation must be a pair"),
        (dict(validation=(np.zeros((5, 2)), np.zeros(5)), patience=0), ValueError, "patience"),
        (
            dict(validation=(np.zeros((5, 2)), np.zeros(5)), validate_every=0),
            ValueError,
            "validate_every must be >= 1",
        ),
        (dict(tol=-1.0), ValueError, "tol must be >= 0"),
    ],
)
def test_bad_training_options_are_refused_before_training(monkeypatch, kwargs, error, message):
    monkeypatch.setattr("fastspiral.train._run", lambda *a, **k: pytest.fail("a training ran"))
    X, y = fs.make_spiral(seed=0)
    with pytest.raises(error, match=message):
        fs.train_net(X, y, iters=5, **kwargs)
