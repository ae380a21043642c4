"""Tile kernels of the two layers: the fused forward pass and the fused backward pass.

Layout: X (T, D) C-contiguous rows of a tile; first layer W1 (D, H), b1 (H,);
second layer stored transposed, W2T (K, H), so every loop over the hidden
units runs along a contiguous row and vectorises over H. Kernels write into
buffers the caller owns and allocate nothing.

Two forms of each pass, picked from the dims tokens (:func:`dims_token`)
in Python, when the training loops get their kernels as function pointers
(:mod:`fastspiral._pointers`):

* small D and K (the spiral's 2 and 3): D and K are compile-time constants,
  the loops over them sit inside the loop over H and are unrolled, and rows
  go in groups of two or four (as many as the vector registers hold) so each
  weight load serves several rows;
* any other D and K: runtime loops over D and K outside vectorised loops over
  H, features four at a time. One compiled specialisation per dtype serves
  every such shape, so a new shape costs no compile.

The forms live in :mod:`fastspiral._tiles_small` and
:mod:`fastspiral._tiles_general`; why each was shaped as it is, with the
benchmark that measures it: docs/design.md.
"""

from __future__ import annotations

from ._jit import kernel
from ._tiles import SMALL_D, SMALL_K, dims_token, is_general, small_row_group  # noqa: F401  (re-exported)
from ._tiles_general import backward_general, forward_general
from ._tiles_small import backward_small, backward_small_fours, forward_small, forward_small_fours


def net_forms(dtok, ktok):
    """``(forward, backward)``: the compiled passes for the shape the dims tokens select."""
    if len(ktok) == 0:
        return forward_general, backward_general
    if small_row_group(len(dtok), len(ktok)) == 4:
        return forward_small_fours, backward_small_fours
    return forward_small, backward_small


def net_forward(X, W1, b1, W2T, b2, hidden, scores, dtok, ktok):
    """Fused forward pass of a tile: ``hidden = max(X @ W1 + b1, 0)``, ``scores = hidden @ W2T.T + b2``.

    Writes hidden (T, H) and scores (T, K). A NaN pre-activation stays NaN
    (NaN < 0 is false), as with ``np.maximum``.
    """
    net_forms(dtok, ktok)[0](X, W1, b1, W2T, b2, hidden, scores, dtok, ktok)


def net_backward(X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok):
    """Fused backward pass of a tile; *adds* the tile's gradient to dW1, db1, dW2T, db2.

    With ``dhidden = (dscores @ W2T) * (hidden > 0)`` (the case study's
    ``dhidden[hidden <= 0] = 0``)::

        dW2T += dscores.T @ hidden      db2 += dscores.sum(0)
        dW1  += X.T @ dhidden           db1 += dhidden.sum(0)

    ``hidden`` is scratch afterwards (the general form stores dhidden in it)
    and ``grow`` (4, H) holds scratch rows.
    """
    net_forms(dtok, ktok)[1](X, hidden, dscores, W2T, dW1, db1, dW2T, db2, grow, dtok, ktok)


@kernel
def linear_forward(X, WT, b, scores):
    """Scores of the linear classifier, ``scores = X @ WT.T + b``; X (T, D), WT (K, D), b (K,)."""
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
