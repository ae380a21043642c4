"""What a backend is given and hands back: a validated training set-up, and read-only views.

:func:`net_problem` and :func:`linear_problem` validate and normalise their
arguments once (errors name the argument) and draw or copy the initial
parameters; a backend then prepares a trainer from the :class:`Problem`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._plan import Plan, make_plan
from ._validation import (
    check_dtype,
    check_fits,
    check_float,
    check_int,
    check_memory,
    check_real_dtype,
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
    W1, b1, W2, b2 or W, b). All of them are the problem's own: never the
    caller's arrays, which may change while a training runs. Trainers copy
    what they change.
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
    source: Mapping | None, shapes: dict[str, tuple[int, ...]], dtype: np.dtype, rng: Any
) -> dict[str, np.ndarray]:
    """Copies of ``source`` (shape-checked), or the case study's ``0.01 * randn`` start.

    Drawn in float64 from :func:`fastspiral.data.random_source`, so a seed
    gives the same start on every backend and in both precisions.
    """
    params = {}
    if source is None:
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
        # complex would lose its imaginary part in the cast, silently; a duration's NaT is -2**63
        check_real_dtype(value.dtype, f"init[{name!r}]", kinds="iuf")
        if not np.isfinite(value).all():
            raise ValueError(f"init[{name!r}] must hold finite numbers")
        if np.abs(value).max(initial=0) > np.finfo(dtype).max:
            raise ValueError(f"init[{name!r}] holds values too large for {dtype.name}")
        params[name] = np.array(value, dtype=dtype, order="C", copy=True)
    return params


def _n_classes(y: np.ndarray, source: Mapping | None, key: str) -> int:
    """K: ``max(y) + 1``, or the width of init's ``key`` (D, K) matrix (the labels must fit)."""
    k_data = int(y.max()) + 1
    if source is None:
        return k_data
    k_init = _init_dim(source, key, 1)
    if k_data > k_init:
        raise ValueError(f"y holds label {k_data - 1} but init has only {k_init} classes")
    return k_init


def _warn_empty_classes(y: np.ndarray, K: int) -> None:
    """Warn once if labels 0..K-1 leave classes without a label.

    Legal (K is ``max(y) + 1``, and each class gets a column of scores), but
    most often a mistake: labels 1..3 leave class 0 empty, 0, 10, 20 make 21
    classes (tests/test_validation.py::test_labels_that_leave_classes_empty_warn_once).
    Found by counting where K <= N (O(N)), else from the sorted labels: never
    an array of a huge K's entries.
    """
    present = np.flatnonzero(np.bincount(y, minlength=K)) if K <= y.size else np.unique(y)
    if present.size == K:
        return
    starts, stops = np.concatenate(([0], present + 1)), np.concatenate((present, [K]))
    gaps = [(a, b - 1) for a, b in zip(starts.tolist(), stops.tolist()) if b > a]
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in gaps[:10])
    warnings.warn(
        f"y leaves {K - present.size:,} of its {K:,} classes without a label "
        f"(class {shown}{', ...' if len(gaps) > 10 else ''}): K is max(y) + 1 = {K:,}, and each "
        "class below the largest label gets a column of scores; relabel y as 0..K-1 "
        "(np.unique(y, return_inverse=True)) to drop them",
        UserWarning,
        stacklevel=4,
    )


def _check_param_memory(
    shapes: dict[str, tuple[int, ...]], dtype: np.dtype, source: Mapping | None
) -> None:
    """ValueError naming what makes the parameters too large for memory, before they are drawn.

    Counted as stored in ``dtype`` plus drawn in float64: a stray label of
    10**8 makes K = 10**8 + 1 and W2 alone 80 GB at H = 100
    (tests/test_validation.py::test_sizes_too_large_for_memory).
    """
    # Python ints, not np.prod's int64: hidden=10**30 is legal input until here
    n = sum(math.prod(shape) for shape in shapes.values())
    D, K = shapes["W1" if "W1" in shapes else "W"][0], shapes["b2" if "b2" in shapes else "b"][0]
    H = shapes["b1"][0] if "b1" in shapes else 0
    if source is not None:
        why = f"init's parameters (D={D:,}, H={H:,}, K={K:,})"
    elif K >= max(D, H):
        why = f"y holds the label {K - 1:,}, so K = max(y) + 1 = {K:,} classes, and the parameters"
    elif H >= D:
        why = f"hidden={H:,} makes parameters that"
    else:
        why = f"X's {D:,} features make parameters that"
    check_memory(n * (dtype.itemsize + 8), f"{why} need")


def _common(X, y, step_size, reg, dtype, seed):
    dt = check_dtype(dtype)
    rng = random_source(seed)  # checked even where init makes it unused
    step_size = check_fits(check_float(step_size, "step_size", positive=True), "step_size", dt)
    reg = check_fits(check_float(reg, "reg"), "reg", dt)
    X = check_X(X, dt, copy=True)
    y = check_y(y, X.shape[0], copy=True)
    return dt, X, y, step_size, reg, rng


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
    optimizer: Any = "gd",
    schedule: Any = None,
    batch_size: Any = None,
) -> Problem:
    """The set-up of :func:`fastspiral.train_net` (same arguments, same checks)."""
    dt, X, y, step_size, reg, rng = _common(X, y, step_size, reg, dtype, seed)
    source = _init_source(init)
    if source is None:
        H = 100 if hidden is None else check_int(hidden, "hidden", minimum=1)
    else:
        H = _init_dim(source, "W1", 1)
        if hidden is not None and check_int(hidden, "hidden", minimum=1) != H:
            raise ValueError(f"hidden={hidden} but init has {H} hidden units")
    K = _n_classes(y, source, "W2")
    shapes = SHAPES["net"](X.shape[1], H, K)
    _check_param_memory(shapes, dt, source)
    params = _init_params(source, shapes, dt, rng)
    if source is None:
        _warn_empty_classes(y, K)
    plan = make_plan(optimizer, schedule, batch_size, X.shape[0], init, rng)
    return Problem("net", X, y, params, step_size, reg, plan)


def linear_problem(
    X: Any,
    y: Any,
    *,
    step_size: float = 1.0,
    reg: float = 1e-3,
    seed: Any = None,
    init: Any = None,
    dtype: Any = "float64",
    optimizer: Any = "gd",
    schedule: Any = None,
    batch_size: Any = None,
) -> Problem:
    """The set-up of :func:`fastspiral.train_linear` (same arguments, same checks)."""
    dt, X, y, step_size, reg, rng = _common(X, y, step_size, reg, dtype, seed)
    source = _init_source(init)
    K = _n_classes(y, source, "W")
    shapes = SHAPES["linear"](X.shape[1], 0, K)
    _check_param_memory(shapes, dt, source)
    params = _init_params(source, shapes, dt, rng)
    if source is None:
        _warn_empty_classes(y, K)
    plan = make_plan(optimizer, schedule, batch_size, X.shape[0], init, rng)
    return Problem("linear", X, y, params, step_size, reg, plan)


def read_only(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` that cannot be written through (``a`` itself stays writeable)."""
    view = a.view()
    view.flags.writeable = False
    return view
