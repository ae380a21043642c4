"""SIGTERM and SIGHUP stop long work as Ctrl-C does: cleanup runs, children are stopped.

Python's default for SIGTERM and SIGHUP ends the process at once, without its
``finally`` blocks, so a sweep's worker process kept running (reparented to
init) after ``kill`` or a closed terminal. Inside :func:`signals_interrupt`
they raise :class:`Terminated`, a KeyboardInterrupt, so the paths that stop
workers on Ctrl-C run for them too (tests/test_scaling.py::test_sigterm_and_sighup_stop_the_worker).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise :class:`Terminated` (main thread only).

    Signals that are ignored (``nohup`` ignores SIGHUP) or handled by the
    program stay as they are; the previous handlers come back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for sig in _SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            saved[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
