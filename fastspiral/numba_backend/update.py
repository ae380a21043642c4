"""The update rules, compiled, and the fixed-order sum of the slots' gradients.

A rule ``rule(theta, grad, opt, it)`` sees the flat parameter vector and the
flat gradient of the data loss (:mod:`~fastspiral.numba_backend.workspace`),
with the weights first: one loop over each, the weights' extent its only seam
(L2 acts on the weights, ``dx = grad + reg * w``, not on the biases). The
formulas are those of :mod:`fastspiral.optim`, whose NumPy code is the
reference they are tested against. The training loops call a rule through a
function pointer (:class:`~fastspiral.numba_backend.jit.KernelPointer`), so a
loop is compiled once for every rule, and a rule only when a training uses it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .jit import inline_kernel, kernel

#: Where the numbers are in :attr:`Optimizer.hyper` (float64): the step size, the L2 strength,
#: the schedule (its code, then two parameters), then the rule's own (fastspiral.optim, in
#: field order).
STEP_SIZE, REG, SCHEDULE, SCHEDULE_A, SCHEDULE_B, RULE = 0, 1, 2, 3, 4, 5


class Optimizer(NamedTuple):
    """An update rule's numbers, beside the flat parameters."""

    hyper: np.ndarray  # float64: see STEP_SIZE ... RULE
    state: np.ndarray  # (vectors, parameters) in the parameters' dtype: velocity, cache, moments
    n_weights: int  # parameters [0, n_weights) are weights, the rest biases
    first_update: int  # updates made before this training (a continued model's count)


def new_optimizer(rule, schedule, step_size, reg, n_parameters, n_weights, dtype, first_update=0):
    """The :class:`Optimizer` of a :mod:`fastspiral.optim` rule and schedule, its state zero."""
    code, a, b = (0, 0.0, 0.0) if schedule is None else (schedule.code, *schedule.params)
    hyper = np.array([step_size, reg, code, a, b, *rule.hyper], np.float64)
    state = np.zeros((len(rule.state), n_parameters), dtype)
    return Optimizer(hyper, state, n_weights, first_update)


def gd_optimizer(step_size, reg, n_parameters, n_weights, dtype) -> Optimizer:
    """The case study's full-batch gradient descent: a step size and an L2 strength, no state."""
    hyper = np.array([step_size, reg, 0, 0, 0], np.float64)
    return Optimizer(hyper, np.empty((0, n_parameters), dtype), n_weights, 0)


@inline_kernel
def _rate(opt, it):
    """The step size of update ``opt.first_update + it``, through the schedule, in float64."""
    h = opt.hyper
    lr, code = h[STEP_SIZE], h[SCHEDULE]
    u = opt.first_update + it
    if code == 1.0:  # StepDecay(every, factor)
        return lr * h[SCHEDULE_B] ** (u // np.int64(h[SCHEDULE_A]))
    if code == 2.0:  # ExpDecay(k)
        return lr * math.exp(-h[SCHEDULE_A] * u)
    if code == 3.0:  # InverseTimeDecay(k)
        return lr / (1.0 + h[SCHEDULE_A] * u)
    return lr


@inline_kernel
def _descend(w, g, step_size, reg):
    """``w -= step_size * (g + reg * w)``, in place (``reg = 0`` for biases); g is only read."""
    for i in range(w.size):
        w[i] -= step_size * (g[i] + reg * w[i])


@kernel
def gd_update(theta, grad, opt, it):
    """The case study's update: ``W -= step_size * (dW + reg * W)``, biases without the reg term.

    Also the rule of "sgd" (the same formula on mini-batches).
    """
    f = theta.dtype.type
    step_size, reg = f(_rate(opt, it)), f(opt.hyper[REG])
    n = opt.n_weights
    _descend(theta[:n], grad[:n], step_size, reg)
    _descend(theta[n:], grad[n:], step_size, f(0))


@inline_kernel
def _momentum(w, g, v, lr, reg, mu, nesterov):
    for i in range(w.size):
        dx = g[i] + reg * w[i]
        v_prev = v[i]
        v[i] = mu * v[i] - lr * dx
        if nesterov:
            w[i] += -mu * v_prev + (1 + mu) * v[i]
        else:
            w[i] += v[i]


@kernel
def momentum_update(theta, grad, opt, it):
    """``v = mu * v - lr * dx;  x += v``."""
    f = theta.dtype.type
    lr, reg, mu = f(_rate(opt, it)), f(opt.hyper[REG]), f(opt.hyper[RULE])
    n, v = opt.n_weights, opt.state[0]
    _momentum(theta[:n], grad[:n], v[:n], lr, reg, mu, False)
    _momentum(theta[n:], grad[n:], v[n:], lr, f(0), mu, False)


@kernel
def nesterov_update(theta, grad, opt, it):
    """``v_prev = v;  v = mu * v - lr * dx;  x += -mu * v_prev + (1 + mu) * v``."""
    f = theta.dtype.type
    lr, reg, mu = f(_rate(opt, it)), f(opt.hyper[REG]), f(opt.hyper[RULE])
    n, v = opt.n_weights, opt.state[0]
    _momentum(theta[:n], grad[:n], v[:n], lr, reg, mu, True)
    _momentum(theta[n:], grad[n:], v[n:], lr, f(0), mu, True)


@inline_kernel
def _scaled(w, g, cache, lr, reg, decay, eps, adagrad):
    for i in range(w.size):
        dx = g[i] + reg * w[i]
        if adagrad:
            cache[i] += dx * dx
        else:
            cache[i] = decay * cache[i] + (1 - decay) * dx * dx
        w[i] -= lr * dx / (np.sqrt(cache[i]) + eps)


@kernel
def adagrad_update(theta, grad, opt, it):
    """``cache += dx**2;  x += -lr * dx / (sqrt(cache) + eps)``."""
    f = theta.dtype.type
    lr, reg, eps = f(_rate(opt, it)), f(opt.hyper[REG]), f(opt.hyper[RULE])
    n, cache = opt.n_weights, opt.state[0]
    _scaled(theta[:n], grad[:n], cache[:n], lr, reg, f(0), eps, True)
    _scaled(theta[n:], grad[n:], cache[n:], lr, f(0), f(0), eps, True)


@kernel
def rmsprop_update(theta, grad, opt, it):
    """``cache = decay * cache + (1 - decay) * dx**2;  x += -lr * dx / (sqrt(cache) + eps)``."""
    f = theta.dtype.type
    lr, reg = f(_rate(opt, it)), f(opt.hyper[REG])
    decay, eps = f(opt.hyper[RULE]), f(opt.hyper[RULE + 1])
    n, cache = opt.n_weights, opt.state[0]
    _scaled(theta[:n], grad[:n], cache[:n], lr, reg, decay, eps, False)
    _scaled(theta[n:], grad[n:], cache[n:], lr, f(0), decay, eps, False)


@inline_kernel
def _adam(w, g, m, v, lr, reg, coef):
    """Adam on one part; ``coef``: (beta1, beta2, c1, c2, eps), one tuple of scalars."""
    beta1, beta2, c1, c2, eps = coef
    for i in range(w.size):
        dx = g[i] + reg * w[i]
        m[i] = beta1 * m[i] + (1 - beta1) * dx
        v[i] = beta2 * v[i] + (1 - beta2) * dx * dx
        w[i] -= lr * (m[i] / c1) / (np.sqrt(v[i] / c2) + eps)


@kernel
def adam_update(theta, grad, opt, it):
    """``m = beta1 m + (1 - beta1) dx;  v = beta2 v + (1 - beta2) dx**2;``
    ``x += -lr (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)``, t counting from 1."""
    f = theta.dtype.type
    h = opt.hyper
    t = opt.first_update + it + 1
    lr, reg = f(_rate(opt, it)), f(h[REG])
    beta1, beta2, eps = f(h[RULE]), f(h[RULE + 1]), f(h[RULE + 2])
    c1, c2 = f(1.0 - h[RULE] ** t), f(1.0 - h[RULE + 1] ** t)  # in float64, as the reference
    n, m, v = opt.n_weights, opt.state[0], opt.state[1]
    coef = (beta1, beta2, c1, c2, eps)
    _adam(theta[:n], grad[:n], m[:n], v[:n], lr, reg, coef)
    _adam(theta[n:], grad[n:], m[n:], v[n:], lr, f(0), coef)


#: The compiled rule of each fastspiral.optim name.
RULES = {
    "gd": gd_update,
    "sgd": gd_update,
    "momentum": momentum_update,
    "nesterov": nesterov_update,
    "adagrad": adagrad_update,
    "rmsprop": rmsprop_update,
    "adam": adam_update,
}


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
