"""Fitted models: prediction and exact save/load."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import reference
from ._files import check_npz, open_regular, replace_file
from ._validation import DTYPES, check_real_dtype, check_X, check_y

#: Version 2 adds the update rule's state and the validation history (version 1 files load).
FORMAT, VERSION, READS = "fastspiral-model", 2, (1, 2)
#: The vectors an update rule keeps beside the parameters (fastspiral.optim).
STATE_VECTORS = ("velocity", "cache", "m", "v")
#: The columns of a validation history.
VALIDATION_FIELDS = ("iteration", "loss", "accuracy")
#: Largest header member load reads: the JSON of the kind and the training info.
MAX_HEADER_BYTES = 1 << 20
#: Deepest nesting of lists and dicts in a saved model's info. JSON's reader recurses, so
#: whether a deep info loads depended on how deep in the stack load was called (an info
#: nested 985 deep saved, and failed to load from 10 frames down).
MAX_INFO_DEPTH = 100

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
    """The loss history as a 1-D float64 copy of finite reals (a trainer never records others)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"loss_history could not be converted to an array: {exc}") from None
    if arr.size:
        check_real_dtype(arr.dtype, "loss_history", kinds="iuf")
    if arr.ndim != 1:
        raise ValueError(f"loss_history must be 1-D, got shape {arr.shape}")
    arr = np.array(arr, dtype=np.float64, copy=True)
    if not np.isfinite(arr).all():
        raise ValueError("loss_history contains NaN or infinite values")
    return arr


def _optimizer_state(value: Any, params: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Checked copies of an update rule's vectors: by name, then by parameter, in its shape."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"optimizer_state must be a dict, got {type(value).__name__}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for vector, arrays in value.items():
        if vector not in STATE_VECTORS:
            raise ValueError(f"optimizer_state: unknown vector {vector!r} (known: {STATE_VECTORS})")
        if not isinstance(arrays, Mapping) or set(arrays) != set(params):
            raise ValueError(f"optimizer_state[{vector!r}] must hold one array per parameter")
        out[vector] = {}
        for name, param in params.items():
            arr = _param(arrays[name], f"{vector}.{name}")
            if arr.shape != param.shape or arr.dtype != param.dtype:
                raise ValueError(
                    f"optimizer_state[{vector!r}][{name!r}] has shape {arr.shape} and dtype "
                    f"{arr.dtype}, its parameter {param.shape} and {param.dtype}"
                )
            out[vector][name] = arr
    return out


def _validation_history(value: Any) -> dict[str, np.ndarray]:
    """Checked copies of a validation history: iteration, loss and accuracy, of one length."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping) or not set(value) <= set(VALIDATION_FIELDS):
        raise ValueError(f"validation_history must be a dict with the keys {VALIDATION_FIELDS}")
    columns = {}
    for name in VALIDATION_FIELDS:
        arr = np.asarray(value.get(name, ()))
        if arr.size:
            check_real_dtype(arr.dtype, f"validation_history[{name!r}]", kinds="iuf")
        if arr.ndim != 1 or not np.isfinite(arr.astype(np.float64)).all():
            raise ValueError(f"validation_history[{name!r}] must be 1-D finite numbers")
        columns[name] = np.array(arr, dtype=np.int64 if name == "iteration" else np.float64)
    if len({c.size for c in columns.values()}) > 1:
        raise ValueError("validation_history's columns must have one length")
    return columns


class _Model:
    """Common part of the fitted models: parameters, loss history, prediction, I/O."""

    kind: str = ""
    param_names: tuple[str, ...] = ()

    def __init__(
        self,
        params: Mapping[str, Any],
        loss_history: Any = (),
        info: Mapping[str, Any] | None = None,
        *,
        optimizer_state: Mapping[str, Any] | None = None,
        validation_history: Mapping[str, Any] | None = None,
    ):
        # The trainers' checks, applied to parameters from anywhere (a user, a
        # file): integer weights would make prediction cast X to integers
        # (tests/test_model.py::test_models_refuse_what_trainers_never_return).
        self.params, self.loss_history, self.info = self._checked(params, loss_history, info)
        self.optimizer_state = _optimizer_state(optimizer_state, self.params)
        self.validation_history = _validation_history(validation_history)

    @classmethod
    def _checked(
        cls, params: Any, loss_history: Any, info: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
        """Checked copies of a model's parts (the constructor's checks; save repeats them)."""
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        missing = [name for name in cls.param_names if name not in params]
        extra = [name for name in params if name not in cls.param_names]
        if missing or extra:
            raise ValueError(
                f"a {cls.kind} model has params {list(cls.param_names)}; "
                f"missing {missing}, unexpected {extra}"
            )
        checked = {name: _param(params[name], name) for name in cls.param_names}
        dtypes = sorted({v.dtype.name for v in checked.values()})
        if len(dtypes) > 1:
            raise TypeError(f"params must share one dtype, got {dtypes}")
        cls._check_shapes(checked)
        history = _loss_history(loss_history)
        if info is not None and not isinstance(info, Mapping):
            raise TypeError(f"info must be a dict, got {type(info).__name__}")
        info = dict(info or {})
        _header_text(cls.kind, info)  # save writes it as JSON: fail here, not when saving
        return checked, history, info

    @classmethod
    def _trained(
        cls,
        params: dict[str, np.ndarray],
        loss_history: np.ndarray,
        info: dict[str, Any],
        optimizer_state: dict[str, dict[str, np.ndarray]] | None = None,
        validation_history: dict[str, np.ndarray] | None = None,
    ) -> Any:
        """The model a trainer returns, built from arrays that are already its own.

        The trainers hand over fresh C-contiguous parameters of one dtype, in the
        model's shapes, that :func:`fastspiral.train._finished` has found
        finite, a float64 history and JSON-ready info; checking and copying
        them again, as the public constructor must for anyone's arrays, doubled
        the way out of every training
        (tests/test_model.py::test_a_trained_model_is_checked_and_copied_once).
        """
        model = cls.__new__(cls)
        model.params, model.loss_history, model.info = params, loss_history, info
        model.optimizer_state = optimizer_state or {}
        model.validation_history = _validation_history(validation_history)
        return model

    # -- shapes -----------------------------------------------------------------
    @staticmethod
    def _check_shapes(params: dict[str, np.ndarray]) -> None:
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

    def _checked_X(self, X: Any) -> np.ndarray:
        return check_X(X, self.dtype, n_features=self.n_features)

    def _decision(self, X: np.ndarray) -> np.ndarray:
        """The scores of an X that :meth:`_checked_X` has checked (once per public call)."""
        step = self._block_rows()
        return np.concatenate([self._scores(X[i : i + step]) for i in range(0, X.shape[0], step)])

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self._decision(X), axis=1).astype(np.int64)

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores (unnormalised log-probabilities), shape (n_samples, K)."""
        return self._decision(self._checked_X(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the scores), shape (n_samples, K); rows sum to 1."""
        return reference.softmax(self.decision_function(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row, as int64 labels."""
        return self._predict(self._checked_X(X))

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
        interrupted save (an exception, Ctrl-C, SIGTERM) never leaves a
        truncated or temporary file behind. As with ``np.savez``, a symlink is
        written through to its target, and a file the user may not write is
        refused with PermissionError, as ``open(path, "w")`` refuses it; anything
        at ``path`` other than a regular file (a folder, a device) is refused
        with ValueError, a missing or unwritable folder with OSError.

        The model is checked as the constructor checks it, since its ``params``,
        ``loss_history`` and ``info`` may have been changed since: what save
        writes, :func:`load` reads, or ValueError/TypeError here and nothing is
        written (tests/test_model.py::test_save_writes_only_what_load_reads).
        """
        params, history, info = self._checked(self.params, self.loss_history, self.info)
        state = _optimizer_state(self.optimizer_state, params)
        validation = _validation_history(self.validation_history)
        header = _header_json(self.kind, info)
        arrays = {f"param_{name}": value for name, value in params.items()}
        arrays |= {
            f"state_{vector}_{name}": value
            for vector, values in state.items()
            for name, value in values.items()
        }
        arrays |= {f"validation_{name}": value for name, value in validation.items()}
        replace_file(
            path,
            lambda fh: np.savez(fh, header=header, loss_history=history, **arrays),  # type: ignore[arg-type]
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

    @staticmethod
    def _check_shapes(params: dict[str, np.ndarray]) -> None:
        W, b = params["W"], params["b"]
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

    @staticmethod
    def _check_shapes(params: dict[str, np.ndarray]) -> None:
        W1, b1, W2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
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
    | {
        f"state_{v}_{n}.npy"
        for v in STATE_VECTORS
        for cls in MODEL_TYPES.values()
        for n in cls.param_names
    }
    | {f"validation_{name}.npy" for name in VALIDATION_FIELDS}
)


def _header_text(kind: str, info: dict[str, Any]) -> str:
    """The JSON of a saved model's format, kind and info; TypeError if info is not JSON."""
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "info": info}
    try:
        return json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"info must hold JSON values (str, numbers, lists, dicts): {exc}") from None
    except RecursionError:
        raise ValueError("info is nested too deeply to be written as JSON") from None


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (0 for a scalar); walked without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _header_json(kind: str, info: dict[str, Any]) -> np.ndarray:
    """The header member save writes, or TypeError/ValueError if :func:`load` could not read it.

    The JSON of :func:`_header_text`, as NumPy stores a str (4 bytes a
    character). load reads at most MAX_HEADER_BYTES of it, so a larger info
    is refused here, before anything is written: a model with 15,000 floats
    in its info saved fine and then could not be loaded
    (tests/test_model.py::test_save_writes_only_what_load_reads).
    """
    array = np.array(_header_text(kind, info))
    if _depth(info) > MAX_INFO_DEPTH:
        raise ValueError(
            f"info nests {_depth(info)} lists or dicts deep; a saved model's info may nest at "
            f"most {MAX_INFO_DEPTH}, so that load can read it from anywhere"
        )
    size = array.nbytes + 128  # the .npy preamble: magic, version, a dict padded to 64 bytes
    if size > MAX_HEADER_BYTES:
        raise ValueError(
            f"info is too large to save: its JSON takes {size:,} bytes in the file, and "
            f"load reads at most {MAX_HEADER_BYTES:,}; keep large arrays out of info"
        )
    return array


def _read_header(archive) -> dict[str, Any]:
    raw = archive["header"]
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError("the header is not a JSON string")
    header = json.loads(str(raw[()]))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("not a fastspiral model archive")
    if header.get("version") not in READS:
        raise ValueError(
            f"model format version {header.get('version')!r}; this fastspiral reads {READS}"
        )
    if header.get("kind") not in MODEL_TYPES:
        raise ValueError(f"unknown model kind {header.get('kind')!r}")
    return header


def load(path: str | os.PathLike) -> LinearModel | NetModel:
    """Read a model written by ``model.save(path)``; the arrays come back bit for bit.

    The archive is checked before its arrays are read (members, sizes,
    header) and the model as a constructor checks it (float32/float64,
    agreeing shapes, finite values). Raises OSError if the file cannot be
    opened, and ValueError if it is not a regular file (a FIFO, a device, a
    folder: refused before it is opened), not a fastspiral model, or damaged;
    both messages name the path. Never unpickles anything.
    """
    path = os.fspath(path)
    try:
        # Opened once, as a regular file: a FIFO's open blocks until a writer comes,
        # and a device's may act (tests/test_model.py::test_load_refuses_non_regular_files).
        with open_regular(path, "model file") as fh:
            check_npz(fh, MEMBERS, {"header.npy": MAX_HEADER_BYTES})
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as archive:
                header = _read_header(archive)
                cls: Any = MODEL_TYPES[header["kind"]]
                params = {name: archive[f"param_{name}"] for name in cls.param_names}
                members = set(archive.files)
                state: dict[str, dict[str, np.ndarray]] = {}
                for vector in STATE_VECTORS:
                    names = [n for n in cls.param_names if f"state_{vector}_{n}" in members]
                    if names:
                        state[vector] = {n: archive[f"state_{vector}_{n}"] for n in names}
                validation = {
                    name: archive[f"validation_{name}"]
                    for name in VALIDATION_FIELDS
                    if f"validation_{name}" in members
                }
                return cls(
                    params,
                    archive["loss_history"],
                    header.get("info"),
                    optimizer_state=state,
                    validation_history=validation,
                )
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
