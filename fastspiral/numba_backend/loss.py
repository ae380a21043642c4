"""The loss: softmax cross-entropy with its gradient, the L2 penalty, and their scalar numerics.

The numerics: a finiteness test fastmath cannot fold, and an exp LLVM can vectorise.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import exact_kernel, inline_kernel


@intrinsic
def _bits_to_float(typingctx, bits):
    """The float64 whose 64 bits are the int64 ``bits`` (LLVM's bitcast)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _float_to_bits(typingctx, x):
    """The int64 with the 64 bits of the float64 ``x`` (LLVM's bitcast)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@inline_kernel
def is_finite(x):
    """``math.isfinite(x)`` for a float64, from its exponent bits (all ones: inf or NaN).

    Numba compiles ``math.isfinite(x)`` as "``x - x`` is not NaN", which the
    kernels' fastmath flags let LLVM fold to True; a diverging run then went
    on with NaN weights. Integer operations have no fastmath flags to fold.
    Guarded by tests/test_kernels.py::test_is_finite.
    """
    return (_float_to_bits(x) >> 52) & 0x7FF != 0x7FF


_LOG2E = 1.4426950408889634
# ln 2 split in two: LN2_HI has trailing zero bits, so k * LN2_HI is exact
# for the |k| <= 1100 used here (Cody and Waite's argument reduction).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# 1.5 * 2**52: adding it to an integral float64 |k| < 2**51 leaves k, as an
# integer, in the low bits of the sum's mantissa.
_INT_IN_LOW_BITS = 6755399441055744.0


@exact_kernel
def exp_nonpositive(x):
    """``exp(x)`` in float64 for ``x <= 0``, in arithmetic LLVM can vectorise.

    ``np.exp`` is a C-library call LLVM cannot vectorise without Intel's SVML
    (not a dependency). Method: ``x = k ln2 + r`` with ``|r| <= ln2 / 2``,
    ``exp(r)`` by its Taylor series to degree 13, times ``2**k`` from its
    bits. Within 1 ulp of NumPy's exp over [-708, 0]; 0 below -708 (where the
    result would be subnormal) and for -inf; NaN stays NaN
    (tests/test_kernels.py::test_exp_matches_numpy_to_one_ulp).
    """
    k = np.floor(x * _LOG2E + 0.5)  # a float: Numba's math.floor returns an int64
    if not k > -1100.0:  # NaN, -inf, far below the range: keep |k| < 2**51 for its bits below
        k = 0.0
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # p * 2**k, k + 1023 in the exponent's 12 bits. Taken from k as an
    # integer (math.floor's int64, or np.int64(k)) it needs a float-to-int64
    # conversion, which has no packed AVX2 instruction (vcvttpd2qq is
    # AVX-512): LLVM converted lane by lane and the AVX2 softmax ran 2x
    # slower (tests/test_codegen.py::test_softmax_exponentials_are_vectorised).
    e = p * _bits_to_float((_float_to_bits(k + _INT_IN_LOW_BITS) + 1023) << 52)
    return 0.0 if x < -708.0 else e


@inline_kernel
def softmax_xent_grad(scores, y, scale, dscores, k_token):
    """Softmax cross-entropy on a tile of scores, and its gradient.

    Writes ``dscores = scale * (softmax(scores) - onehot(y))`` and returns
    ``scale * sum_t -log softmax(scores[t])[y[t]]`` as a float64. scores,
    dscores (T, K); y (T,) int64; ``scale`` is 1/N for the full-batch mean.
    K is ``len(k_token)`` (unrolled loops over a row) or, for an empty token,
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
    K = len(k_token) if len(k_token) > 0 else scores.shape[1]
    loss = 0.0
    for t in range(T):
        # The row maximum, inline: as a helper taking k_token, the code loaded
        # from Numba's cache rounded differently from the code compiled in
        # the process
        # (tests/test_install.py::test_processes_compiling_at_once_leave_a_loadable_cache).
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


@inline_kernel
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
