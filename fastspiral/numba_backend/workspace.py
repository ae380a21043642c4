"""Named workspaces of the Numba backend: how rows are split into slots, and the buffers.

The rows are split into S *slots* by the problem's size alone (:func:`n_slots`),
never by the thread count; each slot has its own gradient buffers, and the
slots are summed in slot order. Any number of threads (workers) can work
the slots, so a training gives the same bits on 1, 2 or 8 threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .tiles import dims_token

# -- cache-line-aligned arrays ------------------------------------------------------
#
# Cache-line-aligned arrays for the buffers the Numba kernels stream through.
#
# NumPy's allocator only promises 16-byte alignment, so a 32- or 64-byte
# vector load or store into an array it returns can straddle two cache lines,
# and such split accesses cost the kernels 6-9% (docs/design.md). The trainers
# keep their working weights, and :func:`net_workspace`
# its buffers, at the start of a 64-byte cache line.

#: Bytes per cache line on x86-64 (and most other CPUs numba targets).
CACHE_LINE = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a cache-line boundary.

    The usual idiom (NumPy has no alignment argument): a byte buffer one
    cache line longer than needed, viewed from its first aligned byte. The
    returned array keeps the buffer alive through its ``base``.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + CACHE_LINE, np.uint8)
    start = -buffer.ctypes.data % CACHE_LINE
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A cache-line-aligned, C-contiguous copy of ``a`` (same dtype and shape)."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def slot_length(length: int, unit_bytes: int, min_pad_bytes: int = 0) -> int:
    """Units per thread slot: ``length`` plus padding, filling whole cache lines.

    A slot of a per-thread buffer holds ``length`` units (rows or elements) of
    ``unit_bytes`` each; it gets at least ``min_pad_bytes`` of padding and
    then as many units more as make it a whole number of cache lines, so that
    when slot 0 is aligned, every slot is.
    """
    n = length + -(-min_pad_bytes // unit_bytes)
    while (n * unit_bytes) % CACHE_LINE:
        n += 1
    return n


# -- slots and the named workspaces ---------------------------------------------------

#: The work of a net iteration is counted as N * (H + ROW_COST): the per-row
#: costs (softmax, the ends of the vectorised loops) weigh like ~60 hidden units.
ROW_COST = 60
#: Work per slot: below 2 * SLOT_WORK (N = 300 at H = 100) a problem has one
#: slot and trains on one thread, with no parallel region. Pinned threads
#: pay from less (N = 90 at H = 100), but a smaller value also multiplies the
#: slots, and their sum, of every larger problem: measured in
#: benchmarks/test_design.py (docs/design.md, "Constants").
SLOT_WORK = 24_000
#: Slots at most: more would let more cores help, at the cost of summing
#: more gradient slots per iteration, serially.
MAX_SLOTS = 8
#: Scratch elements of a (T, H) hidden tile: 512 KiB in float64, so the tile
#: the forward pass writes is still in L2 when the backward pass reads it.
TILE_ELEMENTS = 65_536
#: Unused bytes after each slot of a per-slot buffer (two cache lines: the
#: CPU may fetch a line's neighbour too), so no two threads write one line.
SLOT_PAD_BYTES = 128


def net_work(n_samples: int, n_hidden: int) -> int:
    """The work of one net iteration, in hidden activations: N * (H + ROW_COST)."""
    return n_samples * (n_hidden + ROW_COST)


def n_slots(n_samples: int, n_hidden: int) -> int:
    """Slots the rows are split into: from the problem's size only, never the thread count."""
    return max(1, min(MAX_SLOTS, n_samples, net_work(n_samples, n_hidden) // SLOT_WORK))


def tile_rows(n_samples: int, n_hidden: int) -> int:
    """Rows per tile: a cache-sized (T, H) tile, a multiple of 4 where it is smaller than a slot."""
    per_slot = -(-n_samples // n_slots(n_samples, n_hidden))
    return min(per_slot, max(4, TILE_ELEMENTS // max(n_hidden, 1) // 4 * 4))


class NetWorkspace(NamedTuple):
    """Buffers of one net training, allocated once per call.

    Per worker p (``hidden.shape[0]`` of them): a hidden tile, score tiles and
    a scratch row. Per slot s (``dW1.shape[0]``): the slot's gradients, in the
    leading D, H, K, K entries of its (padded) rows, and its data loss.
    """

    hidden: np.ndarray  # (P, T, H)
    scores: np.ndarray  # (P, T + pad, K)
    dscores: np.ndarray  # (P, T + pad, K)
    grow: np.ndarray  # (P, 4, H + pad)
    dW1: np.ndarray  # (S, D + pad, H)
    db1: np.ndarray  # (S, H + pad)
    dW2T: np.ndarray  # (S, K + pad, H)
    db2: np.ndarray  # (S, K + pad)
    losses: np.ndarray  # (S,) float64
    dtok: tuple
    ktok: tuple

    @property
    def n_workers(self) -> int:
        return self.hidden.shape[0]

    @property
    def n_slots(self) -> int:
        return self.dW1.shape[0]


class LinearWorkspace(NamedTuple):
    """Buffers of one linear training: score tiles, gradients, the K token."""

    scores: np.ndarray  # (T, K)
    dscores: np.ndarray  # (T, K)
    dWT: np.ndarray  # (K, D)
    db: np.ndarray  # (K,)
    ktok: tuple


def net_workspace(n_samples, n_features, n_hidden, n_classes, dtype, n_workers) -> NetWorkspace:
    """The buffers for the net's compiled loops (:mod:`~fastspiral.numba_backend.loops`), for up to ``n_workers`` threads.

    Size O((P * T + S * (D + K)) * H), independent of N * H. Every buffer and
    slot starts on a cache line.
    """
    N, D, H, K = n_samples, n_features, n_hidden, n_classes
    S = n_slots(N, H)
    P = max(1, min(int(n_workers), S))
    T = tile_rows(N, H)
    size = np.dtype(dtype).itemsize

    def slot(length, unit, pad=SLOT_PAD_BYTES):  # units per slot (unit: elements per unit)
        return slot_length(length, unit * size, pad)

    return NetWorkspace(
        aligned_empty((P, slot(T, H, 0), H), dtype),
        aligned_empty((P, slot(T, K), K), dtype),
        aligned_empty((P, slot(T, K), K), dtype),
        aligned_empty((P, 4, slot(H, 1)), dtype),
        aligned_empty((S, slot(D, H), H), dtype),
        aligned_empty((S, slot(H, 1)), dtype),
        aligned_empty((S, slot(K, H), H), dtype),
        aligned_empty((S, slot(K, 1)), dtype),
        np.zeros(S, np.float64),
        *dims_token(D, K, dtype),
    )


def linear_workspace(n_samples, n_features, n_classes, dtype) -> LinearWorkspace:
    """The buffers for :func:`~fastspiral.numba_backend.loops.train_linear_steps`."""
    T = min(n_samples, 1024)
    return LinearWorkspace(
        aligned_empty((T, n_classes), dtype),
        aligned_empty((T, n_classes), dtype),
        aligned_empty((n_classes, n_features), dtype),
        aligned_empty(n_classes, dtype),
        dims_token(n_features, n_classes, dtype)[1],
    )


def buffer_bytes(ws: NetWorkspace | LinearWorkspace) -> int:
    """Bytes of a workspace's buffers (allocated by ``aligned_empty``, never touched: no memory is used)."""
    return sum(a.nbytes for a in ws if isinstance(a, np.ndarray))
