"""Fitted models: prediction and exact save/load."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from . import reference
from ._validation import check_X, check_y

#: Rows per block in prediction: keeps the (rows, H) hidden layer near 32 MiB.
PREDICT_ELEMENTS = 4_000_000


class _Model:
    """Common part of the fitted models: parameters, loss history, prediction, I/O."""

    kind: str = ""
    param_names: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], loss_history: np.ndarray,
                 info: dict[str, Any] | None = None):
        missing = [name for name in self.param_names if name not in params]
        if missing:
            raise ValueError(f"params is missing {missing} for a {self.kind} model")
        self.params = {name: np.asarray(params[name]) for name in self.param_names}
        self.loss_history = np.asarray(loss_history, dtype=np.float64)
        self.info = dict(info or {})
        self._check_shapes()

    # -- shapes -----------------------------------------------------------------
    def _check_shapes(self) -> None:
        raise NotImplementedError

    @property
    def n_features(self) -> int:
        """Number of input features D."""
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        """Number of classes K (columns of the scores)."""
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype:
        """Floating-point type of the parameters."""
        return self.params[self.param_names[0]].dtype

    # -- prediction -------------------------------------------------------------
    def _scores(self, X: np.ndarray) -> np.ndarray:
        return reference.scores(self.params, X)

    def _block_rows(self) -> int:
        return max(1, PREDICT_ELEMENTS // max(self.n_classes, 1))

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores (unnormalised log-probabilities), shape (n_samples, K)."""
        X = check_X(X, self.dtype, n_features=self.n_features)
        step = self._block_rows()
        return np.concatenate([self._scores(X[i:i + step]) for i in range(0, X.shape[0], step)])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the scores), shape (n_samples, K); rows sum to 1."""
        return reference.softmax(self.decision_function(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row, as int64 labels."""
        return np.argmax(self.decision_function(X), axis=1).astype(np.int64)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of rows whose predicted class equals ``y``."""
        pred = self.predict(X)
        labels = check_y(y, pred.shape[0])
        return float(np.mean(pred == labels))

    @property
    def final_loss(self) -> float:
        """Loss at the last iteration (NaN if the model was never trained)."""
        return float(self.loss_history[-1]) if self.loss_history.size else float("nan")

    # -- persistence ------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` as an .npz archive (exactly that path, no suffix added).

        The file is written to a temporary name and moved into place, so an
        interrupted save never leaves a truncated file behind.
        """
        path = os.fspath(path)
        header = {"format": "fastspiral-model", "version": 1, "kind": self.kind, "info": self.info}
        arrays = {f"param_{name}": value for name, value in self.params.items()}
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fastspiral-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, header=np.array(json.dumps(header)),
                         loss_history=self.loss_history, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes}, dtype={self.dtype}, iters={self.loss_history.size})"


class LinearModel(_Model):
    """Softmax linear classifier: ``scores = X @ W + b``.

    Attributes
    ----------
    params : dict
        ``W`` (D, K) and ``b`` (K,).
    loss_history : ndarray of float64
        Loss before each iteration's update.
    info : dict
        The hyperparameters it was trained with.
    """

    kind = "linear"
    param_names = ("W", "b")

    def _check_shapes(self) -> None:
        W, b = self.params["W"], self.params["b"]
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(f"linear params need W (D, K) and b (K,), got W {W.shape}, b {b.shape}")

    @property
    def n_features(self) -> int:
        return self.params["W"].shape[0]

    @property
    def n_classes(self) -> int:
        return self.params["W"].shape[1]



class NetModel(_Model):
    """2-layer ReLU net: ``scores = max(X @ W1 + b1, 0) @ W2 + b2``.

    Attributes
    ----------
    params : dict
        ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, K), ``b2`` (K,).
    loss_history : ndarray of float64
        Loss before each iteration's update.
    info : dict
        The hyperparameters it was trained with.
    """

    kind = "net"
    param_names = ("W1", "b1", "W2", "b2")

    def _check_shapes(self) -> None:
        W1, b1, W2, b2 = (self.params[k] for k in self.param_names)
        if (W1.ndim != 2 or W2.ndim != 2 or W2.shape[0] != W1.shape[1]
                or b1.shape != (W1.shape[1],) or b2.shape != (W2.shape[1],)):
            raise ValueError(
                "net params need W1 (D, H), b1 (H,), W2 (H, K), b2 (K,); got "
                f"W1 {W1.shape}, b1 {b1.shape}, W2 {W2.shape}, b2 {b2.shape}"
            )

    @property
    def n_features(self) -> int:
        return self.params["W1"].shape[0]

    @property
    def n_hidden(self) -> int:
        """Number of hidden units H."""
        return self.params["W1"].shape[1]

    @property
    def n_classes(self) -> int:
        return self.params["W2"].shape[1]

    def _block_rows(self) -> int:
        return max(1, PREDICT_ELEMENTS // max(self.n_hidden, self.n_classes))



MODEL_TYPES: dict[str, type[_Model]] = {"linear": LinearModel, "net": NetModel}


def load(path: str | os.PathLike) -> LinearModel | NetModel:
    """Read a model written by ``model.save(path)``; the arrays come back bit for bit.

    Raises OSError if the file cannot be opened and ValueError if it is not
    a fastspiral model or is damaged; both messages name the path.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"][()]))
            if header.get("format") != "fastspiral-model":
                raise ValueError("not a fastspiral model archive")
            cls = MODEL_TYPES[header["kind"]]
            params = {name: archive[f"param_{name}"] for name in cls.param_names}
            return cls(params, archive["loss_history"], header.get("info"))
    except OSError as exc:
        raise OSError(f"could not read model file {path!r}: {exc}") from exc
    except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} is not a readable fastspiral model: {exc}") from exc
