"""Net training, one group per (N, H): numba float64, numba float32 and NumPy side by side.

Compile time is excluded by a warm-up round. Run with ``pytest --benchmark-only``
(``-m "not large"`` leaves out N=300,000).
"""

import numba
import pytest

from fastspiral._threads import usable_threads

from .conftest import (IMPLEMENTATIONS, ROUNDS, SIZES, group_name, iterations_per_round, record,
                       registry_runner, reset_peak_memory, settle, size_id)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: f"{i[0]}-{i[1]}")
@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_train_net(benchmark, size, impl):
    n_samples, hidden = size
    backend, dtype = impl
    benchmark.group = group_name(n_samples, hidden)
    iters = iterations_per_round(n_samples, hidden)
    registry_runner(backend, dtype, 3000, hidden, 2)()  # compile first: not in the memory figure
    mark = reset_peak_memory()
    run = registry_runner(backend, dtype, n_samples, hidden, iters)
    settle()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(benchmark, n_samples, hidden, iters, mark, backend=backend, dtype=dtype,
           threads=usable_threads() if backend == "numba" else None)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_scaling(benchmark, threads):
    """The parallel kernels on 1 and 2 threads at N=30,000, H=1,000."""
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"this machine has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    n_samples, hidden = 30_000, 1000
    benchmark.group = "threads N=30,000 H=1,000"
    iters = iterations_per_round(n_samples, hidden)
    numba.set_num_threads(threads)
    try:
        registry_runner("numba", "float64", 3000, hidden, 2)()
        mark = reset_peak_memory()
        run = registry_runner("numba", "float64", n_samples, hidden, iters)
        settle()
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    record(benchmark, n_samples, hidden, iters, mark, backend="numba", dtype="float64", threads=threads)
