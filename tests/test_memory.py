"""Cache-line alignment of the buffers the kernels stream through."""

import numpy as np
import pytest

import fastspiral as fs
from fastspiral.numba_backend.workspace import (
    CACHE_LINE,
    SLOT_PAD_BYTES,
    aligned_empty,
    aligned_zeros,
    net_layout,
    net_views,
    net_workspace,
    new_net_params,
    padded_row,
    tile_layout,
    tile_views,
)


@pytest.mark.parametrize("shape", [7, (3,), (2, 5), (4, 3, 33), (1, 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_aligned_empty(shape, dtype):
    for _ in range(5):  # several allocations: an aligned one by chance would not prove anything
        a = aligned_empty(shape, dtype)
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % CACHE_LINE == 0


def test_flat_parameters_are_an_aligned_equal_copy():
    """The trainers' parameter vector: each part on a cache line, equal to the model's arrays,
    a copy (not a view), with zeros between the parts."""
    W2 = np.arange(12.0).reshape(3, 4)
    params = {"W1": np.ones((5, 3)), "b1": np.arange(3.0), "W2": W2, "b2": np.arange(4.0)}
    for dtype in (np.float64, np.float32):
        p = new_net_params(params, dtype)
        assert p.flat.ctypes.data % CACHE_LINE == 0 and p.flat.flags.c_contiguous
        assert all(v.ctypes.data % CACHE_LINE == 0 and v.dtype == dtype for v in p)
        assert np.array_equal(p.W2T, W2.T) and np.array_equal(p.W1, params["W1"])
        assert np.array_equal(p.b1, params["b1"]) and np.array_equal(p.b2, params["b2"])
        assert p.flat.sum() == sum(v.sum() for v in params.values())  # the gaps hold zeros
        p.W2T[0, 0] = -1
        assert W2[0, 0] == 0  # a copy, not a view
    zeros = aligned_zeros((3, 5), np.float32)
    assert zeros.ctypes.data % CACHE_LINE == 0 and not zeros.any()


@pytest.mark.parametrize("itemsize", [4, 8])
def test_padded_row(itemsize):
    pad = SLOT_PAD_BYTES
    for length in (0, 1, 3, 4, 150, 1000):
        n = padded_row(length, itemsize)
        assert (n * itemsize) % CACHE_LINE == 0
        assert (n - length) * itemsize >= pad
        # The smallest such length: one cache line fewer breaks a rule.
        m = n - CACHE_LINE // itemsize
        assert m < length or (m - length) * itemsize < pad


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hidden", [100, 7, 1000])
def test_net_workspace_slots_start_on_cache_lines(hidden, dtype, n_threads):
    D, K = 2, 3
    ws = net_workspace(3001, D, hidden, K, np.dtype(dtype), n_threads)
    assert ws.n_slots > 1 and ws.n_workers == min(n_threads, ws.n_slots)
    for a in (ws.grads, ws.scratch):
        assert a.dtype == dtype
        assert a.ctypes.data % CACHE_LINE == 0
        assert a.strides[0] % CACHE_LINE == 0  # the worker and gradient slots
    T = ws.tile_rows
    assert T % 4 == 0 or T >= -(-3001 // ws.n_slots)
    # Every view of a row starts on a cache line: each part of a gradient and each buffer.
    for s in range(ws.n_slots):
        g = net_views(ws.grads[s], ws.layout)
        assert all(v.ctypes.data % CACHE_LINE == 0 for v in g)
        end = net_layout(D, hidden, K, dtype).size
        assert (ws.grads.shape[1] - end) * ws.grads.itemsize >= SLOT_PAD_BYTES
    for w in range(ws.n_workers):
        views = tile_views(ws.scratch[w], ws.tiles)
        assert all(v.ctypes.data % CACHE_LINE == 0 for v in views)
        assert views[0].shape == (T, hidden) and views[3].shape == (4, hidden)
        end = tile_layout(T, hidden, K, dtype).size
        assert (ws.scratch.shape[1] - end) * ws.scratch.itemsize >= SLOT_PAD_BYTES


def test_trained_parameters_are_plain_arrays():
    """The model gets ordinary arrays, not views of the trainer's padded buffers."""
    X, y = fs.make_spiral(20, 3, seed=0)
    for model in (fs.train_net(X, y, iters=2, seed=0), fs.train_linear(X, y, iters=2, seed=0)):
        for name, value in model.params.items():
            assert value.base is None and value.flags.c_contiguous, name
