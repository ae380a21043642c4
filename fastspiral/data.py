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
