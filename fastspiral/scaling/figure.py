"""The figure of a scaling sweep: time, set-up, throughput against its limit, memory and speed-ups,
against N, H or threads.

One series per configuration that differs in anything but the x-axis
(backend, dtype, the other size, the threads the iterations ran on, the
optimizer and batch size), drawn in the same style in every panel: a colour
per (backend, dtype), shaded from light to dark with the other size, a line
style per (thread count, optimizer, batch size) and a marker per backend.
One legend, in numeric order, beside the panels rather than over the data; a
panel is drawn only when it has something to show."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .measure import useful_flops
from .results import (
    REFERENCE_TEXT,
    fit_cost_models,
    is_mixed,
    ok_records,
    speedups,
    update_text,
)

#: Colours of the scaling figure, fixed per (backend, dtype) so runs compare at a glance.
BACKEND_COLORS = {
    ("numba", "float64"): "tab:blue",
    ("numba", "float32"): "tab:cyan",
    ("numpy", "float64"): "tab:red",
    ("numpy", "float32"): "tab:orange",
    ("torch", "float64"): "tab:purple",
    ("torch", "float32"): "tab:pink",
    ("jax", "float64"): "tab:green",
    ("jax", "float32"): "tab:olive",
}
MARKERS = {"numba": "o", "numpy": "s", "torch": "^", "jax": "D"}
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)),
              (0, (3, 3, 1, 3))]  # fmt: skip
#: Peak-memory rises below this are page-size noise; drawn at the floor, hollow, and said so.
MEMORY_FLOOR_MIB = 0.25
#: The x-axes a figure can have: option value -> record field and axis label.
AXES = {
    "N": ("n_samples", "N (training samples)"),
    "H": ("hidden", "H (hidden units)"),
    "threads": ("threads_used", "threads the iterations ran on"),
}


def _threads(r: dict[str, Any]) -> int:
    return int(r.get("threads_used") or r.get("thread_limit") or 0)


def _asked(r: dict[str, Any]) -> int:
    """The threads a configuration asked for (its line), else those it ran on."""
    return int(r.get("thread_limit") or _threads(r))


def _fewer(r: dict[str, Any]) -> bool:
    """Whether fewer threads ran than were asked for, or the chooser switched (drawn hollow)."""
    return is_mixed(r) or _threads(r) != _asked(r)


def choose_x(records: Any) -> str:
    """The first of N, H and threads that the records hold more than one value of (N if none)."""
    ok = ok_records(records)
    for name, (field, _) in AXES.items():
        values = {_threads(r) if field == "threads_used" else r[field] for r in ok}
        if len(values) > 1:
            return name
    return "N"


def plain(value: float, _pos: Any = None) -> str:
    """A tick label without powers of ten: 300, 3k, 1.5M, 0.25."""
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:.3g}"


def _time_unit(values: list[float]) -> tuple[float, str]:
    """A scale and unit that put the median of ``values`` (seconds) at 1 or above."""
    mid = float(np.median(values)) if values else 1.0
    for scale, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "us")):
        if mid * scale >= 1:
            return scale, unit
    return 1e9, "ns"


def _shade(color: str, rank: int, count: int) -> tuple:
    """``color`` mixed with white, from 55% (rank 0) to full strength (the last rank)."""
    from matplotlib.colors import to_rgb

    strength = 1.0 if count <= 1 else 0.55 + 0.45 * rank / (count - 1)
    return tuple(1 - strength * (1 - c) for c in to_rgb(color))


class _Series:
    """The records of one line, with its style and label."""

    def __init__(self, key: tuple, rows: list[dict], style: dict, label: str):
        self.key, self.rows, self.style, self.label = key, rows, style, label


def _series(ok: list[dict], field: str) -> list[_Series]:
    """Group the records into lines along ``field``, styled and labelled, in numeric order."""
    other = {"n_samples": "hidden", "hidden": "n_samples", "threads_used": None}[field]
    varies = {
        name: len({r.get(name) for r in ok}) > 1
        for name in ("iters", "seed", "n_samples", "hidden", "step_size", "target_loss")
    }
    spell = len({_update(r) for r in ok}) > 1  # name gd and the full batch beside the others
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        key = (
            r["backend"],
            r["dtype"],
            r[other] if other else (r["n_samples"], r["hidden"]),
            0 if field == "threads_used" else _asked(r),
            *_update(r),
            r["iters"] if varies["iters"] else 0,
            r["seed"] if varies["seed"] else 0,
            r.get("step_size") if varies["step_size"] else 0,
            r.get("target_loss") if varies["target_loss"] else 0,
        )
        groups.setdefault(key, []).append(r)
    others = sorted({k[2] for k in groups})
    lines = sorted({(k[3], k[4], _batch_order(k[5])) for k in groups})
    out = []
    for key in sorted(groups, key=_series_order):
        backend, dtype, size, thr, opt, batch, iters, seed, step, target = key
        if other == "hidden":
            label = f"{backend} {dtype}, H={size:,}"
        elif other == "n_samples":
            label = f"{backend} {dtype}, N={size:,}"
        else:
            label = f"{backend} {dtype}, N={size[0]:,}, H={size[1]:,}"
        label += update_text(dict(optimizer=opt, batch_size=batch), always=spell)
        if varies["step_size"]:
            label += f", step {step:g}"
        if thr:
            label += f", {thr} thread{'s' if thr != 1 else ''}"
        if varies["iters"]:
            label += f", {iters} iters"
        if varies["seed"]:
            label += f", seed {seed}"
        if varies["target_loss"]:
            label += f", target {target:g}" if target is not None else ", no target"
        color = _shade(
            BACKEND_COLORS.get((backend, dtype), "black"), others.index(size), len(others)
        )
        style = dict(
            color=color,
            marker=MARKERS.get(backend, "v"),
            linestyle=LINESTYLES[lines.index((thr, opt, _batch_order(batch))) % len(LINESTYLES)],
        )
        rows = sorted(
            groups[key], key=lambda r: _threads(r) if field == "threads_used" else r[field]
        )
        out.append(_Series(key, rows, style, label))
    return out


def _update(r: dict[str, Any]) -> tuple[str, int | None]:
    return (r.get("optimizer") or "gd", r.get("batch_size"))


def _batch_order(batch: int | None) -> int:
    """The full batch (None) before every mini-batch size."""
    return -1 if batch is None else batch


def _series_order(key: tuple) -> tuple:
    """A series key that sorts: numbers (and the sizes' tuples) in numeric order, None first."""
    return tuple((-1, 0) if v is None else (1, v) if isinstance(v, str) else (0, v) for v in key)


def _bars(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
    """Error-bar lengths below and above ``value``, never negative: a bound equal to the value
    can round a hair past it once scaled (matplotlib refuses a negative length)
    (tests/test_scaling_stats.py::test_the_target_panel_survives_rounding)."""
    return [np.maximum(value - low, 0.0), np.maximum(high - value, 0.0)]


def _epochs(r: dict[str, Any]) -> int:
    return int(r.get("updates_per_epoch") or 1)


def _x(rows: list[dict], field: str) -> list[float]:
    return [_threads(r) if field == "threads_used" else r[field] for r in rows]


def _draw(ax, xs, ys, style, hollow=None, **extra) -> None:
    """A line with its markers, hollow where ``hollow`` (threads switched, memory under the
    floor)."""
    ax.plot(xs, ys, **style, **extra)
    if hollow is not None and any(hollow):
        pts = [(x, y) for x, y, h in zip(xs, ys, hollow) if h]
        ax.scatter(*zip(*pts), s=70, facecolors="white", edgecolors=[style["color"]], zorder=3,
                   marker=style["marker"])  # fmt: skip


def plot_scaling(records: Any, machine: dict | None = None, x: str | None = None):
    """The panels of a sweep's records (:func:`fastspiral.scaling.sweep`, :func:`load_results`).

    ``x`` is "N", "H" or "threads" (default: :func:`choose_x`). Panels, each
    only where it has data: the set-up-free time per iteration (bars: the
    interval of the median; dashed: the cost model), or with mini-batches
    the time per update and the time per epoch (the cost model on the
    latter), the set-up-free time to the target loss, the one-off set-up of a
    training, useful GFLOP/s with the same-dtype, same-threads matmul rate
    as the limit, the fraction of that limit, peak memory, numba's speed-up
    over every other backend swept, and the speed-up of more threads over
    one. One line per thread count asked for; hollow markers where fewer
    threads ran (the worker had fewer, the problem one slot, or the thread
    chooser switched), while every thread count in a fit or a thread
    speed-up is one the iterations ran on.
    Returns a matplotlib Figure (for files; not a pyplot figure).
    """
    from matplotlib import ticker
    from matplotlib.figure import Figure

    machine = machine or {}
    x = choose_x(records) if x is None else x
    if x not in AXES:
        raise ValueError(f"x must be one of {sorted(AXES)}, got {x!r}")
    field, xlabel = AXES[x]
    ok = ok_records(records)
    series = _series(ok, field)
    models = fit_cost_models(records)
    ups = speedups(records)
    by_style = {s.key[:6]: s for s in series}  # to draw a ratio in its series' style
    mini = any(r.get("batch_size") is not None for r in ok)

    panels = []  # (title, ylabel, log y, draw(ax))

    def timed_panel(per_epoch: bool, with_model: bool):
        """Set-up-free time per update or per epoch, bars the median's interval, dashed the
        cost model (which is fitted per epoch)."""
        times = [r["seconds_per_iter"] * (_epochs(r) if per_epoch else 1) for r in ok]
        scale, unit = _time_unit(times)

        def draw(ax):
            for s in series:
                xs = _x(s.rows, field)
                k = np.array([_epochs(r) if per_epoch else 1 for r in s.rows]) * scale
                t = np.array([r["seconds_per_iter"] for r in s.rows]) * k
                lo = np.array([r.get("ci_low") or r["seconds_per_iter"] for r in s.rows]) * k
                hi = np.array([r.get("ci_high") or r["seconds_per_iter"] for r in s.rows]) * k
                ax.errorbar(xs, t, yerr=_bars(t, lo, hi), capsize=3, **s.style)
                _draw(ax, xs, t, dict(s.style, linestyle="none"), [_fewer(r) for r in s.rows])
                model = models.get((s.key[0], s.key[1], _threads(s.rows[0]), s.key[4], s.key[5]))
                if (with_model and model is not None and field != "threads_used"
                        and not any(map(_fewer, s.rows))):  # fmt: skip
                    fx = np.array([useful_flops(r["n_samples"], r["hidden"]) for r in s.rows])
                    ax.plot(xs, (model.a.value + model.b.value * fx) * scale,
                            color=s.style["color"], linestyle=(0, (2, 2)), linewidth=0.9,
                            alpha=0.8)  # fmt: skip

        return draw, unit

    draw, unit = timed_panel(False, not mini)
    if mini:
        panels.append(
            (
                "time per update without set-up\n(one mini-batch, or the full batch; bars: "
                "interval of the median)",
                f"time per update ({unit})",
                True,
                draw,
            )
        )
        draw, unit = timed_panel(True, True)
        panels.append(
            (
                "time per epoch without set-up (ceil(N / batch) updates,\nthe full batch one; "
                "bars: interval of the median; dashed: cost model)",
                f"time per epoch ({unit})",
                True,
                draw,
            )
        )
    else:
        panels.append(
            (
                "time per iteration without set-up\n(bars: interval of the median; dashed: "
                "cost model)",
                f"time per iteration ({unit})",
                True,
                draw,
            )
        )

    reached = [r for r in ok if r.get("target_seconds")]
    if reached:
        t_scale, t_unit = _time_unit([r["target_seconds"] for r in reached])

        def target_panel(ax):
            for s in series:
                rows = [(xv, r) for xv, r in zip(_x(s.rows, field), s.rows)
                        if r.get("target_seconds")]  # fmt: skip
                if not rows:
                    continue
                xs = [x for x, _ in rows]
                n = np.array([r["target_iters"] for _, r in rows]) * t_scale
                t = n * np.array([r["seconds_per_iter"] for _, r in rows])
                lo = n * np.array([r.get("ci_low") or r["seconds_per_iter"] for _, r in rows])
                hi = n * np.array([r.get("ci_high") or r["seconds_per_iter"] for _, r in rows])
                ax.errorbar(xs, t, yerr=_bars(t, lo, hi), capsize=3, **s.style)

        targets = sorted({r["target_loss"] for r in reached})
        panels.append(
            (
                f"cost to a result: set-up-free time to a training loss of "
                f"{', '.join(f'{v:g}' for v in targets)}\n(mini-batches: an epoch's mean; "
                "no point: not reached)",
                f"time to the target ({t_unit})",
                True,
                target_panel,
            )
        )

    setups = [r for r in ok if (r.get("setup_seconds") or 0) > 0]
    if setups:
        s_scale, s_unit = _time_unit([r["setup_seconds"] for r in setups])

        def setup_panel(ax):
            for s in series:
                pts = [
                    (xv, r["setup_seconds"] * s_scale)
                    for xv, r in zip(_x(s.rows, field), s.rows)
                    if (r.get("setup_seconds") or 0) > 0
                ]
                if pts:
                    xs, ys = zip(*pts)
                    _draw(ax, xs, ys, s.style)

        panels.append(("one-off set-up of a training", f"set-up ({s_unit})", True, setup_panel))

    def gflops_panel(ax):
        for s in series:
            _draw(ax, _x(s.rows, field), [r["gflops"] for r in s.rows], s.style,
                  [_fewer(r) for r in s.rows])  # fmt: skip
        limits: dict[tuple, list[float]] = {}
        for r in ok:
            if r.get("matmul_gflops"):
                limits.setdefault((r["dtype"], r.get("threads_allowed") or 0), []).append(
                    r["matmul_gflops"]
                )
        if field == "threads_used":
            for dtype in sorted({d for d, _ in limits}):
                pts = sorted((t, float(np.median(v))) for (d, t), v in limits.items() if d == dtype)
                ax.plot(*zip(*pts), color="black", linestyle=(0, (5, 2)), linewidth=1)
                ax.annotate(f"{dtype} matmul", pts[-1], fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        else:
            for i, ((dtype, t), v) in enumerate(sorted(limits.items())):
                rate = float(np.median(v))
                ax.axhline(rate, color="black", linestyle=LINESTYLES[i % 4], linewidth=0.9)
                ax.annotate(  # spread along the axis, so that equal rates keep legible labels
                    f"{dtype} matmul, {t} thread{'s' if t != 1 else ''}: {rate:.0f}",
                    (0.01 + 0.33 * (i % 3), rate), xycoords=("axes fraction", "data"), fontsize=7,
                    xytext=(0, 2), textcoords="offset points", va="bottom",
                )  # fmt: skip

    panels.append(
        (
            f"useful GFLOP/s (4NDH + 6NHK per {'epoch' if mini else 'iteration'});\n"
            "black: NumPy matmul, same dtype and threads",
            "GFLOP/s",
            True,
            gflops_panel,
        )
    )

    if any(r.get("fraction_of_peak") for r in ok):

        def fraction_panel(ax):
            for s in series:
                rows = [(xv, r) for xv, r in zip(_x(s.rows, field), s.rows)
                        if r.get("fraction_of_peak") is not None]  # fmt: skip
                if rows:
                    _draw(ax, [x for x, _ in rows], [r["fraction_of_peak"] for _, r in rows],
                          s.style, [_fewer(r) for _, r in rows])  # fmt: skip
            ax.set_ylim(bottom=0)

        panels.append(
            (
                "fraction of the matmul rate\n(same dtype, same threads, same host)",
                "useful GFLOP/s / matmul GFLOP/s",
                False,
                fraction_panel,
            )
        )

    floored = any((r.get("peak_mem_mib") or 0) < MEMORY_FLOOR_MIB for r in ok
                  if r.get("peak_mem_mib") is not None)  # fmt: skip
    if any(r.get("peak_mem_mib") is not None for r in ok):

        def memory_panel(ax):
            for s in series:
                pts = [(xv, r["peak_mem_mib"]) for xv, r in zip(_x(s.rows, field), s.rows)
                       if r.get("peak_mem_mib") is not None]  # fmt: skip
                if pts:
                    xs, mib = zip(*pts)
                    ys = np.array(mib)
                    _draw(ax, xs, np.maximum(ys, MEMORY_FLOOR_MIB), s.style,
                          list(ys < MEMORY_FLOOR_MIB))  # fmt: skip

        panels.append(
            (
                f"peak memory (hollow: under {MEMORY_FLOOR_MIB} MiB, page-size noise)"
                if floored
                else "peak memory of the timed trainings",
                "MiB",
                True,
                memory_panel,
            )
        )

    if ups:

        def speedup_panel(ax):
            groups: dict[tuple, list] = {}
            for (b, d, n, h, t, opt, batch), iv in ups.items():
                size = {"n_samples": h, "hidden": n, "threads_used": (n, h)}[field]
                xv = {"n_samples": n, "hidden": h, "threads_used": t}[field]
                thr = 0 if field == "threads_used" else t
                groups.setdefault((b, d, size, thr, opt, batch), []).append((xv, iv))
            for key, pts in sorted(groups.items(), key=lambda kv: str(kv[0])):
                s = by_style.get(key)
                if s is None:
                    continue
                pts.sort(key=lambda p: p[0])
                xs = [p[0] for p in pts]
                v = np.array([p[1].value for p in pts])
                lo = np.array([p[1].low for p in pts])
                hi = np.array([p[1].high for p in pts])
                ax.errorbar(xs, v, yerr=_bars(v, lo, hi), capsize=3, **s.style)
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_ylim(bottom=0)

        panels.append(
            (
                "numba's speed-up over each other backend\n(that backend's time / numba's, "
                "in its style)",
                "speed-up",
                False,
                speedup_panel,
            )
        )

    thread_ups = _thread_speedups(ok, field)
    if thread_ups:

        def thread_panel(ax):
            for key, pts in thread_ups.items():
                s = by_style.get(key)
                if s is None:
                    continue
                ax.plot(*zip(*pts), **s.style)
            ax.axhline(1.0, color="grey", linewidth=0.8)

        panels.append(
            (
                "speed-up against threads\n(time on 1 thread / time, in the threads' style)",
                "speed-up",
                False,
                thread_panel,
            )
        )

    ncols = 2 if len(panels) <= 4 else 3
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6 * ncols + 4, 4.6 * nrows + 0.6), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    xs_all = sorted({v for r in ok for v in _x([r], field)})
    for ax, (title, ylabel, logy, draw) in zip(axes, panels):
        draw(ax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if field == "threads_used":
            ax.set_xticks(xs_all)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(plain))
        else:
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis, ticker)
        if logy:
            ax.set_yscale("log")
            _widen(ax)
            _plain_log_axis(ax.yaxis, ticker)
        else:
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(plain))
    for ax in axes[len(panels) :]:
        ax.remove()  # no empty panels
    if series:
        handles = [_legend_handle(s.style) for s in series]
        fig.legend(handles, [s.label for s in series], loc="outside right upper", fontsize=8,
                   title="threads asked for\n(hollow: fewer ran, or the\nchooser switched)",
                   title_fontsize=8)  # fmt: skip
    fig.suptitle(_footer(machine) + "\n" + REFERENCE_TEXT, fontsize=8, color="0.3")
    return fig


def _legend_handle(style: dict):
    from matplotlib.lines import Line2D

    return Line2D([], [], **style)


def _plain_log_axis(axis, ticker) -> None:
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=15))
    axis.set_major_formatter(ticker.FuncFormatter(plain))
    axis.set_minor_formatter(ticker.NullFormatter())


def _widen(ax) -> None:
    """Make a log y-axis span at least a factor of 4, so that it carries tick labels."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 4:
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid / 2, mid * 2)


def _thread_speedups(ok: list[dict], field: str) -> dict[tuple, list[tuple[float, float]]]:
    """Per series of more than one thread: [(x, time on one thread / time)], where one thread ran.

    Records are matched on everything but the thread count; mixed records
    (the chooser switched) are left out, and the counts are the threads the
    iterations ran on, never a limit.
    """

    def same(r):  # everything but the threads
        return (r["backend"], r["dtype"], r["n_samples"], r["hidden"], r["iters"], r["seed"],
                *_update(r), r.get("step_size"), r.get("target_loss"))  # fmt: skip

    single: dict[tuple, float] = {}
    for r in ok:
        if not is_mixed(r) and _threads(r) == 1:
            single[same(r)] = r["seconds_per_iter"]
    out: dict[tuple, list] = {}
    for r in ok:
        t = _threads(r)
        base = single.get(same(r))
        if is_mixed(r) or t <= 1 or base is None:
            continue
        if field == "threads_used":
            key = (r["backend"], r["dtype"], (r["n_samples"], r["hidden"]), 0, *_update(r))
            xv = t
        else:
            other = r["hidden"] if field == "n_samples" else r["n_samples"]
            key = (r["backend"], r["dtype"], other, _asked(r), *_update(r))
            xv = r[field]
        out.setdefault(key, []).append((xv, base / r["seconds_per_iter"]))
    if field == "threads_used":
        for key in out:
            out[key].append((1, 1.0))
    return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: str(kv[0]))}


def _footer(machine: dict) -> str:
    return (
        f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores; BLAS "
        f"{machine.get('blas', '?')}; Python {machine.get('python', '?')}, NumPy "
        f"{machine.get('numpy', '?')}, Numba {machine.get('numba', '?')}, fastspiral "
        f"{machine.get('fastspiral', '?')}; {str(machine.get('started', ''))[:10]}"
    )
