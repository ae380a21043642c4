"""Each Numba kernel against its NumPy twin, and the gradients against finite differences."""

import inspect
import math

import numba
import numpy as np
import pytest

from fastspiral import _kernels, _sync, reference
from fastspiral.backends import BACKENDS

from .conftest import assert_close

# (T rows, D features, H hidden, K classes): the case study's shape, and edges.
SHAPES = [(300, 2, 100, 3), (1, 2, 100, 3), (6, 2, 1000, 3), (7, 5, 1, 2), (13, 2, 10, 7), (33, 3, 17, 4),
          (64, 5, 33, 2)]
KERNELS = ["dims_token", "net_forward", "softmax_xent_grad", "net_backward", "linear_forward",
           "linear_backward", "sgd_update", "sum_squares", "net_loss_grad", "train_net_steps",
           "net_workspace", "linear_loss_grad", "train_linear_steps", "linear_workspace"]


def _signature(fn):
    return inspect.signature(getattr(fn, "py_func", fn))


@pytest.mark.parametrize("name", KERNELS)
def test_backends_share_names_and_signatures(name):
    sigs = {b: _signature(getattr(mod, name)) for b, mod in BACKENDS.items()}
    assert len(set(map(str, sigs.values()))) == 1, sigs


def _problem(shape, dtype, seed=0):
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


def _both(name, *args):
    """Run kernel `name` from both backends on private copies of the array arguments."""
    results = []
    for mod in (_kernels, reference):
        copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        ret = getattr(mod, name)(*copies)
        results.append((ret, copies))
    return results


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_net_forward(shape, dtype):
    p = _problem(shape, dtype)
    T, D, H, K = shape
    dims = _kernels.dims_token(D, K, dtype)
    (_, fast), (_, ref) = _both("net_forward", p["X"], p["W1"], p["b1"], p["W2T"], p["b2"],
                                np.full((T, H), np.nan, dtype), np.full((T, K), np.nan, dtype), *dims)
    assert_close(fast[5], ref[5], dtype)
    assert_close(fast[6], ref[6], dtype)
    assert (fast[5] >= 0).all()
    # The math, written out independently in float64.
    X, W1, b1 = (p[k].astype(np.float64) for k in ("X", "W1", "b1"))
    hidden = np.maximum(X @ W1 + b1, 0)
    assert_close(fast[5], hidden, dtype, factor=10)
    assert_close(fast[6], hidden @ p["W2T"].T.astype(np.float64) + p["b2"], dtype, factor=10)


@pytest.mark.parametrize("mod", [_kernels, reference], ids=["numba", "numpy"])
def test_relu_keeps_nan(mod):
    """A NaN pre-activation must reach the loss, so divergence is detected."""
    X = np.array([[np.nan, 1.0], [1.0, 1.0]])
    W1, b1 = np.ones((2, 3)), np.zeros(3)
    W2T, b2 = np.ones((2, 3)), np.zeros(2)
    hidden, scores = np.empty((2, 3)), np.empty((2, 2))
    mod.net_forward(X, W1, b1, W2T, b2, hidden, scores, *mod.dims_token(2, 2, np.float64))
    assert np.isnan(hidden[0]).all() and np.isnan(scores[0]).all()
    assert np.array_equal(hidden[1], [2.0, 2.0, 2.0])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_xent_grad(shape, dtype):
    p = _problem(shape, dtype)
    T, _, _, K = shape
    scores = np.ascontiguousarray(np.random.default_rng(1).standard_normal((T, K)) * 3, dtype=dtype)
    scale = 1.0 / T
    ktok = _kernels.dims_token(1, K, dtype)[1]
    (loss_f, fast), (loss_r, ref) = _both("softmax_xent_grad", scores, p["y"], scale, np.empty((T, K), dtype), ktok)
    assert_close(fast[3], ref[3], dtype)
    assert_close(loss_f, loss_r, dtype)
    # The math, written out independently in float64.
    s = scores.astype(np.float64)
    probs = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    expected = -np.log(probs[np.arange(T), p["y"]]).mean()
    assert_close(loss_f, expected, dtype, factor=10)
    onehot = np.eye(K)[p["y"]]
    assert_close(fast[3], (probs - onehot) / T, dtype, factor=10)
    # Each row of the gradient sums to zero: softmax rows sum to one.
    assert_close(fast[3].sum(axis=1), np.zeros(T), dtype, scale=1.0 / T, factor=10)


@pytest.mark.parametrize("mod", [_kernels, reference], ids=["numba", "numpy"])
def test_softmax_is_stable_for_huge_scores(mod):
    scores = np.array([[1000.0, 1001.0, 999.0], [-1e4, 0.0, 1e4]])
    y = np.array([1, 0], dtype=np.int64)
    ds = np.empty_like(scores)
    loss = mod.softmax_xent_grad(scores, y, 0.5, ds, mod.dims_token(1, 3, np.float64)[1])
    row0 = np.log(np.exp([-1.0, 0.0, -2.0]).sum())  # log-sum-exp after shifting by the max
    assert np.isfinite(loss) and np.isfinite(ds).all()
    assert loss == pytest.approx(0.5 * (row0 + 2e4), rel=1e-12)


def test_exp_matches_numpy_to_one_ulp():
    """The softmax's vectorisable exp, on [-708, 0] and at its edges."""
    x = np.concatenate([-np.linspace(0, 708, 2_001), -np.random.default_rng(6).exponential(3, 500),
                        [-0.0, -1e-300, -5e-324, -0.5 * np.log(2), -np.log(2), -707.99]])
    got = np.array([_kernels._exp_nonpositive(v) for v in x])
    want = np.exp(x)
    assert np.all(np.abs(got - want) <= np.spacing(want))
    assert _kernels._exp_nonpositive(0.0) == 1.0
    # Below -708 (subnormal results) it returns 0; -inf gives 0 and NaN stays NaN.
    assert [_kernels._exp_nonpositive(v) for v in (-708.5, -745.2, -1e6, -np.inf)] == [0.0] * 4
    assert np.isnan(_kernels._exp_nonpositive(np.nan))


def test_softmax_loss_over_many_rows():
    """Thousands of rows: the kernel's running product of the rows' sums of
    exponentials is flushed into a logarithm many times along the way."""
    rng = np.random.default_rng(5)
    T, K = 5000, 10
    scores = rng.standard_normal((T, K)) * 0.1  # near-uniform rows: the sums multiply to ~1e5000
    y = rng.integers(0, K, T).astype(np.int64)
    loss = _kernels.softmax_xent_grad(scores, y, 1.0 / T, np.empty_like(scores), (0.0,) * K)
    shifted = scores - scores.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(T), y])
    assert loss == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("mod", [_kernels, reference], ids=["numba", "numpy"])
def test_softmax_propagates_nan(mod):
    scores = np.array([[0.0, np.nan, 1.0]])
    loss = mod.softmax_xent_grad(scores, np.array([0], dtype=np.int64), 1.0, np.empty_like(scores), (0.0,) * 3)
    assert np.isnan(loss)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_net_backward(shape, dtype):
    p = _problem(shape, dtype)
    T, D, H, K = shape
    rng = np.random.default_rng(2)
    ds = np.ascontiguousarray(rng.standard_normal((T, K)), dtype=dtype)
    hidden = np.ascontiguousarray(np.maximum(rng.standard_normal((T, H)), 0), dtype=dtype)
    grads = [np.ascontiguousarray(rng.standard_normal(s), dtype=dtype) for s in ((D, H), (H,), (K, H), (K,))]
    (_, fast), (_, ref) = _both("net_backward", p["X"], hidden, ds, p["W2T"], *grads,
                                *_kernels.dims_token(D, K, dtype))
    for f, r in zip(fast[4:8], ref[4:8]):
        assert_close(f, r, dtype, factor=10)
    # The math, written out independently in float64: gradients are *added*.
    X, h, g, W2T = (a.astype(np.float64) for a in (p["X"], hidden, ds, p["W2T"]))
    dh = (g @ W2T) * (h > 0)
    expected = [grads[0] + X.T @ dh, grads[1] + dh.sum(0), grads[2] + g.T @ h, grads[3] + g.sum(0)]
    for f, e in zip(fast[4:8], expected):
        assert_close(f, e, dtype, factor=10)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_forward_backward(shape, dtype):
    p = _problem(shape, dtype)
    T, D, _, K = shape
    WT = np.ascontiguousarray(np.random.default_rng(3).standard_normal((K, D)), dtype=dtype)
    (_, fast), (_, ref) = _both("linear_forward", p["X"], WT, p["b2"], np.full((T, K), np.nan, dtype))
    assert_close(fast[3], ref[3], dtype)
    assert_close(fast[3], p["X"].astype(np.float64) @ WT.T + p["b2"], dtype, factor=10)
    ds = fast[3]
    (_, fast), (_, ref) = _both("linear_backward", p["X"], ds, np.ones((K, D), dtype), np.ones(K, dtype))
    assert_close(fast[2], ref[2], dtype, factor=10)
    assert_close(fast[3], ref[3], dtype, factor=10)
    assert_close(fast[2], 1 + ds.T.astype(np.float64) @ p["X"], dtype, factor=10)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sgd_update_and_sum_squares(shape, dtype):
    p = _problem(shape, dtype)
    W, dW = p["W1"], np.ascontiguousarray(p["W1"][::-1], dtype=dtype)
    step, reg = dtype.type(0.7), dtype.type(1e-2)
    (_, fast), (_, ref) = _both("sgd_update", W, dW, step, reg)
    assert_close(fast[0], ref[0], dtype)
    assert_close(fast[0], W - 0.7 * (dW + 1e-2 * W.astype(np.float64)), dtype, factor=10)
    assert np.array_equal(fast[1], dW)  # the gradient is read, not written
    assert_close(_kernels.sum_squares(W), reference.sum_squares(W), dtype)


def _net_workspace(mod, p, n_threads):
    """The workspace net_loss_grad takes: net_workspace's less the weight copies and team state."""
    T, D = p["X"].shape
    K, H = p["W2T"].shape
    return mod.net_workspace(T, D, H, K, p["X"].dtype, n_threads)[:-2]


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_net_loss_grad(shape, dtype, n_threads):
    p = _problem(shape, dtype)
    args = (p["X"], p["y"], p["W1"], p["b1"], p["W2T"], p["b2"], 1e-3, 1.0 / shape[0])
    loss_f = _kernels.net_loss_grad(*args, *(ws_f := _net_workspace(_kernels, p, n_threads)))
    loss_r = reference.net_loss_grad(*args, *(ws_r := _net_workspace(reference, p, 1)))
    assert_close(loss_f, loss_r, dtype)
    for f, r in zip(ws_f[3:7], ws_r[3:7]):  # dW1, db1, dW2T, db2, slot 0
        assert_close(_leading(f[0], r[0].shape), r[0], dtype, factor=10)


def _leading(slot, shape):
    """The leading ``shape`` part of a (padded) workspace slot."""
    return slot[tuple(slice(0, n) for n in shape)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_loss_grad(shape, dtype):
    T, D, _, K = shape
    p = _problem(shape, dtype)
    WT = np.ascontiguousarray(p["W2T"][:, :D] if p["W2T"].shape[1] >= D else np.ones((K, D)), dtype=dtype)
    args = (p["X"], p["y"], WT, p["b2"], 1e-3, 1.0 / T)
    outs = []
    for mod in (_kernels, reference):
        ws = mod.linear_workspace(T, D, K, dtype)
        outs.append((mod.linear_loss_grad(*args, *ws), ws))
    (loss_f, ws_f), (loss_r, ws_r) = outs
    assert_close(loss_f, loss_r, dtype)
    assert_close(ws_f[2], ws_r[2], dtype, factor=10)
    assert_close(ws_f[3], ws_r[3], dtype, factor=10)


def _net_loss(p, reg):
    ws = _net_workspace(reference, p, 1)
    return reference.net_loss_grad(p["X"], p["y"], p["W1"], p["b1"], p["W2T"], p["b2"], reg,
                                   1.0 / p["X"].shape[0], *ws)


@pytest.mark.parametrize("shape", [(20, 2, 6, 3), (9, 5, 4, 7), (1, 3, 5, 2)], ids=str)
def test_net_gradient_matches_finite_differences(shape):
    """Central differences of the loss against the kernel's gradient plus the L2 term."""
    p = _problem(shape, np.float64, seed=3)
    reg = 0.1
    ws = _net_workspace(_kernels, p, 1)
    _kernels.net_loss_grad(p["X"], p["y"], p["W1"], p["b1"], p["W2T"], p["b2"], reg, 1.0 / shape[0], *ws)
    grad = {name: _leading(g[0], p[name].shape) for name, g in zip(("W1", "b1", "W2T", "b2"), ws[3:7])}
    analytic = {"W1": grad["W1"] + reg * p["W1"], "b1": grad["b1"],
                "W2T": grad["W2T"] + reg * p["W2T"], "b2": grad["b2"]}
    eps = 1e-6
    for name, grad in analytic.items():
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            saved = p[name][idx]
            p[name][idx] = saved + eps
            up = _net_loss(p, reg)
            p[name][idx] = saved - eps
            down = _net_loss(p, reg)
            p[name][idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_linear_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((15, 3))
    y = rng.integers(0, 4, 15).astype(np.int64)
    WT, b, reg = rng.standard_normal((4, 3)), rng.standard_normal(4), 0.05
    ws = _kernels.linear_workspace(15, 3, 4, np.float64)
    _kernels.linear_loss_grad(X, y, WT, b, reg, 1 / 15, *ws)
    analytic = {"WT": ws[2] + reg * WT, "b": ws[3]}
    params = {"WT": WT, "b": b}

    def loss():
        return reference.linear_loss_grad(X, y, params["WT"], params["b"], reg, 1 / 15,
                                          *reference.linear_workspace(15, 3, 4, np.float64))

    for name, grad in analytic.items():
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            saved = params[name][idx]
            params[name][idx] = saved + 1e-6
            up = loss()
            params[name][idx] = saved - 1e-6
            down = loss()
            params[name][idx] = saved
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_workspace_does_not_grow_with_n_times_h():
    """The Numba workspace holds cache-sized tiles, not the (N, H) hidden layer."""
    n, h = 1_000_000, 4096
    ws = _kernels.net_workspace(n, 2, h, 3, np.dtype(np.float64), 2)
    total = sum(a.nbytes for a in ws if isinstance(a, np.ndarray))
    assert total < 8 * 1024**2, total
    assert total < n * h * 8 / 1000


def _train_steps(mod, p, n_threads, chunks, step_size=1.0, ws=None):
    """train_net_steps over the given (start, stop) chunks; returns (history, weights, result)."""
    T, D = p["X"].shape
    K, H = p["W2T"].shape
    if ws is None:
        ws = mod.net_workspace(T, D, H, K, p["X"].dtype, n_threads)
    weights = [p[k].copy() for k in ("W1", "b1", "W2T", "b2")]
    history = np.full(chunks[-1][1], np.nan)
    dt = p["X"].dtype.type
    for start, stop in chunks:
        result = mod.train_net_steps(p["X"], p["y"], *weights, dt(step_size), dt(1e-3), history, start, stop, *ws)
        if result >= 0:
            break
    return history, weights, result


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("chunks", [[(0, 1), (1, 2), (2, 7)], [(0, 3), (3, 7)]], ids=str)
def test_train_net_steps_on_threads(chunks, n_threads, dtype):
    """The threaded loop (per-thread weight copies, alternating gradient slots) against the
    reference, and run in chunks against one call: each call starts from and leaves the
    canonical weights, and how a run is split into calls changes no bit of the result."""
    p = _problem((301, 2, 37, 3), dtype, seed=7)
    p["W1"] *= 0.1
    p["W2T"] *= 0.1
    whole = _train_steps(_kernels, p, n_threads, [(0, 7)])
    pieces = _train_steps(_kernels, p, n_threads, chunks)
    ref = _train_steps(reference, p, 1, [(0, 7)])
    assert whole[2] == pieces[2] == ref[2] == -1
    np.testing.assert_array_equal(pieces[0], whole[0])
    for a, b in zip(pieces[1], whole[1]):
        np.testing.assert_array_equal(a, b)
    assert_close(whole[0], ref[0], dtype, factor=10)
    for f, r in zip(whole[1], ref[1]):
        assert_close(f, r, dtype, scale=np.abs(r).max(), factor=100)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_train_net_steps_stops_at_the_first_non_finite_loss(n_threads):
    """The weights are left as they were before the iteration whose loss is not finite."""
    p = _problem((301, 2, 37, 3), np.dtype(np.float64), seed=8)
    history, weights, bad = _train_steps(_kernels, p, n_threads, [(0, 50)], step_size=1e8)
    assert 0 < bad < 50 and not np.isfinite(history[bad]) and np.isfinite(history[:bad]).all()
    _, before, result = _train_steps(_kernels, p, n_threads, [(0, bad)], step_size=1e8)
    assert result == -1
    for w, b in zip(weights, before):
        np.testing.assert_array_equal(w, b)


def test_threaded_loop_gives_the_same_bits_when_one_thread_works_alone():
    """On fewer threads than thread slots (here Numba's thread count set to 1), the prange's
    bodies run one after another: the team cannot form, the first body trains on every slot's
    rows itself (after waiting for the team for at most a few milliseconds), the others return,
    and the result is bit for bit that of the team."""
    p = _problem((301, 2, 37, 3), np.dtype(np.float64), seed=9)
    team = _train_steps(_kernels, p, 2, [(0, 5), (5, 9)])
    ws = _kernels.net_workspace(301, 2, 37, 3, np.dtype(np.float64), 2)
    saved = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        alone = _train_steps(_kernels, p, 2, [(0, 5), (5, 9)], ws=ws)
    finally:
        numba.set_num_threads(saved)
    assert ws[-1][_sync.GATE] == -1  # the team was closed: one body trained alone
    assert team[2] == alone[2] == -1
    np.testing.assert_array_equal(alone[0], team[0])
    for a, b in zip(alone[1], team[1]):
        np.testing.assert_array_equal(a, b)


def test_is_finite():
    """The training loops' divergence check, immune to the kernels' fastmath flags."""
    values = [0.0, -0.0, 1.0, -1e308, np.finfo(np.float64).max, 5e-324, np.inf, -np.inf, np.nan, -np.nan]
    assert [_kernels._is_finite(v) for v in values] == [math.isfinite(v) for v in values]
