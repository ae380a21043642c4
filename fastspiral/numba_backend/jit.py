"""How the kernels are compiled: options, the target CPU, and kernels passed as function pointers.

Compilation options, shared by every Numba kernel of fastspiral:

* ``fastmath``: "contract" lets LLVM fuse multiply-adds into FMAs and
  "reassoc" lets it vectorise float reductions (dot products over H, softmax
  sums); "nsz" and "arcp" are harmless here. "nnan"/"ninf" are left out on
  purpose: with them LLVM may assume no NaN or inf exists and fold away the
  non-finite losses the training loops must see to report divergence
  (numbagg keeps NaN/inf semantics the same way).
* ``error_model="numpy"``: a division by zero gives inf/NaN (then caught as a
  non-finite loss) instead of a Python exception check in the hot loops.
* the cache: later processes load the compiled code from disk instead of
  compiling again. Each kernel gets :class:`~fastspiral.numba_backend.cache.SafeCache`
  (what ``cache=True`` would install, plus locked saves and damaged entries
  rebuilt), or none where no folder is writable.

How kernels call each other: a kernel that another kernel calls is either
inlined into it (:data:`inline_kernel`) or called by address
(:class:`KernelPointer`), never linked. Linked into its caller, a callee was
held twice in a process, optimised apart and again with the caller, and a
process that had compiled it ran one copy where a process that loaded the
caller from the cache ran the other: the general form's losses and weights
differed in their last bits between a first run and later ones
(tests/test_install.py::test_a_first_run_gives_the_bits_of_later_runs). The
one exception, :data:`exact_kernel`, is small enough that LLVM always
inlines it into the loop it serves.
"""

from __future__ import annotations

import platform

import llvmlite.binding
import numba
from numba import njit, typeof, types
from numba.core.types import FunctionType, WrapperAddressProtocol
from numba.core.typing import signature
from numba.extending import typeof_impl

from .cache import enable_cache

FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
JIT_OPTIONS = dict(nogil=True, fastmath=FASTMATH, error_model="numpy")


def _cached_njit(**options):
    """``njit(**options)``, with the kernel's on-disk cache from :func:`enable_cache`."""
    compile_ = njit(**options)
    return lambda fn: enable_cache(compile_(fn))


#: Decorator of the serial kernels that Python calls (the loops) or that are called by address.
kernel = _cached_njit(**JIT_OPTIONS)
#: Decorator of every other function a kernel calls (row groups, bounds, sums, the softmax):
#: inlined into its caller in Numba's own IR, so LLVM optimises it with the
#: caller's loop and no call crosses a function boundary. Compiled apart,
#: each call of a four-row helper cost ~100 cycles and the case study took
#: 1.6-1.9x longer per iteration (docs/design.md, "Inlined helpers").
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


# -- the target ----------------------------------------------------------------------


def vector_registers() -> int:
    """Vector registers of the CPU Numba compiles for: 32 with AVX-512 or on 64-bit ARM, else 16.

    Read from ``NUMBA_CPU_FEATURES`` where set, else from the host; a
    ``NUMBA_CPU_NAME`` without features counts as 16 (what it implies is not
    known here, and 16 is safe: the code is then only slower with 32).
    """
    if platform.machine().lower() in ("arm64", "aarch64"):
        return 32
    features = getattr(numba.config, "CPU_FEATURES", None)
    if features is None:
        if getattr(numba.config, "CPU_NAME", None) not in (None, "host"):
            return 16
        features = llvmlite.binding.get_host_cpu_features().flatten()
    return 32 if "+avx512f" in features.split(",") else 16


# -- kernels as function pointers --------------------------------------------------------


class KernelPointer(WrapperAddressProtocol):
    """``kernel`` compiled for the types of ``examples`` (from its cache where it is there), as a
    function pointer that compiled loops call.

    A compiled function that calls another links the callee's code into its
    own module, and LLVM optimises and emits that code again: the net's
    parallel loop did so for the slot kernel at four levels (the loop, the
    prange's gufunc and its two wrappers), more than half of a cold compile
    (docs/design.md, "Compile time"). Passed as a first-class function
    (Numba's ``FunctionType``, through its wrapper-address protocol), each
    kernel is compiled once and cached on its own, and the loops stay small
    modules that call it by address. The address is taken in each process,
    so nothing process-bound is cached
    (tests/test_install.py::test_cached_training_loop_loads_in_a_later_process).

    ``examples`` are values of the types the callers pass (Numba checks them
    exactly when typing a call), so the signature is never written by hand.
    ``kernel`` must not raise: the C wrapper called by address passes no
    exception back.
    """

    def __init__(self, kernel, restype: types.Type, examples: tuple):
        if numba.config.DISABLE_JIT:  # type: ignore[attr-defined]
            # The kernels use LLVM intrinsics (the softmax's exp) that have no pure-Python
            # form, so they cannot run as Python; the numpy backend can
            # (tests/test_install.py::test_import_and_the_numpy_backend_work_without_the_jit).
            raise RuntimeError(
                "backend='numba' needs Numba's compiler, which NUMBA_DISABLE_JIT=1 turns off; "
                "use backend='numpy', or unset NUMBA_DISABLE_JIT"
            )
        argtypes = tuple(typeof(value) for value in examples)
        self._signature = signature(restype, *argtypes)
        self._type = FunctionType(self._signature)
        kernel.compile(self._signature)
        compiled = kernel.overloads[argtypes]
        self._kernel = kernel  # holds the compiled code for as long as the pointer lives
        self._address = compiled.library.get_pointer_to_function(
            compiled.fndesc.llvm_cfunc_wrapper_name
        )

    def signature(self):
        return self._signature

    def __wrapper_address__(self) -> int:
        return self._address


@typeof_impl.register(KernelPointer)
def _typeof_kernel_pointer(val, c):
    # Numba's own typeof for the protocol builds the FunctionType, and formats
    # its whole signature, on every call of a loop from Python (~27 us).
    return val._type
