"""The sweep: every configuration of a scaling experiment, repeats interleaved, locally or on Dask.

:func:`sweep` runs every combination of sizes, backends, dtypes, thread
counts, update rules and batch sizes. Each repeat of each configuration is a
task that runs alone in a fresh process (:mod:`fastspiral.scaling.run`),
locally or on a Dask worker, so that timings do not disturb each other and
the peak memory is the task's own. The tasks run in rounds: every
configuration's first repeat, in a random order, then every second repeat in
another, and so on, so that a slow spell of the machine lands on many
configurations' repeats rather than on all of one configuration's. The
order's seed is recorded (``sweeps`` in results.json), and each repeat its
place in it (``sequence``).

With ``out=DIR`` each finished repeat is merged into DIR/results.json and
DIR/results.csv at once, under a lock on the folder: a rerun runs only the
repeats still missing, an interrupted sweep keeps every repeat that
finished, and two sweeps into one folder keep every record.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, as_completed
from typing import Any, NamedTuple

import numpy as np

from .._files import check_writable_path
from .._signals import signals_interrupt
from .._validation import DTYPES, check_float, check_int
from ..model import PREDICT_ELEMENTS
from .measure import N_CLASSES, N_FEATURES, host_info, machine_info
from .peers import SWEEP_BACKENDS
from .results import (
    add_run,
    load_results,
    merge_results,
    new_record,
    optimizer_label,
    record_key,
    summarise,
    update_text,
)
from .run import lab_refusal, now, run_task_in_fresh_process, thread_capacity, threads_refusal

#: Fraction of the available memory a configuration may be estimated to use.
MEMORY_HEADROOM = 0.8
#: The files a sweep writes into its folder.
OUTPUTS = ("results.json", "results.csv", "scaling.png")


def estimate_memory(backend: str, n_samples: int, hidden: int, dtype: str) -> int:
    """Bytes a training run needs beyond the interpreter: data, work arrays, prediction, parameters.

    The work arrays are the backend's own figure, computed without
    allocating anything (``SWEEP_BACKENDS`` of ``fastspiral.scaling.peers``):
    NumPy and the peers keep the (N, H) hidden layer, the Numba kernels
    cache-sized tiles.
    """
    item = np.dtype(dtype).itemsize
    N, H, D, K = n_samples, hidden, N_FEATURES, N_CLASSES
    data = N * D * (8 + item) + N * 8 * 2  # X (float64 and converted), y, labels
    work = SWEEP_BACKENDS[backend].workspace_bytes(N, D, H, K, dtype)
    predict = (
        min(N, PREDICT_ELEMENTS // max(H, 1)) * H * 8 * 2
    )  # blocked forward pass for the accuracy
    return data + work + predict + (D * H + H * K) * 8 * 4


def available_memory() -> int:
    """Bytes the system can give a new allocation now (psutil: MemAvailable on Linux,
    macOS's own figure)."""
    import psutil

    return int(psutil.virtual_memory().available)


# --------------------------------------------------------------------------
# Checking the arguments
# --------------------------------------------------------------------------


def _as_list(value: Any, name: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        value = [value]
    value = list(value)
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def check_backends(backends: Any) -> list[str]:
    """The backends as a list, each known and installed here; ValueError naming the first
    that is not."""
    names = _as_list(backends, "backends")
    for b in names:
        if b not in SWEEP_BACKENDS:
            raise ValueError(
                f"backends: unknown backend {b!r}; choose from {sorted(SWEEP_BACKENDS)}"
            )
        if not SWEEP_BACKENDS[b].available():
            raise ValueError(
                f"backends: {b!r} needs {SWEEP_BACKENDS[b].module}, which is not installed here "
                f"(pip install {SWEEP_BACKENDS[b].module})"
            )
    return names


def check_out(out: str | os.PathLike, create: bool = True) -> str:
    """The results folder, created if ``create``; OSError/ValueError now unless every file a
    sweep writes there could be written (a read-only folder is found before any work)."""
    out = os.fspath(out)
    if not out:
        raise ValueError("out must not be empty")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out {out!r} exists and is not a folder")
    if not os.path.isdir(out):
        if create:
            try:
                os.makedirs(out)
            except OSError as exc:
                raise OSError(exc.errno, f"out: cannot create {out!r}: {exc.strerror}") from None
        else:
            parent = os.path.dirname(os.path.abspath(out))
            while not os.path.isdir(parent):
                parent = os.path.dirname(parent)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OSError(f"out: cannot create {out!r}: {parent!r} is not writable")
            return out
    for name in OUTPUTS:
        check_writable_path(os.path.join(out, name), "out")
    return out


def check_optimizers(optimizers: Any) -> list:
    """The update rules as :mod:`fastspiral.optim` objects, in order; ValueError or TypeError
    naming ``optimizers`` and the first that is not one."""
    from ..optim import get_optimizer

    rules = []
    for value in _as_list(optimizers, "optimizers"):
        try:
            rules.append(get_optimizer(value))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"optimizers: {exc}") from None
    return rules


def check_batch_sizes(batch_sizes: Any) -> list[int | None]:
    """The batch sizes: None (the full batch) or ints >= 1."""
    values = [None] if batch_sizes is None else _as_list(batch_sizes, "batch_sizes")
    return [None if b is None else check_int(b, "batch_sizes", minimum=1) for b in values]


def check_target_loss(target_loss: Any) -> float | None:
    """None, or a finite loss > 0 (a loss of 0 is never reached)."""
    return None if target_loss is None else check_float(target_loss, "target_loss", positive=True)


class Task(NamedTuple):
    """One repeat of one configuration, at its place in the sweep's order."""

    key: tuple
    config: dict[str, Any]


def sweep(
    n_per_class: Sequence[int] | None = None,
    hidden: Sequence[int] = (100, 1000),
    backends: Sequence[str] = ("numba", "numpy"),
    dtypes: Sequence[str] = ("float64", "float32"),
    iters: int = 50,
    repeats: int = 3,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    executor: Any = None,
    progress: bool = True,
    force: bool = False,
    threads: Sequence[int] | None = (1, 2),
    n_samples: Sequence[int] | None = None,
    share_hosts: bool = False,
    target_loss: float | None = None,
    x: str | None = None,
    optimizers: Sequence[Any] = ("gd",),
    batch_sizes: Sequence[int | None] = (None,),
    step_size: float = 1.0,
) -> list[dict[str, Any]]:
    """Time net training for every combination of sizes, backends, dtypes, thread counts,
    update rules and batch sizes.

    Parameters
    ----------
    n_per_class : sequence of int, optional
        Spiral points per class (N = 3 * n_per_class); default 100, 1000, 10000.
    n_samples : sequence of int, optional
        Total rows N instead (multiples of 3: three classes); not with ``n_per_class``.
    hidden : sequence of int
        Hidden-layer sizes H.
    backends : sequence of str
        Names from ``fastspiral.scaling.SWEEP_BACKENDS``: "numba",
        "numpy", and "torch" and "jax" where installed.
    dtypes : sequence of str
        "float64" and/or "float32".
    iters : int
        Iterations (updates) of the shorter of each repeat's two timed
        trainings (the longer has twice as many; their difference is the
        set-up-free time). With mini-batches both run whole epochs: the
        shorter the fewest with at least ``iters`` updates.
    repeats : int
        Repeats per configuration, each in a fresh process, interleaved with
        the other configurations' (3 give a 75% interval on the median, 6 a
        95% one); a rerun with more repeats adds the missing ones.
    seed : int
        Seed of the data and of the initial weights; part of what identifies
        a configuration, as every argument that changes its result is.
    out : path, optional
        Folder for results.csv, results.json (every repeat merged in as it
        finishes) and scaling.png (every record of the folder). Repeats
        already there are reused, not rerun.
    executor : distributed.Client or concurrent.futures.Executor, optional
        Where to run the tasks. With a Dask ``Client``, one task at a time
        per host (unless ``share_hosts``), each on a worker's threads and
        its configuration's repeats all on one host; start workers with
        ``--nthreads`` as large as the largest thread count asked. Another
        executor gets every task at once and runs them as it likes. By
        default each runs alone in a fresh local process.
    progress : bool
        Show a tqdm bar over the tasks.
    force : bool
        Drop the repeats ``out`` holds for these configurations and run them again.
    threads : sequence of int or None
        Thread counts to time each configuration with (Numba's, BLAS's and
        the peer's); None: all the threads there are (``thread_limit`` None).
        A count above what the machine or the worker has is recorded as
        skipped, never run on fewer threads.
    share_hosts : bool
        Let Dask workers on one host run tasks at the same moment (faster,
        but each slows the others; the summary then warns).
    target_loss : float, optional
        Also record the cost to a result: the updates, epochs and set-up-free
        seconds until the training loss first reached this loss (with
        mini-batches, an epoch's mean batch loss), or "not reached within U
        updates", U the longer timed training's. Raise ``iters`` until it is
        reached. Part of a configuration's identity.
    x : {"N", "H", "threads"}, optional
        The x-axis of scaling.png (default: the first of them that the
        folder's records hold more than one value of).
    optimizers : sequence of str or update rules
        Update rules, by name ("gd", "sgd", "momentum", "nesterov",
        "adagrad", "rmsprop", "adam") or as objects of ``fastspiral.optim``
        carrying their hyperparameters (``Adam(beta1=0.8)``, recorded as
        "adam(beta1=0.8)").
    batch_sizes : sequence of int or None
        None for the full batch, or rows per mini-batch (an iteration is then
        one update, an epoch ``ceil(N / batch_size)`` of them). A batch size
        above a configuration's N is recorded as skipped.
    step_size : float
        The learning rate of every update rule (default: the case study's 1;
        the adaptive rules usually want 1e-3 to 1e-2: sweep them into the same
        folder in a second call). Part of a configuration's identity.

    The peers (torch, jax) time only full-batch "gd" at step size 1; their
    other configurations are recorded as skipped.

    Returns
    -------
    list of dict
        One record per configuration asked for, in the order of the
        combinations (keys in ``fastspiral.scaling.FIELDS``,
        ``repeat_seconds`` and ``runs``); ``status`` is "ok", "partial: k of
        R repeats", "skipped: <reason>" or "failed: <reason>".
    """
    if n_per_class is not None and n_samples is not None:
        raise ValueError("give n_per_class or n_samples, not both")
    if n_samples is not None:
        rows = [
            check_int(n, "n_samples", minimum=N_CLASSES) for n in _as_list(n_samples, "n_samples")
        ]
        for n in rows:
            if n % N_CLASSES:
                raise ValueError(
                    f"n_samples must be multiples of {N_CLASSES} (the spiral's classes), got {n}"
                )
    else:
        per_class = (100, 1000, 10000) if n_per_class is None else n_per_class
        rows = [
            N_CLASSES * check_int(n, "n_per_class", minimum=1)
            for n in _as_list(per_class, "n_per_class")
        ]
    widths = [check_int(h, "hidden", minimum=1) for h in _as_list(hidden, "hidden")]
    backends = check_backends(backends)
    dtypes = _as_list(dtypes, "dtypes")
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtypes: unknown dtype {d!r}; choose from {sorted(DTYPES)}")
    limits = (
        [None]
        if threads is None
        else [check_int(t, "threads", minimum=1) for t in _as_list(threads, "threads")]
    )
    iters = check_int(iters, "iters", minimum=1)
    repeats = check_int(repeats, "repeats", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    rules = check_optimizers(optimizers)
    batches = check_batch_sizes(batch_sizes)
    step_size = check_float(step_size, "step_size", positive=True)
    target_loss = check_target_loss(target_loss)
    if x is not None and x not in ("N", "H", "threads"):
        raise ValueError(f"x must be one of 'N', 'H', 'threads', got {x!r}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a Dask Client or a concurrent.futures.Executor, "
            f"got {type(executor).__name__}"
        )
    previous: list[dict[str, Any]] = []
    if out is not None:
        out = check_out(out)
        _, previous = load_results(out)  # every field checked before any work

    configs: dict[tuple, dict[str, Any]] = {}
    for h in widths:
        for n in rows:
            for b in backends:
                for d in dtypes:
                    for t in limits:
                        for rule in rules:
                            for batch in batches:
                                cfg = dict(
                                    backend=b, dtype=d, n_samples=n, hidden=h, iters=iters,
                                    seed=seed, thread_limit=t, repeats=repeats,
                                    optimizer=optimizer_label(rule), batch_size=batch,
                                    step_size=step_size, target_loss=target_loss,
                                    optimizer_config=rule.config(),
                                )  # fmt: skip
                                configs.setdefault(record_key(cfg), cfg)

    machine = machine_info()
    machine["started"] = now()
    order_seed = secrets.randbits(32)
    entry = dict(id=uuid.uuid4().hex, started=machine["started"], finished=None,
                 host=socket.gethostname(), order_seed=order_seed, share_hosts=share_hosts,
                 configurations=len(configs), repeats=repeats)  # fmt: skip
    machine["sweeps"] = [entry]
    machine["hosts"] = {}
    local = executor is None
    if local:
        capacity = thread_capacity()[0]
        machine["hosts"][socket.gethostname()] = dict(
            host_info(measure_matmul=False), workers={"local": capacity}
        )
    here = dict(host_info(measure_matmul=False))

    on_disk = {record_key(r): r for r in previous}
    records: dict[tuple, dict[str, Any]] = {}
    dropped: set[str] = set()
    needs: dict[tuple, int] = {}
    changed = []
    avail = available_memory()
    for key, cfg in configs.items():
        old = on_disk.get(key)
        if old is not None and force:
            dropped.update(run["run_id"] for run in old.get("runs", []))
            old = None
        if old is not None and str(old["status"]).startswith("skipped"):
            records[key] = old
            continue
        record = dict(old) if old is not None else new_record(cfg, here)
        record["repeats"] = repeats  # a rerun asking for fewer finds the record complete
        if old is not None and str(old["status"]).startswith("partial"):
            summarise(record)  # "partial: 3 of 5 repeats" is complete for a sweep asking for 3
            if record["status"] != old["status"]:
                changed.append(record)
        need = estimate_memory(cfg["backend"], cfg["n_samples"], cfg["hidden"], cfg["dtype"])
        record["estimated_mem_mib"] = need / 2**20
        refusal = threads_refusal(cfg["thread_limit"]) if local else None
        refusal = lab_refusal(cfg["backend"], cfg) or refusal
        if cfg["batch_size"] is not None and cfg["batch_size"] > cfg["n_samples"]:
            refusal = (
                f"skipped: batch_size {cfg['batch_size']:,} is more than the "
                f"{cfg['n_samples']:,} rows"
            )
        elif need > MEMORY_HEADROOM * avail:
            refusal = (
                f"skipped: needs about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
            )
        if refusal:
            record["status"] = refusal
            record["worker"] = record.get("worker") or "not run"
            record["host"] = record.get("host") or socket.gethostname()
            changed.append(record)
        else:
            if old is None:
                changed.append(record)
            needs[key] = max(0, repeats - len(record.get("runs") or []))
        records[key] = record

    rng = np.random.default_rng(order_seed)
    tasks: list[Task] = []
    for r in range(max(needs.values(), default=0)):
        keys = [k for k, n in needs.items() if n > r]
        for i in rng.permutation(len(keys)):
            key = keys[i]
            held = len(records[key].get("runs") or [])
            tasks.append(
                Task(key, dict(configs[key], repeat=held + r, sequence=len(tasks), host_info=here))
            )

    def save(changed_records: list[dict[str, Any]]) -> None:
        machine["finished"] = entry["finished"] = now()
        if out is not None:
            merged = merge_results(out, machine, changed_records, dropped)
            by_key = {record_key(r): r for r in merged}
            for key in records:
                if key in by_key:
                    records[key] = by_key[key]

    save(changed)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc="sweep", unit="repeat")

    def finished(task: Task, run: dict[str, Any]) -> None:
        info = run.pop("host_info", None)
        if info is not None:
            host = machine["hosts"].setdefault(run["host"], {})
            host.update({k: v for k, v in info.items() if k != "workers"})
            host.setdefault("workers", {}).update(info.get("workers", {}))
        record = records[task.key]
        add_run(record, run)
        save([record])
        if bar is not None:
            bar.set_postfix_str(_describe(task.config))
            bar.update()

    # SIGTERM/SIGHUP stop the worker as Ctrl-C does; finished repeats are already on disk.
    with signals_interrupt():
        try:
            if local:
                for task in tasks:
                    finished(task, run_task_in_fresh_process(task.config))
            elif callable(getattr(executor, "scheduler_info", None)):
                _run_on_dask(executor, tasks, finished, share_hosts)
            else:
                _run_on_executor(executor, tasks, finished)
        finally:
            if bar is not None:
                bar.close()

    result = [records[key] for key in configs]
    if out is not None:
        machine_now, everything = load_results(out)
        write_figure(out, everything, machine_now, x=x)
    return result


def write_figure(out: str, records: list[dict[str, Any]], machine: dict[str, Any], x=None) -> str:
    """Draw every record of a results folder into DIR/scaling.png; returns its path."""
    from ..plot import save_figure
    from .figure import plot_scaling

    return save_figure(plot_scaling(records, machine, x=x), os.path.join(out, "scaling.png"))


# --------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------


def _task(config: dict[str, Any]) -> dict[str, Any]:
    """What a worker runs: the task in a fresh process, and this host's information (CPU, cores,
    BLAS; computed once per worker process) and the worker's threads, for results.json."""
    info = host_info(measure_matmul=False)
    run = run_task_in_fresh_process(dict(config, host_info=info))
    run["host_info"] = dict(info, workers={run.get("worker", "?"): _worker_threads()})
    return run


def _worker_threads() -> int | None:
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        return None


def _collect(future: Any, task: Task, finished) -> None:
    try:
        run = future.result()
    except Exception as exc:
        run = dict(status=f"failed: {type(exc).__name__}: {exc}", host="?", worker="?")
    finished(task, run)


def _run_on_dask(client: Any, tasks: list[Task], finished, share_hosts: bool) -> None:
    """Tasks in order on free workers: at most one per worker, and one per host unless
    ``share_hosts``; a configuration's repeats all on the host of its first."""
    from distributed import wait

    queue = list(tasks)
    running: dict[Any, tuple[str, str, Task]] = {}
    pinned: dict[tuple, str] = {}
    last_used: dict[str, int] = {}
    dispatched = 0
    try:
        while queue or running:
            workers = client.scheduler_info()["workers"]
            hosts_up = {info.get("host") for info in workers.values()}
            for key in [k for k, h in pinned.items() if h not in hosts_up]:
                del pinned[key]  # its host left the cluster: any host may take the rest
            for addr in sorted(workers, key=lambda a: last_used.get(a, -1)):
                host = workers[addr].get("host")
                if any(a == addr for a, _, _ in running.values()):
                    continue
                if not share_hosts and any(h == host for _, h, _ in running.values()):
                    continue
                pick = next(
                    (i for i, t in enumerate(queue) if pinned.get(t.key, host) == host), None
                )
                if pick is None:
                    continue
                task = queue.pop(pick)
                pinned.setdefault(task.key, host)
                fut = client.submit(
                    _task, task.config, workers=[addr], allow_other_workers=False, pure=False
                )
                running[fut] = (addr, host, task)
                last_used[addr] = dispatched
                dispatched += 1
            if not running:
                raise RuntimeError("the Dask cluster has no workers")
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            for fut in done:
                _, _, task = running.pop(fut)
                _collect(fut, task, finished)
    except BaseException:
        client.cancel(list(running))
        raise


def _run_on_executor(executor: Executor, tasks: list[Task], finished) -> None:
    futures = {executor.submit(_task, task.config): task for task in tasks}
    try:
        for fut in as_completed(futures):
            _collect(fut, futures[fut], finished)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise


def _describe(cfg: dict[str, Any]) -> str:
    threads = "" if cfg.get("thread_limit") is None else f" threads={cfg['thread_limit']}"
    return (
        f"{cfg['backend']} {cfg['dtype']} N={cfg['n_samples']:,} H={cfg['hidden']:,}"
        f"{update_text(cfg, sep=' ')}{threads}"
    )
