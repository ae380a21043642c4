"""benchmarks/report.py: the README's table is computed, not typed."""

import json

from benchmarks import report


def _bench(group, backend, dtype, seconds, gflops, name="b"):
    return {"group": group, "name": name, "stats": {"median": seconds, "rounds": 5},
            "extra_info": {"backend": backend, "dtype": dtype, "seconds_per_iter": seconds,
                           "gflops": gflops, "peak_mem_mib": 1.5}}


def test_table_ratios_and_figure(tmp_path, capsys):
    doc = {
        "benchmarks": [
            _bench("net N=300 H=100", "numpy", "float64", 150e-6, 5.2),
            _bench("net N=300 H=100", "numba", "float64", 30e-6, 26.0),
            {"group": "machine", "name": "mm", "stats": {"median": 0.1, "rounds": 10},
             "extra_info": {"gflops": 200.0}},
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
