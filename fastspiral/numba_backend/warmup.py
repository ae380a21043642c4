"""Filling the compile cache ahead: what ``fastspiral compile`` runs.

A process that finds the cache empty compiles for seconds before its first
result (a new virtual environment, a container, a classroom's machines, a
Dask worker). :func:`compile_kernels` compiles the standard variants into the
cache in parallel processes, so that later processes only load them:

* both models, float64 and float32;
* the small form for the spiral's shape (D=2, K=3) and the general form;
* the parallel loop (a full batch of the case study) and the serial one
  (mini-batches), with the case study's update rule.

Other update rules compile at their first use (under a second each). On a
Dask cluster, ``client.run(fastspiral.compile_kernels)`` fills each worker's
cache (or the shared one, once).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np


class Variant(NamedTuple):
    """One standard variant: a model, a precision, a data shape and the rows per update."""

    model: str
    dtype: str
    n_features: int
    n_classes: int
    rows: int  # 300 at H=100 runs the parallel loop, 30 the serial one

    def __str__(self) -> str:
        loop = "parallel" if self.rows >= 300 else "serial"
        form = "small form" if self.n_features <= 8 else "general form"
        shape = f"D={self.n_features} K={self.n_classes}"
        return f"{self.model} {self.dtype} {shape} ({form}, {loop} loop)"


def standard_variants() -> list[Variant]:
    """The variants :func:`compile_kernels` compiles (see the module's docstring)."""
    out = []
    for dtype in ("float64", "float32"):
        for D, K in ((2, 3), (64, 10)):
            out += [Variant("net", dtype, D, K, 300), Variant("net", dtype, D, K, 30)]
            out.append(Variant("linear", dtype, D, K, 300))
    return out


def compile_variant(variant: Variant) -> float:
    """Compile (or load) ``variant``'s kernels in this process; returns the seconds it took."""
    from ..train import train_linear, train_net

    rng = np.random.default_rng(0)
    X = rng.standard_normal((variant.rows, variant.n_features))
    y = np.arange(variant.rows) % variant.n_classes
    t0 = time.perf_counter()
    if variant.model == "net":
        train_net(X, y, hidden=100, iters=1, dtype=variant.dtype, seed=0)
    else:
        train_linear(X, y, iters=1, dtype=variant.dtype, seed=0)
    return time.perf_counter() - t0


def _compile_group(variants: Sequence[Variant]) -> list[tuple[Variant, float]]:
    return [(v, compile_variant(v)) for v in variants]


def compile_kernels(
    processes: int | None = None, report: Callable[[str], None] | None = None
) -> list[tuple[Variant, float]]:
    """Compile every standard variant into the compile cache, in parallel processes.

    Parameters
    ----------
    processes : int, optional
        Processes to compile in (default: one per usable CPU, at most one per
        precision: variants of one precision share most kernels).
    report : callable, optional
        Called with a line per variant as it finishes (``print`` in the CLI).

    Returns
    -------
    list of (Variant, float)
        Each variant and the seconds its process took for it (loading is
        a fraction of a second; compiling, seconds).
    """
    from .threads import usable_threads

    variants = standard_variants()
    groups = [[v for v in variants if v.dtype == d] for d in ("float64", "float32")]
    n = max(1, min(processes or usable_threads(), len(groups)))
    if n == 1:
        merged = [v for g in groups for v in g]
        results = []
        for v in merged:
            results += _compile_group([v])
            if report is not None:
                report(f"{v}: {results[-1][1]:.1f} s")
        return results
    # spawn, not fork: a child forked from a process that ran OpenMP threads could not use them
    context = multiprocessing.get_context("spawn")
    results = []
    with context.Pool(n) as pool:
        for group_result in pool.imap_unordered(_compile_group, groups):
            for v, seconds in group_result:
                if report is not None:
                    report(f"{v}: {seconds:.1f} s")
            results += group_result
    return results
