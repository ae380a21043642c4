"""benchmarks/report.py: the README's table is computed, not typed."""

import json

from benchmarks import report


def _bench(group, backend, dtype, seconds, gflops, name="b"):
    return {
        "group": group,
        "name": name,
        "fullname": f"{group}::{backend}-{dtype}-{name}",
        "stats": {"median": seconds, "rounds": 5},
        "extra_info": {
            "backend": backend,
            "dtype": dtype,
            "seconds_per_iter": seconds,
            "gflops": gflops,
            "peak_mem_mib": 1.5,
        },
    }


def test_table_ratios_and_figure(tmp_path, capsys):
    doc = {
        "benchmarks": [
            _bench("net N=300 H=100", "numpy", "float64", 150e-6, 5.2),
            _bench("net N=300 H=100", "numba", "float64", 30e-6, 26.0),
            {
                "group": "machine",
                "name": "mm",
                "stats": {"median": 0.1, "rounds": 10},
                "extra_info": {"gflops": 200.0},
            },
        ],
        "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11"},
        "datetime": "2026-11-25T00:00:00",
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    assert report.main([str(path), "--figure", str(tmp_path / "fig.png")]) == 0
    out = capsys.readouterr().out
    assert "| 300 | 100 | numba float64 | 30.0 us | 5.0x | 26.0 | 13% | 1.5 |" in out
    assert "| 300 | 100 | numpy float64 | 150.0 us | 1.0x | 5.2 | 3% | 1.5 |" in out
    assert "Test CPU" in out and "200.0 GFLOP/s" in out
    assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")


def test_no_training_groups_is_an_error(tmp_path, capsys):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"benchmarks": []}))
    assert report.main([str(path)]) == 1
    assert "no 'net N=.. H=..' benchmark groups" in capsys.readouterr().err


def test_shapes_and_busy_sections(tmp_path, capsys):
    def shape(backend, seconds):
        b = _bench("shape D=64 K=10 N=2,000 H=100", backend, "float64", seconds, 20.0)
        b["extra_info"].update(n_features=64, n_classes=10, hidden=100)
        return b

    def busy(machine, threads, seconds):
        b = _bench("busy machine N=300 H=100", "numba", "float64", seconds, 1.0)
        b["extra_info"].update(machine=machine, threads=threads)
        return b

    doc = {
        "benchmarks": [
            _bench("net N=300 H=100", "numba", "float64", 30e-6, 26.0),
            shape("numba", 1e-3),
            shape("numpy", 2.5e-3),
            busy("quiet", "one", 30e-6),
            busy("quiet", "default", 15e-6),
            busy("busy", "one", 60e-6),
            busy("busy", "default", 66e-6),
        ],
        "machine_info": {"numba_cpu": "haswell", "blas": "openblas 0.3 (Haswell)"},
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    assert report.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| 64 | 10 | 100 | 1.00 ms | 2.50 ms | 2.50x | 20.0 |" in out
    assert "quiet: one thread 30.0 us, default 15.0 us (0.50x one thread)" in out
    assert "busy: one thread 60.0 us, default 66.0 us (1.10x one thread)" in out
    assert "code for CPU haswell" in out and "openblas 0.3 (Haswell)" in out


def test_busy_section_of_paired_rounds(tmp_path, capsys):
    """One benchmark per machine state, one-thread rounds alternated with the default's."""

    def paired(machine, one, default):
        b = _bench("busy machine N=3,000 H=100", "numba", "float64", default, 1.0)
        b["extra_info"].update(machine=machine, threads="paired", one_thread_seconds_per_iter=one)
        return b

    doc = {
        "benchmarks": [
            _bench("net N=300 H=100", "numba", "float64", 30e-6, 26.0),
            paired("quiet", 200e-6, 120e-6),
            paired("busy", 400e-6, 480e-6),
        ]
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    assert report.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "Busy machine N=3,000 H=100: quiet: one thread 200.0 us, default 120.0 us "
        "(0.60x one thread); "
        "busy: one thread 400.0 us, default 480.0 us (1.20x one thread)"
    ) in out


def test_several_runs_report_the_median_run_and_the_range(tmp_path, capsys):
    paths = []
    for i, t in enumerate([30e-6, 20e-6, 50e-6]):
        doc = {
            "benchmarks": [
                _bench("net N=300 H=100", "numba", "float64", t, 1e-3 / t),
                _bench("net N=300 H=100", "numpy", "float64", 150e-6, 5.2),
            ]
        }
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(doc))
    assert report.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "| 300 | 100 | numba float64 | 30.0 us (20.0 us-50.0 us) | 5.0x |" in out
    assert "the median of 3 runs" in out


def test_training_lab_and_mini_batch_slots(tmp_path, capsys):
    """The lab's groups and the mini-batch slots group print alone (no "net" group), each row
    against its group's baseline, the slot count the constants choose marked."""

    def fit(library, threads, seconds, accuracy):
        return {
            "group": "lab: digits, time to a result",
            "name": f"{library}-{threads}",
            "fullname": f"digits::{library}-{threads}",
            "stats": {"median": seconds, "rounds": 5},
            "extra_info": dict(
                library=library, threads=threads, test_accuracy=accuracy, n_samples=1347,
                epochs=143,
            ),
        }  # fmt: skip

    def passes(group, optimizer, batch, seconds, slots, threads, **info):
        b = _bench(group, "numba", "float64", seconds, 1.0, name=f"{optimizer}-{batch}-{slots}")
        b["extra_info"].update(
            optimizer=optimizer, batch_size=batch, slots=slots, threads=threads, **info
        )
        return b

    epoch, slots = "lab: epoch, N=30,000 H=100", "design: mini-batch slots, spiral B=200"
    doc = {
        "benchmarks": [
            fit("fastspiral", 2, 0.1, 0.975),
            fit("sklearn", 2, 0.8, 0.973),
            fit("sklearn", 1, 0.5, 0.973),
            passes(epoch, "gd", None, 1e-3, 8, 2),
            passes(epoch, "sgd", 200, 2.5e-3, 1, 1),
            passes(slots, "sgd", 200, 3e-3, 1, 1, chosen=1),
            passes(slots, "sgd", 200, 6e-3, 2, 2, chosen=1),
        ]
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    assert report.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| N | H |" not in out
    assert (
        "fastspiral on 2 thread(s) 100.00 ms (test accuracy 0.9750, 5.0x MLPClassifier's "
        "faster row)"
    ) in out
    assert "sklearn on 2 thread(s) 800.00 ms (test accuracy 0.9730, 0.6x" in out
    assert "gd on full batch 1.00 ms per iteration (8 slot(s), 2 thread(s), 1.00x gd)" in out
    assert "sgd on batches of 200 2.50 ms per epoch (1 slot(s), 1 thread(s), 2.50x gd)" in out
    assert "mini-batch slots, spiral B=200 per epoch: 1 (chosen): 3.00 ms, 2: 6.00 ms" in out
