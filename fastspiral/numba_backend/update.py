"""The gradient-descent update, and the fixed-order reduction of per-slot gradients.

These run a few times per slot or per iteration, not per row, so the loops
are compiled once each, on flat views, rather than inlined into their
callers (inlined, every call site copied and typed them again: the end of a
net iteration took 2.2-2.9 s to compile instead of 1.3-1.9), and the thin
inlined wrappers below make the flat views, so 1-D, 2-D and 3-D callers
share one compiled loop (docs/design.md, "Compile time").
"""

from __future__ import annotations

from .jit import inline_kernel, kernel


@kernel
def _sgd_update_flat(w, g, step_size, reg):
    for i in range(w.size):
        w[i] -= step_size * (g[i] + reg * w[i])


@kernel
def _fill_zero_flat(v):
    for i in range(v.size):
        v[i] = 0


@kernel
def _sum_slots_flat(flat):
    first = flat[0]
    for s in range(1, flat.shape[0]):
        other = flat[s]
        for i in range(first.size):
            first[i] += other[i]


@inline_kernel
def sgd_update(W, dW, step_size, reg):
    """``W -= step_size * (dW + reg * W)``, in place (``reg = 0`` for biases); dW is only read."""
    _sgd_update_flat(W.reshape(W.size), dW.reshape(dW.size), step_size, reg)


@inline_kernel
def fill_zero(a):
    _fill_zero_flat(a.reshape(a.size))


@inline_kernel
def sum_slots(G):
    """``G[0] += G[1] + ... + G[S-1]``, slot by slot in that order, over whole slots.

    The order is fixed, whatever thread computed each slot, so the sum (and
    the training) has the same bits on any number of threads
    (tests/test_train.py::test_same_bits_on_any_thread_count).
    """
    _sum_slots_flat(G.reshape(G.shape[0], G.size // G.shape[0]))
