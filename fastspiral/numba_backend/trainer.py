"""The ``"numba"`` backend's trainers: they run the compiled loops of
:mod:`~fastspiral.numba_backend.loops` (the contract: :mod:`fastspiral.backends`)."""

from __future__ import annotations

import time

import numpy as np

from .._problem import Problem, read_only
from . import loops
from .cache import first_call
from .threads import parallel_section, shared_chooser, threads_allowed, usable_threads
from .tiles import is_general
from .update import gd_optimizer
from .workspace import (
    linear_layout,
    linear_workspace,
    linear_workspace_bytes,
    n_slots,
    net_layout,
    net_workspace,
    net_workspace_bytes,
    new_linear_params,
    new_net_params,
)


def _writeable(a: np.ndarray) -> np.ndarray:
    """``a``, or a copy if it is read-only: Numba types read-only arrays apart, and a
    read-only input (a memmap, a broadcast) would cost a compile of its own."""
    return a if a.flags.writeable else a.copy()


class NetTrainer:
    """A net training: the flat parameter vector and its views, the update rule's numbers, the workspace.

    With one slot the serial loop runs; with more the parallel loop, on as
    many threads as :class:`~fastspiral.numba_backend.threads.ThreadChooser`
    picks for each run (the result does not depend on it).
    """

    def __init__(self, problem: Problem):
        pr = problem
        self.X, self.y = _writeable(pr.X), _writeable(pr.y)
        N, D, H, K = pr.n_samples, pr.n_features, pr.n_hidden, pr.n_classes
        self.p = new_net_params(pr.params, pr.dtype)
        n_weights = net_layout(D, H, K, pr.dtype.itemsize)[1]
        self.opt = gd_optimizer(pr.step_size, pr.reg, self.p.flat.size, n_weights, pr.dtype)
        parallel = n_slots(N, H) > 1 and threads_allowed()
        self.ws = net_workspace(N, D, H, K, pr.dtype, usable_threads() if parallel else 1)
        self.parallel = parallel
        # one worker unless parallel; shared with earlier trainings of this shape in the process
        self.chooser = shared_chooser((N, D, H, K, pr.dtype.name), self.ws.n_workers)
        shape = "any" if is_general((self.ws.d_token, self.ws.k_token)) else (D, K)
        self._key = ("net", pr.dtype.name, shape, parallel)
        self._kernels = None

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        args = (self.X, self.y, self.p, self.opt, history)
        with first_call(self._key):
            if self._kernels is None:
                self._kernels = loops.net_kernels(self.X, self.y, self.p, self.opt, self.ws)
            if not self.parallel:
                return loops.train_net_serial(self._kernels, *args, start, stop, self.ws)
            it = start
            while it < stop:
                threads, n, timed = self.chooser.next(stop - it)
                t0 = time.perf_counter()
                with parallel_section(threads):
                    bad = loops.train_net_parallel(
                        self._kernels, *args, it, it + n, threads, self.ws
                    )
                self.chooser.record(threads, n, time.perf_counter() - t0, timed)
                if bad >= 0:
                    return bad
                it += n
            return -1

    def params(self) -> dict[str, np.ndarray]:
        p = self.p
        return {
            "W1": p.W1.copy(),
            "b1": p.b1.copy(),
            "W2": np.ascontiguousarray(p.W2T.T),
            "b2": p.b2.copy(),
        }

    def views(self) -> dict[str, np.ndarray]:
        p = self.p
        return {
            "W1": read_only(p.W1),
            "b1": read_only(p.b1),
            "W2": read_only(p.W2T.T),
            "b2": read_only(p.b2),
        }


class LinearTrainer:
    """A linear training: the flat parameter vector [WT | b] and its views, the workspace; one thread."""

    def __init__(self, problem: Problem):
        pr = problem
        self.X, self.y = _writeable(pr.X), _writeable(pr.y)
        self.p = new_linear_params(pr.params, pr.dtype)
        n_weights = linear_layout(pr.n_features, pr.n_classes, pr.dtype.itemsize)[0]
        self.opt = gd_optimizer(pr.step_size, pr.reg, self.p.flat.size, n_weights, pr.dtype)
        self.ws = linear_workspace(pr.n_samples, pr.n_features, pr.n_classes, pr.dtype)
        self._key = ("linear", pr.dtype.name, len(self.ws.k_token) or "any")

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        with first_call(self._key):
            update = loops.linear_kernels(self.p, self.opt, self.ws)
            return loops.train_linear_steps(
                update, self.X, self.y, self.p, self.opt, history, start, stop, self.ws
            )

    def params(self) -> dict[str, np.ndarray]:
        return {"W": np.ascontiguousarray(self.p.WT.T), "b": self.p.b.copy()}

    def views(self) -> dict[str, np.ndarray]:
        return {"W": read_only(self.p.WT.T), "b": read_only(self.p.b)}


def prepare(problem: Problem) -> NetTrainer | LinearTrainer:
    """A trainer for ``problem`` (see :mod:`fastspiral.backends`)."""
    return NetTrainer(problem) if problem.model == "net" else LinearTrainer(problem)


def workspace_bytes(
    model: str, n_samples: int, n_features: int, n_hidden: int, n_classes: int, dtype
) -> int:
    """Bytes of the work arrays (cache-sized tiles and per-slot gradients, never N * H), computed
    without allocating them."""
    if model == "linear":
        return linear_workspace_bytes(n_samples, n_features, n_classes, dtype)
    return net_workspace_bytes(n_samples, n_features, n_hidden, n_classes, dtype, usable_threads())
