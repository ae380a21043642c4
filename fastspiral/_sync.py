"""Atomic integers and waiting, for the threads of one compiled training loop.

Numba has no atomics on the CPU, and a parallel region (a ``prange``) costs
about 1.4 us to start and join on the development machine, so a loop that
opens one per iteration pays that at every step. The threaded training loop
(:func:`fastspiral._kernels._train_net_threads`) therefore opens one region
per call and keeps its threads in step with a barrier of its own, built from
the functions here: LLVM's atomic instructions on the elements of an int64
array, a spin-wait hint, and a call that gives the core to another runnable
thread. A prefetch for writing lets a thread take cache lines back from the
other cores' caches ahead of writing them.

Ordering: :func:`atomic_add` and :func:`atomic_cas` are sequentially
consistent and :func:`atomic_load` is an acquire, so whatever a thread wrote
before it added to a counter is visible to a thread that has read the new
count. (The compiler may not move ordinary loads and stores across them
either.)
"""

from __future__ import annotations

import os
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._memory import CACHE_LINE, aligned_empty

_I64_ARRAY = types.Array(types.int64, 1, "C")


def _element_pointer(context, builder, array_type, array, index):
    arr = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, arr, [index])


@intrinsic
def atomic_load(typingctx, a, i):
    """``a[i]`` read atomically with acquire ordering (a: 1-D C-contiguous int64 array)."""
    if a != _I64_ARRAY or not isinstance(i, types.Integer):
        return None
    sig = types.int64(a, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def atomic_add(typingctx, a, i, v):
    """``a[i] += v`` atomically; returns the value ``a[i]`` held before."""
    if a != _I64_ARRAY or not isinstance(i, types.Integer) or not isinstance(v, types.Integer):
        return None
    sig = types.int64(a, types.intp, types.int64)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return sig, codegen


@intrinsic
def atomic_cas(typingctx, a, i, expected, new):
    """Sets ``a[i] = new`` if ``a[i] == expected``, atomically; returns the value ``a[i]`` held before.

    The swap happened exactly when the returned value equals ``expected``.
    """
    ints = (i, expected, new)
    if a != _I64_ARRAY or not all(isinstance(t, types.Integer) for t in ints):
        return None
    sig = types.int64(a, types.intp, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


# x86's PAUSE tells the core it is in a spin-wait loop: the loop then uses
# fewer resources and leaves it without a memory-order mis-speculation.
# Other CPUs get no hint (a plain loop is still correct).
_HAS_PAUSE = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@intrinsic
def cpu_relax(typingctx):
    """A spin-wait hint to the CPU (x86's PAUSE; nothing elsewhere)."""

    def codegen(context, builder, signature, args):
        if _HAS_PAUSE:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def prefetch_for_write(typingctx, a, i):
    """Asks the CPU to fetch the cache line holding ``a[i]``, ready to be written (a: 1-D C array).

    LLVM's prefetch with the write hint: x86's PREFETCHW, which also takes
    the line away from other cores' caches. A hint only: nothing changes if
    the CPU ignores it.
    """
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C") or not isinstance(i, types.Integer):
        return None
    sig = types.none(a, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # (address, write, temporal locality 3 = keep in all caches, data cache)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# POSIX sched_yield, resolved from the C library the process has loaded.
_HAS_SCHED_YIELD = os.name == "posix"


@intrinsic
def yield_cpu(typingctx):
    """Lets another runnable thread have this core (POSIX ``sched_yield``; nothing elsewhere).

    A waiting thread that only spun would hold its core for a whole
    scheduler time slice (milliseconds) whenever there are more runnable
    threads than cores (several trainings at once, other programs), while
    the thread it waits for may be the one not running.
    """

    def codegen(context, builder, signature, args):
        if _HAS_SCHED_YIELD:
            fnty = ir.FunctionType(ir.IntType(32), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()

    return types.none(), codegen


#: Polls with the spin hint before a waiting thread starts yielding its core:
#: about 40 us on the development machine (a PAUSE takes about 9 ns there),
#: far longer than the threads of a training loop wait for each other at the
#: barrier when each has a core of its own (under 1 us at the case study's
#: size).
SPINS_BEFORE_YIELD = 4096


#: Polls after which the first thread of a team stops waiting for the others
#: to arrive and does all the work alone (see :func:`join_team`): the spins,
#: then yields, 9.7 ms in all on the development machine when the others
#: cannot come. They normally arrive within microseconds; after the process
#: had been idle for a second, waking the pool's other thread took 5-8 ms
#: (with one parallel region per iteration too: it is the machine waking an
#: idle core). If they are later than this, the call is merely slower.
JOIN_POLLS = SPINS_BEFORE_YIELD + 60_000

# The team's state: three int64 words, each on a cache line of its own, as
# every thread polls them.
_WORDS_PER_LINE = CACHE_LINE // 8
GATE = 0  # threads joined so far; the team size once all have; -1 once closed
COUNT = _WORDS_PER_LINE  # arrivals at the barrier, over the whole run
RESULT = 2 * _WORDS_PER_LINE  # free for the team's own use (set to -1)


def new_team_state() -> np.ndarray:
    """The int64 words :func:`join_team` and :func:`barrier` work on (reset with :func:`reset_team`)."""
    return aligned_empty(3 * _WORDS_PER_LINE, np.int64)


@njit(cache=True, nogil=True)
def reset_team(state):
    """Readies ``state`` for a new team: call before the parallel region, from one thread."""
    for i in range(state.size):
        state[i] = 0
    state[RESULT] = -1


@njit(cache=True, nogil=True)
def _backoff(polls):
    """One pause of a waiting loop that has polled ``polls`` times; returns polls + 1."""
    if polls < SPINS_BEFORE_YIELD:
        cpu_relax()
    else:
        yield_cpu()
    return polls + 1


@njit(cache=True, nogil=True)
def join_team(state, n):
    """Called once by each of the ``n`` bodies of a ``prange(n)``; returns ``(rank, size)``.

    ``size == n``: all n bodies are running at once, and this one has rank
    ``0..n-1`` (in the order they arrived); they may wait for each other
    with :func:`barrier`. ``size == 1``: rank 0 is to do all the work alone,
    and every other body gets rank -1 and must return at once.

    Why not simply wait for all n: a threading layer may run the bodies of
    a ``prange`` one after another on fewer threads (Numba's thread count set
    lower, TBB with busy workers), and a body waiting for one that only
    starts after it has returned would wait forever. So the first body to
    arrive waits a bounded time (:data:`JOIN_POLLS`) and then closes the
    team; bodies that arrive after that, or that joined a team that was then
    closed, do nothing. A body only ever waits for bodies already running.
    """
    rank = -1
    g = atomic_load(state, GATE)
    while 0 <= g < n:
        old = atomic_cas(state, GATE, g, g + 1)
        if old == g:
            rank = g
            break
        g = old
    if rank < 0:  # closed before this body arrived
        return -1, 1
    polls = 0
    while True:
        g = atomic_load(state, GATE)
        if g == n:
            return rank, n
        if g < 0:
            return -1, 1
        if rank == 0 and polls >= JOIN_POLLS:
            if atomic_cas(state, GATE, g, -1) == g:
                return 0, 1
            continue  # another body joined meanwhile: look again
        polls = _backoff(polls)


@njit(cache=True, nogil=True)
def barrier(state, size, generation):
    """Waits until all ``size`` members of the team have arrived here ``generation`` times.

    Each member calls it with generation 1, 2, 3, ... in turn. One counter
    that only grows: no reset between generations, so a member released
    early cannot miss or corrupt the next one.
    """
    atomic_add(state, COUNT, 1)
    polls = 0
    while atomic_load(state, COUNT) < size * generation:
        polls = _backoff(polls)
