"""The ``"numba"`` backend: compiled, fused, multi-threaded training loops.

How it is built (docs/design.md has each decision and the test that guards it):

* :mod:`.trainer`: the backend's contract (``prepare``, ``workspace_bytes``);
* :mod:`.loops`: the compiled training loops, their slots and the update;
* :mod:`.small`, :mod:`.general`, :mod:`.tiles`: the fused passes over a tile of rows;
* :mod:`.loss`: the softmax cross-entropy, the L2 term and their numerics;
* :mod:`.update`: the update rules and the fixed-order sum of the slots;
* :mod:`.workspace`: slots, tiles and the buffers a training allocates once;
* :mod:`.threads`: how many threads, and the safe use of Numba's thread pool;
* :mod:`.jit`, :mod:`.cache`: how kernels are compiled, passed and cached.
"""

from .trainer import prepare, workspace_bytes

__all__ = ["prepare", "workspace_bytes"]
