"""Watching training: the callback, snapshots, the animation, and the pictures."""

import matplotlib.pyplot as plt  # with no display, matplotlib picks its Agg backend itself
import numpy as np
import pytest
from PIL import Image

import fastspiral as fs
from fastspiral.plot import class_colors


@pytest.fixture(scope="module")
def spiral():
    return fs.make_spiral(60, 3, seed=0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("trainer,every", [(fs.train_net, 70), (fs.train_linear, 7)])
def test_callback_sees_every_interval_and_the_final_state(spiral, backend, trainer, every):
    X, y = spiral
    calls = []

    def callback(iteration, loss, params):
        for value in params.values():
            assert not value.flags.writeable
            with pytest.raises(ValueError):
                value[...] = 0
        calls.append((iteration, loss, {k: v.copy() for k, v in params.items()}))

    model = trainer(
        X, y, iters=300, seed=1, backend=backend, callback=callback, callback_every=every
    )
    assert [c[0] for c in calls] == [0, *range(every, 300, every), 300]
    assert np.isnan(calls[0][1])
    assert [c[1] for c in calls[1:]] == [model.loss_history[i - 1] for i, *_ in calls[1:]]
    for name, value in model.params.items():
        assert np.array_equal(calls[-1][2][name], value)
    plain = trainer(X, y, iters=300, seed=1, backend=backend)
    assert np.array_equal(plain.loss_history, model.loss_history)  # chunk ends change nothing
    for name, value in plain.params.items():
        assert np.array_equal(value, model.params[name])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_returning_false_stops_with_the_model_so_far(spiral, backend):
    X, y = spiral
    model = fs.train_net(
        X,
        y,
        iters=1000,
        seed=2,
        backend=backend,
        callback_every=100,
        callback=lambda i, loss, p: i < 300,
    )
    assert model.loss_history.shape == (300,) and model.info["iters"] == 300
    straight = fs.train_net(X, y, iters=300, seed=2, backend=backend)
    assert np.array_equal(model.loss_history, straight.loss_history)
    for name, value in straight.params.items():
        assert np.array_equal(model.params[name], value)
    stopped_at_once = fs.train_linear(X, y, seed=2, callback=lambda *a: False)
    assert stopped_at_once.loss_history.size == 0


def test_callback_arguments_are_checked(spiral):
    X, y = spiral
    with pytest.raises(TypeError, match="callback must be callable"):
        fs.train_net(X, y, iters=1, callback=3)
    with pytest.raises(ValueError, match="callback_every must be >= 1"):
        fs.train_linear(X, y, iters=1, callback=print, callback_every=0)
    with pytest.raises(TypeError, match="record_snapshots sets callback"):
        fs.record_snapshots(X, y, callback=print)


def test_record_snapshots_and_animate(spiral, tmp_path):
    X, y = spiral
    net, frames = fs.record_snapshots(
        X, y, iters=1000, seed=0, snapshots=10, hidden=20, spacing="linear"
    )
    assert [f.iteration for f in frames] == list(range(0, 1001, 100))
    for name, value in net.params.items():
        assert np.array_equal(frames[-1].params[name], value)
    assert not np.array_equal(frames[0].params["W1"], frames[-1].params["W1"])  # copies, not views
    assert frames[3].loss == net.loss_history[299]
    path = fs.animate_training(X, y, frames, tmp_path / "t.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(frames)
    _, lframes = fs.record_snapshots(X, y, model="linear", iters=50, snapshots=5)
    fs.animate_training(X, y, lframes, tmp_path / "lin.gif")
    with pytest.raises(ValueError, match="must end in .gif"):
        fs.animate_training(X, y, frames, tmp_path / "t.png")
    with pytest.raises(ValueError, match="snapshots is empty"):
        fs.animate_training(X, y, [], tmp_path / "e.gif")


def test_decision_regions_use_the_points_colours_and_no_seams(spiral):
    X, y = spiral
    net = fs.train_net(X, y, iters=2000, seed=0, hidden=30)
    before = set(plt.get_fignums())
    fig = fs.plot_decision_regions(net, X, y)
    assert fig.number in plt.get_fignums() and fig.number not in before  # a pyplot figure
    ax = fig.axes[0]
    image = ax.get_images()[0].get_array()
    colors = class_colors(3)
    light = np.round(0.55 * colors[:, :3] + 0.45, 6)
    # every cell is exactly one class's region colour: no interpolated levels between classes
    cells = np.unique(np.round(image.reshape(-1, 3), 6), axis=0)
    assert {tuple(c) for c in cells} <= {tuple(c) for c in light}
    # the points of class k are drawn in class k's colour
    point_colours = [tuple(np.round(c.get_facecolor()[0][:3], 6)) for c in ax.collections[:3]]
    assert point_colours == [tuple(np.round(c[:3], 6)) for c in colors]
    wrong = int((net.predict(X) != y).sum())
    labels = ax.get_legend_handles_labels()[1]
    assert labels[:3] == ["class 0", "class 1", "class 2"]
    assert (f"misclassified ({wrong})" in labels) == (wrong > 0)
    title = ax.get_title()
    assert "2,000 iterations" in title and f"loss {net.final_loss:.3f}" in title
    assert f"training accuracy {net.score(X, y):.1%}" in title
    plt.close(fig)
    fig2, own = plt.subplots()
    assert (
        fs.plot_decision_regions(net, X, y, ax=own) is fig2 and fs.plot_data(X, y, ax=own) is fig2
    )
    plt.close(fig2)


def test_loss_and_grid_pictures(spiral):
    from fastspiral.estimators import NetClassifier

    X, y = spiral
    net, lin = fs.train_net(X, y, iters=300, seed=0), fs.train_linear(X, y, seed=0)
    clf = NetClassifier(iters=50, random_state=0).fit(X, y)
    fig = fs.plot_loss({"net": net, "linear": lin, "estimator": clf})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 3
    assert [line.get_ydata().size for line in ax.get_lines()] == [300, 200, 50]
    plt.close(fig)
    with pytest.raises(ValueError, match="no loss history"):
        fs.plot_loss(fs.NetModel(net.params, []))
    grid = fs.plot_grid(X, y, hidden=[5, 20], reg=[1e-3, 1e-1], iters=200)
    titles = [a.get_title() for a in grid.axes]
    assert (
        len(titles) == 4
        and titles[0].startswith("H=5, reg=0.001")
        and titles[3].startswith("H=20, reg=0.1")
    )
    plt.close(grid)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize(
    "stop", [np.False_, 0, 0.0, "", [], np.float64(0.0)], ids=lambda v: repr(v)
)
def test_any_false_value_but_none_stops(spiral, backend, stop):
    """The loop tested ``is False``: a NumPy comparison's np.False_ ran all the iterations."""
    X, y = spiral
    model = fs.train_net(
        X,
        y,
        iters=500,
        seed=0,
        hidden=10,
        backend=backend,
        callback_every=100,
        callback=lambda i, loss, p: stop if i >= 200 else None,
    )
    assert model.loss_history.size == 200
    weights = fs.train_linear(  # the motivating case: a NumPy bool from the parameters
        X, y, seed=0, callback=lambda i, loss, p: np.abs(p["W"]).max() < 0.1, callback_every=1
    )
    assert 0 < weights.loss_history.size < 200
    assert np.abs(weights.params["W"]).max() >= 0.1


def test_none_and_true_values_go_on_and_arrays_are_refused(spiral):
    X, y = spiral
    for go_on in (None, True, np.True_, 1, "yes", [0]):
        model = fs.train_linear(X, y, iters=30, callback=lambda *a, v=go_on: v, callback_every=10)
        assert model.loss_history.size == 30
    with pytest.raises(TypeError, match="callback must return None or a truth value, got ndarray"):
        fs.train_linear(X, y, iters=30, callback=lambda i, loss, p: p["W"] > 0)


README_CALLBACK = """
import numpy as np
import fastspiral as fs

X, y = fs.make_spiral(seed=0)


def report(iteration, loss, params):
    print(f"{iteration:6d}  loss {loss:.4f}  |W1| {np.abs(params['W1']).max():.2f}")
    return iteration == 0 or loss > 0.3  # iteration 0 has no loss yet (NaN); then stop under 0.3


net = fs.train_net(X, y, seed=0, callback=report, callback_every=500)
print(net.loss_history.size, "iterations")
"""


def test_the_first_callback_call_and_an_example_that_stops_under_a_loss(spiral):
    """The first call comes before any iteration, with NaN for the loss: a stopping test must
    let it pass (``nan > 0.3`` is False, which stops at once, as the README's example did)."""
    calls = []

    def report(iteration, loss, params):
        calls.append((iteration, loss))
        return loss > 0.3

    X, y = fs.make_spiral(seed=0)
    assert fs.train_net(X, y, seed=0, callback=report).loss_history.size == 0
    assert len(calls) == 1 and calls[0][0] == 0 and np.isnan(calls[0][1])
    namespace: dict = {}
    exec(compile(README_CALLBACK, "README_CALLBACK", "exec"), namespace)
    net = namespace["net"]
    straight = fs.train_net(X, y, seed=0, iters=net.loss_history.size)
    stop = net.loss_history.size
    assert stop % 500 == 0 and 0 < stop < 10_000
    assert net.loss_history[stop - 1] <= 0.3 < net.loss_history[stop - 501]
    assert np.array_equal(net.loss_history, straight.loss_history)


def test_a_plane_too_far_out_is_refused(spiral):
    """Around 1e17 float64 numbers are 16 apart: the grid's margin and steps vanished and the
    error was "X must not be empty"."""
    X, y = spiral
    net = fs.train_net(X, y, iters=10, seed=0, hidden=5)
    with pytest.raises(ValueError, match=r"X's coordinates reach 1e\+17, where float64 numbers"):
        fs.plot_decision_regions(net, X + 1e17, y)
    with pytest.raises(ValueError, match="resolution=1e-12 cannot be drawn"):
        fs.plot_decision_regions(net, X + 1e4, y, resolution=1e-12)
    plt.close(fs.plot_decision_regions(net, X + 1e4, y))  # far out, but gridded finely enough


def test_log_spaced_snapshots_give_the_first_iterations_frames(spiral):
    from fastspiral.animate import snapshot_times

    times = snapshot_times(1000, 10)
    assert times[0] == 1 and times[-1] == 1000 and list(times) == sorted(set(times))
    ratios = np.diff(np.log(times))
    assert np.allclose(ratios[ratios > 0.2], np.log(1000) / 9, rtol=0.2)  # even on a log axis
    assert snapshot_times(7, 20, "linear") == tuple(range(1, 8))
    assert snapshot_times(0, 5) == ()
    with pytest.raises(ValueError, match="spacing must be 'log' or 'linear'"):
        snapshot_times(10, 5, "cubic")
    X, y = spiral
    net, frames = fs.record_snapshots(X, y, iters=300, seed=0, snapshots=6, hidden=10)
    assert [f.iteration for f in frames] == [0, *snapshot_times(300, 6)]
    assert all(f.loss == net.loss_history[f.iteration - 1] for f in frames[1:])


def test_loss_curves_tell_rules_and_held_out_data_apart(spiral):
    X, y = spiral
    Xv, yv = fs.make_spiral(30, 3, seed=1)
    gd = fs.train_net(X, y, iters=100, seed=0, hidden=10)
    adam = fs.train_net(X, y, iters=100, seed=0, hidden=10, optimizer="adam", step_size=1e-2)
    held = fs.train_net(X, y, iters=100, seed=0, hidden=10, validation=(Xv, yv),
                        validate_every=20)  # fmt: skip
    fig = fs.plot_loss([gd, gd, adam, held])
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) == len(set(labels)) == 5  # four curves and one held-out curve
    assert any(", adam" in label for label in labels)
    assert [label.split(" (")[0] for label in labels] == [
        "net H=10 #1", "net H=10 #2", "net H=10, adam", "net H=10 #3", "net H=10 #3, held out"
    ]  # fmt: skip
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    assert np.array_equal(dashed[0].get_ydata(), held.validation_history["loss"])
    assert dashed[0].get_color() == ax.get_lines()[3].get_color()
    assert ax.get_ylabel() == "loss" and ax.get_xscale() == "log"
    plt.close(fig)
    fig = fs.plot_loss(held, validation=False, xscale="linear", yscale="linear")
    assert len(fig.axes[0].get_lines()) == 1 and fig.axes[0].get_yscale() == "linear"
    plt.close(fig)
    with pytest.raises(ValueError, match="yscale must be 'log' or 'linear'"):
        fs.plot_loss(gd, yscale="symlog")
    with pytest.raises(ValueError, match="models must name at least one model"):
        fs.plot_loss([])
    with pytest.raises(ValueError, match="models: ndarray has no loss history") as error:
        fs.plot_loss(np.zeros(10**6))
    assert len(str(error.value)) < 200  # described, not printed


def test_race_starts_every_rule_from_the_same_weights(spiral, tmp_path):
    X, y = spiral
    fig, models = fs.race(X, y, ["gd", "adam", "adam"], iters=60, hidden=10,
                          step_sizes={"adam": 1e-2}, animation=tmp_path / "race.gif",
                          snapshots=4)  # fmt: skip
    assert list(models) == ["gd", "adam", "adam #2"]
    assert fs.animate.race_names(["a", "b", "a", "a"]) == ["a", "b", "a #2", "a #3"]
    alone = fs.train_net(X, y, iters=60, seed=0, hidden=10, optimizer="adam", step_size=1e-2)
    for name in ("adam", "adam #2"):
        assert np.array_equal(models[name].loss_history, alone.loss_history)
    gd = fs.train_net(X, y, iters=60, seed=0, hidden=10, step_size=fs.animate.RACE_STEP_SIZES["gd"])
    assert np.array_equal(models["gd"].loss_history, gd.loss_history)
    assert len(fig.axes) == 4  # the loss curves and one panel of regions per net
    assert fig.axes[1].get_title().startswith("gd: loss")
    with Image.open(tmp_path / "race.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 1 + len(fs.animate.snapshot_times(60, 4))
    plt.close(fig)
    with pytest.raises(TypeError, match="race sets step_size itself"):
        fs.race(X, y, ["gd"], step_size=0.1)
    with pytest.raises(ValueError, match="optimizers must name at least one"):
        fs.race(X, y, [])
