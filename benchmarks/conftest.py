"""Shared pieces of the benchmark suite: sizes, implementations, and a runner.

Every implementation timed here comes from the backend registry
(:data:`fastspiral.backends.BACKENDS`), the same one the tests check against
the NumPy reference.
"""

import time

import numpy as np
import pytest

from fastspiral._problem import net_problem
from fastspiral.backends import BACKENDS
from fastspiral.numba_backend.threads import ThreadChooser
from fastspiral.scaling.measure import peak_memory_since, reset_peak_memory, useful_flops

#: (N, H) of each benchmark group; N=300,000 is marked "large" (deselect with -m "not large").
SIZES = [
    (300, 100),
    (300, 1000),
    (3000, 100),
    (3000, 1000),
    (30_000, 100),
    (30_000, 1000),
    pytest.param((300_000, 100), marks=pytest.mark.large, id="300000x100"),
    pytest.param((300_000, 1000), marks=pytest.mark.large, id="300000x1000"),
]
#: (backend, dtype) of each row of a group.
IMPLEMENTATIONS = [("numba", "float64"), ("numba", "float32"), ("numpy", "float64")]
ROUNDS = 5


def size_id(size):
    return f"{size[0]}x{size[1]}"


def group_name(n_samples, hidden):
    return f"net N={n_samples:,} H={hidden:,}"


def iterations_per_round(n_samples, hidden):
    """Enough iterations that a Numba round takes tens of milliseconds."""
    return max(1, round(3e7 / (n_samples * hidden)))


def spiral_problem(n_samples, hidden, dtype, seed=0):
    """Spiral data (3 classes, 2 features) and the case study's initial weights, as train_net
    sets them up."""
    from fastspiral import make_spiral

    X, y = make_spiral(n_samples // 3, 3, seed=seed)
    return net_problem(X, y, hidden=hidden, seed=seed, dtype=dtype)


def shape_problem(n_samples, n_features, hidden, n_classes, dtype, seed=0):
    """Gaussian data of another shape (D features, K classes), as train_net sets it up."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    y = rng.integers(0, n_classes, n_samples)
    return net_problem(X, y, hidden=hidden, seed=seed, dtype=dtype)


def registry_runner(backend, dtype, n_samples, hidden, iters, pin_threads=None, problem=None):
    """A callable running ``iters`` iterations of the backend's trainer, as ``train_net`` runs it.

    The trainer (working weights, buffers) is prepared once here; the weights
    keep training from round to round. ``pin_threads`` makes a Numba trainer
    use that many threads throughout instead of choosing run by run;
    ``problem`` replaces the spiral of ``n_samples`` rows.
    """
    if problem is None:
        problem = spiral_problem(n_samples, hidden, dtype)
    trainer = BACKENDS[backend].prepare(problem)
    if pin_threads is not None and getattr(trainer, "parallel", False):
        # a chooser of its own: trainers of one shape share theirs (_threads.shared_chooser)
        trainer.chooser = ThreadChooser(trainer.ws.n_workers)
        trainer.chooser.next = lambda n: (pin_threads, n, False)
    history = np.empty(iters)
    chooser = getattr(trainer, "chooser", None) if pin_threads is None else None

    def run():
        if chooser is not None:
            chooser.new_run()  # as each train_net call does: its workers may have gone idle
        bad = trainer.run(0, iters, history)
        assert bad < 0, "training diverged"

    return run


def settle(seconds=0.3):
    """Wait until other libraries' worker threads have gone idle, before timing.

    OpenBLAS's threads keep spinning for about 0.1 s after each matrix
    product; on the 2-core machine they took a core from the benchmark that
    came next (numba float64 right after the previous group's NumPy row ran
    at a third of its speed in some rounds: 8.8-24 ms per iteration at
    N=30,000, H=1,000).
    """
    time.sleep(seconds)


def record(benchmark, n_samples, hidden, iters, mark, **info):
    """Store time per iteration, useful GFLOP/s and peak memory in ``benchmark.extra_info``."""
    median = benchmark.stats.stats.median
    peak = peak_memory_since(mark)
    benchmark.extra_info.update(
        n_samples=n_samples,
        hidden=hidden,
        iters_per_round=iters,
        seconds_per_iter=median / iters,
        gflops=useful_flops(n_samples, hidden) * iters / median / 1e9,
        peak_mem_mib=None if peak is None else peak / 2**20,
        **info,
    )


__all__ = [
    "IMPLEMENTATIONS",
    "ROUNDS",
    "SIZES",
    "group_name",
    "iterations_per_round",
    "record",
    "registry_runner",
    "reset_peak_memory",
    "shape_problem",
    "size_id",
    "spiral_problem",
]


def pytest_benchmark_update_machine_info(config, machine_info):
    """The build the kernels ran as and the BLAS NumPy used, for the report's footnote."""
    import numba

    from fastspiral.scaling.measure import blas_info, numba_target_cpu

    machine_info["numba_cpu"] = numba_target_cpu()
    machine_info["numba_version"] = numba.__version__
    machine_info["blas"] = blas_info()
