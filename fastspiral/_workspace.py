"""Named workspaces of the Numba backend: how rows are split into slots, and the buffers.

The rows are split into S *slots* by the problem's size alone (:func:`n_slots`),
never by the thread count; each slot has its own gradient buffers, and the
slots are summed in slot order. Any number of threads (workers) can work
the slots, so a training gives the same bits on 1, 2 or 8 threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._memory import aligned_empty, slot_length
from ._tiles import dims_token

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

    hidden: np.ndarray   # (P, T, H)
    scores: np.ndarray   # (P, T + pad, K)
    dscores: np.ndarray  # (P, T + pad, K)
    grow: np.ndarray     # (P, 4, H + pad)
    dW1: np.ndarray      # (S, D + pad, H)
    db1: np.ndarray      # (S, H + pad)
    dW2T: np.ndarray     # (S, K + pad, H)
    db2: np.ndarray      # (S, K + pad)
    losses: np.ndarray   # (S,) float64
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

    scores: np.ndarray   # (T, K)
    dscores: np.ndarray  # (T, K)
    dWT: np.ndarray      # (K, D)
    db: np.ndarray       # (K,)
    ktok: tuple


def net_workspace(n_samples, n_features, n_hidden, n_classes, dtype, n_workers) -> NetWorkspace:
    """The buffers for the net's compiled loops (:mod:`fastspiral._loops`), for up to ``n_workers`` threads.

    Size O((P * T + S * (D + K)) * H), independent of N * H. Every buffer and
    slot starts on a cache line (:mod:`fastspiral._memory`).
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
        aligned_empty((P, slot(T, K), K), dtype), aligned_empty((P, slot(T, K), K), dtype),
        aligned_empty((P, 4, slot(H, 1)), dtype),
        aligned_empty((S, slot(D, H), H), dtype), aligned_empty((S, slot(H, 1)), dtype),
        aligned_empty((S, slot(K, H), H), dtype), aligned_empty((S, slot(K, 1)), dtype),
        np.zeros(S, np.float64),
        *dims_token(D, K, dtype),
    )


def linear_workspace(n_samples, n_features, n_classes, dtype) -> LinearWorkspace:
    """The buffers for :func:`fastspiral._loops.train_linear_steps`."""
    T = min(n_samples, 1024)
    return LinearWorkspace(
        aligned_empty((T, n_classes), dtype), aligned_empty((T, n_classes), dtype),
        aligned_empty((n_classes, n_features), dtype), aligned_empty(n_classes, dtype),
        dims_token(n_features, n_classes, dtype)[1],
    )


def buffer_bytes(ws: NetWorkspace | LinearWorkspace) -> int:
    """Bytes of a workspace's buffers (allocated by ``aligned_empty``, never touched: no memory is used)."""
    return sum(a.nbytes for a in ws if isinstance(a, np.ndarray))
