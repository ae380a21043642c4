import contextlib
import signal
import subprocess
import time

import numpy as np
import pytest

from fastspiral.backends import BACKENDS

#: Relative tolerances when the Numba kernels are held to the NumPy reference:
#: both compute the same sums, in different orders (vectorised, FMA-contracted).
RTOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 2e-5}
DTYPES = [np.float64, np.float32]


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


def assert_close(actual, expected, dtype, scale=None, factor=1.0):
    """Compare with a tolerance relative to the size of the expected values.

    Entries are compared against ``rtol * max|expected|`` rather than each
    entry's own size, because tiny entries that are sums of cancelling terms
    carry the absolute rounding error of the large ones.
    """
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape
    ref = scale if scale is not None else max(np.max(np.abs(expected)), 1e-30)
    tol = factor * RTOL[np.dtype(dtype)] * ref
    err = np.max(np.abs(actual - expected)) if actual.size else 0.0
    assert err <= tol, f"max abs error {err:.3g} > {tol:.3g}"


@pytest.fixture(scope="session")
def spiral():
    from fastspiral import make_spiral

    return make_spiral(100, 3, seed=0)


def start_interruptible(argv, **kwargs):
    """``subprocess.Popen(argv, **kwargs)`` for a child that :func:`interrupt` will stop.

    A process started in the background by a non-interactive shell ignores
    SIGINT, its children inherit that, and Python then never turns SIGINT
    into KeyboardInterrupt. A Python handler, unlike "ignore", is reset to
    the default action in the child, so this process holds one while it
    starts the child.
    """
    with contextlib.ExitStack() as stack:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            stack.callback(signal.signal, signal.SIGINT, signal.SIG_IGN)
        return subprocess.Popen(argv, **kwargs)


def interrupt(proc, timeout=30, sig=signal.SIGINT):
    """Send ``sig`` (SIGINT, as Ctrl-C, by default) to a running subprocess.

    Returns the seconds until it exited.

    The process is killed if it does not exit within ``timeout`` seconds.
    """
    assert proc.poll() is None, "the process ended before it could be interrupted"
    sent = time.perf_counter()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
    return time.perf_counter() - sent
