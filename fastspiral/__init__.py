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

from . import optim
from ._version import __version__
from .animate import Snapshot, animate_training, race, record_snapshots
from .data import make_data, make_spiral
from .model import LinearModel, NetModel, load
from .numba_backend.cache import CacheWarning
from .numba_backend.warmup import compile_kernels
from .plot import plot_data, plot_decision_regions, plot_grid, plot_loss
from .scaling import sweep
from .train import train_linear, train_net

__all__ = [
    "CacheWarning",
    "LinearModel",
    "NetModel",
    "Snapshot",
    "animate_training",
    "compile_kernels",
    "load",
    "make_data",
    "make_spiral",
    "optim",
    "plot_data",
    "plot_decision_regions",
    "plot_grid",
    "plot_loss",
    "race",
    "record_snapshots",
    "sweep",
    "train_linear",
    "train_net",
    "__version__",
]
