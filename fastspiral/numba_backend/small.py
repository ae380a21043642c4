"""The fused passes for small D and K (the spiral's 2 and 3), compiled with D and K as constants.

The loops over D and K sit inside the loop over H and are unrolled; the K
score sums ride in tuples (registers). Rows go in groups so each weight
load serves several rows, as many as the registers hold
(:func:`~fastspiral.numba_backend.tiles.small_row_group`): four where the
CPU has 32 vector registers and 4·(D + K) values fit, else pairs. On AVX2's
16 registers four rows spilled, and the case study ran 1.3x slower per
iteration; with AVX-512, pairs ran 7-15% slower at H=1,000, loading each
weight twice as often (docs/design.md, "Two forms"). One specialisation per
(D, K, dtype), for the shapes :func:`~fastspiral.numba_backend.tiles.is_small_shape` admits.
"""

from __future__ import annotations

import functools

from numba.cpython.unsafe.tuple import tuple_setitem

from .jit import inline_kernel, kernel
from .loss import softmax_xent_grad
from .tiles import H_BLOCK, h_block_bounds, row_values, shape_tokens


@inline_kernel
def _forward_one_row(tile, t, lo, hi, d_token, k_token):
    X, hidden, scores = tile.X, tile.hidden, tile.scores
    W1, b1, W2T = tile.p.W1, tile.p.b1, tile.p.W2T
    zero = hidden.dtype.type(0)
    x = row_values(X, t, d_token)
    acc = k_token
    for h in range(lo, hi):
        z = b1[h]
        for d in range(len(d_token)):
            z += x[d] * W1[d, h]
        if z < 0:
            z = zero
        hidden[t, h] = z
        for k in range(len(k_token)):
            acc = tuple_setitem(acc, k, acc[k] + z * W2T[k, h])
    for k in range(len(k_token)):
        scores[t, k] += acc[k]


@inline_kernel
def _forward_two_rows(tile, t, lo, hi, d_token, k_token):
    """Rows t, t+1: each weight load serves two rows; the K score sums ride in tuples."""
    X, hidden, scores = tile.X, tile.hidden, tile.scores
    W1, b1, W2T = tile.p.W1, tile.p.b1, tile.p.W2T
    zero = hidden.dtype.type(0)  # a literal 0 would turn float32 sums into float64
    x0, x1 = row_values(X, t, d_token), row_values(X, t + 1, d_token)
    a0 = a1 = k_token
    for h in range(lo, hi):
        z0 = z1 = b1[h]
        for d in range(len(d_token)):
            w = W1[d, h]
            z0 += x0[d] * w
            z1 += x1[d] * w
        if z0 < 0:
            z0 = zero
        if z1 < 0:
            z1 = zero
        hidden[t, h] = z0
        hidden[t + 1, h] = z1
        for k in range(len(k_token)):
            w = W2T[k, h]
            a0 = tuple_setitem(a0, k, a0[k] + z0 * w)
            a1 = tuple_setitem(a1, k, a1[k] + z1 * w)
    for k in range(len(k_token)):
        scores[t, k] += a0[k]
        scores[t + 1, k] += a1[k]


@inline_kernel
def _forward_four_rows(tile, t, lo, hi, d_token, k_token):
    """Rows t..t+3: each weight load serves four rows; the K score sums ride in tuples."""
    X, hidden, scores = tile.X, tile.hidden, tile.scores
    W1, b1, W2T = tile.p.W1, tile.p.b1, tile.p.W2T
    zero = hidden.dtype.type(0)  # a literal 0 would turn float32 sums into float64
    x0, x1 = row_values(X, t, d_token), row_values(X, t + 1, d_token)
    x2, x3 = row_values(X, t + 2, d_token), row_values(X, t + 3, d_token)
    a0 = a1 = a2 = a3 = k_token
    for h in range(lo, hi):
        z0 = z1 = z2 = z3 = b1[h]
        for d in range(len(d_token)):
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
        for k in range(len(k_token)):
            w = W2T[k, h]
            a0 = tuple_setitem(a0, k, a0[k] + z0 * w)
            a1 = tuple_setitem(a1, k, a1[k] + z1 * w)
            a2 = tuple_setitem(a2, k, a2[k] + z2 * w)
            a3 = tuple_setitem(a3, k, a3[k] + z3 * w)
    for k in range(len(k_token)):
        scores[t, k] += a0[k]
        scores[t + 1, k] += a1[k]
        scores[t + 2, k] += a2[k]
        scores[t + 3, k] += a3[k]


@inline_kernel
def _forward_tile(group, rows, tile, d_token, k_token):
    """The forward pass of a tile, ``rows`` rows at a time through ``group`` (then one by one),
    then the softmax cross-entropy: the tile's data loss returned, its gradient in ``dscores``."""
    T, H = tile.hidden.shape
    for t in range(T):
        for k in range(len(k_token)):
            tile.scores[t, k] = tile.p.b2[k]
    grouped = T - T % rows
    for h0 in range(0, H, H_BLOCK):
        lo, hi = h_block_bounds(h0, H)
        for t in range(0, grouped, rows):
            group(tile, t, lo, hi, d_token, k_token)
        for t in range(grouped, T):
            _forward_one_row(tile, t, lo, hi, d_token, k_token)
    return softmax_xent_grad(tile.scores, tile.y, tile.scale, tile.dscores, k_token)


@inline_kernel
def _backward_one_row(tile, t, lo, hi, d_token, k_token):
    X, hidden, dscores = tile.X, tile.hidden, tile.dscores
    W2T, dW1, db1, dW2T = tile.p.W2T, tile.g.W1, tile.g.b1, tile.g.W2T
    zero = hidden.dtype.type(0)
    x = row_values(X, t, d_token)
    s = row_values(dscores, t, k_token)
    for h in range(lo, hi):
        hv = hidden[t, h]
        g = zero
        for k in range(len(k_token)):
            dW2T[k, h] += s[k] * hv
            g += s[k] * W2T[k, h]
        if hv <= 0:
            g = zero
        db1[h] += g
        for d in range(len(d_token)):
            dW1[d, h] += x[d] * g


@inline_kernel
def _backward_two_rows(tile, t, lo, hi, d_token, k_token):
    """Rows t, t+1: each load and store of a gradient serves two rows."""
    X, hidden, dscores = tile.X, tile.hidden, tile.dscores
    W2T, dW1, db1, dW2T = tile.p.W2T, tile.g.W1, tile.g.b1, tile.g.W2T
    zero = hidden.dtype.type(0)
    s0, s1 = row_values(dscores, t, k_token), row_values(dscores, t + 1, k_token)
    x0, x1 = row_values(X, t, d_token), row_values(X, t + 1, d_token)
    for h in range(lo, hi):
        v0, v1 = hidden[t, h], hidden[t + 1, h]
        g0 = g1 = zero
        for k in range(len(k_token)):
            w = W2T[k, h]
            dW2T[k, h] += s0[k] * v0 + s1[k] * v1
            g0 += s0[k] * w
            g1 += s1[k] * w
        if v0 <= 0:
            g0 = zero
        if v1 <= 0:
            g1 = zero
        db1[h] += g0 + g1
        for d in range(len(d_token)):
            dW1[d, h] += x0[d] * g0 + x1[d] * g1


@inline_kernel
def _backward_four_rows(tile, t, lo, hi, d_token, k_token):
    """Rows t..t+3: each load and store of a gradient serves four rows."""
    X, hidden, dscores = tile.X, tile.hidden, tile.dscores
    W2T, dW1, db1, dW2T = tile.p.W2T, tile.g.W1, tile.g.b1, tile.g.W2T
    zero = hidden.dtype.type(0)
    s0, s1 = row_values(dscores, t, k_token), row_values(dscores, t + 1, k_token)
    s2, s3 = row_values(dscores, t + 2, k_token), row_values(dscores, t + 3, k_token)
    x0, x1 = row_values(X, t, d_token), row_values(X, t + 1, d_token)
    x2, x3 = row_values(X, t + 2, d_token), row_values(X, t + 3, d_token)
    for h in range(lo, hi):
        v0, v1, v2, v3 = hidden[t, h], hidden[t + 1, h], hidden[t + 2, h], hidden[t + 3, h]
        g0 = g1 = g2 = g3 = zero
        for k in range(len(k_token)):
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
        for d in range(len(d_token)):
            dW1[d, h] += (x0[d] * g0 + x1[d] * g1) + (x2[d] * g2 + x3[d] * g3)


@inline_kernel
def _backward_tile(group, rows, tile, d_token, k_token):
    """The backward pass of a tile, ``rows`` rows at a time through ``group`` (then one by one)."""
    T, H = tile.hidden.shape
    for t in range(T):
        for k in range(len(k_token)):
            tile.g.b2[k] += tile.dscores[t, k]
    grouped = T - T % rows
    for h0 in range(0, H, H_BLOCK):
        lo, hi = h_block_bounds(h0, H)
        for t in range(0, grouped, rows):
            group(tile, t, lo, hi, d_token, k_token)
        for t in range(grouped, T):
            _backward_one_row(tile, t, lo, hi, d_token, k_token)


@functools.cache
def small_form(n_features, n_classes, dtype, fours):
    """``(forward, backward)``: the passes compiled for D and K as constants, in ``dtype``, rows
    four at a time (``fours``) or in pairs.

    The shape tokens are the passes' closure variables, so each shape's passes
    are kernels of their own (cached on disk by the tokens too), while their
    argument, a :class:`~fastspiral.numba_backend.tiles.Tile`, has one type
    for every shape.
    """
    d_token, k_token = shape_tokens(n_features, n_classes, dtype)
    if fours:

        def forward(tile):
            return _forward_tile(_forward_four_rows, 4, tile, d_token, k_token)

        def backward(tile):
            _backward_tile(_backward_four_rows, 4, tile, d_token, k_token)
    else:

        def forward(tile):
            return _forward_tile(_forward_two_rows, 2, tile, d_token, k_token)

        def backward(tile):
            _backward_tile(_backward_two_rows, 2, tile, d_token, k_token)

    return kernel(forward), kernel(backward)
