"""Scaling sweeps: records, files, resume, interrupt, memory skips, Dask.

The tests that start sweeps in other processes and signal them, or start a
Dask cluster (about 35 s together on an empty compile cache), are marked
slow: `.ci/run` runs them after the README's command, `pytest -m slow` here.
"""

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

import fastspiral as fs
from fastspiral import scaling
from fastspiral.cli import main
from fastspiral.scaling import driver

from .conftest import interrupt, start_interruptible

SMALL = dict(n_per_class=[20, 60], hidden=[8], iters=5, repeats=2, progress=False)


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
        assert r["seconds_per_iter"] > 0
        assert r["gflops"] == pytest.approx(
            scaling.useful_flops(r["n_samples"], 8) / r["seconds_per_iter"] / 1e9
        )
        assert r["peak_mem_mib"] is not None and r["peak_mem_mib"] >= 0
        X, y = fs.make_spiral(r["n_samples"] // 3, seed=0)
        net = fs.train_net(X, y, hidden=8, seed=0, iters=5)
        assert r["final_loss"] == pytest.approx(net.final_loss, rel=1e-9)
        assert r["accuracy"] == net.score(X, y)


def test_files_are_written_and_parse(local_run):
    out, records = local_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["records"] == records
    assert {"cpu", "cores", "python", "numpy", "numba", "matmul_gflops"} <= set(doc["machine"])
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["backend"], int(r["n_samples"]), r["status"]) for r in rows] == [
        (r["backend"], r["n_samples"], r["status"]) for r in records
    ]
    assert (out / "scaling.png").read_bytes().startswith(b"\x89PNG")
    text = scaling.summary_markdown(records, doc["machine"])
    assert "| numba | float64 | 180 | 8 |" in text and "k = " in text and "x" in text


def test_rerun_skips_finished_rows_and_force_recomputes(local_run, monkeypatch):
    out, records = local_run
    calls = []

    def fake(cfg):
        calls.append(cfg)
        return dict(
            cfg,
            seconds_per_iter=1.0,
            gflops=0.0,
            peak_mem_mib=0.0,
            final_loss=0.0,
            accuracy=0.0,
            host="x",
            worker="local",
            threads=1,
            status="ok",
        )

    monkeypatch.setattr(driver, "run_config_in_fresh_process", fake)
    again = scaling.sweep(**SMALL, out=out)
    assert calls == [] and again == records
    scaling.sweep(**dict(SMALL, hidden=[8, 9]), out=out)  # only the new H runs
    assert sorted({c["hidden"] for c in calls}) == [9] and len(calls) == 4
    calls.clear()
    scaling.sweep(**SMALL, out=out, force=True)
    assert len(calls) == 4


def test_configuration_too_big_for_memory_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(
        driver,
        "run_config_in_fresh_process",
        lambda cfg: pytest.fail("a configuration that cannot fit was run"),
    )
    need = scaling.estimate_memory("numpy", 3_000_000, 4096, "float64")
    assert need > 2 * 8 * 3_000_000 * 4096  # two (N, H) float64 arrays at least
    assert scaling.estimate_memory("numba", 3_000_000, 4096, "float64") < 256 * 2**20
    records = scaling.sweep([1_000_000], [4096], backends=["numpy"], out=tmp_path, progress=False)
    (r,) = records
    assert r["status"].startswith("skipped: needs about") and "GiB available" in r["status"]
    assert (
        json.loads((tmp_path / "results.json").read_text())["records"][0]["status"] == r["status"]
    )


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(n_per_class=[100, -1]), ValueError, "n_per_class must be >= 1"),
        (dict(hidden=[]), ValueError, "hidden must not be empty"),
        (dict(backends=["jax"]), ValueError, "unknown backend 'jax'"),
        (dict(dtypes=["float16"]), ValueError, "unknown dtype"),
        (dict(iters=0), ValueError, "iters must be >= 1"),
        (dict(executor=object()), TypeError, "executor must be"),
        (dict(out=__file__), ValueError, "exists and is not a folder"),
    ],
)
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        scaling.sweep(**dict(SMALL, **kwargs))


@pytest.mark.parametrize(
    "argv",
    [
        ["scale", "--out", "x", "--n-per-class", "-5"],
        ["scale", "--out", "x", "--backends", "jax"],
        ["scale", "--n-per-class", "10"],  # --out missing
        ["scale", "--out", "x", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1s"],
    ],
)
def test_cli_bad_arguments_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err


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
        "3",
        "--no-progress",
    ]
    proc = start_interruptible(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for the first finished rows
            if results.exists() and len(json.loads(results.read_text())["records"]) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no row was written")
    finally:
        elapsed = interrupt(proc)
    assert proc.returncode == 130 and elapsed < 5, (proc.returncode, elapsed)
    assert "interrupted" in proc.stderr.read()
    finished = json.loads(results.read_text())["records"]
    assert 2 <= len(finished) < 4 and all(r["status"] == "ok" for r in finished)
    with open(out / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(finished)
    # The rerun keeps the finished rows (same timings) and runs only the rest.
    subprocess.run(argv, check=True, capture_output=True, timeout=240)
    after = {r["n_samples"]: r for r in json.loads(results.read_text())["records"]}
    assert len(after) == 4 and all(r["status"] == "ok" for r in after.values())
    for r in finished:
        assert after[r["n_samples"]]["seconds_per_iter"] == r["seconds_per_iter"]


@pytest.mark.slow  # worker processes, signals or a cluster: see the module docstring
def test_dask_cluster_gives_the_same_rows(local_run):
    """Through a real LocalCluster: the same rows as locally, each worker running one configuration
    at a time (from the recorded start and end times) on its own threads, and peak memory that is
    the configuration's own (within 2x of the local figures, not the worker's)."""
    distributed = pytest.importorskip("distributed")  # installed by the test extra
    _, local = local_run
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = scaling.sweep(**dict(SMALL, n_per_class=[20, 60, 40, 20000]), executor=client)
        addresses = set(client.scheduler_info()["workers"])
    remote_rows = {(r["backend"], r["n_samples"]): r for r in remote}
    assert _without_timings(
        [remote_rows[(r["backend"], r["n_samples"])] for r in local]
    ) == _without_timings(local)
    by_worker = {}
    for r in remote:
        assert r["status"] == "ok"
        assert r["host"] == socket.gethostname() and r["worker"] in addresses
        assert r["threads"] == 1  # limited to the worker's one thread
        by_worker.setdefault(r["worker"], []).append((r["started"], r["finished"]))
    assert len(by_worker) == 2  # both workers were used
    for spans in by_worker.values():
        spans.sort()
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    # N=60,000: NumPy's (N, H) hidden layer and its gradient, several MiB; the worker process
    # itself holds far more (the 0.5 MiB vs 45.75 MiB the old in-worker measurement gave).
    big = scaling.sweep(**dict(SMALL, n_per_class=[20000], backends=["numpy"]))[0]
    twin = remote_rows[("numpy", 60000)]
    assert big["peak_mem_mib"] > 2 and 0.5 <= twin["peak_mem_mib"] / big["peak_mem_mib"] <= 2, (
        big["peak_mem_mib"],
        twin["peak_mem_mib"],
    )


def test_other_executors_get_every_configuration(local_run):
    """A plain concurrent.futures executor runs each configuration in a fresh process too."""
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
    """Killed during a long configuration, the sweep stops its worker and keeps the finished rows."""
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
        "--no-progress",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not workers:  # the first row written, the second running
            if results.exists() and len(json.loads(results.read_text())["records"]) == 1:
                workers = [c for c in _children(proc.pid) if _running(c)]
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
    finished = json.loads(results.read_text())["records"]
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


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "null",
        "3",
        '{"format": "fastspiral-scaling", "records": 5}',
        '{"format": "fastspiral-scaling", "records": [1]}',
        '{"format": "fastspiral-scaling", "records": [{"backend": "numpy"}]}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_results_file_of_the_wrong_shape_is_a_value_error(tmp_path, text):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ValueError, match="not a fastspiral results file"):
        scaling.load_results(tmp_path)


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
    assert socket.gethostname() in machine["hosts"]
    for r in records:  # as the sweep returned them (other tests rewrite the folder's rows)
        times = r["repeat_seconds"]
        assert len(times) == r["repeats"] == 2
        assert (
            r["seconds_min"]
            == min(times)
            <= r["seconds_per_iter"]
            <= max(times)
            == r["seconds_max"]
        )
        assert r["spread"] == pytest.approx((max(times) - min(times)) / r["seconds_per_iter"])
        assert 0 <= r["others_cpu_before"] <= 1
        assert r["started"] < r["finished"] and r["cpu"] == machine["cpu"] and r["blas"]
        assert r["threading_layer"]


def test_threads_are_an_axis(tmp_path):
    records = scaling.sweep(
        **dict(SMALL, n_per_class=[20], backends=["numba"]), threads=[1, 2], out=tmp_path
    )
    assert [r["thread_limit"] for r in records] == [1, 2]
    assert records[0]["threads"] == 1 and 1 <= records[1]["threads"] <= 2
    assert len({scaling.record_key(r) for r in records}) == 2
    assert "speed-up against threads" in [ax.get_title() for ax in _figure(records).axes]
    with pytest.raises(ValueError, match="threads must be >= 1"):
        scaling.sweep(**SMALL, threads=[0])


def _figure(records):
    from fastspiral.scaling.figure import plot_scaling

    return plot_scaling(records, scaling.speedups(records), {"cpu": "Test CPU", "cores": 2})


def _fake(backend, n, seconds, lo, hi, **extra):
    return dict(
        backend=backend,
        dtype="float64",
        n_samples=n,
        hidden=100,
        iters=50,
        repeats=3,
        thread_limit=None,
        seconds_per_iter=seconds,
        seconds_min=lo,
        seconds_max=hi,
        spread=(hi - lo) / seconds,
        gflops=1.0,
        peak_mem_mib=0.01,
        final_loss=0.7,
        accuracy=0.5,
        status="ok",
        threads=2,
        others_cpu=0.0,
        others_cpu_before=0.0,
        **extra,
    )


def test_summary_warns_about_noisy_and_busy_timings():
    quiet = _fake("numba", 300, 1e-5, 0.99e-5, 1.01e-5)
    noisy = _fake("numba", 3000, 1e-4, 0.5e-4, 2e-4)
    busy = dict(_fake("numpy", 300, 1e-4, 0.99e-4, 1.01e-4), others_cpu_before=0.6)
    text = scaling.summary_markdown([quiet, noisy, busy])
    warnings = [
        line
        for line in text.splitlines()
        if line.startswith("- ") and "N=" in line and ("spread" in line or "other programs" in line)
    ]
    assert warnings == [
        "- numba float64 N=3,000 H=100: repeats spread 150% of the median",
        "- numpy float64 N=300 H=100: other programs used 60% of the CPUs",
    ]
    fig = _figure([quiet, noisy, busy])
    assert any("Test CPU" in t.get_text() for t in fig.texts)  # the footer
    (time_ax,) = [ax for ax in fig.axes if ax.get_title().startswith("time per iteration")]
    assert time_ax.containers  # error bars from the fastest to the slowest repeat
    assert "1 = same speed as NumPy" in fig.axes[1].get_legend_handles_labels()[1]


def test_compare_marks_differences_inside_the_spread_as_noise(tmp_path, capsys):
    a = [_fake("numba", 300, 1e-5, 0.9e-5, 1.1e-5), _fake("numba", 3000, 1e-4, 0.95e-4, 1.05e-4)]
    b = [
        _fake("numba", 300, 1.05e-5, 1.0e-5, 1.2e-5),
        _fake("numba", 3000, 2e-4, 1.9e-4, 2.1e-4),
        _fake("numpy", 300, 1e-3, 1e-3, 1e-3),
    ]
    table = scaling.compare_markdown(a, b).splitlines()
    assert len(table) == 4  # header, rule, the two configurations both hold
    assert table[2].endswith("| 1.05 | noise (ranges overlap) |")
    assert table[3].endswith("| 2.00 | slower |")
    for name, records in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        scaling.save_results(str(tmp_path / name), {}, records)
    assert main(["scale", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "| 2.00 | slower |" in capsys.readouterr().out
    assert main(["scale", "--compare", str(tmp_path / "a"), str(tmp_path / "none")]) == 2


def test_to_dataframe_without_pandas(local_run, monkeypatch):
    _, records = local_run
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        scaling.to_dataframe(records)


def test_to_dataframe(local_run):
    _, records = local_run
    pd = pytest.importorskip(
        "pandas", reason="pandas is not a dependency of fastspiral or its extras"
    )
    frame = scaling.to_dataframe(records)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(records)
