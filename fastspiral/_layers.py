"""Tile kernels of the two layers: the fused forward pass and the fused backward pass.

Layout: X (T, D) C-contiguous rows of a tile; first layer W1 (D, H), b1 (H,);
second layer stored transposed, W2T (K, H), so every loop over the hidden
units runs along a contiguous row and vectorises over H. Kernels write into
buffers the caller owns and allocate nothing.

Two forms of each pass, picked at compile time from the dims tokens
(:func:`dims_token`):

* small D and K (the spiral's 2 and 3): D and K are compile-time constants,
  the loops over them sit inside the loop over H and are unrolled, and rows
  go four at a time so each weight load serves four rows;
* any other D and K: runtime loops over D and K outside vectorised loops over
  H, features four at a time. One compiled specialisation per dtype serves
  every such shape, so a new shape costs no compile.

Hidden units go in blocks of ``H_BLOCK`` whose weights and gradients stay in
L1/L2 while all rows of the tile pass. Why each shape was chosen, with the
benchmark that measures it: docs/design.md.
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.tuple import tuple_setitem
from numba.extending import overload

from ._jit import kernel

#: Hidden units per block of the fused passes (docs/design.md, "H block").
H_BLOCK = 512
#: Largest D and K compiled as constants. Above them the unrolled four-row
#: loops keep more sums than there are vector registers (and K=1,000 took
#: minutes to compile); the general form takes over.
SMALL_D, SMALL_K = 8, 4


def dims_token(n_features, n_classes, dtype):
    """``(dtok, ktok)``: D and K as tuples of zeros of ``dtype``, or two empty tuples.

    Numba types a tuple by its length, so ``len(dtok)`` is a constant inside a
    kernel and the short loops over D and K unroll (with D and K as runtime
    integers LLVM vectorised the 2- and 3-long loops instead, 5x slower;
    ``numba.literally`` cost ~25 ms per call in the dispatcher). Empty tokens
    select the general form, for D > SMALL_D or K > SMALL_K.
    """
    if n_features > SMALL_D or n_classes > SMALL_K:
        return (), ()
    zero = np.dtype(dtype).type(0)
    return (zero,) * n_features, (zero,) * n_classes


def is_general(dims) -> bool:
    """Whether ``dims`` (from :func:`dims_token`) selects the general form."""
    return len(dims[1]) == 0


@kernel
def _block(h0, H):
    """Bounds of the block of hidden units from h0, as unsigned integers.

    Where LLVM cannot prove an index >= 0, Numba's wraparound of negative
    indices blocks vectorisation (4x slower with signed bounds;
    tests/test_codegen.py). Index only with them: Numba promotes uint64 mixed
    with int64 to float64.
    """
    return np.uint64(h0), np.uint64(min(h0 + H_BLOCK, H))


@kernel
def _row(A, t, tok):
    """Row t of A as a tuple of ``len(tok)`` values, read once before a loop over H.

    Read inside that loop they are loads LLVM cannot hoist past the gradient
    stores, and the runtime alias checks made it give up vectorising.
    """
    r = tok
    for j in range(len(tok)):
        r = tuple_setitem(r, j, A[t, j])
    return r


# -- small D and K: constants, four rows at a time ------------------------------------

@kernel
def _forward_one_row(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok):
    zero = hidden.dtype.type(0)
    x = _row(X, t, dtok)
    acc = ktok
    for h in range(lo, hi):
        z = b1[h]
        for d in range(len(dtok)):
            z += x[d] * W1[d, h]
        if z < 0:
            z = zero
        hidden[t, h] = z
        for k in range(len(ktok)):
            acc = tuple_setitem(acc, k, acc[k] + z * W2T[k, h])
    for k in range(len(ktok)):
        scores[t, k] += acc[k]


@kernel
def _forward_four_rows(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok):
    """Rows t..t+3: each weight load serves four rows; the K score sums ride in tuples (registers)."""
    zero = hidden.dtype.type(0)  # a literal 0 would turn float32 sums into float64
    x0, x1 = _row(X, t, dtok), _row(X, t + 1, dtok)
    x2, x3 = _row(X, t + 2, dtok), _row(X, t + 3, dtok)
    a0 = a1 = a2 = a3 = ktok
    for h in range(lo, hi):
        z0 = z1 = z2 = z3 = b1[h]
        for d in range(len(dtok)):
            w = W1[d, h]
            z0 += x0[d] * w
            z1 += x1[d] * w
            z2 += x2[d] * w
            z3 += x3[d] * w
        if z0 < 0:
            z0 = zero
        if z1 < 0:
            z1 = zero
        if z2 < 0:
            z2 = zero
        if z3 < 0:
            z3 = zero
        hidden[t, h] = z0
        hidden[t + 1, h] = z1
        hidden[t + 2, h] = z2
        hidden[t + 3, h] = z3
        for k in range(len(ktok)):
            w = W2T[k, h]
            a0 = tuple_setitem(a0, k, a0[k] + z0 * w)
            a1 = tuple_setitem(a1, k, a1[k] + z1 * w)
            a2 = tuple_setitem(a2, k, a2[k] + z2 * w)
            a3 = tuple_setitem(a3, k, a3[k] + z3 * w)
    for k in range(len(ktok)):
        scores[t, k] += a0[k]
        scores[t + 1, k] += a1[k]
        scores[t + 2, k] += a2[k]
        scores[t + 3, k] += a3[k]


@kernel
def _forward_small(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    T, H = hidden.shape
    for t in range(T):
        for k in range(len(ktok)):
            scores[t, k] = b2[k]
    T4 = T - T % 4
    for h0 in range(0, H, H_BLOCK):
        lo, hi = _block(h0, H)
        for t in range(0, T4, 4):
            _forward_four_rows(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok)
        for t in range(T4, T):
            _forward_one_row(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok)


@kernel
def _backward_one_row(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok):
    zero = hidden.dtype.type(0)
    x = _row(X, t, dtok)
    s = _row(dscores, t, ktok)
    for h in range(lo, hi):
        hv = hidden[t, h]
        g = zero
        for k in range(len(ktok)):
            dW2T[k, h] += s[k] * hv
            g += s[k] * W2T[k, h]
        if hv <= 0:
            g = zero
        db1[h] += g
        for d in range(len(dtok)):
            dW1[d, h] += x[d] * g


@kernel
def _backward_four_rows(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok):
    """Rows t..t+3: each load and store of a gradient serves four rows."""
    zero = hidden.dtype.type(0)
    s0, s1 = _row(dscores, t, ktok), _row(dscores, t + 1, ktok)
    s2, s3 = _row(dscores, t + 2, ktok), _row(dscores, t + 3, ktok)
    x0, x1 = _row(X, t, dtok), _row(X, t + 1, dtok)
    x2, x3 = _row(X, t + 2, dtok), _row(X, t + 3, dtok)
    for h in range(lo, hi):
        v0, v1, v2, v3 = hidden[t, h], hidden[t + 1, h], hidden[t + 2, h], hidden[t + 3, h]
        g0 = g1 = g2 = g3 = zero
        for k in range(len(ktok)):
            w = W2T[k, h]
            dW2T[k, h] += (s0[k] * v0 + s1[k] * v1) + (s2[k] * v2 + s3[k] * v3)
            g0 += s0[k] * w
            g1 += s1[k] * w
            g2 += s2[k] * w
            g3 += s3[k] * w
        if v0 <= 0:
            g0 = zero
        if v1 <= 0:
            g1 = zero
        if v2 <= 0:
            g2 = zero
        if v3 <= 0:
            g3 = zero
        db1[h] += (g0 + g1) + (g2 + g3)
        for d in range(len(dtok)):
            dW1[d, h] += (x0[d] * g0 + x1[d] * g1) + (x2[d] * g2 + x3[d] * g3)


@kernel
def _backward_small(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    T, H = hidden.shape
    for t in range(T):
        for k in range(len(ktok)):
            db2[k] += dscores[t, k]
    T4 = T - T % 4
    for h0 in range(0, H, H_BLOCK):
        lo, hi = _block(h0, H)
        for t in range(0, T4, 4):
            _backward_four_rows(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok)
        for t in range(T4, T):
            _backward_one_row(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok)


# -- any D and K: runtime loops around vectorised passes over H ---------------------

@kernel
def _forward_general(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    T, H = hidden.shape
    D, K = X.shape[1], W2T.shape[0]
    D4 = D - D % 4
    zero = hidden.dtype.type(0)
    for t in range(T):
        for k in range(K):
            scores[t, k] = b2[k]
    for h0 in range(0, H, H_BLOCK):
        lo, hi = _block(h0, H)
        for t in range(T):
            for h in range(lo, hi):
                hidden[t, h] = b1[h]
            # Four features per pass: four weight loads and one load and store
            # of the hidden row per four FMAs (one feature per pass: 2 and 1).
            for d in range(0, D4, 4):
                x0, x1, x2, x3 = X[t, d], X[t, d + 1], X[t, d + 2], X[t, d + 3]
                for h in range(lo, hi):
                    hidden[t, h] += (x0 * W1[d, h] + x1 * W1[d + 1, h]) + (x2 * W1[d + 2, h] + x3 * W1[d + 3, h])
            for d in range(D4, D):
                x0 = X[t, d]
                for h in range(lo, hi):
                    hidden[t, h] += x0 * W1[d, h]
            for h in range(lo, hi):
                if hidden[t, h] < 0:
                    hidden[t, h] = zero
            for k in range(K):
                acc = zero
                for h in range(lo, hi):
                    acc += hidden[t, h] * W2T[k, h]
                scores[t, k] += acc


@kernel
def _backward_general(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    T, H = hidden.shape
    D, K = X.shape[1], W2T.shape[0]
    zero = hidden.dtype.type(0)
    for t in range(T):
        for k in range(K):
            db2[k] += dscores[t, k]
    T4 = T - T % 4
    for h0 in range(0, H, H_BLOCK):
        lo, hi = _block(h0, H)
        # Per row: dW2T, then dhidden (in grow), written over the row's hidden
        # values, which nothing needs any more.
        for t in range(T):
            for h in range(lo, hi):
                grow[h] = zero
            for k in range(K):
                s = dscores[t, k]
                for h in range(lo, hi):
                    dW2T[k, h] += s * hidden[t, h]
                    grow[h] += s * W2T[k, h]
            for h in range(lo, hi):
                g = grow[h] if hidden[t, h] > 0 else zero
                hidden[t, h] = g
                db1[h] += g
        # dW1 += X.T @ dhidden, four rows per pass over H.
        for d in range(D):
            for t in range(0, T4, 4):
                x0, x1, x2, x3 = X[t, d], X[t + 1, d], X[t + 2, d], X[t + 3, d]
                for h in range(lo, hi):
                    dW1[d, h] += (x0 * hidden[t, h] + x1 * hidden[t + 1, h]) + \
                        (x2 * hidden[t + 2, h] + x3 * hidden[t + 3, h])
            for t in range(T4, T):
                x0 = X[t, d]
                for h in range(lo, hi):
                    dW1[d, h] += x0 * hidden[t, h]


# -- the two passes, their form chosen when Numba types the tokens -------------------

def _pick(small, general):
    """A stub whose Numba overload is ``small`` or ``general`` by the K token's length."""

    def stub(*args):
        raise NotImplementedError("compiled use only")

    @overload(stub)
    def _choose(*args):
        impl = general if len(args[-1]) == 0 else small
        return lambda *args: impl(*args)

    return stub


_forward = _pick(_forward_small, _forward_general)
_backward = _pick(_backward_small, _backward_general)


@kernel
def net_forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    """Fused forward pass of a tile: ``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2T.T + b2``.

    Writes hidden (T, H) and scores (T, K). A NaN pre-activation stays NaN
    (NaN < 0 is false), as with ``np.maximum``.
    """
    _forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok)


@kernel
def net_backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    """Fused backward pass of a tile; *adds* the tile's gradient to dW1, db1, dW2T, db2.

    With ``dhidden = (dscores @ W2T) * (hidden > 0)`` (the case study's
    ``dhidden[hidden <= 0] = 0``)::

        dW2T += dscores.T @ hidden      db2 += dscores.sum(0)
        dW1  += X.T @ dhidden           db1 += dhidden.sum(0)

    ``hidden`` is scratch afterwards (the general form stores dhidden in it)
    and ``grow`` (H,) is a scratch row.
    """
    _backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok)


@kernel
def linear_forward(X, WT, b, scores):
    """Scores of the linear classifier, ``scores = X @ WT.T + b``; X (T, D), WT (K, D), b (K,)."""
    T, D = X.shape
    K = WT.shape[0]
    for t in range(T):
        for k in range(K):
            acc = b[k]
            for d in range(D):
                acc += X[t, d] * WT[k, d]
            scores[t, k] = acc


@kernel
def linear_backward(X, dscores, dWT, db):
    """Adds ``dscores.T @ X`` to dWT (K, D) and ``dscores.sum(0)`` to db (K,)."""
    T, D = X.shape
    K = dscores.shape[1]
    for t in range(T):
        for k in range(K):
            g = dscores[t, k]
            db[k] += g
            for d in range(D):
                dWT[k, d] += g * X[t, d]
