"""fastspiral: the CS231n spiral case study, trained fast on a CPU.

>>> import fastspiral as fs
>>> X, y = fs.make_spiral(seed=0)
>>> net = fs.train_net(X, y, seed=0)          # doctest: +SKIP
>>> net.score(X, y)                           # doctest: +SKIP
0.99

The first call of a trainer in a fresh environment compiles its kernels
(seconds); the compiled code is cached on disk for later processes. When the
cache cannot be used (no writable folder, a damaged entry, a lock held too
long) training goes on and a :class:`CacheWarning` says so once.
"""

from ._cache import CacheWarning
from .data import make_spiral
from .model import LinearModel, NetModel, load
from .train import train_linear, train_net

__version__ = "0.1.0"

__all__ = [
    "CacheWarning",
    "LinearModel",
    "NetModel",
    "load",
    "make_spiral",
    "train_linear",
    "train_net",
    "__version__",
]
