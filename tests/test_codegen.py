"""The hot loops compile to packed (SIMD) fused multiply-adds.

A change can silently cost 4x here: with signed block bounds, Numba's
negative-index wraparound kept LLVM from vectorising the blocked loops, and
every test of results still passed. This reads the generated assembly.
"""

import re

import numpy as np
import pytest
from numba import njit

from fastspiral import _jit, _loss, _tiles, _tiles_general, _tiles_small


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            return set(re.search(r"^flags\s*:(.*)$", fh.read(), re.MULTILINE).group(1).split())
    except (OSError, AttributeError):
        return set()


pytestmark = pytest.mark.skipif(not {"avx2", "fma"} <= _cpu_flags(),
                                reason="checks for AVX2/FMA code; this CPU (or OS) does not report both")


def _asm(kernel, *args):
    # Cached functions cannot show their assembly: compile an uncached twin.
    twin = njit(nogil=True, fastmath=_jit.FASTMATH, error_model="numpy")(kernel.py_func)
    twin(*args)
    return next(iter(twin.inspect_asm().values()))


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "pd"), (np.float32, "ps")])
@pytest.mark.parametrize("name", ["_forward_four_rows", "_forward_one_row", "_backward_four_rows",
                                  "_backward_one_row"])
def test_hot_loops_use_packed_fma(name, dtype, suffix):
    # Each loop over a block of hidden units is checked on its own: in
    # net_forward/net_backward the vectorised one-row loop would hide a
    # four-row loop that fell back to scalar code (as it did when the rows'
    # inputs were read inside the loop).
    T, H = 8, 1000
    rng = np.random.default_rng(0)
    a = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    dtok, ktok = _tiles.dims_token(2, 3, dtype)
    block = (0, np.uint64(0), np.uint64(H), dtok, ktok)  # rows from 0, hidden units 0..H-1
    if name.startswith("_forward"):
        args = (a(T, 2), a(2, H), a(H), a(3, H), a(T, H), a(T, 3), *block)
    else:
        args = (a(T, 2), a(T, H), a(T, 3), a(3, H), a(2, H), a(H), a(3, H), *block)
    asm = _asm(getattr(_tiles_small, name), *args)
    packed = re.findall(rf"vfmadd\w*{suffix}\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 4, f"{name}: no 256/512-bit packed FMA in the generated code"


def _general_asm(name, dtype):
    """Assembly of a general-form pass (D=16, K=10, H=1,000), compiled for ``dtype``."""
    T, D, H, K = 8, 16, 1000, 10
    rng = np.random.default_rng(0)
    a = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    if name == "forward_general":
        args = (a(T, D), a(D, H), a(H), a(K, H), a(K), a(T, H), a(T, K), (), ())
    else:
        args = (a(T, D), a(T, H), a(T, K), a(K, H), a(D, H), a(H), a(K, H), a(K), a(4, H), (), ())
    return _asm(getattr(_tiles_general, name), *args)


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "pd"), (np.float32, "ps")])
@pytest.mark.parametrize("name", ["forward_general", "backward_general"])
def test_general_form_uses_packed_fma(name, dtype, suffix):
    asm = _general_asm(name, dtype)
    packed = re.findall(rf"vfmadd\w*{suffix}\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 4, f"{name}: no 256/512-bit packed FMA in the generated code"


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "sd"), (np.float32, "ss")])
@pytest.mark.parametrize("name", ["forward_general", "backward_general"])
def test_general_form_never_branches_on_a_value(name, dtype, suffix):
    # The ReLU and its mask must be selects: written as a conditional store
    # (`if h[i] < 0: h[i] = 0`) or with a load in one arm, the loops kept a
    # compare-and-branch per hidden unit, mispredicted on half of them, and
    # D=4, K=10 ran 2.8x slower per iteration (every result test passed).
    asm = _general_asm(name, dtype)
    branches = re.findall(rf"\bv?u?comi{suffix}\b", asm)
    assert not branches, f"{name}: {len(branches)} scalar compares for a branch in the generated code"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_exponentials_are_vectorised(dtype):
    # The flat loop of exponentials (computed in float64 for both dtypes):
    # the Taylor polynomial must run on packed registers, not one call or
    # one scalar FMA chain per score.
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((64, 3)).astype(dtype)
    ktok = _tiles.dims_token(1, 3, dtype)[1]
    asm = _asm(_loss.softmax_xent_grad, scores, rng.integers(0, 3, 64), 1 / 64, np.empty_like(scores), ktok)
    packed = re.findall(r"vfmadd\w*pd\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 10, "softmax_xent_grad: the exponentials are not vectorised"
