"""The compiled training loops: the net's slots, their fixed-order sum, the update.

One iteration: every slot of rows (:mod:`~fastspiral.numba_backend.workspace`) runs the
fused forward pass, the softmax gradient and the fused backward pass tile by
tile into its own gradient buffers; the slots are summed in slot order; the
weights take one gradient-descent step. With one slot the loop never enters
a parallel region (:func:`train_net_serial`); with more, a ``prange`` over
the workers runs the slots and the main thread sums and steps
(:func:`train_net_parallel`), as in stumpy and pynndescent: per-thread
buffers, then a serial reduction, no atomics.

The loops call the slot kernel, and the slot the tile passes, through
:class:`~fastspiral.numba_backend.jit.KernelPointer` s (:class:`NetKernels`), so each
is compiled once rather than again inside every caller; the Python
functions at the end build them from the arguments' types. (Linking the
passes into the slot instead ran no faster, and the first D=1,024, K=1,000
call compiled in 11.6-12.1 s instead of 8.2-10.3: docs/design.md, "Compile time".)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange, typeof, types

from .general import backward_general, forward_general
from .jit import KernelPointer, inline_kernel, kernel, parallel_kernel
from .loss import is_finite, l2_penalty, softmax_xent_grad, sum_squares
from .small import backward_small, backward_small_fours, forward_small, forward_small_fours
from .tiles import small_row_group
from .update import fill_zero, sgd_update, sum_slots

# -- the passes of one tile --------------------------------------------------------------


def net_forms(dtok, ktok):
    """``(forward, backward)``: the compiled passes for the shape the dims tokens select."""
    if len(ktok) == 0:
        return forward_general, backward_general
    if small_row_group(len(dtok), len(ktok)) == 4:
        return forward_small_fours, backward_small_fours
    return forward_small, backward_small


def net_forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    """Fused forward pass of a tile: ``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2T.T + b2``.

    Writes hidden (T, H) and scores (T, K). A NaN pre-activation stays NaN
    (NaN < 0 is false), as with ``np.maximum``.
    """
    net_forms(dtok, ktok)[0](X, W1, b1, W2T, b2, hidden, scores, dtok, ktok)


def net_backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    """Fused backward pass of a tile; *adds* the tile's gradient to dW1, db1, dW2T, db2.

    With ``dhidden = (dscores @ W2T) * (hidden > 0)`` (the case study's
    ``dhidden[hidden <= 0] = 0``)::

        dW2T += dscores.T @ hidden      db2 += dscores.sum(0)
        dW1  += X.T @ dhidden           db1 += dhidden.sum(0)

    ``hidden`` is scratch afterwards (the general form stores dhidden in it)
    and ``grow`` (4, H) holds scratch rows.
    """
    net_forms(dtok, ktok)[1](X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok)


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


# -- the net's iteration ----------------------------------------------------------------


@kernel
def _net_slot(
    s,
    S,
    X,
    y,
    W1,
    b1,
    W2T,
    b2,
    scale,
    hidden,
    scores,
    dscores,
    grow,
    dW1,
    db1,
    dW2T,
    db2,
    dtok,
    ktok,
    forward,
    backward,
):
    """Slot s of S: its rows' gradient into slot s of dW1..db2, its data loss returned.

    hidden, scores, dscores, grow are the running worker's scratch; forward
    and backward the tile passes of the shape's form (:func:`net_kernels`).
    The whole slot is cleared, padding included, so slots can be summed whole.
    """
    N, D = X.shape
    K, H = W2T.shape
    dW1, db1, dW2T, db2 = dW1[s], db1[s], dW2T[s], db2[s]
    fill_zero(dW1)
    fill_zero(db1)
    fill_zero(dW2T)
    fill_zero(db2)
    T = hidden.shape[0]
    r0, r1 = s * N // S, (s + 1) * N // S
    loss = 0.0
    for a in range(r0, r1, T):
        e = min(a + T, r1)
        n = e - a
        Xt = X[a:e]
        forward(Xt, W1, b1, W2T, b2, hidden[:n], scores[:n], dtok, ktok)
        loss += softmax_xent_grad(scores[:n], y[a:e], scale, dscores[:n], ktok)
        backward(
            Xt, hidden[:n], dscores[:n], W2T, dW1[:D], db1[:H], dW2T[:K], db2[:K], grow, dtok, ktok
        )
    return loss


@inline_kernel
def _slots_in_turn(slot, forward, backward, X, y, W1, b1, W2T, b2, ws):
    """Every slot in turn on this thread (worker 0's scratch); data losses into ``ws.losses``."""
    S = ws.losses.size
    scale = 1.0 / X.shape[0]
    for s in range(S):
        ws.losses[s] = slot(
            s,
            S,
            X,
            y,
            W1,
            b1,
            W2T,
            b2,
            scale,
            ws.hidden[0],
            ws.scores[0],
            ws.dscores[0],
            ws.grow[0],
            ws.dW1,
            ws.db1,
            ws.dW2T,
            ws.db2,
            ws.dtok,
            ws.ktok,
            forward,
            backward,
        )


@inline_kernel
def _net_loss(reg, W1, W2T, ws):
    """The iteration's loss: the slots' data losses, in slot order, plus the L2 term."""
    data = 0.0
    for s in range(ws.losses.size):
        data += ws.losses[s]
    return data + l2_penalty(reg, W1, W2T)


@inline_kernel
def _sum_gradients(ws):
    """Every gradient's slots summed into its slot 0, in slot order."""
    sum_slots(ws.dW1)
    sum_slots(ws.db1)
    sum_slots(ws.dW2T)
    sum_slots(ws.db2)


@inline_kernel
def _net_step(W1, b1, W2T, b2, step_size, reg, ws):
    """Sum the gradient slots into slot 0 (in slot order), then one step of every weight."""
    D, K, H = W1.shape[0], W2T.shape[0], b1.size
    zero = step_size - step_size  # no L2 on the biases, in the weights' dtype
    _sum_gradients(ws)
    sgd_update(W1, ws.dW1[0][:D], step_size, reg)
    sgd_update(b1, ws.db1[0][:H], step_size, zero)
    sgd_update(W2T, ws.dW2T[0][:K], step_size, reg)
    sgd_update(b2, ws.db2[0][:K], step_size, zero)


@kernel  # compiled apart: inlined, its loops went through the parallel loop's prange passes
def _end_iteration(it, history, W1, b1, W2T, b2, step_size, reg, ws):
    """Record iteration it's loss; if it is finite, take the step and return True."""
    loss = _net_loss(reg, W1, W2T, ws)
    history[it] = loss
    if not is_finite(loss):
        return False
    _net_step(W1, b1, W2T, b2, step_size, reg, ws)
    return True


@kernel
def _train_net_serial(
    slot, forward, backward, X, y, W1, b1, W2T, b2, step_size, reg, history, start, stop, ws
):
    for it in range(start, stop):
        _slots_in_turn(slot, forward, backward, X, y, W1, b1, W2T, b2, ws)
        if not _end_iteration(it, history, W1, b1, W2T, b2, step_size, reg, ws):
            return it
    return -1


@parallel_kernel
def _train_net_parallel(
    slot,
    forward,
    backward,
    X,
    y,
    W1,
    b1,
    W2T,
    b2,
    step_size,
    reg,
    history,
    start,
    stop,
    n_workers,
    ws,
):
    # The buffers leave the named workspace before the prange: a named tuple
    # holding tuples cannot cross into a prange body (Numba's gufunc wrapper
    # rejects the tokens).
    hidden, scores, dscores, grow = ws.hidden, ws.scores, ws.dscores, ws.grow
    dW1, db1, dW2T, db2, losses, dtok, ktok = (
        ws.dW1,
        ws.db1,
        ws.dW2T,
        ws.db2,
        ws.losses,
        ws.dtok,
        ws.ktok,
    )
    S = losses.size
    scale = 1.0 / X.shape[0]
    for it in range(start, stop):
        for p in prange(n_workers):
            for s in range(
                np.int64(p), S, n_workers
            ):  # the pointer's types are exact: p is unsigned
                losses[s] = slot(
                    s,
                    S,
                    X,
                    y,
                    W1,
                    b1,
                    W2T,
                    b2,
                    scale,
                    hidden[p],
                    scores[p],
                    dscores[p],
                    grow[p],
                    dW1,
                    db1,
                    dW2T,
                    db2,
                    dtok,
                    ktok,
                    forward,
                    backward,
                )
        if not _end_iteration(it, history, W1, b1, W2T, b2, step_size, reg, ws):
            return it
    return -1


@kernel
def _net_loss_grad(slot, forward, backward, X, y, W1, b1, W2T, b2, reg, ws):
    _slots_in_turn(slot, forward, backward, X, y, W1, b1, W2T, b2, ws)
    _sum_gradients(ws)
    return _net_loss(reg, W1, W2T, ws)


@kernel
def linear_loss_grad(X, y, WT, b, reg, ws):
    """Loss and full-batch gradient of the softmax linear classifier, into ``ws.dWT``, ``ws.db``.

    Returns ``data_loss + 0.5 * reg * sum(WT**2)``. A few FLOPs per row: one thread.
    """
    N = X.shape[0]
    T = ws.scores.shape[0]
    scale = 1.0 / N
    fill_zero(ws.dWT)
    fill_zero(ws.db)
    loss = 0.0
    for a in range(0, N, T):
        e = min(a + T, N)
        n = e - a
        Xt = X[a:e]
        linear_forward(Xt, WT, b, ws.scores[:n])
        loss += softmax_xent_grad(ws.scores[:n], y[a:e], scale, ws.dscores[:n], ws.ktok)
        linear_backward(Xt, ws.dscores[:n], ws.dWT, ws.db)
    return loss + 0.5 * reg * sum_squares(WT)


@kernel
def train_linear_steps(X, y, WT, b, step_size, reg, history, start, stop, ws):
    """Iterations ``start..stop-1`` of the linear classifier; same contract as :func:`train_net_serial`."""
    zero = step_size - step_size
    for it in range(start, stop):
        loss = linear_loss_grad(X, y, WT, b, reg, ws)
        history[it] = loss
        if not is_finite(loss):
            return it
        sgd_update(WT, ws.dWT, step_size, reg)
        sgd_update(b, ws.db, step_size, zero)
    return -1


# -- called from Python ---------------------------------------------------------------


class NetKernels(NamedTuple):
    """The compiled kernels the net's loops call by address, for one set of argument types."""

    slot: KernelPointer
    forward: KernelPointer
    backward: KernelPointer


#: Kernels built in this process, by the types they were built for.
_built: dict[tuple, NetKernels] = {}


def net_kernels(X, y, W1, b1, W2T, b2, ws) -> NetKernels:
    """The slot kernel and the tile passes of the shape's form, compiled (or loaded) for these arrays.

    Each is compiled on its own, for exactly the types the loops pass it (a
    per-worker buffer ``ws.hidden[p]`` has the type of ``ws.hidden[0]``).
    Built once per process for each set of types: building took ~0.7 ms,
    more than a one-iteration training.
    """
    key = tuple(map(_array_key, (X, y, W1, b1, W2T, b2, *ws[:8]))) + tuple(
        map(_token_key, (ws.dtok, ws.ktok))
    )
    if key not in _built:
        _built[key] = _build_net_kernels(X, y, W1, b1, W2T, b2, ws)
    return _built[key]


def _array_key(a):
    """What Numba's type of an array depends on, read faster than ``numba.typeof`` (~10 us)."""
    f = a.flags
    return a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned


def _token_key(token):
    return len(token), type(token[0]) if token else None


def _build_net_kernels(X, y, W1, b1, W2T, b2, ws) -> NetKernels:
    t = typeof

    def row(a):
        return typeof(a[0])

    arrays = (t(X), t(y), t(W1), t(b1), t(W2T), t(b2))
    scratch = (row(ws.hidden), row(ws.scores), row(ws.dscores), row(ws.grow))
    slots = (t(ws.dW1), t(ws.db1), t(ws.dW2T), t(ws.db2))
    slot_rows = (row(ws.dW1), row(ws.db1), row(ws.dW2T), row(ws.db2))
    tokens = (t(ws.dtok), t(ws.ktok))
    TX, _, TW1, Tb1, TW2T, Tb2 = arrays
    Th, Ts, Tds, Tg = scratch
    forward, backward = net_forms(ws.dtok, ws.ktok)
    forward = KernelPointer(forward, types.none, (TX, TW1, Tb1, TW2T, Tb2, Th, Ts, *tokens))
    backward = KernelPointer(backward, types.none, (TX, Th, Tds, TW2T, *slot_rows, Tg, *tokens))
    slot = KernelPointer(
        _net_slot,
        types.float64,
        (
            types.int64,
            types.int64,
            *arrays,
            types.float64,
            *scratch,
            *slots,
            *tokens,
            t(forward),
            t(backward),
        ),
    )
    return NetKernels(slot, forward, backward)


def train_net_serial(X, y, W1, b1, W2T, b2, step_size, reg, history, start, stop, ws, kernels=None):
    """Iterations ``start..stop-1`` of the net on this thread, in place.

    ``history[i]`` gets the loss at iteration i, before its update. Returns -1,
    or the first iteration whose loss is not finite (the weights are then
    as they were before it). ``kernels``: :func:`net_kernels` of these arrays
    (built here if not given).
    """
    if kernels is None:
        kernels = net_kernels(X, y, W1, b1, W2T, b2, ws)
    return _train_net_serial(
        *kernels, X, y, W1, b1, W2T, b2, step_size, reg, history, start, stop, ws
    )


def train_net_parallel(
    X, y, W1, b1, W2T, b2, step_size, reg, history, start, stop, n_workers, ws, kernels=None
):
    """:func:`train_net_serial` with the slots shared out among ``n_workers`` threads.

    Worker p runs slots p, p + P, ... on its own scratch; which worker ran a
    slot changes no bit of it, and the main thread sums the slots in order,
    so the result does not depend on ``n_workers``.
    """
    if kernels is None:
        kernels = net_kernels(X, y, W1, b1, W2T, b2, ws)
    return _train_net_parallel(
        *kernels, X, y, W1, b1, W2T, b2, step_size, reg, history, start, stop, n_workers, ws
    )


def net_loss_grad(X, y, W1, b1, W2T, b2, reg, ws, kernels=None):
    """Loss and full-batch gradient of the net at the current weights (no update).

    Returns ``data_loss + 0.5 * reg * (sum(W1**2) + sum(W2T**2))`` and leaves
    the data loss's gradient in slot 0: ``dW1[0, :D]``, ``db1[0, :H]``,
    ``dW2T[0, :K]``, ``db2[0, :K]`` (the update adds the L2 gradient
    ``reg * W``). The slot and sum code of the training loops, on one thread.
    """
    if kernels is None:
        kernels = net_kernels(X, y, W1, b1, W2T, b2, ws)
    return _net_loss_grad(*kernels, X, y, W1, b1, W2T, b2, reg, ws)
