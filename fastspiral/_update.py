"""The gradient-descent update, and the fixed-order reduction of per-slot gradients.

These run a few times per slot or per iteration, not per row, so they are
compiled once each rather than inlined into their callers (inlined, every
call site copied and typed them again: the end of a net iteration took
2.2-2.9 s to compile instead of 1.3-1.9; docs/design.md, "Compile time").
"""

from __future__ import annotations

from ._jit import kernel


@kernel
def sgd_update(W, dW, step_size, reg):
    """``W -= step_size * (dW + reg * W)``, in place (``reg = 0`` for biases); dW is only read."""
    w = W.reshape(W.size)
    g = dW.reshape(dW.size)
    for i in range(w.size):
        w[i] -= step_size * (g[i] + reg * w[i])


@kernel
def fill_zero(a):
    v = a.reshape(a.size)
    for i in range(v.size):
        v[i] = 0


@kernel
def sum_slots(G):
    """``G[0] += G[1] + ... + G[S-1]``, slot by slot in that order, over whole slots.

    The order is fixed, whatever thread computed each slot, so the sum (and
    the training) has the same bits on any number of threads
    (tests/test_train.py::test_same_bits_on_any_thread_count).
    """
    flat = G.reshape(G.shape[0], G.size // G.shape[0])
    first = flat[0]
    for s in range(1, flat.shape[0]):
        other = flat[s]
        for i in range(first.size):
            first[i] += other[i]
