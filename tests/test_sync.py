"""The atomics, team join and barrier the threaded training loop is built on."""

import numba
import numpy as np
import pytest
from numba import njit, prange

from fastspiral import _sync
from fastspiral._memory import CACHE_LINE
from fastspiral._sync import atomic_add, atomic_cas, atomic_load, barrier, join_team, reset_team


@njit
def _ops(a):
    return (atomic_add(a, 1, 5), atomic_load(a, 1), atomic_cas(a, 1, 0, 9), atomic_load(a, 1),
            atomic_cas(a, 1, 7, 9), atomic_load(a, 1))


def test_atomic_operations_return_the_old_value():
    a = np.array([0, 2, 0], np.int64)
    # add 5 to 2 -> 7; a failed swap (expects 0) leaves 7; a swap expecting 7 writes 9
    assert _ops(a) == (2, 7, 7, 7, 7, 9)
    assert a.tolist() == [0, 9, 0]


@njit(parallel=True)
def _count_in_parallel(a, n_tasks, per_task):
    for task in prange(n_tasks):
        for i in range(per_task):
            atomic_add(a, 0, 1)


def test_atomic_add_loses_no_update_across_threads():
    """Plain ``a[0] += 1`` from two threads at once loses increments; the atomic add does not."""
    a = np.zeros(1, np.int64)
    _count_in_parallel(a, 8, 200_000)
    assert a[0] == 8 * 200_000


def test_team_state_words_sit_on_cache_lines_of_their_own():
    state = _sync.new_team_state()
    assert state.ctypes.data % CACHE_LINE == 0
    words = [_sync.GATE, _sync.COUNT, _sync.RESULT]
    assert len({w * 8 // CACHE_LINE for w in words}) == 3 and max(words) < state.size
    reset_team(state)
    assert state[_sync.RESULT] == -1 and not state[:_sync.RESULT].any()


@njit(parallel=True)
def _join_and_step(state, n, generations, seen, ranks):
    """Every member writes its generation, passes the barrier, then records the lowest
    generation any member has written: with a working barrier, never below its own."""
    reset_team(state)
    for c in prange(n):
        rank, size = join_team(state, n)
        ranks[c, 0], ranks[c, 1] = rank, size
        if rank >= 0:
            for g in range(1, generations + 1):
                seen[rank, 0] = g
                barrier(state, size, g)
                low = g
                for q in range(size):
                    low = min(low, seen[q, 0])
                seen[rank, g] = low


@pytest.mark.parametrize("n", [1, 2])
def test_team_of_threads_that_run_at_once(n):
    """With a thread per body: a full team, ranks 0..n-1 (or, if the machine was too busy to
    start them all in time, a team of one), and a barrier no member leaves early."""
    gens = 2000
    state = _sync.new_team_state()
    seen = np.zeros((n, gens + 1), np.int64)
    ranks = np.zeros((n, 2), np.int64)
    _join_and_step(state, n, gens, seen, ranks)
    size = ranks[0, 1]
    assert (ranks[:, 1] == size).all()
    if size == n:
        assert sorted(ranks[:, 0]) == list(range(n))
    else:
        assert size == 1 and sorted(ranks[:, 0]) == [-1] * (n - 1) + [0]
    assert (seen[:size, 1:] == np.arange(1, gens + 1)).all()


def test_team_of_bodies_run_one_after_another():
    """On one thread the prange's bodies run in turn: the first cannot wait for the second,
    so it stops waiting, works alone, and the second finds the team closed."""
    state = _sync.new_team_state()
    ranks = np.zeros((2, 2), np.int64)
    saved = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _join_and_step(state, 2, 5, np.zeros((2, 6), np.int64), ranks)
    finally:
        numba.set_num_threads(saved)
    assert ranks.tolist() == [[0, 1], [-1, 1]]
    assert state[_sync.GATE] == -1
