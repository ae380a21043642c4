"""The spiral data set of the CS231n case study."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ._validation import check_float, check_int, check_memory


def random_source(seed: Any) -> np.random.Generator | np.random.RandomState:
    """The random stream behind a ``seed`` argument.

    An int, SeedSequence, Generator or None goes to
    :func:`numpy.random.default_rng`. A :class:`numpy.random.RandomState` is
    used as it is and advanced, which replays the case study's single legacy
    ``np.random.randn`` stream: ``rs = np.random.RandomState(0)`` passed to
    ``make_spiral``, ``train_linear`` and ``train_net`` in that order gives its
    published numbers (linear: loss 0.786, 49%; net: loss 0.245, 98%).
    """
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, (bool, np.bool_, np.timedelta64, np.datetime64)):
        # default_rng takes them as the ints they subclass or convert to
        raise TypeError(f"seed must be an int, a numpy Generator/RandomState or None, got {seed!r}")
    if isinstance(seed, numbers.Integral) and seed < 0:
        # default_rng's "expected non-negative integer" used to become "must be an int"
        # (tests/test_validation.py::test_a_negative_seed_says_what_is_wrong)
        raise ValueError(
            f"seed must be >= 0 (NumPy's generators take no negative seeds), got {seed}"
        )
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"seed must be an int, a numpy Generator/RandomState or None, got {seed!r}"
        ) from exc


def make_spiral(
    n_per_class: int = 100,
    n_classes: int = 3,
    *,
    noise: float = 0.2,
    seed: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate the case study's spiral: ``n_classes`` interleaved arms in 2-D.

    Arm ``j`` has ``n_per_class`` points at radius ``r = linspace(0, 1)`` and
    angle ``t = linspace(4j, 4(j+1)) + noise * randn``; the point is
    ``(r sin t, r cos t)``, so features already lie in [-1, 1].

    Parameters
    ----------
    n_per_class : int
        Points per class (>= 1).
    n_classes : int
        Number of classes, i.e. spiral arms (>= 1).
    noise : float
        Standard deviation of the angular noise (>= 0).
    seed : int, numpy.random.Generator, numpy.random.RandomState or None
        Source of the noise; see :func:`random_source`.

    Returns
    -------
    X : ndarray of float64, shape (n_per_class * n_classes, 2)
    y : ndarray of int64, shape (n_per_class * n_classes,)
        Class of each row; rows are grouped by class.
    """
    n = check_int(n_per_class, "n_per_class", minimum=1)
    k = check_int(n_classes, "n_classes", minimum=1)
    noise = check_float(noise, "noise")
    # X, y and the per-arm temporaries (tests/test_validation.py::test_sizes_too_large_for_memory)
    check_memory(n * k * 24 + n * 32, f"n_per_class={n:,} and n_classes={k:,} make data that needs")
    rng = random_source(seed)
    X = np.empty((n * k, 2), dtype=np.float64)
    y = np.empty(n * k, dtype=np.int64)
    r = np.linspace(0.0, 1.0, n)
    for j in range(k):
        rows = slice(n * j, n * (j + 1))
        with np.errstate(over="ignore", invalid="ignore"):
            t = np.linspace(4.0 * j, 4.0 * (j + 1), n) + rng.standard_normal(n) * noise
        if not np.isfinite(t).all():
            # noise=1e308 overflowed the angles, and sin(inf) made NaN points, with only
            # NumPy's RuntimeWarning
            # (tests/test_validation.py::test_huge_noise_is_refused_not_returned_as_nan)
            raise ValueError(
                f"noise={noise:g} is too large: the angles overflow to infinity (any noise "
                "above a few radians already spreads them evenly around the circle)"
            )
        X[rows, 0] = r * np.sin(t)
        X[rows, 1] = r * np.cos(t)
        y[rows] = j
    return X, y


#: The data sets of :func:`make_data`: their default number of classes and noise.
KINDS = {
    "spiral": (3, 0.2),
    "circles": (2, 0.05),
    "moons": (2, 0.1),
    "xor": (2, 0.05),
    "gaussians": (2, 0.15),
}


def make_data(
    kind: str,
    n_per_class: int = 100,
    n_classes: int | None = None,
    *,
    noise: float | None = None,
    seed: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a 2-D data set for the playground: the spiral, TensorFlow Playground's four, moons.

    Every kind lies in about [-1, 1] in both features, and its rows come
    shuffled (unlike :func:`make_spiral`, whose rows are grouped by class).
    A fresh ``seed`` draws a held-out set from the same distribution:
    ``make_data("moons", seed=0)`` to train, ``make_data("moons", seed=1)`` to
    test.

    Parameters
    ----------
    kind : {"spiral", "circles", "moons", "xor", "gaussians"}
        * "spiral": the case study's interleaved arms (:func:`make_spiral`),
          ``noise`` the standard deviation of the angle;
        * "circles": concentric rings, class k at radius about
          ``(k + 0.5) / n_classes``, ``noise`` the standard deviation of the radius;
        * "moons": two interleaving half circles (2 classes), ``noise`` the
          standard deviation of a Gaussian jitter of each point;
        * "xor": points uniform in the square, the class the sign of
          ``x0 * x1`` (2 classes), jittered by ``noise``;
        * "gaussians": ``n_classes`` round clusters on a circle of radius 0.5,
          each of standard deviation ``noise``.
    n_per_class : int
        Points per class (>= 1).
    n_classes : int, optional
        Number of classes (default 3 for the spiral, 2 otherwise; moons and
        xor have exactly 2).
    noise : float, optional
        As described for each kind (>= 0; each kind has its own default).
    seed : int, numpy.random.Generator, numpy.random.RandomState or None
        Source of the randomness; see :func:`random_source`.

    Returns
    -------
    X : ndarray of float64, shape (n_per_class * n_classes, 2)
    y : ndarray of int64, shape (n_per_class * n_classes,)
        Rows in random order.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    default_k, default_noise = KINDS[kind]
    n = check_int(n_per_class, "n_per_class", minimum=1)
    k = default_k if n_classes is None else check_int(n_classes, "n_classes", minimum=1)
    if kind in ("moons", "xor") and k != 2:
        raise ValueError(f"n_classes must be 2 for {kind!r}, got {k}")
    noise = default_noise if noise is None else check_float(noise, "noise")
    rng = random_source(seed)
    if kind == "spiral":
        X, y = make_spiral(n, k, noise=noise, seed=rng)
    else:
        X, y = _PLAYGROUND[kind](n, k, noise, rng)
    order = rng.permutation(X.shape[0])
    return np.ascontiguousarray(X[order]), np.ascontiguousarray(y[order])


def _circles(n, k, noise, rng):
    y = np.repeat(np.arange(k), n)
    radius = (y + 0.5) / k + noise * rng.standard_normal(y.size)
    angle = rng.uniform(0.0, 2 * np.pi, y.size)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)]), y


def _moons(n, k, noise, rng):
    t = np.pi * rng.uniform(0.0, 1.0, 2 * n)
    y = np.repeat(np.arange(2), n)
    upper = np.column_stack([np.cos(t[:n]), np.sin(t[:n])])
    lower = np.column_stack([1 - np.cos(t[n:]), 0.5 - np.sin(t[n:])])
    X = np.concatenate([upper, lower]) + noise * rng.standard_normal((2 * n, 2))
    # scikit-learn's moons span [-1, 2] x [-0.5, 1]: centred and scaled into about [-1, 1]
    return (X - [0.5, 0.25]) / 1.5, y


def _xor(n, k, noise, rng):
    X, y = np.empty((0, 2)), np.empty(0, np.int64)
    while y.size < 2 * n:  # draw until each class has n points
        P = rng.uniform(-1.0, 1.0, (2 * n, 2))
        label = (P[:, 0] * P[:, 1] > 0).astype(np.int64)
        P += noise * rng.standard_normal(P.shape)
        keep = np.concatenate(
            [np.flatnonzero(label == c)[: n - int((y == c).sum())] for c in (0, 1)]
        )
        X, y = np.concatenate([X, P[keep]]), np.concatenate([y, label[keep]])
    return X, y


def _gaussians(n, k, noise, rng):
    y = np.repeat(np.arange(k), n)
    angle = 2 * np.pi * y / k + (np.pi / 4 if k == 2 else 0.0)
    centres = 0.5 * np.column_stack([np.cos(angle), np.sin(angle)])
    return centres + noise * rng.standard_normal((y.size, 2)), y


_PLAYGROUND = {"circles": _circles, "moons": _moons, "xor": _xor, "gaussians": _gaussians}
