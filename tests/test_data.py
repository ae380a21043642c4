"""The playground's data sets: shapes, classes, ranges, shuffling, seeds, bad input."""

import numpy as np
import pytest

import fastspiral as fs
from fastspiral.data import KINDS


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_balanced_2d_shuffled_and_seeded(kind):
    k = KINDS[kind][0]
    X, y = fs.make_data(kind, n_per_class=50, seed=3)
    assert X.shape == (50 * k, 2) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.dtype == np.int64 and np.array_equal(np.bincount(y), [50] * k)
    assert np.isfinite(X).all() and np.abs(X).max() < 1.6  # about [-1, 1], noise aside
    assert np.quantile(np.abs(X), 0.95) <= 1.05
    # Rows come shuffled: no long runs of one class, as make_spiral's class-by-class order has.
    runs = 1 + np.count_nonzero(np.diff(y))
    assert runs > len(y) / 4
    again, y_again = fs.make_data(kind, n_per_class=50, seed=3)
    assert np.array_equal(again, X) and np.array_equal(y_again, y)
    other, _ = fs.make_data(kind, n_per_class=50, seed=4)
    assert not np.array_equal(other, X)
    legacy = fs.make_data(kind, n_per_class=50, seed=np.random.RandomState(0))
    assert legacy[0].shape == X.shape


@pytest.mark.parametrize("kind, classes", [("circles", 4), ("gaussians", 5), ("spiral", 7)])
def test_kinds_with_any_number_of_classes(kind, classes):
    X, y = fs.make_data(kind, n_per_class=20, n_classes=classes, seed=0)
    assert np.array_equal(np.bincount(y), [20] * classes)


def test_the_spiral_of_make_data_is_make_spirals_shuffled():
    X, y = fs.make_data("spiral", n_per_class=30, seed=np.random.RandomState(5))
    Xs, ys = fs.make_spiral(30, seed=np.random.RandomState(5))
    order = np.lexsort((y, X[:, 1], X[:, 0]))  # the arms share their centre: y breaks ties
    order_s = np.lexsort((ys, Xs[:, 1], Xs[:, 0]))
    assert np.array_equal(X[order], Xs[order_s]) and np.array_equal(y[order], ys[order_s])


def test_a_fresh_seed_is_a_held_out_set_from_the_same_distribution():
    """Moons are learnable: a net trained on seed 0 classifies seed 1's points as well."""
    X, y = fs.make_data("moons", seed=0)
    X_test, y_test = fs.make_data("moons", seed=1)
    net = fs.train_net(X, y, hidden=30, iters=1500, seed=0)
    assert net.score(X, y) > 0.95 and net.score(X_test, y_test) > 0.95


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(kind="swiss roll"), ValueError, "kind must be one of"),
        (dict(kind="moons", n_classes=3), ValueError, "n_classes must be 2"),
        (dict(kind="xor", n_classes=1), ValueError, "n_classes must be 2"),
        (dict(kind="circles", noise=-0.1), ValueError, "noise must be >= 0"),
        (dict(kind="circles", n_per_class=0), ValueError, "n_per_class must be >= 1"),
        (dict(kind="gaussians", n_classes=2.0), TypeError, "n_classes must be an integer"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        fs.make_data(**kwargs)
