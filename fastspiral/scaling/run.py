"""One configuration of a scaling sweep: timed in a fresh process, with its spread and provenance.

:func:`run_config` times ``repeats`` trainings in the calling process and
keeps every repeat; :func:`run_config_in_fresh_process` runs it in a new
Python process (a subprocess, not multiprocessing, so that it also works from
a Dask worker, whose processes are daemons and may not fork children of
their own), so that the peak memory is the configuration's own wherever it
runs. The child exits by itself if its parent disappears.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

from ..numba_backend.workspace import n_slots
from .measure import (
    N_CLASSES,
    CpuShare,
    host_info,
    others_cpu_now,
    peak_memory_since,
    reset_peak_memory,
    useful_flops,
)
from .results import FIELDS

#: Marks the child's one line of output that carries its record.
_RECORD = "fastspiral-record "


def now() -> str:
    """The time as an ISO 8601 UTC string with milliseconds (records' ``started``/``finished``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_record(config: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    """A record for ``config``: every key of FIELDS (None where not measured), ``status``, ``fields``."""
    record = {key: config.get(key) for key in FIELDS}
    record.update(fields, status=status)
    return record


def _limit_threads(config: dict[str, Any]) -> int:
    """Numba's and BLAS's threads for this configuration: its ``thread_limit``, at most the
    threads of the Dask worker it came through (``worker_threads``); returns Numba's count."""
    import numba
    from threadpoolctl import threadpool_limits

    limits = [n for n in (config.get("thread_limit"), config.get("worker_threads")) if n]
    if limits:
        n = max(1, min(min(limits), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(n)
        threadpool_limits(n)
    return numba.get_num_threads()


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process and return its record.

    ``config`` holds backend, dtype, n_samples, hidden, iters, repeats, seed
    and optionally thread_limit. A warm-up run on a tiny problem compiles
    (or loads) the kernels; then ``repeats`` trainings of ``iters``
    iterations are timed. The record keeps every repeat's time per iteration
    (``repeat_seconds``), their median (``seconds_per_iter``), min, max and
    ``spread`` ((max - min) / median), ``others_cpu_before``: the share of
    the machine's CPUs busy in a 0.25 s look just before timing, and
    ``others_cpu``: the share other processes took meanwhile (None when the
    timed runs were too short to tell). ``peak_mem_mib`` is
    the peak resident memory during the timed runs above the resident memory
    just before them (data already made): what training itself needs.
    """
    import numba

    from ..data import make_spiral
    from ..numba_backend import threads as numba_threads
    from ..train import train_net

    host = config.get("host_info") or host_info(measure_matmul=True)
    record = make_record(
        config,
        "ok",
        host=socket.gethostname(),
        cpu=host.get("cpu"),
        cores=host.get("cores"),
        blas=host.get("blas"),
        started=now(),
    )
    record.setdefault("worker", config.get("worker") or "local")
    try:
        record["threads"] = _limit_threads(config)
        n_per_class = -(-config["n_samples"] // N_CLASSES)
        X, y = make_spiral(n_per_class, N_CLASSES, seed=config["seed"])
        kwargs = dict(
            hidden=config["hidden"],
            seed=config["seed"],
            backend=config["backend"],
            dtype=config["dtype"],
        )
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
        record["others_cpu_before"] = round(others_cpu_now(), 3)  # is the machine quiet enough?
        mark = reset_peak_memory()
        times, net = [], None
        with CpuShare() as share:
            for _ in range(config["repeats"]):
                t0 = time.perf_counter()
                net = train_net(X, y, iters=config["iters"], **kwargs)
                times.append((time.perf_counter() - t0) / max(config["iters"], 1))
        peak = peak_memory_since(mark)
        seconds = statistics.median(times)
        record.update(
            seconds_per_iter=seconds,
            repeat_seconds=times,
            seconds_min=min(times),
            seconds_max=max(times),
            spread=(max(times) - min(times)) / seconds if seconds > 0 else None,
            others_cpu=None if share.others is None else round(share.others, 3),
            gflops=useful_flops(X.shape[0], config["hidden"]) / seconds / 1e9
            if seconds > 0
            else None,
            peak_mem_mib=None if peak is None else peak / 2**20,
            final_loss=net.final_loss,
            accuracy=net.score(X, y),
            threading_layer=numba_threads.threading_layer()
            or f"none ({numba.config.THREADING_LAYER})",
        )
    except Exception as exc:
        record["status"] = f"failed: {type(exc).__name__}: {exc}"
    record["finished"] = now()
    return record


def _exit_with_parent(parent: int) -> None:
    """End this process when ``parent`` is gone (killed with SIGKILL, its cleanup never ran)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def child_main() -> None:
    """The fresh process: a config as JSON on stdin, its record as one marked JSON line on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    threading.Thread(target=_exit_with_parent, args=(int(sys.argv[1]),), daemon=True).start()
    record = run_config(json.loads(sys.stdin.read()))
    print(_RECORD + json.dumps(record), flush=True)


def run_config_in_fresh_process(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_config` in a new Python process, killed if this one is interrupted.

    Called in a Dask worker, the configuration gets the worker's threads and
    the record the worker's address.
    """
    config = dict(config)
    try:
        from distributed import get_worker

        worker = get_worker()
        config.update(worker=worker.address, worker_threads=worker.state.nthreads)
    except (ImportError, ValueError):
        pass
    code = "from fastspiral.scaling.run import child_main; child_main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(json.dumps(config))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in reversed(out.splitlines()):
        if line.startswith(_RECORD):
            return json.loads(line[len(_RECORD) :])
    detail = err.strip().splitlines()[-1] if err.strip() else "no output"
    return make_record(
        config,
        f"failed: worker process exited with code {proc.returncode}: {detail}",
        host=socket.gethostname(),
        worker=config.get("worker", "local"),
    )
