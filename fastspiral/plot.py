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


def save_figure(fig: Any, path: str | os.PathLike) -> str:
    """Write ``fig`` to ``path`` (format from the suffix), creating the folder; returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path)
    return path
