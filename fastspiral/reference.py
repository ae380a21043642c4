"""Pure-NumPy reference: the ``"numpy"`` backend, and the math the models predict with.

The case study's vectorised NumPy, written carefully: whole-batch matrix
products, a numerically stable softmax, and the (N, H) hidden layer reused
across iterations through ``out=``. It is the baseline the benchmarks
compare against and the oracle the tests hold the Numba kernels to, so it
favours being obviously right over being fast. Parameters use the models'
names and shapes: W1 (D, H), b1 (H,), W2 (H, K), b2 (K,) or W (D, K), b (K,).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._plan import batch_bounds, shuffle_rows
from ._problem import Problem, read_only


def forward(params, X, hidden=None):
    """The net's forward pass: ``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2 + b2``.

    Returns ``(hidden, scores)``; ``hidden`` may be given as an (N, H) output
    buffer. A NaN pre-activation stays NaN, as with ``np.maximum``.
    """
    hidden = np.matmul(X, params["W1"], out=hidden)
    hidden += params["b1"]
    np.maximum(hidden, 0, out=hidden)
    return hidden, hidden @ params["W2"] + params["b2"]


def scores(params, X):
    """Class scores of either model (net: W1, b1, W2, b2; linear: W, b)."""
    if "W1" in params:
        return forward(params, X)[1]
    return X @ params["W"] + params["b"]


def softmax(scores):
    """Row-wise softmax, shifted by each row's maximum so ``exp`` cannot overflow; a new array."""
    p = scores - scores.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def softmax_loss(scores, y):
    """Mean softmax cross-entropy and its gradient: ``(loss, (softmax(scores) - onehot(y)) / N)``.

    A row's loss is ``log(sum exp(s - m)) - (s_y - m)`` (m the row maximum),
    exact even where p_y underflows; sums are taken in float64.
    """
    n = scores.shape[0]
    rows = np.arange(n)
    d = scores - scores.max(axis=1, keepdims=True)
    correct = d[rows, y].astype(np.float64)  # s_y - m
    np.exp(d, out=d)
    total = d.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(total[:, 0].astype(np.float64)) - correct)) / n
    d *= (1.0 / n) / total
    d[rows, y] -= 1.0 / n
    return loss, d


def l2_penalty(params, reg):
    """``0.5 * reg * sum(W**2)`` over the weight matrices (not the biases), in float64."""
    return (
        0.5
        * reg
        * sum(
            float(np.sum(np.square(w, dtype=np.float64)))
            for name, w in params.items()
            if name.startswith("W")
        )
    )


def net_loss_grad(params, X, y, reg, hidden=None):
    """Loss and gradient of the 2-layer net on the whole batch: ``(loss, grads)``.

    The case study's backward pass: ``dW2 = hidden.T @ dscores``,
    ``dhidden = dscores @ W2.T`` with ``dhidden[hidden <= 0] = 0``,
    ``dW1 = X.T @ dhidden``, biases the column sums, plus ``reg * W`` on the
    weights. ``hidden`` may be an (N, H) buffer to reuse.
    """
    hidden, s = forward(params, X, hidden)
    loss, ds = softmax_loss(s, y)
    dhidden = ds @ params["W2"].T
    dhidden[hidden <= 0] = 0
    grads = {
        "W1": X.T @ dhidden + reg * params["W1"],
        "b1": dhidden.sum(axis=0),
        "W2": hidden.T @ ds + reg * params["W2"],
        "b2": ds.sum(axis=0),
    }
    return loss + l2_penalty(params, reg), grads


def linear_loss_grad(params, X, y, reg):
    """Loss and gradient of the softmax linear classifier: ``(loss, grads)``."""
    loss, ds = softmax_loss(X @ params["W"] + params["b"], y)
    grads = {"W": X.T @ ds + reg * params["W"], "b": ds.sum(axis=0)}
    return loss + l2_penalty(params, reg), grads


class Trainer:
    """A training on the NumPy reference: working copies of the parameters, the update rule's
    state, the hidden buffer, and the batches' order (the plan: :mod:`fastspiral._plan`)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        plan = problem.plan
        self.current = {k: v.copy() for k, v in problem.params.items()}
        dt = problem.dtype
        self.reg = dt.type(problem.reg)
        self.vectors = {
            name: {k: np.array(plan.state.get(name, {}).get(k, np.zeros(v.shape)), dt)
                   for k, v in self.current.items()}
            for name in plan.rule.state
        }  # fmt: skip
        rows = plan.batch_size or problem.n_samples
        self.hidden = np.empty((rows, problem.n_hidden), dt) if problem.model == "net" else None
        self.order = np.empty(problem.n_samples, np.int64)

    def _rows(self, u: int, fresh: bool, draws: np.ndarray | None, first_epoch: int):
        """``(X, y)`` of update ``u``: all the rows, or its mini-batch (fastspiral._plan)."""
        X, y, B = self.problem.X, self.problem.y, self.problem.plan.batch_size
        if B is None:
            return X, y
        epoch, first, stop = batch_bounds(u, X.shape[0], B)
        if first == 0 or fresh:
            assert draws is not None  # a mini-batch plan always has its draws
            shuffle_rows(self.order, draws[epoch - first_epoch])
        rows = self.order[first:stop]
        return X[rows], y[rows]

    def run(self, start: int, stop: int, history: np.ndarray) -> int:
        """Iterations ``start..stop-1`` (see :mod:`fastspiral.backends`).

        Overflow on the way to a non-finite loss is expected when a run
        diverges and is reported by the return value, so NumPy's warnings
        about it are silenced.
        """
        plan = self.problem.plan
        step_size, dt = self.problem.step_size, self.problem.dtype.type
        draws, first_epoch = None, 0
        if plan.batch_order is not None:
            draws, first_epoch = plan.batch_order.draws(
                plan.first_update + start, plan.first_update + stop
            )
        for it in range(start, stop):
            u = plan.first_update + it
            X, y = self._rows(u, it == start, draws, first_epoch)
            with np.errstate(over="ignore", invalid="ignore"):
                if self.hidden is not None:
                    loss, grads = net_loss_grad(
                        self.current, X, y, self.reg, self.hidden[: X.shape[0]]
                    )
                else:
                    loss, grads = linear_loss_grad(self.current, X, y, self.reg)
            history[it] = loss
            if not math.isfinite(loss):
                return it
            lr = step_size if plan.schedule is None else plan.schedule.rate(step_size, u)
            with np.errstate(over="ignore", invalid="ignore"):
                plan.rule.step(self.current, grads, self.vectors, u + 1, dt(lr))
        return -1

    def compile(self) -> None:
        """Nothing to compile."""

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(loss, accuracy)`` of the current parameters on (X, y): the mean data loss (no L2)."""
        with np.errstate(over="ignore", invalid="ignore"):
            s = scores(self.current, X)
            loss, _ = softmax_loss(s, y)
        return loss, float(np.mean(np.argmax(s, axis=1) == y))

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.current.items()}

    def views(self) -> dict[str, np.ndarray]:
        return {k: read_only(v) for k, v in self.current.items()}

    def state(self, done: int) -> dict[str, Any]:
        plan = self.problem.plan
        updates = plan.first_update + done
        return {
            "updates": updates,
            "vectors": {
                name: {k: v.copy() for k, v in vecs.items()} for name, vecs in self.vectors.items()
            },
            "batches": None if plan.batch_order is None else plan.batch_order.state(updates),
        }


def prepare(problem: Problem) -> Trainer:
    """A reference trainer for ``problem`` (see :mod:`fastspiral.backends`)."""
    return Trainer(problem)


def workspace_bytes(
    model: str, n_samples: int, n_features: int, n_hidden: int, n_classes: int, dtype
) -> int:
    """Bytes of the arrays one iteration holds: hidden, its gradient and mask, scores, copies."""
    item = np.dtype(dtype).itemsize
    N, H, K = n_samples, n_hidden, n_classes
    return N * H * (2 * item + 1) + 4 * N * K * item
