"""The registry of training backends.

Both modules implement the same functions with the same signatures (see
:mod:`fastspiral._kernels`); the trainers, the tests and the benchmarks all
look implementations up here, so every benchmarked implementation is also a
tested one.
"""

from __future__ import annotations

from types import ModuleType

from . import _kernels, reference

#: Backend name -> module of kernels with the common names.
BACKENDS: dict[str, ModuleType] = {
    "numba": _kernels,
    "numpy": reference,
}


def get_backend(name: str) -> ModuleType:
    """Return the kernel module for ``name``; ValueError naming the choices otherwise."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]
