"""The ``"numba"`` backend's trainers: they run the compiled loops of
:mod:`~fastspiral.numba_backend.loops` (the contract: :mod:`fastspiral.backends`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._problem import Problem, read_only
from . import loops
from .cache import first_call
from .threads import parallel_section, shared_chooser, threads_allowed, usable_threads
from .tiles import is_small_shape
from .update import RULES, new_optimizer
from .workspace import (
    batch_slots,
    linear_layout,
    linear_views,
    linear_workspace,
    linear_workspace_bytes,
    n_slots,
    net_layout,
    net_views,
    net_workspace,
    net_workspace_bytes,
    new_linear_params,
    new_net_params,
)

#: A first call that has not finished after this many seconds is compiling, not loading: say so.
COMPILE_NOTICE_SECONDS = 0.5
_log = logging.getLogger("fastspiral")
_noticed = threading.Event()  # the notice is given once per process


@contextlib.contextmanager
def _first_call(key) -> Iterator[None]:
    """:func:`~fastspiral.numba_backend.cache.first_call`, and one log record (logger "fastspiral",
    INFO) if a first call takes long: a cold compile otherwise ran for seconds in silence."""
    timer = None
    if not _noticed.is_set():
        timer = threading.Timer(COMPILE_NOTICE_SECONDS, _notice, args=(key,))
        timer.daemon = True
        timer.start()
    try:
        with first_call(key):
            yield
    finally:
        if timer is not None:
            timer.cancel()


def _notice(key) -> None:
    if not _noticed.is_set():
        _noticed.set()
        _log.info(
            "compiling the training kernels (%s, %s): a few seconds, once; later processes load "
            "them from the cache (fastspiral compile fills it ahead)",
            key[0],
            key[1],
        )


def _writeable(a: np.ndarray) -> np.ndarray:
    """``a``, or a copy if it is read-only: Numba types read-only arrays apart, and a
    read-only input (a memmap, a broadcast) would cost a compile of its own."""
    return a if a.flags.writeable else a.copy()


class _Trainer:
    """What the net's and the linear classifier's trainers share: the plan's optimizer, its state
    in the parameters' layout, and the batches."""

    p: Any  # NetParams or LinearParams
    problem: Problem
    names: tuple[str, ...] = ()  # the model's parameters, in the order of params()

    def params(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _views_of(self, flat: np.ndarray) -> tuple[np.ndarray, ...]:
        """Views of a flat vector laid out as the parameters, in the order of :meth:`params`."""
        raise NotImplementedError

    def _setup(self, problem: Problem, n_weights: int, new_params) -> None:
        pr, plan = problem, problem.plan
        self.problem = pr
        self.X, self.y = _writeable(pr.X), _writeable(pr.y)
        self._new_params = new_params
        self.opt = new_optimizer(
            plan.rule, plan.schedule, pr.step_size, pr.reg, self.p.flat.size, n_weights, pr.dtype,
            plan.first_update,
        )  # fmt: skip
        for i, name in enumerate(plan.rule.state):
            if name in plan.state:  # the rule's vectors of a continued model, laid out as theta
                self.opt.state[i] = new_params(plan.state[name], pr.dtype).flat
        self._rule = RULES[plan.rule.name]
        self.data = loops.new_batches(self.X, self.y, plan.batch_size)

    def _batches(self, start: int, stop: int):
        """The data for iterations start..stop-1: with mini-batches, their epochs' draws."""
        order = self.problem.plan.batch_order
        if order is None:
            return self.data
        first = self.opt.first_update
        draws, first_epoch = order.draws(first + start, first + stop)
        return self.data._replace(draws=draws, first_epoch=first_epoch)

    def state(self, done: int) -> dict[str, Any]:
        """Where the training stands after ``done`` iterations: see :mod:`fastspiral.backends`."""
        plan = self.problem.plan
        names = self.names
        vectors = {}
        for i, vec in enumerate(plan.rule.state):
            views = self._views_of(self.opt.state[i].copy())
            vectors[vec] = {k: np.ascontiguousarray(v) for k, v in zip(names, views)}
        updates = self.opt.first_update + done
        order = plan.batch_order
        return {
            "updates": updates,
            "vectors": vectors,
            "batches": None if order is None else order.state(updates),
        }


class NetTrainer(_Trainer):
    """A net training: the flat parameters and their views, the rule's numbers, the workspace.

    With one slot the serial loop runs; with more the parallel loop, on as
    many threads as :class:`~fastspiral.numba_backend.threads.ThreadChooser`
    picks for each run (the result does not depend on it). With mini-batches
    the slots split each batch, so their number follows the batch size.
    """

    names = ("W1", "b1", "W2", "b2")

    def __init__(self, problem: Problem):
        pr = problem
        N, D, H, K = pr.n_samples, pr.n_features, pr.n_hidden, pr.n_classes
        self.p = new_net_params(pr.params, pr.dtype)
        self._setup(pr, net_layout(D, H, K, pr.dtype).b1, new_net_params)
        B = pr.plan.batch_size
        rows = B or N  # rows per update
        slots = n_slots(N, H) if B is None else batch_slots(B, D, H, K)
        parallel = slots > 1 and threads_allowed()
        threads = usable_threads() if parallel else 1
        self.ws = net_workspace(rows, D, H, K, pr.dtype, threads, batches=B is not None)
        self.parallel = parallel
        # one worker unless parallel; shared with earlier trainings of this shape in the process
        self.chooser = shared_chooser((rows, D, H, K, pr.dtype.name), self.ws.n_workers)
        shape = (D, K) if is_small_shape(D, K) else "any"
        self._key = ("net", pr.dtype.name, shape, parallel, pr.plan.rule.name)
        self._kernels: loops.NetKernels | None = None

    def _views_of(self, flat):
        v = net_views(flat, self.ws.layout)
        return v.W1, v.b1, v.W2T.T, v.b2

    def _kernel_pointers(self) -> loops.NetKernels:
        """The kernels the loops call by address (built at the first call, under its lock)."""
        if self._kernels is None:
            self._kernels = loops.net_kernels(self.X, self.y, self.p, self.opt, self.ws, self._rule)
        return self._kernels

    def compile(self) -> None:
        """Compile (or load from the cache) every kernel :meth:`run` calls, running no iteration."""
        self.run(0, 0, np.empty(0))

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        data = self._batches(start, stop)
        args = (data, self.p, self.opt, history)
        with _first_call(self._key):
            kernels = self._kernel_pointers()
            if not self.parallel:
                return loops.train_net_serial(kernels, *args, start, stop, self.ws)
            if start == stop:  # compile only
                return loops.train_net_parallel(kernels, *args, start, stop, 1, self.ws)
            it = start
            while it < stop:
                threads, n, timed = self.chooser.next(stop - it)
                t0 = time.perf_counter()
                with parallel_section(threads):
                    bad = loops.train_net_parallel(kernels, *args, it, it + n, threads, self.ws)
                self.chooser.record(threads, n, time.perf_counter() - t0, timed)
                if bad >= 0:
                    return bad
                it += n
            return -1

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(loss, accuracy)`` of the current parameters on (X, y): the mean data loss (no L2)."""
        with _first_call((*self._key, "evaluate")):
            kernels = self._kernel_pointers()
            loss, correct = loops.net_evaluate(
                kernels, _writeable(X), _writeable(y), self.p, self.ws
            )
        return float(loss), correct / X.shape[0]

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


class LinearTrainer(_Trainer):
    """A linear training: the flat parameters [WT | b], their views, the workspace; one thread."""

    names = ("W", "b")

    def __init__(self, problem: Problem):
        pr = problem
        self.p = new_linear_params(pr.params, pr.dtype)
        self._setup(pr, linear_layout(pr.n_features, pr.n_classes, pr.dtype).b, new_linear_params)
        rows = pr.plan.batch_size or pr.n_samples
        self.ws = linear_workspace(rows, pr.n_features, pr.n_classes, pr.dtype)
        self._key = ("linear", pr.dtype.name, len(self.ws.k_token) or "any", pr.plan.rule.name)

    def _views_of(self, flat):
        v = linear_views(flat, self.ws.layout)
        return v.WT.T, v.b

    def compile(self) -> None:
        """Compile (or load from the cache) every kernel :meth:`run` calls, running no iteration."""
        self.run(0, 0, np.empty(0))

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        data = self._batches(start, stop)
        with _first_call(self._key):
            update = loops.linear_kernels(self.p, self.opt, self.ws, self._rule)
            return loops.train_linear_steps(
                update, data, self.p, self.opt, history, start, stop, self.ws
            )

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        with _first_call((*self._key, "evaluate")):
            loss, correct = loops.linear_evaluate(_writeable(X), _writeable(y), self.p, self.ws)
        return float(loss), correct / X.shape[0]

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
