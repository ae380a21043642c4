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
    """Parameters after ``iteration`` iterations, and the loss of the last one (NaN at 0)."""

    iteration: int
    loss: float
    params: dict[str, np.ndarray]


# A listed count's bytes while snapshot_times builds it: a float64 and an int64 array, union1d's
# sorted copy, and a tuple of Python ints (8-byte pointer, 32-byte int).
_BYTES_PER_TIME = 8 + 8 + 16 + 40


def snapshot_times(iters: int, snapshots: int, spacing: str = "log") -> tuple[int, ...]:
    """The iteration counts after which :func:`record_snapshots` keeps the parameters.

    "log": about ``snapshots`` counts spaced evenly on a log scale from 1 to
    ``iters``, so that the first iterations, where the regions change most,
    get frames of their own (evenly spaced frames showed the change between
    the first two); "linear": every ``iters // snapshots`` iterations. The
    last iteration is always one.
    """
    if spacing not in ("log", "linear"):
        raise ValueError(f"spacing must be 'log' or 'linear', got {spacing!r}")
    if iters == 0:
        return ()
    # Bounded before it is built: record_snapshots' 10**9 snapshots made a 40 GB set before the
    # copies' own bound could refuse them
    # (tests/test_validation.py::test_sizes_too_large_for_memory).
    check_memory(
        (snapshots if spacing == "log" else min(snapshots, iters) + 1) * _BYTES_PER_TIME,
        f"snapshots={snapshots:,} of {iters:,} iterations make a list of counts that needs",
    )
    if spacing == "linear":
        every = max(1, iters // snapshots)
        times = np.arange(every, iters + 1, every, dtype=np.int64)
    else:
        times = np.rint(np.geomspace(1, iters, snapshots)).astype(np.int64)
    return tuple(np.union1d(times, [iters]).tolist())


def record_snapshots(
    X: Any,
    y: Any,
    *,
    model: str = "net",
    snapshots: int = 20,
    spacing: str = "log",
    **train_kwargs: Any,
) -> tuple[NetModel | LinearModel, list[Snapshot]]:
    """Train as :func:`fastspiral.train_net` (``model="net"``) or :func:`~fastspiral.train_linear`
    does, keeping about ``snapshots`` copies of the parameters, plus the start.

    The copies are spaced as :func:`snapshot_times` says (log-spaced by
    default, so the first iterations show). ``train_kwargs`` go to the trainer
    (``iters``, ``seed``, ``hidden``, ``optimizer``...; not ``callback``).
    Returns ``(model, snapshots)``; the last snapshot holds the final
    parameters.

    >>> net, frames = fs.record_snapshots(X, y, seed=0)          # doctest: +SKIP
    >>> fs.animate_training(X, y, frames, "training.gif")        # doctest: +SKIP
    """
    from .train import train_linear, train_net

    trainers: dict[str, Any] = {"net": train_net, "linear": train_linear}
    if model not in trainers:
        raise ValueError(f"model must be 'net' or 'linear', got {model!r}")
    snapshots = check_int(snapshots, "snapshots", minimum=1)
    if "callback" in train_kwargs or "callback_every" in train_kwargs:
        raise TypeError("record_snapshots sets callback and callback_every itself")
    iters = train_kwargs.get("iters", 10_000 if model == "net" else 200)
    iters = check_int(iters, "iters", minimum=0)
    times = snapshot_times(iters, snapshots, spacing)
    n_kept = len(times) + 1  # and the start
    kept: list[Snapshot] = []

    def keep(iteration: int, loss: float, params: dict[str, np.ndarray]) -> None:
        if not kept:  # the call before the first iteration: the copies' size is known now
            # (tests/test_validation.py::test_sizes_too_large_for_memory)
            check_memory(
                n_kept * sum(v.nbytes for v in params.values()),
                f"snapshots={snapshots:,} of {iters:,} iterations keep copies that need",
            )
        kept.append(Snapshot(iteration, loss, {k: v.copy() for k, v in params.items()}))

    fitted = trainers[model](X, y, callback=keep, callback_every=times or None, **train_kwargs)
    return fitted, kept


def _writer(path: str, fps: float):
    from matplotlib import animation

    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".gif":
        return animation.PillowWriter(fps=fps)  # type: ignore[arg-type]  # stubs say int
    if suffix == ".mp4":
        if not animation.writers.is_available("ffmpeg"):
            raise ValueError(
                f"writing {path!r} needs ffmpeg, which was not found; write a .gif instead"
            )
        return animation.FFMpegWriter(fps=fps)  # type: ignore[arg-type]
    raise ValueError(f"path must end in .gif (or .mp4 where ffmpeg is installed), got {path!r}")


def animate_training(
    X: Any,
    y: Any,
    snapshots: Any,
    path: str | os.PathLike,
    *,
    fps: float = 4,
    resolution: float | None = None,
    title: str | None = None,
) -> str:
    """Write the decision regions of each snapshot as one frame of an animated GIF (or MP4).

    Each frame shows the regions (colours as in
    :func:`fastspiral.plot_decision_regions`), the points, the ones
    misclassified at that moment circled, and the iteration, loss and training
    accuracy. ``snapshots`` come from :func:`record_snapshots` (or are
    ``(iteration, loss, params)`` triples). ``resolution`` is the grid
    spacing (default: about a cell a pixel). The file is written like a saved
    model (atomically, never over anything but a regular file). Returns the path.
    """
    frames = [Snapshot(*s) for s in snapshots]
    if not frames:
        raise ValueError("snapshots is empty")
    heading = title or ("2-layer net" if "W1" in frames[0].params else "softmax linear classifier")
    return _animate(X, y, {heading: frames}, path, fps, resolution)


def _animate(X, y, panels: dict[str, list[Snapshot]], path, fps, resolution) -> str:
    """Frame i shows snapshot i of every panel, side by side (panels of equal frame counts)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    X, y = _check_2d(X, y)
    path = os.fspath(path)
    writer = _writer(path, fps)
    check_writable_path(path, "animation")
    counts = {len(frames) for frames in panels.values()}
    if len(counts) != 1:
        raise ValueError(f"the panels have different numbers of snapshots: {sorted(counts)}")
    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    # a fixed layout, and one draw per frame by driving the writer directly: FuncAnimation with
    # constrained layout drew every frame three times (6 s for 21 frames)
    fig = Figure(figsize=(4.2 * cols + 1.3, 4.1 * rows), dpi=90)
    FigureCanvasAgg(fig)
    width, height = fig.get_size_inches()  # margins in inches: the y label was cut off
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.5 / height,
                        top=1 - 0.55 / height, wspace=0.18, hspace=0.3)  # fmt: skip
    # a cell per two pixels of a panel: a cell a pixel predicted 4x the points (7.5 s for the
    # demo's 21 frames, against 2 s) for boundaries that look the same in a GIF
    cells = int(fig.get_figwidth() * fig.dpi / cols / 2)
    grid = RegionGrid(X, resolution, cells=cells)
    shape = (grid.x1.size, grid.x0.size)
    drawn = []
    for k, (heading, frames) in enumerate(panels.items()):
        models = [(NetModel if "W1" in f.params else LinearModel)(f.params) for f in frames]
        # X and the grid checked once in each parameter dtype, not once a frame
        inputs = {m.dtype: (m._checked_X(X), m._checked_X(grid.points)) for m in models}
        colors = class_colors(max(int(y.max()) + 1, models[0].n_classes))
        ax = fig.add_subplot(rows, cols, k + 1)
        first = models[0]._predict(inputs[models[0].dtype][1]).reshape(shape)
        image = grid.draw(ax, first, colors)
        _scatter_classes(ax, X, y, colors, legend=False)
        wrong = ax.scatter([], [], s=60, facecolors="none", edgecolors="k", linewidths=1, zorder=3)
        ax.set_xlim(grid.extent[:2])
        ax.set_ylim(grid.extent[2:])
        ax.set_xlabel("x[0]")
        if k % cols == 0:
            ax.set_ylabel("x[1]")
        drawn.append((heading, frames, models, inputs, colors, ax, image, wrong))

    def write(tmp: str) -> None:
        with writer.saving(fig, tmp, dpi=fig.dpi):
            for i in range(counts.pop()):
                for heading, frames, models, inputs, colors, ax, image, wrong in drawn:
                    model, frame = models[i], frames[i]
                    X_in, points = inputs[model.dtype]
                    image.set_data(grid.colours(model._predict(points).reshape(shape), colors))
                    miss = model._predict(X_in) != y
                    wrong.set_offsets(X[miss] if miss.any() else np.empty((0, 2)))
                    loss = "start" if not np.isfinite(frame.loss) else f"loss {frame.loss:.3f}"
                    ax.set_title(
                        f"{heading}\niteration {frame.iteration:,}: {loss}, "
                        f"accuracy {1 - miss.mean():.1%}",
                        fontsize=10,
                    )
                writer.grab_frame()

    replace_path(path, write, "animation")
    return path


#: The race's step sizes when none is given: each rule's from the spiral (1,000 iterations
#: of the case study's net, full batch and batches of 32, none diverges).
RACE_STEP_SIZES = {
    "gd": 1.0,
    "sgd": 1.0,
    "momentum": 0.1,
    "nesterov": 0.1,
    "adagrad": 0.1,
    "rmsprop": 1e-2,
    "adam": 1e-2,
}


def race_names(rules: list[str]) -> list[str]:
    """The rules' names, a repeated one numbered from its second run: "adam", "adam #2"..."""
    return [r if not rules[:i].count(r) else f"{r} #{rules[:i].count(r) + 1}"
            for i, r in enumerate(rules)]  # fmt: skip


def race(
    X: Any,
    y: Any,
    optimizers: Any = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
    *,
    step_sizes: Any = None,
    iters: int = 1000,
    seed: Any = 0,
    animation: str | os.PathLike | None = None,
    snapshots: int = 20,
    **train_kwargs: Any,
):
    """Train one net per update rule from the same start, and draw them side by side.

    As ConvNetJS's and CS231n's races: every net starts from the weights of
    ``seed`` (and sees the same batches when ``batch_size`` is given), with
    its rule's step size (``step_sizes``: a number for all, or a dict by
    name; default :data:`RACE_STEP_SIZES`). ``optimizers`` are names or
    objects of :mod:`fastspiral.optim`; ``train_kwargs`` go to
    :func:`fastspiral.train_net` (``hidden``, ``batch_size``, ``schedule``,
    ``validation``...). With ``animation`` (a .gif or .mp4 path) the regions
    of every net form at once in one animation, ``snapshots`` frames
    log-spaced.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The loss curves (left) and each net's decision regions (right), a
        pyplot figure.
    models : dict
        The trained :class:`fastspiral.NetModel` of each rule, by its name
        (numbered if a rule runs twice).
    """
    import matplotlib.pyplot as plt

    from .optim import get_optimizer
    from .plot import plot_decision_regions, plot_loss

    X, y = _check_2d(X, y)
    rules = [
        get_optimizer(o)
        for o in (optimizers if isinstance(optimizers, (list, tuple)) else [optimizers])
    ]
    if not rules:
        raise ValueError("optimizers must name at least one update rule")
    for name in ("optimizer", "step_size", "callback", "callback_every"):
        if name in train_kwargs:
            raise TypeError(f"race sets {name} itself (step sizes: step_sizes=)")
    names = race_names([rule.name for rule in rules])
    steps: dict[str, Any] = {}
    for name, rule in zip(names, rules):
        if step_sizes is None:
            steps[name] = RACE_STEP_SIZES[rule.name]
        elif isinstance(step_sizes, dict):
            steps[name] = step_sizes.get(
                name, step_sizes.get(rule.name, RACE_STEP_SIZES[rule.name])
            )
        else:
            steps[name] = step_sizes
    models, frames = {}, {}
    for name, rule in zip(names, rules):
        kwargs = dict(optimizer=rule, step_size=steps[name], iters=iters, seed=seed, **train_kwargs)
        if animation is not None:
            models[name], frames[name] = record_snapshots(X, y, snapshots=snapshots, **kwargs)
        else:
            from .train import train_net

            models[name] = train_net(X, y, **kwargs)
    n = len(models)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = plt.figure(figsize=(6 + 3.4 * cols, max(4.5, 3.4 * rows)), layout="constrained")
    grid = fig.add_gridspec(rows, cols + 2)
    plot_loss({f"{k} ({steps[k]:g})": m for k, m in models.items()},
              ax=fig.add_subplot(grid[:, :2]), title="loss (step size)")  # fmt: skip
    for k, (name, model) in enumerate(models.items()):
        ax = fig.add_subplot(grid[k // cols, 2 + k % cols])
        plot_decision_regions(model, X, y, ax=ax, legend=False, title=(
            f"{name}: loss {model.final_loss:.3f}, accuracy {model.score(X, y):.0%}"))  # fmt: skip
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.suptitle(f"update rules on the same start: {iters:,} iterations")
    if animation is not None:
        _animate(X, y, frames, animation, fps=4, resolution=None)
    return fig, models
