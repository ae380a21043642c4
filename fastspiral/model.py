"""Fitted models: prediction and exact save/load."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import reference
from ._files import check_npz, replace_file
from ._validation import DTYPES, check_X, check_y

FORMAT, VERSION = "fastspiral-model", 1
#: Largest header member load reads: the JSON of the kind and the training info.
MAX_HEADER_BYTES = 1 << 20

#: Rows per block in prediction: keeps the (rows, H) hidden layer near 32 MiB.
PREDICT_ELEMENTS = 4_000_000


def _param(value: Any, name: str) -> np.ndarray:
    """A C-contiguous copy of one parameter, which must hold finite float32 or float64 values."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"params[{name!r}] could not be converted to an array: {exc}") from None
    if arr.dtype.name not in DTYPES:
        raise TypeError(f"params[{name!r}] must be float32 or float64, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"params[{name!r}] contains NaN or infinite values")
    return np.array(arr, order="C", copy=True)


def _loss_history(value: Any) -> np.ndarray:
    """The loss history as a 1-D float64 copy of finite real numbers (a trainer never records others)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"loss_history could not be converted to an array: {exc}") from None
    if arr.size and not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"loss_history must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"loss_history must be 1-D, got shape {arr.shape}")
    arr = np.array(arr, dtype=np.float64, copy=True)
    if not np.isfinite(arr).all():
        raise ValueError("loss_history contains NaN or infinite values")
    return arr


class _Model:
    """Common part of the fitted models: parameters, loss history, prediction, I/O."""

    kind: str = ""
    param_names: tuple[str, ...] = ()

    def __init__(
        self,
        params: Mapping[str, Any],
        loss_history: Any = (),
        info: Mapping[str, Any] | None = None,
    ):
        # The trainers' checks, applied to parameters from anywhere (a user, a
        # file): integer weights would make prediction cast X to integers
        # (tests/test_model.py::test_models_refuse_what_trainers_never_return).
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        missing = [name for name in self.param_names if name not in params]
        extra = [name for name in params if name not in self.param_names]
        if missing or extra:
            raise ValueError(
                f"a {self.kind} model has params {list(self.param_names)}; "
                f"missing {missing}, unexpected {extra}"
            )
        self.params = {name: _param(params[name], name) for name in self.param_names}
        dtypes = sorted({v.dtype.name for v in self.params.values()})
        if len(dtypes) > 1:
            raise TypeError(f"params must share one dtype, got {dtypes}")
        self._check_shapes()
        self.loss_history = _loss_history(loss_history)
        if info is not None and not isinstance(info, Mapping):
            raise TypeError(f"info must be a dict, got {type(info).__name__}")
        self.info = dict(info or {})
        try:  # save writes it as JSON: fail here, not when saving
            json.dumps(self.info, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"info must hold JSON values (str, numbers, lists, dicts): {exc}"
            ) from None

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
        return np.concatenate([self._scores(X[i : i + step]) for i in range(0, X.shape[0], step)])

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
        interrupted save never leaves a truncated file behind. As with
        ``np.savez``, a symlink is written through to its target; anything
        at ``path`` other than a regular file (a folder, a device) is refused
        with ValueError, a missing or unwritable folder with OSError.
        """
        header = {"format": FORMAT, "version": VERSION, "kind": self.kind, "info": self.info}
        arrays = {f"param_{name}": value for name, value in self.params.items()}
        replace_file(
            path,
            lambda fh: np.savez(
                fh, header=np.array(json.dumps(header)), loss_history=self.loss_history, **arrays
            ),
            "model file",
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return (
            f"{type(self).__name__}({shapes}, dtype={self.dtype}, iters={self.loss_history.size})"
        )


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
            raise ValueError(
                f"linear params need W (D, K) and b (K,), got W {W.shape}, b {b.shape}"
            )

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
        if (
            W1.ndim != 2
            or W2.ndim != 2
            or W2.shape[0] != W1.shape[1]
            or b1.shape != (W1.shape[1],)
            or b2.shape != (W2.shape[1],)
        ):
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
#: The members of a saved model's archive.
MEMBERS = frozenset(
    {"header.npy", "loss_history.npy"}
    | {f"param_{n}.npy" for cls in MODEL_TYPES.values() for n in cls.param_names}
)


def _read_header(archive) -> dict[str, Any]:
    raw = archive["header"]
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError("the header is not a JSON string")
    header = json.loads(str(raw[()]))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("not a fastspiral model archive")
    if header.get("version") != VERSION:
        raise ValueError(
            f"model format version {header.get('version')!r}; this fastspiral reads {VERSION}"
        )
    if header.get("kind") not in MODEL_TYPES:
        raise ValueError(f"unknown model kind {header.get('kind')!r}")
    return header


def load(path: str | os.PathLike) -> LinearModel | NetModel:
    """Read a model written by ``model.save(path)``; the arrays come back bit for bit.

    The archive is checked before its arrays are read (members, sizes,
    header) and the model as a constructor checks it (float32/float64,
    agreeing shapes, finite values). Raises OSError if the file cannot be
    opened and ValueError if it is not a fastspiral model or is damaged;
    both messages name the path. Never unpickles anything.
    """
    path = os.fspath(path)
    try:
        check_npz(path, MEMBERS, {"header.npy": MAX_HEADER_BYTES})
        with np.load(path, allow_pickle=False) as archive:
            header = _read_header(archive)
            cls = MODEL_TYPES[header["kind"]]
            params = {name: archive[f"param_{name}"] for name in cls.param_names}
            return cls(params, archive["loss_history"], header.get("info"))
    except OSError as exc:
        raise OSError(f"could not read model file {path!r}: {exc}") from exc
    except (
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        RecursionError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
    ) as exc:
        raise ValueError(f"{path!r} is not a readable fastspiral model: {exc}") from exc
