"""What a sweep can time: fastspiral's own backends, and PyTorch and JAX where they are installed.

Each entry of :data:`SWEEP_BACKENDS` says how to train the case study's net
on given data with one implementation, timing its loop from the inside
(:class:`Trained`), so that a sweep draws fastspiral and its peers on the
same axes. The peers are not dependencies: a sweep refuses one that is not
installed before any work, and the tests skip them.

Every implementation trains the same model from the same initial weights
(fastspiral's for the seed), full-batch gradient descent with the case
study's step size and regularisation, and records the loss every
iteration, as fastspiral does (tests/test_scaling.py::test_peers_train_the_same_model).
fastspiral's own backends also take the training lab's update rules,
mini-batches and step sizes (``lab``); the peers time the case study's
update only, and a sweep records their other configurations as skipped
(tests/test_scaling.py::test_peers_skip_what_they_cannot_train):

* ``torch``: eager tensor operations with the gradients written out (no
  autograd graph), on ``torch.set_num_threads`` threads;
* ``jax``: the whole loop jitted (``lax.fori_loop`` with the iteration
  count as an argument, compiled once before timing), its process pinned to
  as many CPUs as the configuration has threads.

These are the loops of benchmarks/test_alternatives.py, with the dtype and
the iteration count as arguments; the benchmark calls them
(:func:`torch_steps`, the jitted loop of ``_jax_compiled``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

#: The case study's step size and regularisation: the peers train with them, and a sweep with
#: them unless given another ``step_size`` (the regularisation is always this one).
STEP, REG = 1.0, 1e-3


class Trained(NamedTuple):
    """One timed training: its loop's seconds (set-up excluded), final loss and fitted model."""

    loop_seconds: float
    final_loss: float
    model: Any  # has .score(X, y)


@dataclass(frozen=True)
class SweepBackend:
    """One implementation a sweep can time.

    ``train(X, y, hidden=, seed=, dtype=, iters=, max_iters=)`` trains from
    scratch (all its own set-up included) and returns :class:`Trained`;
    ``max_iters`` is the longest training the process will ask for (JAX
    compiles for it once). ``warm_up`` takes the same arguments and makes
    later calls run warm (compiled, loaded). ``limit_threads(n)`` is called
    once, before anything else in the process, with the threads the
    configuration may use. ``workspace_bytes(N, D, H, K, dtype)`` estimates
    the memory of the work arrays, without allocating them. ``module`` is
    the import that must be found for the backend to be available (None:
    always). ``lab``: whether ``train`` and ``warm_up`` also take
    ``optimizer`` (a name or rule of :mod:`fastspiral.optim`), ``batch_size``
    (None or an int) and ``step_size``, as :func:`fastspiral.train_net`
    does; without it a backend times only full-batch "gd" at :data:`STEP`.
    """

    name: str
    description: str
    train: Callable[..., Trained]
    warm_up: Callable[..., None]
    limit_threads: Callable[[int], None]
    workspace_bytes: Callable[[int, int, int, int, str], int]
    module: str | None = None
    lab: bool = False

    def available(self) -> bool:
        """Whether this backend can run here (its library is installed); nothing is imported."""
        return self.module is None or importlib.util.find_spec(self.module) is not None


# -- fastspiral's own backends ----------------------------------------------------------------


def _fastspiral_train(name: str) -> Callable[..., Trained]:
    def train(X, y, *, hidden, seed, dtype, iters, max_iters=None, optimizer="gd",
              batch_size=None, step_size=STEP) -> Trained:  # fmt: skip
        from ..train import train_net

        marks: list[float] = []

        # Called before the first iteration and after the last, between the compiled chunks:
        # the loop's own time, without the validation before it and the checks after it.
        def mark(*_):
            marks.append(time.perf_counter())

        net = train_net(
            X,
            y,
            hidden=hidden,
            seed=seed,
            backend=name,
            dtype=dtype,
            iters=iters,
            callback=mark,
            callback_every=iters,
            optimizer=optimizer,
            batch_size=batch_size,
            step_size=step_size,
            reg=REG,
        )
        return Trained(marks[-1] - marks[0], net.final_loss, net)

    return train


def _fastspiral_warm_up(name: str) -> Callable[..., None]:
    def warm_up(X, y, *, hidden, seed, dtype, iters, max_iters=None, optimizer="gd",
                batch_size=None, step_size=STEP) -> None:  # fmt: skip
        """Compile (or load from the cache) on a tiny problem of the same types, so that neither
        compilation nor heap blocks freed by a full-size warm-up hide the memory the timed runs
        allocate. It has as many slots as the timed runs have, up to two: one slot and several
        run different compiled loops."""
        from ..data import make_spiral
        from ..numba_backend.workspace import n_slots
        from ..train import train_net

        n_per_class = X.shape[0] // 3
        slots = min(n_slots(X.shape[0], hidden), 2)
        n_warm = 2
        while n_warm < n_per_class and n_slots(3 * n_warm, hidden) < slots:
            n_warm *= 2
        Xw, yw = make_spiral(min(n_warm, n_per_class), 3, seed=seed)
        batch = None if batch_size is None else min(batch_size, Xw.shape[0])
        train_net(Xw, yw, iters=1, hidden=hidden, seed=seed, backend=name, dtype=dtype,
                  optimizer=optimizer, batch_size=batch, step_size=step_size)  # fmt: skip

    return warm_up


def _fastspiral_threads(n: int) -> None:
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(n)
    threadpool_limits(n)


def _fastspiral_workspace(name: str) -> Callable[[int, int, int, int, str], int]:
    def workspace_bytes(N, D, H, K, dtype) -> int:
        from ..backends import BACKENDS

        return BACKENDS[name].workspace_bytes("net", N, D, H, K, dtype)

    return workspace_bytes


# -- shared by the peers ----------------------------------------------------------------------


def initial_params(X, y, hidden: int, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """fastspiral's initial weights for this seed (what train_net starts from), in ``dtype``."""
    from .._problem import net_problem

    return net_problem(X, y, hidden=hidden, seed=seed, dtype=dtype).params


def _model(params: dict[str, np.ndarray], history: np.ndarray):
    from ..model import NetModel

    return NetModel({k: np.asarray(v) for k, v in params.items()}, np.asarray(history, float))


def _peer_workspace(N, D, H, K, dtype) -> int:
    """The (N, H) hidden layer, its gradient and mask, and the (N, K) scores: NumPy's figure."""
    item = np.dtype(dtype).itemsize
    return N * H * (2 * item + 1) + 4 * N * K * item + N * K * item


# -- PyTorch ----------------------------------------------------------------------------------


def _torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    _fastspiral_threads(n)


def torch_steps(X, y, params, history) -> None:
    """``history.numel()`` full-batch gradient-descent updates of ``params`` (W1, b1, W2, b2
    tensors, in place), each iteration's loss into ``history``: eager operations, the
    gradients written out (no autograd graph). benchmarks/test_alternatives.py times it too."""
    import torch

    W1, b1, W2, b2 = params
    rows = torch.arange(X.shape[0])
    n = X.shape[0]
    with torch.no_grad():
        for i in range(history.numel()):
            hidden_ = torch.clamp_min(X @ W1 + b1, 0.0)
            scores = hidden_ @ W2 + b2
            logp = torch.log_softmax(scores, dim=1)
            history[i] = -logp[rows, y].mean() + 0.5 * REG * ((W1 * W1).sum() + (W2 * W2).sum())
            dscores = logp.exp_()
            dscores[rows, y] -= 1
            dscores /= n
            dW2 = hidden_.T @ dscores + REG * W2
            dhidden = (dscores @ W2.T) * (hidden_ > 0)
            dW1 = X.T @ dhidden + REG * W1
            W1.sub_(STEP * dW1)
            b1.sub_(STEP * dhidden.sum(0))
            W2.sub_(STEP * dW2)
            b2.sub_(STEP * dscores.sum(0))


def _torch_train(X, y, *, hidden, seed, dtype, iters, max_iters=None) -> Trained:
    import torch

    p = initial_params(X, y, hidden, seed, dtype)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=dtype))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    W1, b1, W2, b2 = (torch.from_numpy(p[k].copy()) for k in ("W1", "b1", "W2", "b2"))
    history = torch.empty(iters, dtype=torch.float64)
    t0 = time.perf_counter()
    torch_steps(Xt, yt, (W1, b1, W2, b2), history)
    loop = time.perf_counter() - t0
    params = {"W1": W1.numpy(), "b1": b1.numpy(), "W2": W2.numpy(), "b2": b2.numpy()}
    h = history.numpy()
    return Trained(loop, float(h[-1]), _model(params, h))


def _torch_warm_up(X, y, *, hidden, seed, dtype, iters, max_iters=None) -> None:
    _torch_train(X[:30], y[:30], hidden=hidden, seed=seed, dtype=dtype, iters=2)


# -- JAX --------------------------------------------------------------------------------------

_JAX_COMPILED: dict[tuple, Any] = {}


def _jax_threads(n: int) -> None:
    """Pin this process to ``n`` of its CPUs (XLA sizes its pools by the CPUs it may use),
    before JAX is imported."""
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if n < len(cpus):
            os.sched_setaffinity(0, cpus[:n])
    elif n < (os.cpu_count() or 1):
        raise RuntimeError("cannot limit JAX's threads on this platform (no sched_setaffinity)")
    _fastspiral_threads(n)


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 runs; float32 arrays stay float32
    import jax.numpy as jnp

    return jax, jnp


def _jax_compiled(N: int, D: int, H: int, K: int, dtype: str, max_iters: int):
    """The jitted loop for these shapes, compiled ahead of time (once per process)."""
    key = (N, D, H, K, dtype, max_iters)
    if key in _JAX_COMPILED:
        return _JAX_COMPILED[key]
    jax, jnp = _jax()

    def train(params, X, onehot, n_iters):
        n = X.shape[0]

        def step(i, carry):
            (W1, b1, W2, b2), history = carry
            hidden_ = jnp.maximum(X @ W1 + b1, 0.0)
            scores = hidden_ @ W2 + b2
            shifted = scores - scores.max(axis=1, keepdims=True)
            logsum = jnp.log(jnp.exp(shifted).sum(axis=1, keepdims=True))
            loss = -(onehot * (shifted - logsum)).sum() / n + 0.5 * REG * (
                (W1 * W1).sum() + (W2 * W2).sum()
            )
            dscores = (jnp.exp(shifted - logsum) - onehot) / n
            dW2 = hidden_.T @ dscores + REG * W2
            dhidden = jnp.where(hidden_ > 0, dscores @ W2.T, 0.0)
            dW1 = X.T @ dhidden + REG * W1
            new = (
                W1 - STEP * dW1,
                b1 - STEP * dhidden.sum(0),
                W2 - STEP * dW2,
                b2 - STEP * dscores.sum(0),
            )
            return new, history.at[i].set(loss.astype(jnp.float64))

        return jax.lax.fori_loop(0, n_iters, step, (params, jnp.zeros(max_iters, jnp.float64)))

    dt = jnp.dtype(dtype)
    spec = jax.ShapeDtypeStruct
    shapes = (
        (spec((D, H), dt), spec((H,), dt), spec((H, K), dt), spec((K,), dt)),
        spec((N, D), dt),
        spec((N, K), dt),
        spec((), jnp.int32),
    )
    compiled = jax.jit(train).lower(*shapes).compile()
    _JAX_COMPILED[key] = compiled
    return compiled


def _jax_train(X, y, *, hidden, seed, dtype, iters, max_iters=None) -> Trained:
    jax, jnp = _jax()
    p = initial_params(X, y, hidden, seed, dtype)
    N, D = X.shape
    K = p["b2"].size
    compiled = _jax_compiled(N, D, hidden, K, dtype, max(max_iters or iters, iters))
    Xj = jnp.asarray(np.ascontiguousarray(X, dtype=dtype))
    onehot = jax.nn.one_hot(jnp.asarray(y), K, dtype=jnp.dtype(dtype))
    params = tuple(jnp.asarray(p[k]) for k in ("W1", "b1", "W2", "b2"))
    jax.block_until_ready((Xj, onehot, params))
    t0 = time.perf_counter()
    params, history = compiled(params, Xj, onehot, jnp.int32(iters))
    history = jax.block_until_ready(history)
    loop = time.perf_counter() - t0
    out = dict(zip(("W1", "b1", "W2", "b2"), (np.asarray(v) for v in params)))
    h = np.asarray(history)[:iters]
    return Trained(loop, float(h[-1]), _model(out, h))


def _jax_warm_up(X, y, *, hidden, seed, dtype, iters, max_iters=None) -> None:
    K = int(np.max(y)) + 1
    _jax_compiled(X.shape[0], X.shape[1], hidden, K, dtype, max(max_iters or iters, iters))


# -- the registry -----------------------------------------------------------------------------


def _registry() -> dict[str, SweepBackend]:
    from ..backends import BACKENDS

    own = {
        name: SweepBackend(
            name,
            backend.description,
            _fastspiral_train(name),
            _fastspiral_warm_up(name),
            _fastspiral_threads,
            _fastspiral_workspace(name),
            lab=True,
        )
        for name, backend in BACKENDS.items()
    }
    peers = {
        "torch": SweepBackend(
            "torch",
            "PyTorch, eager, gradients written out",
            _torch_train,
            _torch_warm_up,
            _torch_threads,
            _peer_workspace,
            module="torch",
        ),
        "jax": SweepBackend(
            "jax",
            "JAX, the whole loop jitted",
            _jax_train,
            _jax_warm_up,
            _jax_threads,
            _peer_workspace,
            module="jax",
        ),
    }
    return {**own, **peers}


#: Name -> what a sweep can time: fastspiral's backends (:data:`fastspiral.backends.BACKENDS`),
#: then the peers.
SWEEP_BACKENDS: dict[str, SweepBackend] = _registry()
