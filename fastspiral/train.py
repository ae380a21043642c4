"""Public trainers: validate and normalise once, then hand the loop to a backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._memory import aligned_copy
from ._threads import first_call, n_threads_for, net_work, parallel_section
from ._validation import check_dtype, check_float, check_int, check_X, check_y
from .backends import get_backend
from .data import random_source
from .model import LinearModel, NetModel

#: The compiled loop runs in chunks of iterations that each take about this
#: long, then returns to Python: Ctrl-C is honoured and verbose lines appear
#: between chunks, at a cost of one call per chunk instead of one per iteration.
CHUNK_SECONDS = 0.1


def _init_source(init: Any) -> Mapping | None:
    """The parameter dict behind ``init`` (a fitted model or a dict), or None."""
    if init is None:
        return None
    source = init.params if hasattr(init, "params") else init
    if not isinstance(source, Mapping):
        raise TypeError(f"init must be a fitted model or a dict of arrays, got {type(init).__name__}")
    return source


def _init_dim(source: Mapping, key: str, axis: int) -> int:
    """Length of axis ``axis`` of the 2-D array ``source[key]``."""
    if key not in source or np.ndim(source[key]) != 2:
        raise ValueError(f"init must hold a 2-D {key!r} array (got keys {list(source)})")
    return int(np.shape(source[key])[axis])


def _init_params(source: Mapping | None, shapes: dict[str, tuple[int, ...]], dtype: np.dtype,
                 seed: Any) -> dict[str, np.ndarray]:
    """Initial parameters as fresh C-contiguous arrays of ``dtype``.

    Copies of ``source`` (shape-checked), or the case study's ``0.01 * randn``
    weights and zero biases, drawn in float64 from
    :func:`fastspiral.data.random_source` (seed), so a seed gives the same
    start on every backend and in both precisions.
    """
    if source is None:
        rng = random_source(seed)
        params = {}
        for name, shape in shapes.items():
            if len(shape) == 2:  # weight matrix
                params[name] = (0.01 * rng.standard_normal(shape)).astype(dtype)
            else:
                params[name] = np.zeros(shape, dtype)
        return params
    params = {}
    for name, shape in shapes.items():
        if name not in source:
            raise ValueError(f"init is missing the array {name!r} (expected keys {list(shapes)})")
        value = np.asarray(source[name])
        if value.shape != shape:
            raise ValueError(f"init[{name!r}] has shape {value.shape}, expected {shape}")
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise ValueError(f"init[{name!r}] must hold finite numbers")
        params[name] = np.array(value, dtype=dtype, order="C", copy=True)
    return params


def _n_classes(y: np.ndarray, source: Mapping | None, key: str) -> int:
    """K from the labels, or from the init's ``key`` (D, K) matrix (labels must fit in it)."""
    k_data = int(y.max()) + 1
    if source is None:
        return k_data
    k_init = _init_dim(source, key, 1)
    if k_data > k_init:
        raise ValueError(f"y holds label {k_data - 1} but init has only {k_init} classes")
    return k_init


def _check_common(X, y, step_size, reg, iters, backend, dtype):
    impl = get_backend(backend)
    dt = check_dtype(dtype)
    step_size = check_float(step_size, "step_size", positive=True)
    reg = check_float(reg, "reg")
    iters = check_int(iters, "iters", minimum=0)
    X = check_X(X, dt)
    y = check_y(y, X.shape[0])
    return impl, dt, X, y, step_size, reg, iters


def _run(steps: Callable[[int, int], int], iters: int, history: np.ndarray, every: int,
         verbose: bool, progress: bool, step_size: float, what: str) -> None:
    """Drive ``steps(start, stop)`` over ``range(iters)`` in chunks of about CHUNK_SECONDS.

    Chunks start at one iteration and double while they finish quickly. The
    case study's ``iteration %d: loss %f`` lines are printed, and the progress
    bar advanced, after each chunk; Ctrl-C raises KeyboardInterrupt between
    chunks. A non-finite loss stops the run with FloatingPointError.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iters, desc=what, unit="it", leave=True)
    try:
        start, chunk = 0, 1
        while start < iters:
            stop = min(iters, start + chunk)
            t0 = time.perf_counter()
            bad = steps(start, stop)
            elapsed = time.perf_counter() - t0
            end = stop if bad < 0 else bad
            if verbose:
                first = -(-start // every) * every
                for i in range(first, end, every):
                    print(f"iteration {i}: loss {history[i]:f}", flush=True)
            if bar is not None:
                bar.update(end - start)
                bar.set_postfix(loss=f"{history[end - 1]:.6f}" if end > start else None, refresh=False)
            if bad >= 0:
                raise FloatingPointError(
                    f"{what}: the loss became {history[bad]} at iteration {bad}; gradient descent "
                    f"diverged, try a smaller step_size (got {step_size:g})"
                )
            start = stop
            if elapsed < CHUNK_SECONDS / 2:
                chunk *= 2
            elif elapsed > 2 * CHUNK_SECONDS and chunk > 1:
                chunk //= 2
    finally:
        if bar is not None:
            bar.close()


def _seed_info(seed: Any) -> Any:
    return int(seed) if isinstance(seed, (int, np.integer)) else None


def train_net(
    X: Any,
    y: Any,
    *,
    hidden: int | None = None,
    step_size: float = 1.0,
    reg: float = 1e-3,
    iters: int = 10_000,
    seed: Any = None,
    init: Any = None,
    backend: str = "numba",
    dtype: str = "float64",
    verbose: bool = False,
    progress: bool = False,
) -> NetModel:
    """Train the case study's 2-layer ReLU net by full-batch gradient descent.

    ``scores = max(X W1 + b1, 0) W2 + b2``; the loss is the mean softmax
    cross-entropy plus ``0.5 * reg * (sum(W1**2) + sum(W2**2))`` (biases are
    not regularised), and each iteration takes ``W -= step_size * (dW + reg W)``.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Training data; any real dtype, order or stride (converted once, never modified).
    y : array_like of int, shape (N,)
        Class labels 0..K-1; K is ``max(y) + 1`` (or taken from ``init``).
    hidden : int, optional
        Hidden units H (default 100). When ``init`` is given H comes from it,
        and a different ``hidden`` is an error.
    step_size : float
        Learning rate (> 0).
    reg : float
        L2 regularisation strength (>= 0).
    iters : int
        Number of gradient-descent iterations (>= 0).
    seed : int, numpy.random.Generator, numpy.random.RandomState or None
        Seeds the ``0.01 * randn`` initial weights; same seed, same result on
        every backend. A RandomState is drawn from and advanced (see
        :func:`fastspiral.data.random_source`).
    init : NetModel or dict, optional
        Continue from these parameters (``W1, b1, W2, b2``); they are copied.
    backend : {"numba", "numpy"}
        ``"numba"``: compiled, fused, multi-threaded kernels. ``"numpy"``: the
        vectorised NumPy reference.
    dtype : {"float64", "float32"}
        Precision of the training.
    verbose : bool
        Print ``iteration %d: loss %f`` every 1000 iterations.
    progress : bool
        Show a tqdm progress bar with the current loss.

    Returns
    -------
    NetModel
        With ``params`` (W1, b1, W2, b2) and ``loss_history`` (float64, one
        entry per iteration, the loss before that iteration's update).

    Raises
    ------
    ValueError, TypeError
        For bad input, before any training.
    FloatingPointError
        If the loss stops being finite (the step size is too large).
    """
    impl, dt, X, y, step_size, reg, iters = _check_common(X, y, step_size, reg, iters, backend, dtype)
    N, D = X.shape
    source = _init_source(init)
    if source is None:
        H = 100 if hidden is None else check_int(hidden, "hidden", minimum=1)
    else:
        H = _init_dim(source, "W1", 1)
        if hidden is not None and check_int(hidden, "hidden", minimum=1) != H:
            raise ValueError(f"hidden={hidden} but init has {H} hidden units")
    K = _n_classes(y, source, "W2")
    p = _init_params(source, {"W1": (D, H), "b1": (H,), "W2": (H, K), "b2": (K,)}, dt, seed)
    # The working copies start on a cache line (see fastspiral._memory).
    W1, b1, b2 = aligned_copy(p["W1"]), aligned_copy(p["b1"]), aligned_copy(p["b2"])
    W2T = aligned_copy(p["W2"].T)
    workspace = impl.net_workspace(N, D, H, K, dt, n_threads_for(net_work(N, H)))
    slots = workspace[0].shape[0]  # the hidden tiles' thread-slot axis: 1 for numpy
    history = np.empty(iters, np.float64)
    step, lam = dt.type(step_size), dt.type(reg)
    key = ("net", backend, dt.name, D, K, slots > 1)  # one compiled loop for one thread, one for more

    def steps(start: int, stop: int) -> int:
        with parallel_section(slots), first_call(key):
            return impl.train_net_steps(X, y, W1, b1, W2T, b2, step, lam, history, start, stop,
                                        *workspace)

    _run(steps, iters, history, 1000, verbose, progress, step_size, "train_net")
    info = dict(model="net", hidden=H, step_size=step_size, reg=reg, iters=iters,
                seed=_seed_info(seed), backend=backend, dtype=dt.name)
    # Plain arrays for the model (the working copies are views of padded buffers).
    params = {"W1": W1.copy(), "b1": b1.copy(), "W2": np.ascontiguousarray(W2T.T), "b2": b2.copy()}
    return NetModel(params, history, info)


def train_linear(
    X: Any,
    y: Any,
    *,
    step_size: float = 1.0,
    reg: float = 1e-3,
    iters: int = 200,
    seed: Any = None,
    init: Any = None,
    backend: str = "numba",
    dtype: str = "float64",
    verbose: bool = False,
    progress: bool = False,
) -> LinearModel:
    """Train the case study's softmax linear classifier by full-batch gradient descent.

    ``scores = X W + b``; the loss is the mean softmax cross-entropy plus
    ``0.5 * reg * sum(W**2)``. Parameters are as for :func:`train_net`
    (without ``hidden``); ``init`` takes a LinearModel or a dict with ``W``
    (D, K) and ``b`` (K,), ``verbose`` prints every 10 iterations and
    ``progress`` shows a tqdm bar.

    Returns
    -------
    LinearModel
        With ``params`` (W, b) and ``loss_history``.
    """
    impl, dt, X, y, step_size, reg, iters = _check_common(X, y, step_size, reg, iters, backend, dtype)
    N, D = X.shape
    source = _init_source(init)
    K = _n_classes(y, source, "W")
    p = _init_params(source, {"W": (D, K), "b": (K,)}, dt, seed)
    WT, b = aligned_copy(p["W"].T), aligned_copy(p["b"])
    workspace = impl.linear_workspace(N, D, K, dt)
    history = np.empty(iters, np.float64)
    step, lam = dt.type(step_size), dt.type(reg)

    key = ("linear", backend, dt.name, D, K)

    def steps(start: int, stop: int) -> int:
        with first_call(key):
            return impl.train_linear_steps(X, y, WT, b, step, lam, history, start, stop, *workspace)

    _run(steps, iters, history, 10, verbose, progress, step_size, "train_linear")
    info = dict(model="linear", step_size=step_size, reg=reg, iters=iters,
                seed=_seed_info(seed), backend=backend, dtype=dt.name)
    return LinearModel({"W": np.ascontiguousarray(WT.T), "b": b.copy()}, history, info)
