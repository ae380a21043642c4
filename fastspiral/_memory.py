"""Cache-line-aligned arrays for the buffers the Numba kernels stream through.

NumPy's allocator only promises 16-byte alignment, so a 32- or 64-byte
vector load or store into an array it returns can straddle two cache lines,
and such split accesses cost the kernels 6-9% (docs/design.md). The trainers
keep their working weights, and :func:`~fastspiral._workspace.net_workspace`
its buffers, at the start of a 64-byte cache line.
"""

from __future__ import annotations

import numpy as np

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
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


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


def read_only(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` that cannot be written through (``a`` itself stays writeable)."""
    view = a.view()
    view.flags.writeable = False
    return view
