"""Where the Numba backend keeps its numbers: flat parameters with named views, slots, buffers.

* **Parameters** live in one flat vector, ``[W1 | W2T | b1 | b2]`` for the net
  and ``[WT | b]`` for the linear classifier, each part starting on a cache
  line (:func:`net_layout`); :class:`NetParams` and :class:`LinearParams` are
  named views of it. The weights, which L2 acts on, come first, so an update
  is one loop over the vector with the weights' extent as its only seam.
* **Slots.** The rows are split into S slots by the problem's size alone
  (:func:`n_slots`), never by the thread count. Slot s writes its gradient
  into row s of a (slots, parameters) array, in the parameters' layout, and
  the rows are summed in slot order; any number of threads (workers) can work
  the slots, so a training gives the same bits on 1, 2 or 8 threads.
* **Scratch.** Each worker streams its rows through one buffer, a row of a
  (workers, scratch) array holding a tile's hidden layer, scores, their
  gradient and the rows of dhidden (:func:`tile_views`).

NumPy's allocator only promises 16-byte alignment, so a 32- or 64-byte vector
load or store could straddle two cache lines; such split accesses cost the
kernels 6-9% (docs/design.md). Every vector, row and part therefore starts on
a 64-byte line, and each slot's and worker's row ends in ``SLOT_PAD_BYTES`` of
padding, so no two threads write one line.

The layouts are computed once in Python (:class:`NetLayout`,
:class:`TileLayout`); the kernels cut their views from them with compiled
twins of the same view functions, so kernels and trainers see the same parts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .jit import inline_kernel
from .tiles import shape_tokens

#: Bytes per cache line on x86-64 (and most other CPUs numba targets).
CACHE_LINE = 64
#: Unused bytes after each slot's or worker's row (two cache lines: the CPU
#: may fetch a line's neighbour too), so no two threads write one line.
SLOT_PAD_BYTES = 128
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
#: Rows of dhidden the general form's backward pass builds at once.
DH_ROWS = 4
#: Rows per tile of the linear classifier (a few FLOPs per row).
LINEAR_TILE_ROWS = 1024


# -- aligned memory -------------------------------------------------------------------


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


def aligned_zeros(shape, dtype) -> np.ndarray:
    """:func:`aligned_empty`, filled with zeros."""
    out = aligned_empty(shape, dtype)
    out[...] = 0
    return out


def _lines(n, itemsize):
    """``n`` elements rounded up to whole cache lines, in elements."""
    per_line = CACHE_LINE // itemsize
    return -(-n // per_line) * per_line


def padded_row(n, itemsize):
    """Elements of a slot's or worker's row holding ``n``: whole cache lines, then the padding."""
    return _lines(n, itemsize) + SLOT_PAD_BYTES // itemsize


# -- the parameters ---------------------------------------------------------------------


class NetParams(NamedTuple):
    """The net's parameters (or a gradient), as views of one flat vector.

    The second layer is stored transposed, W2T (K, H), so every loop over the
    hidden units runs along a contiguous row.
    """

    flat: np.ndarray  # all of them: [W1 | W2T | b1 | b2], each part from a cache line
    W1: np.ndarray  # (D, H)
    W2T: np.ndarray  # (K, H)
    b1: np.ndarray  # (H,)
    b2: np.ndarray  # (K,)


class NetLayout(NamedTuple):
    """Where each part of a net's flat vector starts (W1 at 0), and its length."""

    D: int
    H: int
    K: int
    W2T: int
    b1: int  # also the weights' extent: L2 acts on flat[:b1]
    b2: int
    size: int


class LinearParams(NamedTuple):
    """The linear classifier's parameters (or a gradient), as views of one flat vector."""

    flat: np.ndarray  # [WT | b]
    WT: np.ndarray  # (K, D)
    b: np.ndarray  # (K,)


class LinearLayout(NamedTuple):
    """Where b starts in the linear classifier's flat vector (WT at 0), and its length."""

    D: int
    K: int
    b: int  # also the weights' extent
    size: int


def net_layout(D, H, K, dtype) -> NetLayout:
    """The layout of a net's flat vector in ``dtype``: each part from a cache line."""
    itemsize = np.dtype(dtype).itemsize
    w2t = _lines(D * H, itemsize)
    b1 = w2t + _lines(K * H, itemsize)
    b2 = b1 + _lines(H, itemsize)
    return NetLayout(D, H, K, w2t, b1, b2, b2 + _lines(K, itemsize))


def linear_layout(D, K, dtype) -> LinearLayout:
    """The layout of the linear classifier's flat vector in ``dtype``."""
    itemsize = np.dtype(dtype).itemsize
    b = _lines(K * D, itemsize)
    return LinearLayout(D, K, b, b + _lines(K, itemsize))


def net_views(flat, layout):
    """The :class:`NetParams` views of a flat vector laid out as ``layout`` (a :class:`NetLayout`,
    or its plain tuple)."""
    D, H, K, w2t, b1, b2, _ = layout
    return NetParams(
        flat,
        flat[: D * H].reshape((D, H)),
        flat[w2t : w2t + K * H].reshape((K, H)),
        flat[b1 : b1 + H],
        flat[b2 : b2 + K],
    )


def linear_views(flat, layout):
    """The :class:`LinearParams` views of a flat vector laid out as ``layout`` (or its tuple)."""
    D, K, b, _ = layout
    return LinearParams(flat, flat[: K * D].reshape((K, D)), flat[b : b + K])


def new_net_params(params, dtype) -> NetParams:
    """An aligned flat vector holding ``params`` (W1, b1, W2, b2, the model's names); its views."""
    D, H = params["W1"].shape
    layout = net_layout(D, H, params["b2"].shape[0], dtype)
    p = net_views(aligned_zeros(layout.size, dtype), layout)
    p.W1[...], p.W2T[...], p.b1[...], p.b2[...] = (
        params["W1"],
        params["W2"].T,
        params["b1"],
        params["b2"],
    )
    return p


def new_linear_params(params, dtype) -> LinearParams:
    """An aligned flat vector holding ``params`` (W, b), and its views."""
    D, K = params["W"].shape
    layout = linear_layout(D, K, dtype)
    p = linear_views(aligned_zeros(layout.size, dtype), layout)
    p.WT[...], p.b[...] = params["W"].T, params["b"]
    return p


# -- slots and tiles --------------------------------------------------------------------


def net_work(n_samples: int, n_hidden: int) -> int:
    """The work of one net iteration, in hidden activations: N * (H + ROW_COST)."""
    return n_samples * (n_hidden + ROW_COST)


def n_slots(n_samples: int, n_hidden: int) -> int:
    """Slots the rows are split into: from the problem's size only, never the thread count."""
    return max(1, min(MAX_SLOTS, n_samples, net_work(n_samples, n_hidden) // SLOT_WORK))


#: A mini-batch's slots: one per SLOT_FLOPS of its work (4DH + 6HK per row; the case study's
#: 300 rows of D=2, K=3, H=100 are 780,000, two slots as in the full batch), and at most one
#: per SLOT_FLOPS_PER_PARAMETER * P of it: each slot's gradient row of P values is cleared and
#: summed once an update, about a nanosecond a value, where the passes run at ~30 GFLOP/s, so
#: a slot carrying 300 FLOPs a parameter spends a tenth of its time on its row. Measured in
#: benchmarks/test_design.py (mini-batch slots).
SLOT_FLOPS = 390_000
SLOT_FLOPS_PER_PARAMETER = 300


def batch_slots(batch_size: int, n_features: int, n_hidden: int, n_classes: int) -> int:
    """Slots a mini-batch is split into: from its size and shape only, never the thread count.

    Its rows are few and may be wide, so its work is counted in FLOPs where
    :func:`n_slots` counts the full batch's hidden activations (which it keeps,
    so full-batch trainings keep their bits).
    """
    D, H, K = n_features, n_hidden, n_classes
    flops = batch_size * (4 * D * H + 6 * H * K)
    parameters = D * H + K * H + H + K
    by_sum = flops // (SLOT_FLOPS_PER_PARAMETER * max(parameters, 1))
    return max(1, min(MAX_SLOTS, batch_size, flops // SLOT_FLOPS, by_sum))


def tile_rows(rows: int, n_hidden: int, slots: int) -> int:
    """Rows per tile: a cache-sized (T, H) tile, a multiple of 4 where it is smaller than a slot."""
    per_slot = -(-rows // slots)
    return min(per_slot, max(4, TILE_ELEMENTS // max(n_hidden, 1) // 4 * 4))


class TileLayout(NamedTuple):
    """Where a worker's buffers start in its scratch row (hidden at 0), and its length."""

    T: int  # rows per tile
    H: int
    K: int
    scores: int
    dscores: int
    dh_rows: int
    size: int


def tile_layout(T, H, K, dtype) -> TileLayout:
    """The layout of a worker's scratch row in ``dtype``: each buffer from a cache line."""
    itemsize = np.dtype(dtype).itemsize
    scores = _lines(T * H, itemsize)
    dscores = scores + _lines(T * K, itemsize)
    dh_rows = dscores + _lines(T * K, itemsize)
    return TileLayout(T, H, K, scores, dscores, dh_rows, dh_rows + _lines(DH_ROWS * H, itemsize))


def tile_views(scratch, layout):
    """A worker's scratch row cut into hidden (T, H), scores, dscores (T, K), dh_rows (4, H)."""
    T, H, K, scores, dscores, dh_rows, _ = layout
    return (
        scratch[: T * H].reshape((T, H)),
        scratch[scores : scores + T * K].reshape((T, K)),
        scratch[dscores : dscores + T * K].reshape((T, K)),
        scratch[dh_rows : dh_rows + DH_ROWS * H].reshape((DH_ROWS, H)),
    )


#: The views, compiled for the kernels (inlined: compiled apart and linked, the three cost
#: 0.5 s of a cold start); the functions above stay plain Python for the trainers.
net_views_kernel = inline_kernel(net_views)
linear_views_kernel = inline_kernel(linear_views)
tile_views_kernel = inline_kernel(tile_views)


class NetWorkspace(NamedTuple):
    """Buffers of one net training, allocated once per call: O((P T + S (D + K)) H), never N H."""

    grads: np.ndarray  # (S, parameters + pad): slot s's gradient, in the parameters' layout
    scratch: np.ndarray  # (P, tile buffers + pad): worker p's tile buffers (tile_views)
    losses: np.ndarray  # (S,) float64: slot s's data loss
    # The layouts as plain tuples: a named tuple cannot cross into a prange body.
    layout: tuple  # NetLayout of the parameters and of each gradient row
    tiles: tuple  # TileLayout of each scratch row

    @property
    def n_workers(self) -> int:
        return self.scratch.shape[0]

    @property
    def n_slots(self) -> int:
        return self.grads.shape[0]

    @property
    def tile_rows(self) -> int:
        return self.tiles[0]


class LinearWorkspace(NamedTuple):
    """Buffers of one linear training: its gradient (one slot), score tiles, the K token."""

    grad: np.ndarray  # (parameters,), in the parameters' layout
    scores: np.ndarray  # (T, K)
    dscores: np.ndarray  # (T, K)
    layout: tuple  # LinearLayout
    k_token: tuple


def _net_sizes(rows, n_features, n_hidden, n_classes, dtype, threads, batches):
    """``(S, P, layout, tiles)``: slots, workers and the layouts of :func:`net_workspace`."""
    D, H, K = n_features, n_hidden, n_classes
    S = batch_slots(rows, D, H, K) if batches else n_slots(rows, H)
    P = min(int(threads), S)  # a worker per thread (>= 1), no more than there are slots
    return S, P, net_layout(D, H, K, dtype), tile_layout(tile_rows(rows, H, S), H, K, dtype)


def net_workspace(
    rows, n_features, n_hidden, n_classes, dtype, threads, batches=False
) -> NetWorkspace:
    """The buffers for the net's compiled loops (:mod:`~fastspiral.numba_backend.loops`), for up to
    ``threads`` threads, ``rows`` rows an update (mini-batches of that size where ``batches``);
    each slot clears its whole gradient row, padding included."""
    S, P, layout, tiles = _net_sizes(rows, n_features, n_hidden, n_classes, dtype, threads, batches)
    itemsize = np.dtype(dtype).itemsize
    return NetWorkspace(
        aligned_empty((S, padded_row(layout.size, itemsize)), dtype),
        aligned_empty((P, padded_row(tiles.size, itemsize)), dtype),
        np.zeros(S, np.float64),
        tuple(layout),
        tuple(tiles),
    )


def net_workspace_bytes(
    rows, n_features, n_hidden, n_classes, dtype, threads, batches=False
) -> int:
    """Bytes of :func:`net_workspace`'s buffers, computed without allocating them."""
    S, P, layout, tiles = _net_sizes(rows, n_features, n_hidden, n_classes, dtype, threads, batches)
    itemsize = np.dtype(dtype).itemsize
    rows = S * padded_row(layout.size, itemsize) + P * padded_row(tiles.size, itemsize)
    return rows * itemsize + 8 * S


def linear_workspace(n_samples, n_features, n_classes, dtype) -> LinearWorkspace:
    """The buffers for :func:`~fastspiral.numba_backend.loops.train_linear_steps`."""
    T = min(n_samples, LINEAR_TILE_ROWS)
    layout = linear_layout(n_features, n_classes, dtype)
    return LinearWorkspace(
        aligned_zeros(layout.size, dtype),
        aligned_empty((T, n_classes), dtype),
        aligned_empty((T, n_classes), dtype),
        tuple(layout),
        shape_tokens(n_features, n_classes, dtype)[1],
    )


def linear_workspace_bytes(n_samples, n_features, n_classes, dtype) -> int:
    """Bytes of :func:`linear_workspace`'s buffers, computed without allocating them."""
    T = min(n_samples, LINEAR_TILE_ROWS)
    layout = linear_layout(n_features, n_classes, dtype)
    return (layout.size + 2 * T * n_classes) * np.dtype(dtype).itemsize
