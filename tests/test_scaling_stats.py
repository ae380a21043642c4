"""Scaling results without a sweep: intervals, the cost model, exponents, comparisons, warnings,
summaries and figures, from made-up records whose right answers are known exactly."""

import math

import numpy as np
import pytest

from fastspiral import scaling
from fastspiral.scaling import stats
from fastspiral.scaling.figure import choose_x, plain, plot_scaling
from fastspiral.scaling.measure import useful_flops

from .scaling_fakes import record


def test_median_interval_from_order_statistics():
    assert stats.median_interval([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0, 0.75)
    six = stats.median_interval([1, 2, 3, 4, 5, 6])
    assert (six.low, six.high, six.level) == (1, 6, pytest.approx(1 - 2 / 64, abs=1e-4))
    ten = stats.median_interval(range(10))
    # 1 - 2 P(Binomial(10, 1/2) <= 1) = 0.9785 >= 0.95; j = 2 would give 0.89
    assert (ten.low, ten.high) == (1, 8) and ten.level == pytest.approx(1 - 2 * 11 / 1024, abs=1e-4)


def test_ratio_interval_holds_one_for_identical_sets_and_not_for_twice_as_slow():
    a = [1.0, 1.1, 0.9, 1.05, 0.95]
    same = stats.ratio_interval(a, a)
    assert same.value == 1 and same.low < 1 < same.high
    twice = stats.ratio_interval(a, [2 * v for v in a])
    assert twice.value == 2 and twice.low > 1


def test_cost_model_recovers_its_coefficients():
    a, b = 20e-6, 1 / 30e9  # 20 us per iteration, 30 GFLOP/s
    flops = [useful_flops(n, h) for n in (3000, 30000, 300000) for h in (64, 100)]
    repeats = [[a + b * f] * 3 for f in flops]
    model = stats.fit_cost_model(flops, repeats)
    assert model.a.value == pytest.approx(a, rel=1e-9) and model.b.value == pytest.approx(b)
    assert model.rate.value == pytest.approx(30.0) and model.worst < 1e-9
    assert model.a.low <= a <= model.a.high and model.rate.low <= 30 <= model.rate.high
    assert stats.fit_cost_model([1.0, 1.0], [[1.0], [2.0]]) is None  # one FLOP count: no fit


def _power_law(k, threads, limit=None):
    return [
        record([1e-9 * n**k] * 3, n=n, limit=limit, threads={str(threads): 151})
        for n in (3000, 30000, 300000)
    ]


def test_one_exponent_per_thread_count():
    """Before: one slope over both thread counts (0.92 for true slopes 1.00 and 0.85)."""
    records = _power_law(1.0, 1, limit=1) + _power_law(0.85, 2, limit=2)
    exps = scaling.fit_exponents(records)
    assert set(exps) == {
        ("numba", "float64", 1, 100, "gd", None),
        ("numba", "float64", 2, 100, "gd", None),
    }
    assert exps[("numba", "float64", 1, 100, "gd", None)].value == pytest.approx(1.0)
    assert exps[("numba", "float64", 2, 100, "gd", None)].value == pytest.approx(0.85)
    models = scaling.fit_cost_models(records)
    assert set(models) == {("numba", "float64", 1, "gd", None), ("numba", "float64", 2, "gd", None)}


def test_exponent_against_h():
    records = [record([1e-9 * h] * 3, n=3000, hidden=h) for h in (64, 256, 1024)]
    exps = scaling.fit_exponents(records, against="hidden")
    ((key, k),) = exps.items()
    assert key[3] == 3000 and k.value == pytest.approx(1.0)
    assert "against H" in scaling.summary_markdown(records)


def test_noise_warnings_name_the_thread_count():
    quiet = record([1e-5, 1.01e-5, 0.99e-5], n=300)
    noisy = record([0.5e-4, 1e-4, 2e-4], n=3000, limit=2, threads={"2": 151})
    busy = record([1e-4, 0.99e-4, 1.01e-4], backend="numpy", n=300, others=0.6)
    text = scaling.summary_markdown([quiet, noisy, busy])
    warnings = [
        line
        for line in text.splitlines()
        if line.startswith("- ") and "N=" in line and ("spread" in line or "other programs" in line)
    ]
    assert warnings == [
        "- numba float64 N=3,000 H=100, 2 threads: repeats spread 150% of the median",
        "- numpy float64 N=300 H=100, 1 thread: other programs used 60% of the CPUs",
    ]
    assert "fraction_of_peak: useful GFLOP/s over NumPy's 1024x1024" in text  # the reference
    fig = plot_scaling([quiet, noisy, busy], {"cpu": "Test CPU", "cores": 2})
    assert "Test CPU" in fig._suptitle.get_text()
    (time_ax,) = [ax for ax in fig.axes if ax.get_title().startswith("time per iteration")]
    assert time_ax.containers  # error bars: the interval of the median


def test_a_record_whose_threads_switched_is_named_and_left_out_of_the_fits():
    mixed = record([1e-4] * 3, n=3000, limit=2, threads={"1": 60, "2": 91})
    steady = [record([1e-9 * n] * 3, n=n, limit=2, threads={"2": 151}) for n in (30000, 300000)]
    assert mixed["threads_used"] == 2 and mixed["thread_shares"] == {"1": 0.3974, "2": 0.6026}
    text = scaling.summary_markdown([mixed, *steady])
    assert "the thread chooser switched (40% on 1, 60% on 2); left out of the fits" in text
    ((_, k),) = scaling.fit_exponents([mixed, *steady]).items()
    assert k.value == pytest.approx(1.0)  # the two steady records alone


def test_repeats_at_the_same_moment_on_one_host_are_named():
    a = record([1e-4] * 3, n=300, worker="tcp://10.0.0.1:1")
    b = record([1e-4] * 3, n=3000, worker="tcp://10.0.0.1:2")
    for ra, rb in zip(a["runs"], b["runs"]):  # the same seconds
        rb["started"], rb["finished"] = ra["started"], "9999"
        ra["finished"] = "9999"
    lines = scaling.noise_warnings([a, b])
    assert any("were timed at the same moment on host-a" in line for line in lines), lines
    workers = {"tcp://10.0.0.1:1": 1, "tcp://10.0.0.1:2": 1}
    machine = {"hosts": {"host-a": {"reference_gflops": {"float64, 1 threads": 40.0},
                                    "workers": workers}}}  # fmt: skip
    assert "(shared by 2 workers)" in scaling.summary_markdown([a, b], machine)


def test_compare_gives_intervals_and_marks_busy_rows(tmp_path, capsys):
    from fastspiral.cli import main

    a = [record([1e-5, 0.9e-5, 1.1e-5], n=300), record([1e-4, 0.95e-4, 1.05e-4], n=3000)]
    b = [
        record([1.05e-5, 1.0e-5, 1.2e-5], n=300),
        record([2e-4, 1.9e-4, 2.1e-4], n=3000, others=0.72),
        record([1e-3] * 3, backend="numpy", n=300),
    ]
    table = scaling.compare_markdown(a, b).splitlines()
    assert len(table) == 4  # header, rule, the two configurations both hold
    assert "| 1.05 |" in table[2] and table[2].endswith("| no difference |")
    assert "| 2.00 |" in table[3] and "| slower; busy (B 72% others' CPU) |" in table[3]
    low, high = table[3].split(" | ")[-2].split("-")
    assert float(low) > 1 and float(high) >= 2
    for name, records in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        scaling.save_results(str(tmp_path / name), {}, records)
    assert main(["scale", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "| slower; busy" in capsys.readouterr().out
    assert main(["scale", "--compare", str(tmp_path / "a"), str(tmp_path / "none")]) == 2


def test_an_a_a_comparison_reports_no_difference():
    runs = [[1e-4, 1.1e-4, 0.95e-4], [3e-4, 3.2e-4, 2.9e-4]]
    a = [record(t, n=n) for t, n in zip(runs, (300, 3000))]
    b = [record(t[::-1], n=n) for t, n in zip(runs, (300, 3000))]
    rows = scaling.compare_markdown(a, b).splitlines()[2:]
    assert len(rows) == 2 and all(r.endswith("| no difference |") for r in rows)


def _legend_labels(fig):
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def test_figure_of_an_h_sweep_is_drawn_against_h_in_numeric_order():
    records = [
        record([1e-9 * h * n] * 3, n=n, hidden=h) for h in (1024, 256, 4096, 64) for n in (3000,)
    ] + [record([2e-9 * h * 3000] * 3, n=30000, hidden=h) for h in (64, 4096)]
    assert choose_x(records) == "N"  # N has two values: it comes first
    fig = plot_scaling(records, x="H")
    assert all(ax.get_xlabel() == "H (hidden units)" for ax in fig.axes)
    assert _legend_labels(fig) == [
        "numba float64, N=3,000, 1 thread",
        "numba float64, N=30,000, 1 thread",
    ]
    only_h = [r for r in records if r["n_samples"] == 3000]
    assert choose_x(only_h) == "H"
    assert not any(ax.get_legend() for ax in fig.axes)  # one legend, beside the panels
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("over each other backend" in t for t in titles)  # no backend to compare
    assert not any("against threads" in t for t in titles)


def test_legend_is_in_numeric_order():
    records = [record([1e-9 * h] * 3, n=n, hidden=h) for h in (1024, 256, 4096, 64)
               for n in (300, 3000)]  # fmt: skip
    assert _legend_labels(plot_scaling(records)) == [
        f"numba float64, H={h:,}, 1 thread" for h in (64, 256, 1024, 4096)
    ]


def test_tick_labels_are_plain():
    assert [plain(v) for v in (40, 300, 3000, 1.5e6, 0.25, 2e9)] == [
        "40", "300", "3k", "1.5M", "0.25", "2G"
    ]  # fmt: skip
    records = [record([1e-9 * n] * 3, n=n) for n in (3000, 30000, 300000)]
    fig = plot_scaling(records)
    fig.canvas.draw()
    for ax in fig.axes:
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            assert "^" not in label.get_text() and "times" not in label.get_text(), label


def test_capped_thread_counts_draw_no_speed_up():
    """Two-thread rows that ran on one thread (a worker with one) are never a speed-up."""
    one = [record([1e-9 * n] * 3, n=n, limit=1) for n in (3000, 30000)]
    capped = [record([0.5e-9 * n] * 3, n=n, limit=2, threads={"1": 151}) for n in (3000, 30000)]
    titles = [ax.get_title() for ax in plot_scaling(one + capped).axes]
    assert not any("against threads" in t for t in titles)
    real = [record([0.6e-9 * n] * 3, n=n, limit=2, threads={"2": 151}) for n in (3000, 30000)]
    fig = plot_scaling(one + real)
    (ax,) = [ax for ax in fig.axes if "against threads" in ax.get_title()]
    (line,) = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [3000, 30000]]
    np.testing.assert_allclose(line.get_ydata(), [1 / 0.6, 1 / 0.6])
    threads_fig = plot_scaling(one + real, x="threads")
    assert all(ax.get_xlabel() == "threads the iterations ran on" for ax in threads_fig.axes)


def test_speed_up_panel_only_when_another_backend_ran():
    numba = [record([1e-9 * n] * 3, n=n) for n in (3000, 30000)]
    numpy = [record([5e-9 * n] * 3, backend="numpy", n=n) for n in (3000, 30000)]
    fig = plot_scaling(numba + numpy)
    (ax,) = [ax for ax in fig.axes if "over each other backend" in ax.get_title()]
    assert ax.containers  # with the ratio's interval
    ups = scaling.speedups(numba + numpy)
    assert ups[("numpy", "float64", 3000, 100, 1, "gd", None)].value == pytest.approx(5.0)
    assert "over numpy float64, N=3,000, H=100, 1 thread: 5.00" in scaling.summary_markdown(
        numba + numpy
    )


def test_summary_prints_the_cost_model_with_intervals():
    records = [record([20e-6 + useful_flops(n, h) / 30e9] * 3, n=n, hidden=h)
               for n in (3000, 30000) for h in (64, 100)]  # fmt: skip
    text = scaling.summary_markdown(records)
    (line,) = [s for s in text.splitlines() if s.startswith("- numba float64, 1 thread: a = ")]
    assert "1/b = 30.0 [30.0, 30.0] GFLOP/s over 4 configurations" in line, line
    assert not math.isnan(
        scaling.fit_cost_models(records)[("numba", "float64", 1, "gd", None)].a.value
    )


# -- update rules and mini-batches ------------------------------------------------------------


def _lab_records():
    """gd on the full batch: 1 ns a row an iteration. adam on batches of 200: 2 us an update
    plus 1 ns a row an epoch (each update costs the same whatever N; an epoch grows with N)."""
    gd = [record([1e-9 * n] * 3, n=n) for n in (3000, 30000, 300000)]
    adam = [
        record([2e-6 + 1e-9 * n / -(-n // 200)] * 3, n=n, optimizer="adam", batch_size=200)
        for n in (3000, 30000, 300000)
    ]
    return gd, adam


def test_fits_group_by_optimizer_and_batch_size_over_epochs():
    """Before the axes a fit pooled every record of a backend, dtype and thread count."""
    gd, adam = _lab_records()
    exps = scaling.fit_exponents(gd + adam)
    assert set(exps) == {
        ("numba", "float64", 1, 100, "gd", None), ("numba", "float64", 1, 100, "adam", 200)
    }  # fmt: skip
    assert exps[("numba", "float64", 1, 100, "gd", None)].value == pytest.approx(1.0)
    # per epoch: 2 us x ceil(N / 200) + 1 ns x N, linear in N up to the rounding of ceil
    assert exps[("numba", "float64", 1, 100, "adam", 200)].value == pytest.approx(1.0, abs=0.01)
    models = scaling.fit_cost_models(gd + adam)
    assert set(models) == {
        ("numba", "float64", 1, "gd", None),
        ("numba", "float64", 1, "adam", 200),
    }
    r = adam[1]
    assert r["updates_per_epoch"] == 150
    assert r["seconds_per_epoch"] == pytest.approx(150 * r["seconds_per_iter"])
    assert r["gflops"] == pytest.approx(useful_flops(30000, 100) / r["seconds_per_epoch"] / 1e9)
    text = scaling.summary_markdown(gd + adam)
    assert "- numba float64, 1 thread, adam, batches of 200: a = " in text
    assert "- numba float64, 1 thread, gd, full batch: a = " in text  # named beside adam's
    assert "- numba float64, 1 thread: a = " in scaling.summary_markdown(gd)  # alone: as before
    assert "against N (time ~ N^k" in text and "time per epoch against N" in text
    assert "- numba float64, 1 thread, adam, batches of 200, H=100: k = 1.00" in text
    assert "| numba | float64 | 30,000 | 100 | adam | 200 | 1 | 2.2 us |" in text
    assert "| 2.2 us-2.2 us (75%) | 330.0 us |" in text  # time/update, interval, time/epoch
    assert "| numba | float64 | 30,000 | 100 | gd | full | 1 | 30.0 us |" in text


def test_speed_ups_and_comparisons_match_the_update():
    gd, adam = _lab_records()
    numpy = [record([4 * t for t in r["repeat_seconds"]], backend="numpy", n=r["n_samples"],
                    optimizer="adam", batch_size=200) for r in adam]  # fmt: skip
    ups = scaling.speedups(gd + adam + numpy)
    assert set(ups) == {("numpy", "float64", n, 100, 1, "adam", 200) for n in (3000, 30000, 300000)}
    assert all(v.value == pytest.approx(4.0) for v in ups.values())  # never against gd's times
    rows = scaling.compare_markdown(gd + adam, adam).splitlines()[2:]
    assert len(rows) == 3 and all("| adam | 200 |" in row for row in rows)
    assert all(row.endswith("| no difference |") for row in rows)


def test_the_summary_gives_the_cost_to_the_target():
    reached = record([1e-4, 2e-4, 3e-4], n=3000, target_loss=0.5, target_iters=40,
                     target_budget=100)  # fmt: skip
    assert (reached["target_iters"], reached["target_epochs"]) == (40, 40)
    assert reached["target_seconds"] == pytest.approx(40 * 2e-4)
    batches = record([1e-5] * 3, n=3000, batch_size=300, target_loss=0.5, target_iters=30,
                     target_budget=100)  # fmt: skip
    assert (batches["target_iters"], batches["target_epochs"]) == (30, 3)
    never = record([1e-4] * 3, n=30000, target_loss=0.5, target_iters=None, target_budget=100)
    assert never["target_status"] == "not reached within 100 updates"
    # two repeats of three never reached it: the median repeat did not
    mostly = record([1e-4] * 3, n=300, target_loss=0.5, target_budget=100)
    for run_, n in zip(mostly["runs"], (None, 40, None)):
        run_["target_iters"] = n
    scaling.results.summarise(mostly)
    assert mostly["target_status"] == "not reached within 100 updates"
    text = scaling.summary_markdown([reached, batches, never, record([1e-4] * 3, n=300000)])
    assert "| target loss | to target: updates | epochs | seconds | status |" in text
    assert "| 0.5 | 40 | 40 | 8.00 ms (4.00 ms-12.00 ms) | ok |" in text
    assert "| 0.5 | 30 | 3 | 300.0 us (300.0 us-300.0 us) | ok |" in text
    assert "| 0.5 | not reached within 100 updates | | | ok |" in text
    assert "| | | | | ok |" in text  # a record without a target
    assert "weighted by their rows" in text
    assert "target loss" not in scaling.summary_markdown([record([1e-4] * 3)])


def test_the_figure_draws_updates_epochs_and_the_cost_to_the_target():
    gd, adam = _lab_records()
    adam = [record(r["repeat_seconds"], n=r["n_samples"], optimizer="adam", batch_size=200,
                   target_loss=0.5, target_iters=300, target_budget=600) for r in adam]  # fmt: skip
    gd = [record(r["repeat_seconds"], n=r["n_samples"], target_loss=0.5, target_iters=None,
                 target_budget=600) for r in gd]  # fmt: skip
    fig = plot_scaling(gd + adam)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("time per update") and titles[1].startswith("time per epoch")
    (target_ax,) = [ax for ax in fig.axes if ax.get_title().startswith("cost to a result")]
    assert "loss of 0.5" in target_ax.get_title()
    line = target_ax.get_lines()[0]  # the error bars' line; only the adam records had a target
    assert target_ax.get_ylabel() == "time to the target (us)"  # 300 updates of 2.2 us
    np.testing.assert_allclose(line.get_ydata(), [300 * r["seconds_per_iter"] * 1e6 for r in adam])
    assert _legend_labels(fig) == [
        "numba float64, H=100, adam, batches of 200, 1 thread",
        "numba float64, H=100, gd, full batch, 1 thread",
    ]
    assert _legend_labels(plot_scaling(gd)) == ["numba float64, H=100, 1 thread"]
    styles = {ln.get_linestyle() for ln in fig.axes[1].get_lines() if len(ln.get_xdata()) == 3}
    assert len(styles) >= 2  # the two updates in two line styles


def test_warnings_name_the_update_beside_others():
    gd, adam = _lab_records()
    busy = record([1e-4] * 3, n=3000, others=0.6)
    lines = scaling.noise_warnings([busy, *adam])
    assert lines == ["- numba float64 N=3,000 H=100, gd, full batch, 1 thread: other programs "
                     "used 60% of the CPUs"]  # fmt: skip
    assert scaling.noise_warnings([busy]) == [
        "- numba float64 N=3,000 H=100, 1 thread: other programs used 60% of the CPUs"
    ]


def test_the_target_panel_survives_rounding():
    """Before: "'yerr' must not contain negative values" when the interval's low end, computed
    in another order, rounded above the time itself (3 updates of 37 us: 111 us)."""
    records = [record([3.7e-5] * 3, n=n, target_loss=0.5, target_iters=3, target_budget=100)
               for n in (3000, 30000)]  # fmt: skip
    fig = plot_scaling(records)
    assert any(ax.get_title().startswith("cost to a result") for ax in fig.axes)
