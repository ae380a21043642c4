"""The ``"numba"`` backend's trainers: they run the compiled loops of :mod:`~fastspiral.numba_backend.loops`."""

from __future__ import annotations

import time

import numpy as np

from .._problem import Problem, read_only
from . import loops
from .cache import first_call
from .threads import parallel_section, shared_chooser, threads_allowed, usable_threads
from .tiles import is_general
from .workspace import aligned_copy, buffer_bytes, linear_workspace, n_slots, net_workspace


def _writeable(a: np.ndarray) -> np.ndarray:
    """``a``, or a copy if it is read-only: Numba types read-only arrays apart, and a
    read-only input (a memmap, a broadcast) would cost a compile of its own."""
    return a if a.flags.writeable else a.copy()


class NetTrainer:
    """A net training: cache-line-aligned working weights (second layer as W2T (K, H)) and workspace.

    With one slot the serial loop runs; with more the parallel loop, on as
    many threads as :class:`~fastspiral.numba_backend.threads.ThreadChooser` picks for each
    run (the result does not depend on it).
    """

    def __init__(self, problem: Problem):
        p = problem
        self.X, self.y = _writeable(p.X), _writeable(p.y)
        self.W1, self.b1, self.b2 = (
            aligned_copy(p.params["W1"]),
            aligned_copy(p.params["b1"]),
            aligned_copy(p.params["b2"]),
        )
        self.W2T = aligned_copy(p.params["W2"].T)
        self.step, self.reg = p.dtype.type(p.step_size), p.dtype.type(p.reg)
        N, D, H, K = p.n_samples, p.n_features, p.n_hidden, p.n_classes
        parallel = n_slots(N, H) > 1 and threads_allowed()
        most = usable_threads() if parallel else 1
        self.ws = net_workspace(N, D, H, K, p.dtype, most)
        self.parallel = parallel
        # one worker unless parallel; shared with earlier trainings of this shape in the process
        self.chooser = shared_chooser((N, D, H, K, p.dtype.name), self.ws.n_workers)
        shape = "any" if is_general((self.ws.dtok, self.ws.ktok)) else (D, K)
        self._key = ("net", p.dtype.name, shape, parallel)
        self._kernels = None

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        args = (self.X, self.y, self.W1, self.b1, self.W2T, self.b2, self.step, self.reg, history)
        with first_call(self._key):
            if self._kernels is None:
                self._kernels = loops.net_kernels(*args[:6], self.ws)
            if not self.parallel:
                return loops.train_net_serial(*args, start, stop, self.ws, self._kernels)
            it = start
            while it < stop:
                threads, n, timed = self.chooser.next(stop - it)
                t0 = time.perf_counter()
                with parallel_section(threads):
                    bad = loops.train_net_parallel(
                        *args, it, it + n, threads, self.ws, self._kernels
                    )
                self.chooser.record(threads, n, time.perf_counter() - t0, timed)
                if bad >= 0:
                    return bad
                it += n
            return -1

    def params(self) -> dict[str, np.ndarray]:
        return {
            "W1": self.W1.copy(),
            "b1": self.b1.copy(),
            "W2": np.ascontiguousarray(self.W2T.T),
            "b2": self.b2.copy(),
        }

    def views(self) -> dict[str, np.ndarray]:
        return {
            "W1": read_only(self.W1),
            "b1": read_only(self.b1),
            "W2": read_only(self.W2T.T),
            "b2": read_only(self.b2),
        }


class LinearTrainer:
    """A linear training: working WT (K, D), b and the workspace; one thread."""

    def __init__(self, problem: Problem):
        p = problem
        self.X, self.y = _writeable(p.X), _writeable(p.y)
        self.WT, self.b = aligned_copy(p.params["W"].T), aligned_copy(p.params["b"])
        self.step, self.reg = p.dtype.type(p.step_size), p.dtype.type(p.reg)
        self.ws = linear_workspace(p.n_samples, p.n_features, p.n_classes, p.dtype)
        self._key = ("linear", p.dtype.name, len(self.ws.ktok) or "any")

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        with first_call(self._key):
            return loops.train_linear_steps(
                self.X, self.y, self.WT, self.b, self.step, self.reg, history, start, stop, self.ws
            )

    def params(self) -> dict[str, np.ndarray]:
        return {"W": np.ascontiguousarray(self.WT.T), "b": self.b.copy()}

    def views(self) -> dict[str, np.ndarray]:
        return {"W": read_only(self.WT.T), "b": read_only(self.b)}


def prepare(problem: Problem) -> NetTrainer | LinearTrainer:
    """A trainer for ``problem`` (see :mod:`fastspiral.backends`)."""
    return NetTrainer(problem) if problem.model == "net" else LinearTrainer(problem)


def workspace_bytes(
    model: str, n_samples: int, n_features: int, n_hidden: int, n_classes: int, dtype
) -> int:
    """Bytes of the work arrays: cache-sized tiles and per-slot gradients, never N * H."""
    if model == "linear":
        return buffer_bytes(linear_workspace(n_samples, n_features, n_classes, dtype))
    return buffer_bytes(
        net_workspace(n_samples, n_features, n_hidden, n_classes, dtype, usable_threads())
    )
