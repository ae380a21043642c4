"""The compiled training loops: the net's slots, their fixed-order sum, the update.

One iteration: every slot of rows (:mod:`~fastspiral.numba_backend.workspace`)
runs the fused forward pass, the softmax gradient and the fused backward pass
tile by tile into its own gradient row; the rows are summed in slot order;
the update rule steps the flat parameter vector. With one slot the loop
never enters a parallel region (:func:`train_net_serial`); with more, a
``prange`` over the workers runs the slots and the main thread sums and steps
(:func:`train_net_parallel`), as in stumpy and pynndescent: per-thread
buffers, then a serial reduction, no atomics.

The loops call the slot kernel, the slot the tile passes, and the end of an
iteration the update rule, through
:class:`~fastspiral.numba_backend.jit.KernelPointer` s (:class:`NetKernels`),
so each is compiled once rather than again inside every caller, and one
compiled loop serves every rule. (Linking the passes into the slot instead
ran no faster, and the first D=1,024, K=1,000 call compiled in 11.6-12.1 s
instead of 8.2-10.3: docs/design.md, "Compile time".) A kernel called by
pointer takes one named tuple (:class:`~fastspiral.numba_backend.tiles.Tile`,
:class:`SlotJob`) or a few plain arguments, and its pointer is typed from an
example of what its callers pass, so no signature is written by hand.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import prange, types

from .._plan import batch_bounds, shuffle_rows
from .general import backward_general, forward_general
from .jit import KernelPointer, inline_kernel, kernel, parallel_kernel
from .loss import is_finite, l2_penalty, softmax_xent_grad, sum_squares
from .small import small_form
from .tiles import Tile, is_small_shape, small_row_group
from .update import REG, fill_zero, gd_update, sum_slots
from .workspace import (
    aligned_empty,
    linear_views_kernel,
    net_views,
    net_views_kernel,
    tile_views,
    tile_views_kernel,
)

#: The batches' functions (fastspiral._plan), compiled for the loops.
_batch_bounds = inline_kernel(batch_bounds)
_shuffle_rows = inline_kernel(shuffle_rows)

# -- the passes of one tile ---------------------------------------------------------------


def net_forms(n_features, n_classes, dtype):
    """``(forward, backward)``: the compiled passes of the form the shape takes (see ``tiles``)."""
    if not is_small_shape(n_features, n_classes):
        return forward_general, backward_general
    fours = small_row_group(n_features, n_classes) == 4
    return small_form(n_features, n_classes, np.dtype(dtype), fours)


def net_forward(tile: Tile) -> float:
    """The fused forward pass of ``tile`` and its softmax gradient (see :class:`Tile`): the loss."""
    return net_forms(tile.X.shape[1], tile.scores.shape[1], tile.X.dtype)[0](tile)


def net_backward(tile: Tile) -> None:
    """The fused backward pass of ``tile`` (see :class:`Tile`)."""
    net_forms(tile.X.shape[1], tile.scores.shape[1], tile.X.dtype)[1](tile)


@inline_kernel
def linear_forward(X, p, scores):
    """Scores of the linear classifier, ``scores = X @ WT.T + b``; X (T, D), p LinearParams."""
    T, D = X.shape
    WT, b = p.WT, p.b
    for t in range(T):
        for k in range(b.size):
            acc = b[k]
            for d in range(D):
                acc += X[t, d] * WT[k, d]
            scores[t, k] = acc


@inline_kernel
def linear_backward(X, dscores, g):
    """Adds ``dscores.T @ X`` to g.WT (K, D) and ``dscores.sum(0)`` to g.b (K,)."""
    T, D = X.shape
    for t in range(T):
        for k in range(dscores.shape[1]):
            s = dscores[t, k]
            g.b[k] += s
            for d in range(D):
                g.WT[k, d] += s * X[t, d]


# -- the net's iteration ------------------------------------------------------------------


class SlotJob(NamedTuple):
    """What the slot kernel is given: a slot's rows, its gradient row and its worker's scratch."""

    X: np.ndarray  # (N, D): all the rows
    y: np.ndarray  # (N,) int64
    first: int  # the slot's rows are first..stop-1
    stop: int
    scale: float  # 1 / N: the loss is the mean over all the rows
    p: Any  # NetParams: the parameters
    grad: np.ndarray  # the slot's gradient row (cleared, then written)
    scratch: np.ndarray  # the worker's scratch row
    layout: tuple  # NetLayout of p and of the gradient row
    tiles: tuple  # TileLayout of the scratch row
    forward: Any  # the tile passes of the shape's form (KernelPointer)
    backward: Any


class NetKernels(NamedTuple):
    """The compiled kernels the net's loops call by address, for one set of argument types."""

    slot: KernelPointer
    forward: KernelPointer
    backward: KernelPointer
    end: KernelPointer  # the end of an iteration
    update: KernelPointer


@kernel
def _net_slot(job):
    """A slot's data loss (times ``scale``) returned, its gradient written into ``job.grad``.

    The whole row is cleared first, padding included, so rows can be summed whole.
    """
    X, y, p, T = job.X, job.y, job.p, job.tiles[0]
    fill_zero(job.grad)
    g = net_views_kernel(job.grad, job.layout)
    hidden, scores, dscores, dh_rows = tile_views_kernel(job.scratch, job.tiles)
    loss = 0.0
    for a in range(job.first, job.stop, T):
        e = min(a + T, job.stop)
        n = e - a
        tile = Tile(X[a:e], y[a:e], job.scale, p, hidden[:n], scores[:n], dscores[:n], g, dh_rows)
        loss += job.forward(tile)
        job.backward(tile)
    return loss


class Batches(NamedTuple):
    """The rows a training's updates see: the full batch in order, or shuffled mini-batches
    (:mod:`fastspiral._plan`)."""

    X: np.ndarray  # (N, D): all the rows
    y: np.ndarray  # (N,) int64
    size: int  # rows per mini-batch; 0: every update sees the full batch, in order
    draws: np.ndarray  # (epochs, N) int64: the random integers of epochs first_epoch, ...
    first_epoch: int
    order: np.ndarray  # (N,) int64: the current epoch's order of the rows
    Xb: np.ndarray  # (size, D): a mini-batch's rows, gathered
    yb: np.ndarray  # (size,) int64


def new_batches(X, y, batch_size=None) -> Batches:
    """The :class:`Batches` of a training: the full batch (``batch_size`` None), or the buffers of
    mini-batches, whose epochs' draws each call of a loop then brings (``_replace``)."""
    N, D = X.shape
    B = batch_size or 0
    no_draws = np.empty((0, 0), np.int64)
    order, yb = np.empty(N if B else 0, np.int64), np.empty(B, np.int64)
    return Batches(X, y, B, no_draws, 0, order, aligned_empty((B, D), X.dtype), yb)


@inline_kernel
def _rows(data, u, fresh):
    """``(X, y)`` of update ``u``: all the rows, or its mini-batch gathered into ``Xb``, ``yb``
    (the epoch's order shuffled at its first update, or when ``fresh``: a call's first)."""
    if data.size == 0:
        return data.X, data.y
    N, D = data.X.shape
    epoch, first, stop = _batch_bounds(u, N, data.size)
    if first == 0 or fresh:
        _shuffle_rows(data.order, data.draws[epoch - data.first_epoch])
    n = stop - first
    for i in range(n):
        r = data.order[first + i]
        for d in range(D):
            data.Xb[i, d] = data.X[r, d]
        data.yb[i] = data.y[r]
    return data.Xb[:n], data.yb[:n]


@inline_kernel
def _slots_in_turn(kernels, X, y, p, ws):
    """Every slot in turn on this thread (worker 0's scratch); data losses into ``ws.losses``."""
    N, S = X.shape[0], ws.losses.size
    for s in range(S):
        job = SlotJob(
            X=X, y=y, first=s * N // S, stop=(s + 1) * N // S, scale=1.0 / N, p=p,
            grad=ws.grads[s], scratch=ws.scratch[0], layout=ws.layout, tiles=ws.tiles,
            forward=kernels.forward, backward=kernels.backward,
        )  # fmt: skip
        ws.losses[s] = kernels.slot(job)


@inline_kernel
def _net_loss(p, reg, losses):
    """The iteration's loss: the slots' data losses, in slot order, plus the L2 term."""
    data = 0.0
    for s in range(losses.size):
        data += losses[s]
    return data + l2_penalty(reg, p.W1, p.W2T)


@kernel  # by address: inlined, its loops went through the parallel loop's prange passes
def _end_iteration(it, history, p, ws, update, opt):
    """Record iteration it's loss; if it is finite, sum the slots, update, and return True."""
    loss = _net_loss(p, p.flat.dtype.type(opt.hyper[REG]), ws.losses)
    history[it] = loss
    if not is_finite(loss):
        return False
    sum_slots(ws.grads)
    update(p.flat, ws.grads[0][: p.flat.size], opt, it)
    return True


@kernel
def train_net_serial(kernels, data, p, opt, history, start, stop, ws):
    """Iterations ``start..stop-1`` of the net on this thread, in place.

    ``history[i]`` gets the loss at iteration i (of its batch), before its
    update. Returns -1, or the first iteration whose loss is not finite (the
    parameters are then as they were before it). ``kernels``:
    :func:`net_kernels` of these arrays; ``data``: :class:`Batches`.
    """
    for it in range(start, stop):
        X, y = _rows(data, opt.first_update + it, it == start)
        _slots_in_turn(kernels, X, y, p, ws)
        if not kernels.end(it, history, p, ws, kernels.update, opt):
            return it
    return -1


@parallel_kernel
def train_net_parallel(kernels, data, p, opt, history, start, stop, threads, ws):
    """:func:`train_net_serial` with the slots shared out among ``threads`` threads (workers).

    Worker w runs slots w, w + P, ... on its own scratch; which worker ran a
    slot changes no bit of it, and the main thread sums the slots in order,
    so the result does not depend on ``threads``.
    """
    # What the prange body uses leaves the named tuples first: a tuple held in a
    # tuple (the tokens, the layouts in the workspace) cannot cross into a prange body
    # (Numba's gufunc wrapper rejects it), nor can a named tuple of numbers.
    grads, scratch, losses, layout, tiles = ws.grads, ws.scratch, ws.losses, ws.layout, ws.tiles
    slot, forward, backward = kernels.slot, kernels.forward, kernels.backward
    S = losses.size
    for it in range(start, stop):
        X, y = _rows(data, opt.first_update + it, it == start)
        N = X.shape[0]
        scale = 1.0 / N
        for w in prange(threads):
            for s in range(np.int64(w), S, threads):  # the pointer's types are exact: w is unsigned
                job = SlotJob(
                    X=X, y=y, first=s * N // S, stop=(s + 1) * N // S, scale=scale, p=p,
                    grad=grads[s], scratch=scratch[w], layout=layout, tiles=tiles,
                    forward=forward, backward=backward,
                )  # fmt: skip
                losses[s] = slot(job)
        if not kernels.end(it, history, p, ws, kernels.update, opt):
            return it
    return -1


@kernel
def _net_loss_grad(kernels, X, y, p, reg, ws):
    _slots_in_turn(kernels, X, y, p, ws)
    sum_slots(ws.grads)
    return _net_loss(p, reg, ws.losses)


@kernel
def net_evaluate(kernels, X, y, p, ws):
    """``(loss, correct)``: the mean data loss on (X, y) and how many rows the net classifies
    right, on this thread; the parameters are only read (the L2 term is left out)."""
    N, K, T = X.shape[0], p.b2.size, ws.tiles[0]
    hidden, scores, dscores, dh_rows = tile_views_kernel(ws.scratch[0], ws.tiles)
    loss, correct = 0.0, 0
    for a in range(0, N, T):
        e = min(a + T, N)
        n = e - a
        tile = Tile(X[a:e], y[a:e], 1.0 / N, p, hidden[:n], scores[:n], dscores[:n], p, dh_rows)
        loss += kernels.forward(tile)
        for t in range(n):
            best = 0
            for k in range(1, K):
                if scores[t, k] > scores[t, best]:
                    best = k
            correct += best == y[a + t]
    return loss, correct


# -- the linear classifier ----------------------------------------------------------------


@inline_kernel
def linear_loss_grad(X, y, p, reg, ws):
    """Loss and full-batch gradient of the softmax linear classifier; the gradient into ``ws.grad``.

    Returns ``data_loss + 0.5 * reg * sum(WT**2)``. A few FLOPs per row: one thread.
    """
    N = X.shape[0]
    T = ws.scores.shape[0]
    scale = 1.0 / N
    fill_zero(ws.grad)
    g = linear_views_kernel(ws.grad, ws.layout)
    loss = 0.0
    for a in range(0, N, T):
        e = min(a + T, N)
        n = e - a
        Xt = X[a:e]
        linear_forward(Xt, p, ws.scores[:n])
        loss += softmax_xent_grad(ws.scores[:n], y[a:e], scale, ws.dscores[:n], ws.k_token)
        linear_backward(Xt, ws.dscores[:n], g)
    return loss + 0.5 * reg * sum_squares(p.WT)


@kernel
def train_linear_steps(update, data, p, opt, history, start, stop, ws):
    """Iterations ``start..stop-1`` of the linear classifier, as :func:`train_net_serial`."""
    reg = p.flat.dtype.type(opt.hyper[REG])
    for it in range(start, stop):
        X, y = _rows(data, opt.first_update + it, it == start)
        loss = linear_loss_grad(X, y, p, reg, ws)
        history[it] = loss
        if not is_finite(loss):
            return it
        update(p.flat, ws.grad, opt, it)
    return -1


@kernel
def linear_evaluate(X, y, p, ws):
    """``(loss, correct)`` of the linear classifier on (X, y), as :func:`net_evaluate`."""
    N, K, T = X.shape[0], p.b.size, ws.scores.shape[0]
    loss, correct = 0.0, 0
    for a in range(0, N, T):
        e = min(a + T, N)
        n = e - a
        scores = ws.scores[:n]
        linear_forward(X[a:e], p, scores)
        for t in range(n):
            best = 0
            for k in range(1, K):
                if scores[t, k] > scores[t, best]:
                    best = k
            correct += best == y[a + t]
        loss += softmax_xent_grad(scores, y[a:e], 1.0 / N, ws.dscores[:n], ws.k_token)
    return loss, correct


# -- called from Python ---------------------------------------------------------------------

#: Kernels built in this process, by the types they were built for.
_built: dict[tuple, Any] = {}


def _array_key(a):
    """What Numba's type of an array depends on, read faster than ``numba.typeof`` (~10 us)."""
    f = a.flags
    return a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned


def _update_pointer(rule, p, grad, opt) -> KernelPointer:
    """The update rule ``rule(theta, grad, opt, it)``, typed from what the loops pass it."""
    return KernelPointer(rule, types.none, (p.flat, grad[: p.flat.size], opt, 0))


def net_kernels(X, y, p, opt, ws, rule=gd_update) -> NetKernels:
    """The slot kernel, the tile passes of the shape's form and the update ``rule``, compiled (or
    loaded) for these arrays. Built once per process for each set of types: building took ~0.7 ms,
    more than a one-iteration training."""
    arrays = (X, y, p.flat, opt.hyper, opt.state, ws.grads, ws.scratch)
    forms = net_forms(X.shape[1], p.b2.size, X.dtype)
    key = ("net", rule, *forms, *map(_array_key, arrays))
    if key not in _built:
        hidden, scores, dscores, dh_rows = tile_views(ws.scratch[0], ws.tiles)
        g = net_views(ws.grads[0], ws.layout)
        tile = Tile(X[:1], y[:1], 1.0, p, hidden[:1], scores[:1], dscores[:1], g, dh_rows)
        forward = KernelPointer(forms[0], types.float64, (tile,))
        backward = KernelPointer(forms[1], types.none, (tile,))
        job = SlotJob(
            X=X, y=y, first=0, stop=1, scale=1.0, p=p, grad=ws.grads[0], scratch=ws.scratch[0],
            layout=ws.layout, tiles=ws.tiles, forward=forward, backward=backward,
        )  # fmt: skip
        slot = KernelPointer(_net_slot, types.float64, (job,))
        update = _update_pointer(rule, p, ws.grads[0], opt)
        example = (0, np.empty(1), p, ws, update, opt)  # (it, history, ...) as the loops pass them
        end = KernelPointer(_end_iteration, types.boolean, example)
        _built[key] = NetKernels(slot, forward, backward, end, update)
    return _built[key]


def net_loss_grad(X, y, p, reg, ws) -> float:
    """Loss and full-batch gradient of the net at the current parameters (no update).

    Returns ``data_loss + 0.5 * reg * (sum(W1**2) + sum(W2T**2))`` and leaves
    the data loss's gradient in row 0 of ``ws.grads``, in the parameters'
    layout (the update adds the L2 gradient ``reg * W``). The slot and sum
    code of the training loops, on one thread.
    """
    from .update import gd_optimizer

    opt = gd_optimizer(0.0, reg, p.flat.size, 0, p.flat.dtype)
    return _net_loss_grad(net_kernels(X, y, p, opt, ws), X, y, p, reg, ws)


def linear_kernels(p, opt, ws, rule=gd_update) -> KernelPointer:
    """The update ``rule`` for the linear classifier's arrays, built once per set of types."""
    key = ("linear", rule, *map(_array_key, (p.flat, opt.hyper, opt.state, ws.grad)))
    if key not in _built:
        _built[key] = _update_pointer(rule, p, ws.grad, opt)
    return _built[key]
