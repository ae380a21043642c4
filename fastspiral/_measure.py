"""Measurement helpers shared by the scaling sweeps and the benchmark suite."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

import numpy as np

N_FEATURES, N_CLASSES = 2, 3


def useful_flops(n_samples: int, hidden: int, n_features: int = N_FEATURES,
                 n_classes: int = N_CLASSES) -> int:
    """FLOPs of one net iteration: ``4 N D H + 6 N H K`` (forward, backprop, both weight gradients)."""
    return 4 * n_samples * n_features * hidden + 6 * n_samples * hidden * n_classes


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of NumPy's own ``(n, n) @ (n, n)`` float64 product (best of ``repeats``), all cores."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    a @ b  # warm up BLAS threads
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine_info(measure_matmul: bool = True) -> dict[str, Any]:
    """CPU model, core count, versions and (optionally) the matmul rate of this machine."""
    import numba

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "host": socket.gethostname(), "cpu": model, "cores": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "platform": platform.platform(),
    }
    if measure_matmul:
        info["matmul_gflops"] = round(matmul_gflops(), 1)
    return info


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
