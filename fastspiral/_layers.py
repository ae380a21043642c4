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

from ._jit import inline_kernel, kernel

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


@inline_kernel
def _block(h0, H):
    """Bounds of the block of hidden units from h0, as unsigned integers.

    Where LLVM cannot prove an index >= 0, Numba's wraparound of negative
    indices blocks vectorisation (4x slower with signed bounds;
    tests/test_codegen.py). Index only with them: Numba promotes uint64 mixed
    with int64 to float64.
    """
    return np.uint64(h0), np.uint64(min(h0 + H_BLOCK, H))


@inline_kernel
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

@inline_kernel
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


@inline_kernel
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


@inline_kernel
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


@inline_kernel
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
# Rows and features (or classes) go four by four: sixteen FMAs per four weight
# loads and four loads and stores of hidden or gradient rows.

@inline_kernel
def general_h_block(D):
    """Hidden units per block in the general form: the block's W1 columns (D x block) stay in L2."""
    return min(H_BLOCK, max(64, 131_072 // max(D, 1) // 64 * 64))


@inline_kernel
def _forward_four_rows_general(X, W1, b1, W2T, hidden, scores, t, lo, hi):
    D, K = X.shape[1], W2T.shape[0]
    D4 = D - D % 4
    zero = hidden.dtype.type(0)
    h0, h1, h2, h3 = hidden[t], hidden[t + 1], hidden[t + 2], hidden[t + 3]
    for h in range(lo, hi):
        c = b1[h]
        h0[h] = c
        h1[h] = c
        h2[h] = c
        h3[h] = c
    for d in range(0, D4, 4):
        x00, x01, x02, x03 = X[t, d], X[t, d + 1], X[t, d + 2], X[t, d + 3]
        x10, x11, x12, x13 = X[t + 1, d], X[t + 1, d + 1], X[t + 1, d + 2], X[t + 1, d + 3]
        x20, x21, x22, x23 = X[t + 2, d], X[t + 2, d + 1], X[t + 2, d + 2], X[t + 2, d + 3]
        x30, x31, x32, x33 = X[t + 3, d], X[t + 3, d + 1], X[t + 3, d + 2], X[t + 3, d + 3]
        w0, w1, w2, w3 = W1[d], W1[d + 1], W1[d + 2], W1[d + 3]
        for h in range(lo, hi):
            a, b, c, e = w0[h], w1[h], w2[h], w3[h]
            h0[h] += (x00 * a + x01 * b) + (x02 * c + x03 * e)
            h1[h] += (x10 * a + x11 * b) + (x12 * c + x13 * e)
            h2[h] += (x20 * a + x21 * b) + (x22 * c + x23 * e)
            h3[h] += (x30 * a + x31 * b) + (x32 * c + x33 * e)
    for d in range(D4, D):
        x0, x1, x2, x3 = X[t, d], X[t + 1, d], X[t + 2, d], X[t + 3, d]
        w = W1[d]
        for h in range(lo, hi):
            h0[h] += x0 * w[h]
            h1[h] += x1 * w[h]
            h2[h] += x2 * w[h]
            h3[h] += x3 * w[h]
    for h in range(lo, hi):
        if h0[h] < 0:
            h0[h] = zero
        if h1[h] < 0:
            h1[h] = zero
        if h2[h] < 0:
            h2[h] = zero
        if h3[h] < 0:
            h3[h] = zero
    for k in range(K):
        w = W2T[k]
        a0 = a1 = a2 = a3 = zero
        for h in range(lo, hi):
            a0 += h0[h] * w[h]
            a1 += h1[h] * w[h]
            a2 += h2[h] * w[h]
            a3 += h3[h] * w[h]
        scores[t, k] += a0
        scores[t + 1, k] += a1
        scores[t + 2, k] += a2
        scores[t + 3, k] += a3


@inline_kernel
def _forward_one_row_general(X, W1, b1, W2T, hidden, scores, t, lo, hi):
    D, K = X.shape[1], W2T.shape[0]
    zero = hidden.dtype.type(0)
    r = hidden[t]
    for h in range(lo, hi):
        r[h] = b1[h]
    for d in range(D):
        x, w = X[t, d], W1[d]
        for h in range(lo, hi):
            r[h] += x * w[h]
    for h in range(lo, hi):
        if r[h] < 0:
            r[h] = zero
    for k in range(K):
        w = W2T[k]
        acc = zero
        for h in range(lo, hi):
            acc += r[h] * w[h]
        scores[t, k] += acc


@kernel
def _forward_general(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    T, H = hidden.shape
    K = W2T.shape[0]
    for t in range(T):
        for k in range(K):
            scores[t, k] = b2[k]
    T4 = T - T % 4
    hb = general_h_block(X.shape[1])
    for h0 in range(0, H, hb):
        lo, hi = np.uint64(h0), np.uint64(min(h0 + hb, H))
        for t in range(0, T4, 4):
            _forward_four_rows_general(X, W1, b1, W2T, hidden, scores, t, lo, hi)
        for t in range(T4, T):
            _forward_one_row_general(X, W1, b1, W2T, hidden, scores, t, lo, hi)


@inline_kernel
def _dhidden_rows(hidden, dscores, W2T, dW2T, db1, grow, t, n, lo, hi):
    """Rows t..t+n-1 (n = 4 or 1): dW2T += their part, and dhidden written over their hidden values.

    grow (4, H) holds the rows' ``dscores @ W2T`` while the classes go by.
    """
    K = W2T.shape[0]
    zero = hidden.dtype.type(0)
    if n == 4:
        h0, h1, h2, h3 = hidden[t], hidden[t + 1], hidden[t + 2], hidden[t + 3]
        g0, g1, g2, g3 = grow[0], grow[1], grow[2], grow[3]
        for h in range(lo, hi):
            g0[h] = zero
            g1[h] = zero
            g2[h] = zero
            g3[h] = zero
        for k in range(K):
            s0, s1, s2, s3 = dscores[t, k], dscores[t + 1, k], dscores[t + 2, k], dscores[t + 3, k]
            w, dw = W2T[k], dW2T[k]
            for h in range(lo, hi):
                dw[h] += (s0 * h0[h] + s1 * h1[h]) + (s2 * h2[h] + s3 * h3[h])
                g0[h] += s0 * w[h]
                g1[h] += s1 * w[h]
                g2[h] += s2 * w[h]
                g3[h] += s3 * w[h]
        for h in range(lo, hi):
            v0 = g0[h] if h0[h] > 0 else zero
            v1 = g1[h] if h1[h] > 0 else zero
            v2 = g2[h] if h2[h] > 0 else zero
            v3 = g3[h] if h3[h] > 0 else zero
            h0[h], h1[h], h2[h], h3[h] = v0, v1, v2, v3
            db1[h] += (v0 + v1) + (v2 + v3)
    else:
        r, g = hidden[t], grow[0]
        for h in range(lo, hi):
            g[h] = zero
        for k in range(K):
            s, w, dw = dscores[t, k], W2T[k], dW2T[k]
            for h in range(lo, hi):
                dw[h] += s * r[h]
                g[h] += s * w[h]
        for h in range(lo, hi):
            v = g[h] if r[h] > 0 else zero
            r[h] = v
            db1[h] += v


@inline_kernel
def _dW1_rows(X, dhidden, dW1, d, t, lo, hi):
    """``dW1[d:d+4] += X[t:t+4, d:d+4].T @ dhidden[t:t+4]`` over hidden units lo..hi-1."""
    x00, x01, x02, x03 = X[t, d], X[t, d + 1], X[t, d + 2], X[t, d + 3]
    x10, x11, x12, x13 = X[t + 1, d], X[t + 1, d + 1], X[t + 1, d + 2], X[t + 1, d + 3]
    x20, x21, x22, x23 = X[t + 2, d], X[t + 2, d + 1], X[t + 2, d + 2], X[t + 2, d + 3]
    x30, x31, x32, x33 = X[t + 3, d], X[t + 3, d + 1], X[t + 3, d + 2], X[t + 3, d + 3]
    g0, g1, g2, g3 = dhidden[t], dhidden[t + 1], dhidden[t + 2], dhidden[t + 3]
    w0, w1, w2, w3 = dW1[d], dW1[d + 1], dW1[d + 2], dW1[d + 3]
    for h in range(lo, hi):
        a, b, c, e = g0[h], g1[h], g2[h], g3[h]
        w0[h] += (x00 * a + x10 * b) + (x20 * c + x30 * e)
        w1[h] += (x01 * a + x11 * b) + (x21 * c + x31 * e)
        w2[h] += (x02 * a + x12 * b) + (x22 * c + x32 * e)
        w3[h] += (x03 * a + x13 * b) + (x23 * c + x33 * e)


@kernel
def _backward_general(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    T, H = hidden.shape
    D, K = X.shape[1], W2T.shape[0]
    for t in range(T):
        for k in range(K):
            db2[k] += dscores[t, k]
    T4, D4 = T - T % 4, D - D % 4
    hb = general_h_block(D)
    for h0 in range(0, H, hb):
        lo, hi = np.uint64(h0), np.uint64(min(h0 + hb, H))
        for t in range(0, T4, 4):
            _dhidden_rows(hidden, dscores, W2T, dW2T, db1, grow, t, 4, lo, hi)
        for t in range(T4, T):
            _dhidden_rows(hidden, dscores, W2T, dW2T, db1, grow, t, 1, lo, hi)
        # dW1 += X.T @ dhidden: four features by four rows, the features outside
        # so that their four rows of dW1 stay in L1 while the tile's rows pass.
        for d in range(0, D4, 4):
            for t in range(0, T4, 4):
                _dW1_rows(X, hidden, dW1, d, t, lo, hi)
        for d in range(D):
            if d < D4:
                t_first = T4
            else:
                t_first = 0
            w = dW1[d]
            for t in range(t_first, T):
                x, g = X[t, d], hidden[t]
                for h in range(lo, hi):
                    w[h] += x * g[h]


# -- the two passes, their form chosen when Numba types the tokens -------------------

# Typing-time dispatch: Numba calls the overload with the argument *types* and
# compiles only the form it returns, so a specialisation never compiles the
# other form (an ``if len(ktok) == 0`` branch would type and lower both).
def _forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    raise NotImplementedError("compiled use only")


def _backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    raise NotImplementedError("compiled use only")


@overload(_forward, inline="always")
def _forward_form(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    impl = _forward_general if len(ktok) == 0 else _forward_small
    return lambda X, W1, b1, W2T, b2, hidden, scores, dtok, ktok: impl(X, W1, b1, W2T, b2, hidden, scores,
                                                                       dtok, ktok)


@overload(_backward, inline="always")
def _backward_form(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    impl = _backward_general if len(ktok) == 0 else _backward_small
    return lambda X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok: impl(
        X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok)


@inline_kernel
def net_forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    """Fused forward pass of a tile: ``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2T.T + b2``.

    Writes hidden (T, H) and scores (T, K). A NaN pre-activation stays NaN
    (NaN < 0 is false), as with ``np.maximum``.
    """
    _forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok)


@inline_kernel
def net_backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    """Fused backward pass of a tile; *adds* the tile's gradient to dW1, db1, dW2T, db2.

    With ``dhidden = (dscores @ W2T) * (hidden > 0)`` (the case study's
    ``dhidden[hidden <= 0] = 0``)::

        dW2T += dscores.T @ hidden      db2 += dscores.sum(0)
        dW1  += X.T @ dhidden           db1 += dhidden.sum(0)

    ``hidden`` is scratch afterwards (the general form stores dhidden in it)
    and ``grow`` (4, H) holds scratch rows.
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
