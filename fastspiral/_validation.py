"""Input checks shared by the public functions.

Every public entry point validates and normalises its arguments here, once,
before any kernel runs; the kernels trust what they are given. Errors name the
argument and say what was wrong with it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

#: Floating-point types the trainers run in, by the names the API accepts.
DTYPES: dict[str, np.dtype] = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}
#: Scalars NumPy counts as numbers that are not: np.timedelta64 subclasses
#: np.signedinteger, so numbers.Integral and np.integer both take it
#: (tests/test_validation.py::test_dates_and_durations_are_refused_everywhere).
_DATE_SCALARS = (np.timedelta64, np.datetime64)


def check_real_dtype(dtype: np.dtype, name: str, kinds: str = "biuf") -> None:
    """TypeError unless ``dtype``'s kind is one of ``kinds`` (b bool, i/u integers, f floats).

    By kind, not ``np.issubdtype(dtype, np.integer)``: that is True for
    timedelta64, whose NaT is -2**63 and would reach the kernels as a label or a
    weight (tests/test_validation.py::test_dates_and_durations_are_refused_everywhere).
    """
    if dtype.kind in "mM":
        raise TypeError(f"{name} must hold numbers, not dates or durations (dtype {dtype})")
    if dtype.kind not in kinds:
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= minimum."""
    if isinstance(value, (bool, np.bool_, *_DATE_SCALARS)) or not isinstance(
        value, numbers.Integral
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value: Any, name: str, *, positive: bool = False) -> float:
    """Return ``value`` as a finite float that is >= 0 (> 0 when ``positive``)."""
    if isinstance(value, (bool, np.bool_, *_DATE_SCALARS)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_fits(value: float, name: str, dtype: np.dtype) -> float:
    """Return ``value`` if the training dtype holds it: finite, and not rounded to 0 unless it is 0.

    A step size of 1e200 is inf in float32 and 1e-50 is 0; either would train
    something other than what was asked, so both are refused here.
    """
    cast = dtype.type(value) if abs(value) <= float(np.finfo(dtype).max) else dtype.type(np.inf)
    if not np.isfinite(cast):
        raise ValueError(
            f"{name}={value:g} does not fit in {dtype.name} "
            f"(largest {np.finfo(dtype).max:.3g}); use a smaller {name} or float64"
        )
    if value != 0 and cast == 0:
        raise ValueError(
            f"{name}={value:g} rounds to 0 in {dtype.name} "
            f"(smallest {np.finfo(dtype).smallest_subnormal:.3g}); use float64"
        )
    return value


def check_dtype(dtype: Any) -> np.dtype:
    """Map "float64"/"float32" (or the equivalent NumPy dtype) to a NumPy dtype."""
    resolved: np.dtype | None
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[resolved.name]


def check_X(
    X: Any,
    dtype: np.dtype,
    *,
    name: str = "X",
    n_features: int | None = None,
    copy: bool = False,
) -> np.ndarray:
    """Return X as a C-contiguous 2-D array of ``dtype``.

    Lists, integer arrays, other float widths, Fortran-ordered and strided
    arrays are accepted and converted (a copy is made where needed). With
    ``copy`` the result is always a new array, checked after the copy: a
    training reads it for its whole run, and the caller's X may change meanwhile
    (a callback, another thread) (tests/test_validation.py::test_training_keeps_its_own_data).
    """
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    check_real_dtype(arr.dtype, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features (columns) but the model was trained on "
            f"{n_features}"
        )
    if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    with np.errstate(over="ignore"):
        # Not np.array(copy=None): NumPy 1.x, which the package allows, refuses copy=None.
        if copy:
            out = np.array(arr, dtype=dtype, order="C", copy=True)
        else:
            out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(out).all():  # finite before the cast: too large for dtype
        raise ValueError(
            f"{name} holds values too large for {dtype.name} "
            f"(largest {np.finfo(dtype).max:.3g}); scale X or use float64"
        )
    return out


def check_y(y: Any, n_samples: int, *, name: str = "y", copy: bool = False) -> np.ndarray:
    """Return labels as a C-contiguous int64 array of length ``n_samples``.

    Any integer dtype is accepted, and floats that hold whole numbers; labels
    must be >= 0 (class k is column k of the model's scores). With ``copy``
    the labels are copied first and the copy is checked and returned: the
    kernels index with them unchecked, so a training must read exactly what
    was checked, whatever happens to the caller's array during the run
    (tests/test_validation.py::test_training_keeps_its_own_data).
    """
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer class labels, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} labels but X has {n_samples} rows")
    if arr.dtype.kind not in "biuf":  # by kind: np.issubdtype calls durations integers
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if copy:
        arr = arr.copy()
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0, got {arr.min()}")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise ValueError(f"{name} holds a label too large for a class index: {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def memory_bytes() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    import psutil

    sizes = [psutil.virtual_memory().total]
    try:  # a container's limit (cgroup v2), which psutil does not report
        with open("/sys/fs/cgroup/memory.max") as fh:
            sizes.append(int(fh.read().strip()))
    except (OSError, ValueError):  # absent, or "max"
        pass
    return min(sizes)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:,.0f} bytes" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # pragma: no cover


def check_memory(nbytes: float, needs: str) -> None:
    """ValueError if ``nbytes`` exceed :func:`memory_bytes`; ``needs`` names the argument and what
    it makes ("iters=10**12 makes the loss history"), and the message adds both sizes.

    Checked before allocating: NumPy's MemoryError names no argument, and an
    allocation the kernel grants lazily fails only when the memory is touched,
    hours into a run (tests/test_validation.py::test_sizes_too_large_for_memory).
    """
    available = memory_bytes()
    if nbytes > available:
        raise ValueError(
            f"{needs} {_size(nbytes)}, more than the {_size(available)} of memory here"
        )


def empty(shape: Any, dtype: Any, needs: str) -> np.ndarray:
    """``np.empty(shape, dtype)``, or ValueError (see :func:`check_memory`) if it cannot be had."""
    nbytes = math.prod(np.atleast_1d(shape).tolist()) * np.dtype(dtype).itemsize
    check_memory(nbytes, needs)
    try:
        return np.empty(shape, dtype)
    except MemoryError:
        raise ValueError(f"{needs} {_size(nbytes)}, which could not be allocated") from None
