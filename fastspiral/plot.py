"""Pictures of the data and of what the models learned (the case study's figures).

Figures are built with :class:`matplotlib.figure.Figure` directly, not pyplot,
so they render off-screen (Agg) with no display and leave the caller's
matplotlib backend and global state alone. matplotlib is imported on first
use, keeping ``import fastspiral`` fast.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._files import replace_file
from ._validation import check_X, check_y

CMAP = "Spectral"


def _new_axes(ax: Any):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100, layout="tight")
    return fig, fig.add_subplot()


def _check_2d(X: Any, y: Any):
    X = check_X(X, np.dtype(np.float64))
    if X.shape[1] != 2:
        raise ValueError(f"X must have 2 features to be drawn in the plane, got {X.shape[1]}")
    return X, check_y(y, X.shape[0])


def plot_data(X: Any, y: Any, *, ax: Any = None, title: str | None = None):
    """Scatter the 2-D points coloured by class (the case study's spiral_raw.png).

    Returns the matplotlib Figure.
    """
    X, y = _check_2d(X, y)
    fig, ax = _new_axes(ax)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=CMAP, edgecolors="k", linewidths=0.3)
    ax.set_xlim(X[:, 0].min() - 0.1, X[:, 0].max() + 0.1)
    ax.set_ylim(X[:, 1].min() - 0.1, X[:, 1].max() + 0.1)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    if title:
        ax.set_title(title)
    return fig


def plot_decision_regions(model: Any, X: Any, y: Any, *, ax: Any = None,
                          resolution: float = 0.02, title: str | None = None):
    """Colour the plane by the class ``model`` predicts, with the data on top.

    The case study's spiral_linear.png / spiral_net.png. ``model`` is anything
    with ``predict`` on (n, 2) arrays; ``resolution`` is the grid spacing.
    Returns the matplotlib Figure.
    """
    X, y = _check_2d(X, y)
    if not (np.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a positive number, got {resolution!r}")
    fig, ax = _new_axes(ax)
    x0min, x0max = X[:, 0].min() - 1, X[:, 0].max() + 1
    x1min, x1max = X[:, 1].min() - 1, X[:, 1].max() + 1
    xx, yy = np.meshgrid(np.arange(x0min, x0max, resolution), np.arange(x1min, x1max, resolution))
    zz = model.predict(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
    ax.contourf(xx, yy, zz, cmap=CMAP, alpha=0.8)
    plot_data(X, y, ax=ax)
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    if title:
        ax.set_title(title)
    return fig


def figure_format(path: str | os.PathLike) -> str:
    """The image format ``path``'s suffix names ("png" without one), or ValueError if matplotlib
    cannot write it: checked before the work whose result it would show."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in supported:
        raise ValueError(f"cannot write a figure as {os.fspath(path)!r}: matplotlib writes "
                         f"{', '.join('.' + s for s in sorted(supported))}")
    return suffix or "png"


def save_figure(fig: Any, path: str | os.PathLike) -> str:
    """Write ``fig`` to ``path`` (format from the suffix), creating the folder; returns the path.

    Written like a saved model (:mod:`fastspiral._files`): atomically,
    through symlinks, never over anything but a regular file.
    """
    path = os.fspath(path)
    fmt = figure_format(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    replace_file(path, lambda fh: fig.savefig(fh, format=fmt), "figure")
    return path


def plot_scaling(records: Any, speedups: dict, matmul_gflops: float | None = None):
    """Four panels from :func:`fastspiral.scaling.sweep` records.

    ``speedups`` maps (dtype, N, H) to NumPy's time over numba's
    (:func:`fastspiral.scaling.speedups`). Time per iteration against N
    (log-log), speed-up of numba over NumPy,
    GFLOP/s against N with the machine's matrix-product rate as a reference
    line, and peak memory against N. One line per (backend, dtype, H).
    Returns the matplotlib Figure.
    """
    from matplotlib.figure import Figure

    ok = [r for r in records if r.get("status") == "ok" and r.get("seconds_per_iter")]
    fig = Figure(figsize=(12, 9), dpi=100, layout="constrained")
    ax_t, ax_s, ax_g, ax_m = fig.subplots(2, 2).ravel()
    groups: dict[tuple, list] = {}
    for r in ok:
        groups.setdefault((r["backend"], r["dtype"], r["hidden"]), []).append(r)
    markers = {"numba": "o", "numpy": "s"}
    for (backend, dtype, hidden), rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: r["n_samples"])
        style = dict(marker=markers.get(backend, "^"), linestyle="-" if dtype == "float64" else "--",
                     label=f"{backend} {dtype}, H={hidden:,}")
        for ax, field in ((ax_t, "seconds_per_iter"), (ax_g, "gflops"), (ax_m, "peak_mem_mib")):
            # log axes: points without a positive value (e.g. no peak-memory reading) are left out
            pts = [(r["n_samples"], r[field]) for r in rows if (r.get(field) or 0) > 0]
            if pts:
                ax.plot(*zip(*pts), **style)
    by_h: dict[tuple, list] = {}
    for (dtype, n, h), s in speedups.items():
        by_h.setdefault((dtype, h), []).append((n, s))
    for (dtype, h), pts in sorted(by_h.items()):
        ax_s.plot(*zip(*sorted(pts)), marker="o", label=f"{dtype}, H={h:,}")
    if by_h:
        ax_s.axhline(1.0, color="grey", linewidth=0.8)
    if matmul_gflops:
        ax_g.axhline(matmul_gflops, color="k", linestyle=":",
                     label=f"NumPy 2048x2048 matmul ({matmul_gflops:.0f} GFLOP/s)")
    for ax, ylabel, title in [
        (ax_t, "seconds per iteration", "time per iteration"),
        (ax_s, "numpy time / numba time", "speed-up of numba over NumPy"),
        (ax_g, "useful GFLOP/s", "throughput (4NDH + 6NHK FLOPs per iteration)"),
        (ax_m, "peak memory of the run (MiB)", "peak memory"),
    ]:
        ax.set_xscale("log")
        if ax is not ax_s:
            ax.set_yscale("log")
        ax.set_xlabel("N (training samples)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig
