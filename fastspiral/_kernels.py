"""Numba kernels: the ``"numba"`` backend.

Layout and conventions
----------------------
* ``X`` is (N, D) C-contiguous; labels ``y`` are int64.
* The first layer is stored as ``W1`` (D, H), ``b1`` (H,). The second layer
  is stored *transposed*, ``W2T`` (K, H), so that every loop over the hidden
  units runs along a contiguous row: the score dot products, the backward
  product ``dscores @ W2`` and the ``dW2`` accumulation all vectorise over H.
  The public API hands out ``W2`` (H, K) and transposes once per training call.
* Kernels return nothing (or a scalar loss) and write into buffers that the
  caller allocated once per training call; no kernel allocates, so the
  training loop allocates nothing per iteration.
* Arrays arrive in one dtype (float32 or float64) and accumulate in that
  dtype; loss sums are accumulated in float64.

The same names, with the same signatures, are implemented with whole-batch
NumPy in :mod:`fastspiral.reference`; the tests hold each kernel here against
its twin there.

Memory
------
The net is trained tile by tile: each thread runs ``T`` rows at a time through
forward, softmax, backward and gradient accumulation, with (T, H) scratch
tiles sized to stay in cache. The (N, H) hidden layer is never materialised,
so memory grows with N (the data) and with H (the weights), never with N*H.

Threads
-------
``net_loss_grad`` gives each of P thread slots a contiguous block of rows and
its own gradient buffers (slot p of every ``(P, ...)`` buffer), runs the slots
in a ``prange``, then sums the slots serially. Nothing is ``+=``-ed into a
shared array inside the ``prange``, so results depend on P only through the
order of the final additions. With P == 1 the prange is not entered at all,
so small problems pay no thread start-up cost.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# One place for the compilation options of every kernel.
# fastmath: "contract" lets LLVM fuse multiply-adds into FMA and "reassoc" lets
# it vectorise the float reductions (dot products over H, softmax sums). The
# "nnan"/"ninf" flags are deliberately left out: with them LLVM may assume no
# NaN/inf exists and fold away exactly the non-finite losses the training loop
# must detect to report divergence.
FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
# error_model="numpy": a division by zero gives inf/NaN (then caught as a
# non-finite loss) instead of a Python ZeroDivisionError check in the hot loops.
JIT_OPTIONS = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

kernel = njit(**JIT_OPTIONS)
parallel_kernel = njit(parallel=True, **JIT_OPTIONS)

#: Scratch elements per (T, H) tile: 16 Ki elements is 128 KiB in float64,
#: two tiles (hidden and its gradient) per thread fit in a typical L2 cache.
TILE_ELEMENTS = 16_384


# --------------------------------------------------------------------------
# Small kernels: one step of the forward or backward pass each.
# --------------------------------------------------------------------------


@kernel
def affine_relu(X, W, b, out):
    """Hidden layer: ``out = max(X @ W + b, 0)``, written in place.

    X (T, D), W (D, H), b (H,), out (T, H). NaN stays NaN (NaN < 0 is false),
    as with ``np.maximum``.
    """
    T, D = X.shape
    H = W.shape[1]
    for t in range(T):
        row = out[t]
        for h in range(H):
            row[h] = b[h]
        for d in range(D):
            x = X[t, d]
            for h in range(H):
                row[h] += x * W[d, h]
        for h in range(H):
            if row[h] < 0:
                row[h] = 0


@kernel
def affine_t(A, WT, b, out):
    """Scores: ``out = A @ WT.T + b``, written in place.

    A (T, I), WT (J, I), b (J,), out (T, J). Each output is a dot product of
    two contiguous rows of length I.
    """
    T, I = A.shape
    J = WT.shape[0]
    for t in range(T):
        for j in range(J):
            acc = b[j]
            for i in range(I):
                acc += A[t, i] * WT[j, i]
            out[t, j] = acc


@kernel
def softmax_xent_grad(scores, y, scale, dscores):
    """Softmax cross-entropy and its gradient on the scores.

    Writes ``dscores = scale * (softmax(scores) - onehot(y))`` and returns
    ``scale * sum_t -log softmax(scores[t])[y[t]]`` as a float64.

    scores, dscores (T, K); y (T,) int64; scale is 1/N for the mean over the
    full batch. The row maximum is subtracted before exponentiating, so large
    scores cannot overflow, and the log-probability is computed as
    ``log(sum exp(s - m)) - (s_y - m)`` rather than ``-log(p_y)``, which loses
    no precision when p_y is tiny. A NaN or inf score gives a NaN loss.
    """
    T, K = scores.shape
    loss = 0.0
    for t in range(T):
        m = scores[t, 0]
        for k in range(1, K):
            if scores[t, k] > m:
                m = scores[t, k]
        total = scores[t, 0] - scores[t, 0]  # a zero of the scores' dtype
        for k in range(K):
            e = np.exp(scores[t, k] - m)
            dscores[t, k] = e
            total += e
        label = y[t]
        loss += math.log(total) - (scores[t, label] - m)
        inv = scale / total
        for k in range(K):
            dscores[t, k] *= inv
        dscores[t, label] -= scale
    return loss * scale


@kernel
def relu_backward(dscores, WT, hidden, dhidden):
    """Gradient on the hidden layer: ``dhidden = (dscores @ WT) * (hidden > 0)``.

    dscores (T, K), WT (K, H), hidden and dhidden (T, H). The ReLU passes the
    gradient where its output was positive and blocks it elsewhere (the case
    study's ``dhidden[hidden <= 0] = 0``).
    """
    T, K = dscores.shape
    H = WT.shape[1]
    for t in range(T):
        row = dhidden[t]
        for h in range(H):
            row[h] = 0
        for k in range(K):
            g = dscores[t, k]
            for h in range(H):
                row[h] += g * WT[k, h]
        for h in range(H):
            if hidden[t, h] <= 0:
                row[h] = 0


@kernel
def accumulate_grad(A, dout, dW):
    """Weight gradient of an affine layer: ``dW += A.T @ dout``, in place.

    A (T, I), dout (T, J), dW (I, J). Layer 1 passes (X, dhidden, dW1); the
    transposed layer 2 passes (dscores, hidden, dW2T), so J is the long,
    contiguous axis in both.
    """
    T, I = A.shape
    J = dout.shape[1]
    for t in range(T):
        for i in range(I):
            a = A[t, i]
            for j in range(J):
                dW[i, j] += a * dout[t, j]


@kernel
def accumulate_bias(dout, db):
    """Bias gradient: ``db += dout.sum(axis=0)``, in place. dout (T, J), db (J,)."""
    T, J = dout.shape
    for t in range(T):
        for j in range(J):
            db[j] += dout[t, j]


@kernel
def sgd_update(W, dW, step_size, reg):
    """Gradient-descent step with L2: ``W -= step_size * (dW + reg * W)``, in place.

    W and dW are C-contiguous and of the same shape; ``reg = 0`` for biases.
    ``dW`` is not modified.
    """
    w = W.reshape(W.size)
    g = dW.reshape(dW.size)
    for i in range(w.size):
        w[i] -= step_size * (g[i] + reg * w[i])


@kernel
def sum_squares(W):
    """``sum(W * W)`` accumulated in float64 (for the L2 term of the loss)."""
    w = W.reshape(W.size)
    acc = 0.0
    for i in range(w.size):
        acc += w[i] * w[i]
    return acc


@kernel
def _fill_zero(a):
    v = a.reshape(a.size)
    for i in range(v.size):
        v[i] = 0


@kernel
def _add_into(dst, src):
    d = dst.reshape(dst.size)
    s = src.reshape(src.size)
    for i in range(d.size):
        d[i] += s[i]


# --------------------------------------------------------------------------
# Fused passes over the data
# --------------------------------------------------------------------------


@kernel
def _net_rows(X, y, W1, b1, W2T, b2, scale, r0, r1,
              hidden, dhidden, scores, dscores, dW1, db1, dW2T, db2):
    """Forward and backward pass of rows r0:r1, tile by tile.

    Adds their gradient to dW1, db1, dW2T, db2 and returns their data loss
    (already multiplied by ``scale``). hidden/dhidden (T, H) and
    scores/dscores (T, K) are this thread's scratch tiles.
    """
    T = hidden.shape[0]
    loss = 0.0
    for s in range(r0, r1, T):
        e = min(s + T, r1)
        n = e - s
        Xt = X[s:e]
        h = hidden[:n]
        dh = dhidden[:n]
        sc = scores[:n]
        ds = dscores[:n]
        affine_relu(Xt, W1, b1, h)
        affine_t(h, W2T, b2, sc)
        loss += softmax_xent_grad(sc, y[s:e], scale, ds)
        accumulate_grad(ds, h, dW2T)
        accumulate_bias(ds, db2)
        relu_backward(ds, W2T, h, dh)
        accumulate_grad(Xt, dh, dW1)
        accumulate_bias(dh, db1)
    return loss


@parallel_kernel
def net_loss_grad(X, y, W1, b1, W2T, b2, reg, scale,
                  hidden, dhidden, scores, dscores, dW1, db1, dW2T, db2, losses):
    """Loss and full-batch gradient of the 2-layer net at the current weights.

    Returns ``data_loss + 0.5 * reg * (sum(W1**2) + sum(W2T**2))`` and leaves
    the gradient of the data loss in slot 0 of dW1, db1, dW2T, db2 (shapes
    (P, D, H), (P, H), (P, K, H), (P, K)); the L2 gradient ``reg * W`` is added
    by :func:`sgd_update`. hidden/dhidden (P, T, H), scores/dscores (P, T, K)
    and losses (P,) are scratch. ``scale`` is 1/N.
    """
    P = dW1.shape[0]
    N = X.shape[0]
    if P == 1:
        _fill_zero(dW1)
        _fill_zero(db1)
        _fill_zero(dW2T)
        _fill_zero(db2)
        losses[0] = _net_rows(X, y, W1, b1, W2T, b2, scale, 0, N,
                              hidden[0], dhidden[0], scores[0], dscores[0],
                              dW1[0], db1[0], dW2T[0], db2[0])
    else:
        for p in prange(P):
            _fill_zero(dW1[p])
            _fill_zero(db1[p])
            _fill_zero(dW2T[p])
            _fill_zero(db2[p])
            losses[p] = _net_rows(X, y, W1, b1, W2T, b2, scale,
                                  p * N // P, (p + 1) * N // P,
                                  hidden[p], dhidden[p], scores[p], dscores[p],
                                  dW1[p], db1[p], dW2T[p], db2[p])
        # Reduction of the per-thread slots, serially and in a fixed order.
        for p in range(1, P):
            _add_into(dW1[0], dW1[p])
            _add_into(db1[0], db1[p])
            _add_into(dW2T[0], dW2T[p])
            _add_into(db2[0], db2[p])
    data_loss = 0.0
    for p in range(P):
        data_loss += losses[p]
    return data_loss + 0.5 * reg * (sum_squares(W1) + sum_squares(W2T))


@kernel
def train_net_steps(X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                    hidden, dhidden, scores, dscores, dW1, db1, dW2T, db2, losses):
    """Run gradient-descent iterations ``start..stop-1`` of the net, in place.

    ``loss_history[i]`` receives the loss at iteration i, evaluated before that
    iteration's update. Returns -1, or the first iteration whose loss is not
    finite (the weights are then left as they were before that iteration).
    The remaining arguments are the workspace from :func:`net_workspace`.
    """
    scale = 1.0 / X.shape[0]
    zero = step_size - step_size
    for it in range(start, stop):
        loss = net_loss_grad(X, y, W1, b1, W2T, b2, reg, scale,
                             hidden, dhidden, scores, dscores, dW1, db1, dW2T, db2, losses)
        loss_history[it] = loss
        if not math.isfinite(loss):
            return it
        sgd_update(W1, dW1[0], step_size, reg)
        sgd_update(b1, db1[0], step_size, zero)
        sgd_update(W2T, dW2T[0], step_size, reg)
        sgd_update(b2, db2[0], step_size, zero)
    return -1


def net_workspace(n_samples, n_features, n_hidden, n_classes, dtype, n_threads):
    """Scratch and gradient buffers for :func:`train_net_steps`, allocated once per call.

    Per thread slot: a (T, H) hidden tile and its gradient, (T, K) score tiles,
    and one set of gradient buffers; T is chosen so a tile stays in cache.
    Size O(P * (T + D + K) * H), independent of N * H.
    """
    P = max(1, min(int(n_threads), n_samples))
    rows_per_slot = -(-n_samples // P)
    T = max(1, min(rows_per_slot, TILE_ELEMENTS // max(n_hidden, 1)))
    H, D, K = n_hidden, n_features, n_classes
    return (
        np.empty((P, T, H), dtype), np.empty((P, T, H), dtype),
        np.empty((P, T, K), dtype), np.empty((P, T, K), dtype),
        np.empty((P, D, H), dtype), np.empty((P, H), dtype),
        np.empty((P, K, H), dtype), np.empty((P, K), dtype),
        np.empty(P, np.float64),
    )


@kernel
def linear_loss_grad(X, y, WT, b, reg, scale, scores, dscores, dWT, db):
    """Loss and full-batch gradient of the softmax linear classifier.

    Returns ``data_loss + 0.5 * reg * sum(WT**2)``; writes the data-loss
    gradient into dWT (K, D) and db (K,). scores/dscores (T, K) are scratch
    tiles. With D and K this small the work is a few flops per row, so it runs
    on one thread: a parallel region would cost more than it saves.
    """
    N = X.shape[0]
    T = scores.shape[0]
    _fill_zero(dWT)
    _fill_zero(db)
    loss = 0.0
    for s in range(0, N, T):
        e = min(s + T, N)
        n = e - s
        Xt = X[s:e]
        sc = scores[:n]
        ds = dscores[:n]
        affine_t(Xt, WT, b, sc)
        loss += softmax_xent_grad(sc, y[s:e], scale, ds)
        accumulate_grad(ds, Xt, dWT)
        accumulate_bias(ds, db)
    return loss + 0.5 * reg * sum_squares(WT)


@kernel
def train_linear_steps(X, y, WT, b, step_size, reg, loss_history, start, stop,
                       scores, dscores, dWT, db):
    """Run iterations ``start..stop-1`` of the linear classifier, in place.

    Same contract as :func:`train_net_steps`; the workspace comes from
    :func:`linear_workspace`.
    """
    scale = 1.0 / X.shape[0]
    zero = step_size - step_size
    for it in range(start, stop):
        loss = linear_loss_grad(X, y, WT, b, reg, scale, scores, dscores, dWT, db)
        loss_history[it] = loss
        if not math.isfinite(loss):
            return it
        sgd_update(WT, dWT, step_size, reg)
        sgd_update(b, db, step_size, zero)
    return -1


def linear_workspace(n_samples, n_features, n_classes, dtype):
    """Scratch tiles and gradient buffers for :func:`train_linear_steps`."""
    T = min(n_samples, 1024)
    return (
        np.empty((T, n_classes), dtype), np.empty((T, n_classes), dtype),
        np.empty((n_classes, n_features), dtype), np.empty(n_classes, dtype),
    )
