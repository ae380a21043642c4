"""Cache-line alignment of the buffers the kernels stream through."""

import numpy as np
import pytest

import fastspiral as fs
from fastspiral.numba_backend.workspace import (
    CACHE_LINE,
    aligned_copy,
    aligned_empty,
    net_workspace,
    slot_length,
)


@pytest.mark.parametrize("shape", [7, (3,), (2, 5), (4, 3, 33), (1, 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_aligned_empty(shape, dtype):
    for _ in range(5):  # several allocations: an aligned one by chance would not prove anything
        a = aligned_empty(shape, dtype)
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % CACHE_LINE == 0


def test_aligned_copy_is_an_aligned_equal_copy():
    a = np.arange(12.0).reshape(3, 4)
    b = aligned_copy(a.T)
    assert b.ctypes.data % CACHE_LINE == 0 and b.flags.c_contiguous
    assert np.array_equal(b, a.T)
    b[0, 0] = -1
    assert a[0, 0] == 0  # a copy, not a view


@pytest.mark.parametrize("unit_bytes", [4, 8, 12, 24, 400, 800, 808])
@pytest.mark.parametrize("pad", [0, 128])
def test_slot_length(unit_bytes, pad):
    for length in (1, 3, 4, 150, 1000):
        n = slot_length(length, unit_bytes, pad)
        assert (n * unit_bytes) % CACHE_LINE == 0
        assert (n - length) * unit_bytes >= pad
        # The smallest such length: one unit fewer breaks a rule.
        m = n - 1
        assert m < length or (m * unit_bytes) % CACHE_LINE or (m - length) * unit_bytes < pad


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hidden", [100, 7, 1000])
def test_net_workspace_slots_start_on_cache_lines(hidden, dtype, n_threads):
    ws = net_workspace(3001, 2, hidden, 3, np.dtype(dtype), n_threads)
    buffers = [ws.hidden, ws.scores, ws.dscores, ws.grow, ws.dW1, ws.db1, ws.dW2T, ws.db2]
    assert ws.n_slots > 1 and ws.n_workers == min(n_threads, ws.n_slots)
    for a in buffers:
        assert a.dtype == dtype
        assert a.ctypes.data % CACHE_LINE == 0
        assert a.strides[0] % CACHE_LINE == 0  # the worker and gradient slots
    hidden_tile = ws.hidden
    assert hidden_tile.shape[1] % 4 == 0 or hidden_tile.shape[1] >= -(-3001 // ws.n_slots)


def test_trained_parameters_are_plain_arrays():
    """The model gets ordinary arrays, not views of the trainer's padded buffers."""
    X, y = fs.make_spiral(20, 3, seed=0)
    for model in (fs.train_net(X, y, iters=2, seed=0), fs.train_linear(X, y, iters=2, seed=0)):
        for name, value in model.params.items():
            assert value.base is None and value.flags.c_contiguous, name
