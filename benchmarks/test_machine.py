"""The machine's reference rate, start-up time and the memory bound, measured in the same run."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from fastspiral import scaling


def test_numpy_matmul(benchmark):
    """NumPy's own 2048x2048 float64 matrix product, all cores: the GFLOP/s to compare with."""
    benchmark.group = "machine"
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2048, 2048)), rng.standard_normal((2048, 2048))
    benchmark.pedantic(lambda: a @ b, rounds=10, warmup_rounds=2, iterations=1)
    benchmark.extra_info["gflops"] = 2 * 2048**3 / benchmark.stats.stats.median / 1e9


STARTUP = "import fastspiral as fs; X, y = fs.make_spiral(seed=0); fs.train_net(X, y, iters=10)"


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_startup(benchmark, cache):
    """A fresh process: import fastspiral and train a net for 10 iterations."""
    benchmark.group = "start-up"
    subprocess.run([sys.executable, "-c", STARTUP], check=True)  # fills the regular cache

    def run():
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as empty:
            if cache == "cold":
                env["NUMBA_CACHE_DIR"] = empty  # nothing compiled yet
            subprocess.run([sys.executable, "-c", STARTUP], check=True, env=env)

    benchmark.pedantic(run, rounds=3 if cache == "warm" else 1, iterations=1)
    benchmark.extra_info["cache"] = cache


@pytest.mark.large
def test_peak_memory_one_iteration(benchmark):
    """One iteration at N=1,000,000, H=4,096 in a fresh process: the rise in peak RSS.

    One (N, H) float64 array alone would be 31 GiB; the numba kernels keep
    cache-sized tiles.
    """
    benchmark.group = "memory N=1,000,000 H=4,096"
    config = dict(
        backend="numba",
        dtype="float64",
        n_samples=1_000_000,
        hidden=4096,
        iters=1,
        repeats=1,
        seed=0,
    )
    result = {}

    def run():
        result.update(scaling.run_config_in_fresh_process(config))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["status"] == "ok", result["status"]
    benchmark.extra_info.update(
        peak_mem_mib=result["peak_mem_mib"],
        n_samples=1_000_000,
        hidden=4096,
        seconds_per_iter=result["seconds_per_iter"],
        gflops=result["gflops"],
    )
