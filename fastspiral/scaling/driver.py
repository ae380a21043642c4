"""The sweep: every configuration of a scaling experiment, each in a fresh process, locally or on Dask.

:func:`sweep` runs every combination of sizes, backends, dtypes and thread
counts. Each configuration runs alone in a fresh process
(:mod:`fastspiral.scaling.run`), locally or on a Dask worker (one at a time
per worker), so timings do not disturb each other and the peak memory is
the run's own. With ``out=DIR`` every finished configuration is written to
DIR/results.csv and DIR/results.json at once, and a rerun skips what is
already there.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, as_completed
from typing import Any

import numpy as np

from .._signals import signals_interrupt
from .._validation import DTYPES, check_int
from ..backends import BACKENDS
from ..model import PREDICT_ELEMENTS
from .measure import N_CLASSES, N_FEATURES, machine_info
from .results import load_results, record_key, save_results, speedups
from .run import make_record, now, run_config_in_fresh_process

#: Fraction of the available memory a configuration may be estimated to use.
MEMORY_HEADROOM = 0.8


def estimate_memory(backend: str, n_samples: int, hidden: int, dtype: str) -> int:
    """Bytes a training run needs beyond the interpreter: data, work arrays, prediction, parameters.

    The work arrays are the backend's own figure (:mod:`fastspiral.backends`):
    NumPy keeps the (N, H) hidden layer, the Numba kernels cache-sized tiles.
    """
    item = np.dtype(dtype).itemsize
    N, H, D, K = n_samples, hidden, N_FEATURES, N_CLASSES
    data = N * D * (8 + item) + N * 8 * 2  # X (float64 and converted), y, labels
    work = BACKENDS[backend].workspace_bytes("net", N, D, H, K, dtype)
    predict = (
        min(N, PREDICT_ELEMENTS // max(H, 1)) * H * 8 * 2
    )  # blocked forward pass for the accuracy
    return data + work + predict + (D * H + H * K) * 8 * 4


def available_memory() -> int:
    """Bytes the system can give a new allocation now (psutil: MemAvailable on Linux, macOS's own figure)."""
    import psutil

    return int(psutil.virtual_memory().available)


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------


def _as_list(value: Any, name: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        value = [value]
    value = list(value)
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def sweep(
    n_per_class: Sequence[int] = (100, 1000, 10000),
    hidden: Sequence[int] = (100, 1000),
    backends: Sequence[str] = ("numba", "numpy"),
    dtypes: Sequence[str] = ("float64",),
    iters: int = 50,
    repeats: int = 3,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    executor: Any = None,
    progress: bool = True,
    force: bool = False,
    threads: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Time net training for every combination of sizes, backends, dtypes and thread counts.

    Parameters
    ----------
    n_per_class, hidden : sequences of int
        Spiral points per class (N = 3 * n_per_class) and hidden-layer sizes.
    backends, dtypes : sequences of str
        Names from the backend registry; "float64" and/or "float32".
    iters, repeats : int
        Iterations per timed training, and how many timed trainings; every
        repeat is kept, with the median, min, max and spread.
    seed : int
        Seed of the data and of the initial weights.
    out : path, optional
        Folder for results.csv, results.json (rows written as each finishes)
        and scaling.png. Rows already there are reused, not rerun.
    executor : distributed.Client or concurrent.futures.Executor, optional
        Where to run configurations. With a Dask ``Client``, each worker runs
        one configuration at a time, in a fresh process on all of that
        worker's threads (start workers with ``--nworkers 1`` per machine).
        Another executor gets every configuration at once and runs it as it
        likes (``run_config_in_fresh_process`` on its workers). By default each
        runs alone in a fresh local process.
    progress : bool
        Show a tqdm bar over configurations.
    force : bool
        Recompute rows that ``out`` already holds.
    threads : sequence of int, optional
        Thread counts to time each configuration with (Numba's and BLAS's
        threads); by default the machine's (a record's ``thread_limit`` is None).

    Returns
    -------
    list of dict
        One record per configuration (keys in :data:`FIELDS`, and
        ``repeat_seconds``); ``status`` is "ok", "skipped: <reason>" or
        "failed: <reason>". results.json also holds the machine the sweep ran
        from, its start and end, and each host's information.
    """
    sizes = [check_int(n, "n_per_class", minimum=1) for n in _as_list(n_per_class, "n_per_class")]
    widths = [check_int(h, "hidden", minimum=1) for h in _as_list(hidden, "hidden")]
    backends = _as_list(backends, "backends")
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backends: unknown backend {b!r}; choose from {sorted(BACKENDS)}")
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
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a Dask Client or a concurrent.futures.Executor, "
            f"got {type(executor).__name__}"
        )

    configs = [
        dict(
            backend=b,
            dtype=d,
            n_samples=N_CLASSES * n,
            hidden=h,
            iters=iters,
            repeats=repeats,
            seed=seed,
            thread_limit=t,
        )
        for h in widths
        for n in sizes
        for b in backends
        for d in dtypes
        for t in limits
    ]

    machine, previous = {}, []
    if out is not None:
        out = os.fspath(out)
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"out {out!r} exists and is not a folder")
        os.makedirs(out, exist_ok=True)
        machine, previous = load_results(out)
    if not machine:
        machine = machine_info()
    machine.setdefault("started", now())
    machine.setdefault("hosts", {})
    done = (
        {}
        if force
        else {
            record_key(r): r
            for r in previous
            if r.get("status") == "ok" or str(r.get("status", "")).startswith("skipped")
        }
    )
    results: dict[tuple, dict[str, Any]] = {record_key(r): r for r in previous}

    def record_done(record: dict[str, Any]) -> None:
        results[record_key(record)] = record
        machine["finished"] = now()
        if out is not None:
            save_results(out, machine, list(results.values()))

    todo = []
    avail = available_memory()
    for cfg in configs:
        key = record_key(cfg)
        if key in done:
            continue
        need = estimate_memory(cfg["backend"], cfg["n_samples"], cfg["hidden"], cfg["dtype"])
        if need > MEMORY_HEADROOM * avail:
            rec = make_record(
                cfg,
                f"skipped: needs about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available",
                host=socket.gethostname(),
                worker="not run",
                estimated_mem_mib=need / 2**20,
            )
            record_done(rec)
        else:
            cfg["estimated_mem_mib"] = need / 2**20
            todo.append(cfg)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="sweep", unit="config")

    def finished(cfg: dict[str, Any], rec: dict[str, Any]) -> None:
        rec["estimated_mem_mib"] = cfg["estimated_mem_mib"]
        host = rec.pop("host_info", None)
        if host is not None:
            machine["hosts"][rec["host"]] = host
        record_done(rec)
        if bar is not None:
            bar.set_postfix_str(_describe(cfg))
            bar.update()

    # SIGTERM/SIGHUP stop the worker as Ctrl-C does; finished rows are already on disk.
    with signals_interrupt():
        try:
            if executor is None:
                local = {
                    k: machine[k] for k in ("cpu", "cores", "blas", "matmul_gflops") if k in machine
                }
                machine["hosts"][socket.gethostname()] = local
                for cfg in todo:
                    finished(cfg, run_config_in_fresh_process(dict(cfg, host_info=local)))
            elif callable(getattr(executor, "scheduler_info", None)):
                _run_on_dask(executor, todo, finished)
            else:
                _run_on_executor(executor, todo, finished)
        finally:
            if bar is not None:
                bar.close()

    records = [results[record_key(c)] for c in configs]
    if out is not None:
        from ..plot import save_figure
        from .figure import plot_scaling

        save_figure(
            plot_scaling(records, speedups(records), machine), os.path.join(out, "scaling.png")
        )
    return records


def _task(config: dict[str, Any]) -> dict[str, Any]:
    """What a worker runs: the configuration in a fresh process, and (once per worker process)
    this host's information, matmul rate included, for results.json."""
    from .measure import host_info

    record = run_config_in_fresh_process(dict(config, host_info=host_info()))
    record["host_info"] = host_info()
    return record


def _collect(future: Any, cfg: dict[str, Any], finished) -> None:
    try:
        rec = future.result()
    except Exception as exc:
        rec = make_record(cfg, f"failed: {type(exc).__name__}: {exc}")
    finished(cfg, rec)


def _run_on_dask(client: Any, todo: list[dict[str, Any]], finished) -> None:
    """At most one configuration per worker at a time, each pinned to the worker it was given."""
    from distributed import wait

    queue, running = list(todo), {}
    try:
        while queue or running:
            busy = {addr for addr, _ in running.values()}
            for addr in client.scheduler_info()["workers"]:
                if queue and addr not in busy:
                    cfg = queue.pop(0)
                    fut = client.submit(
                        _task, cfg, workers=[addr], allow_other_workers=False, pure=False
                    )
                    running[fut] = (addr, cfg)
            if not running:
                raise RuntimeError("the Dask cluster has no workers")
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            for fut in done:
                _, cfg = running.pop(fut)
                _collect(fut, cfg, finished)
    except BaseException:
        client.cancel(list(running))
        raise


def _run_on_executor(executor: Executor, todo: list[dict[str, Any]], finished) -> None:
    futures = {executor.submit(_task, cfg): cfg for cfg in todo}
    try:
        for fut in as_completed(futures):
            _collect(fut, futures[fut], finished)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise


def _describe(cfg: dict[str, Any]) -> str:
    threads = "" if cfg.get("thread_limit") is None else f" threads={cfg['thread_limit']}"
    return f"{cfg['backend']} {cfg['dtype']} N={cfg['n_samples']:,} H={cfg['hidden']:,}{threads}"
