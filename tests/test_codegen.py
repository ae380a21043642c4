"""The hot loops compile to packed (SIMD) fused multiply-adds.

A change can silently cost 4x here: with signed block bounds, Numba's
negative-index wraparound kept LLVM from vectorising the blocked loops, and
every test of results still passed. This reads the generated assembly.
"""

import re

import numpy as np
import pytest
from numba import njit

from fastspiral.numba_backend import general as _tiles_general
from fastspiral.numba_backend import jit as _jit
from fastspiral.numba_backend import loss as _loss
from fastspiral.numba_backend import small as _tiles_small
from fastspiral.numba_backend import tiles as _tiles
from fastspiral.numba_backend.tiles import Tile
from fastspiral.numba_backend.workspace import new_net_params


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            return set(re.search(r"^flags\s*:(.*)$", fh.read(), re.MULTILINE).group(1).split())
    except (OSError, AttributeError):
        return set()


pytestmark = pytest.mark.skipif(
    not {"avx2", "fma"} <= _cpu_flags(),
    reason="checks for AVX2/FMA code; this CPU (or OS) does not report both",
)


def _asm(kernel, *args):
    # Cached functions cannot show their assembly: compile an uncached twin.
    twin = njit(nogil=True, fastmath=_jit.FASTMATH, error_model="numpy")(kernel.py_func)
    twin(*args)
    return next(iter(twin.inspect_asm().values()))


def _tile(T, D, H, K, dtype):
    """A random Tile of T rows for D, K, H in ``dtype``, as the slot kernel builds it."""
    rng = np.random.default_rng(0)
    a = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    params = lambda: new_net_params({"W1": a(D, H), "b1": a(H), "W2": a(H, K), "b2": a(K)}, dtype)  # noqa: E731
    y = rng.integers(0, K, T).astype(np.int64)
    return Tile(a(T, D), y, 1.0 / T, params(), a(T, H), a(T, K), a(T, K), params(), a(4, H))


def _small_asm(name, D, K, dtype):
    """Assembly of a small-form helper over a block of H=1,000 units, for D, K, ``dtype``."""
    H = 1000
    tokens = _tiles.shape_tokens(D, K, dtype)
    assert tokens[1], f"D={D}, K={K} does not take the small form"
    # rows from 0, hidden units 0..H-1
    return _asm(
        getattr(_tiles_small, name),
        _tile(8, D, H, K, dtype),
        0,
        np.uint64(0),
        np.uint64(H),
        *tokens,
    )


_SMALL_HELPERS = [
    "_forward_four_rows",
    "_forward_two_rows",
    "_forward_one_row",
    "_backward_four_rows",
    "_backward_two_rows",
    "_backward_one_row",
]


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "pd"), (np.float32, "ps")])
@pytest.mark.parametrize("name", _SMALL_HELPERS)
def test_hot_loops_use_packed_fma(name, dtype, suffix):
    # Each loop over a block of hidden units is checked on its own: in
    # net_forward/net_backward the vectorised one-row loop would hide a
    # loop over a row group that fell back to scalar code (as it did when the
    # rows' inputs were read inside the loop).
    packed = re.findall(rf"vfmadd\w*{suffix}\s[^\n]*%[yz]mm", _small_asm(name, 2, 3, dtype))
    assert len(packed) >= 4, f"{name}: no 256/512-bit packed FMA in the generated code"


def _small_shapes(edges_only):
    """Every (D, K) the small form admits, or only the largest D for each K (where LLVM gives up
    first)."""
    shapes = [
        (D, K)
        for K in range(1, _tiles.SMALL_K + 1)
        for D in range(1, _tiles.SMALL_D + 1)
        if _tiles.is_small_shape(D, K)
    ]
    if edges_only:
        shapes = [(max(D for D, k in shapes if k == K), K) for K in sorted({K for _, K in shapes})]
    return shapes


def _group_cases():
    """(shape, helper) for every row group the small form may use at a shape: pairs at all of
    them, fours where :func:`fastspiral.numba_backend.tiles.small_row_group` can pick them."""
    edges = _small_shapes(True)
    for D, K in _small_shapes(False):
        marks = () if (D, K) in edges else (pytest.mark.slow,)
        for rows, names in (
            (2, ["_forward_two_rows", "_backward_two_rows"]),
            (4, ["_forward_four_rows", "_backward_four_rows"]),
        ):
            if rows == 2 or D + K <= _tiles.FOURS_D_PLUS_K:
                for name in names:
                    yield pytest.param((D, K), name, id=f"D{D}K{K}-{name}", marks=marks)


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "pd"), (np.float32, "ps")])
@pytest.mark.parametrize("shape,name", list(_group_cases()))
def test_small_form_is_vectorised_at_every_shape(shape, name, dtype, suffix):
    # At D=7 and 8 with K=4, LLVM left the backward pass's loop scalar and the
    # small form ran 1.1-1.3x slower than the general one; _tiles.is_small_shape
    # now sends those shapes to the general form. The largest D for each K
    # runs in the main suite, the rest of the envelope in the slow step.
    D, K = shape
    packed = re.findall(rf"vfmadd\w*{suffix}\s[^\n]*%[yz]mm", _small_asm(name, D, K, dtype))
    assert len(packed) >= D + K, (
        f"{name} at D={D}, K={K}: {len(packed)} packed FMAs, fewer than D + K"
    )


def _general_asm(name, dtype):
    """Assembly of a general-form pass (D=16, K=10, H=1,000), compiled for ``dtype``."""
    return _asm(getattr(_tiles_general, name), _tile(8, 16, 1000, 10, dtype))


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "pd"), (np.float32, "ps")])
@pytest.mark.parametrize("name", ["forward_general", "backward_general"])
def test_general_form_uses_packed_fma(name, dtype, suffix):
    asm = _general_asm(name, dtype)
    packed = re.findall(rf"vfmadd\w*{suffix}\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 4, f"{name}: no 256/512-bit packed FMA in the generated code"


@pytest.mark.parametrize("dtype,suffix", [(np.float64, "sd"), (np.float32, "ss")])
@pytest.mark.parametrize("name", ["forward_pass", "backward_general"])
def test_general_form_never_branches_on_a_value(name, dtype, suffix):
    # (The forward pass proper: the softmax after it keeps one branch per row, on a running
    # product passing 1e200, which is taken once in ~100 rows and predicted.)
    # The ReLU and its mask must be selects: written as a conditional store
    # (`if h[i] < 0: h[i] = 0`) or with a load in one arm, the loops kept a
    # compare-and-branch per hidden unit, mispredicted on half of them, and
    # D=4, K=10 ran 2.8x slower per iteration (every result test passed).
    asm = _general_asm(name, dtype)
    branches = re.findall(rf"\bv?u?comi{suffix}\b", asm)
    assert not branches, (
        f"{name}: {len(branches)} scalar compares for a branch in the generated code"
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_exponentials_are_vectorised(dtype):
    # The flat loop of exponentials (computed in float64 for both dtypes):
    # the Taylor polynomial must run on packed registers, not one call or
    # one scalar FMA chain per score.
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((64, 3)).astype(dtype)
    k_token = _tiles.shape_tokens(1, 3, dtype)[1]
    asm = _asm(
        _loss.softmax_xent_grad,
        scores,
        rng.integers(0, 3, 64),
        1 / 64,
        np.empty_like(scores),
        k_token,
    )
    packed = re.findall(r"vfmadd\w*pd\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 10, "softmax_xent_grad: the exponentials are not vectorised"
    # 2**k comes from k's float bits: a float-to-int64 conversion has no packed
    # AVX2 form, and LLVM converted lane by lane (the AVX2 softmax took 2x as long).
    scalar = re.findall(r"\bv?cvtt?s[sd]2si\b", asm)
    assert not scalar, f"softmax_xent_grad: {len(scalar)} scalar float-to-int conversions"
