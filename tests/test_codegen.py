"""The hot loops compile to packed (SIMD) fused multiply-adds.

A change can silently cost 4x here: with signed block bounds, Numba's
negative-index wraparound kept LLVM from vectorising the blocked loops, and
every test of results still passed. This reads the generated assembly.
"""

import re

import numpy as np
import pytest
from numba import njit

from fastspiral import _kernels as K


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            return set(re.search(r"^flags\s*:(.*)$", fh.read(), re.M).group(1).split())
    except (OSError, AttributeError):
        return set()


pytestmark = pytest.mark.skipif(not {"avx2", "fma"} <= _cpu_flags(),
                                reason="checks for AVX2/FMA code; this CPU (or OS) does not report both")


def _asm(kernel, *args):
    # Cached functions cannot show their assembly: compile an uncached twin.
    twin = njit(nogil=True, fastmath=K.FASTMATH, error_model="numpy")(kernel.py_func)
    twin(*args)
    return next(iter(twin.inspect_asm().values()))


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "pd"), (np.float32, "ps")])
@pytest.mark.parametrize("name", ["net_forward", "net_backward"])
def test_hot_loops_use_packed_fma(name, dtype, suffix):
    T, H = 8, 1000
    rng = np.random.default_rng(0)
    a = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    dtok, ktok = K.dims_token(2, 3, dtype)
    if name == "net_forward":
        args = (a(T, 2), a(2, H), a(H), a(3, H), a(3), a(T, H), a(T, 3), dtok, ktok)
    else:
        args = (a(T, 2), a(T, H), a(T, 3), a(3, H), a(2, H), a(H), a(3, H), a(3), dtok, ktok)
    asm = _asm(getattr(K, name), *args)
    packed = re.findall(rf"vfmadd\w*{suffix}\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 4, f"{name}: no 256/512-bit packed FMA in the generated code"
