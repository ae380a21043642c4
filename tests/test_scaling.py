"""Scaling sweeps: records, files, resume, interrupt, memory skips, Dask.

The tests that start sweeps in other processes and signal them, or start a
Dask cluster (about 35 s together on an empty compile cache), are marked
slow: `.ci/run` runs them after the README's command, `pytest -m slow` here.
So are the sweeps that run real worker processes a second way (another
executor, two sweeps at once, threads as an axis, a peer library): about
20 s more, while one real sweep (``local_run``) stays in the README's command.
"""

import csv
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import fastspiral as fs
from fastspiral import scaling
from fastspiral.cli import main
from fastspiral.scaling import driver, run

from .conftest import interrupt, start_interruptible
from .scaling_fakes import fake_run, record

SMALL = dict(
    n_per_class=[20, 60],
    hidden=[8],
    iters=5,
    repeats=2,
    progress=False,
    dtypes=["float64"],
    threads=None,
)


@pytest.fixture(autouse=True)
def _figures_built_not_encoded(request, monkeypatch):
    """Every sweep with ``out`` writes DIR/scaling.png, and encoding it is 1.5 of the 2 s it takes
    (about a third of this module's time). The figure is still built, so a record it cannot draw
    still fails here; tests marked ``png`` (and the module's fixtures) write the real file."""
    if request.node.get_closest_marker("png"):
        return
    from fastspiral.scaling.figure import plot_scaling

    def built(out, records, machine, x=None):
        plot_scaling(records, machine, x=x)
        return os.path.join(out, "scaling.png")

    monkeypatch.setattr(driver, "write_figure", built)


def _without_timings(records):
    drop = {
        "seconds_per_iter",
        "gflops",
        "peak_mem_mib",
        "worker",
        "threads",
        "host",
        "seconds_min",
        "seconds_max",
        "spread",
        "others_cpu",
        "others_cpu_before",
        "repeat_seconds",
        "started",
        "finished",
        "blas",
        "threading_layer",
        "runs",
        "ci_low",
        "ci_high",
        "setup_seconds",
        "wall_seconds_per_iter",
        "matmul_gflops",
        "fraction_of_peak",
        "threads_allowed",
        "thread_shares",
        "threads_used",
        "seconds_per_epoch",
        "target_seconds",
    }
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, scaling.sweep(**SMALL, out=out)


def test_records_hold_measurements(local_run):
    out, records = local_run
    assert [(r["backend"], r["n_samples"]) for r in records] == [
        ("numba", 60),
        ("numpy", 60),
        ("numba", 180),
        ("numpy", 180),
    ]
    for r in records:
        assert set(scaling.FIELDS) <= set(r)
        assert r["status"] == "ok" and r["iters"] == 5 and r["host"] == socket.gethostname()
        assert r["seconds_per_iter"] > 0 and r["seed"] == 0
        assert r["gflops"] == pytest.approx(
            scaling.useful_flops(r["n_samples"], 8) / r["seconds_per_iter"] / 1e9
        )
        assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / r["matmul_gflops"])
        assert r["peak_mem_mib"] is not None and r["peak_mem_mib"] >= 0
        X, y = fs.make_spiral(r["n_samples"] // 3, seed=0)
        net = fs.train_net(X, y, hidden=8, seed=0, iters=5)
        assert r["final_loss"] == pytest.approx(net.final_loss, rel=1e-9)
        assert r["accuracy"] == net.score(X, y)
        # Before: "worker": null, and "threads": 2 for these one-slot problems on one thread
        assert r["worker"] == "local"
        assert r["threads_allowed"] == run.thread_capacity()[0]
        if r["backend"] == "numba":
            assert r["threads_used"] == 1 and r["thread_shares"] == {"1": 1.0}
        else:  # BLAS's threads cannot be watched: what it was allowed
            assert r["threads_used"] == r["threads_allowed"]


def test_files_are_written_and_parse(local_run):
    out, records = local_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["records"] == records and doc["version"] == 2
    assert {"cpu", "cores", "python", "numpy", "numba", "matmul_gflops"} <= set(doc["machine"])
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["backend"], int(r["n_samples"]), r["status"]) for r in rows] == [
        (r["backend"], r["n_samples"], r["status"]) for r in records
    ]
    assert rows[0]["thread_shares"] == "1:1.000" and rows[0]["seed"] == "0"  # numba
    assert (out / "scaling.png").read_bytes().startswith(b"\x89PNG")
    text = scaling.summary_markdown(records, doc["machine"])
    assert "| numba | float64 | 180 | 8 |" in text and "k = " in text and "x" in text


def _fake_task(calls, seconds=1e-4):
    def fake(cfg):
        calls.append(cfg)
        return fake_run(cfg, seconds * (1 + cfg["n_samples"] / 1e3), host=socket.gethostname())

    return fake


def test_rerun_skips_finished_rows_and_force_recomputes(local_run, monkeypatch):
    out, records = local_run
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    again = scaling.sweep(**SMALL, out=out)
    assert calls == [] and again == records
    scaling.sweep(**dict(SMALL, hidden=[8, 9]), out=out)  # only the new H runs, every repeat
    assert sorted({c["hidden"] for c in calls}) == [9] and len(calls) == 4 * 2
    calls.clear()
    scaling.sweep(**dict(SMALL, repeats=3), out=out)  # one more repeat each, nothing else
    assert len(calls) == 4 and {c["repeat"] for c in calls} == {2}
    calls.clear()
    fewer = scaling.sweep(**dict(SMALL, repeats=1), out=out)  # complete already: nothing runs
    assert calls == [] and all(r["status"] == "ok" and len(r["runs"]) == 3 for r in fewer)
    forced = scaling.sweep(**SMALL, out=out, force=True)
    assert len(calls) == 4 * 2
    assert all(len(r["runs"]) == 2 for r in forced)  # the old repeats were dropped


def test_repeats_are_interleaved_in_a_recorded_order(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    scaling.sweep(**dict(SMALL, repeats=3, hidden=[8, 16], backends=["numba"]), out=tmp_path)
    keys = [scaling.record_key(c) for c in calls]
    # Round r holds every configuration's repeat r, in an order of its own.
    rounds = [keys[i * 4 : (i + 1) * 4] for i in range(3)]
    assert all(sorted(r) == sorted(rounds[0]) for r in rounds) and len(set(rounds[0])) == 4
    assert [c["sequence"] for c in calls] == list(range(12))
    machine, records = scaling.load_results(tmp_path)
    (entry,) = machine["sweeps"]
    assert isinstance(entry["order_seed"], int)
    rng = np.random.default_rng(entry["order_seed"])  # the order replays from the seed
    first = [scaling.record_key(r) for r in records]
    assert [first[i] for i in rng.permutation(4)] == rounds[0]
    for r in records:
        assert [run["repeat"] for run in r["runs"]] == [0, 1, 2]


def test_the_seed_identifies_a_configuration(tmp_path, monkeypatch):
    """Before: a rerun with another seed returned the first seed's rows."""
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    scaling.sweep(**SMALL, out=tmp_path)
    calls.clear()
    again = scaling.sweep(**SMALL, out=tmp_path, seed=7)
    assert len(calls) == 4 * 2 and all(c["seed"] == 7 for c in calls)
    assert all(r["seed"] == 7 for r in again)
    _, records = scaling.load_results(tmp_path)
    assert sorted({r["seed"] for r in records}) == [0, 7] and len(records) == 8
    machine, _ = scaling.load_results(tmp_path)  # the latest sweep's machine, both sweeps listed
    assert len(machine["sweeps"]) == 2 and machine["started"] == machine["sweeps"][-1]["started"]


def test_configuration_too_big_for_memory_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(
        driver,
        "run_task_in_fresh_process",
        lambda cfg: pytest.fail("a configuration that cannot fit was run"),
    )
    need = scaling.estimate_memory("numpy", 3_000_000, 4096, "float64")
    assert need > 2 * 8 * 3_000_000 * 4096  # two (N, H) float64 arrays at least
    assert scaling.estimate_memory("numba", 3_000_000, 4096, "float64") < 256 * 2**20
    records = scaling.sweep(
        [1_000_000], [4096], backends=["numpy"], out=tmp_path, progress=False, **_ONE
    )
    (r,) = records
    assert r["status"].startswith("skipped: needs about") and "GiB available" in r["status"]
    assert (
        json.loads((tmp_path / "results.json").read_text())["records"][0]["status"] == r["status"]
    )


_ONE = dict(dtypes=["float64"], threads=None)


def test_a_workspace_too_big_to_allocate_is_skipped_without_allocating(tmp_path, monkeypatch):
    """--hidden 1000000000: the estimate is arithmetic (it once allocated the workspace)."""
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("it was run"))
    tracemalloc.start()
    try:
        for backend in ("numba", "numpy"):
            assert scaling.estimate_memory(backend, 30, 10**9, "float64") > 2**33
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert main(["scale", "--hidden", "1000000000", "--n-per-class", "10", "--dtypes", "float64",
                 "--threads", "1", "--out", str(tmp_path), "--no-progress"]) == 0  # fmt: skip
    _, records = scaling.load_results(tmp_path)
    assert len(records) == 2 and all(r["status"].startswith("skipped: needs") for r in records)


def test_a_thread_count_above_the_machine_is_skipped_never_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    capacity = run.thread_capacity()[0]
    records = scaling.sweep(**dict(SMALL, threads=[1, capacity + 1]), out=tmp_path)
    skipped = [r for r in records if r["thread_limit"] == capacity + 1]
    assert len(skipped) == 4 and all(c["thread_limit"] == 1 for c in calls)
    assert all(r["status"].startswith(f"skipped: {capacity + 1} threads asked") for r in skipped)
    assert "never timed on fewer threads" in skipped[0]["status"]


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(n_per_class=[100, -1]), ValueError, "n_per_class must be >= 1"),
        (dict(hidden=[]), ValueError, "hidden must not be empty"),
        (dict(backends=["cuda"]), ValueError, "unknown backend 'cuda'"),
        (dict(dtypes=["float16"]), ValueError, "unknown dtype"),
        (dict(iters=0), ValueError, "iters must be >= 1"),
        (dict(executor=object()), TypeError, "executor must be"),
        (dict(out=__file__), ValueError, "exists and is not a folder"),
        (dict(n_per_class=None, n_samples=[100]), ValueError, "multiples of 3"),
        (dict(n_samples=[300]), ValueError, "n_per_class or n_samples, not both"),
        (dict(target_loss=0.0), ValueError, "target_loss must be > 0"),
        (dict(target_loss=float("nan")), ValueError, "target_loss must be finite"),
        (dict(target_loss="low"), TypeError, "target_loss must be a real number"),
        (dict(optimizers=["adamw"]), ValueError, "optimizers: optimizer must be one of"),
        (dict(optimizers=[3]), TypeError, "optimizers: optimizer must be a name or an object"),
        (dict(optimizers=[]), ValueError, "optimizers must not be empty"),
        (dict(batch_sizes=[0]), ValueError, "batch_sizes must be >= 1"),
        (dict(batch_sizes=[None, 2.5]), TypeError, "batch_sizes must be an integer"),
        (dict(step_size=0), ValueError, "step_size must be > 0"),
        (dict(x="loss"), ValueError, "x must be one of"),
    ],
)
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        scaling.sweep(**dict(SMALL, **kwargs))


def test_n_gives_the_total_rows(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    records = scaling.sweep(**dict(SMALL, n_per_class=None), n_samples=[300, 3000])
    assert [r["n_samples"] for r in records] == [300, 300, 3000, 3000]
    calls.clear()
    argv = ["scale", "--n", "300", "--hidden", "8", "--dtypes", "float64", "--threads", "1",
            "--repeats", "1", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert {c["n_samples"] for c in calls} == {300}


def test_scale_drives_the_update_axes(tmp_path, monkeypatch, capsys):
    """``fastspiral scale`` passes its update rules, batch sizes ("full" is the whole batch), step
    size and target loss to the sweep: every (rule, batch) pair runs, with the same two numbers."""
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    argv = ["scale", "--n", "300", "--hidden", "8", "--dtypes", "float64", "--threads", "1",
            "--repeats", "1", "--no-progress", "--out", str(tmp_path), "--backends", "numba",
            "--optimizers", "gd", "adam", "--batch-sizes", "full", "30",
            "--step-size", "0.1", "--target-loss", "0.9"]  # fmt: skip
    assert main(argv) == 0
    assert sorted((c["optimizer"], c["batch_size"] or 0) for c in calls) == [
        ("adam", 0), ("adam", 30), ("gd", 0), ("gd", 30)
    ]  # fmt: skip
    assert {(c["step_size"], c["target_loss"]) for c in calls} == {(0.1, 0.9)}
    assert main(argv[:-2] + ["--target-loss", "0"]) == 2
    assert "--target-loss: expected a number > 0" in capsys.readouterr().err


def test_a_missing_peer_is_refused_before_any_work(monkeypatch):
    import dataclasses

    missing = dataclasses.replace(scaling.SWEEP_BACKENDS["numpy"], module="no_such_module_here")
    monkeypatch.setitem(scaling.SWEEP_BACKENDS, "numpy", missing)
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("ran"))
    with pytest.raises(ValueError, match="needs no_such_module_here, which is not installed"):
        scaling.sweep(**SMALL)


@pytest.mark.parametrize(
    "argv",
    [
        ["scale", "--out", "x", "--n-per-class", "-5"],
        ["scale", "--out", "x", "--backends", "cuda"],
        ["scale", "--n-per-class", "10"],  # --out missing
        ["scale", "--out", "x", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1s"],
        ["scale", "--out", "x", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "soon"],
        ["scale", "--out", "x", "--connect-timeout", "-1s"],
        ["scale", "--out", "x", "--connect-timeout", "0"],
        ["scale", "--out", "x", "--n", "100"],
        ["scale", "--out", "x", "--n", "300", "--n-per-class", "100"],
        ["scale", "--out", ""],
        ["scale", "--out", "x", "--target-loss", "nan"],
        ["scale", "--out", "x", "--x", "loss"],
        ["scale", "--plot", "x", "--compare", "a", "b"],
        ["scale", "--plot", "/nonexistent/folder"],
    ],
)
def test_cli_bad_arguments_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("ran"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert not os.path.exists(tmp_path / "x")  # nothing made before the error


def test_a_read_only_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Before: found when the first configuration's row was written. Run as root here, so the
    folder's permissions would not stop a write: os.access is made to say what it would say."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: False if os.fspath(p) == str(out) else real_access(p, mode),
    )
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("ran"))
    assert main(["scale", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[0], err


def test_every_default_holds_and_is_documented():
    """The defaults the help states are the sweep's (the README's: float64 and float32, 1 and 2
    threads)."""
    import inspect

    from fastspiral.cli import build_parser

    defaults = inspect.signature(scaling.sweep).parameters
    assert defaults["dtypes"].default == ("float64", "float32")
    assert defaults["threads"].default == (1, 2)
    args = build_parser().parse_args(["scale", "--out", "x"])
    assert args.dtypes == ["float64", "float32"] and args.threads == [1, 2]
    assert (args.iters, args.repeats) == (defaults["iters"].default, defaults["repeats"].default)


@pytest.mark.slow  # worker processes, signals or a cluster: see the module docstring
def test_ctrl_c_keeps_finished_rows_and_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "fastspiral",
        "scale",
        "--out",
        str(out),
        "--backends",
        "numpy",
        "--dtypes",
        "float64",
        "--threads",
        "1",
        "--n-per-class",
        "10",
        "20",
        "20000",
        "25000",
        "--hidden",
        "100",
        "--iters",
        "20",
        "--repeats",
        "2",
        "--no-progress",
    ]
    proc = start_interruptible(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"

    def runs():
        if not results.exists():
            return []
        return [run for r in json.loads(results.read_text())["records"] for run in r["runs"]]

    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for the first finished repeats
            if len(runs()) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no repeat was written")
    finally:
        elapsed = interrupt(proc)
    assert proc.returncode == 130 and elapsed < 5, (proc.returncode, elapsed)
    stderr = proc.stderr.read()
    assert "interrupted" in stderr and "To resume, run the same command again" in stderr
    kept = runs()
    assert 2 <= len(kept) < 8
    finished = json.loads(results.read_text())["records"]
    with open(out / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(finished) == 4
    if any(r["status"] == "ok" for r in finished):
        assert "| numpy | float64 |" in proc.stdout.read()  # the summary of the rows kept
    # The rerun keeps every finished repeat and runs only the rest.
    subprocess.run(argv, check=True, capture_output=True, timeout=240)
    after = json.loads(results.read_text())["records"]
    assert len(after) == 4 and all(r["status"] == "ok" for r in after)
    assert all(len(r["runs"]) == 2 for r in after)
    held = {run["run_id"]: run for r in after for run in r["runs"]}
    for run_ in kept:
        assert held[run_["run_id"]] == run_


@pytest.mark.slow  # worker processes, signals or a cluster: see the module docstring
def test_dask_cluster_gives_the_same_rows(local_run):
    """Through a real LocalCluster of two one-thread workers: the same rows as locally; the
    two-thread configurations recorded as skipped (a worker has one thread), so no speed-up is
    drawn; one repeat at a time on the host (from the recorded start and end times); each
    configuration's repeats on one host; the host's matmul rate and both workers in hosts; peak
    memory that is the configuration's own (within 2x of the local figures, not the worker's)."""
    distributed = pytest.importorskip("distributed")  # installed by the test extra
    _, local = local_run
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = scaling.sweep(
            **dict(SMALL, n_per_class=[20, 60, 40, 20000], threads=[1, 2]), executor=client
        )
        addresses = set(client.scheduler_info()["workers"])
    capped = [r for r in remote if r["thread_limit"] == 2]
    remote = [r for r in remote if r["thread_limit"] == 1]
    assert capped and all(
        r["status"].startswith("skipped: 2 threads asked, the Dask worker has") for r in capped
    )
    remote_rows = {(r["backend"], r["n_samples"]): r for r in remote}
    assert _without_timings(
        [dict(remote_rows[(r["backend"], r["n_samples"])], thread_limit=None) for r in local]
    ) == _without_timings(local)
    spans, workers = [], set()
    for r in remote:
        assert r["status"] == "ok"
        assert r["host"] == socket.gethostname() and r["threads_used"] == 1
        for run_ in r["runs"]:
            assert run_["worker"] in addresses and run_["threads_allowed"] == 1
            workers.add(run_["worker"])
            spans.append((run_["started"], run_["finished"]))
    assert len(workers) == 2  # both workers were used
    spans.sort()
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    from fastspiral.scaling.figure import plot_scaling

    titles = [ax.get_title() for ax in plot_scaling(remote + capped).axes]
    assert not any("against threads" in t for t in titles)
    # N=60,000: NumPy's (N, H) hidden layer and its gradient, several MiB; the worker process
    # itself holds far more (the 0.5 MiB vs 45.75 MiB the old in-worker measurement gave).
    big = scaling.sweep(**dict(SMALL, n_per_class=[20000], backends=["numpy"]))[0]
    twin = remote_rows[("numpy", 60000)]
    assert big["peak_mem_mib"] > 2 and 0.5 <= twin["peak_mem_mib"] / big["peak_mem_mib"] <= 2, (
        big["peak_mem_mib"],
        twin["peak_mem_mib"],
    )


@pytest.mark.slow  # real worker processes again, another way: see the module docstring
def test_other_executors_get_every_configuration(local_run):
    """A plain concurrent.futures executor runs each repeat in a fresh process too."""
    from concurrent.futures import ThreadPoolExecutor

    _, local = local_run
    with ThreadPoolExecutor(1) as pool:
        remote = scaling.sweep(**SMALL, executor=pool)
    assert _without_timings(remote) == _without_timings(local)


def _children(pid):
    """PIDs of the running children of ``pid`` (Linux's /proc)."""
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as fh:
        return [int(c) for c in fh.read().split()]


def _is_task(pid):
    """Whether ``pid`` is a sweep's task process (not, say, py-cpuinfo's probe)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"child_main" in fh.read()
    except FileNotFoundError:
        return False


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # worker processes, signals or a cluster: see the module docstring
@pytest.mark.skipif(
    not os.path.exists("/proc/self/task"), reason="finds the worker through Linux's /proc"
)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_worker(tmp_path, sig):
    """Killed during a long configuration, the sweep stops its worker and keeps the finished
    rows."""
    sig = getattr(signal, sig)
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "fastspiral",
        "scale",
        "--out",
        str(out),
        "--backends",
        "numpy",
        "--n-per-class",
        "10",
        "200000",
        "--hidden",
        "100",
        "--iters",
        "1000",
        "--repeats",
        "1",
        "--dtypes",
        "float64",
        "--threads",
        "1",
        "--no-progress",
    ]
    # The small configuration first, alone: a sweep's order is random.
    small = [a for a in argv if a != "200000"]
    subprocess.run(small, check=True, capture_output=True, timeout=240)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not workers:  # the long configuration running
            workers = [c for c in _children(proc.pid) if _running(c) and _is_task(c)]
            time.sleep(0.05)
        assert workers, "the long configuration never started"
        time.sleep(1.0)  # well inside its training
    finally:
        interrupt(proc, sig=sig)
    assert proc.returncode == 128 + sig, (proc.returncode, proc.stderr.read())
    assert f"terminated by {signal.Signals(sig).name}" in proc.stderr.read()
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(w) for w in workers):
        time.sleep(0.05)
    assert not any(_running(w) for w in workers), "a worker outlived the sweep"
    finished = [r for r in json.loads(results.read_text())["records"] if r["runs"]]
    assert [r["n_samples"] for r in finished] == [30] and finished[0]["status"] == "ok"


@pytest.mark.slow  # worker processes, signals or a cluster: see the module docstring
def test_a_worker_ends_when_its_sweep_is_killed_outright():
    """SIGKILL runs no cleanup at all; the worker notices that its parent is gone and exits."""
    code = (
        "import sys, threading, time; from fastspiral.scaling import run as _sweep_run; "
        "threading.Thread(target=_sweep_run._exit_with_parent, args=(int(sys.argv[1]),)).start(); "
        "time.sleep(60)"
    )
    # Parent: a shell that starts the worker in the background (telling it the shell's PID, as
    # the sweep does), prints the worker's PID and waits.
    parent = subprocess.Popen(
        ["sh", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} $$ & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = int(parent.stdout.readline())
    assert _running(worker)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _running(worker):
        time.sleep(0.05)
    assert not _running(worker), "the worker outlived its parent"


_V2 = '"format": "fastspiral-scaling", "version": 2'


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "null",
        "3",
        "{" + _V2 + ', "records": 5}',
        "{" + _V2 + ', "records": [1]}',
        "{" + _V2 + ', "records": [{"backend": "numpy"}]}',
        '{"format": "fastspiral-scaling", "version": 1, "records": []}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_results_file_of_the_wrong_shape_is_a_value_error(tmp_path, text):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ValueError, match="not a fastspiral results file"):
        scaling.load_results(tmp_path)


def _saved(tmp_path, records):
    scaling.save_results(tmp_path, {}, records)
    return json.loads((tmp_path / "results.json").read_text())


def test_duplicated_records_are_refused_and_none_is_dropped(tmp_path, monkeypatch):
    """Before: an ok record followed by a copy marked failed was skipped as done, reported as
    failed, and the ok record deleted at the next write."""
    ok = record([1e-4] * 3)
    copy = dict(ok, status="failed: by hand")
    _saved(tmp_path, [ok, copy])
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ValueError, match="records 0 and 1 are the same configuration"):
        scaling.load_results(tmp_path)
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("ran"))
    with pytest.raises(ValueError, match="same configuration"):
        scaling.sweep(n_per_class=[100], hidden=[100], backends=["numba"], progress=False,
                      out=tmp_path, **_ONE)  # fmt: skip
    assert (tmp_path / "results.json").read_text() == before


@pytest.mark.parametrize(
    "field,value,msg",
    [
        ("n_samples", "300", "n_samples must be an integer >= 1, got str '300'"),
        ("n_samples", -3, "n_samples must be an integer >= 1"),
        ("seconds_per_iter", "fast", "seconds_per_iter must be a finite number > 0 or null"),
        ("seconds_per_iter", [1e-4], "seconds_per_iter must be a finite number > 0"),
        ("peak_mem_mib", -1.0, "peak_mem_mib must be a finite number >= 0"),
        ("repeats", None, "repeats must be an integer >= 1, got NoneType"),
        ("hidden", True, "hidden must be an integer >= 1, got bool"),
        ("others_cpu", 3.0, "others_cpu must be a number from 0 to 1"),
        ("dtype", "float16", "dtype must be one of"),
        ("thread_shares", {"two": 1.0}, "thread_shares has a key 'two', not a thread count"),
        ("runs", "none", "runs must be a list"),
        ("seed", None, "seed must be an integer >= 0, got NoneType"),
    ],
)
def test_every_field_of_a_loaded_record_is_checked_before_any_work(
    tmp_path, monkeypatch, field, value, msg
):
    """Before: strings, nulls, negatives and lists in numeric fields failed after the whole sweep
    had run, with messages such as "'<' not supported"."""
    rec = dict(record([1e-4] * 3), **{field: value})
    _saved(tmp_path, [rec])
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("ran"))
    with pytest.raises(
        ValueError, match=f"record 0: {msg}".replace("(", r"\(").replace(")", r"\)")
    ):
        scaling.sweep(n_per_class=[10], hidden=[8], progress=False, out=tmp_path, **_ONE)


def test_a_run_field_is_checked_too(tmp_path):
    rec = record([1e-4] * 3)
    rec["runs"][1]["seconds_per_iter"] = None
    _saved(tmp_path, [rec])
    with pytest.raises(ValueError, match="record 0, run 1: seconds_per_iter must be"):
        scaling.load_results(tmp_path)


_CONCURRENT = """
import socket, sys, time
from fastspiral import scaling
from fastspiral.scaling import driver
from tests.scaling_fakes import fake_run

def task(cfg):
    time.sleep(0.05)  # long enough for the two sweeps' writes to interleave
    return fake_run(cfg, host=socket.gethostname())

driver.run_task_in_fresh_process = task
scaling.sweep(n_per_class=[int(sys.argv[2]), int(sys.argv[2]) + 1, int(sys.argv[2]) + 2],
              hidden=[8], backends=["numba"], dtypes=["float64"], threads=None, iters=5,
              repeats=4, progress=False, out=sys.argv[1])
"""


@pytest.mark.slow  # real worker processes again, another way: see the module docstring
def test_two_sweeps_into_one_folder_keep_every_record(tmp_path):
    """Before: both printed their 3 rows and results.json held 3, not 6 (the last writer won)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(tmp_path), str(n)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for n in (10, 20)
    ]
    for proc in procs:
        assert proc.wait(timeout=240) == 0, proc.stderr.read()
    _, records = scaling.load_results(tmp_path)
    assert sorted(r["n_samples"] for r in records) == [30, 33, 36, 60, 63, 66]
    assert all(r["status"] == "ok" and len(r["runs"]) == 4 for r in records)
    machine, _ = scaling.load_results(tmp_path)
    assert len(machine["sweeps"]) == 2


def test_merging_pools_the_repeats_of_one_configuration(tmp_path):
    a, b = record([1e-4] * 2), record([2e-4] * 2)
    scaling.merge_results(tmp_path, {}, [a])
    (merged,) = scaling.merge_results(tmp_path, {}, [b])
    assert len(merged["runs"]) == 4 and merged["status"] == "ok"
    assert sorted(merged["repeat_seconds"]) == [1e-4, 1e-4, 2e-4, 2e-4]


def test_records_keep_every_repeat_and_where_they_ran(local_run):
    out, records = local_run
    doc = json.loads((out / "results.json").read_text())
    machine = doc["machine"]
    assert machine["fastspiral"] == fs.__version__ and machine["started"] <= machine["finished"]
    assert (
        machine["cpu"]
        and machine["cores"] >= 1
        and "blas" in machine
        and machine["matmul_gflops"] > 0
    )
    host = machine["hosts"][socket.gethostname()]
    assert host["workers"] == {"local": run.thread_capacity()[0]}
    n = run.thread_capacity()[0]
    label = f"float64, {n} thread{'s' if n != 1 else ''}"
    assert host["reference_gflops"][label] > 0
    assert host["worker_reference_gflops"]["local"][label] == host["reference_gflops"][label]
    for r in records:  # as the sweep returned them (other tests rewrite the folder's rows)
        times = r["repeat_seconds"]
        assert len(times) == r["repeats"] == len(r["runs"]) == 2
        assert (
            r["seconds_min"]
            == min(times)
            <= r["seconds_per_iter"]
            <= max(times)
            == r["seconds_max"]
        )
        assert (r["ci_low"], r["ci_high"], r["ci_level"]) == (min(times), max(times), 0.5)
        assert r["spread"] == pytest.approx((max(times) - min(times)) / r["seconds_per_iter"])
        assert 0 <= r["others_cpu_before"] <= 1
        assert r["started"] < r["finished"] and r["cpu"] == machine["cpu"] and r["blas"]
        assert r["threading_layer"]
        for run_ in r["runs"]:
            # the set-up-free time is the two loops' difference; the set-up the rest of the wall
            short, long_ = run_["loop_seconds"]
            assert run_["seconds_per_iter"] == pytest.approx((long_ - short) / 5)
            assert run_["setup_seconds"] == pytest.approx(
                run_["wall_seconds"] - 5 * run_["seconds_per_iter"]
            )
            assert sorted(run_["order"]) == [5, 10]


def test_the_set_up_free_time_is_the_loops_marginal_cost(monkeypatch):
    """A backend whose loop takes exactly 1 ms + 20 us per iteration: 20 us, set-up apart."""
    import dataclasses

    from fastspiral.scaling.peers import Trained

    def train(X, y, *, hidden, seed, dtype, iters, max_iters=None, **update):
        return Trained(1e-3 + 20e-6 * iters, 0.5, fs.NetModel(
            {"W1": np.zeros((2, hidden)), "b1": np.zeros(hidden), "W2": np.zeros((hidden, 3)),
             "b2": np.zeros(3)}, [0.5]))  # fmt: skip

    fake = dataclasses.replace(scaling.SWEEP_BACKENDS["numpy"], train=train)
    monkeypatch.setitem(scaling.SWEEP_BACKENDS, "numpy", fake)
    result = run.run_task(dict(backend="numpy", dtype="float64", n_samples=60, hidden=8,
                               iters=50, seed=0, thread_limit=1))  # fmt: skip
    assert result["status"] == "ok"
    assert result["seconds_per_iter"] == pytest.approx(20e-6)
    assert result["setup_seconds"] == pytest.approx(result["wall_seconds"] - 50 * 20e-6)
    assert result["thread_iterations"] == {"1": 151}


def test_threads_used_counts_what_ran(monkeypatch):
    """The chooser's segments are counted: forced to one thread, a two-thread configuration
    records one; a one-slot problem records one whatever it was allowed."""
    from fastspiral.numba_backend import threads

    if run.thread_capacity()[0] < 2:
        pytest.skip("needs two CPUs")
    cfg = dict(backend="numba", dtype="float64", n_samples=3000, hidden=64, iters=10, seed=0,
               thread_limit=2)  # fmt: skip
    monkeypatch.setattr(threads.ThreadChooser, "next", lambda self, n: (1, n, False))
    one = run.run_task(cfg)
    assert one["thread_iterations"] == {"1": 30 * one["attempts"] + 1}
    monkeypatch.setattr(threads.ThreadChooser, "next", lambda self, n: (2, min(n, 3), False))
    two = run.run_task(cfg)
    assert two["thread_iterations"] == {"2": 30 * two["attempts"] + 1}
    one_slot = run.run_task(dict(cfg, n_samples=60, hidden=8))
    assert one_slot["thread_iterations"] == {"1": 30 * one_slot["attempts"] + 1}
    assert threads.ThreadChooser.record.__name__ == "record"  # the wrapper is gone


@pytest.mark.png
def test_plot_redraws_every_record_of_a_folder(tmp_path, capsys):
    """`fastspiral scale --plot DIR`: every record, not only a last sweep's new ones."""
    records = [record([1e-9 * n * h] * 3, n=n, hidden=h) for n in (300, 3000) for h in (64, 256)]
    scaling.merge_results(tmp_path, {"cpu": "Test CPU"}, records)
    assert main(["scale", "--plot", str(tmp_path), "--x", "H"]) == 0
    out = capsys.readouterr().out
    assert out.count("| numba | float64 |") == 4 and "against H" in out
    assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")
    assert main(["scale", "--plot", str(tmp_path / "none")]) == 2


def test_an_interrupt_prints_the_rows_kept_and_how_to_resume(tmp_path, monkeypatch, capsys):
    calls, stopped = [], []
    fake = _fake_task(calls)

    def task(cfg):
        if len(calls) == 6 and not stopped:
            stopped.append(True)
            raise KeyboardInterrupt
        return fake(cfg)

    monkeypatch.setattr(driver, "run_task_in_fresh_process", task)
    argv = ["scale", "--out", str(tmp_path), "--n-per-class", "10", "20", "--hidden", "8",
            "--dtypes", "float64", "--threads", "1", "--repeats", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert out.count("| ok |") == 2  # round 1 done, round 2 two of four: two rows complete
    assert "2 finished configuration(s), 2 partial one(s)" in err
    assert "To resume, run the same command again: fastspiral scale --out" in err
    assert main(argv) == 0 and len(calls) == 6 + 2


@pytest.mark.slow  # real worker processes again, another way: see the module docstring
def test_threads_are_an_axis(tmp_path):
    records = scaling.sweep(
        **dict(SMALL, n_per_class=[20], backends=["numba"], threads=[1, 2]), out=tmp_path
    )
    assert [r["thread_limit"] for r in records] == [1, 2]
    assert records[0]["threads_used"] == 1 and 1 <= records[1]["threads_used"] <= 2
    assert len({scaling.record_key(r) for r in records}) == 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        scaling.sweep(**dict(SMALL, threads=[0]))


def test_to_dataframe_without_pandas(local_run, monkeypatch):
    _, records = local_run
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        scaling.to_dataframe(records)


def test_to_dataframe(local_run):
    _, records = local_run
    pd = pytest.importorskip("pandas", reason="pandas is in the analysis extra only")
    frame = scaling.to_dataframe(records)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(records)


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_peers_train_the_same_model(library):
    """A peer trains what fastspiral trains, so a figure sets like beside like."""
    pytest.importorskip(library)
    X, y = fs.make_spiral(100, 3, seed=0)
    peer = scaling.SWEEP_BACKENDS[library]
    for dtype, rtol in (("float64", 1e-9), ("float32", 1e-4)):
        kwargs = dict(hidden=100, seed=0, dtype=dtype, iters=50, max_iters=100)
        peer.warm_up(X, y, **kwargs)
        trained = peer.train(X, y, **kwargs)
        net = fs.train_net(X, y, hidden=100, seed=0, iters=50, dtype=dtype)
        np.testing.assert_allclose(trained.model.loss_history, net.loss_history, rtol=rtol)
        assert trained.loop_seconds > 0 and trained.final_loss == trained.model.loss_history[-1]


@pytest.mark.slow  # real worker processes again, another way: see the module docstring
@pytest.mark.parametrize("library", ["torch", "jax"])
def test_a_peer_in_a_sweep(library, tmp_path):
    pytest.importorskip(library)
    records = scaling.sweep(
        **dict(SMALL, backends=["numba", library], repeats=1, threads=[1]), out=tmp_path
    )
    assert all(r["status"] == "ok" for r in records), [r["status"] for r in records]
    peers = [r for r in records if r["backend"] == library]
    numba = [r for r in records if r["backend"] == "numba"]
    for p, n in zip(peers, numba):
        assert p["final_loss"] == pytest.approx(n["final_loss"], rel=1e-9)
    assert any(k[0] == library for k in scaling.speedups(records))


# -- update rules, mini-batches and the cost to a result (issues 25 and 27) -------------------

LAB = dict(SMALL, n_per_class=[20], backends=["numba"], repeats=1, step_size=0.05)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    from fastspiral.optim import Adam

    out = tmp_path_factory.mktemp("lab")
    records = scaling.sweep(
        **LAB, optimizers=["gd", Adam(beta1=0.8)], batch_sizes=[None, 16], target_loss=1.05,
        out=out,
    )  # fmt: skip
    return out, records


def test_optimizers_and_batch_sizes_are_axes_of_the_records(lab_run):
    """Each (optimizer, batch size) is a configuration of its own, timed per update and per
    epoch, over whole epochs; its loss is what train_net gives for the same updates."""
    from fastspiral.optim import Adam

    out, records = lab_run
    assert [(r["optimizer"], r["batch_size"]) for r in records] == [
        ("gd", None), ("gd", 16), ("adam(beta1=0.8)", None), ("adam(beta1=0.8)", 16)
    ]  # fmt: skip
    assert len({scaling.record_key(r) for r in records}) == 4
    X, y = fs.make_spiral(20, seed=0)
    for r in records:
        assert r["status"] == "ok" and r["step_size"] == 0.05, r["status"]
        per_epoch = 1 if r["batch_size"] is None else 4  # ceil(60 / 16)
        assert r["updates_per_epoch"] == per_epoch
        assert r["seconds_per_epoch"] == pytest.approx(per_epoch * r["seconds_per_iter"])
        assert r["gflops"] == pytest.approx(
            scaling.useful_flops(60, 8) / r["seconds_per_epoch"] / 1e9
        )
        (run_,) = r["runs"]
        # 5 updates asked; with batches of 16, the fewest whole epochs holding them: 2 (8)
        assert run_["timed_iters"] == (5 if r["batch_size"] is None else 8)
        assert sorted(run_["order"]) == [run_["timed_iters"], 2 * run_["timed_iters"]]
        rule = "gd" if r["optimizer"] == "gd" else Adam(beta1=0.8)
        net = fs.train_net(X, y, hidden=8, seed=0, iters=2 * run_["timed_iters"], step_size=0.05,
                           optimizer=rule, batch_size=r["batch_size"])  # fmt: skip
        history = net.loss_history
        short = history[: run_["timed_iters"]]
        if r["batch_size"] is None:
            assert r["final_loss"] == pytest.approx(short[-1], rel=1e-9)
        else:  # the last epoch's mean, each batch's loss weighted by its rows (16, 16, 16, 12)
            want = (16 * short[4:7].sum() + 12 * short[7]) / 60
            assert r["final_loss"] == pytest.approx(want, rel=1e-9)
        assert run_["target_budget"] == 2 * run_["timed_iters"]
        assert run_["target_iters"] == run.updates_to_loss(history, 1.05, 60, r["batch_size"])
    reached = [r for r in records if r["target_status"] == "reached"]
    assert {r["optimizer"] for r in reached} == {"adam(beta1=0.8)"}  # gd at 0.05 is slower
    for r in reached:
        assert r["target_seconds"] == pytest.approx(r["target_iters"] * r["seconds_per_iter"])
        assert r["target_epochs"] == r["target_iters"] // r["updates_per_epoch"]
    for r in records:
        if r not in reached:
            budget = 2 * r["runs"][0]["timed_iters"]
            assert r["target_status"] == f"not reached within {budget} updates"
            assert r["target_iters"] is None and r["target_seconds"] is None
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["optimizer"], row["batch_size"]) for row in rows] == [
        ("gd", ""), ("gd", "16"), ("adam(beta1=0.8)", ""), ("adam(beta1=0.8)", "16")
    ]  # fmt: skip
    text = scaling.summary_markdown(records)
    assert "| time/update | interval | time/epoch |" in text
    assert "| adam(beta1=0.8), step 0.05 | 16 | 1 |" in text
    assert "| 1.05 | not reached within 10 updates | | |" in text


def test_updates_to_a_loss_full_batch_and_by_epochs():
    """Full batch: the iteration whose loss first reached the target. Mini-batches: whole
    epochs, each judged by its row-weighted mean batch loss, never by one lucky batch."""
    history = [1.0, 0.8, 0.6, 0.5, 0.4]
    assert run.updates_to_loss(history, 0.5, 300, None) == 4
    assert run.updates_to_loss(history, 0.1, 300, None) is None
    # N=5 in batches of 2: rows 2, 2, 1 per epoch
    np.testing.assert_allclose(
        run.epoch_losses([0.55, 0.55, 0.25, 0.1, 0.1, 0.1, 9.0], 5, 2), [0.49, 0.1]
    )  # (2 * 0.55 + 2 * 0.55 + 0.25) / 5; the last, partial epoch left out
    losses = [1.0, 0.2, 1.0, 0.6, 0.6, 0.1]  # a batch at 0.2 in the first epoch (mean 0.68)
    assert run.updates_to_loss(losses, 0.5, 5, 2) == 6  # the second epoch's mean: 0.5
    assert run.updates_to_loss(losses, 0.3, 5, 2) is None
    assert run.training_loss(losses, 5, 2) == pytest.approx(0.5)


def _lab_backend(monkeypatch, calls, lab=True):
    """numpy's entry replaced by a backend whose loop takes 1 ms + 20 us an update and whose
    loss falls by 0.05 an update from 1."""
    import dataclasses

    from fastspiral.scaling.peers import Trained

    def train(X, y, *, hidden, seed, dtype, iters, max_iters=None, **update):
        calls.append(dict(update, iters=iters))
        model = fs.NetModel({"W1": np.zeros((2, hidden)), "b1": np.zeros(hidden),
                             "W2": np.zeros((hidden, 3)), "b2": np.zeros(3)},
                            1 - 0.05 * np.arange(iters))  # fmt: skip
        return Trained(1e-3 + 20e-6 * iters, model.final_loss, model)

    fake = dataclasses.replace(
        scaling.SWEEP_BACKENDS["numpy"], train=train, warm_up=lambda *a, **k: None, lab=lab
    )
    monkeypatch.setitem(scaling.SWEEP_BACKENDS, "numpy", fake)


def test_a_task_times_whole_epochs_and_finds_the_target_by_epochs(monkeypatch):
    from fastspiral.optim import Adam

    calls = []
    _lab_backend(monkeypatch, calls)
    cfg = dict(backend="numpy", dtype="float64", n_samples=60, hidden=8, iters=5, seed=0,
               thread_limit=1, optimizer="adam", optimizer_config=Adam().config(), batch_size=16,
               step_size=0.01, target_loss=0.55)  # fmt: skip
    result = run.run_task(cfg)
    assert result["status"] == "ok", result["status"]
    timed = [c for c in calls if c["iters"] in (8, 16)]
    assert timed and all(
        c["optimizer"] == Adam() and c["batch_size"] == 16 and c["step_size"] == 0.01 for c in timed
    )
    assert result["timed_iters"] == 8 and result["seconds_per_iter"] == pytest.approx(20e-6)
    # Epoch means of 1 - 0.05 i over rows (16, 16, 16, 12): 0.93, 0.73, 0.53, 0.33. The first at
    # or below 0.55 is the third epoch: 12 updates (a batch reached 0.55 at update 10).
    assert (result["target_iters"], result["target_budget"]) == (12, 16)
    assert result["final_loss"] == pytest.approx(0.73)  # the shorter training's last epoch
    rec = scaling.results.new_record(dict(cfg, repeats=1))
    scaling.results.add_run(rec, result)
    assert (rec["target_iters"], rec["target_epochs"], rec["target_status"]) == (12, 3, "reached")
    assert rec["target_seconds"] == pytest.approx(12 * 20e-6)
    assert rec["seconds_per_epoch"] == pytest.approx(4 * 20e-6)
    calls.clear()  # a configuration naming its rule without its hyperparameters gets that rule
    del cfg["optimizer_config"]
    assert run.run_task(cfg)["status"] == "ok" and calls[-1]["optimizer"] == Adam()


def test_peers_skip_what_they_cannot_train(tmp_path, monkeypatch):
    """A backend without the training lab (the peers) times full-batch gd at step size 1 only;
    its other configurations are recorded as skipped, never run, with the reason."""
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    _lab_backend(monkeypatch, [], lab=False)
    records = scaling.sweep(
        **dict(LAB, backends=["numba", "numpy"], step_size=1.0), optimizers=["gd", "adam"],
        batch_sizes=[None, 16], out=tmp_path,
    )  # fmt: skip
    numpy = [r for r in records if r["backend"] == "numpy"]
    assert [r["status"] for r in numpy if r["status"] == "ok"] == ["ok"]
    (ok,) = [r for r in numpy if r["status"] == "ok"]
    assert (ok["optimizer"], ok["batch_size"]) == ("gd", None)
    skipped = [r["status"] for r in numpy if r is not ok]
    assert len(skipped) == 3 and all(
        s.startswith("skipped: numpy times only the case study's full-batch gd at step size 1")
        for s in skipped
    )
    assert "not adam on batches of 16" in skipped[-1]
    ran = {(c["backend"], c["optimizer"], c["batch_size"]) for c in calls}
    assert ("numpy", "gd", None) in ran and len(ran) == 5  # numba's four and numpy's one
    # run_task refuses it too (a task built by hand), and another step size as well
    cfg = dict(backend="numpy", dtype="float64", n_samples=60, hidden=8, iters=5, seed=0,
               thread_limit=1, step_size=0.5)  # fmt: skip
    assert run.run_task(cfg)["status"].endswith("not gd at step size 0.5")


def test_a_batch_larger_than_n_is_skipped(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    records = scaling.sweep(**dict(LAB, n_per_class=[10, 20]), batch_sizes=[45], out=tmp_path)
    assert [r["status"] for r in records] == ["skipped: batch_size 45 is more than the 30 rows",
                                              "ok"]  # fmt: skip
    assert {c["n_samples"] for c in calls} == {60}


def test_the_update_and_the_target_identify_a_configuration(tmp_path, monkeypatch):
    """A rerun with another optimizer, batch size, step size or target runs those alone; "adam"
    and Adam() are one configuration; the task gets the rule's hyperparameters."""
    from fastspiral.optim import Adam

    calls = []
    monkeypatch.setattr(driver, "run_task_in_fresh_process", _fake_task(calls))
    scaling.sweep(**LAB, out=tmp_path)
    assert len(calls) == 1 and calls[0]["optimizer_config"] == {"name": "gd"}
    calls.clear()
    records = scaling.sweep(**LAB, optimizers=["gd", "adam", Adam()], out=tmp_path)
    assert [c["optimizer"] for c in calls] == ["adam"] and len(records) == 2
    calls.clear()
    scaling.sweep(**LAB, optimizers=[Adam(beta1=0.8)], batch_sizes=[None, 30], out=tmp_path)
    assert sorted((c["optimizer"], c["batch_size"] or 0) for c in calls) == [
        ("adam(beta1=0.8)", 0), ("adam(beta1=0.8)", 30)
    ]  # fmt: skip
    assert calls[0]["optimizer_config"]["beta1"] == 0.8
    calls.clear()
    scaling.sweep(**dict(LAB, step_size=0.5), out=tmp_path)
    scaling.sweep(**LAB, target_loss=0.9, out=tmp_path)
    assert [(c["step_size"], c["target_loss"]) for c in calls] == [(0.5, None), (0.05, 0.9)]
    _, on_disk = scaling.load_results(tmp_path)
    assert len(on_disk) == 6


def test_a_record_from_before_the_axes_is_full_batch_gd(tmp_path, monkeypatch):
    """Records written before the update axes have none of their fields: they load as the case
    study's full-batch gd at step size 1, and a sweep of that configuration reuses them."""
    rec = record([1e-4] * 3, n=60, hidden=8)
    rec["iters"] = 5
    for name in ("optimizer", "batch_size", "step_size", "target_loss", "updates_per_epoch",
                 "seconds_per_epoch"):  # fmt: skip
        del rec[name]
    _saved(tmp_path, [rec])
    (loaded,) = scaling.load_results(tmp_path)[1]
    assert (loaded["optimizer"], loaded["batch_size"], loaded["step_size"]) == ("gd", None, 1.0)
    assert loaded["seconds_per_epoch"] == loaded["seconds_per_iter"]
    monkeypatch.setattr(driver, "run_task_in_fresh_process", lambda cfg: pytest.fail("ran"))
    again = scaling.sweep(**dict(LAB, step_size=1.0, threads=None), out=tmp_path)
    assert again[0]["repeats_done"] == 3


def test_threads_of_a_mini_batch_follow_its_slots():
    """A mini-batch has slots of its own: 16 rows at H=8 have one, so a segment the chooser
    gave two threads worked on one."""
    import collections

    counts = collections.Counter({2: 30})
    assert run._thread_iterations("numba", counts, 31, 2, 3000, 100) == {"1": 1, "2": 30}
    assert run._thread_iterations("numba", counts, 31, 2, 3000, 100, 16) == {"1": 31}
