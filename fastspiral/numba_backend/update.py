"""The update rules, and the fixed-order sum of the slots' gradients.

An update rule sees the flat parameter vector and the flat gradient
(:mod:`~fastspiral.numba_backend.workspace`), with the weights first: one loop
over each, the weights' extent its only seam (L2 acts on the weights, not on
the biases). The training loops call the rule through a function pointer
(:class:`~fastspiral.numba_backend.jit.KernelPointer`), so a loop is compiled
once for every rule, and a rule only when a training uses it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .jit import inline_kernel, kernel

#: Where the step size and the L2 strength are in :attr:`Optimizer.hyper`.
STEP_SIZE, REG = 0, 1


class Optimizer(NamedTuple):
    """An update rule's numbers: its hyperparameters and its state, beside the parameters."""

    hyper: np.ndarray  # (k,) in the parameters' dtype: step size, L2 strength, then the rule's own
    state: np.ndarray  # (m, parameters): the rule's vectors (none for gradient descent)
    n_weights: int  # parameters [0, n_weights) are weights, the rest biases


def gd_optimizer(step_size, reg, n_parameters, n_weights, dtype) -> Optimizer:
    """The case study's full-batch gradient descent: a step size and an L2 strength, no state."""
    hyper = np.array([step_size, reg], dtype)
    return Optimizer(hyper, np.empty((0, n_parameters), dtype), n_weights)


@inline_kernel
def _descend(w, g, step_size, reg):
    """``w -= step_size * (g + reg * w)``, in place (``reg = 0`` for biases); g is only read."""
    for i in range(w.size):
        w[i] -= step_size * (g[i] + reg * w[i])


@kernel
def gd_update(theta, grad, opt, it):
    """The case study's update: ``W -= step_size * (dW + reg * W)``, biases without the reg term."""
    step_size, reg = opt.hyper[STEP_SIZE], opt.hyper[REG]
    n = opt.n_weights
    _descend(theta[:n], grad[:n], step_size, reg)
    _descend(theta[n:], grad[n:], step_size, step_size - step_size)  # 0 in the weights' dtype


@inline_kernel
def fill_zero(v):
    """``v[:] = 0`` for a 1-D array."""
    for i in range(v.size):
        v[i] = 0


@inline_kernel
def sum_slots(grads):
    """``grads[0] += grads[1] + ... + grads[S-1]``, row by row in that order, over whole rows.

    The order is fixed, whatever thread computed each row, so the sum (and
    the training) has the same bits on any number of threads
    (tests/test_train.py::test_same_bits_on_any_thread_count).
    """
    first = grads[0]
    for s in range(1, grads.shape[0]):
        other = grads[s]
        for i in range(first.size):
            first[i] += other[i]
