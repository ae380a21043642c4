"""scikit-learn compatible classifiers around :func:`~fastspiral.train_net` and
:func:`~fastspiral.train_linear`.

Needs the optional extra ``pip install "fastspiral[sklearn]"``; ``import
fastspiral`` never imports scikit-learn.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from fastspiral.estimators import NetClassifier
>>> clf = make_pipeline(StandardScaler(), NetClassifier(hidden=50, random_state=0))
>>> clf.fit(X, y).score(X, y)   # doctest: +SKIP
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastspiral.estimators needs scikit-learn >= 1.6: pip install 'fastspiral[sklearn]'"
    ) from exc

from . import reference
from ._validation import check_real_dtype
from .model import LinearModel, NetModel
from .train import train_linear, train_net

#: What a fit sets; a fit that fails restores them as they were (or leaves them unset).
_FITTED = (
    "classes_", "n_features_in_", "feature_names_in_", "model_", "loss_curve_", "n_iter_",
    "best_loss_", "validation_scores_", "best_validation_score_",
)  # fmt: skip


def _refuse_dates(X: Any) -> None:
    """TypeError for datetime or timedelta features, which scikit-learn's checks cast to float
    silently (tests/test_estimators.py::test_dates_are_refused_as_features)."""
    dtypes = getattr(X, "dtypes", None)  # a DataFrame's columns
    if dtypes is None:
        dtype = getattr(X, "dtype", None)  # not `or`: a dtype's len() is its field count, 0
        dtypes = [np.asarray(X).dtype if dtype is None else dtype]
    for dtype in dtypes:
        if getattr(dtype, "kind", "") in "mM":
            check_real_dtype(np.dtype(dtype), "X")


class _SpiralClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit/predict logic; subclasses say which trainer and parameters."""

    classes_: np.ndarray
    model_: NetModel | LinearModel

    def _train(
        self, X: np.ndarray, y: np.ndarray, init: Any, validation: Any
    ) -> NetModel | LinearModel:
        raise NotImplementedError

    def fit(self, X: Any, y: Any) -> _SpiralClassifier:
        """Train on X (n_samples, n_features) and labels y (any hashable values).

        With ``warm_start=True`` and a previous fit on the same classes and
        features, training continues from the previous parameters, and
        ``loss_curve_`` and ``n_iter_`` count all the fits so far (as
        scikit-learn's MLPClassifier does). A fit that raises changes
        nothing: the estimator keeps the previous fit, or stays unfitted.
        """
        # validate_data sets n_features_in_ as it checks, before training can fail: a
        # failed refit left the old model_ read through the new classes_
        # (tests/test_estimators.py::test_a_failed_fit_changes_nothing).
        before = {name: vars(self)[name] for name in _FITTED if name in vars(self)}
        try:
            return self._fit(X, y)
        except BaseException:
            for name in _FITTED:
                self.__dict__.pop(name, None)
            self.__dict__.update(before)
            raise

    def _fit(self, X: Any, y: Any) -> _SpiralClassifier:
        warm = self.warm_start and hasattr(self, "model_")
        _refuse_dates(X)
        X, y = validate_data(self, X, y, reset=not warm, dtype=np.float64, order="C")
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        init = None
        if warm:
            if not np.array_equal(classes, self.classes_):
                raise ValueError(
                    "warm_start=True needs the classes of the previous fit "
                    f"{self.classes_.tolist()}, got {classes.tolist()}"
                )
            init = self.model_
        y = encoded.astype(np.int64)
        validation = None
        if self.early_stopping:
            X, y, validation = self._split(X, y)
        model = self._train(X, y, init, validation)
        self.classes_ = classes
        self.model_ = model
        # As MLPClassifier: a warm fit extends the curve and the iteration count (the model
        # continued from the previous one holds the whole run).
        self.loss_curve_ = model.loss_history
        self.n_iter_ = self.loss_curve_.size
        scores = model.validation_history["accuracy"]
        self.validation_scores_ = scores.tolist() if self.early_stopping else None
        self.best_validation_score_ = float(scores.max()) if self.early_stopping else None
        self.best_loss_ = (
            None if self.early_stopping else float(model.loss_history.min(initial=np.inf))
        )
        return self

    def _split(self, X: np.ndarray, y: np.ndarray):
        """``(X_train, y_train, (X_val, y_val))``: a stratified share ``validation_fraction``
        held out, as MLPClassifier holds it out for early stopping."""
        from sklearn.model_selection import train_test_split

        fraction = self.validation_fraction
        if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real):
            raise TypeError(f"validation_fraction must be a number in (0, 1), got {fraction!r}")
        if not 0 < float(fraction) < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {fraction!r}")
        stratify = y if np.bincount(y).min() >= 2 else None
        X_train, X_val, y_train, y_val = train_test_split(
            X, y, test_size=fraction, random_state=self.random_state, stratify=stratify
        )
        return X_train, y_train, (X_val, y_val)

    def _validated(self, X: Any) -> np.ndarray:
        """X checked once, as scikit-learn checks it and then in the model's dtype."""
        check_is_fitted(self, "model_")
        _refuse_dates(X)
        X = validate_data(self, X, reset=False, dtype=np.float64, order="C")  # finite, float64
        # a float32 model's cast can overflow: the model's own check refuses that
        return X if self.model_.dtype == X.dtype else self.model_._checked_X(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        X = self._validated(X)
        return reference.softmax(self.model_._decision(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable label of each row (values from ``classes_``)."""
        X = self._validated(X)
        return self.classes_[self.model_._predict(X)]

    def _common(self, n_samples: int, validation: Any) -> dict[str, Any]:
        # Evaluated once an epoch, as MLPClassifier does (every 10 updates of a full batch)
        every = (
            -(-n_samples // int(self.batch_size))
            if isinstance(self.batch_size, numbers.Integral)
            else 10
        )
        return dict(
            step_size=self.step_size,
            reg=self.reg,
            iters=self.iters,
            seed=self.random_state,
            backend=self.backend,
            dtype=self.dtype,
            verbose=self.verbose,
            optimizer=self.optimizer,
            batch_size=self.batch_size,
            schedule=self.schedule,
            validation=validation,
            validate_every=max(1, every) if validation is not None else None,
            early_stopping=validation is not None,
            patience=self.patience,
            tol=self.tol,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class NetClassifier(_SpiralClassifier):
    """The case study's 2-layer ReLU net as a scikit-learn classifier.

    Parameters
    ----------
    hidden : int, default=100
        Hidden units.
    step_size, reg, iters, backend, dtype, verbose, optimizer, batch_size, schedule
        As for :func:`fastspiral.train_net`: ``optimizer="adam", batch_size=200``
        is MLPClassifier's default training.
    random_state : int, numpy.random.Generator or None
        Seed of the initial weights and of the batches (``seed`` of train_net),
        and of the validation split.
    warm_start : bool, default=False
        Continue from the previous fit's parameters (and its update rule's
        state) instead of a fresh start.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified), evaluate
        them once an epoch (every 10 iterations of a full batch), stop once
        ``patience`` evaluations in a row have not lowered their loss by
        more than ``tol``, and keep the best parameters.
    validation_fraction : float, default=0.1
        The share held out for early stopping.
    patience : int, default=10
        Evaluations without improvement before stopping (MLPClassifier's
        ``n_iter_no_change``).
    tol : float, default=1e-4
        The smallest fall of the validation loss that counts as one.

    Attributes
    ----------
    classes_ : ndarray
        The labels seen in fit, sorted; column k of predict_proba is classes_[k].
    n_features_in_ : int
        The number of features seen in fit.
    loss_curve_ : ndarray of float64
        Loss before each iteration (of its batch), over every fit of a warm start.
    n_iter_ : int
        The iterations run: the length of ``loss_curve_``.
    best_loss_ : float or None
        The lowest of ``loss_curve_``; None with early stopping.
    validation_scores_ : list of float or None
        The held-out accuracy at each evaluation with early stopping, else None.
    best_validation_score_ : float or None
        The best of ``validation_scores_``.
    model_ : fastspiral.NetModel
        The trained network (labels encoded as 0..K-1).
    """

    def __init__(
        self,
        hidden: int = 100,
        *,
        step_size: float = 1.0,
        reg: float = 1e-3,
        iters: int = 10_000,
        random_state: Any = None,
        backend: str = "numba",
        dtype: str = "float64",
        warm_start: bool = False,
        verbose: bool = False,
        optimizer: Any = "gd",
        batch_size: int | None = None,
        schedule: Any = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 10,
        tol: float = 1e-4,
    ):
        self.hidden = hidden
        self.step_size = step_size
        self.reg = reg
        self.iters = iters
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.schedule = schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol

    def _train(self, X, y, init, validation):
        options = self._common(X.shape[0], validation)
        return train_net(X, y, hidden=self.hidden, init=init, **options)


class LinearClassifier(_SpiralClassifier):
    """The case study's softmax linear classifier as a scikit-learn classifier.

    Parameters and attributes are those of :class:`NetClassifier` without
    ``hidden``; ``model_`` is a :class:`fastspiral.LinearModel`.
    """

    def __init__(
        self,
        *,
        step_size: float = 1.0,
        reg: float = 1e-3,
        iters: int = 200,
        random_state: Any = None,
        backend: str = "numba",
        dtype: str = "float64",
        warm_start: bool = False,
        verbose: bool = False,
        optimizer: Any = "gd",
        batch_size: int | None = None,
        schedule: Any = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 10,
        tol: float = 1e-4,
    ):
        self.step_size = step_size
        self.reg = reg
        self.iters = iters
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.schedule = schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol

    def _train(self, X, y, init, validation):
        return train_linear(X, y, init=init, **self._common(X.shape[0], validation))
