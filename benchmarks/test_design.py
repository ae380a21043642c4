"""The design constants of the Numba backend, measured: tile size and work per slot.

Each group varies one constant around its chosen value with everything else
fixed (docs/design.md quotes the results). ``pytest --benchmark-only -m design``
runs only these; the H block (``fastspiral.numba_backend.tiles.H_BLOCK``) is a compile-time
constant of the kernels and is measured by editing it (docs/design.md).
"""

import numba
import pytest

from fastspiral.numba_backend import workspace as _workspace

from .conftest import (
    ROUNDS,
    iterations_per_round,
    record,
    registry_runner,
    reset_peak_memory,
    settle,
)

pytestmark = pytest.mark.design


@pytest.mark.parametrize("tile", [16_384, 32_768, 65_536, 131_072, 262_144])
def test_tile_elements(benchmark, monkeypatch, tile):
    """N=30,000, H=1,000, float64: elements of the (T, H) hidden tile each worker streams through."""
    monkeypatch.setattr(_workspace, "TILE_ELEMENTS", tile)
    n_samples, hidden = 30_000, 1000
    benchmark.group = "design: tile elements, N=30,000 H=1,000"
    iters = iterations_per_round(n_samples, hidden)
    mark = reset_peak_memory()
    run = registry_runner("numba", "float64", n_samples, hidden, iters)
    settle()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(benchmark, n_samples, hidden, iters, mark, backend="numba", dtype="float64", tile=tile)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_samples", [90, 150, 300, 600])
def test_threads_at_small_sizes(benchmark, monkeypatch, n_samples, threads):
    """H=100: one thread against two at the sizes around the threshold of two slots.

    SLOT_WORK is lowered so that every size here has two slots, and the
    threads are pinned (no choice run by run); where two threads are no
    faster than one, a slot needs more work than this.
    """
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"this machine has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    monkeypatch.setattr(_workspace, "SLOT_WORK", _workspace.net_work(n_samples, 100) // 2)
    hidden = 100
    benchmark.group = f"design: threads, N={n_samples} H=100"
    iters = max(200, iterations_per_round(n_samples, hidden))
    mark = reset_peak_memory()
    run = registry_runner("numba", "float64", n_samples, hidden, iters, pin_threads=threads)
    settle()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(
        benchmark, n_samples, hidden, iters, mark, backend="numba", dtype="float64", threads=threads
    )
