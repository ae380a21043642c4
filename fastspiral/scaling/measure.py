"""Measurement helpers shared by the scaling sweeps and the benchmark suite."""

from __future__ import annotations

import platform
import socket
import time
from typing import Any

import numpy as np

N_FEATURES, N_CLASSES = 2, 3


def useful_flops(
    n_samples: int, hidden: int, n_features: int = N_FEATURES, n_classes: int = N_CLASSES
) -> int:
    """FLOPs of one net iteration: ``4 N D H + 6 N H K`` (forward, backprop, both weight
    gradients)."""
    return 4 * n_samples * n_features * hidden + 6 * n_samples * hidden * n_classes


def matmul_gflops(n: int = 2048, repeats: int = 3, dtype: str = "float64") -> float:
    """GFLOP/s of NumPy's own ``(n, n) @ (n, n)`` product in ``dtype`` (best of ``repeats``), on
    the BLAS threads this process has now (all cores unless limited, e.g. by threadpoolctl)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    a @ b  # warm up BLAS threads
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


#: Size of the matrix product each repeat's process times as its reference: 2 GFLOP, tens of
#: milliseconds on one core, and within a few percent of the 2048x2048 rate on OpenBLAS.
REFERENCE_MATMUL = 1024


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def blas_info() -> str:
    """NumPy's BLAS as "openblas 0.3.30 (Haswell kernels, 2 threads)", from threadpoolctl."""
    from threadpoolctl import threadpool_info

    found = [
        f"{i.get('internal_api')} {i.get('version')} "
        f"({i.get('architecture') or 'unknown'} kernels, {i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return "; ".join(found) or "none found"


_HOST: dict[str, Any] = {}


def host_info(measure_matmul: bool = True) -> dict[str, Any]:
    """Where this process runs: host, CPU model (py-cpuinfo), cores and memory (psutil), BLAS,
    Numba's target CPU, and NumPy's 2048x2048 float64 matmul rate on all cores; computed once
    per process."""
    if not _HOST:
        import cpuinfo
        import psutil

        cpu = cpuinfo.get_cpu_info()
        _HOST.update(
            host=socket.gethostname(),
            cpu=cpu.get("brand_raw") or platform.processor(),
            arch=cpu.get("arch"),
            cores=psutil.cpu_count(logical=True),
            physical_cores=psutil.cpu_count(logical=False),
            memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
            blas=blas_info(),
            numba_cpu=numba_target_cpu(),
            platform=platform.platform(),
        )
    if measure_matmul and "matmul_gflops" not in _HOST:
        _HOST["matmul_gflops"] = round(matmul_gflops(), 1)
    return dict(_HOST)


def numba_target_cpu() -> str:
    """The CPU Numba compiles for: ``NUMBA_CPU_NAME`` (haswell for an AVX2 build) or this host's."""
    import llvmlite.binding as llvm
    import numba

    return getattr(numba.config, "CPU_NAME", None) or llvm.get_host_cpu_name()


def machine_info(measure_matmul: bool = True) -> dict[str, Any]:
    """``host_info()`` plus the versions of Python, NumPy, Numba and fastspiral."""
    import numba

    from .._version import __version__

    return {
        **host_info(measure_matmul),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "fastspiral": __version__,
    }


class CpuShare:
    """How much of the machine other processes used while a block ran (psutil's CPU times).

    ``others`` = (all CPUs' busy time - this process's CPU time) / (wall time x CPUs):
    0 on a quiet machine, 0.5 when other programs kept half the cores busy.
    """

    def __enter__(self) -> CpuShare:
        import psutil

        self._proc = psutil.Process()
        self._busy0 = _busy(psutil.cpu_times())
        self._own0 = sum(self._proc.cpu_times()[:2])
        self._t0 = time.perf_counter()
        return self

    #: CPU times tick in 10 ms (Linux's USER_HZ): a shorter block has no usable figure (None).
    MIN_WALL = 0.2

    def __exit__(self, *exc) -> None:
        import psutil

        wall = time.perf_counter() - self._t0
        busy = _busy(psutil.cpu_times()) - self._busy0
        own = sum(self._proc.cpu_times()[:2]) - self._own0
        self.others = (
            max(0.0, (busy - own) / (wall * (psutil.cpu_count() or 1)))
            if wall >= self.MIN_WALL
            else None
        )


def others_cpu_now(seconds: float = 0.25) -> float:
    """Share of all CPUs busy over the next ``seconds`` while this process sleeps: other
    programs' load."""
    import psutil

    return psutil.cpu_percent(interval=seconds) / 100


def _busy(times) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def format_seconds(seconds: float) -> str:
    """A duration as us, ms or s with a few significant digits, for tables."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _status_memory() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes, from /proc/self/status."""
    rss = hwm = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def reset_peak_memory() -> int | None:
    """Reset this process's peak-RSS mark (Linux) and return the current RSS in bytes.

    Returns None where the kernel does not allow it; pass the result to
    :func:`peak_memory_since`.
    """
    try:
        rss, _ = _status_memory()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return rss
    except OSError:
        return None


def peak_memory_since(mark: int | None) -> int | None:
    """Bytes by which the peak RSS rose above ``mark`` (from :func:`reset_peak_memory`)."""
    if mark is None:
        return None
    _, peak = _status_memory()
    return max(peak - mark, 0)
