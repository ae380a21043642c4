"""Pure-NumPy reference: the ``"numpy"`` backend.

The case study's vectorised NumPy, written carefully: whole-batch matrix
products, a numerically stable softmax, work arrays allocated once per
training call and reused with ``out=``. It is the baseline the benchmarks
compare against and the oracle the tests hold the Numba kernels to, so it
favours being obviously right over being fast.

Every function has the name and signature of its twin in
:mod:`fastspiral._kernels` (second layer stored transposed as ``W2T`` (K, H),
gradient buffers with a leading thread-slot axis of length 1), so a test can
call both with the same arguments. Unlike the kernels, it keeps the (N, H)
hidden layer and its gradient in memory.
"""

from __future__ import annotations

import math

import numpy as np


def dims_token(n_features, n_classes, dtype):
    """``(dtok, ktok)``, D and K as the kernels take them (NumPy needs no such hint)."""
    zero = np.dtype(dtype).type(0)
    return (zero,) * n_features, (zero,) * n_classes


def net_forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    """``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2T.T + b2``, written in place."""
    np.matmul(X, W1, out=hidden)
    hidden += b1
    np.maximum(hidden, 0, out=hidden)
    np.matmul(hidden, W2T.T, out=scores)
    scores += b2


def softmax_xent_grad(scores, y, scale, dscores, ktok):
    """Write ``dscores = scale * (softmax(scores) - onehot(y))``; return the scaled loss sum.

    Subtracting the row maximum keeps ``exp`` from overflowing; the loss of a
    row is ``log(sum exp(s - m)) - (s_y - m)``. ``ktok`` (K, for the
    kernels) is not needed here.
    """
    rows = np.arange(scores.shape[0])
    m = scores.max(axis=1, keepdims=True)
    np.subtract(scores, m, out=dscores)
    correct = dscores[rows, y].astype(np.float64)  # s_y - m
    np.exp(dscores, out=dscores)
    total = dscores.sum(axis=1, keepdims=True)
    loss = np.sum(np.log(total[:, 0].astype(np.float64)) - correct)
    dscores *= scale / total
    dscores[rows, y] -= scale
    return float(loss) * scale


def net_backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, dtok, ktok):
    """Add the batch's gradient to dW1, db1, dW2T, db2 (the case study's backward pass).

    ``dhidden = dscores @ W2T`` with ``dhidden[hidden <= 0] = 0``, then
    ``dW1 += X.T @ dhidden``; ``dW2T += dscores.T @ hidden``; biases get the
    column sums.
    """
    dW2T += dscores.T @ hidden
    db2 += dscores.sum(axis=0)
    dhidden = dscores @ W2T
    dhidden[hidden <= 0] = 0
    dW1 += X.T @ dhidden
    db1 += dhidden.sum(axis=0)


def linear_forward(X, WT, b, scores):
    """``scores = X @ WT.T + b``, written in place."""
    np.matmul(X, WT.T, out=scores)
    scores += b


def linear_backward(X, dscores, dWT, db):
    """Add ``dscores.T @ X`` to dWT and ``dscores.sum(0)`` to db."""
    dWT += dscores.T @ X
    db += dscores.sum(axis=0)


def sgd_update(W, dW, step_size, reg):
    """``W -= step_size * (dW + reg * W)``, in place; ``dW`` is not modified."""
    W -= step_size * (dW + reg * W)


def sum_squares(W):
    """``sum(W * W)`` as a float64."""
    return float(np.sum(np.square(W, dtype=np.float64)))


def net_loss_grad(X, y, W1, b1, W2T, b2, reg, scale,
                  hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok):
    """Loss and full-batch gradient of the 2-layer net; gradients land in slot 0.

    The case study's forward and backward pass on the whole batch:
    ``hidden = relu(X W1 + b1)``, ``scores = hidden W2 + b2``, then
    ``dW2 = hidden.T dscores``, ``dhidden = dscores W2.T * (hidden > 0)``,
    ``dW1 = X.T dhidden``.
    """
    h, sc, ds = hidden[0], scores[0], dscores[0]
    for g in (dW1, db1, dW2T, db2):
        g[0] = 0
    net_forward(X, W1, b1, W2T, b2, h, sc, dtok, ktok)
    losses[0] = softmax_xent_grad(sc, y, scale, ds, ktok)
    net_backward(X, h, ds, W2T, dW1[0], db1[0], dW2T[0], db2[0], dtok, ktok)
    return losses[0] + 0.5 * reg * (sum_squares(W1) + sum_squares(W2T))


def train_net_steps(X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                    hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team):
    """Iterations ``start..stop-1`` of the net; returns -1 or the first non-finite iteration.

    Overflow on the way to a non-finite loss is expected when a run diverges;
    it is reported by the return value (and the trainer's FloatingPointError),
    so NumPy's warnings about it are silenced here.
    """
    scale = 1.0 / X.shape[0]
    for it in range(start, stop):
        with np.errstate(over="ignore", invalid="ignore"):
            loss = net_loss_grad(X, y, W1, b1, W2T, b2, reg, scale,
                                 hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok)
        loss_history[it] = loss
        if not math.isfinite(loss):
            return it
        sgd_update(W1, dW1[0], step_size, reg)
        sgd_update(b1, db1[0], step_size, 0.0)
        sgd_update(W2T, dW2T[0], step_size, reg)
        sgd_update(b2, db2[0], step_size, 0.0)
    return -1


def net_workspace(n_samples, n_features, n_hidden, n_classes, dtype, n_threads):
    """Whole-batch work arrays: the (N, H) hidden layer, (N, K) scores, gradient buffers.

    ``n_threads`` is accepted for symmetry with the kernels and ignored, and
    so are the last two items, empty stand-ins for the kernels' per-thread
    weight copies and their threads' shared state.
    """
    N, D, H, K = n_samples, n_features, n_hidden, n_classes
    return (
        np.empty((1, N, H), dtype),
        np.empty((1, N, K), dtype), np.empty((1, N, K), dtype),
        np.empty((1, D, H), dtype), np.empty((1, H), dtype),
        np.empty((1, K, H), dtype), np.empty((1, K), dtype),
        np.empty(1, np.float64),
        *dims_token(D, K, dtype),
        np.empty((1, 0), dtype), np.empty(0, np.int64),
    )


def linear_loss_grad(X, y, WT, b, reg, scale, scores, dscores, dWT, db, ktok):
    """Loss and full-batch gradient of the softmax linear classifier."""
    dWT[...] = 0
    db[...] = 0
    linear_forward(X, WT, b, scores)
    loss = softmax_xent_grad(scores, y, scale, dscores, ktok)
    linear_backward(X, dscores, dWT, db)
    return loss + 0.5 * reg * sum_squares(WT)


def train_linear_steps(X, y, WT, b, step_size, reg, loss_history, start, stop,
                       scores, dscores, dWT, db, ktok):
    """Iterations ``start..stop-1`` of the linear classifier; same contract as the net's."""
    scale = 1.0 / X.shape[0]
    for it in range(start, stop):
        with np.errstate(over="ignore", invalid="ignore"):
            loss = linear_loss_grad(X, y, WT, b, reg, scale, scores, dscores, dWT, db, ktok)
        loss_history[it] = loss
        if not math.isfinite(loss):
            return it
        sgd_update(WT, dWT, step_size, reg)
        sgd_update(b, db, step_size, 0.0)
    return -1


def linear_workspace(n_samples, n_features, n_classes, dtype):
    """Whole-batch (N, K) score arrays, the gradient buffers and ``ktok``."""
    return (
        np.empty((n_samples, n_classes), dtype), np.empty((n_samples, n_classes), dtype),
        np.empty((n_classes, n_features), dtype), np.empty(n_classes, dtype),
        dims_token(n_features, n_classes, dtype)[1],
    )
