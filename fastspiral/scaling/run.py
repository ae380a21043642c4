"""One repeat of one configuration, timed in a fresh process, with its set-up apart and provenance.

A sweep runs each repeat of each configuration as a *task* in a new Python
process (:func:`run_task_in_fresh_process`; a subprocess, not
multiprocessing, so that it also works from a Dask worker, whose processes
are daemons and may not fork children of their own), so that the peak memory
is the task's own wherever it runs and repeats can be interleaved across
configurations. The child exits by itself if its parent disappears.

A task (:func:`run_task`):

1. limits the threads (Numba's, BLAS's and the peer library's) to the
   configuration's, or refuses a count above what the worker or the machine
   has (a "skipped" run: it is never timed on fewer threads than it says);
2. compiles or loads the kernels on a tiny problem;
3. times NumPy's matrix product of the same dtype on the same threads
   (:data:`~fastspiral.scaling.measure.REFERENCE_MATMUL`), the reference of
   ``fraction_of_peak``, then warms up at full size (trainings of 1, 2, 4...
   iterations, until one takes :data:`WARM_SECONDS` or runs as long as the
   longer timed one): the first trainings of a process pay page faults,
   cold caches and the thread chooser's first probes;
4. trains ``iters`` and ``2 * iters`` iterations (in an order that
   alternates with the repeat), each timed from the inside: the time of the
   compiled loop alone. Their difference over ``iters`` is the time per
   iteration without set-up (``seconds_per_iter``): one-off costs inside the
   loop (a first iteration's page faults, waking threads) cancel too. The
   rest of the shorter training's wall time is its ``setup_seconds``
   (validation, allocation, the checks after the loop). With mini-batches
   (an iteration is one update) both trainings run whole epochs, the shorter
   the fewest with at least ``iters`` updates (``timed_iters``): the
   difference is then whole epochs too, each with its reshuffle and its
   smaller last batch, where a part of an epoch would hold some of them or
   none;
5. records on how many threads the iterations ran (``thread_iterations``):
   the Numba backend's thread chooser may run a training on fewer threads
   than it was allowed, and a problem with one slot runs on one;
6. with a ``target_loss``, finds in the longer training's loss history the
   updates it took to reach it (``target_iters``; None if it never did, of
   ``target_budget`` updates searched; see :func:`updates_to_loss`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .measure import (
    N_CLASSES,
    N_FEATURES,
    REFERENCE_MATMUL,
    CpuShare,
    host_info,
    matmul_gflops,
    others_cpu_now,
    peak_memory_since,
    reset_peak_memory,
)

#: Marks the child's one line of output that carries its result.
_RESULT = "fastspiral-result "
#: The full-size warm-up stops after a training that took this long.
WARM_SECONDS = 0.1
#: The longer of a task's two timed trainings runs this many times ``iters`` iterations.
LONG_FACTOR = 2
#: Times the pair of trainings is run when noise makes the longer one the faster.
ATTEMPTS = 5


def now() -> str:
    """The time as an ISO 8601 UTC string with milliseconds (records' ``started``/``finished``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def cpus_here() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def thread_capacity(worker_threads: int | None = None) -> tuple[int, str, str]:
    """(threads a configuration may have here, what sets that number, how to raise it), for
    refusals' messages."""
    import numba

    limits = [
        (cpus_here(), "this machine lets the process use", "a machine with more CPUs"),
        (
            numba.config.NUMBA_NUM_THREADS,  # type: ignore[attr-defined]
            "NUMBA_NUM_THREADS allows",
            "raise NUMBA_NUM_THREADS",
        ),
    ]
    if worker_threads:
        limits.append((int(worker_threads), "the Dask worker has", "dask worker --nthreads"))
    return min(limits)


def threads_refusal(thread_limit: int | None, worker_threads: int | None = None) -> str | None:
    """The "skipped: ..." status for a thread count above the capacity, or None when it fits."""
    if thread_limit is None:
        return None
    capacity, what, how = thread_capacity(worker_threads)
    if thread_limit > capacity:
        return (
            f"skipped: {thread_limit} threads asked, {what} {capacity} ({how}); "
            "never timed on fewer threads than it says"
        )
    return None


@contextlib.contextmanager
def count_thread_iterations() -> Iterator[collections.Counter]:
    """Count, within the block, the iterations the Numba backend ran per thread count.

    Every parallel segment goes through its thread chooser's ``record``
    (threads, iterations, seconds, timed); wrapping that method in this
    measuring process was preferred to a counter in the backend kept for the
    sweep's sake (tests/test_scaling.py::test_threads_used_counts_what_ran).
    Iterations no segment recorded ran on the serial loop, on one thread.
    """
    from ..numba_backend import threads

    counts: collections.Counter = collections.Counter()
    original = threads.ThreadChooser.record

    def record(self, n_threads, n_iters, seconds, timed=True):
        counts[int(n_threads)] += int(n_iters)
        return original(self, n_threads, n_iters, seconds, timed)

    # On the class, not a subclass: the trainer's chooser is already made.
    threads.ThreadChooser.record = record  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        threads.ThreadChooser.record = original  # type: ignore[method-assign]


def _thread_iterations(
    backend: str,
    counts: collections.Counter,
    total: int,
    allowed: int,
    n_samples: int,
    hidden: int,
    batch_size: int | None = None,
) -> dict[str, int]:
    """Iterations per thread count that actually worked: a Numba segment runs on at most as many
    threads as the problem (or its mini-batch) has slots; other backends on the threads they
    were allowed."""
    if backend != "numba":
        return {str(allowed): total}
    from ..numba_backend.workspace import batch_slots, n_slots

    if batch_size is None:
        slots = n_slots(n_samples, hidden)
    else:
        slots = batch_slots(batch_size, N_FEATURES, hidden, N_CLASSES)
    out: collections.Counter = collections.Counter()
    for n, iters in counts.items():
        out[min(n, slots)] += iters
    serial = total - sum(counts.values())
    if serial > 0:
        out[1] += serial
    return {str(k): v for k, v in sorted(out.items())}


def epoch_losses(history: Any, n_samples: int, batch_size: int) -> np.ndarray:
    """Each whole epoch's training loss from a mini-batch loss history: the mean of its batch
    losses, each weighted by its rows (the last batch of an epoch is smaller), as scikit-learn's
    MLPClassifier computes ``loss_curve_``. A part of an epoch at the end is left out."""
    history = np.asarray(history, float)
    per_epoch = -(-n_samples // batch_size)
    epochs = history.size // per_epoch
    rows = np.full(per_epoch, float(batch_size))
    rows[-1] = n_samples - (per_epoch - 1) * batch_size
    by_epoch = history[: epochs * per_epoch].reshape(epochs, per_epoch)
    return by_epoch @ rows / n_samples


def training_loss(history: Any, n_samples: int, batch_size: int | None) -> float:
    """The last training loss by the rule of :func:`updates_to_loss`: the last entry for the
    full batch, the last whole epoch's mean with mini-batches."""
    if batch_size is None:
        return float(np.asarray(history)[-1])
    return float(epoch_losses(history, n_samples, batch_size)[-1])


def updates_to_loss(
    history: Any, target: float, n_samples: int, batch_size: int | None
) -> int | None:
    """Updates run until the training loss first reached ``target`` or went below; None if it
    never did within ``history``.

    ``history[i]`` is the loss update ``i + 1`` computed before it stepped
    (:func:`fastspiral.train_net`'s ``loss_history``). With the full batch
    that is the training loss, so the answer is ``i + 1`` for the first
    ``history[i] <= target``. With mini-batches one batch's loss is too noisy
    to stand for the training loss (a lucky batch reaches a target long
    before the model does), so the loss is checked at the end of each epoch:
    the mean of that epoch's batch losses weighted by their rows
    (:func:`epoch_losses`), and the answer is a whole number of epochs in
    updates.
    """
    history = np.asarray(history, float)
    if batch_size is None:
        hits = np.flatnonzero(history <= target)
        return int(hits[0]) + 1 if hits.size else None
    hits = np.flatnonzero(epoch_losses(history, n_samples, batch_size) <= target)
    return (int(hits[0]) + 1) * -(-n_samples // batch_size) if hits.size else None


def lab_refusal(backend: str, config: dict[str, Any]) -> str | None:
    """The "skipped: ..." status of an update a backend cannot time (a peer asked for another
    optimizer, a batch size or another step size), or None."""
    from .peers import STEP, SWEEP_BACKENDS

    optimizer = config.get("optimizer") or "gd"
    batch, step = config.get("batch_size"), config.get("step_size", STEP)
    if SWEEP_BACKENDS[backend].lab or (optimizer == "gd" and batch is None and step == STEP):
        return None
    return (
        f"skipped: {backend} times only the case study's full-batch gd at step size {STEP:g}, "
        f"not {optimizer}{'' if batch is None else f' on batches of {batch:,}'}"
        f"{'' if step == STEP else f' at step size {step:g}'}"
    )


def _new_run(config: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    """A run of ``config``'s repeat with ``status`` and ``fields``, named by a fresh ``run_id``."""
    return dict(
        run_id=uuid.uuid4().hex,
        repeat=config.get("repeat", 0),
        sequence=config.get("sequence"),
        host=socket.gethostname(),
        worker=config.get("worker") or "local",
        status=status,
        **fields,
    )


def run_task(config: dict[str, Any]) -> dict[str, Any]:
    """Run one repeat of a configuration in this process and return the run (a dict).

    ``config`` holds backend, dtype, n_samples, hidden, iters, seed,
    thread_limit (None: all the threads there are), optionally the update
    (``optimizer_config``, an update rule's ``config()``,
    default gd; ``batch_size``, default None; ``step_size``, default 1) and a
    ``target_loss``, and optionally repeat
    (its index: it sets which of the two trainings runs first), sequence (its
    place in the sweep's order), worker and worker_threads (from a Dask
    worker). The run has ``status`` "ok", "skipped: ..." or "failed: ...";
    an ok run has its set-up-free ``seconds_per_iter``, ``setup_seconds``,
    ``wall_seconds`` (the shorter training, start to end), the two loop
    times, ``thread_iterations``, ``threads_allowed``, ``matmul_gflops`` (the
    same-dtype, same-threads reference), ``others_cpu_before`` (the share of
    the CPUs busy in a 0.25 s look before timing), ``others_cpu`` (the share
    other programs took during the timed trainings), ``peak_mem_mib`` (the
    peak resident memory of the timed trainings above the memory before
    them, data already made), the shorter training's ``final_loss`` (by the
    rule of ``updates_to_loss``) and ``accuracy``, ``timed_iters`` (the
    shorter training's updates), ``target_iters`` and ``target_budget`` with a
    target, and where and when it ran.
    """
    from .peers import STEP, SWEEP_BACKENDS

    started = now()
    refused = threads_refusal(config.get("thread_limit"), config.get("worker_threads"))
    refused = refused or lab_refusal(config["backend"], config)
    if refused:
        return _new_run(config, refused, started=started, finished=now())
    allowed = config.get("thread_limit") or thread_capacity(config.get("worker_threads"))[0]
    host = config.get("host_info") or host_info(measure_matmul=False)
    run = _new_run(config, "ok", started=started, threads_allowed=allowed,
                  cpu=host.get("cpu"), cores=host.get("cores"), blas=host.get("blas"))  # fmt: skip
    try:
        backend = SWEEP_BACKENDS[config["backend"]]
        backend.limit_threads(allowed)  # before the peer library starts its pools
        from ..data import make_spiral
        from ..numba_backend import threads as numba_threads

        N, H, iters = config["n_samples"], config["hidden"], config["iters"]
        batch = config.get("batch_size")
        if batch is not None:  # whole epochs (the module's docstring says why)
            per_epoch = -(-N // batch)
            iters = -(-iters // per_epoch) * per_epoch
        lengths = (iters, LONG_FACTOR * iters)
        kwargs = dict(hidden=H, seed=config["seed"], dtype=config["dtype"], max_iters=lengths[1])
        if backend.lab:
            from ..optim import get_optimizer, optimizer_from_config

            rule = config.get("optimizer_config")  # a name alone means its default values
            kwargs.update(
                optimizer=optimizer_from_config(rule)
                if rule
                else get_optimizer(config.get("optimizer") or "gd"),
                batch_size=batch,
                step_size=config.get("step_size", STEP),
            )
        X, y = make_spiral(-(-N // N_CLASSES), N_CLASSES, seed=config["seed"])
        backend.warm_up(X, y, iters=1, **kwargs)
        run["matmul_gflops"] = round(
            matmul_gflops(REFERENCE_MATMUL, repeats=3, dtype=config["dtype"]), 2
        )
        run["others_cpu_before"] = round(others_cpu_now(), 3)  # is the machine quiet enough?
        # Right before the timed trainings, after the matrix product's BLAS threads and the look
        # above's sleep: the first training after them ran up to 40% slower at N=60 (cold caches,
        # idle cores), and whichever of the two came first took the set-up-free time with it.
        n = 1
        while True:  # full size, until a training takes WARM_SECONDS
            t0 = time.perf_counter()
            backend.train(X, y, iters=n, **kwargs)
            if time.perf_counter() - t0 >= WARM_SECONDS or n >= lengths[1]:
                break
            n = min(2 * n, lengths[1])
        order = lengths if run["repeat"] % 2 == 0 else lengths[::-1]
        mark = reset_peak_memory()
        loops: dict[int, float] = {}
        walls: dict[int, float] = {}
        trained_by_length: dict[int, Any] = {}
        attempts = 0
        with CpuShare() as share, count_thread_iterations() as counts:
            # one more iteration, untimed, after this block's own look at the machine: the first
            # training after it still ran ~20% slower at N=60 (tests cannot time this; the order
            # of the two timed trainings alternates with the repeat as well)
            backend.train(X, y, iters=1, **kwargs)
            while attempts < ATTEMPTS and not loops.get(lengths[1], 0) > loops.get(lengths[0], 0):
                # a pair where noise made the longer training the faster is timed again
                attempts += 1
                for length in order:
                    t0 = time.perf_counter()
                    trained = backend.train(X, y, iters=length, **kwargs)
                    walls[length] = time.perf_counter() - t0
                    loops[length] = trained.loop_seconds
                    trained_by_length[length] = trained
        peak = peak_memory_since(mark)
        short, long_ = trained_by_length[lengths[0]], trained_by_length[lengths[1]]
        marginal = (loops[lengths[1]] - loops[lengths[0]]) / (lengths[1] - lengths[0])
        run.update(
            order=[int(v) for v in order],
            timed_iters=int(lengths[0]),
            attempts=attempts,
            loop_seconds=[loops[lengths[0]], loops[lengths[1]]],
            wall_seconds=walls[lengths[0]],
            seconds_per_iter=marginal,
            setup_seconds=walls[lengths[0]] - lengths[0] * marginal,
            others_cpu=None if share.others is None else round(share.others, 3),
            peak_mem_mib=None if peak is None else peak / 2**20,
            thread_iterations=_thread_iterations(
                config["backend"],
                counts,
                attempts * sum(lengths) + 1,
                allowed,
                X.shape[0],
                H,
                batch,
            ),  # fmt: skip
            final_loss=training_loss(short.model.loss_history, X.shape[0], batch),
            accuracy=short.model.score(X, y),
            threading_layer=numba_threads.threading_layer() or "none",
        )
        if config.get("target_loss") is not None:
            run.update(
                target_iters=updates_to_loss(
                    long_.model.loss_history, config["target_loss"], X.shape[0], batch
                ),
                target_budget=int(lengths[1]),
            )
        if not marginal > 0:
            run["status"] = (
                f"failed: in {attempts} tries the longer training's loop was never slower than "
                f"the shorter's ({loops[lengths[1]]:.3g} s against {loops[lengths[0]]:.3g} s); "
                "raise --iters"
            )
    except Exception as exc:
        run["status"] = f"failed: {type(exc).__name__}: {exc}"
    run["finished"] = now()
    return run


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    """All ``config["repeats"]`` repeats of a configuration in this process, as one record.

    What a sweep does for each configuration, without the fresh processes
    and the interleaving (the benchmark suite uses it for one-off figures).
    """
    from .results import add_run, new_record

    record = new_record(config, host_info(measure_matmul=False))
    for repeat in range(config.get("repeats", 1)):
        add_run(record, run_task(dict(config, repeat=repeat, sequence=repeat)))
    return record


def _exit_with_parent(parent: int) -> None:
    """End this process when ``parent`` is gone (killed with SIGKILL, its cleanup never ran)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def child_main() -> None:
    """The fresh process: a task or configuration as JSON on stdin, its result as one marked
    JSON line on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    threading.Thread(target=_exit_with_parent, args=(int(sys.argv[1]),), daemon=True).start()
    job = json.loads(sys.stdin.read())
    result = run_config(job["config"]) if job["what"] == "config" else run_task(job["config"])
    print(_RESULT + json.dumps(result), flush=True)


def _worker_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the address and threads of the Dask worker running this, if one is."""
    config = dict(config)
    try:
        from distributed import get_worker

        worker = get_worker()
        config.update(worker=worker.address, worker_threads=worker.state.nthreads)
    except (ImportError, ValueError):
        pass
    return config


def _in_fresh_process(what: str, config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    code = "from fastspiral.scaling.run import child_main; child_main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(json.dumps({"what": what, "config": config}))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in reversed(out.splitlines()):
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT) :]), ""
    detail = err.strip().splitlines()[-1] if err.strip() else "no output"
    return None, f"failed: worker process exited with code {proc.returncode}: {detail}"


def run_task_in_fresh_process(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_task` in a new Python process, killed if this one is interrupted.

    Called in a Dask worker, the task gets the worker's threads and the run
    the worker's address.
    """
    config = _worker_config(config)
    result, failure = _in_fresh_process("task", config)
    return result if result is not None else _new_run(config, failure, finished=now())


def run_config_in_fresh_process(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_config` in a new Python process, killed if this one is interrupted."""
    from .results import new_record

    config = _worker_config(config)
    result, failure = _in_fresh_process("config", config)
    if result is not None:
        return result
    record = new_record(config, {})
    record["status"] = failure
    return record
