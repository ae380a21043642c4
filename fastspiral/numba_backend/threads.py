"""How the trainers use Numba's thread pool from threads and processes.

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

The compile cache's own safety between processes is :mod:`~fastspiral.numba_backend.cache`'s.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator

import numba

_THREAD_SAFE_LAYERS = ("omp", "tbb")
_launch_lock = threading.Lock()
_inherited_omp = False


def threading_layer() -> str | None:
    """Numba's threading layer, or None if no parallel work has run yet."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _after_fork_in_child() -> None:
    global _launch_lock, _inherited_omp
    _launch_lock = threading.Lock()  # the parent's may have been held by another thread
    if threading_layer() == "omp":
        _inherited_omp = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def threads_allowed() -> bool:
    """Whether this process may enter Numba's threading layer (not a child forked after OpenMP)."""
    return not _inherited_omp


def usable_threads() -> int:
    """Threads a training may use: Numba's count for this thread, at most the CPUs this process
    may run on.

    More threads than CPUs (``NUMBA_NUM_THREADS=16`` on two cores, ``taskset
    -c 0``) only makes the threads wait for each other at every iteration.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, min(numba.get_num_threads(), cpus))


@dataclasses.dataclass
class _ProbeCost:
    """The segments of a probe so far, against the count it runs ``instead_of``."""

    instead_of: int
    seconds: float = 0.0
    iters: int = 0
    last_segment: bool = False


class ThreadChooser:
    """Chooses, segment by segment, how many threads a training's compiled loop gets:
    ``max_threads`` or 1.

    The slots make results independent of the thread count, so the count may
    change between calls of the compiled loop. Both counts are timed; the
    faster is used in segments of ~``SEGMENT_SECONDS``, each timed, and the
    other is re-timed with a short probe. On a quiet machine ``max_threads`` wins;
    beside busy programs, where a parallel region waits for a descheduled
    thread at every iteration (3-12x slower on two threads than on one), one
    thread wins within milliseconds, and a wrong choice costs one segment.

    A losing probe costs what it took beyond the winner's rate, and beside
    busy programs one parallel region can wait tens of milliseconds for a
    worker the system does not run (14 iterations took 146 ms beside two
    CPU-bound programs on two cores). So the next probe waits until that
    cost is ``PROBE_SHARE`` of the training since instead of a fixed 0.5 s
    (tests/test_threads.py::test_probes_that_stall_cost_a_bounded_share). A
    choice is probed again ``FIRST_REPROBE_SECONDS`` after it is made, then
    after twice as long each time a probe confirms it, up to
    ``REPROBE_SECONDS``: made in a brief slow spell of the machine, a choice
    of one thread had held for a whole case-study training.

    A chooser's first segment is one untimed iteration (it may compile, and it
    wakes the workers), and until a count has a trusted time its segments
    grow from 2 iterations, doubling, rather than running the whole call on
    ``max_threads`` threads, which beside busy programs ran it all at the slow rate.
    Each training's first timed segment is probe-sized, as the machine may
    have turned busy since the last. Trainings of one shape share a chooser,
    from several Python threads at once too, so its state changes under a
    lock. A segment on ``max_threads`` threads after one on a single thread starts
    with one untimed iteration: waking an idle worker can take milliseconds
    in a virtual machine, which would make the threads look slow on a quiet
    machine.
    """

    PROBE_SECONDS = 0.002
    SEGMENT_SECONDS = 0.01
    #: The longest wait between probes of a choice that keeps being confirmed.
    REPROBE_SECONDS = 0.5
    #: The wait after a choice is first made or changes, doubled by each probe that confirms it:
    #: a choice made while the machine was briefly slow is undone within a short training
    #: (tests/test_threads.py::test_a_wrong_early_choice_is_corrected_within_a_short_training).
    FIRST_REPROBE_SECONDS = 0.05
    #: Probes may cost at most this share of a training's time.
    PROBE_SHARE = 0.05
    #: Shorter timed segments are not trusted: the first iterations of a
    #: training run on cold caches and, on two threads, measured up to 2x
    #: their later time, enough to send a whole quiet run to one thread.
    TRUSTED_SECONDS = 0.0005
    #: A count's first time must be longer still: right after the first call, two iterations
    #: on two threads took 1.19 ms at N=3,000 (2.6x their later time), and a quiet training then
    #: ran on one thread until the next probe
    #: (tests/test_threads.py::
    #: test_cold_first_iterations_do_not_send_a_quiet_training_to_one_thread).
    FIRST_TRUSTED_SECONDS = 0.002
    #: The threads must beat one thread by this factor to be used: on a busy
    #: machine their timings scatter, and a lucky probe must not win.
    MARGIN = 0.9

    def __init__(self, max_threads: int):
        self.max_threads = max_threads
        self._times: dict[
            int, list[float]
        ] = {}  # threads -> seconds per iteration, last few segments
        self._trial: dict[int, int] = {}  # threads -> iterations of its next segment while untimed
        self._since_probe = 0.0
        self._interval = self._reprobe_after = self.FIRST_REPROBE_SECONDS
        self._warm = False  # the first call may compile: time nothing from it
        self._last = 0  # threads of the last segment
        self._probe: int | None = None  # the count being probed
        self._cost: _ProbeCost | None = None  # what the probe under way has cost
        self._fresh = False  # no segment timed since new_run()
        self._lock = threading.Lock()

    def next(self, n_left: int) -> tuple[int, int, bool]:
        """``(threads, iterations, timed)``: the next segment of the ``n_left`` iterations left."""
        with self._lock:
            return self._next(n_left)

    def _next(self, n_left: int) -> tuple[int, int, bool]:
        if self.max_threads == 1:
            return 1, n_left, False
        if not self._warm:
            return self.max_threads, 1, False
        if self._probe is None:
            if self.max_threads not in self._times:
                self._probe = self.max_threads
            elif 1 not in self._times or self._since_probe >= self._reprobe_after:
                best = self._best()
                self._probe = 1 if best == self.max_threads else self.max_threads
                both_known = self._probe in self._times and best in self._times
                self._cost = _ProbeCost(instead_of=best) if both_known else None
                self._since_probe = 0.0
        threads = self._probe if self._probe is not None else self._best()
        if self._last == 0 or (threads > 1 and self._last != threads):
            # a training's first iteration touches its new workspace, and workers idle since
            # another count ran must wake: untimed, also when it is the call's only one
            return threads, 1, False
        known = [c for c in self._times if c != threads]
        if self._probe is not None:
            self._probe = None
            if self._cost is not None:
                self._cost.last_segment = True
            seconds = self.PROBE_SECONDS
        else:
            seconds = self.PROBE_SECONDS if self._fresh else self.SEGMENT_SECONDS
        self._fresh = False
        if threads in self._times:
            # the slower of the median and the last: when the machine turns busy, the segment
            # after the first slow one is short, not ten times its time (the median of three
            # needs two slow segments to move)
            n = seconds / max(self.rate(threads), self._times[threads][-1])
        else:
            n = self._trial.setdefault(threads, 2)
            if known:
                n = max(n, seconds / self.rate(known[0]))
        return threads, int(min(n_left, max(2, n))), True

    def new_run(self) -> None:
        """A new training starts: its worker threads may have gone idle since the last segment,
        and the machine may have turned busy, so its first timed segment is probe-sized."""
        with self._lock:
            self._last = 0
            self._fresh = True

    def _best(self) -> int:
        if 1 not in self._times or self.max_threads not in self._times:
            return self.max_threads
        return self.max_threads if self.rate(self.max_threads) < self.MARGIN * self.rate(1) else 1

    def record(self, threads: int, n_iters: int, seconds: float, timed: bool = True) -> None:
        """What a segment of ``n_iters`` iterations on ``threads`` threads took."""
        with self._lock:
            self._record(threads, n_iters, seconds, timed)

    def _record(self, threads: int, n_iters: int, seconds: float, timed: bool) -> None:
        self._warm = True
        self._last = threads
        self._since_probe += seconds
        if timed and n_iters > 0:
            trusted = self.TRUSTED_SECONDS if threads in self._times else self.FIRST_TRUSTED_SECONDS
            if seconds >= trusted:
                times = self._times.setdefault(threads, [])
                times.append(seconds / n_iters)
                del times[:-3]
            elif threads not in self._times:
                self._trial[threads] = 2 * max(n_iters, self._trial.get(threads, 2))
        cost = self._cost
        if cost is not None and threads != cost.instead_of:
            cost.seconds += seconds
            cost.iters += n_iters
            if cost.last_segment:
                self._cost = None
                lost = cost.seconds - cost.iters * self.rate(cost.instead_of)
                won = self._best() != cost.instead_of
                if won:  # a new choice: check it again soon
                    self._interval = self._reprobe_after = self.FIRST_REPROBE_SECONDS
                elif lost <= 0:
                    # faster than the count in use, but one time does not move a median of
                    # three: probe again at once rather than an interval later
                    self._reprobe_after = 0.0
                else:  # the choice holds: wait twice as long, and until the loss is PROBE_SHARE
                    self._interval = min(2 * self._interval, self.REPROBE_SECONDS)
                    self._reprobe_after = max(self._interval, lost / self.PROBE_SHARE)

    def rate(self, threads: int) -> float:
        """Seconds per iteration on ``threads`` threads: the median of the last three segments."""
        times = sorted(self._times[threads])
        return times[len(times) // 2]


#: Choosers kept per training shape, most recent last (see :func:`shared_chooser`).
_CHOOSERS: collections.OrderedDict[tuple, ThreadChooser] = collections.OrderedDict()
_KEPT_CHOOSERS = 32


def shared_chooser(key: tuple, max_threads: int) -> ThreadChooser:
    """The chooser of earlier trainings of the same ``key`` (shape, dtype, workers) in this process.

    Each ``train_net`` builds a new trainer; with a chooser of its own, every
    call started by probing, and short calls (a sweep's 50 iterations, a grid
    search's fits) on a busy machine paid the probes every time: 113 us per
    iteration against 32 on one thread at N=300 beside two CPU-bound programs.
    Sharing what was learnt is safe because the result has the same bits on
    any thread count; a run starts with its workers counted as idle.
    """
    chooser = _CHOOSERS.pop(key, None)
    if chooser is None or chooser.max_threads != max_threads:
        chooser = ThreadChooser(max_threads)
    _CHOOSERS[key] = chooser
    while len(_CHOOSERS) > _KEPT_CHOOSERS:
        _CHOOSERS.popitem(last=False)
    chooser.new_run()
    return chooser


@contextlib.contextmanager
def parallel_section(n_threads: int) -> Iterator[None]:
    """Run parallel kernels on ``n_threads`` threads (this thread's Numba setting, restored after).

    Holds the launch lock unless the layer is thread-safe.
    """
    saved = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        if threading_layer() not in _THREAD_SAFE_LAYERS:
            with _launch_lock:
                yield
        else:
            yield
    finally:
        numba.set_num_threads(saved)
