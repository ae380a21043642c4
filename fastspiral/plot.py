"""Pictures of the data and of what the models learned (the case study's figures), and of sweeps.

The public pictures (:func:`plot_data`, :func:`plot_decision_regions`,
:func:`plot_loss`, :func:`plot_grid`) return pyplot figures, so
``plt.show()`` shows them and notebooks display them; given ``ax=`` they
draw there instead. Classes keep one colour everywhere (:func:`class_colors`):
the regions are drawn as an image of predicted labels, lightened, so no
contour interpolation invents a seam of a middle class between two others.
matplotlib is imported on first use, keeping ``import fastspiral``
fast.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._files import replace_file
from ._validation import check_float, check_real_dtype, check_X, check_y


def class_colors(n_classes: int) -> np.ndarray:
    """(K, 4) RGBA colours, one per class, fixed for a given K; points and regions share them.

    tab10 up to 10 classes, tab20 up to 20, evenly spaced hues of "turbo" beyond.
    """
    from matplotlib import colormaps

    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    if n_classes <= 20:
        return colormaps["tab20"](np.arange(n_classes))
    return colormaps["turbo"](np.linspace(0, 1, n_classes))


def _new_axes(ax: Any, figsize=(5.5, 5)):
    """``(figure, axes)``: ``ax`` and its figure, or a new pyplot figure (``plt.show()``)."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _check_2d(X: Any, y: Any):
    X = check_X(X, np.dtype(np.float64))
    if X.shape[1] != 2:
        raise ValueError(f"X must have 2 features to be drawn in the plane, got {X.shape[1]}")
    return X, check_y(y, X.shape[0])


def _scatter_classes(
    ax: Any, X: np.ndarray, y: np.ndarray, colors: np.ndarray, legend: bool
) -> None:
    for k in range(colors.shape[0]):
        rows = y == k
        if rows.any():
            ax.scatter(
                X[rows, 0],
                X[rows, 1],
                s=28,
                color=colors[k],
                edgecolors="k",
                linewidths=0.4,
                label=f"class {k}",
                zorder=2,
            )
    if legend:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)


def plot_data(X: Any, y: Any, *, ax: Any = None, title: str | None = "spiral data"):
    """Scatter the 2-D points coloured by class, with a legend (the case study's spiral_raw.png).

    Returns the figure (a new pyplot figure unless ``ax`` is given).
    """
    X, y = _check_2d(X, y)
    fig, ax = _new_axes(ax)
    _scatter_classes(ax, X, y, class_colors(int(y.max()) + 1), legend=True)
    ax.set_xlim(X[:, 0].min() - 0.1, X[:, 0].max() + 0.1)
    ax.set_ylim(X[:, 1].min() - 0.1, X[:, 1].max() + 0.1)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return fig


#: Grid cells along the longer side of the plane when no resolution is given: more than a
#: figure's pixels, so region boundaries show no stair steps (cells of 0.02 on the spiral's
#: plane were 2-3 pixels wide, and the boundaries visibly stepped).
GRID_CELLS = 600


class RegionGrid:
    """The plane around X as a grid of ``resolution`` spacing, and what a model predicts on it.

    ``resolution=None`` spaces ``cells`` cells (:data:`GRID_CELLS`) along the longer side.
    Shared by :func:`plot_decision_regions` and the frames of
    :func:`fastspiral.animate_training`.
    """

    def __init__(self, X: np.ndarray, resolution: float | None, cells: int = GRID_CELLS):
        lo, hi = X.min(axis=0) - 1, X.max(axis=0) + 1
        if resolution is None:
            resolution = float(np.max(hi - lo)) / cells
        else:
            resolution = check_float(resolution, "resolution", positive=True)
        # Far from 0 the grid's steps vanish in rounding: around 1e17 float64 numbers are 16
        # apart, so lo + 0.02 == lo, the margin of 1 is lost and the grid came out empty
        # ("X must not be empty") (tests/test_watch.py::test_a_plane_too_far_out_is_refused).
        # Each grid point is rounded by up to half the spacing, so with 4 spacings to a
        # cell the cells' widths stay within a quarter of the resolution.
        spacing = float(np.max(np.spacing(np.maximum(np.abs(lo), np.abs(hi)))))
        if spacing * 4 > resolution:
            raise ValueError(
                f"X's coordinates reach {float(np.max(np.abs(X))):.3g}, where float64 numbers "
                f"are {spacing:.3g} apart: a grid of resolution={resolution:g} cannot be drawn "
                "there; centre and scale X, or pass a larger resolution"
            )
        if np.prod((hi - lo) / resolution) > 4e6:
            raise ValueError(
                f"resolution={resolution:g} makes a grid of more than 4 million points"
            )
        self.x0 = np.arange(lo[0], hi[0], resolution)
        self.x1 = np.arange(lo[1], hi[1], resolution)
        xx, yy = np.meshgrid(self.x0, self.x1)
        self.points = np.c_[xx.ravel(), yy.ravel()]
        self.extent = (lo[0], hi[0], lo[1], hi[1])

    def labels(self, model: Any) -> np.ndarray:
        return model.predict(self.points).reshape(self.x1.size, self.x0.size)

    @staticmethod
    def colours(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
        """(rows, cols, 3) image: each cell its class's colour, lightened so points stand out."""
        return (0.55 * colors[:, :3] + 0.45)[labels]

    def draw(self, ax: Any, labels: np.ndarray, colors: np.ndarray):
        """The regions as an image, not interpolated (so no seams of other classes)."""
        return ax.imshow(
            self.colours(labels, colors),
            origin="lower",
            extent=self.extent,
            interpolation="nearest",
            aspect="auto",
            zorder=0,
        )


def model_summary(
    model: Any, X: np.ndarray, y: np.ndarray, predicted: np.ndarray | None = None
) -> str:
    """What a title says, e.g. "net H=100: 10,000 iterations, loss 0.245, training accuracy 98.0%".

    ``predicted``: ``model.predict(X)``, where the caller has it already.
    """
    kind = getattr(model, "kind", type(model).__name__)
    if kind == "net" and hasattr(model, "n_hidden"):
        kind = f"net H={model.n_hidden}"
    parts = [kind]
    history = getattr(model, "loss_history", None)
    if history is not None and len(history):
        parts.append(f"{len(history):,} iterations, loss {history[-1]:.3f}")
    accuracy = float(np.mean((model.predict(X) if predicted is None else predicted) == y))
    return f"{parts[0]}: " + ", ".join(parts[1:] + [f"training accuracy {accuracy:.1%}"])


def plot_decision_regions(
    model: Any,
    X: Any,
    y: Any,
    *,
    ax: Any = None,
    resolution: float | None = None,
    title: str | None = None,
    legend: bool = True,
):
    """Colour the plane by the class ``model`` predicts, with the data on top.

    The case study's spiral_linear.png / spiral_net.png: each region has its
    class's colour (lighter), the same as its points; points the model gets
    wrong are circled in black; the title gives the model, its iterations, its
    final loss and its training accuracy on (X, y) unless ``title`` is given.
    ``model`` is anything with ``predict`` on (n, 2) arrays; ``resolution`` is
    the grid spacing (default: finer than the figure's pixels). Returns the
    figure (a new pyplot figure unless ``ax`` is given).
    """
    X, y = _check_2d(X, y)
    grid = RegionGrid(X, resolution)
    fig, ax = _new_axes(ax)
    labels = grid.labels(model)
    n_classes = max(int(y.max()) + 1, int(labels.max()) + 1, getattr(model, "n_classes", 0))
    colors = class_colors(n_classes)
    grid.draw(ax, labels, colors)
    _scatter_classes(ax, X, y, colors, legend=False)
    predicted = model.predict(X)
    wrong = predicted != y
    if wrong.any():
        ax.scatter(
            X[wrong, 0],
            X[wrong, 1],
            s=90,
            facecolors="none",
            edgecolors="k",
            linewidths=1.2,
            label=f"misclassified ({int(wrong.sum())})",
            zorder=3,
        )
    if legend:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    ax.set_xlim(grid.extent[:2])
    ax.set_ylim(grid.extent[2:])
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(model_summary(model, X, y, predicted) if title is None else title, fontsize=10)
    return fig


def _curve_label(model: Any) -> str:
    """A model's description in a legend: its kind and width, and how it was trained."""
    label = getattr(model, "kind", type(model).__name__)
    if label == "net" and hasattr(model, "n_hidden"):
        label = f"net H={model.n_hidden}"
    info = getattr(model, "info", None) or {}
    rule = (info.get("optimizer") or {}).get("name")
    if rule not in (None, "gd") or info.get("batch_size"):
        label += f", {rule}"
    if info.get("batch_size"):
        label += f", batches of {info['batch_size']}"
    return label


def _history(model: Any, label: str) -> np.ndarray:
    """The loss history of a fitted model or of a scikit-learn style estimator's ``loss_curve_``."""
    history = getattr(model, "loss_history", getattr(model, "loss_curve_", None))
    # described, not printed: a stray array would fill the message with its values
    what = label if isinstance(model, np.ndarray) else f"{label} ({type(model).__name__})"
    if history is None:
        raise ValueError(
            f"models: {what} has no loss history (pass fitted models, or a dict of them; "
            f"got a {type(model).__name__})"
        )
    history = np.asarray(history)
    if history.ndim != 1 or not history.size:
        raise ValueError(f"models: {what} has no loss history to plot (empty or not 1-D)")
    check_real_dtype(history.dtype, f"the loss history of {label}", kinds="iuf")
    return history.astype(np.float64)


def plot_loss(
    models: Any,
    *,
    ax: Any = None,
    title: str | None = "loss during training",
    validation: bool = True,
    xscale: str = "log",
    yscale: str = "log",
):
    """Loss against iteration for one model, a list of models or a dict {label: model}.

    Each model gets its own colour and a legend entry that tells it apart
    (its kind, width, update rule and batch size, or the dict's label;
    curves of equal descriptions are numbered); a model trained with held-out
    data also gets its validation loss, dashed, in the same colour, unless
    ``validation=False``. With mini-batches each point of the training curve
    is one batch's loss. scikit-learn style estimators with ``loss_curve_``
    work too. ``xscale`` and ``yscale`` are matplotlib's ("log", the default,
    shows 200 iterations and 10,000 alike; or "linear").

    Returns the figure (a new pyplot figure unless ``ax`` is given).
    """
    for name, scale in (("xscale", xscale), ("yscale", yscale)):
        if scale not in ("log", "linear"):
            raise ValueError(f"{name} must be 'log' or 'linear', got {scale!r}")
    items: list[tuple[str | None, Any]]
    if isinstance(models, dict):
        items = [(str(k), v) for k, v in models.items()]
    else:
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        items = [(None, m) for m in models]
    if not items:
        raise ValueError("models must name at least one model")
    labels = [label if label is not None else _curve_label(m) for label, m in items]
    described = list(labels)
    for i, label in enumerate(described):
        if described.count(label) > 1:  # two curves must never share a legend entry
            labels[i] = f"{label} #{described[:i].count(label) + 1}"
    histories = [_history(m, label) for (_, m), label in zip(items, labels)]
    fig, ax = _new_axes(ax, figsize=(6, 4))
    for (_, model), label, history in zip(items, labels, histories):
        (line,) = ax.plot(
            np.arange(1, history.size + 1), history, label=f"{label} (final {history[-1]:.3f})"
        )
        held_out = getattr(model, "validation_history", None) or {}
        if validation and len(held_out.get("iteration", ())):
            at = np.maximum(held_out["iteration"], 1)  # iteration 0 drawn at 1 on a log axis
            ax.plot(at, held_out["loss"], linestyle="--", marker=".", color=line.get_color(),
                    label=f"{label}, held out (final {held_out['loss'][-1]:.3f})")  # fmt: skip
    ax.set_xscale(xscale)
    ax.set_yscale(yscale)
    ax.set_xlabel("iteration")
    # short, so that it fits beside axes the caller laid out (the longer label was cut off)
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_grid(
    X: Any,
    y: Any,
    *,
    hidden: Any = (10, 100),
    reg: Any = (1e-4, 1e-3, 1e-2),
    resolution: float | None = None,
    **train_kwargs: Any,
):
    """Decision regions of nets trained with every (reg, hidden) pair, side by side.

    One row per ``reg``, one column per ``hidden``: what regularisation and
    width do to the boundary, as the case study's readers would try.
    ``train_kwargs`` go to :func:`fastspiral.train_net` (``iters``, ``seed``,
    ``step_size``...; the same ``seed`` for every panel unless given as a
    RandomState). Returns the pyplot figure.
    """
    import matplotlib.pyplot as plt

    from .train import train_net

    X, y = _check_2d(X, y)
    hidden, reg = list(np.atleast_1d(hidden)), list(np.atleast_1d(reg))
    if not hidden or not reg:
        raise ValueError("hidden and reg must each name at least one value")
    train_kwargs.setdefault("seed", 0)
    fig, axes = plt.subplots(
        len(reg),
        len(hidden),
        figsize=(3.6 * len(hidden), 3.4 * len(reg)),
        layout="constrained",
        squeeze=False,
    )
    for i, r in enumerate(reg):
        for j, h in enumerate(hidden):
            model = train_net(X, y, hidden=int(h), reg=float(r), **train_kwargs)
            accuracy = model.score(X, y)
            plot_decision_regions(
                model,
                X,
                y,
                ax=axes[i, j],
                resolution=resolution,
                legend=False,
                title=f"H={int(h)}, reg={float(r):g}\nloss {model.final_loss:.3f}, "
                f"accuracy {accuracy:.1%}",
            )
            axes[i, j].set_xlabel("")
            axes[i, j].set_ylabel("")
    fig.suptitle("2-layer net: hidden units (columns) and regularisation (rows)")
    return fig


def figure_format(path: str | os.PathLike) -> str:
    """The image format ``path``'s suffix names ("png" without one), or ValueError if matplotlib
    cannot write it: checked before the work whose result it would show."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in supported:
        raise ValueError(
            f"cannot write a figure as {os.fspath(path)!r}: matplotlib writes "
            f"{', '.join('.' + s for s in sorted(supported))}"
        )
    return suffix or "png"


def save_figure(fig: Any, path: str | os.PathLike, *, close: bool = False) -> str:
    """Write ``fig`` to ``path`` (format from the suffix), creating the folder; returns the path.

    Written like a saved model (:mod:`fastspiral._files`): atomically,
    through symlinks, never over anything but a regular file. ``close``
    releases a pyplot figure afterwards (scripts that draw many).
    """
    path = os.fspath(path)
    fmt = figure_format(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    replace_file(path, lambda fh: fig.savefig(fh, format=fmt), "figure")
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
