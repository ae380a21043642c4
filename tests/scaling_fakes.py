"""Made-up repeats and records for the scaling tests: exact numbers, nothing timed."""

import uuid

from fastspiral.scaling.results import add_run, new_record
from fastspiral.scaling.run import now


def fake_run(config, seconds=1e-4, threads=None, host="host-a", worker="local", **extra):
    """An ok repeat of ``config`` as run_task returns it, with a time of ``seconds``."""
    iters = config.get("iters", 50)
    used = threads or {str(config.get("thread_limit") or 1): 3 * iters + 1}
    run = dict(
        run_id=uuid.uuid4().hex,
        repeat=config.get("repeat", 0),
        sequence=config.get("sequence", 0),
        host=host,
        worker=worker,
        status="ok",
        started=now(),
        finished=now(),
        threads_allowed=config.get("thread_limit") or 2,
        seconds_per_iter=seconds,
        setup_seconds=1e-3,
        wall_seconds=1e-3 + iters * seconds,
        matmul_gflops=40.0,
        others_cpu_before=0.0,
        others_cpu=0.0,
        peak_mem_mib=1.0,
        final_loss=0.7,
        accuracy=0.5,
        thread_iterations=used,
        threading_layer="omp",
    )
    run.update(extra)
    return run


def config(backend="numba", n=300, hidden=100, limit=None, dtype="float64", iters=50, seed=0,
           repeats=3, optimizer="gd", batch_size=None, step_size=1.0,
           target_loss=None):  # fmt: skip
    return dict(backend=backend, dtype=dtype, n_samples=n, hidden=hidden, iters=iters, seed=seed,
                thread_limit=limit, repeats=repeats, optimizer=optimizer, batch_size=batch_size,
                step_size=step_size, target_loss=target_loss)  # fmt: skip


def record(times, backend="numba", n=300, hidden=100, limit=None, dtype="float64", threads=None,
           others=0.0, host="host-a", worker="local", optimizer="gd", batch_size=None,
           step_size=1.0, target_loss=None, **run_extra):  # fmt: skip
    """A record whose repeats took ``times`` (seconds per iteration, i.e. per update)."""
    cfg = config(backend, n, hidden, limit, dtype, repeats=len(times), optimizer=optimizer,
                 batch_size=batch_size, step_size=step_size, target_loss=target_loss)  # fmt: skip
    rec = new_record(cfg, {"cpu": "Test CPU", "cores": 2, "blas": "test"})
    for i, t in enumerate(times):
        add_run(rec, fake_run(dict(cfg, repeat=i, sequence=i), t, threads, host, worker,
                              others_cpu=others, **run_extra))  # fmt: skip
    return rec
