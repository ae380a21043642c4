"""How the trainers use Numba's thread pool and compile cache from threads and processes.

Numba runs ``prange`` loops on one process-wide threading layer, picked at the
first parallel launch: "tbb" if installed, then "omp" (GNU OpenMP on Linux),
then "workqueue". fastspiral leaves that choice to Numba and the user
(``NUMBA_THREADING_LAYER``) and makes each layer safe:

* omp and tbb accept parallel launches from several Python threads at once,
  so concurrent trainings overlap (the kernels release the GIL).
* workqueue aborts the process when two threads launch parallel work at
  once, so launches are serialised by a lock; while the layer is not yet
  known, the lock is taken too.
* GNU OpenMP cannot be used in a child forked after the parent started it
  (the child is terminated). A child forked from such a parent therefore
  trains on one thread, which never enters the OpenMP pool; spawned children
  and children of parents that never trained in parallel are unaffected.

Forcing "workqueue" at import was tried and rejected: it is fork-safe but
costs about 100 us per parallel launch here (vs a few us for omp), which
made the case-study size slower on two threads than on one.

Numba's on-disk cache has no locking between processes: two processes that
compile different specialisations of a function at once both number their
object file ".1" and the index the second writes can point at the first's
code, which crashes the process that loads it (numba issues #4807 and
#10128 describe the same race for gufuncs). Process pools and Dask workers
on one machine do exactly that on a cold cache, with float32 and float64
runs side by side. So the first call of each compiled specialisation in a
process, the one that compiles or loads it, is made under a file lock shared
by all processes of the machine: one compiles and saves, the others wait and
then load a complete cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Hashable, Iterator

import numba

#: The work of a net iteration is counted as N * (H + ROW_COST): the per-row
#: costs (the softmax, the ends of the vectorised loops) weigh like about 60
#: hidden units.
ROW_COST = 60
#: Below this much work per iteration the net trains on one thread: forming
#: the team of threads once per call, their barrier and the exchange of the
#: gradients between the cores at every iteration would cost more than the
#: second core saves. Measured per iteration on the 2-core machine, float64,
#: 1 vs 2 threads, median of 9 (N x H: work): 25x100 (4,000): 2.8 vs 3.4 us;
#: 35x100 (5,600): 3.6 vs 3.8; 40x100 (6,400): 4.2-4.3 vs 4.2-4.3; 45x100
#: (7,200): 4.5 vs 4.5; 50x100 (8,000): 5.0 vs 4.5; 80x100 (12,800): 7.5 vs
#: 5.9; 100x1 (6,100): 2.4 vs 1.9; 50x30 (4,500): 3.1 vs 2.6. Small H
#: would gain from a lower threshold (40x30, 60x10, 80x1 by 8-20%, a few
#: tenths of a microsecond), the case study's H=100 not. With one parallel
#: region per iteration (before :mod:`fastspiral._sync`), the threshold was
#: twice as high (80x100).
PARALLEL_MIN_WORK = 6_400

_THREAD_SAFE_LAYERS = ("omp", "tbb")
_launch_lock = threading.Lock()
_inherited_omp = False
_warm: set[Hashable] = set()  # specialisations this process has already called
_warm_lock = threading.Lock()


def threading_layer() -> str | None:
    """Numba's threading layer, or None if no parallel work has run yet."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _after_fork_in_child() -> None:
    global _launch_lock, _warm_lock, _inherited_omp
    _launch_lock = threading.Lock()  # the parent's may have been held by another thread
    _warm_lock = threading.Lock()
    if threading_layer() == "omp":
        _inherited_omp = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def net_work(n_samples: int, n_hidden: int) -> int:
    """The work of one net iteration, in hidden activations: N * (H + ROW_COST)."""
    return n_samples * (n_hidden + ROW_COST)


def n_threads_for(work: int) -> int:
    """Thread slots for a net iteration of ``work`` (see :func:`net_work`)."""
    if work < PARALLEL_MIN_WORK or _inherited_omp:
        return 1
    return numba.get_num_threads()


@contextlib.contextmanager
def parallel_section(n_threads: int) -> Iterator[None]:
    """Hold the launch lock around parallel kernels unless the layer is thread-safe."""
    if n_threads > 1 and threading_layer() not in _THREAD_SAFE_LAYERS:
        with _launch_lock:
            yield
    else:
        yield


def _compile_lock_path() -> str:
    return os.path.join(tempfile.gettempdir(), "fastspiral-numba-compile.lock")


@contextlib.contextmanager
def first_call(key: Hashable) -> Iterator[None]:
    """Hold the machine-wide compile lock around the first call of specialisation ``key``.

    Later calls with the same key pass straight through. Where file locks are
    unavailable (no ``fcntl``, unwritable temp folder) it does nothing.
    """
    if key in _warm:
        yield
        return
    with _warm_lock:  # threads of this process wait for the one that compiles
        if key in _warm:
            yield
            return
        fd = None
        try:
            import fcntl

            fd = os.open(_compile_lock_path(), os.O_RDONLY | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            if fd is not None:
                os.close(fd)
            fd = None
        try:
            yield
            _warm.add(key)
        finally:
            if fd is not None:
                os.close(fd)  # closing releases the lock
