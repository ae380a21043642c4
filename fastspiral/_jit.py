"""Compilation options shared by every Numba kernel of fastspiral.

* ``fastmath``: "contract" lets LLVM fuse multiply-adds into FMAs and
  "reassoc" lets it vectorise float reductions (dot products over H, softmax
  sums); "nsz" and "arcp" are harmless here. "nnan"/"ninf" are left out on
  purpose: with them LLVM may assume no NaN or inf exists and fold away the
  non-finite losses the training loops must see to report divergence
  (numbagg keeps NaN/inf semantics the same way).
* ``error_model="numpy"``: a division by zero gives inf/NaN (then caught as a
  non-finite loss) instead of a Python exception check in the hot loops.
* the cache: later processes load the compiled code from disk instead of
  compiling again. Each kernel gets :class:`fastspiral._cache.SafeCache`
  (what ``cache=True`` would install, plus locked saves and damaged entries
  rebuilt), or none where no folder is writable.
"""

from __future__ import annotations

from numba import njit

from ._cache import enable_cache

FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
JIT_OPTIONS = dict(nogil=True, fastmath=FASTMATH, error_model="numpy")


def _cached_njit(**options):
    """``njit(**options)``, with the kernel's on-disk cache from :func:`enable_cache`."""
    compile_ = njit(**options)
    return lambda fn: enable_cache(compile_(fn))


#: Decorator of the serial kernels.
kernel = _cached_njit(**JIT_OPTIONS)
#: Decorator of the helpers of a kernel (row groups, bounds, small sums):
#: inlined into their caller in Numba's own IR, so LLVM optimises them with
#: the caller's loop and no call crosses a function boundary. Compiled
#: apart, each call of a four-row helper cost ~100 cycles and the case study
#: took 1.6-1.9x longer per iteration (docs/design.md, "Inlined helpers").
inline_kernel = _cached_njit(inline="always", **JIT_OPTIONS)
#: Decorator of the functions that open ``prange`` regions. They are called
#: from Python only: a compiled caller of a cached parallel function was once
#: cached without the prange's outlined code, and the next process loading
#: it crashed (tests/test_install.py::test_cached_training_loop_loads_in_a_later_process).
parallel_kernel = _cached_njit(parallel=True, **JIT_OPTIONS)
#: For arithmetic whose rounding is part of its specification (the softmax's
#: exp): "contract" only, so "reassoc" cannot merge the two steps of a
#: Cody-Waite argument reduction (the error then grew with |x| to 200 ulp),
#: and the function does not inherit the flags of the kernel that calls it first.
exact_kernel = _cached_njit(nogil=True, fastmath={"contract"}, error_model="numpy")
