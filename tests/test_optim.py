"""The update rules, the schedules and the batches: each against its formula, written out here."""

import math

import numpy as np
import pytest

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
