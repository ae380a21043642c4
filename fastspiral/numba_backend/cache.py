"""Numba's on-disk compile cache, made safe to share between processes, to lose and to damage.

Numba's cache has no locking between processes: saving a specialisation
reads the function's index, picks a free data-file number and writes both, so
two processes saving different specialisations at once can pick the same
number and leave an index entry pointing at the other's code, which crashes
the process that loads it (numba issues #4807 and #10128). Process pools and
Dask workers on one machine do exactly that on a cold cache. And a damaged
entry (a truncated or emptied file after a full disk or a kill) made every
later process fail until a person deleted it. So each kernel's cache is a
:class:`SafeCache`, which

* saves under a file lock in the cache folder, held for the milliseconds of
  the write only: loads never wait for compiles, and a lock that cannot be
  had within ``SAVE_WAIT`` seconds (an outside holder) skips the save;
* treats an entry that fails to load as damaged: it is dropped from the
  index (or the unreadable index removed), compiled again and saved;
* is left out (kernels compiled in memory) where no writable cache folder
  exists, instead of failing the import.

Each of these says so once per process in a :class:`CacheWarning`.

Separately, :func:`first_call` lets one process compile a given top-level
specialisation while the others that need the same one wait for it (up to
``COMPILE_WAIT`` seconds) and then load it, instead of all compiling it at
once. Processes that need other specialisations, or that use another cache
folder (and so could not load what this one saves), never wait.
(tests/test_install.py covers each case.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import warnings
from collections.abc import Hashable, Iterator

from numba.core.caching import FunctionCache

#: Longest wait for another process compiling the same specialisation (first
#: compiles take up to ~15 s here, 20-30 s on slow machines); then compile too.
COMPILE_WAIT = 60.0
#: Longest wait for another process's cache write (milliseconds when healthy).
SAVE_WAIT = 10.0
_POLL = 0.01


class CacheWarning(RuntimeWarning):
    """The compile cache could not be used as intended (the kernels still run)."""


_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"fastspiral: {message}", CacheWarning, stacklevel=3)


@contextlib.contextmanager
def file_lock(path: str, timeout: float) -> Iterator[str]:
    """Hold an exclusive ``flock`` on ``path``; yields "held", "timeout" or "unavailable".

    Polled rather than blocking, so that a holder that never lets go costs
    ``timeout`` seconds and no more. "unavailable": no ``fcntl`` (Windows) or
    the lock file cannot be created; the caller goes on unlocked.
    """
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        yield "unavailable"
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                state = "held"
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    state = "timeout"
                    break
                time.sleep(_POLL)
            except OSError:
                state = "unavailable"
                break
        yield state
    finally:
        os.close(fd)  # closing releases the lock


class SafeCache(FunctionCache):
    """Numba's per-function cache, with locked saves and damaged entries discarded."""

    def folder(self) -> str:
        """The cache folder, created if need be: it may not exist before the first save (Numba
        creates it in the save itself), and a lock file in it could not be made."""
        with contextlib.suppress(OSError):
            self._impl.locator.ensure_cache_path()
        return self._cache_path

    def _lock_path(self) -> str:
        return os.path.join(self.folder(), ".fastspiral-save.lock")

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:
            _warn_once(
                "damaged",
                f"a damaged compile-cache entry in {self._cache_path} "
                f"({type(exc).__name__}: {exc}) was discarded and is compiled again",
            )
            self._discard(self._index_key(sig, target_context.codegen()))
            return None

    def save_overload(self, sig, data):
        with file_lock(self._lock_path(), SAVE_WAIT) as state:
            if state == "timeout":
                _warn_once(
                    "save-timeout",
                    f"the compile-cache lock {self._lock_path()} was held for "
                    f"more than {SAVE_WAIT:g} s; kernels are kept in memory, not saved",
                )
                return
            try:
                super().save_overload(sig, data)
            except Exception:
                self._remove_index()
                try:
                    super().save_overload(sig, data)
                except Exception as exc:
                    _warn_once(
                        "save-failed",
                        f"could not save compiled kernels in {self._cache_path} "
                        f"({type(exc).__name__}: {exc}); kept in memory only",
                    )

    def _discard(self, key) -> None:
        with file_lock(self._lock_path(), SAVE_WAIT) as state:
            if state == "timeout":
                return
            try:
                index = self._cache_file._load_index()
                if index.pop(key, None) is not None:
                    self._cache_file._save_index(index)
            except Exception:
                self._remove_index()

    def _remove_index(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._cache_file._index_path)


def enable_cache(dispatcher):
    """Give ``dispatcher`` (compiled without ``cache=``) a :class:`SafeCache`; returns it.

    Where Numba finds no writable cache folder (a read-only installation with
    no writable user cache, a read-only ``NUMBA_CACHE_DIR``) the kernels are
    compiled in memory in each process.
    """
    if not hasattr(dispatcher, "py_func"):
        # NUMBA_DISABLE_JIT=1: njit gave the function back, and there is nothing to cache
        # (tests/test_install.py::test_import_and_the_numpy_backend_work_without_the_jit)
        return dispatcher
    try:
        dispatcher._cache = SafeCache(dispatcher.py_func)
        _caches.append(dispatcher._cache)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        _warn_once(
            "no-cache",
            f"no writable folder for the compile cache ({exc}); kernels are "
            "compiled in memory and each new process compiles them again (set "
            "NUMBA_CACHE_DIR to a writable folder to keep them)",
        )
    return dispatcher


_caches: list[SafeCache] = []  # the kernels' caches, in the order they were enabled
_warm: set[Hashable] = set()  # top-level specialisations this process has called
_key_locks: dict[Hashable, threading.Lock] = {}
_key_locks_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _key_locks_lock
    _key_locks_lock = threading.Lock()  # the parent's may have been held by another thread
    _key_locks.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _compile_lock_path(key: Hashable) -> str | None:
    """The compile lock of ``key``, in the kernels' cache folder; None where they have no cache.

    Beside the cache, not in the system's temporary folder: two processes
    wait for each other only where one can load what the other saves. Keyed
    by the kernel alone in /tmp, cold processes with different NUMBA_CACHE_DIR
    waited for each other and then both compiled (16.6 s against 9.6 s)
    (tests/test_install.py::test_processes_with_other_caches_do_not_wait_for_each_other).
    """
    if not _caches:
        return None  # compiled in memory: nothing another process compiles can be loaded
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    return os.path.join(_caches[0].folder(), f".fastspiral-compile-{digest}.lock")


@contextlib.contextmanager
def first_call(key: Hashable) -> Iterator[None]:
    """Around the first call of specialisation ``key`` in this process, hold its compile lock.

    The lock is one file per key in the cache folder, shared by the processes
    that use that cache: the first compiles and saves, the others wait (at
    most COMPILE_WAIT seconds, then compile themselves) and load. Later calls
    pass straight through, and so do all where no cache is in use.
    """
    if key in _warm:
        yield
        return
    with _key_locks_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:  # threads of this process that need the same key wait for the one that compiles
        if key in _warm:
            yield
            return
        path = _compile_lock_path(key)
        with file_lock(path, COMPILE_WAIT) if path else contextlib.nullcontext("none") as state:
            if state == "timeout":
                _warn_once(
                    "compile-timeout",
                    f"waited {COMPILE_WAIT:g} s for another process holding {path}; compiling here",
                )
            yield
        _warm.add(key)
