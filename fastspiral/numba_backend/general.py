"""The fused passes for any D and K: runtime loops over D and K around vectorised loops over H.

One compiled specialisation per dtype serves every shape, so a new shape
costs no compile. The D-long products go four rows by four features
(:func:`_add_4x4`: sixteen FMAs per four loads of one operand and four loads
and stores of the other), in blocks of hidden units whose W1 columns stay
in L2 (:func:`general_h_block`).
"""

from __future__ import annotations

import numpy as np

from .jit import inline_kernel, kernel
from .loss import softmax_xent_grad
from .tiles import H_BLOCK


@inline_kernel
def general_h_block(D):
    """Hidden units per block in the general form: the block's W1 columns (D x block) stay in L2."""
    return min(H_BLOCK, max(64, 131_072 // max(D, 1) // 64 * 64))


@inline_kernel
def _relu(v, zero):
    """``max(v, 0)``, NaN kept (NaN < 0 is false), for a store made whatever the sign.

    Written as ``if v < 0: a[h] = 0``, the store was conditional, so LLVM kept
    a branch per hidden unit (it may not add a store): with half the units
    negative in no pattern the branch predictor can learn, training at D=4,
    K=10 took 2.8x as long per iteration (forward pass 114 against 36 us per
    250 rows; tests/test_codegen.py::test_general_form_never_branches_on_a_value).
    """
    return zero if v < zero else v


@inline_kernel
def _active(g, z, zero):
    """``g`` where the unit was active (``z > 0``), else 0: both values loaded before the choice,
    which is then a select (a load in one arm of ``g[h] if z > 0 else 0`` kept the branch)."""
    return g if z > zero else zero


@inline_kernel
def _four_by_four(A, t, j, transpose):
    """``A[t:t+4, j:j+4]`` (or its transpose) as four tuples of four values, read once before a
    loop over H."""
    r0 = (A[t, j], A[t, j + 1], A[t, j + 2], A[t, j + 3])
    r1 = (A[t + 1, j], A[t + 1, j + 1], A[t + 1, j + 2], A[t + 1, j + 3])
    r2 = (A[t + 2, j], A[t + 2, j + 1], A[t + 2, j + 2], A[t + 2, j + 3])
    r3 = (A[t + 3, j], A[t + 3, j + 1], A[t + 3, j + 2], A[t + 3, j + 3])
    if transpose:
        return (
            (r0[0], r1[0], r2[0], r3[0]),
            (r0[1], r1[1], r2[1], r3[1]),
            (r0[2], r1[2], r2[2], r3[2]),
            (r0[3], r1[3], r2[3], r3[3]),
        )
    return r0, r1, r2, r3


@inline_kernel
def _add_4x4(out, rows, c, lo, hi):
    """``out[i][h] += sum_j c[i][j] * rows[j][h]`` for i, j of four and h in lo..hi-1.

    ``out`` and ``rows`` are four 1-D arrays each. Sixteen FMAs per four loads
    of ``rows`` and four loads and stores of ``out``.
    """
    o0, o1, o2, o3 = out
    s0, s1, s2, s3 = rows
    (c00, c01, c02, c03), (c10, c11, c12, c13), (c20, c21, c22, c23), (c30, c31, c32, c33) = c
    for h in range(lo, hi):
        a, b, e, f = s0[h], s1[h], s2[h], s3[h]
        o0[h] += (c00 * a + c01 * b) + (c02 * e + c03 * f)
        o1[h] += (c10 * a + c11 * b) + (c12 * e + c13 * f)
        o2[h] += (c20 * a + c21 * b) + (c22 * e + c23 * f)
        o3[h] += (c30 * a + c31 * b) + (c32 * e + c33 * f)


@inline_kernel
def _forward_four_rows_general(tile, t, lo, hi):
    X, hidden, scores = tile.X, tile.hidden, tile.scores
    W1, b1, W2T = tile.p.W1, tile.p.b1, tile.p.W2T
    D, K = X.shape[1], W2T.shape[0]
    features_by_4 = D - D % 4
    zero = hidden.dtype.type(0)
    h0, h1, h2, h3 = hidden[t], hidden[t + 1], hidden[t + 2], hidden[t + 3]
    for h in range(lo, hi):
        c = b1[h]
        h0[h] = c
        h1[h] = c
        h2[h] = c
        h3[h] = c
    for d in range(0, features_by_4, 4):
        w = (W1[d], W1[d + 1], W1[d + 2], W1[d + 3])
        _add_4x4((h0, h1, h2, h3), w, _four_by_four(X, t, d, False), lo, hi)
    for d in range(features_by_4, D):
        x0, x1, x2, x3 = X[t, d], X[t + 1, d], X[t + 2, d], X[t + 3, d]
        w = W1[d]
        for h in range(lo, hi):
            h0[h] += x0 * w[h]
            h1[h] += x1 * w[h]
            h2[h] += x2 * w[h]
            h3[h] += x3 * w[h]
    for h in range(lo, hi):
        h0[h] = _relu(h0[h], zero)
        h1[h] = _relu(h1[h], zero)
        h2[h] = _relu(h2[h], zero)
        h3[h] = _relu(h3[h], zero)
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
def _forward_one_row_general(tile, t, lo, hi):
    X, hidden, scores = tile.X, tile.hidden, tile.scores
    W1, b1, W2T = tile.p.W1, tile.p.b1, tile.p.W2T
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
        r[h] = _relu(r[h], zero)
    for k in range(K):
        w = W2T[k]
        acc = zero
        for h in range(lo, hi):
            acc += r[h] * w[h]
        scores[t, k] += acc


@kernel
def forward_general(tile):
    """The forward pass of a tile and its softmax cross-entropy (see ``Tile``); returns the loss."""
    forward_pass(tile)
    return softmax_xent_grad(tile.scores, tile.y, tile.scale, tile.dscores, ())


@inline_kernel
def forward_pass(tile):
    """Scores and hidden layer of a tile (tests/test_codegen.py reads this code on its own)."""
    T, H = tile.hidden.shape
    K = tile.p.W2T.shape[0]
    for t in range(T):
        for k in range(K):
            tile.scores[t, k] = tile.p.b2[k]
    rows_by_4 = T - T % 4
    hb = general_h_block(tile.X.shape[1])
    for h0 in range(0, H, hb):
        lo, hi = np.uint64(h0), np.uint64(min(h0 + hb, H))
        for t in range(0, rows_by_4, 4):
            _forward_four_rows_general(tile, t, lo, hi)
        for t in range(rows_by_4, T):
            _forward_one_row_general(tile, t, lo, hi)


@inline_kernel
def _dhidden_rows(tile, t, n, lo, hi):
    """Rows t..t+n-1 (n = 4 or 1): dW2T += their part, and dhidden written over their hidden values.

    ``dh_rows`` (4, H) holds the rows' ``dscores @ W2T`` while the classes go by.
    """
    hidden, dscores, dh_rows = tile.hidden, tile.dscores, tile.dh_rows
    W2T, dW2T, db1 = tile.p.W2T, tile.g.W2T, tile.g.b1
    K = W2T.shape[0]
    zero = hidden.dtype.type(0)
    if n == 4:
        h0, h1, h2, h3 = hidden[t], hidden[t + 1], hidden[t + 2], hidden[t + 3]
        g0, g1, g2, g3 = dh_rows[0], dh_rows[1], dh_rows[2], dh_rows[3]
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
            v0 = _active(g0[h], h0[h], zero)
            v1 = _active(g1[h], h1[h], zero)
            v2 = _active(g2[h], h2[h], zero)
            v3 = _active(g3[h], h3[h], zero)
            h0[h], h1[h], h2[h], h3[h] = v0, v1, v2, v3
            db1[h] += (v0 + v1) + (v2 + v3)
    else:
        r, g = hidden[t], dh_rows[0]
        for h in range(lo, hi):
            g[h] = zero
        for k in range(K):
            s, w, dw = dscores[t, k], W2T[k], dW2T[k]
            for h in range(lo, hi):
                dw[h] += s * r[h]
                g[h] += s * w[h]
        for h in range(lo, hi):
            v = _active(g[h], r[h], zero)
            r[h] = v
            db1[h] += v


@inline_kernel
def _dW1_rows(tile, d, t, lo, hi):
    """``dW1[d:d+4] += X[t:t+4, d:d+4].T @ dhidden[t:t+4]`` over hidden units lo..hi-1
    (dhidden is in the tile's hidden buffer)."""
    X, dhidden, dW1 = tile.X, tile.hidden, tile.g.W1
    out = (dW1[d], dW1[d + 1], dW1[d + 2], dW1[d + 3])
    rows = (dhidden[t], dhidden[t + 1], dhidden[t + 2], dhidden[t + 3])
    _add_4x4(out, rows, _four_by_four(X, t, d, True), lo, hi)


@kernel
def backward_general(tile):
    X, hidden, dW1 = tile.X, tile.hidden, tile.g.W1
    T, H = hidden.shape
    D, K = X.shape[1], tile.p.W2T.shape[0]
    for t in range(T):
        for k in range(K):
            tile.g.b2[k] += tile.dscores[t, k]
    rows_by_4, features_by_4 = T - T % 4, D - D % 4
    hb = general_h_block(D)
    for h0 in range(0, H, hb):
        lo, hi = np.uint64(h0), np.uint64(min(h0 + hb, H))
        for t in range(0, rows_by_4, 4):
            _dhidden_rows(tile, t, 4, lo, hi)
        for t in range(rows_by_4, T):
            _dhidden_rows(tile, t, 1, lo, hi)
        # dW1 += X.T @ dhidden: four features by four rows, the features outside
        # so that their four rows of dW1 stay in L1 while the tile's rows pass.
        for d in range(0, features_by_4, 4):
            for t in range(0, rows_by_4, 4):
                _dW1_rows(tile, d, t, lo, hi)
        for d in range(D):
            if d < features_by_4:
                t_first = rows_by_4
            else:
                t_first = 0
            w = dW1[d]
            for t in range(t_first, T):
                x, g = X[t, d], hidden[t]
                for h in range(lo, hi):
                    w[h] += x * g[h]
