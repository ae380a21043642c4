"""Compiled kernels handed to the training loops as function pointers.

A compiled function that calls another links the callee's code into its own
module, and LLVM optimises and emits that code again. The net's parallel loop
did so for the slot kernel at four levels (the loop, the prange's gufunc and
its two wrappers): more than half of a cold compile (docs/design.md, "Compile
time"). Passed as a first-class function (Numba's ``FunctionType``, through
its wrapper-address protocol), the slot kernel and the tile passes are each
compiled once, the loops stay small modules that call them by address, and
each is cached on its own.
The address is taken in each process, so nothing process-bound is cached.
(tests/test_install.py::test_cached_training_loop_loads_in_a_later_process).
"""

from __future__ import annotations

from numba import types
from numba.core.types import FunctionType, WrapperAddressProtocol
from numba.core.typing import signature
from numba.extending import typeof_impl


class KernelPointer(WrapperAddressProtocol):
    """``kernel`` compiled for ``argtypes`` (from its cache where it is there), as a function pointer.

    Inside a compiled function it is called like the kernel; the argument
    types must be exactly ``argtypes`` (Numba checks them when typing the
    call). ``kernel`` must not raise: the C wrapper called by address passes
    no exception back.
    """

    def __init__(self, kernel, restype: types.Type, argtypes: tuple[types.Type, ...]):
        self._signature = signature(restype, *argtypes)
        self._type = FunctionType(self._signature)
        kernel.compile(self._signature)
        compiled = kernel.overloads[tuple(argtypes)]
        self._kernel = kernel  # holds the compiled code for as long as the pointer lives
        self._address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_cfunc_wrapper_name)

    def signature(self):
        return self._signature

    def __wrapper_address__(self) -> int:
        return self._address


@typeof_impl.register(KernelPointer)
def _typeof_kernel_pointer(val, c):
    # Numba's own typeof for the protocol builds the FunctionType, and formats
    # its whole signature, on every call of a loop from Python (~27 us).
    return val._type
