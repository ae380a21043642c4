"""The registry of training backends, and the contract every backend keeps.

A backend turns a ``Problem`` (``fastspiral._problem``) into a *trainer*: an
object holding that training's working parameters and buffers, with

* ``run(start, stop, history) -> int``: iterations ``start..stop-1`` in place;
  ``history[i]`` gets the loss at iteration i (of its batch, before its
  update); returns -1, or the first iteration whose loss is not finite (the
  parameters are then those from before it);
* ``compile()``: what ``run`` needs compiled or loaded, and no iteration (so
  that a first call's compile is timed apart from training);
* ``evaluate(X, y) -> (loss, accuracy)``: the mean data loss and the accuracy
  of the current parameters on held-out data (X in the training dtype);
* ``params() -> dict``: copies of the current parameters, as plain arrays with
  the model's names;
* ``views() -> dict``: the same as read-only views of the working arrays, for
  a callback between runs (no copy; valid until the next ``run``);
* ``state(done) -> dict``: where the training stands after ``done`` iterations,
  to continue from: ``{"updates", "vectors", "batches"}`` (the update rule's
  vectors by name and parameter, the batch order's state).

The problem's ``Plan`` (``fastspiral._plan``) says which update rule, schedule
and batches to use; both backends draw the same batches from it. The trainers
(``fastspiral.train``), the tests and the benchmarks all look backends up
here, so every benchmarked implementation is a tested one. Adding one (a GPU
twin, JAX) means one module with ``prepare`` and ``workspace_bytes`` and one
entry below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import numba_backend, reference
from ._problem import Problem


class Trainer(Protocol):
    def run(self, start: int, stop: int, history: np.ndarray) -> int: ...

    def compile(self) -> None: ...

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]: ...

    def params(self) -> dict[str, np.ndarray]: ...

    def views(self) -> dict[str, np.ndarray]: ...

    def state(self, done: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Backend:
    """One implementation of training: what it is called and how it prepares a trainer."""

    name: str
    #: ``prepare(problem) -> Trainer`` for ``problem.model`` "net" or "linear".
    prepare: Callable[[Problem], Trainer]
    #: ``workspace_bytes(model, N, D, H, K, dtype) -> int``: bytes of a training's work arrays.
    workspace_bytes: Callable[[str, int, int, int, int, np.dtype], int]
    description: str = ""


#: Backend name -> backend.
BACKENDS: dict[str, Backend] = {
    "numba": Backend(
        "numba",
        numba_backend.prepare,
        numba_backend.workspace_bytes,
        "compiled, fused, multi-threaded Numba kernels",
    ),
    "numpy": Backend(
        "numpy", reference.prepare, reference.workspace_bytes, "the vectorised NumPy reference"
    ),
}


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ValueError naming the choices otherwise."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]
