"""Watching training: parameter snapshots, and the decision boundary evolving as a GIF or MP4.

:func:`record_snapshots` trains through the trainers' ``callback`` (so the
loop stays compiled between snapshots) and keeps copies of the parameters;
:func:`animate_training` draws one frame per snapshot with matplotlib's
animation writers.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from ._files import check_writable_path, replace_path
from ._validation import check_int, check_memory
from .model import LinearModel, NetModel
from .plot import RegionGrid, _check_2d, _scatter_classes, class_colors


class Snapshot(NamedTuple):
    """The parameters after ``iteration`` iterations, and the loss of the last of them (NaN at 0)."""

    iteration: int
    loss: float
    params: dict[str, np.ndarray]


def record_snapshots(
    X: Any, y: Any, *, model: str = "net", snapshots: int = 20, **train_kwargs: Any
) -> tuple[NetModel | LinearModel, list[Snapshot]]:
    """Train as :func:`fastspiral.train_net` (``model="net"``) or :func:`~fastspiral.train_linear`
    does, keeping about ``snapshots`` evenly spaced copies of the parameters, plus the start.

    ``train_kwargs`` go to the trainer (``iters``, ``seed``, ``hidden``,
    ``verbose``...; not ``callback``). Returns ``(model, snapshots)``; the
    last snapshot holds the final parameters.

    >>> net, frames = fs.record_snapshots(X, y, seed=0)          # doctest: +SKIP
    >>> fs.animate_training(X, y, frames, "training.gif")        # doctest: +SKIP
    """
    from .train import train_linear, train_net

    trainers = {"net": train_net, "linear": train_linear}
    if model not in trainers:
        raise ValueError(f"model must be 'net' or 'linear', got {model!r}")
    snapshots = check_int(snapshots, "snapshots", minimum=1)
    if "callback" in train_kwargs or "callback_every" in train_kwargs:
        raise TypeError("record_snapshots sets callback and callback_every itself")
    iters = train_kwargs.get("iters", 10_000 if model == "net" else 200)
    iters = check_int(iters, "iters", minimum=0)
    every = max(1, iters // snapshots)
    n_kept = (iters + every - 1) // every + 1  # every multiple of `every`, the start and the end
    kept: list[Snapshot] = []

    def keep(iteration: int, loss: float, params: dict[str, np.ndarray]) -> None:
        if not kept:  # the call before the first iteration: the copies' size is known now
            # (tests/test_validation.py::test_sizes_too_large_for_memory)
            check_memory(
                n_kept * sum(v.nbytes for v in params.values()),
                f"snapshots={snapshots:,} of {iters:,} iterations keep copies that need",
            )
        kept.append(Snapshot(iteration, loss, {k: v.copy() for k, v in params.items()}))

    fitted = trainers[model](X, y, callback=keep, callback_every=every, **train_kwargs)
    return fitted, kept


def _writer(path: str, fps: float):
    from matplotlib import animation

    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".gif":
        return animation.PillowWriter(fps=fps)
    if suffix == ".mp4":
        if not animation.writers.is_available("ffmpeg"):
            raise ValueError(
                f"writing {path!r} needs ffmpeg, which was not found; write a .gif instead"
            )
        return animation.FFMpegWriter(fps=fps)
    raise ValueError(f"path must end in .gif (or .mp4 where ffmpeg is installed), got {path!r}")


def animate_training(
    X: Any,
    y: Any,
    snapshots: Any,
    path: str | os.PathLike,
    *,
    fps: float = 4,
    resolution: float = 0.03,
    title: str | None = None,
) -> str:
    """Write the decision regions of each snapshot as one frame of an animated GIF (or MP4).

    Each frame shows the regions (colours as in
    :func:`fastspiral.plot_decision_regions`), the points, the ones
    misclassified at that moment circled, and the iteration, loss and training
    accuracy. ``snapshots`` come from :func:`record_snapshots` (or are
    ``(iteration, loss, params)`` triples). The file is written like a saved
    model (atomically, never over anything but a regular file). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    X, y = _check_2d(X, y)
    path = os.fspath(path)
    writer = _writer(path, fps)
    check_writable_path(path, "animation")
    frames = [Snapshot(*s) for s in snapshots]
    if not frames:
        raise ValueError("snapshots is empty")
    models = [(NetModel if "W1" in f.params else LinearModel)(f.params) for f in frames]
    grid = RegionGrid(X, resolution)
    # X and the grid checked once in each parameter dtype, not once a frame
    inputs = {m.dtype: (m._checked_X(X), m._checked_X(grid.points)) for m in models}
    colors = class_colors(max(int(y.max()) + 1, models[0].n_classes))

    # A fixed layout, and one draw per frame by driving the writer directly:
    # FuncAnimation with constrained layout drew every frame three times (6 s for 21 frames).
    fig = Figure(figsize=(5.5, 5), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.1, top=0.88)
    ax = fig.add_subplot()
    shape = (grid.x1.size, grid.x0.size)
    image = grid.draw(ax, models[0]._predict(inputs[models[0].dtype][1]).reshape(shape), colors)
    _scatter_classes(ax, X, y, colors, legend=False)
    wrong = ax.scatter([], [], s=90, facecolors="none", edgecolors="k", linewidths=1.2, zorder=3)
    ax.set_xlim(grid.extent[:2])
    ax.set_ylim(grid.extent[2:])
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    heading = title or ("2-layer net" if "W1" in frames[0].params else "softmax linear classifier")

    def write(tmp: str) -> None:
        with writer.saving(fig, tmp, dpi=fig.dpi):
            for model, frame in zip(models, frames):
                X_in, points = inputs[model.dtype]
                image.set_data(grid.colours(model._predict(points).reshape(shape), colors))
                miss = model._predict(X_in) != y
                wrong.set_offsets(X[miss] if miss.any() else np.empty((0, 2)))
                loss = "start" if not np.isfinite(frame.loss) else f"loss {frame.loss:.3f}"
                ax.set_title(
                    f"{heading}\niteration {frame.iteration:,}: {loss}, "
                    f"training accuracy {1 - miss.mean():.1%}",
                    fontsize=10,
                )
                writer.grab_frame()

    replace_path(path, write, "animation")
    return path
