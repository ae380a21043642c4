"""Public trainers: validate and normalise once, then hand the loop to a backend."""

from __future__ import annotations

import bisect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._problem import Problem, linear_problem, net_problem
from ._validation import check_float, check_int, check_memory, check_X, check_y, empty
from .backends import Backend, Trainer, get_backend
from .model import LinearModel, NetModel

#: The compiled loop runs in chunks of iterations that each take about this
#: long, then returns to Python: Ctrl-C is honoured and verbose lines appear
#: between chunks, at a cost of one call per chunk instead of one per iteration.
CHUNK_SECONDS = 0.1


def _advice(step_size: float, reg: float) -> str:
    """Which argument most likely made gradient descent diverge.

    Each step scales the weights by ``1 - step_size * reg`` before the data's
    gradient is added, so past ``step_size * reg = 2`` the weights grow
    whatever the data say. Then the one further above its default (1 and
    1e-3) is named; otherwise step_size.
    """
    if step_size * reg > 2 and reg / 1e-3 > step_size:
        return (
            f"gradient descent diverged: step_size * reg = {step_size * reg:g} > 2 makes the "
            f"weight decay grow the weights; try a smaller reg (got {reg:g})"
        )
    return f"gradient descent diverged, try a smaller step_size (got {step_size:g})"


def _finished(
    cls: type[NetModel | LinearModel],
    params: dict[str, np.ndarray],
    history: np.ndarray,
    info: dict[str, Any],
    X: np.ndarray,
    what: str,
    optimizer_state: dict[str, dict[str, np.ndarray]] | None = None,
    validation_history: dict[str, np.ndarray] | None = None,
) -> NetModel | LinearModel:
    """The fitted model; FloatingPointError unless its parameters and scores on X are finite.

    The loss is checked before each update, so the last update is checked
    here: it can leave non-finite weights, or finite ones so large that the
    scores overflow (step_size=1e300 gives weights near 1e297 and NaN
    probabilities) (tests/test_validation.py::test_divergence_in_the_last_update_is_refused).
    This is the one check of a trained model's parameters, which are the
    trainer's fresh copies and become the model's own without another copy,
    and X is the problem's, checked once already
    (tests/test_model.py::test_a_trained_model_is_checked_and_copied_once).
    """
    advice = _advice(info["step_size"], info["reg"])
    for name, value in params.items():
        if not np.isfinite(value).all():
            raise FloatingPointError(
                f"{what}: {name} became non-finite in the last update; {advice}"
            )
    model = cls._trained(params, history, info, optimizer_state, validation_history)
    # Scores are computed only when a bound says they might overflow: a NumPy forward
    # pass cost 62 ms at N=30,000, H=1,000, and its BLAS threads, spinning on after it,
    # made the next training's thread choice pick one thread (docs/design.md, "The last update").
    with np.errstate(over="ignore"):  # an overflowing bound is inf: then the scores are computed
        bound = _scores_bound(params, X)
    if bound > float(np.finfo(X.dtype).max) / 1e3:
        with np.errstate(all="ignore"):
            finite = np.isfinite(model._decision(X)).all()
        if not finite:
            raise FloatingPointError(
                f"{what}: the trained parameters give non-finite scores on X; {advice}"
            )
    _warn_if_worse(history, info, what, X.shape[0])
    return model


def _warn_if_worse(history: np.ndarray, info: dict[str, Any], what: str, n_samples: int) -> None:
    """RuntimeWarning if the run ended at a higher loss than it began with.

    Only a non-finite loss raises; a step size too large for the data but not
    enough to overflow climbs quietly (step_size=100 on the spiral: 1.10 to
    29.96) (tests/test_validation.py::test_a_run_that_ends_worse_than_it_began_warns).
    Rises within the rounding of the loss are not counted: each row's
    log-sum-exp is computed in the training dtype, a few units of its
    epsilon relative, so 16 eps of the first loss separate a rise from noise.
    """
    # With mini-batches each entry is one batch's loss: an epoch's mean at each end is compared.
    window = 1
    if info.get("batch_size"):
        window = max(1, min(history.size // 2, -(-n_samples // info["batch_size"])))
    if history.size < 2:
        return
    first, last = float(np.mean(history[:window])), float(np.mean(history[-window:]))
    if last > first + 16 * float(np.finfo(info["dtype"]).eps) * abs(first):
        advice = _advice(info["step_size"], info["reg"]).replace(
            "gradient descent diverged", "gradient descent went the wrong way"
        )
        warnings.warn(
            f"{what}: the loss rose from {first:.6g} to {last:.6g} over {history.size:,} "
            f"iterations; {advice}",
            RuntimeWarning,
            stacklevel=5,  # _finished, _train, the trainer: the line that called it
        )


def _scores_bound(params: dict[str, np.ndarray], X: np.ndarray) -> float:
    """An upper bound on |every score and every partial sum| the forward pass computes on X.

    By Cauchy-Schwarz each hidden unit is at most ``max_i ||x_i|| ||W1||_F + ||b1||``
    in size and each score at most that times ``||W2||_F`` plus ``max |b2|``
    (the same for the linear classifier with W, b); O(N D + D H + H K) work.
    """

    def norm(a):
        # einsum, not np.linalg.norm: from ~10,000 elements norm's BLAS dot started OpenBLAS's
        # threads, which spun on for ~0.1 s and made the next training's thread choice pick one
        # thread (tests/test_validation.py::test_the_last_check_leaves_no_blas_threads_spinning)
        a = a.astype(np.float64, copy=False).ravel()
        return float(np.sqrt(np.einsum("i,i->", a, a)))

    # summed in float64 without a float64 copy of a float32 X (X is cast once, by its check)
    rows = float(np.sqrt(np.max(np.einsum("ij,ij->i", X, X, dtype=np.float64)))) if X.size else 0.0
    if "W1" in params:
        hidden = rows * norm(params["W1"]) + norm(params["b1"])
        return hidden * norm(params["W2"]) + float(np.max(np.abs(params["b2"]), initial=0))
    return rows * norm(params["W"]) + float(np.max(np.abs(params["b"]), initial=0))


def _stops(result: Any) -> bool:
    """Whether a callback's return value stops training: any false value but None.

    Not ``result is False``: a NumPy comparison returns np.False_, which is
    not False, and training went on to its last iteration
    (tests/test_watch.py::test_any_false_value_but_none_stops).
    """
    if result is None:
        return False
    try:
        return not result
    except ValueError as exc:  # an array of several values
        raise TypeError(
            f"callback must return None or a truth value, got {type(result).__name__}: {exc}"
        ) from None


class _Times:
    """When the callback runs: every ``period`` iterations, or after each of the listed counts."""

    def __init__(self, period: int | None = None, at: tuple[int, ...] = ()):
        self.period, self.at, self._at = period, at, frozenset(at)

    def next_after(self, done: int) -> int:
        """The first count after ``done`` at which it runs (past the last listed one: never)."""
        if self.period is not None:
            return (done // self.period + 1) * self.period
        # Bisected, not scanned: a scan made 20,000 snapshots cost 2 * 10**8 comparisons.
        i = bisect.bisect_right(self.at, done)
        return self.at[i] if i < len(self.at) else 2**62

    def due(self, done: int) -> bool:
        return done % self.period == 0 if self.period is not None else done in self._at


def _check_callback(callback: Any, callback_every: Any, default_every: int) -> _Times:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if callback_every is None:
        return _Times(default_every)
    if isinstance(callback_every, (list, tuple, np.ndarray)):
        at = tuple(check_int(t, "callback_every", minimum=1) for t in callback_every)
        if any(b <= a for a, b in zip(at, at[1:])):
            raise ValueError("callback_every must list increasing iteration counts")
        return _Times(at=at)
    return _Times(check_int(callback_every, "callback_every", minimum=1))


class _Validation:
    """Held-out data evaluated every ``every`` iterations, and early stopping on its loss.

    ``best`` keeps the parameters and the training state of the lowest loss
    so far (early stopping returns them); the training stops once ``patience``
    evaluations in a row have not beaten it by more than ``tol``.
    """

    def __init__(self, X, y, every, early_stopping, patience, tol):
        self.X, self.y, self.every = X, y, every
        self.early_stopping, self.patience, self.tol = early_stopping, patience, tol
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.accuracies: list[float] = []
        self.best_loss, self.best_at, self.waited = math.inf, 0, 0
        self.best: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None

    def due(self, done: int, iters: int) -> bool:
        return done % self.every == 0 or done == iters

    def check(self, trainer: Trainer, done: int) -> bool:
        """Evaluate after ``done`` iterations; True when early stopping ends the training."""
        loss, accuracy = trainer.evaluate(self.X, self.y)
        self.iterations.append(done)
        self.losses.append(loss)
        self.accuracies.append(accuracy)
        if not self.early_stopping:
            return False
        if loss < self.best_loss - self.tol:
            self.best_loss, self.best_at, self.waited = loss, done, 0
            self.best = (trainer.params(), trainer.state(done))
            return False
        self.waited += 1
        return self.waited >= self.patience

    def history(self, offset: int) -> dict[str, np.ndarray]:
        return {
            "iteration": np.array(self.iterations, np.int64) + offset,
            "loss": np.array(self.losses, np.float64),
            "accuracy": np.array(self.accuracies, np.float64),
        }


def _run(
    trainer: Trainer,
    iters: int,
    history: np.ndarray,
    every: int,
    verbose: bool,
    progress: bool,
    step_size: float,
    reg: float,
    what: str,
    callback: Callable[[int, float, dict], Any] | None = None,
    callback_every: _Times | None = None,
    validation: _Validation | None = None,
) -> int:
    """Drive ``trainer.run(start, stop, history)`` over ``range(iters)`` in chunks of about
    CHUNK_SECONDS; returns the number of iterations run (fewer if the callback or early
    stopping ended it).

    Chunks start at one iteration and double while they finish quickly. The
    case study's ``iteration %d: loss %f`` lines are printed, and the progress
    bar advanced, after each chunk; Ctrl-C raises KeyboardInterrupt between
    chunks. A non-finite loss stops the run with FloatingPointError. Chunks
    also end at every ``callback_every``-th iteration and at the last, where
    ``callback(done, loss, views)`` gets the iterations done, the loss of the
    last of them and read-only views of the parameters after it (and once
    before the first, with NaN for the loss); a false return value other
    than None (:func:`_stops`) ends the training there. ``validation`` is
    evaluated before the first iteration, at every ``validation.every``-th and
    at the last.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iters, desc=what, unit="it", leave=True)
    try:
        if callback is not None and _stops(callback(0, math.nan, trainer.views())):
            return 0
        if validation is not None and validation.check(trainer, 0):
            return 0
        start, chunk = 0, 1
        while start < iters:
            stop = min(iters, start + chunk)
            # a chunk never runs past the next callback or evaluation
            if callback is not None and callback_every is not None:
                stop = min(stop, callback_every.next_after(start))
            if validation is not None:
                stop = min(stop, (start // validation.every + 1) * validation.every)
            t0 = time.perf_counter()
            bad = trainer.run(start, stop, history)
            elapsed = time.perf_counter() - t0
            end = stop if bad < 0 else bad
            if verbose:
                first = -(-start // every) * every
                for i in range(first, end, every):
                    print(f"iteration {i}: loss {history[i]:f}", flush=True)
            if bar is not None:
                bar.update(end - start)
                bar.set_postfix(
                    loss=f"{history[end - 1]:.6f}" if end > start else None, refresh=False
                )
            if bad >= 0:
                raise FloatingPointError(
                    f"{what}: the loss became {history[bad]} at iteration "
                    f"{bad}; {_advice(step_size, reg)}"
                )
            start = stop
            if (
                callback is not None
                and (callback_every is None or callback_every.due(stop) or stop == iters)
                and _stops(callback(stop, float(history[stop - 1]), trainer.views()))
            ):
                return stop
            if validation is not None and validation.due(stop, iters):
                if validation.check(trainer, stop):
                    return stop
            if elapsed < CHUNK_SECONDS / 2:
                chunk *= 2
            elif elapsed > 2 * CHUNK_SECONDS and chunk > 1:
                chunk //= 2
    finally:
        if bar is not None:
            bar.close()
    return iters


def _seed_info(seed: Any) -> Any:
    return int(seed) if isinstance(seed, (int, np.integer)) else None


def _check_iters(iters: Any) -> int:
    """``iters`` as an int >= 0 whose loss history (8 bytes an iteration) fits in memory."""
    iters = check_int(iters, "iters", minimum=0)
    check_memory(8 * iters, f"iters={iters:,} makes a loss history that needs")
    return iters


def _validation(
    validation: Any,
    problem: Problem,
    validate_every: Any,
    every: int,
    early_stopping: Any,
    patience: Any,
    tol: Any,
) -> _Validation | None:
    """The checked held-out data and early-stopping settings, or None (errors name the argument)."""
    if not isinstance(early_stopping, (bool, np.bool_)):
        raise TypeError(f"early_stopping must be True or False, got {early_stopping!r}")
    patience = check_int(patience, "patience", minimum=1)
    tol = check_float(tol, "tol")
    if validation is None:
        if early_stopping:
            raise ValueError("early_stopping=True needs held-out data: validation=(X_val, y_val)")
        return None
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise TypeError(
            f"validation must be a pair (X_val, y_val), got {type(validation).__name__}"
        )
    X = check_X(validation[0], problem.dtype, name="validation X", n_features=problem.n_features)
    y = check_y(validation[1], X.shape[0], name="validation y", copy=True)
    if y.max() >= problem.n_classes:
        raise ValueError(
            f"validation y holds the label {int(y.max())}, but the model has "
            f"{problem.n_classes} classes (0..{problem.n_classes - 1})"
        )
    every = (
        every if validate_every is None else check_int(validate_every, "validate_every", minimum=1)
    )
    return _Validation(X, y, every, bool(early_stopping), patience, tol)


def _train(
    impl: Backend,
    problem: Problem,
    iters: int,
    seed: Any,
    every: int,
    verbose: bool,
    progress: bool,
    callback: Callable[[int, float, dict], Any] | None,
    callback_every: _Times,
    what: str,
    init: Any = None,
    validation: _Validation | None = None,
) -> NetModel | LinearModel:
    """Train ``problem`` on ``impl`` (the trainers' common part, after their checks)."""
    N, D, H, K = problem.n_samples, problem.n_features, problem.n_hidden, problem.n_classes
    plan = problem.plan
    params = sum(p.nbytes for p in problem.params.values())
    # The work arrays, the trainer's parameters and the copies it hands back: the NumPy
    # backend's (N, H) hidden layer is 510 GB at N = 300,000, H = 100,000
    # (tests/test_validation.py::test_sizes_too_large_for_memory).
    check_memory(
        impl.workspace_bytes(problem.model, N, D, H, K, problem.dtype) + 3 * params,
        f"backend={impl.name!r} with N={N:,} rows, H={H:,} hidden units and K={K:,} "
        "classes needs work arrays of",
    )
    history = empty(iters, np.float64, f"iters={iters:,} makes a loss history that needs")
    trainer = impl.prepare(problem)
    # Compiling (or loading the compiled kernels) is timed apart from training, so that printed
    # rates and the progress bar's estimate are the training's own.
    t0 = time.perf_counter()
    trainer.compile()
    t1 = time.perf_counter()
    done = _run(
        trainer, iters, history, every, verbose, progress, problem.step_size, problem.reg, what,
        callback, callback_every, validation,
    )  # fmt: skip
    t2 = time.perf_counter()
    # a stopped run's history is copied out of the iters-long buffer, which it would keep alive
    history = history[:done].copy() if done < iters else history
    if validation is not None and validation.best is not None:
        final, state = validation.best  # early stopping: the best parameters seen, and their state
    else:
        final, state = trainer.params(), trainer.state(done)
    # A continued model's history is the whole run's (as scikit-learn's warm_start extends
    # loss_curve_), so plots of it go on from where the first training stopped.
    earlier = getattr(init, "loss_history", None)
    offset = 0 if earlier is None else earlier.size
    if offset:
        history = np.concatenate([earlier, history])
    validation_history = None
    if validation is not None:
        validation_history = validation.history(offset)
        before = getattr(init, "validation_history", None)
        if before is not None and before["iteration"].size:
            validation_history = {k: np.concatenate([before[k], validation_history[k]])
                                  for k in validation_history}  # fmt: skip
    info: dict[str, Any] = {"model": problem.model}
    if problem.model == "net":
        info["hidden"] = H
    updates = state["updates"]
    info.update(
        step_size=problem.step_size,
        reg=problem.reg,
        iters=done,
        seed=_seed_info(seed),
        backend=impl.name,
        dtype=problem.dtype.name,
        optimizer=plan.rule.config(),
        schedule=None if plan.schedule is None else plan.schedule.config(),
        batch_size=plan.batch_size,
        updates=updates,
        epochs=updates / -(-N // (plan.batch_size or N)),  # ceil(N / B) updates an epoch
        batch_order=state["batches"],
        compile_seconds=round(t1 - t0, 6),
        train_seconds=round(t2 - t1, 6),
    )
    if validation is not None and validation.early_stopping:
        info["best_iteration"] = offset + validation.best_at
        info["stopped_iteration"] = offset + done
    cls = NetModel if problem.model == "net" else LinearModel
    model = _finished(
        cls, final, history, info, problem.X, what, state["vectors"], validation_history
    )
    return model


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
    callback: Callable[[int, float, dict], Any] | None = None,
    callback_every: int | Sequence[int] | None = None,
    optimizer: Any = "gd",
    batch_size: int | None = None,
    schedule: Any = None,
    validation: tuple[Any, Any] | None = None,
    validate_every: int | None = None,
    early_stopping: bool = False,
    patience: int = 10,
    tol: float = 1e-4,
) -> NetModel:
    """Train the case study's 2-layer ReLU net (full-batch gradient descent by default).

    ``scores = max(X W1 + b1, 0) W2 + b2``; the loss is the mean softmax
    cross-entropy plus ``0.5 * reg * (sum(W1**2) + sum(W2**2))`` (biases are
    not regularised), and by default each iteration takes
    ``W -= step_size * (dW + reg W)`` on all the rows (``optimizer="gd"``).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Training data; any real dtype, order or stride (converted once, never modified).
    y : array_like of int, shape (N,)
        Class labels 0..K-1; K is ``max(y) + 1`` (or taken from ``init``), so
        classes no label names still get a column of scores (a stray label
        999 among 0..2 makes K = 1,000). Any D and K train; D <= 8 with K <= 4
        and D + 2K <= 14 (the spiral's shape among them) runs kernels compiled
        for that shape, all others share one compiled form per dtype.
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
    callback : callable, optional
        ``callback(iteration, loss, params)``, called before training
        (iteration 0), after every ``callback_every`` iterations and after
        the last one, between compiled chunks (the loop itself stays
        compiled): ``iteration`` is the number of iterations done, ``loss``
        the loss of the last of them (before its update), ``params`` a dict of
        read-only views of the current parameters (copy them to keep them;
        they change as training goes on). At the first call no iteration has
        run and ``loss`` is NaN; every comparison with NaN is False, so a
        test such as ``return loss > 0.3`` stops there: write
        ``return iteration == 0 or loss > 0.3``.
        Returning None (or nothing) goes on. Any other value is taken as a
        truth value: a false one (``False``, ``np.False_``, ``0``, an empty
        container) stops training there, and the model so far is returned
        (its ``loss_history`` as long as the iterations run); an array of
        several values is a TypeError. See :func:`fastspiral.record_snapshots`.
    callback_every : int or sequence of int, optional
        Iterations between callbacks (default 1000, the ``verbose`` interval),
        or the increasing iteration counts after which it is called.
    optimizer : str or rule from :mod:`fastspiral.optim`
        The update rule: "gd" (the case study's), "sgd", "momentum",
        "nesterov", "adagrad", "rmsprop" or "adam" with their default
        hyperparameters, or an object carrying them (``Adam(beta1=0.8)``).
        ``step_size`` is the learning rate of each; L2 acts on the weights.
    batch_size : int, optional
        None (default): every iteration uses all the rows. An int: mini-batches
        of that many rows, reshuffled every epoch from the ``seed``'s stream
        (the epoch's last batch smaller); each iteration is then one update,
        an epoch ``ceil(N / batch_size)`` of them.
    schedule : schedule from :mod:`fastspiral.optim`, optional
        Learning-rate decay over the updates (``StepDecay``, ``ExpDecay``,
        ``InverseTimeDecay``); None keeps ``step_size``.
    validation : (X_val, y_val), optional
        Held-out data, evaluated before the first iteration, every
        ``validate_every`` iterations and after the last: the model's
        ``validation_history`` holds the iterations and the mean loss (no L2
        term) and accuracy at each. A fresh ``seed`` of :func:`fastspiral.make_data`
        draws such data.
    validate_every : int, optional
        Iterations between evaluations (default: the ``verbose`` interval).
    early_stopping : bool
        Stop once ``patience`` evaluations in a row have not lowered the
        validation loss by more than ``tol``, and return the parameters of
        the best one (needs ``validation``); ``info["best_iteration"]`` says
        which.
    patience, tol : int, float
        See ``early_stopping`` (defaults 10 and 1e-4).

    Continuing: with ``init`` a model trained with the same optimizer (and
    schedule), its state (velocities, caches, moments, the update count and,
    with the same ``batch_size``, the batches' order) carries on, so two
    trainings of 500 iterations give the bits of one of 1,000, and the new
    model's ``loss_history`` (and ``validation_history``) holds the whole run.

    Returns
    -------
    NetModel
        With ``params`` (W1, b1, W2, b2), ``loss_history`` (float64, one
        entry per iteration: the loss before that iteration's update, of its
        batch with mini-batches), ``optimizer_state``, ``validation_history``
        and ``info`` (the hyperparameters, the updates and epochs so far, and
        the seconds spent compiling and training).

    Raises
    ------
    ValueError, TypeError
        For bad input, before any training; ValueError also for sizes that
        cannot fit in memory (``iters``, labels that make K huge, ``hidden``).
    FloatingPointError
        If the loss, the trained parameters or their scores on X stop being
        finite (the step size, or step_size * reg, is too large); no model is
        returned then.

    Warns
    -----
    RuntimeWarning
        If the last loss is above the first (beyond rounding): training went
        the wrong way, and the message names the argument to lower.
    UserWarning
        If K = max(y) + 1 leaves classes without a label (y in 1..3 leaves
        class 0 empty); no warning when K comes from ``init``.
    """
    impl = get_backend(backend)
    iters = _check_iters(iters)
    times = _check_callback(callback, callback_every, 1000)
    problem = net_problem(
        X, y, hidden=hidden, step_size=step_size, reg=reg, seed=seed, init=init, dtype=dtype,
        optimizer=optimizer, schedule=schedule, batch_size=batch_size,
    )  # fmt: skip
    watch = _validation(validation, problem, validate_every, 1000, early_stopping, patience, tol)
    return _train(  # type: ignore[return-value]  # a net problem gives a NetModel
        impl, problem, iters, seed, 1000, verbose, progress, callback, times, "train_net",
        init, watch,
    )  # fmt: skip


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
    callback: Callable[[int, float, dict], Any] | None = None,
    callback_every: int | Sequence[int] | None = None,
    optimizer: Any = "gd",
    batch_size: int | None = None,
    schedule: Any = None,
    validation: tuple[Any, Any] | None = None,
    validate_every: int | None = None,
    early_stopping: bool = False,
    patience: int = 10,
    tol: float = 1e-4,
) -> LinearModel:
    """Train the case study's softmax linear classifier, by full-batch gradient descent unless
    told otherwise.

    ``scores = X W + b``; the loss is the mean softmax cross-entropy plus
    ``0.5 * reg * sum(W**2)``. Parameters are as for :func:`train_net`
    (without ``hidden``); ``init`` takes a LinearModel or a dict with ``W``
    (D, K) and ``b`` (K,), ``verbose`` prints every 10 iterations,
    ``progress`` shows a tqdm bar, ``callback`` is called every
    ``callback_every`` iterations (default 10) with the views ``W`` and ``b``,
    and ``validate_every`` defaults to 10.

    Returns
    -------
    LinearModel
        With ``params`` (W, b) and ``loss_history``.
    """
    impl = get_backend(backend)
    iters = _check_iters(iters)
    times = _check_callback(callback, callback_every, 10)
    problem = linear_problem(
        X, y, step_size=step_size, reg=reg, seed=seed, init=init, dtype=dtype,
        optimizer=optimizer, schedule=schedule, batch_size=batch_size,
    )  # fmt: skip
    watch = _validation(validation, problem, validate_every, 10, early_stopping, patience, tol)
    return _train(  # type: ignore[return-value]  # a linear problem gives a LinearModel
        impl, problem, iters, seed, 10, verbose, progress, callback, times,
        "train_linear", init, watch,
    )  # fmt: skip
