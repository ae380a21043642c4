"""The statistics of the scaling results: intervals on medians, ratios, a cost model and exponents.

Every interval here is computed from the repeats themselves, with no
assumption about their distribution:

* :func:`median_interval`: the distribution-free interval of a median from
  order statistics (its confidence follows from the binomial distribution
  and is reported with it: three repeats give at most 75%, five 94%, six 97%).
* :func:`ratio_interval`: the ratio of two medians, with a percentile
  bootstrap interval over each side's repeats.
* :func:`fit_cost_model`, :func:`fit_slope`: least-squares fits whose
  intervals come from a two-level bootstrap (configurations resampled, and
  each configuration's repeats resampled within it), so they hold both the
  timing noise and the model's misfit.

The bootstrap draws from a generator with a fixed seed, so that summarising
the same records twice prints the same text.

A t-based interval for the fits was rejected: it needs SciPy's quantiles,
which are no dependency of fastspiral, and assumes normal errors, which the
timings of a shared machine are not (a few slow repeats, never fast ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

#: The confidence of every interval, where the repeats allow it.
LEVEL = 0.95
#: Bootstrap resamples per interval: the 2.5% and 97.5% percentiles of 2,000 draws move by
#: well under 1% of the interval's width between seeds.
RESAMPLES = 2000
_SEED = 20_231_204


class Interval(NamedTuple):
    """An estimate with its confidence interval ``[low, high]`` at confidence ``level``."""

    value: float
    low: float
    high: float
    level: float


def median_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The median of ``values`` and the order-statistic interval around it.

    The interval is ``[x_(j), x_(n-1-j)]`` (sorted, 0-based) for the largest
    ``j`` whose coverage ``1 - 2 P(Binomial(n, 1/2) <= j)`` is at least
    ``level``; with too few values for ``level`` it is the full range, and
    ``level`` in the result is the coverage that range has (1 - 2 / 2**n).
    """
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("values must not be empty")
    median = float(np.median(xs))
    if n == 1:
        return Interval(median, xs[0], xs[0], 0.0)

    def coverage(j: int) -> float:
        tail = sum(math.comb(n, i) for i in range(j + 1)) / 2**n
        return 1 - 2 * tail

    j = 0
    while j + 1 < n - 2 - j and coverage(j + 1) >= level:
        j += 1
    return Interval(median, xs[j], xs[n - 1 - j], round(coverage(j), 4))


def _rng() -> np.random.Generator:
    return np.random.default_rng(_SEED)


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """median(b) / median(a), with a percentile bootstrap interval over both sets of repeats."""
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("both sets of repeats must be non-empty")
    rng = _rng()
    ma = np.median(xa[rng.integers(0, xa.size, (RESAMPLES, xa.size))], axis=1)
    mb = np.median(xb[rng.integers(0, xb.size, (RESAMPLES, xb.size))], axis=1)
    ratios = mb / ma
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Interval(float(np.median(xb) / np.median(xa)), float(low), float(high), level)


def _resamples(groups: Sequence[Sequence[float]], rng: np.random.Generator):
    """Two-level bootstrap draws: indices of resampled groups and each group's resampled median."""
    n = len(groups)
    arrays = [np.asarray(g, float) for g in groups]
    for _ in range(RESAMPLES):
        picks = rng.integers(0, n, n)
        yield (
            picks,
            np.array(
                [
                    np.median(arrays[i][rng.integers(0, arrays[i].size, arrays[i].size)])
                    for i in picks
                ]
            ),
        )


def fit_slope(xs: Sequence[float], repeats: Sequence[Sequence[float]], level: float = LEVEL):
    """Slope of log(median time) against log(x), with a two-level bootstrap interval.

    ``repeats[i]`` holds the repeats' times at ``xs[i]``. Returns None with
    fewer than two distinct x. Resamples whose x are all equal are drawn again.
    """
    x = np.log(np.asarray(xs, float))
    if len(set(x.tolist())) < 2:
        return None
    y = np.log([np.median(r) for r in repeats])
    slope = float(np.polyfit(x, y, 1)[0])
    draws = []
    for picks, medians in _resamples(repeats, _rng()):
        if np.ptp(x[picks]) > 0:
            draws.append(np.polyfit(x[picks], np.log(medians), 1)[0])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(slope, float(low), float(high), level)


class CostModel(NamedTuple):
    """``t = a + b * flops``: ``a`` seconds per iteration whatever the size, ``b`` seconds per FLOP.

    ``rate`` is 1 / b in GFLOP/s (the throughput the model tends to at large
    sizes), ``worst`` the largest relative misfit of a configuration's median.
    """

    a: Interval
    b: Interval
    rate: Interval
    points: int
    worst: float


def _wls(f: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Least squares of t = a + b f with relative residuals (weights 1 / t): a timing's noise
    grows with it, and plain least squares would fit the largest sizes alone."""
    w = 1.0 / t
    A = np.stack([w, f * w], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    return float(a), float(b)


def fit_cost_model(
    flops: Sequence[float], repeats: Sequence[Sequence[float]], level: float = LEVEL
) -> CostModel | None:
    """Fit ``t = a + b * flops`` to the medians of ``repeats``, with two-level bootstrap intervals.

    Returns None with fewer than two distinct FLOP counts.
    """
    f = np.asarray(flops, float)
    if len(set(f.tolist())) < 2:
        return None
    t = np.array([np.median(r) for r in repeats])
    a, b = _wls(f, t)
    fits = []
    for picks, medians in _resamples(repeats, _rng()):
        if np.ptp(f[picks]) > 0:
            fits.append(_wls(f[picks], medians))
    tail = 100 * (1 - level) / 2
    draws = np.array(fits)
    a_lo, a_hi = np.percentile(draws[:, 0], [tail, 100 - tail])
    b_lo, b_hi = np.percentile(draws[:, 1], [tail, 100 - tail])
    rates = 1e-9 / draws[:, 1][draws[:, 1] > 0] if (draws[:, 1] > 0).any() else np.array([np.nan])
    r_lo, r_hi = np.percentile(rates, [tail, 100 - tail])
    worst = float(np.max(np.abs((a + b * f) / t - 1)))
    return CostModel(
        Interval(a, float(a_lo), float(a_hi), level),
        Interval(b, float(b_lo), float(b_hi), level),
        Interval(1e-9 / b if b > 0 else math.nan, float(r_lo), float(r_hi), level),
        len(f),
        worst,
    )
