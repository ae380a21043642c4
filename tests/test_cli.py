"""The command line: the demo's output and pictures, train, and one-line errors."""

import io
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

import fastspiral as fs
from fastspiral.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_prints_case_study_and_writes_pictures(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "iteration 190: loss 0.786302" in lines  # the case study prints 0.786302 too
    assert "iteration 0: loss 1.098637" in lines
    # Later net losses depend on summation order (ReLU units switching on and
    # off amplify rounding differences after a few thousand iterations), so
    # they are checked against the case study's 0.245292 with a tolerance.
    last = [s for s in lines if s.startswith("iteration 9000: loss ")]
    assert len(last) == 1 and abs(float(last[0].split()[-1]) - 0.245292) < 1e-3
    assert [s for s in lines if s.startswith("training accuracy")] == [
        "training accuracy: 0.49",
        "training accuracy: 0.98",
    ]
    assert sum(s.startswith("trained ") for s in lines) == 2
    for name in ("spiral_raw.png", "spiral_linear.png", "spiral_net.png", "loss.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    with Image.open(tmp_path / "training_net.gif") as gif:
        assert gif.n_frames == 21  # the start and 20 log-spaced snapshots


def test_train_saves_and_plots(tmp_path, capsys):
    model_path, png = tmp_path / "m.npz", tmp_path / "m.png"
    argv = [
        "train",
        "--model",
        "linear",
        "--iters",
        "50",
        "--seed",
        "1",
        "--dtype",
        "float32",
        "--save",
        str(model_path),
        "--plot",
        str(png),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "linear: 50 iterations" in out and "training accuracy:" in out
    model = fs.load(model_path)
    assert model.kind == "linear" and model.params["W"].dtype == np.float32
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_train_continues_from_a_saved_model(tmp_path, capsys):
    first = tmp_path / "first.npz"
    assert (
        main(["train", "--iters", "100", "--hidden", "7", "--seed", "3", "--save", str(first)]) == 0
    )
    second = tmp_path / "second.npz"
    assert main(["train", "--iters", "100", "--init", str(first), "--save", str(second)]) == 0
    X, y = fs.make_spiral(100, 3, seed=0)  # the CLI's default data
    straight = fs.train_net(X, y, hidden=7, seed=3, iters=200)
    resumed = fs.load(second)
    # the whole run: the first model's history, then the continued one's
    assert np.array_equal(resumed.loss_history[:100], fs.load(first).loss_history)
    np.testing.assert_allclose(resumed.loss_history[100:], straight.loss_history[100:], rtol=1e-12)
    assert main(["train", "--model", "linear", "--init", str(first)]) == 2
    assert "holds a net model but --model is linear" in capsys.readouterr().err


def test_train_reads_npz_data(tmp_path, capsys):
    X, y = fs.make_spiral(20, 4, seed=0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--iters", "10", "--hidden", "4"]) == 0
    assert "net: 10 iterations" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,status",
    [
        (["demo", "--hidden", "0"], 2),
        (["demo", "--backend", "cuda"], 2),
        (["train", "--step-size", "-1"], 2),
        (["train", "--step-size", "1e8", "--iters", "100"], 1),
        (["train", "--data", "/nonexistent/d.npz"], 2),
        (["frobnicate"], 2),
    ],
)
def test_bad_options_give_one_line_errors(argv, status, capsys):
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastspiral"), err


def test_module_entry_point_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "fastspiral", "train", "--iters", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--iters" in proc.stderr


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--save", "{tmp}/no/such/dir/m.npz"], "does not exist"),
        (["--save", "{tmp}"], "not a regular file"),
        (["--plot", "{tmp}/out.xyz"], "cannot write a figure as"),
        (["--plot", "{tmp}/no/such/dir/m.png"], "does not exist"),
        (["--plot", "{tmp}/m.png", "--data", "{tmp}/d5.npz"], "--plot draws 2-D data only"),
        (["--model", "linear", "--hidden", "50"], "--hidden applies to --model net only"),
        (["--init", "{tmp}/h7.npz", "--hidden", "50"], "hidden=50 but init has 7 hidden units"),
        (
            ["--dtype", "float32", "--step-size", "1e200"],
            "step_size=1e[+]200 does not fit in float32",
        ),
    ],
)
def test_train_refuses_what_would_fail_after_training(tmp_path, monkeypatch, capsys, extra, msg):
    """Each bad option is reported in one line before a single iteration runs."""
    X, y = fs.make_spiral(10, 3, seed=0)
    np.savez(tmp_path / "d5.npz", X=np.c_[X, X, X[:, :1]], y=y)
    fs.NetModel(
        {"W1": np.zeros((2, 7)), "b1": np.zeros(7), "W2": np.zeros((7, 3)), "b2": np.zeros(3)}, []
    ).save(tmp_path / "h7.npz")
    monkeypatch.setattr("fastspiral.train._run", lambda *a, **k: pytest.fail("a training loop ran"))
    argv = ["train", "--iters", "5"] + [a.format(tmp=tmp_path) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert re.search(msg, err[0]), err[0]


def test_demo_refuses_an_unwritable_out_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("fastspiral.cli.train_linear", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "cannot create --out" in capsys.readouterr().err
    (tmp_path / "out" / "spiral_raw.png").mkdir(parents=True)  # a folder where a picture goes
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_train_data_that_declares_more_than_it_holds(tmp_path, capsys):
    """An .npz whose X declares 10**12 values but holds 6: refused before np.load allocates them."""
    header = np.lib.format.header_data_from_array_1_0(np.ones(3))
    header["shape"] = (10**12,)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", buf.getvalue() + np.ones(3).tobytes())
    assert main(["train", "--data", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "declares 8,000,000,000,000 bytes" in err[0], err


def test_version_help_and_a_closed_pipe(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastspiral {fs.__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fastspiral") and "demo" in out and "train" in out
    # `fastspiral train --verbose | head -1`: quiet, status 141 (128 + SIGPIPE) as a killed writer
    proc = subprocess.run(
        f"{sys.executable} -m fastspiral train --verbose --iters 20000 | head -1; "
        "exit ${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.startswith("iteration 0: loss ") and proc.stdout.count("\n") == 1
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 141


def test_grid_command(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert (
        main(["grid", "--hidden", "4", "8", "--reg", "1e-3", "--iters", "50", "--out", str(out)])
        == 0
    )
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert main(["grid", "--out", str(tmp_path / "g.xyz")]) == 2


def _options(parser):
    """(command, action) for every option of every command."""
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, command, action


def test_help_shows_every_default():
    from fastspiral.cli import build_parser

    missing = []
    for name, command, action in _options(build_parser()):
        text = command._get_formatter()._get_help_string(action) or ""
        if "default" not in text.lower():
            missing.append(f"{name} {action.option_strings}")
    assert missing == []
    proc = subprocess.run([sys.executable, "-m", "fastspiral", "scale", "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "(default: float64 float32)" in proc.stdout
    assert "(default: 1 2)" in proc.stdout and "(default: 10s)" in proc.stdout


@pytest.mark.parametrize("option", ["--data", "--init"])
def test_train_refuses_a_fifo_instead_of_hanging(tmp_path, option):
    """Before: the read of a FIFO nobody writes waited forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "fastspiral", "train", option, str(fifo)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"{option} '{fifo}' is not a regular file" in err[0], err


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["train", "--save", ""], "--save: expected a path, got an empty string"),
        (["train", "--plot", ""], "--plot: expected a path"),
        (["train", "--data", ""], "--data: expected a path"),
        (["demo", "--out", ""], "--out: expected a path"),
        (["train", "--step-size", "nan"], "--step-size: expected a finite number"),
        (["train", "--noise", "inf"], "--noise: expected a finite number"),
        (["grid", "--reg", "1e-3", "x"], "--reg: expected a number"),
    ],
)
def test_empty_paths_and_non_finite_numbers_are_refused(argv, msg, monkeypatch, capsys):
    """Before: `--save ''` trained, saved nothing and exited 0."""
    monkeypatch.setattr("fastspiral.train._run", lambda *a, **k: pytest.fail("a training loop ran"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_train_with_an_update_rule_batches_and_held_out_data(tmp_path, capsys):
    argv = ["train", "--optimizer", "adam", "--step-size", "0.03", "--batch-size", "32",
            "--data-kind", "moons", "--validation-seed", "1", "--validate-every", "20",
            "--early-stopping", "--patience", "3", "--iters", "400", "--seed", "0",
            "--schedule", "step:100:0.5", "--hidden", "20",
            "--save", str(tmp_path / "m.npz")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    X, y = fs.make_data("moons", seed=0)
    Xv, yv = fs.make_data("moons", seed=1)
    same = fs.train_net(X, y, optimizer="adam", step_size=0.03, batch_size=32, hidden=20,
                        validation=(Xv, yv), validate_every=20, early_stopping=True, patience=3,
                        iters=400, seed=0, schedule=fs.optim.StepDecay(100, 0.5))  # fmt: skip
    saved = fs.load(tmp_path / "m.npz")
    assert np.array_equal(saved.loss_history, same.loss_history)
    assert saved.info["schedule"] == {"name": "StepDecay", "every": 100, "factor": 0.5}
    assert f"(adam, batches of 32, {same.info['iters'] / 7:.3g} epochs)" in out  # 7 an epoch
    assert f"held-out accuracy: {same.score(Xv, yv):.4f}" in out
    assert f"best held-out loss after {same.info['best_iteration']} updates (kept)" in out


def test_train_keeps_the_spiral_in_class_order(capsys):
    assert main(["train", "--iters", "30", "--seed", "0", "--hidden", "5"]) == 0
    out = capsys.readouterr().out
    X, y = fs.make_spiral(100, 3, seed=0)
    model = fs.train_net(X, y, iters=30, seed=0, hidden=5)
    assert f"final loss: {model.final_loss:f}" in out and "(gd)" in out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["train", "--schedule", "cosine:3"], "--schedule: expected step:EVERY"),
        (["train", "--schedule", "step:0"], "--schedule: 'step:0': StepDecay: every must be >= 1"),
        (["train", "--schedule", "exp:-1"], "ExpDecay: k must be"),
        (["train", "--optimizer", "lbfgs"], "--optimizer: invalid choice"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--batch-size", "301"], "batch_size"),
        (["train", "--early-stopping"], "need held-out data"),
        (["train", "--data", "{tmp}/d.npz", "--validation-seed", "1"], "give --validation-data"),
        (["train", "--validation-seed", "1", "--validation-data", "{tmp}/d.npz"], "alternatives"),
        (["train", "--validation-data", "{tmp}/d5.npz"], "features"),
        (["race", "--step-sizes", "1", "2"], "gives 2 values for 6 optimizers"),
        (["race", "--gif", "{tmp}/r.png"], "--gif .* must end in .gif or .mp4"),
        (["race", "--out", "{tmp}/r.xyz"], "cannot write a figure as"),
        (["grid", "--data", "{tmp}/d5.npz"], "X must have 2 features to be drawn"),
    ],
)
def test_training_options_are_refused_before_training(tmp_path, monkeypatch, capsys, argv, msg):
    X, y = fs.make_spiral(10, 3, seed=0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savez(tmp_path / "d5.npz", X=np.c_[X, X, X[:, :1]], y=y)
    monkeypatch.setattr("fastspiral.train._run", lambda *a, **k: pytest.fail("a training loop ran"))
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert re.search(msg, err[0]), err[0]


def test_grid_takes_data_and_training_options(tmp_path, monkeypatch, capsys):
    X, y = fs.make_data("xor", 30, seed=2)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    calls = []
    real = fs.train.train_net

    def spy(X, y, **kwargs):
        calls.append((X, kwargs))
        return real(X, y, **kwargs)

    monkeypatch.setattr("fastspiral.train.train_net", spy)
    out = tmp_path / "g.png"
    argv = ["grid", "--data", str(tmp_path / "d.npz"), "--optimizer", "momentum",
            "--step-size", "0.1", "--batch-size", "20", "--hidden", "6", "--reg", "1e-3", "1e-2",
            "--iters", "40", "--schedule", "inv:0.1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert [c[1]["reg"] for c in calls] == [1e-3, 1e-2]
    for data, kwargs in calls:
        assert np.array_equal(data, X) and kwargs["optimizer"] == "momentum"
        assert kwargs["batch_size"] == 20 and kwargs["step_size"] == 0.1
        assert kwargs["schedule"] == fs.optim.InverseTimeDecay(0.1) and kwargs["iters"] == 40
    assert out.read_bytes().startswith(PNG_MAGIC)
    calls.clear()
    assert main(["grid", "--data-kind", "circles", "--hidden", "4", "--reg", "1e-3", "--iters",
                 "20", "--out", str(tmp_path / "c.png")]) == 0  # fmt: skip
    assert np.array_equal(calls[0][0], fs.make_data("circles", seed=0)[0])


def test_race_command_writes_the_figure_and_the_animation(tmp_path, capsys):
    png, gif = tmp_path / "r.png", tmp_path / "r.gif"
    argv = ["race", "--optimizers", "gd", "adam", "--step-sizes", "1", "0.01", "--iters", "40",
            "--hidden", "8", "--out", str(png), "--gif", str(gif)]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    X, y = fs.make_spiral(100, 3, seed=0)
    adam = fs.train_net(X, y, iters=40, hidden=8, seed=0, optimizer="adam", step_size=0.01)
    assert lines[1].startswith("adam       step size 0.01")
    assert f"loss {adam.final_loss:.4f}" in lines[1]
    assert png.read_bytes().startswith(PNG_MAGIC)
    with Image.open(gif) as animation:
        assert animation.n_frames > 5


def test_compile_command_reports_each_variant(monkeypatch, capsys):
    seen = {}

    def fake(processes=None, report=None):
        seen["processes"] = processes
        report("float64 net: 1.0 s")
        return []

    monkeypatch.setattr("fastspiral.numba_backend.warmup.compile_kernels", fake)
    assert main(["compile", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert seen == {"processes": 1} and "  float64 net: 1.0 s" in out and "done in" in out
