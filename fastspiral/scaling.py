"""Scaling experiments: time, GFLOP/s and memory of net training over N and H.

:func:`sweep` runs every combination of sizes, backends and dtypes. Locally
each configuration runs alone in a fresh process, so timings do not disturb
each other and the peak memory is the run's own; with an ``executor`` (for
example ``dask.distributed.Client(...).get_executor()``) configurations run
wherever that executor sends them. With ``out=DIR`` every finished
configuration is written to DIR/results.csv and DIR/results.json at once, and a
rerun skips what is already there.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, as_completed
from typing import Any

import numpy as np

from ._measure import (
    N_CLASSES,
    N_FEATURES,
    machine_info,
    peak_memory_since,
    reset_peak_memory,
    useful_flops,
)
from ._signals import signals_interrupt
from ._validation import DTYPES, check_int
from ._workspace import n_slots
from .backends import BACKENDS
from .model import PREDICT_ELEMENTS

# The results files and summaries live in scaling_results; the sweep's users find them here too.
from .scaling_results import (  # noqa: F401
    FIELDS,
    fit_exponents,
    load_results,
    record_key,
    save_results,
    speedups,
    summary_markdown,
)

#: Fraction of the available memory a configuration may be estimated to use.
MEMORY_HEADROOM = 0.8


def estimate_memory(backend: str, n_samples: int, hidden: int, dtype: str) -> int:
    """Bytes a training run needs beyond the interpreter: data, work arrays, prediction, parameters.

    The work arrays are the backend's own figure (:mod:`fastspiral.backends`):
    NumPy keeps the (N, H) hidden layer, the Numba kernels cache-sized tiles.
    """
    item = np.dtype(dtype).itemsize
    N, H, D, K = n_samples, hidden, N_FEATURES, N_CLASSES
    data = N * D * (8 + item) + N * 8 * 2            # X (float64 and converted), y, labels
    work = BACKENDS[backend].workspace_bytes("net", N, D, H, K, dtype)
    predict = min(N, PREDICT_ELEMENTS // max(H, 1)) * H * 8 * 2  # blocked forward pass for the accuracy
    return data + work + predict + (D * H + H * K) * 8 * 4


def available_memory() -> int:
    """Bytes the system can give a new allocation now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------

def _limit_threads_to_worker() -> int | None:
    """Inside a Dask worker: use only the threads the worker was given (Numba and BLAS)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    import numba

    n = max(1, min(worker.state.nthreads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with the distributed extra
        pass
    return n


def _worker_name() -> str:
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            return get_worker().address
        except (ImportError, ValueError):
            pass
    return "local"


def _record(config: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    """A record for ``config``: every key of FIELDS (None where not measured), ``status``, ``fields``."""
    record = {key: config.get(key) for key in FIELDS}
    record.update(fields, status=status)
    return record


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process and return its record.

    ``config`` holds backend, dtype, n_samples, hidden, iters, repeats, seed.
    A warm-up run on a tiny problem compiles (or loads) the kernels; then
    ``repeats`` trainings of ``iters`` iterations are timed and the median time
    per iteration is reported. ``peak_mem_mib`` is the peak resident memory
    during the timed runs above the resident memory just before them (data
    already made): what training itself needs.
    """
    import numba

    from .data import make_spiral
    from .train import train_net

    record = _record(config, "ok", host=socket.gethostname(), worker=_worker_name())
    try:
        limited = _limit_threads_to_worker()
        record["threads"] = limited or numba.get_num_threads()
        n_per_class = -(-config["n_samples"] // N_CLASSES)
        X, y = make_spiral(n_per_class, N_CLASSES, seed=config["seed"])
        kwargs = dict(hidden=config["hidden"], seed=config["seed"], backend=config["backend"],
                      dtype=config["dtype"])
        # Compile (or load from the cache) on a tiny problem of the same types, so
        # neither compilation nor heap blocks freed by a full-size warm-up hide
        # the memory the timed runs allocate. It must have as many slots as the
        # timed runs have more than one: one slot and several run different
        # compiled loops.
        slots = min(n_slots(X.shape[0], config["hidden"]), 2)
        n_warm = 2
        while n_warm < n_per_class and n_slots(N_CLASSES * n_warm, config["hidden"]) < slots:
            n_warm *= 2
        Xw, yw = make_spiral(min(n_warm, n_per_class), N_CLASSES, seed=config["seed"])
        train_net(Xw, yw, iters=1, **kwargs)
        mark = reset_peak_memory()
        times, net = [], None
        for _ in range(config["repeats"]):
            t0 = time.perf_counter()
            net = train_net(X, y, iters=config["iters"], **kwargs)
            times.append((time.perf_counter() - t0) / max(config["iters"], 1))
        peak = peak_memory_since(mark)
        seconds = statistics.median(times)
        record.update(
            seconds_per_iter=seconds,
            gflops=useful_flops(X.shape[0], config["hidden"]) / seconds / 1e9 if seconds > 0 else None,
            peak_mem_mib=None if peak is None else peak / 2**20,
            final_loss=net.final_loss,
            accuracy=net.score(X, y),
        )
    except Exception as exc:  # reported in the record: one bad configuration must not end a sweep
        record["status"] = f"failed: {type(exc).__name__}: {exc}"
    return record


def _exit_with_parent(parent: int) -> None:
    """End this process when ``parent`` is gone (killed with SIGKILL, its cleanup never ran)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _child(config: dict[str, Any], conn, parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    conn.send(run_config(config))
    conn.close()


def run_config_in_fresh_process(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_config` in a newly spawned process, which is killed on KeyboardInterrupt."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(config, sender, os.getpid()), daemon=True)
    proc.start()
    sender.close()
    try:
        while True:
            if receiver.poll(0.1):
                try:
                    return receiver.recv()
                except EOFError:
                    break
            if not proc.is_alive() and not receiver.poll(0):
                break
        proc.join(5)
        return _record(config, f"failed: worker process exited with code {proc.exitcode}",
                       host=socket.gethostname(), worker="local")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()


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
    executor: Executor | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Time net training for every combination of sizes, backends and dtypes.

    Parameters
    ----------
    n_per_class, hidden : sequences of int
        Spiral points per class (N = 3 * n_per_class) and hidden-layer sizes.
    backends, dtypes : sequences of str
        Names from the backend registry; "float64" and/or "float32".
    iters, repeats : int
        Iterations per timed training, and how many timed trainings (median).
    seed : int
        Seed of the data and of the initial weights.
    out : path, optional
        Folder for results.csv, results.json (rows written as each finishes)
        and scaling.png. Rows already there are reused, not rerun.
    executor : concurrent.futures.Executor, optional
        Where to run configurations (e.g. a Dask client's executor). By
        default each runs alone in a fresh local process.
    progress : bool
        Show a tqdm bar over configurations.
    force : bool
        Recompute rows that ``out`` already holds.

    Returns
    -------
    list of dict
        One record per configuration (keys in :data:`FIELDS`); ``status`` is
        "ok", "skipped: <reason>" or "failed: <reason>".
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
    iters = check_int(iters, "iters", minimum=1)
    repeats = check_int(repeats, "repeats", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")

    configs = [dict(backend=b, dtype=d, n_samples=N_CLASSES * n, hidden=h, iters=iters,
                    repeats=repeats, seed=seed)
               for h in widths for n in sizes for b in backends for d in dtypes]

    machine, previous = {}, []
    if out is not None:
        out = os.fspath(out)
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"out {out!r} exists and is not a folder")
        os.makedirs(out, exist_ok=True)
        machine, previous = load_results(out)
    if not machine:
        machine = machine_info()
    done = {} if force else {record_key(r): r for r in previous if r.get("status") == "ok"
                             or str(r.get("status", "")).startswith("skipped")}
    results: dict[tuple, dict[str, Any]] = {record_key(r): r for r in previous}

    def record_done(record: dict[str, Any]) -> None:
        results[record_key(record)] = record
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
            rec = _record(cfg, f"skipped: needs about {need / 2**30:.1f} GiB, "
                               f"{avail / 2**30:.1f} GiB available",
                          host=socket.gethostname(), worker="not run", estimated_mem_mib=need / 2**20)
            record_done(rec)
        else:
            cfg["estimated_mem_mib"] = need / 2**20
            todo.append(cfg)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="sweep", unit="config")
    # SIGTERM/SIGHUP stop the worker as Ctrl-C does; finished rows are already on disk.
    with signals_interrupt():
        try:
            if executor is None:
                for cfg in todo:
                    if bar is not None:
                        bar.set_postfix_str(_describe(cfg))
                    rec = run_config_in_fresh_process(cfg)
                    rec["estimated_mem_mib"] = cfg["estimated_mem_mib"]
                    record_done(rec)
                    if bar is not None:
                        bar.update()
            else:
                futures = {executor.submit(run_config, cfg): cfg for cfg in todo}
                try:
                    for fut in as_completed(futures):
                        cfg = futures[fut]
                        try:
                            rec = fut.result()
                        except Exception as exc:
                            rec = _record(cfg, f"failed: {type(exc).__name__}: {exc}")
                        rec["estimated_mem_mib"] = cfg["estimated_mem_mib"]
                        record_done(rec)
                        if bar is not None:
                            bar.set_postfix_str(_describe(cfg))
                            bar.update()
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        finally:
            if bar is not None:
                bar.close()


    records = [results[record_key(c)] for c in configs]
    if out is not None:
        from .plot import plot_scaling, save_figure

        save_figure(plot_scaling(records, speedups(records), machine.get("matmul_gflops")),
                    os.path.join(out, "scaling.png"))
    return records


def _describe(cfg: dict[str, Any]) -> str:
    return f"{cfg['backend']} {cfg['dtype']} N={cfg['n_samples']:,} H={cfg['hidden']:,}"
