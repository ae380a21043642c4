"""The design constants of the Numba backend, measured: tile size, work per slot, mini-batch slots.

Each group varies one constant around its chosen value with everything else
fixed (the mini-batch slots group sets its two constants to give each slot
count; docs/design.md quotes the results). ``pytest --benchmark-only -m design``
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
from .test_training_lab import lab_problem, passes_per_round, time_passes

pytestmark = pytest.mark.design


@pytest.mark.parametrize("tile", [16_384, 32_768, 65_536, 131_072, 262_144])
def test_tile_elements(benchmark, monkeypatch, tile):
    """N=30,000, H=1,000, float64: elements of the (T, H) hidden tile each worker streams
    through."""
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


#: (N, D, K) of the mini-batch slots group: the spiral at N=30,000, and digits' training rows
#: (benchmarks/test_training_lab.py) as Gaussian rows of their shape.
SLOT_SHAPES = {"spiral": (30_000, 2, 3), "digits": (1_347, 64, 10)}


@pytest.mark.parametrize("slots", [1, 2, 4, 8])
@pytest.mark.parametrize("batch_size", [200, 32])
@pytest.mark.parametrize("shape", list(SLOT_SHAPES))
def test_mini_batch_slots(benchmark, monkeypatch, shape, batch_size, slots):
    """H=100, "sgd", two threads: epochs of mini-batches split into 1, 2, 4 or 8 slots.

    SLOT_FLOPS is set to the batch's FLOPs over the slots and
    SLOT_FLOPS_PER_PARAMETER to 1, so that batch_slots gives that many; varied
    alone, SLOT_FLOPS (195,000 to 780,000 around its 390,000) changes the count
    at the spiral's batches of 200 only, the per-parameter bound holding the
    other three at one or two slots. ``chosen`` in extra_info is the count the
    shipped constants give: the row the others are read against.
    """
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip(f"this machine has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    n_samples, n_features, n_classes = SLOT_SHAPES[shape]
    hidden = 100
    chosen = _workspace.batch_slots(batch_size, n_features, hidden, n_classes)
    flops = batch_size * (4 * n_features * hidden + 6 * hidden * n_classes)
    monkeypatch.setattr(_workspace, "SLOT_FLOPS", flops // slots)
    monkeypatch.setattr(_workspace, "SLOT_FLOPS_PER_PARAMETER", 1)
    benchmark.group = (
        f"design: mini-batch slots, {shape} N={n_samples:,} D={n_features} K={n_classes} "
        f"H={hidden} B={batch_size}"
    )
    problem = lab_problem(n_samples, hidden, "sgd", batch_size, n_features, n_classes)
    passes = passes_per_round(n_samples, hidden, n_features, n_classes)
    time_passes(
        benchmark, problem, passes, threads=2, chosen=chosen, slot_flops=flops // slots,
        n_features=n_features, n_classes=n_classes,
    )  # fmt: skip
    assert benchmark.extra_info["slots"] == slots
