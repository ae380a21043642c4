"""Tile kernels of the two layers: the fused forward pass and the fused backward pass.

Layout: X (T, D) C-contiguous rows of a tile; first layer W1 (D, H), b1 (H,);
second layer stored transposed, W2T (K, H), so every loop over the hidden
units runs along a contiguous row and vectorises over H. Kernels write into
buffers the caller owns and allocate nothing.

Two forms of each pass, picked in Python when the training loops get their
kernels as function pointers (:class:`~fastspiral.numba_backend.jit.KernelPointer`):

* small D and K (the spiral's 2 and 3, :func:`is_small_shape`): D and K are
  compile-time constants (the lengths of the shape tokens, :func:`shape_tokens`,
  which the passes of each shape hold), the loops over them sit inside the loop
  over H and are unrolled, and rows go in groups of two or four (as many as the
  vector registers hold) so each weight load serves several rows;
* any other D and K: runtime loops over D and K outside vectorised loops over
  H, features four at a time. One compiled specialisation per dtype serves
  every such shape, so a new shape costs no compile.

Both forms take a :class:`Tile`, whose type says nothing of the shape, so the
slot kernel and the training loops are compiled once per dtype for every
shape; a new small shape compiles its two passes only.

The forms live in :mod:`~fastspiral.numba_backend.small` and
:mod:`~fastspiral.numba_backend.general`; why each was shaped as it is, with the
benchmark that measures it: docs/design.md.

This module holds what they share: the blocks of hidden units (every loop over
the hidden units runs along a contiguous row in blocks of ``H_BLOCK`` units
whose weights and gradients stay in L1/L2 while all rows of a tile pass), the
shapes each form admits, and the shape tokens that select it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba.cpython.unsafe.tuple import tuple_setitem

from .jit import inline_kernel, vector_registers


class Tile(NamedTuple):
    """What a fused pass reads and writes for a tile of rows: the argument of both passes.

    ``forward(tile)`` writes ``hidden = max(X @ W1 + b1, 0)`` and
    ``scores = hidden @ W2T.T + b2`` (a NaN pre-activation stays NaN, as with
    ``np.maximum``), then the softmax cross-entropy's gradient
    ``dscores = scale * (softmax(scores) - onehot(y))``, and returns the
    tile's data loss times ``scale``. ``backward(tile)`` *adds* the tile's gradient to ``g``:
    with ``dhidden = (dscores @ W2T) * (hidden > 0)`` (the case study's
    ``dhidden[hidden <= 0] = 0``), ``g.W2T += dscores.T @ hidden``,
    ``g.b2 += dscores.sum(0)``, ``g.W1 += X.T @ dhidden`` and
    ``g.b1 += dhidden.sum(0)``; ``hidden`` is scratch afterwards (the general
    form keeps dhidden there).
    """

    X: np.ndarray  # (n, D): the tile's rows
    y: np.ndarray  # (n,) int64: their labels
    scale: float  # 1 / rows of the batch: the loss is their mean
    p: Any  # NetParams: the parameters
    hidden: np.ndarray  # (n, H)
    scores: np.ndarray  # (n, K)
    dscores: np.ndarray  # (n, K): the loss's gradient with respect to the scores
    g: Any  # NetParams: the gradient the backward pass adds to
    dh_rows: np.ndarray  # (4, H): the backward pass's scratch rows


#: Hidden units per block of the fused passes (docs/design.md, "Constants").
H_BLOCK = 512
#: Largest D and K compiled as constants. Above them the unrolled row-group
#: loops keep more sums than there are vector registers (and K=1,000 took
#: minutes to compile); the general form takes over.
SMALL_D, SMALL_K = 8, 4
#: Largest D + 2K compiled as constants: beyond it LLVM (Numba 0.68) left the
#: small backward pass's loop over H scalar, and D=7 and 8 with K=4 ran
#: 1.1-1.3x slower than in the general form
#: (tests/test_codegen.py::test_small_form_is_vectorised_at_every_shape).
SMALL_D_PLUS_2K = 14


#: Largest D + K whose four-row groups fit in 32 vector registers: 4·(D + K)
#: inputs and sums, plus the weights and temporaries. At D=8, K=3 four rows
#: spilled and the backward pass took 2x as long as with pairs.
FOURS_D_PLUS_K = 6


def small_row_group(n_features, n_classes) -> int:
    """Rows per group in the small form: 4 where their values fit in the registers, else 2."""
    return 4 if vector_registers() >= 32 and n_features + n_classes <= FOURS_D_PLUS_K else 2


def is_small_shape(n_features, n_classes) -> bool:
    """Whether (D, K) gets the small form's kernels, compiled for that exact shape."""
    return (
        n_features <= SMALL_D
        and n_classes <= SMALL_K
        and n_features + 2 * n_classes <= SMALL_D_PLUS_2K
    )


def shape_tokens(n_features, n_classes, dtype):
    """``(d_token, k_token)``: D and K as tuples of zeros of ``dtype``, or two empty tuples.

    Numba types a tuple by its length, so ``len(d_token)`` is a constant inside a
    kernel and the short loops over D and K unroll (with D and K as runtime
    integers LLVM vectorised the 2- and 3-long loops instead, 5x slower;
    ``numba.literally`` cost ~25 ms per call in the dispatcher). Empty tokens
    select the general form, for the shapes :func:`is_small_shape` refuses.
    """
    if not is_small_shape(n_features, n_classes):
        return (), ()
    zero = np.dtype(dtype).type(0)
    return (zero,) * n_features, (zero,) * n_classes


def is_general(tokens) -> bool:
    """Whether ``tokens`` (from :func:`shape_tokens`) select the general form."""
    return len(tokens[1]) == 0


@inline_kernel
def h_block_bounds(h0, H):
    """Bounds of the block of hidden units from h0, as unsigned integers.

    Where LLVM cannot prove an index >= 0, Numba's wraparound of negative
    indices blocks vectorisation (4x slower with signed bounds;
    tests/test_codegen.py). Index only with them: Numba promotes uint64 mixed
    with int64 to float64.
    """
    return np.uint64(h0), np.uint64(min(h0 + H_BLOCK, H))


@inline_kernel
def row_values(A, t, tok):
    """Row t of A as a tuple of ``len(tok)`` values, read once before a loop over H.

    Read inside that loop they are loads LLVM cannot hoist past the gradient
    stores, and the runtime alias checks made it give up vectorising.
    """
    r = tok
    for j in range(len(tok)):
        r = tuple_setitem(r, j, A[t, j])
    return r
