"""Bad input is refused with a clear error before any kernel runs; input is never modified."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastspiral as fs

TRAINERS = [fs.train_net, fs.train_linear]


@pytest.fixture
def data():
    return fs.make_spiral(10, 3, seed=0)


def _bad_X(X):
    nan = X.copy()
    nan[3, 1] = np.nan
    inf = X.copy()
    inf[0, 0] = np.inf
    return {
        "nan": (nan, ValueError, "X contains 1 NaN or infinite"),
        "inf": (inf, ValueError, "X contains 1 NaN or infinite"),
        "1-D": (X[:, 0], ValueError, "X must be 2-D"),
        "3-D": (X[None], ValueError, "X must be 2-D"),
        "strings": (np.full(X.shape, "a"), TypeError, "X must hold real numbers"),
        "complex": (X + 1j, TypeError, "X must hold real numbers"),
        "ragged": ([[1.0, 2.0], [3.0]], ValueError, "X could not be converted"),
    }


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("case", list(_bad_X(np.zeros((30, 2)))))
def test_bad_X(trainer, data, case):
    X, y = data
    bad, exc, msg = _bad_X(X)[case]
    with pytest.raises(exc, match=msg):
        trainer(bad, y, iters=1)


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (lambda y: y + 0.5, ValueError, "y must hold integer class labels"),
        (lambda y: y - 1, ValueError, "y must hold labels >= 0"),
        (lambda y: y[:, None], ValueError, "y must be 1-D"),
        (lambda y: y[:-1], ValueError, "y has 29 labels but X has 30 rows"),
        (lambda y: y.astype(str), TypeError, "y must hold integer class labels"),
        (lambda y: np.where(y == 0, np.nan, y), ValueError, "y must hold integer class labels"),
    ],
)
def test_bad_y(trainer, data, bad, exc, msg):
    X, y = data
    with pytest.raises(exc, match=msg):
        trainer(X, bad(y), iters=1)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_empty_data(trainer):
    with pytest.raises(ValueError, match="X must not be empty"):
        trainer(np.zeros((0, 2)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"iters": -1}, ValueError, "iters must be >= 0"),
        ({"iters": 2.5}, TypeError, "iters must be an integer"),
        ({"step_size": 0}, ValueError, "step_size must be > 0"),
        ({"step_size": -1.0}, ValueError, "step_size must be > 0"),
        ({"step_size": float("nan")}, ValueError, "step_size must be finite"),
        ({"step_size": float("inf")}, ValueError, "step_size must be finite"),
        ({"step_size": "1"}, TypeError, "step_size must be a real number"),
        ({"reg": -1e-3}, ValueError, "reg must be >= 0"),
        ({"reg": float("nan")}, ValueError, "reg must be finite"),
        ({"backend": "torch"}, ValueError, r"backend must be one of \['numba', 'numpy'\]"),
        ({"dtype": "float16"}, ValueError, "dtype must be one of"),
        ({"dtype": "int64"}, ValueError, "dtype must be one of"),
        ({"seed": "abc"}, TypeError, "seed must be"),
    ],
)
def test_bad_hyperparameters(trainer, data, kwargs, exc, msg):
    X, y = data
    with pytest.raises(exc, match=msg):
        trainer(X, y, **kwargs)


@pytest.mark.parametrize(
    "hidden,exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_bad_hidden(data, hidden, exc):
    X, y = data
    with pytest.raises(exc, match="hidden"):
        fs.train_net(X, y, hidden=hidden)


def test_numpy_dtypes_are_accepted(data):
    X, y = data
    m = fs.train_net(X, y, iters=2, dtype=np.float32, hidden=3)
    assert m.params["W1"].dtype == np.float32


@pytest.mark.parametrize(
    "init,msg",
    [
        (
            {"W1": np.zeros((2, 5)), "b1": np.zeros(5), "W2": np.zeros((5, 3))},
            "missing the array 'b2'",
        ),
        (
            {"W1": np.zeros((3, 5)), "b1": np.zeros(5), "W2": np.zeros((5, 3)), "b2": np.zeros(3)},
            r"init\['W1'\] has shape \(3, 5\), expected \(2, 5\)",
        ),
        (
            {"W1": np.zeros((2, 5)), "b1": np.zeros(4), "W2": np.zeros((5, 3)), "b2": np.zeros(3)},
            r"init\['b1'\] has shape \(4,\), expected \(5,\)",
        ),
        (
            {"W1": np.zeros((2, 5)), "b1": np.zeros(5), "W2": np.zeros((5, 2)), "b2": np.zeros(2)},
            "y holds label 2 but init has only 2 classes",
        ),
        (
            {
                "W1": np.full((2, 5), np.nan),
                "b1": np.zeros(5),
                "W2": np.zeros((5, 3)),
                "b2": np.zeros(3),
            },
            "init\\['W1'\\] must hold finite numbers",
        ),
        ({"W": np.zeros((2, 3))}, "W1"),
    ],
)
def test_bad_net_init(data, init, msg):
    X, y = data
    with pytest.raises(ValueError, match=msg):
        fs.train_net(X, y, init=init, iters=1)


def test_init_hidden_mismatch(data):
    X, y = data
    net = fs.train_net(X, y, hidden=5, iters=1)
    with pytest.raises(ValueError, match="hidden=6 but init has 5 hidden units"):
        fs.train_net(X, y, init=net, hidden=6)
    with pytest.raises(TypeError, match="init must be a fitted model or a dict"):
        fs.train_linear(X, y, init=[1, 2])


def test_bad_linear_init(data):
    X, y = data
    with pytest.raises(ValueError, match=r"init\['W'\] has shape \(3, 3\), expected \(2, 3\)"):
        fs.train_linear(X, y, init={"W": np.zeros((3, 3)), "b": np.zeros(3)})


@pytest.mark.parametrize("trainer", TRAINERS)
def test_inputs_are_not_modified(data, trainer):
    X, y = data
    Xf = np.asfortranarray(X)
    y8 = y.astype(np.uint8)
    init_model = trainer(X, y, iters=3, seed=0)
    init = {k: v.copy() for k, v in init_model.params.items()}
    copies = [a.copy() for a in (X, Xf, y, y8)]
    trainer(X, y, iters=20, init=init)
    trainer(Xf, y8, iters=20, init=init_model)
    trainer(X, y, iters=20, backend="numpy", init=init)
    for before, after in zip(copies, (X, Xf, y, y8)):
        assert np.array_equal(before, after)
    for k in init:
        assert np.array_equal(init[k], init_model.params[k])


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"n_per_class": 0}, ValueError, "n_per_class must be >= 1"),
        ({"n_classes": 1.5}, TypeError, "n_classes must be an integer"),
        ({"noise": -0.1}, ValueError, "noise must be >= 0"),
    ],
)
def test_bad_make_spiral(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fs.make_spiral(**kwargs)


def test_make_spiral_shapes_and_seed():
    X, y = fs.make_spiral(50, 4, noise=0.0, seed=1)
    assert X.shape == (200, 2) and X.dtype == np.float64 and y.dtype == np.int64
    assert np.array_equal(np.bincount(y), [50] * 4)
    assert np.abs(X).max() <= 1.0
    X2, _ = fs.make_spiral(50, 4, noise=0.0, seed=2)
    assert np.array_equal(X, X2)  # no noise, no randomness
    A, _ = fs.make_spiral(seed=3)
    B, _ = fs.make_spiral(seed=3)
    C, _ = fs.make_spiral(seed=4)
    assert np.array_equal(A, B) and not np.array_equal(A, C)


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"dtype": "float32", "step_size": 1e200}, "step_size=1e[+]200 does not fit in float32"),
        ({"dtype": "float32", "reg": 1e39}, "reg=1e[+]39 does not fit in float32"),
        ({"dtype": "float32", "step_size": 1e-50}, "step_size=1e-50 rounds to 0 in float32"),
        ({"dtype": "float32", "reg": 1e-60}, "reg=1e-60 rounds to 0 in float32"),
        (
            {"dtype": "float64", "step_size": 1e-330},
            "step_size must be > 0",
        ),  # 0.0 as a Python float
    ],
)
def test_hyperparameters_that_do_not_fit_the_dtype(trainer, data, kwargs, msg):
    X, y = data
    with pytest.raises(ValueError, match=msg):
        trainer(X, y, iters=1, **kwargs)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize(
    "trainer,kwargs,names",
    [
        # finite weights near 1e297 whose scores overflow: the case the loss checks never see
        (fs.train_net, {"step_size": 1e300}, "step_size"),
        (fs.train_net, {"step_size": 3e38, "dtype": "float32"}, "step_size"),
        (fs.train_linear, {"step_size": 1e308, "x_scale": 1e3}, "step_size"),  # W overflows to inf
        # step_size * reg > 2: the weight decay itself grows the weights
        (fs.train_net, {"step_size": 1.0, "reg": 1e300}, "reg"),
        (fs.train_linear, {"step_size": 1e3, "reg": 1e308}, "reg"),
    ],
)
@pytest.mark.parametrize("iters", [1, 2])
def test_divergence_in_the_last_update_is_refused(data, backend, trainer, kwargs, names, iters):
    X, y = data
    kwargs = dict(kwargs)
    X = X * kwargs.pop("x_scale", 1.0)
    with pytest.raises(FloatingPointError, match=f"try a smaller {names}"):
        trainer(X, y, iters=iters, backend=backend, **kwargs)


SPIN = textwrap.dedent("""
    import time
    import numpy as np
    from fastspiral.train import _scores_bound

    rng = np.random.default_rng(0)
    params = {"W1": rng.standard_normal((784, 128)), "b1": np.zeros(128),
              "W2": rng.standard_normal((128, 10)), "b2": np.zeros(10)}
    X = rng.standard_normal((2000, 784))

    def cpu_after(f):
        time.sleep(0.3)  # whatever ran before has stopped spinning
        c0 = time.process_time()
        f()
        time.sleep(0.2)
        return time.process_time() - c0

    print(cpu_after(lambda: _scores_bound(params, X)), cpu_after(lambda: np.linalg.norm(params["W1"])))
""")


def test_the_last_check_leaves_no_blas_threads_spinning():
    """The bound on the scores runs after every training: with np.linalg.norm (a BLAS dot) on a
    784 x 128 W1 it started OpenBLAS's threads, which spun on for ~0.1 s (100 ms of CPU over
    200 ms of sleep, measured) beside the next training, whose thread choice then took one
    thread for its first 0.5 s. Process CPU time over a sleep after the call tells."""
    proc = subprocess.run([sys.executable, "-c", SPIN], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, blas_norm = map(float, proc.stdout.split())
    if blas_norm < 0.02:
        pytest.skip(
            f"this BLAS leaves no threads spinning after a dot ({blas_norm * 1e3:.1f} ms of CPU)"
        )
    assert ours < 0.2 * blas_norm


@pytest.mark.parametrize(
    "change,exc,msg",
    [
        ({"W1": np.full((2, 5), 0.01 + 0.01j)}, TypeError, r"init\['W1'\] must hold real numbers"),
        ({"b1": np.zeros(5, bool)}, TypeError, r"init\['b1'\] must hold real numbers"),
        (
            {"W2": np.full((5, 3), 1e39)},
            ValueError,
            r"init\['W2'\] holds values too large for float32",
        ),
    ],
)
def test_init_that_a_cast_would_change(data, change, exc, msg):
    """Complex or oversized initial weights are refused rather than cast (imaginary part dropped, inf)."""
    X, y = data
    init = {
        "W1": np.zeros((2, 5)),
        "b1": np.zeros(5),
        "W2": np.zeros((5, 3)),
        "b2": np.zeros(3),
        **change,
    }
    with pytest.raises(exc, match=msg):
        fs.train_net(X, y, init=init, iters=1, dtype="float32")


def test_X_too_large_for_the_dtype(data):
    X, y = data
    with pytest.raises(ValueError, match="X holds values too large for float32"):
        fs.train_net(X * 1e100, y, dtype="float32", iters=1)
