"""Numba kernels: the ``"numba"`` backend.

Layout and conventions
----------------------
* ``X`` is (N, D) C-contiguous; labels ``y`` are int64.
* The first layer is stored as ``W1`` (D, H), ``b1`` (H,). The second layer
  is stored *transposed*, ``W2T`` (K, H), so that every loop over the hidden
  units runs along a contiguous row: the score dot products, the backward
  product ``dscores @ W2`` and the ``dW2`` accumulation all vectorise over H.
  The public API hands out ``W2`` (H, K) and transposes once per training call.
* Kernels return nothing (or a scalar loss) and write into buffers that the
  caller allocated once per training call; no kernel allocates, so the
  training loop allocates nothing per iteration.
* Arrays arrive in one dtype (float32 or float64) and accumulate in that
  dtype; loss sums are accumulated in float64.

The same names, with the same signatures, are implemented with whole-batch
NumPy in :mod:`fastspiral.reference`; the tests hold each kernel here against
its twin there.

Memory
------
The net is trained tile by tile: each thread runs ``T`` rows at a time through
the fused forward pass, the softmax gradient and the fused backward pass, with
a (T, H) hidden tile sized to stay in cache. Neither the (N, H) hidden layer
nor its gradient is ever materialised, so memory grows with N (the data) and
with H (the weights), never with N*H.

Small D and K
-------------
The loops over the features (D) and classes (K) sit inside the loop over the
hidden units, with D and K compile-time constants (see :func:`dims_token`),
so each pass over H is one vectorised loop doing all of a row's work for
that hidden unit, with the sums in registers. The earlier design, one
vectorised pass over H per feature and per class (affine, ReLU, score dot
products, outer-product updates, each reading and writing the row again),
ran at 11-14 GFLOP/s per core in float64; the fused, blocked passes, taking
rows four at a time, run at 35-50 on one core (see the benchmark table in
the README). That is close to the limit of the 256-bit FMAs LLVM emits here:
16 FLOP per cycle per core, less the compares, selects and bias additions
that are not counted as useful FLOPs. 512-bit code (forced with
``NUMBA_CPU_FEATURES=...,-prefer-256-bit``) was no faster on the
development machine, with one row or four at a time.

Threads
-------
Each of P thread slots takes a contiguous block of rows and has its own
gradient buffers (slot p of every ``(P, ...)`` buffer); ``net_loss_grad`` runs
the slots in a ``prange``, then sums the slots serially. Nothing is ``+=``-ed
into a shared array inside the ``prange``, so results depend on P only
through the order of the final additions.

Training runs one of two compiled loops (:func:`train_net_steps`). On one
thread slot, :func:`_train_net_one_thread` never enters a parallel region, so
small problems pay no thread start-up cost. On more,
:func:`_train_net_threads` goes further than ``net_loss_grad``: its threads
stay in one parallel region for all of a call's iterations, in step through
a barrier of their own (:mod:`fastspiral._sync`), and each keeps its own copy
of the weights and applies the summed gradient to it, so nothing runs
serially between iterations.

The slots of the gradient and score buffers are padded (see
:func:`net_workspace`) so that no cache line holds parts of two slots. Without
the padding, the threads' ``+=`` into the ends of neighbouring slots made
those lines bounce between the cores at every group of rows: at N=1200,
H=100, two threads took 91-99 us per iteration instead of 72-80 (one thread:
118-132), and at the case study's size 26.4 us instead of 22.7.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.cpython.unsafe.tuple import tuple_setitem
from numba.extending import intrinsic

from ._memory import CACHE_LINE, aligned_empty, slot_length
from ._sync import RESULT, barrier, join_team, new_team_state, prefetch_for_write, reset_team

# One place for the compilation options of every kernel.
# fastmath: "contract" lets LLVM fuse multiply-adds into FMA and "reassoc" lets
# it vectorise the float reductions (dot products over H, softmax sums). The
# "nnan"/"ninf" flags are deliberately left out: with them LLVM may assume no
# NaN/inf exists and fold away exactly the non-finite losses the training loop
# must detect to report divergence.
FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
# error_model="numpy": a division by zero gives inf/NaN (then caught as a
# non-finite loss) instead of a Python ZeroDivisionError check in the hot loops.
JIT_OPTIONS = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

kernel = njit(**JIT_OPTIONS)
# The parallel functions are only ever called from Python, never from another
# compiled function. A compiled caller of a cached parallel function, compiled
# in a process that had *loaded* that function from the cache, was saved
# without the prange's outlined code, and the next process to load the caller
# crashed with a segmentation fault
# (tests/test_install.py::test_cached_training_loop_loads_in_a_later_process).
parallel_kernel = njit(parallel=True, **JIT_OPTIONS)

#: Scratch elements per (T, H) hidden tile: 64 Ki elements is 512 KiB in
#: float64, so the tile the forward pass writes is still in L2 (2 MiB per core
#: on the development machine) when the backward pass reads it, and each
#: block of weights is read from L2 once per T rows. At N=300k, H=1000, two
#: threads, float64: tiles of 16, 32, 64, 128 and 256 Ki elements gave about
#: 76, 82, 85, 85 and 77 GFLOP/s. At H=100, tiles of 4-16 Ki elements made
#: no measurable difference.
TILE_ELEMENTS = 65_536
#: Hidden units per block in the fused passes: the block's slices of W1, b1,
#: W2T and of their gradients, (2D + 2K + 2) * H_BLOCK values (48 KiB in
#: float64 for the spiral, 24 KiB in float32), stay in L1/L2 while every row
#: of a tile uses them. At N=300k, H=1000 on the 2-core development machine,
#: two threads, float64, blocks of 256, 512, 768 and 1024 gave about 70-75,
#: 75-88, 81-83 and 74 GFLOP/s (float32: 117-122, 130-154, 145-149, 138-142).
H_BLOCK = 512
#: Unused bytes after each thread's slot in the per-thread buffers: two cache
#: lines, as the CPU may also fetch a line's neighbour along with it.
SLOT_PAD_BYTES = 128


# --------------------------------------------------------------------------
# The steps of one forward/backward pass, on a tile of rows
# --------------------------------------------------------------------------


def dims_token(n_features, n_classes, dtype):
    """``(dtok, ktok)``: D and K encoded as tuples of those lengths, for the kernels.

    Numba types a tuple by its length, so ``len(dtok)`` is a compile-time
    constant inside a kernel: the short loops over D and K are unrolled, and
    the loop over the hidden units around them becomes one vectorised pass
    that keeps its partial sums in registers. With D and K as runtime integers
    LLVM vectorises the wrong (2- or 3-long) loops instead, and the fused
    kernels ran about 5x slower than with the token. Passing D and K via
    ``numba.literally`` gave the same code, but every call from Python went
    through the dispatcher's slow path (about 25 ms per call). Both tokens
    hold zeros of ``dtype``: the forward pass starts its K score
    accumulators from ``ktok``, and :func:`_row` reads a row's D features or
    K score gradients into a copy of a token. The cost of the tokens: one
    compiled specialisation per (D, K, dtype). The two tuples are passed separately because a nested tuple
    cannot cross into a ``prange`` body (Numba's parallel lowering rejects it).
    """
    zero = np.dtype(dtype).type(0)
    return (zero,) * n_features, (zero,) * n_classes


@kernel
def _block(h0, H):
    """Bounds of the block of hidden units that starts at h0, as unsigned integers.

    Numba wraps negative indices around, and where LLVM cannot prove an index
    is >= 0 (as for h in range(h0, h1) with h0 from a strided loop) the
    wraparound select blocks vectorisation: the blocked loops ran 4x slower
    with signed bounds. Unsigned indices need no wraparound. (Only ever
    index with them: Numba promotes uint64 mixed with int64 to float64.)
    """
    return np.uint64(h0), np.uint64(min(h0 + H_BLOCK, H))


@kernel
def _row(A, t, tok):
    """Row t of the 2-D array A as a tuple of ``len(tok)`` values (tok: a token of the same dtype).

    The blocked passes read each row's few inputs (its D features, its K
    score gradients) once into a tuple before looping over the hidden units.
    Read inside that loop, they would be loads LLVM cannot hoist (it cannot
    prove that the gradient stores do not alias them), and with four rows
    the extra runtime alias checks made the vectoriser give up on the loop
    (scalar code, 12 GFLOP/s).
    """
    r = tok
    for j in range(len(tok)):
        r = tuple_setitem(r, j, A[t, j])
    return r


@kernel
def _forward_one_row(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok):
    """:func:`net_forward` for row t alone, hidden units lo..hi-1 (see :func:`_block`)."""
    zero = hidden.dtype.type(0)
    x = _row(X, t, dtok)
    acc = ktok
    for h in range(lo, hi):
        z = b1[h]
        for d in range(len(dtok)):
            z += x[d] * W1[d, h]
        if z < 0:
            z = zero
        hidden[t, h] = z
        for k in range(len(ktok)):
            acc = tuple_setitem(acc, k, acc[k] + z * W2T[k, h])
    for k in range(len(ktok)):
        scores[t, k] += acc[k]


@kernel
def _forward_four_rows(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok):
    """:func:`net_forward` for rows t..t+3, hidden units lo..hi-1: each weight load serves four rows."""
    zero = hidden.dtype.type(0)  # a literal 0 would turn float32 sums into float64
    x0, x1 = _row(X, t, dtok), _row(X, t + 1, dtok)
    x2, x3 = _row(X, t + 2, dtok), _row(X, t + 3, dtok)
    a0 = a1 = a2 = a3 = ktok
    for h in range(lo, hi):
        z0 = z1 = z2 = z3 = b1[h]
        for d in range(len(dtok)):
            w = W1[d, h]
            z0 += x0[d] * w
            z1 += x1[d] * w
            z2 += x2[d] * w
            z3 += x3[d] * w
        if z0 < 0:
            z0 = zero
        if z1 < 0:
            z1 = zero
        if z2 < 0:
            z2 = zero
        if z3 < 0:
            z3 = zero
        hidden[t, h] = z0
        hidden[t + 1, h] = z1
        hidden[t + 2, h] = z2
        hidden[t + 3, h] = z3
        for k in range(len(ktok)):
            w = W2T[k, h]
            a0 = tuple_setitem(a0, k, a0[k] + z0 * w)
            a1 = tuple_setitem(a1, k, a1[k] + z1 * w)
            a2 = tuple_setitem(a2, k, a2[k] + z2 * w)
            a3 = tuple_setitem(a3, k, a3[k] + z3 * w)
    for k in range(len(ktok)):
        scores[t, k] += a0[k]
        scores[t + 1, k] += a1[k]
        scores[t + 2, k] += a2[k]
        scores[t + 3, k] += a3[k]


@kernel
def net_forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    """Fused forward pass of a tile: ``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2T.T + b2``.

    X (T, D), W1 (D, H), b1 (H,), W2T (K, H), b2 (K,); writes hidden (T, H)
    and scores (T, K). A NaN pre-activation stays NaN (NaN < 0 is false), as
    with ``np.maximum``.

    Each hidden unit is used for the K scores as soon as it is computed; the
    K partial sums ride in a tuple (``ktok`` holds K zeros of the dtype), so
    they live in registers and the loop vectorises as a K-way reduction.
    Separate dot-product passes over the stored row, one per class, took
    8.0 us instead of 5.5 us for 150 rows at H = 100 (float64), and the whole
    iteration about 13% longer. ``tuple_setitem`` (Numba's own helper for
    rebuilding a tuple with one item replaced) is what makes an indexable set
    of K scalars possible.

    Hidden units go in blocks of H_BLOCK, whose weights stay in cache while
    every row of the tile uses them, and rows go four at a time, so that
    each load of a weight serves four rows: one row at a time, the loop
    issued as many loads as FMAs and ran at 30-40 GFLOP/s on one core of
    the development machine (float64); four at a time, 37-50. (Pairs of rows
    gave 24-46, no steady gain.)
    """
    T, H = hidden.shape
    for t in range(T):
        for k in range(len(ktok)):
            scores[t, k] = b2[k]
    T4 = T - T % 4
    for h0 in range(0, H, H_BLOCK):
        lo, hi = _block(h0, H)
        for t in range(0, T4, 4):
            _forward_four_rows(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok)
        for t in range(T4, T):
            _forward_one_row(X, W1, b1, W2T, hidden, scores, t, lo, hi, dtok, ktok)


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


@kernel
def _is_finite(x):
    """``math.isfinite(x)`` for a float64, from its exponent bits (all ones: inf or NaN).

    The training loops stop at the first non-finite loss. Numba compiles
    ``math.isfinite(x)`` as "``x - x`` is not NaN", and under the kernels'
    fastmath flags (all four of them together; any one alone did not) LLVM
    may fold ``x - x`` to 0, so the check can vanish: in the threaded
    training loop it did, and a diverging run went on to the end with NaN
    weights. Integer operations on the bits have no fastmath flags to fold.
    """
    return (_float_to_bits(x) >> 52) & 0x7FF != 0x7FF


_LOG2E = 1.4426950408889634
# ln 2 split in two: LN2_HI has trailing zero bits, so k * LN2_HI is exact
# for the |k| <= 1100 used here (Cody and Waite's argument reduction).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


# Compiled with "contract" only: with the kernels' "reassoc", LLVM merged the
# two steps of the argument reduction into one (x - k * ln2), and the error
# grew with |x| to 200 ulp. Explicit flags also stop Numba from handing this
# function the fastmath flags of whichever kernel calls it first.
@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _exp_nonpositive(x):
    """``exp(x)`` in float64 for ``x <= 0``, in arithmetic LLVM can vectorise.

    The softmax's ``np.exp`` is a call into the C library that LLVM cannot
    vectorise without Intel's SVML (not a dependency), and at the case
    study's size those calls were a fifth of each thread's time. This is the
    textbook method: ``x = k ln2 + r`` with ``|r| <= ln2 / 2``, ``exp(r)`` by
    its Taylor series to degree 13 (truncation error below 1e-17), times
    ``2**k`` built from its bits. Within 1 ulp of NumPy's ``exp`` over
    [-708, 0] (``tests/test_kernels.py``); below -708, where the result
    would be subnormal, it returns 0 (NumPy returns values below 2.3e-308).
    NaN gives NaN, -inf gives 0.
    """
    k = math.floor(x * _LOG2E + 0.5)
    if not k > -1100.0:  # NaN, -inf, far below the range: keep the conversion below defined
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
    e = p * _bits_to_float((np.int64(k) + 1023) << 52)  # p * 2**k
    return 0.0 if x < -708.0 else e


@kernel
def softmax_xent_grad(scores, y, scale, dscores, ktok):
    """Softmax cross-entropy and its gradient on the scores.

    Writes ``dscores = scale * (softmax(scores) - onehot(y))`` and returns
    ``scale * sum_t -log softmax(scores[t])[y[t]]`` as a float64.

    scores, dscores (T, K), C-contiguous; y (T,) int64; scale is 1/N for the
    mean over the full batch; ``ktok`` holds K zeros (:func:`dims_token`), so
    the loops over a row's K scores are unrolled: with K read from the
    array's shape at run time, the softmax took 1.35 instead of 0.80 us per
    150 rows at the case study's size (float64). The row maximum is
    subtracted before exponentiating, so large scores cannot overflow, and the log-probability
    is computed as ``log(sum exp(s - m)) - (s_y - m)`` rather than
    ``-log(p_y)``, which loses no precision when p_y is tiny. A NaN or inf
    score gives a NaN loss.

    Three passes over the tile: the shifted scores ``s - m`` into dscores,
    their exponentials in one flat loop that LLVM vectorises (see
    :func:`_exp_nonpositive`; float32 scores are exponentiated in float64),
    then per row the sum, the loss and the normalisation. At the case
    study's size this took the softmax from 2.8 to about 1.5 us per 150 rows
    (float64), where one ``np.exp`` call per score had been most of its time.

    The rows' ``sum exp(s - m)`` (each between 1 and K) are multiplied
    together and the logarithm taken once the product passes 1e200, so there
    is about one ``log`` call per hundred rows instead of one per row; the
    product's rounding errors (one per row, as with a sum of logarithms)
    leave the loss unchanged to about 1e-16 per row. That saved another
    0.3-0.4 us per 150 rows.
    """
    T, K = scores.shape[0], len(ktok)
    loss = 0.0
    for t in range(T):
        # The row maximum; NaNs are skipped, so a row's NaN reaches the loss
        # through s - m. (As a select, m = v if v > m else m, it was no
        # faster. As a helper function taking ktok, the code loaded from
        # Numba's cache rounded differently from the code compiled in the
        # process: one ulp in the loss after a few iterations.)
        m = scores[t, 0]
        for k in range(1, K):
            if scores[t, k] > m:
                m = scores[t, k]
        for k in range(K):
            dscores[t, k] = scores[t, k] - m
        loss -= dscores[t, y[t]]
    flat = dscores.reshape(T * K)
    for i in range(T * K):
        flat[i] = _exp_nonpositive(np.float64(flat[i]))
    product = 1.0
    for t in range(T):
        total = dscores.dtype.type(0)
        for k in range(K):
            total += dscores[t, k]
        label = y[t]
        product *= total
        if product > 1e200:
            loss += math.log(product)
            product = 1.0
        inv = scale / total
        for k in range(K):
            dscores[t, k] *= inv
        dscores[t, label] -= scale
    return (loss + math.log(product)) * scale


@kernel
def _backward_one_row(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok):
    """:func:`net_backward` for row t alone, hidden units lo..hi-1 (see :func:`_block`)."""
    zero = hidden.dtype.type(0)
    x = _row(X, t, dtok)
    s = _row(dscores, t, ktok)
    for h in range(lo, hi):
        hv = hidden[t, h]
        g = zero
        for k in range(len(ktok)):
            dW2T[k, h] += s[k] * hv
            g += s[k] * W2T[k, h]
        if hv <= 0:
            g = zero
        db1[h] += g
        for d in range(len(dtok)):
            dW1[d, h] += x[d] * g


@kernel
def _backward_four_rows(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok):
    """:func:`net_backward` for rows t..t+3, hidden units lo..hi-1.

    Each load and store of a gradient serves four rows.
    """
    zero = hidden.dtype.type(0)
    s0, s1 = _row(dscores, t, ktok), _row(dscores, t + 1, ktok)
    s2, s3 = _row(dscores, t + 2, ktok), _row(dscores, t + 3, ktok)
    x0, x1 = _row(X, t, dtok), _row(X, t + 1, dtok)
    x2, x3 = _row(X, t + 2, dtok), _row(X, t + 3, dtok)
    for h in range(lo, hi):
        v0, v1, v2, v3 = hidden[t, h], hidden[t + 1, h], hidden[t + 2, h], hidden[t + 3, h]
        g0 = g1 = g2 = g3 = zero
        for k in range(len(ktok)):
            w = W2T[k, h]
            dW2T[k, h] += (s0[k] * v0 + s1[k] * v1) + (s2[k] * v2 + s3[k] * v3)
            g0 += s0[k] * w
            g1 += s1[k] * w
            g2 += s2[k] * w
            g3 += s3[k] * w
        if v0 <= 0:
            g0 = zero
        if v1 <= 0:
            g1 = zero
        if v2 <= 0:
            g2 = zero
        if v3 <= 0:
            g3 = zero
        db1[h] += (g0 + g1) + (g2 + g3)
        for d in range(len(dtok)):
            dW1[d, h] += (x0[d] * g0 + x1[d] * g1) + (x2[d] * g2 + x3[d] * g3)


@kernel
def net_backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, dtok, ktok):
    """Fused backward pass of a tile; adds the tile's gradient to dW1, db1, dW2T, db2.

    With ``dhidden = (dscores @ W2T) * (hidden > 0)`` (the ReLU passes the
    gradient where its output was positive, the case study's
    ``dhidden[hidden <= 0] = 0``)::

        dW2T += dscores.T @ hidden      db2 += dscores.sum(0)
        dW1  += X.T @ dhidden           db1 += dhidden.sum(0)

    dhidden is never stored: each element is used by the weight gradients as
    soon as it is computed. The traffic to the weight and gradient buffers,
    not the arithmetic, bounds this loop, so (1) hidden units go in blocks of
    H_BLOCK, whose weights and gradients stay in L1 while all rows of the
    tile pass (without the blocking, H = 1000 ran at the speed of L2), and
    (2) rows go four at a time, so each load and store of a gradient serves
    four rows. On one core of the development machine (float64): one row at
    a time ran at about 28 GFLOP/s, pairs of rows 28-40, four rows 44-55
    (float32: 38-85, 56-83, 64-103); eight rows, 38-43 (too many values for
    the registers).
    """
    T, H = hidden.shape
    for t in range(T):
        for k in range(len(ktok)):
            db2[k] += dscores[t, k]
    T4 = T - T % 4
    for h0 in range(0, H, H_BLOCK):
        lo, hi = _block(h0, H)
        for t in range(0, T4, 4):
            _backward_four_rows(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok)
        for t in range(T4, T):
            _backward_one_row(X, hidden, dscores, W2T, dW1, db1, dW2T, t, lo, hi, dtok, ktok)


@kernel
def linear_forward(X, WT, b, scores):
    """Scores of the linear classifier: ``scores = X @ WT.T + b``, written in place.

    X (T, D), WT (K, D), b (K,), scores (T, K).
    """
    T, D = X.shape
    K = WT.shape[0]
    for t in range(T):
        for k in range(K):
            acc = b[k]
            for d in range(D):
                acc += X[t, d] * WT[k, d]
            scores[t, k] = acc


@kernel
def linear_backward(X, dscores, dWT, db):
    """Adds ``dscores.T @ X`` to dWT (K, D) and ``dscores.sum(0)`` to db (K,)."""
    T, D = X.shape
    K = dscores.shape[1]
    for t in range(T):
        for k in range(K):
            g = dscores[t, k]
            db[k] += g
            for d in range(D):
                dWT[k, d] += g * X[t, d]


@kernel
def sgd_update(W, dW, step_size, reg):
    """Gradient-descent step with L2: ``W -= step_size * (dW + reg * W)``, in place.

    W and dW are C-contiguous and of the same shape; ``reg = 0`` for biases.
    ``dW`` is not modified.
    """
    w = W.reshape(W.size)
    g = dW.reshape(dW.size)
    for i in range(w.size):
        w[i] -= step_size * (g[i] + reg * w[i])


@kernel
def sum_squares(W):
    """``sum(W * W)`` accumulated in float64 (for the L2 term of the loss)."""
    w = W.reshape(W.size)
    acc = 0.0
    for i in range(w.size):
        acc += w[i] * w[i]
    return acc


@kernel
def _fill_zero(a):
    v = a.reshape(a.size)
    for i in range(v.size):
        v[i] = 0


@kernel
def _copy_into(dst, src):
    """``dst[...] = src`` for C-contiguous arrays of one size, as an explicit loop.

    Inside a ``parallel=True`` function a slice assignment becomes a parallel
    loop of its own; in :func:`_train_net_threads`, written that way, the
    copies to and from the weight replicas gave wrong losses.
    """
    d = dst.reshape(dst.size)
    s = src.reshape(src.size)
    for i in range(d.size):
        d[i] = s[i]


@kernel
def _copy_weights(W1, b1, W2T, b2, W1_from, b1_from, W2T_from, b2_from):
    """Copy the four weight arrays ``*_from`` into W1, b1, W2T, b2."""
    _copy_into(W1, W1_from)
    _copy_into(b1, b1_from)
    _copy_into(W2T, W2T_from)
    _copy_into(b2, b2_from)


@kernel
def _add_into(dst, src):
    d = dst.reshape(dst.size)
    s = src.reshape(src.size)
    for i in range(d.size):
        d[i] += s[i]


# --------------------------------------------------------------------------
# Fused passes over the data
# --------------------------------------------------------------------------


@kernel
def _penalty(reg, W1, W2T):
    """The L2 part of the net's loss: ``0.5 * reg * (sum(W1**2) + sum(W2T**2))`` (no L2 on biases)."""
    return 0.5 * reg * (sum_squares(W1) + sum_squares(W2T))


@kernel
def _regularised(data_loss, reg, W1, W2T):
    """The net's loss: ``data_loss`` plus :func:`_penalty`."""
    return data_loss + _penalty(reg, W1, W2T)


@kernel
def _net_rows(X, y, W1, b1, W2T, b2, scale, hidden, scores, dscores, dW1, db1, dW2T, db2, dtok, ktok):
    """Forward and backward pass of all rows of X, tile by tile.

    Adds their gradient to dW1, db1, dW2T, db2 and returns their data loss
    (already multiplied by ``scale``). hidden (T, H) and scores/dscores (T or
    more rows, K) are this thread's scratch tiles; a tile is still in cache
    when the backward pass reads it.
    """
    N = X.shape[0]
    T = hidden.shape[0]
    loss = 0.0
    for s in range(0, N, T):
        e = min(s + T, N)
        n = e - s
        Xt = X[s:e]
        h = hidden[:n]
        sc = scores[:n]
        ds = dscores[:n]
        net_forward(Xt, W1, b1, W2T, b2, h, sc, dtok, ktok)
        loss += softmax_xent_grad(sc, y[s:e], scale, ds, ktok)
        net_backward(Xt, h, ds, W2T, dW1, db1, dW2T, db2, dtok, ktok)
    return loss


@kernel
def _net_slot(slot, p, P, X, y, W1, b1, W2T, b2, scale, hidden, scores, dscores, dW1, db1, dW2T, db2,
              dtok, ktok):
    """Thread p of P: clears gradient slot ``slot``, then runs rows ``p*N//P`` to ``(p+1)*N//P`` into it.

    Whole slots are cleared, padding included, so that slots can be added
    whole. Uses thread p's scratch tiles. Returns the rows' data loss.
    """
    N = X.shape[0]
    D, K, H = W1.shape[0], W2T.shape[0], b1.size
    _fill_zero(dW1[slot])
    _fill_zero(db1[slot])
    _fill_zero(dW2T[slot])
    _fill_zero(db2[slot])
    r0 = p * N // P
    r1 = (p + 1) * N // P
    return _net_rows(X[r0:r1], y[r0:r1], W1, b1, W2T, b2, scale, hidden[p], scores[p], dscores[p],
                     dW1[slot][:D], db1[slot][:H], dW2T[slot][:K], db2[slot][:K], dtok, ktok)


@parallel_kernel
def net_loss_grad(X, y, W1, b1, W2T, b2, reg, scale,
                  hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok):
    """Loss and full-batch gradient of the 2-layer net at the current weights.

    Returns ``data_loss + 0.5 * reg * (sum(W1**2) + sum(W2T**2))`` and leaves
    the gradient of the data loss in slot 0 of dW1, db1, dW2T, db2: in
    ``dW1[0, :D]``, ``db1[0, :H]``, ``dW2T[0, :K]``, ``db2[0, :K]``, as the
    slots are padded (see :func:`net_workspace`). The L2 gradient ``reg * W``
    is added by :func:`sgd_update`. hidden, scores, dscores and losses are
    scratch; ``dtok, ktok`` come from :func:`dims_token`; ``scale`` is 1/N.
    The workspace is :func:`net_workspace`'s less its last two items (the
    weight copies and the team state, which only :func:`train_net_steps`
    uses). P = ``hidden.shape[0]`` threads use gradient slots 0 to P-1 and
    ``losses[0, :P]``.
    """
    P = hidden.shape[0]
    # Even P == 1 goes through the prange: the training loops do not call
    # this function (see train_net_steps), and one copy of the fused passes
    # compiles in half the time of two.
    for p in prange(P):
        losses[0, p] = _net_slot(p, p, P, X, y, W1, b1, W2T, b2, scale,
                                 hidden, scores, dscores, dW1, db1, dW2T, db2, dtok, ktok)
    # Reduction of the per-thread slots, serially and in a fixed order.
    for p in range(1, P):
        _add_into(dW1[0], dW1[p])
        _add_into(db1[0], db1[p])
        _add_into(dW2T[0], dW2T[p])
        _add_into(db2[0], db2[p])
    data_loss = 0.0
    for p in range(P):
        data_loss += losses[0, p]
    return _regularised(data_loss, reg, W1, W2T)


def train_net_steps(X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                    hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team):
    """Run gradient-descent iterations ``start..stop-1`` of the net, in place.

    ``loss_history[i]`` receives the loss at iteration i, evaluated before that
    iteration's update. Returns -1, or the first iteration whose loss is not
    finite (the weights are then left as they were before that iteration).
    The remaining arguments are the workspace from :func:`net_workspace`.

    A Python function choosing between two compiled loops by the
    workspace's thread slots: :func:`_train_net_one_thread` or
    :func:`_train_net_threads`. Only the one a problem needs is compiled.
    As one compiled function holding both, each specialisation took longer
    to compile on an empty cache: a fresh process training the case study
    took 11.2-11.4 s instead of 9.8 (and the test suite, which compiles
    dozens of specialisations, most of them on one thread, paid it for each).
    """
    loop = _train_net_threads if hidden.shape[0] > 1 else _train_net_one_thread
    return loop(X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team)


@kernel
def _train_net_one_thread(X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                          hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team):
    """:func:`train_net_steps` on one thread slot: the loss and gradient of all rows, then
    the step from gradient slot 0, each iteration (``losses``, ``replicas`` and ``team`` are
    not used)."""
    scale = 1.0 / X.shape[0]
    for it in range(start, stop):
        data_loss = _net_slot(0, 0, 1, X, y, W1, b1, W2T, b2, scale,
                              hidden, scores, dscores, dW1, db1, dW2T, db2, dtok, ktok)
        loss = _regularised(data_loss, reg, W1, W2T)
        loss_history[it] = loss
        if not _is_finite(loss):
            return it
        _apply_gradient(W1, b1, W2T, b2, dW1, db1, dW2T, db2, 0, 1, step_size, reg)
    return -1


@kernel
def _replica_layout(D, H, K, itemsize):
    """Offsets of b1, W2T and b2 in a row of weight copies (W1 is at 0), and the row's used length.

    W1, b1, W2T, b2 follow one another, each from the start of a cache
    line. The one description of the layout, read by :func:`_replica` and by
    :func:`net_workspace` (which adds the slot padding).
    """
    line = CACHE_LINE // itemsize  # elements per cache line
    b = -(-D * H // line) * line
    c = b + -(-H // line) * line
    d = c + -(-K * H // line) * line
    return b, c, d, d + -(-K // line) * line


@kernel
def _replica(replicas, p, D, H, K):
    """Thread slot p's copy of the weights: views W1 (D, H), b1 (H,), W2T (K, H), b2 (K,).

    Laid out in row p of ``replicas`` as :func:`_replica_layout` says.
    """
    b, c, d, _ = _replica_layout(D, H, K, replicas.itemsize)
    r = replicas[p]
    return r[:D * H].reshape(D, H), r[b:b + H], r[c:c + K * H].reshape(K, H), r[d:d + K]


@kernel
def _flat_slots(G):
    """G (slots, ...) viewed as (slots, n): one flat row per slot."""
    return G.reshape(G.shape[0], G.size // G.shape[0])


@kernel
def _sgd_from_slots(W, G, first, P, step_size, reg):
    """``W -= step_size * (g + reg * W)`` with g the sum of gradient slots ``first..first+P-1`` of G.

    W is C-contiguous; each slot of G (slots, ...) holds W's gradient in its
    leading ``W.size`` elements. The slots are added in order, as in
    :func:`net_loss_grad`'s reduction; with two slots the loop vectorises.
    """
    w = W.reshape(W.size)
    g = _flat_slots(G)
    if P == 2:
        g0, g1 = g[first], g[first + 1]
        for i in range(w.size):
            w[i] -= step_size * ((g0[i] + g1[i]) + reg * w[i])
    else:
        for i in range(w.size):
            total = g[first, i]
            for q in range(1, P):
                total += g[first + q, i]
            w[i] -= step_size * (total + reg * w[i])


@kernel
def _apply_gradient(W1, b1, W2T, b2, dW1, db1, dW2T, db2, first, P, step_size, reg):
    """One gradient-descent step of all four weights from the gradient slots ``first..first+P-1``."""
    zero = step_size - step_size
    _sgd_from_slots(W1, dW1, first, P, step_size, reg)
    _sgd_from_slots(b1, db1, first, P, step_size, zero)
    _sgd_from_slots(W2T, dW2T, first, P, step_size, reg)
    _sgd_from_slots(b2, db2, first, P, step_size, zero)


@kernel
def _claim_slot(G, slot):
    """Prefetches every cache line of slot ``slot`` of G for writing (see :func:`_train_net_member`)."""
    g = _flat_slots(G)[slot]
    for i in range(0, g.size, CACHE_LINE // g.itemsize):
        prefetch_for_write(g, i)


@kernel
def _train_net_member(rank, size, X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                      hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team):
    """Member ``rank`` of a team of ``size`` threads in :func:`_train_net_threads`.

    In a team of P (= ``hidden.shape[0]``), member p trains on block p of
    the rows; a team of one (rank 0 alone, see :func:`fastspiral._sync.join_team`)
    trains on all P blocks in turn, with the same arithmetic, so the result
    is the same bit for bit. The member's weight copy is row ``rank`` of
    ``replicas``. Gradients and losses of iteration i go to half h = i % 2
    of the slots: slots h*P..h*P+P-1 of the gradient buffers, and
    ``losses[h, :P]`` for the blocks' data losses and ``losses[h, P]`` for
    the L2 penalty, which rank 0 computes.
    """
    P = hidden.shape[0]
    D, K, H = W1.shape[0], W2T.shape[0], b1.size
    scale = 1.0 / X.shape[0]
    w1, c1, w2, c2 = _replica(replicas, rank, D, H, K)
    _copy_weights(w1, c1, w2, c2, W1, b1, W2T, b2)
    lo, hi = (rank, rank + 1) if size > 1 else (0, P)
    pending = -1  # the half holding the last gradient computed, not yet applied
    # One pass more than there are iterations: the last only applies the
    # last gradient. Every update of the weights is thus made by the same
    # compiled code, whichever way a run is split into calls (applied
    # elsewhere, the last step could round differently where LLVM fused a
    # multiply-add differently, and the result would depend on the chunks).
    for it in range(start, stop + 1):
        half = (it - start) % 2
        if size > 1 and it < stop:
            # The other members read this slot two iterations ago, so its
            # lines sit in their caches too, and each first write to one would
            # wait for those copies to be invalidated. Asked for now, the lines
            # come back while the gradient below is applied: 0.1-1.3 us (4.5%
            # in the median of seven A/B runs) less per iteration at the case
            # study's size on two threads.
            slot = half * P + rank
            _claim_slot(dW1, slot)
            _claim_slot(db1, slot)
            _claim_slot(dW2T, slot)
            _claim_slot(db2, slot)
        if pending >= 0:
            _apply_gradient(w1, c1, w2, c2, dW1, db1, dW2T, db2, pending * P, P, step_size, reg)
        if it == stop:
            return
        if rank == 0:
            losses[half, P] = _penalty(reg, w1, w2)
        for p in range(lo, hi):
            losses[half, p] = _net_slot(half * P + p, p, P, X, y, w1, c1, w2, c2, scale,
                                        hidden, scores, dscores, dW1, db1, dW2T, db2, dtok, ktok)
        if size > 1:
            barrier(team, size, it - start + 1)
        # Every member adds up the same shared numbers in the same order, so
        # all stop at the same iteration without waiting for a verdict (a
        # member that went on alone would wait at the next barrier forever).
        data_loss = 0.0
        for p in range(P):
            data_loss += losses[half, p]
        loss = data_loss + losses[half, P]
        if rank == 0:
            loss_history[it] = loss
        if not _is_finite(loss):
            if rank == 0:
                team[RESULT] = it
            return
        pending = half


@parallel_kernel
def _train_net_threads(X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                       hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team):
    """:func:`train_net_steps` on P = ``hidden.shape[0]`` > 1 threads, in one parallel region.

    The P threads form a team (:func:`fastspiral._sync.join_team`) that
    stays together for all the call's iterations. Each keeps its own copy of
    the weights. In iteration i thread p first applies the gradient of
    iteration i-1 to its copy, summing every thread's slot of it in slot
    order (so the copies stay identical: the same arithmetic on the same
    numbers), then computes its rows' gradient at those weights into its
    slot, and waits at a barrier (:func:`fastspiral._sync.barrier`) until all
    have. Iterations alternate between two halves of the gradient slots and
    of ``losses``, so that no thread overwrites a slot another may still be
    reading. The canonical W1, b1, W2T, b2 are read at the start and written
    at the end (or at a non-finite loss) from thread 0's copy.

    Designs this replaced, at the case study's size on two threads (float64,
    per iteration, each measured against the one before in the same runs):
    one parallel region per iteration with a serial reduction and update
    between them, 18.7 us; one region per iteration with the copies and
    updates as here, 17.2 us; one region per call, 15.2 us (14.4-15.0 with
    the prefetch in :func:`_train_net_member`). Numba's
    ``prange`` costs about 1.4 us per region to start and join, and its
    threads then wake a little apart; the barrier's threads never sleep
    while they wait for each other (unless they wait long, see
    :mod:`fastspiral._sync`).
    """
    P = hidden.shape[0]
    D, K, H = W1.shape[0], W2T.shape[0], b1.size
    reset_team(team)
    for c in prange(P):
        rank, size = join_team(team, P)
        if rank >= 0:
            _train_net_member(rank, size, X, y, W1, b1, W2T, b2, step_size, reg, loss_history, start, stop,
                              hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok, ktok, replicas, team)
    w1, c1, w2, c2 = _replica(replicas, 0, D, H, K)
    _copy_weights(W1, b1, W2T, b2, w1, c1, w2, c2)
    return team[RESULT]


def net_workspace(n_samples, n_features, n_hidden, n_classes, dtype, n_threads):
    """Scratch, gradient and weight buffers for :func:`train_net_steps`, allocated once per call.

    Returns ``(hidden, scores, dscores, dW1, db1, dW2T, db2, losses, dtok,
    ktok, replicas, team)``. Per thread slot p of P: a (T, H) hidden tile
    and (T, K) score tiles (slot p), two sets of gradient buffers (slots p
    and P + p) and of data losses (``losses[0, p]`` and ``losses[1, p]``;
    ``losses[:, P]`` hold the L2 penalty), used in alternate iterations on
    more than one thread, and a copy of the weights (row p of ``replicas``,
    see :func:`_replica`). ``team`` is the threads' shared state
    (:func:`fastspiral._sync.new_team_state`). T is chosen so a tile stays in
    cache and, where the tile is smaller than a slot's rows, is a multiple
    of 4 (the fused passes take rows four at a time).
    Size O(P * (T + D + K) * H), independent of N * H.

    Every buffer starts on a cache line and every slot fills whole cache
    lines (:mod:`fastspiral._memory`), so each slot is aligned too. The score,
    gradient and weight slots get at least SLOT_PAD_BYTES of unused padding
    at their end (extra rows, or extra elements for the 1-D biases), so that
    the threads never write to the same cache line:
    (P, T + r, K), (2P, D + r, H), (2P, H + e), (2P, K + r, H), (2P, K + e).
    The kernels use the leading T, D, H, K of each slot. The hidden tile's
    slot is rounded up to whole lines only; its T' >= T rows are the tile
    size (still a multiple of 4 where T is).
    """
    P = max(1, min(int(n_threads), n_samples))
    rows_per_slot = -(-n_samples // P)
    T = min(rows_per_slot, max(4, TILE_ELEMENTS // max(n_hidden, 1) // 4 * 4))
    H, D, K = n_hidden, n_features, n_classes
    size = np.dtype(dtype).itemsize

    def slot(length, unit, pad=SLOT_PAD_BYTES):  # units per slot (unit: elements per unit)
        return slot_length(length, unit * size, pad)

    weights = _replica_layout(D, H, K, size)[3]  # one copy of the weights, then the padding
    return (
        aligned_empty((P, slot(T, H, 0), H), dtype),
        aligned_empty((P, slot(T, K), K), dtype), aligned_empty((P, slot(T, K), K), dtype),
        aligned_empty((2 * P, slot(D, H), H), dtype), aligned_empty((2 * P, slot(H, 1)), dtype),
        aligned_empty((2 * P, slot(K, H), H), dtype), aligned_empty((2 * P, slot(K, 1)), dtype),
        np.empty((2, P + 1), np.float64),
        *dims_token(D, K, dtype),
        aligned_empty((P, slot(weights, 1)), dtype),
        new_team_state(),
    )


@kernel
def linear_loss_grad(X, y, WT, b, reg, scale, scores, dscores, dWT, db, ktok):
    """Loss and full-batch gradient of the softmax linear classifier.

    Returns ``data_loss + 0.5 * reg * sum(WT**2)``; writes the data-loss
    gradient into dWT (K, D) and db (K,). scores/dscores (T, K) are scratch
    tiles; ``ktok`` holds K zeros (:func:`dims_token`). With D and K this
    small the work is a few flops per row, so it runs on one thread: a
    parallel region would cost more than it saves.
    """
    N = X.shape[0]
    T = scores.shape[0]
    _fill_zero(dWT)
    _fill_zero(db)
    loss = 0.0
    for s in range(0, N, T):
        e = min(s + T, N)
        n = e - s
        Xt = X[s:e]
        sc = scores[:n]
        ds = dscores[:n]
        linear_forward(Xt, WT, b, sc)
        loss += softmax_xent_grad(sc, y[s:e], scale, ds, ktok)
        linear_backward(Xt, ds, dWT, db)
    return loss + 0.5 * reg * sum_squares(WT)


@kernel
def train_linear_steps(X, y, WT, b, step_size, reg, loss_history, start, stop,
                       scores, dscores, dWT, db, ktok):
    """Run iterations ``start..stop-1`` of the linear classifier, in place.

    Same contract as :func:`train_net_steps`; the workspace comes from
    :func:`linear_workspace`.
    """
    scale = 1.0 / X.shape[0]
    zero = step_size - step_size
    for it in range(start, stop):
        loss = linear_loss_grad(X, y, WT, b, reg, scale, scores, dscores, dWT, db, ktok)
        loss_history[it] = loss
        if not _is_finite(loss):
            return it
        sgd_update(WT, dWT, step_size, reg)
        sgd_update(b, db, step_size, zero)
    return -1


def linear_workspace(n_samples, n_features, n_classes, dtype):
    """Scratch tiles, gradient buffers and ``ktok`` for :func:`train_linear_steps`."""
    T = min(n_samples, 1024)
    return (
        aligned_empty((T, n_classes), dtype), aligned_empty((T, n_classes), dtype),
        aligned_empty((n_classes, n_features), dtype), aligned_empty(n_classes, dtype),
        dims_token(n_features, n_classes, dtype)[1],
    )
