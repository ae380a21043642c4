"""Each Numba kernel against the NumPy reference, and the gradients against finite differences."""

import math
import platform

import numba
import numpy as np
import pytest

from fastspiral import optim, reference
from fastspiral.numba_backend import loops as _loops
from fastspiral.numba_backend import loss as _loss
from fastspiral.numba_backend import tiles as _tiles
from fastspiral.numba_backend import update as _update
from fastspiral.numba_backend.general import forward_general
from fastspiral.numba_backend.tiles import Tile
from fastspiral.numba_backend.workspace import (
    linear_views,
    linear_workspace,
    net_layout,
    net_views,
    net_workspace,
    new_linear_params,
    new_net_params,
)

from .conftest import assert_close

# (T rows, D features, H hidden, K classes): the case study's shape, edges, and shapes
# that take the general form of the kernels (D > SMALL_D or K > SMALL_K).
SHAPES = [
    (300, 2, 100, 3),
    (1, 2, 100, 3),
    (6, 2, 1000, 3),
    (7, 5, 1, 2),
    (13, 2, 10, 7),
    (33, 3, 17, 4),
    (64, 5, 33, 2),
    (37, 13, 21, 3),
    (19, 64, 9, 10),
]


def _problem(shape, dtype, seed=0):
    """A random problem in the kernels' layout (W2T (K, H)) in ``dtype``."""
    T, D, H, K = shape
    rng = np.random.default_rng(seed)
    cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return dict(
        X=cast(rng.standard_normal((T, D))),
        y=rng.integers(0, K, T).astype(np.int64),
        W1=cast(rng.standard_normal((D, H)) * 0.5),
        b1=cast(rng.standard_normal(H) * 0.1),
        W2T=cast(rng.standard_normal((K, H)) * 0.5),
        b2=cast(rng.standard_normal(K) * 0.1),
    )


def _params(p):
    """The reference's parameters (W2 (H, K)) for a kernel-layout problem."""
    return {"W1": p["W1"], "b1": p["b1"], "W2": np.ascontiguousarray(p["W2T"].T), "b2": p["b2"]}


def _flat(p):
    """The kernels' flat parameter vector and its views (NetParams) for a kernel-layout problem."""
    return new_net_params(_params(p), p["X"].dtype)


def _tile(X, params, hidden, scores, dscores=None, grads=None, y=None):
    """A Tile for the passes; what a pass does not touch may be left out (labels: all 0)."""
    K, H = params.W2T.shape
    T = X.shape[0]
    return Tile(
        X, np.zeros(T, np.int64) if y is None else y, 1.0 / T, params, hidden,
        np.empty((T, K), X.dtype) if scores is None else scores,
        np.empty((T, K), X.dtype) if dscores is None else dscores,
        params if grads is None else grads, np.empty((4, H), X.dtype),
    )  # fmt: skip


def test_dims_tokens_pick_the_form():
    assert _tiles.shape_tokens(2, 3, np.float64) == ((0.0, 0.0), (0.0, 0.0, 0.0))
    assert not _tiles.is_general(_tiles.shape_tokens(_tiles.SMALL_D, 3, np.float32))
    assert not _tiles.is_general(_tiles.shape_tokens(6, _tiles.SMALL_K, np.float32))
    # LLVM leaves the small backward pass scalar there (tests/test_codegen.py)
    assert _tiles.is_general(_tiles.shape_tokens(_tiles.SMALL_D, _tiles.SMALL_K, np.float64))
    assert _tiles.is_general(_tiles.shape_tokens(7, _tiles.SMALL_K, np.float64))
    assert _tiles.is_general(_tiles.shape_tokens(_tiles.SMALL_D + 1, 3, np.float64))
    assert _tiles.is_general(_tiles.shape_tokens(2, _tiles.SMALL_K + 1, np.float64))


@pytest.mark.parametrize(
    "features,registers", [("+avx2,+fma,-avx512f", 16), ("+avx2,+avx512f", 32)]
)
def test_row_groups_follow_the_target_registers(monkeypatch, features, registers):
    # the rows per group depend on what Numba compiles for (NUMBA_CPU_FEATURES), not on the host
    if platform.machine().lower() in ("arm64", "aarch64"):
        registers = 32
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    assert _tiles.vector_registers() == registers
    assert _tiles.small_row_group(2, 3) == (4 if registers == 32 else 2)
    assert _tiles.small_row_group(8, 3) == 2  # four rows' values spill even with 32 registers


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_net_forward(shape, dtype):
    p = _problem(shape, dtype)
    T, D, H, K = shape
    hidden, scores = np.full((T, H), np.nan, dtype), np.full((T, K), np.nan, dtype)
    dscores = np.full((T, K), np.nan, dtype)
    loss = _loops.net_forward(_tile(p["X"], _flat(p), hidden, scores, dscores, y=p["y"]))
    ref_hidden, ref_scores = reference.forward(_params(p), p["X"])
    assert_close(hidden, ref_hidden, dtype)
    assert_close(scores, ref_scores, dtype)
    # ... and the softmax cross-entropy on them, fused into the same pass
    ref_loss, ref_dscores = reference.softmax_loss(ref_scores, p["y"])
    assert_close(loss, ref_loss, dtype, factor=10)
    assert_close(dscores, ref_dscores, dtype, factor=10)
    assert (hidden >= 0).all()
    # The math, written out independently in float64.
    X, W1, b1 = (p[k].astype(np.float64) for k in ("X", "W1", "b1"))
    h = np.maximum(X @ W1 + b1, 0)
    assert_close(hidden, h, dtype, factor=10)
    assert_close(scores, h @ p["W2T"].T.astype(np.float64) + p["b2"], dtype, factor=10)


@pytest.mark.parametrize("D,K", [(2, 2), (12, 2)], ids=["small", "general"])
def test_relu_keeps_nan(D, K):
    """A NaN pre-activation must reach the loss, so divergence is detected (both forms, NumPy)."""
    X = np.ones((2, D))
    X[0, 0] = np.nan
    W1, b1 = np.ones((D, 3)), np.zeros(3)
    W2T, b2 = np.ones((K, 3)), np.zeros(K)
    hidden, scores = np.empty((2, 3)), np.empty((2, K))
    params = new_net_params({"W1": W1, "b1": b1, "W2": W2T.T, "b2": b2}, np.float64)
    _loops.net_forward(_tile(X, params, hidden, scores))
    ref_hidden, ref_scores = reference.forward({"W1": W1, "b1": b1, "W2": W2T.T, "b2": b2}, X)
    for h, s in ((hidden, scores), (ref_hidden, ref_scores)):
        assert np.isnan(h[0]).all() and np.isnan(s[0]).all()
        assert np.array_equal(h[1], [float(D)] * 3)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_xent_grad(shape, dtype):
    p = _problem(shape, dtype)
    T, D, _, K = shape
    scores = np.ascontiguousarray(np.random.default_rng(1).standard_normal((T, K)) * 3, dtype=dtype)
    ds = np.empty((T, K), dtype)
    loss = _loss.softmax_xent_grad(scores, p["y"], 1.0 / T, ds, _tiles.shape_tokens(D, K, dtype)[1])
    loss_r, ds_r = reference.softmax_loss(scores, p["y"])
    assert_close(ds, ds_r, dtype)
    assert_close(loss, loss_r, dtype)
    # The math, written out independently in float64.
    s = scores.astype(np.float64)
    probs = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    assert_close(loss, -np.log(probs[np.arange(T), p["y"]]).mean(), dtype, factor=10)
    onehot = np.eye(K)[p["y"]]
    assert_close(ds, (probs - onehot) / T, dtype, factor=10)
    assert_close(reference.softmax(scores), probs, dtype, factor=10)
    # Each row of the gradient sums to zero: softmax rows sum to one.
    assert_close(ds.sum(axis=1), np.zeros(T), dtype, scale=1.0 / T, factor=10)


@pytest.mark.parametrize("k_token", [(0.0,) * 3, ()], ids=["small", "general"])
def test_softmax_is_stable_for_huge_scores(k_token):
    scores = np.array([[1000.0, 1001.0, 999.0], [-1e4, 0.0, 1e4]])
    y = np.array([1, 0], dtype=np.int64)
    ds = np.empty_like(scores)
    loss = _loss.softmax_xent_grad(scores, y, 0.5, ds, k_token)
    loss_r, ds_r = reference.softmax_loss(scores, y)
    row0 = np.log(np.exp([-1.0, 0.0, -2.0]).sum())  # log-sum-exp after shifting by the max
    for value, grad in ((loss, ds), (loss_r, ds_r)):
        assert np.isfinite(value) and np.isfinite(grad).all()
        assert value == pytest.approx(0.5 * (row0 + 2e4), rel=1e-12)
    assert np.isfinite(reference.softmax(scores)).all()


def test_exp_matches_numpy_to_one_ulp():
    """The softmax's vectorisable exp, on [-708, 0] and at its edges."""
    exp = _loss.exp_nonpositive
    x = np.concatenate(
        [
            -np.linspace(0, 708, 2_001),
            -np.random.default_rng(6).exponential(3, 500),
            [-0.0, -1e-300, -5e-324, -0.5 * np.log(2), -np.log(2), -707.99],
        ]
    )
    got = np.array([exp(v) for v in x])
    want = np.exp(x)
    assert np.all(np.abs(got - want) <= np.spacing(want))
    assert exp(0.0) == 1.0
    # Below -708 (subnormal results) it returns 0; -inf gives 0 and NaN stays NaN.
    assert [exp(v) for v in (-708.5, -745.2, -1e6, -np.inf)] == [0.0] * 4
    assert np.isnan(exp(np.nan))


def test_softmax_loss_over_many_rows():
    """Thousands of rows: the kernel's running product of the rows' sums of
    exponentials is flushed into a logarithm many times along the way."""
    rng = np.random.default_rng(5)
    T, K = 5000, 10
    scores = rng.standard_normal((T, K)) * 0.1  # near-uniform rows: the sums multiply to ~1e5000
    y = rng.integers(0, K, T).astype(np.int64)
    for k_token in ((0.0,) * K, ()):
        loss = _loss.softmax_xent_grad(scores, y, 1.0 / T, np.empty_like(scores), k_token)
        shifted = scores - scores.max(axis=1, keepdims=True)
        expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(T), y])
        assert loss == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("k_token", [(0.0,) * 3, ()], ids=["small", "general"])
def test_softmax_propagates_nan(k_token):
    scores = np.array([[0.0, np.nan, 1.0]])
    y = np.array([0], dtype=np.int64)
    assert np.isnan(_loss.softmax_xent_grad(scores, y, 1.0, np.empty_like(scores), k_token))
    with np.errstate(invalid="ignore"):
        assert np.isnan(reference.softmax_loss(scores, y)[0])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_net_backward(shape, dtype):
    p = _problem(shape, dtype)
    T, D, H, K = shape
    rng = np.random.default_rng(2)
    ds = np.ascontiguousarray(rng.standard_normal((T, K)), dtype=dtype)
    hidden = np.ascontiguousarray(np.maximum(rng.standard_normal((T, H)), 0), dtype=dtype)
    start = {
        name: np.ascontiguousarray(rng.standard_normal(s), dtype=dtype)
        for name, s in (("W1", (D, H)), ("b1", (H,)), ("W2", (H, K)), ("b2", (K,)))
    }
    g = new_net_params(start, dtype)
    _loops.net_backward(_tile(p["X"], _flat(p), hidden.copy(), None, dscores=ds, grads=g))
    fast = [g.W1, g.b1, g.W2T, g.b2]
    grads = [start["W1"], start["b1"], start["W2"].T, start["b2"]]
    # The math, written out independently in float64: gradients are *added*.
    X, h, ds, W2T = (a.astype(np.float64) for a in (p["X"], hidden, ds, p["W2T"]))
    dh = (ds @ W2T) * (h > 0)
    expected = [
        grads[0] + X.T @ dh,
        grads[1] + dh.sum(0),
        grads[2] + ds.T @ h,
        grads[3] + ds.sum(0),
    ]
    for f, e in zip(fast, expected):
        assert_close(f, e, dtype, factor=10)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_forward_backward(shape, dtype):
    p = _problem(shape, dtype)
    T, D, _, K = shape
    WT = np.ascontiguousarray(np.random.default_rng(3).standard_normal((K, D)), dtype=dtype)
    scores = np.full((T, K), np.nan, dtype)
    _loops.linear_forward(p["X"], new_linear_params({"W": WT.T, "b": p["b2"]}, dtype), scores)
    assert_close(scores, reference.scores({"W": WT.T, "b": p["b2"]}, p["X"]), dtype)
    assert_close(scores, p["X"].astype(np.float64) @ WT.T + p["b2"], dtype, factor=10)
    g = new_linear_params({"W": np.ones((D, K)), "b": np.ones(K)}, dtype)
    _loops.linear_backward(p["X"], scores, g)
    assert_close(g.WT, 1 + scores.T.astype(np.float64) @ p["X"], dtype, factor=10)
    assert_close(g.b, 1 + scores.astype(np.float64).sum(0), dtype, factor=10)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gd_update_and_sum_squares(shape, dtype):
    """The case study's step on the flat vector: L2 on the weights, not the biases."""
    p = _problem(shape, dtype)
    theta = _flat(p)
    T, D, H, K = shape
    rng = np.random.default_rng(4)
    names = {"W1": (D, H), "b1": (H,), "W2": (H, K), "b2": (K,)}
    dparams = {k: rng.standard_normal(s).astype(dtype) for k, s in names.items()}
    grad = new_net_params(dparams, dtype)
    grad_before = grad.flat.copy()
    n_weights = net_layout(D, H, K, dtype).b1
    opt = _update.gd_optimizer(0.7, 1e-2, theta.flat.size, n_weights, dtype)
    _update.gd_update(theta.flat, grad.flat, opt, 0)
    ref = _params(p)
    ref = {k: v.copy() for k, v in ref.items()}
    step, reg = dtype.type(0.7), dtype.type(1e-2)
    l2 = {k: reg * v if k.startswith("W") else 0 for k, v in ref.items()}
    start = {k: v.astype(np.float64) for k, v in ref.items()}
    optim.GD().step(ref, {k: dparams[k] + l2[k] for k in ref}, {}, 1, step)  # the reference's rule
    got = {"W1": theta.W1, "b1": theta.b1, "W2": theta.W2T.T, "b2": theta.b2}
    for k in ref:
        assert_close(got[k], ref[k], dtype)
        decay = 1e-2 * start[k] if k.startswith("W") else 0.0
        assert_close(got[k], start[k] - 0.7 * (dparams[k] + decay), dtype, factor=10)
    assert np.array_equal(grad.flat, grad_before)  # the gradient is read, not written
    assert_close(_loss.sum_squares(p["W1"]), 2 * reference.l2_penalty({"W": p["W1"]}, 1.0), dtype)


def test_slots_are_summed_in_slot_order():
    G = np.arange(24.0).reshape(4, 6)
    expected = G.sum(axis=0)
    _update.sum_slots(G)
    assert np.array_equal(G[0], expected)
    assert np.array_equal(G[3], np.arange(18.0, 24.0))  # the others are only read


def _slot0(ws, p):
    """The gradient in slot 0 of a workspace, as the reference names and shapes it."""
    D, H = p["W1"].shape
    g = net_views(ws.grads[0], ws.layout)
    return {"W1": g.W1, "b1": g.b1, "W2": g.W2T.T, "b2": g.b2}


def _loss_grad(p, reg=1e-3):
    T, D = p["X"].shape
    K, H = p["W2T"].shape
    ws = net_workspace(T, D, H, K, p["X"].dtype, 1)
    loss = _loops.net_loss_grad(p["X"], p["y"], _flat(p), reg, ws)
    return loss, _slot0(ws, p)


@pytest.mark.parametrize("shape", SHAPES + [(3001, 2, 100, 3), (2000, 12, 30, 6)], ids=str)
def test_net_loss_grad(shape, dtype):
    """Loss and gradient over all slots of the rows (several slots for the larger shapes)."""
    p = _problem(shape, dtype)
    reg = 1e-3
    loss, grad = _loss_grad(p, reg)
    loss_r, grad_r = reference.net_loss_grad(_params(p), p["X"], p["y"], reg)
    assert_close(loss, loss_r, dtype)
    for name in grad_r:
        l2 = reg * _params(p)[name] if name.startswith("W") else 0
        assert_close(
            grad[name], grad_r[name] - l2, dtype, scale=np.abs(grad_r[name]).max(), factor=10
        )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_loss_grad(shape, dtype):
    T, D, _, K = shape
    p = _problem(shape, dtype)
    WT = np.ascontiguousarray(
        p["W2T"][:, :D] if p["W2T"].shape[1] >= D else np.ones((K, D)), dtype=dtype
    )
    ws = linear_workspace(T, D, K, dtype)
    params = new_linear_params({"W": WT.T, "b": p["b2"]}, dtype)
    loss = _loops.linear_loss_grad(p["X"], p["y"], params, 1e-3, ws)
    loss_r, grad_r = reference.linear_loss_grad({"W": WT.T, "b": p["b2"]}, p["X"], p["y"], 1e-3)
    assert_close(loss, loss_r, dtype)
    g = linear_views(ws.grad, ws.layout)
    assert_close(g.WT, (grad_r["W"] - 1e-3 * WT.T).T, dtype, factor=10)
    assert_close(g.b, grad_r["b"], dtype, factor=10)


@pytest.mark.parametrize(
    "shape", [(20, 2, 6, 3), (9, 5, 4, 7), (1, 3, 5, 2), (11, 10, 3, 5)], ids=str
)
def test_net_gradient_matches_finite_differences(shape):
    """Central differences of the loss against the kernel's gradient plus the L2 term."""
    p = _problem(shape, np.float64, seed=3)
    reg = 0.1
    _, grad = _loss_grad(p, reg)
    params = _params(p)
    analytic = {
        "W1": grad["W1"] + reg * params["W1"],
        "b1": grad["b1"],
        "W2": grad["W2"] + reg * params["W2"],
        "b2": grad["b2"],
    }
    eps = 1e-6
    for name, g in analytic.items():
        numeric = np.zeros_like(g)
        for idx in np.ndindex(g.shape):
            saved = params[name][idx]
            params[name][idx] = saved + eps
            up = reference.net_loss_grad(params, p["X"], p["y"], reg)[0]
            params[name][idx] = saved - eps
            down = reference.net_loss_grad(params, p["X"], p["y"], reg)[0]
            params[name][idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_linear_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((15, 3))
    y = rng.integers(0, 4, 15).astype(np.int64)
    WT, b, reg = rng.standard_normal((4, 3)), rng.standard_normal(4), 0.05
    ws = linear_workspace(15, 3, 4, np.float64)
    _loops.linear_loss_grad(X, y, new_linear_params({"W": WT.T, "b": b}, np.float64), reg, ws)
    g = linear_views(ws.grad, ws.layout)
    analytic = {"W": (g.WT + reg * WT).T, "b": g.b}
    params = {"W": WT.T.copy(), "b": b}
    for name, grad in analytic.items():
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            saved = params[name][idx]
            params[name][idx] = saved + 1e-6
            up = reference.linear_loss_grad(params, X, y, reg)[0]
            params[name][idx] = saved - 1e-6
            down = reference.linear_loss_grad(params, X, y, reg)[0]
            params[name][idx] = saved
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_workspace_does_not_grow_with_n_times_h():
    """The Numba workspace holds cache-sized tiles and per-slot gradients, not the (N, H) layer."""
    n, h = 1_000_000, 4096
    ws = net_workspace(n, 2, h, 3, np.dtype(np.float64), 2)
    total = sum(a.nbytes for a in ws if isinstance(a, np.ndarray))
    assert total < 8 * 1024**2, total
    assert total < n * h * 8 / 1000


def _train_steps(p, n_threads, chunks, step_size=1.0):
    """The compiled loop over the (start, stop) chunks on ``n_threads``: history, weights, end."""
    T, D = p["X"].shape
    K, H = p["W2T"].shape
    ws = net_workspace(T, D, H, K, p["X"].dtype, n_threads)
    params = _flat(p)
    n_weights = net_layout(D, H, K, p["X"].dtype).b1
    opt = _update.gd_optimizer(step_size, 1e-3, params.flat.size, n_weights, p["X"].dtype)
    kernels = _loops.net_kernels(p["X"], p["y"], params, opt, ws)
    history = np.full(chunks[-1][1], np.nan)
    data = _loops.new_batches(p["X"], p["y"])
    for start, stop in chunks:
        args = (kernels, data, params, opt, history, start, stop)
        if ws.n_slots == 1:
            result = _loops.train_net_serial(*args, ws)
        else:
            result = _loops.train_net_parallel(*args, ws.n_workers, ws)
        if result >= 0:
            break
    weights = [params.W1, params.b1, params.W2T, params.b2]
    return history, weights, result


def _reference_steps(p, iters, step_size=1.0):
    params = _params(p)
    trainer = reference.Trainer(_as_problem(p, params, step_size))
    history = np.full(iters, np.nan)
    result = trainer.run(0, iters, history)
    out = trainer.params()
    return history, [out["W1"], out["b1"], np.ascontiguousarray(out["W2"].T), out["b2"]], result


def _as_problem(p, params, step_size):
    from fastspiral._problem import Problem

    return Problem("net", p["X"], p["y"], {k: v.copy() for k, v in params.items()}, step_size, 1e-3)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("chunks", [[(0, 1), (1, 2), (2, 7)], [(0, 3), (3, 7)]], ids=str)
def test_train_net_steps_on_threads(chunks, n_threads, dtype):
    """The compiled loop against the reference, and run in chunks against one call: how a
    run is split into calls, and on how many threads, changes no bit of the result."""
    p = _problem((1201, 2, 37, 3), dtype, seed=7)
    p["W1"] *= 0.1
    p["W2T"] *= 0.1
    whole = _train_steps(p, 1, [(0, 7)])
    pieces = _train_steps(p, n_threads, chunks)
    ref = _reference_steps(p, 7)
    assert whole[2] == pieces[2] == ref[2] == -1
    np.testing.assert_array_equal(pieces[0], whole[0])
    for a, b in zip(pieces[1], whole[1]):
        np.testing.assert_array_equal(a, b)
    assert_close(whole[0], ref[0], dtype, factor=10)
    for f, r in zip(whole[1], ref[1]):
        assert_close(f, r, dtype, scale=np.abs(r).max(), factor=100)


@pytest.mark.parametrize("n", [301, 1201])
def test_train_net_steps_stops_at_the_first_non_finite_loss(n):
    """The weights are left as they were before the iteration whose loss is not finite."""
    p = _problem((n, 2, 37, 3), np.dtype(np.float64), seed=8)
    history, weights, bad = _train_steps(p, 2, [(0, 50)], step_size=1e8)
    assert 0 < bad < 50 and not np.isfinite(history[bad]) and np.isfinite(history[:bad]).all()
    _, before, result = _train_steps(p, 2, [(0, bad)], step_size=1e8)
    assert result == -1
    for w, b in zip(weights, before):
        np.testing.assert_array_equal(w, b)


def test_is_finite():
    """The training loops' divergence check, immune to the kernels' fastmath flags."""
    values = [
        0.0,
        -0.0,
        1.0,
        -1e308,
        np.finfo(np.float64).max,
        5e-324,
        np.inf,
        -np.inf,
        np.nan,
        -np.nan,
    ]
    assert [_loss.is_finite(v) for v in values] == [math.isfinite(v) for v in values]


def test_loop_kernels_are_built_once_per_set_of_types():
    """Trainings with arrays of the same types share kernel pointers; other types have theirs."""

    def kernels(dtype, shape=(30, 2, 8, 3), seed=0):
        p = _problem(shape, dtype, seed)
        T, D, H, K = shape
        ws = net_workspace(T, D, H, K, dtype, 1)
        params = _flat(p)
        opt = _update.gd_optimizer(1.0, 1e-3, params.flat.size, 0, dtype)
        return _loops.net_kernels(p["X"], p["y"], params, opt, ws)

    first = kernels(np.float64)
    assert kernels(np.float64, seed=1) is first
    other = kernels(np.float32)
    assert other is not first
    tile = other.forward.signature().args[0]  # the passes take one Tile
    assert str(tile.types[Tile._fields.index("X")].dtype) == "float32"
    general = kernels(np.float64, shape=(30, 12, 8, 6))
    assert general is not first
    assert general.forward._kernel is forward_general  # the general form's passes
    # ... behind the same types: one compiled slot and loop serve every shape of a dtype
    assert general.forward.signature() == first.forward.signature()
    assert general.slot.signature() == first.slot.signature()
