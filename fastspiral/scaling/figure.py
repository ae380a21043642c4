"""The figure of a scaling sweep: time, speed-ups, throughput, memory and threads against N."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Colours of the scaling figure, fixed per (backend, dtype) so runs compare at a glance.
BACKEND_COLORS = {
    ("numba", "float64"): "tab:blue",
    ("numba", "float32"): "tab:cyan",
    ("numpy", "float64"): "tab:red",
    ("numpy", "float32"): "tab:orange",
}
#: Peak-memory rises below this are page-size noise; drawn at the floor, hollow, and said so.
MEMORY_FLOOR_MIB = 0.25


def thread_speedups(records: Any) -> dict[tuple, list[tuple[int, float]]]:
    """Per (backend, dtype, N, H): [(threads, time at 1 thread / time at that many)], where 1 ran."""
    times: dict[tuple, dict[int, float]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("seconds_per_iter") and r.get("thread_limit"):
            key = (r["backend"], r["dtype"], r["n_samples"], r["hidden"])
            times.setdefault(key, {})[int(r["thread_limit"])] = r["seconds_per_iter"]
    return {
        k: sorted((t, v[1] / s) for t, s in v.items())
        for k, v in sorted(times.items())
        if 1 in v and len(v) > 1
    }


def plot_scaling(records: Any, speedups: dict, machine: dict | None = None):
    """The panels of a sweep, from :func:`fastspiral.scaling.sweep` records.

    Time per iteration against N (log-log, bars from the fastest to the
    slowest repeat), speed-up of numba over NumPy (``speedups`` maps
    (dtype, N, H) to NumPy's time over numba's), GFLOP/s against N with the
    matmul rate of the hosts as reference lines, peak memory against N (rises
    under MEMORY_FLOOR_MIB drawn hollow at the floor), and, when the sweep had
    more than one thread count, speed-up against threads. One colour per
    (backend, dtype) in every run; a footer names the machine, versions and
    date. Returns a matplotlib Figure (for files; not a pyplot figure).
    """
    from matplotlib.figure import Figure

    machine = machine or {}
    ok = [r for r in records if r.get("status") == "ok" and r.get("seconds_per_iter")]
    by_threads = thread_speedups(ok)
    fig = Figure(figsize=(18 if by_threads else 12, 9.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3 if by_threads else 2)
    ax_t, ax_s, ax_g, ax_m = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]
    groups: dict[tuple, list] = {}
    for r in ok:
        groups.setdefault(
            (r["backend"], r["dtype"], r["hidden"], r.get("thread_limit")), []
        ).append(r)
    markers = {"numba": "o", "numpy": "s"}
    widths = sorted({h for _, _, h, _ in groups})
    lines = sorted({(h, t or 0) for _, _, h, t in groups})  # one line style per (H, threads)
    styles = ["-", "--", ":", "-."]
    floored = False
    for (backend, dtype, hidden, limit), rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rows = sorted(rows, key=lambda r: r["n_samples"])
        threads = "" if limit is None else f", {limit} thr"
        style = dict(
            marker=markers.get(backend, "^"),
            color=BACKEND_COLORS.get((backend, dtype), "k"),
            linestyle=styles[lines.index((hidden, limit or 0)) % 4],
            label=f"{backend} {dtype}, H={hidden:,}{threads}",
        )
        n = [r["n_samples"] for r in rows]
        t = np.array([r["seconds_per_iter"] for r in rows])
        lo = np.array([r.get("seconds_min") or s for r, s in zip(rows, t)])
        hi = np.array([r.get("seconds_max") or s for r, s in zip(rows, t)])
        ax_t.errorbar(n, t, yerr=[t - lo, hi - t], capsize=3, **style)
        ax_g.plot(n, [r["gflops"] for r in rows], **style)
        mem = [
            (r["n_samples"], r["peak_mem_mib"]) for r in rows if r.get("peak_mem_mib") is not None
        ]
        if mem:
            xs, ys = zip(*mem)
            ys = np.array(ys)
            low = ys < MEMORY_FLOOR_MIB
            floored |= bool(low.any())
            ax_m.plot(xs, np.maximum(ys, MEMORY_FLOOR_MIB), **style)
            if low.any():
                ax_m.scatter(
                    np.array(xs)[low],
                    np.full(low.sum(), MEMORY_FLOOR_MIB),
                    s=80,
                    facecolors="white",
                    edgecolors=style["color"],
                    zorder=3,
                )
    by_h: dict[tuple, list] = {}
    for (dtype, n, h), s in speedups.items():
        by_h.setdefault((dtype, h), []).append((n, s))
    for (dtype, h), pts in sorted(by_h.items()):
        ax_s.plot(
            *zip(*sorted(pts)),
            marker="o",
            color=BACKEND_COLORS.get(("numba", dtype), "k"),
            linestyle=["-", "--", ":", "-."][widths.index(h) % 4] if h in widths else "-",
            label=f"{dtype}, H={h:,}",
        )
    ax_s.axhline(1.0, color="grey", linewidth=0.8, label="1 = same speed as NumPy")
    hosts = machine.get("hosts") or {}
    rates = {
        host: info.get("matmul_gflops") for host, info in hosts.items() if info.get("matmul_gflops")
    }
    if not rates and machine.get("matmul_gflops"):
        rates = {machine.get("host", "this machine"): machine["matmul_gflops"]}
    for i, (host, rate) in enumerate(sorted(rates.items())):
        ax_g.axhline(
            rate,
            color="k",
            linestyle=[":", "-.", "--"][i % 3],
            label=f"NumPy 2048x2048 matmul on {host} ({rate:.0f} GFLOP/s)",
        )
    panels = [
        (ax_t, "seconds per iteration", "time per iteration (bars: fastest to slowest repeat)"),
        (ax_s, "numpy time / numba time", "speed-up of numba over NumPy"),
        (ax_g, "useful GFLOP/s", "throughput (4NDH + 6NHK FLOPs per iteration)"),
        (
            ax_m,
            "peak memory of the run (MiB)",
            f"peak memory (hollow: under {MEMORY_FLOOR_MIB} MiB, page-size noise)"
            if floored
            else "peak memory",
        ),
    ]
    if by_threads:
        ax_p = axes[0, 2]
        sizes = sorted({(n, h) for _, _, n, h in by_threads})
        for (backend, dtype, n, h), pts in by_threads.items():
            ax_p.plot(
                *zip(*pts),
                marker=markers.get(backend, "^"),
                linestyle=styles[sizes.index((n, h)) % 4],
                color=BACKEND_COLORS.get((backend, dtype), "k"),
                label=f"{backend} {dtype}, N={n:,}, H={h:,}",
            )
        ax_p.axhline(1.0, color="grey", linewidth=0.8, label="1 = same as one thread")
        ax_p.set_xlabel("threads")
        ax_p.set_ylabel("time on 1 thread / time")
        ax_p.set_title("speed-up against threads")
        ax_p.grid(True, alpha=0.3)
        ax_p.legend(fontsize=7)
        axes[1, 2].axis("off")
    for ax, ylabel, title in panels:
        ax.set_xscale("log")
        if ax is not ax_s:
            ax.set_yscale("log")
        ax.set_xlabel("N (training samples)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    footer = (
        f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores; BLAS "
        f"{machine.get('blas', '?')}; Python {machine.get('python', '?')}, NumPy "
        f"{machine.get('numpy', '?')}, Numba {machine.get('numba', '?')}, fastspiral "
        f"{machine.get('fastspiral', '?')}; {str(machine.get('started', ''))[:10]}"
    )
    fig.text(0.5, 0.002, footer, ha="center", va="bottom", fontsize=8, color="0.3")
    fig.get_layout_engine().set(h_pad=0.15)
    return fig
