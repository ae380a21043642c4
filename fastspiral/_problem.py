"""What a backend is given and hands back: a validated training set-up, and read-only views.

:func:`net_problem` and :func:`linear_problem` validate and normalise their
arguments once (errors name the argument) and draw or copy the initial
parameters; a backend then prepares a trainer from the :class:`Problem`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._plan import Plan
from ._validation import (
    check_dtype,
    check_fits,
    check_float,
    check_int,
    check_X,
    check_y,
)
from .data import random_source

#: The parameter names and shapes of each model, from (D, H, K).
SHAPES = {
    "net": lambda D, H, K: {"W1": (D, H), "b1": (H,), "W2": (H, K), "b2": (K,)},
    "linear": lambda D, H, K: {"W": (D, K), "b": (K,)},
}


@dataclass(frozen=True)
class Problem:
    """A validated training set-up: data, initial parameters and hyperparameters.

    ``X`` (N, D) C-contiguous in the training dtype, ``y`` (N,) int64,
    ``params`` fresh C-contiguous arrays of that dtype (the model's names:
    W1, b1, W2, b2 or W, b). Trainers copy what they change.
    """

    model: str
    X: np.ndarray
    y: np.ndarray
    params: dict[str, np.ndarray]
    step_size: float
    reg: float
    #: The update rule, its schedule and state, the batches (fastspiral._plan).
    plan: Plan = field(default_factory=Plan)

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_classes(self) -> int:
        return self.params["b2" if self.model == "net" else "b"].shape[0]

    @property
    def n_hidden(self) -> int:
        """H for the net, 0 for the linear classifier."""
        return self.params["b1"].shape[0] if self.model == "net" else 0


def _init_source(init: Any) -> Mapping | None:
    """The parameter dict behind ``init`` (a fitted model or a dict), or None."""
    if init is None:
        return None
    source = init.params if hasattr(init, "params") else init
    if not isinstance(source, Mapping):
        raise TypeError(
            f"init must be a fitted model or a dict of arrays, got {type(init).__name__}"
        )
    return source


def _init_dim(source: Mapping, key: str, axis: int) -> int:
    """Length of axis ``axis`` of the 2-D array ``source[key]``."""
    if key not in source or np.ndim(source[key]) != 2:
        raise ValueError(f"init must hold a 2-D {key!r} array (got keys {list(source)})")
    return int(np.shape(source[key])[axis])


def _init_params(
    source: Mapping | None, shapes: dict[str, tuple[int, ...]], dtype: np.dtype, seed: Any
) -> dict[str, np.ndarray]:
    """Copies of ``source`` (shape-checked), or the case study's ``0.01 * randn`` weights and zero biases.

    Drawn in float64 from :func:`fastspiral.data.random_source`, so a seed
    gives the same start on every backend and in both precisions.
    """
    params = {}
    if source is None:
        rng = random_source(seed)
        for name, shape in shapes.items():
            if len(shape) == 2:  # weight matrix
                params[name] = (0.01 * rng.standard_normal(shape)).astype(dtype)
            else:
                params[name] = np.zeros(shape, dtype)
        return params
    for name, shape in shapes.items():
        if name not in source:
            raise ValueError(f"init is missing the array {name!r} (expected keys {list(shapes)})")
        value = np.asarray(source[name])
        if value.shape != shape:
            raise ValueError(f"init[{name!r}] has shape {value.shape}, expected {shape}")
        if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
            # complex would lose its imaginary part in the cast, silently
            raise TypeError(f"init[{name!r}] must hold real numbers, got dtype {value.dtype}")
        if not np.isfinite(value).all():
            raise ValueError(f"init[{name!r}] must hold finite numbers")
        if np.abs(value).max(initial=0) > np.finfo(dtype).max:
            raise ValueError(f"init[{name!r}] holds values too large for {dtype.name}")
        params[name] = np.array(value, dtype=dtype, order="C", copy=True)
    return params


def _n_classes(y: np.ndarray, source: Mapping | None, key: str) -> int:
    """K: ``max(y) + 1``, or the width of init's ``key`` (D, K) matrix (the labels must fit in it)."""
    k_data = int(y.max()) + 1
    if source is None:
        return k_data
    k_init = _init_dim(source, key, 1)
    if k_data > k_init:
        raise ValueError(f"y holds label {k_data - 1} but init has only {k_init} classes")
    return k_init


def _common(X, y, step_size, reg, dtype):
    dt = check_dtype(dtype)
    step_size = check_fits(check_float(step_size, "step_size", positive=True), "step_size", dt)
    reg = check_fits(check_float(reg, "reg"), "reg", dt)
    X = check_X(X, dt)
    y = check_y(y, X.shape[0])
    return dt, X, y, step_size, reg


def net_problem(
    X: Any,
    y: Any,
    *,
    hidden: int | None = None,
    step_size: float = 1.0,
    reg: float = 1e-3,
    seed: Any = None,
    init: Any = None,
    dtype: Any = "float64",
) -> Problem:
    """The set-up of :func:`fastspiral.train_net` (same arguments, same checks)."""
    dt, X, y, step_size, reg = _common(X, y, step_size, reg, dtype)
    source = _init_source(init)
    if source is None:
        H = 100 if hidden is None else check_int(hidden, "hidden", minimum=1)
    else:
        H = _init_dim(source, "W1", 1)
        if hidden is not None and check_int(hidden, "hidden", minimum=1) != H:
            raise ValueError(f"hidden={hidden} but init has {H} hidden units")
    K = _n_classes(y, source, "W2")
    params = _init_params(source, SHAPES["net"](X.shape[1], H, K), dt, seed)
    return Problem("net", X, y, params, step_size, reg)


def linear_problem(
    X: Any,
    y: Any,
    *,
    step_size: float = 1.0,
    reg: float = 1e-3,
    seed: Any = None,
    init: Any = None,
    dtype: Any = "float64",
) -> Problem:
    """The set-up of :func:`fastspiral.train_linear` (same arguments, same checks)."""
    dt, X, y, step_size, reg = _common(X, y, step_size, reg, dtype)
    source = _init_source(init)
    K = _n_classes(y, source, "W")
    params = _init_params(source, SHAPES["linear"](X.shape[1], 0, K), dt, seed)
    return Problem("linear", X, y, params, step_size, reg)


def read_only(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` that cannot be written through (``a`` itself stays writeable)."""
    view = a.view()
    view.flags.writeable = False
    return view
