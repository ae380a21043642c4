"""The loss: softmax cross-entropy with its gradient, and the L2 penalty."""

from __future__ import annotations

import math

import numpy as np

from ._jit import inline_kernel, kernel
from ._numerics import exp_nonpositive


@kernel
def softmax_xent_grad(scores, y, scale, dscores, ktok):
    """Softmax cross-entropy on a tile of scores, and its gradient.

    Writes ``dscores = scale * (softmax(scores) - onehot(y))`` and returns
    ``scale * sum_t -log softmax(scores[t])[y[t]]`` as a float64. scores,
    dscores (T, K); y (T,) int64; ``scale`` is 1/N for the full-batch mean.
    K is ``len(ktok)`` (unrolled loops over a row) or, for an empty token,
    ``scores.shape[1]``.

    The row maximum is subtracted before exponentiating (no overflow), and a
    row's loss is ``log(sum exp(s - m)) - (s_y - m)``, which loses nothing
    when p_y is tiny. A NaN or inf score gives a NaN loss. The exponentials
    run in one flat loop that LLVM vectorises (:func:`exp_nonpositive`;
    float32 in float64). The rows' sums (each in [1, K]) are multiplied and
    the logarithm taken once the product passes 1e200: one ``log`` per
    hundred rows, at the rounding of a sum of logarithms.
    """
    T = scores.shape[0]
    K = len(ktok) if len(ktok) > 0 else scores.shape[1]
    loss = 0.0
    for t in range(T):
        # The row maximum, inline: as a helper taking ktok, the code loaded
        # from Numba's cache rounded differently from the code compiled in
        # the process (tests/test_install.py::test_processes_compiling_at_once_leave_a_loadable_cache).
        m = scores[t, 0]
        for k in range(1, K):
            if scores[t, k] > m:
                m = scores[t, k]
        for k in range(K):
            dscores[t, k] = scores[t, k] - m
        loss -= dscores[t, y[t]]
    flat = dscores.reshape(T * K)
    for i in range(T * K):
        flat[i] = exp_nonpositive(np.float64(flat[i]))
    product = 1.0
    for t in range(T):
        total = dscores.dtype.type(0)
        for k in range(K):
            total += dscores[t, k]
        product *= total
        if product > 1e200:
            loss += math.log(product)
            product = 1.0
        inv = scale / total
        for k in range(K):
            dscores[t, k] *= inv
        dscores[t, y[t]] -= scale
    return (loss + math.log(product)) * scale


@kernel  # once per iteration: compiled once, not inlined (see fastspiral._update)
def sum_squares(W):
    """``sum(W * W)`` accumulated in float64."""
    w = W.reshape(W.size)
    acc = 0.0
    for i in range(w.size):
        acc += w[i] * w[i]
    return acc


@inline_kernel
def l2_penalty(reg, W1, W2):
    """The net's L2 term, ``0.5 * reg * (sum(W1**2) + sum(W2**2))``; biases are not regularised."""
    return 0.5 * reg * (sum_squares(W1) + sum_squares(W2))
