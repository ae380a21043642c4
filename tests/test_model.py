"""Prediction and exact save/load."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import fastspiral as fs


@pytest.fixture(scope="module")
def models():
    X, y = fs.make_spiral(seed=0)
    return X, y, fs.train_net(X, y, seed=0, iters=500), fs.train_linear(X, y, seed=0)


def test_predict_matches_forward_pass(models):
    X, y, net, lin = models
    p = net.params
    scores = np.maximum(X @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    probs = net.predict_proba(X)
    np.testing.assert_allclose(
        probs, np.exp(scores) / np.exp(scores).sum(1, keepdims=True), rtol=1e-12
    )
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(net.predict(X), scores.argmax(axis=1))
    assert net.score(X, y) == np.mean(scores.argmax(axis=1) == y)
    assert np.array_equal(lin.predict(X), (X @ lin.params["W"] + lin.params["b"]).argmax(1))


def test_predict_in_blocks_matches_one_block(models, monkeypatch):
    X, y, net, _ = models
    full = net.predict_proba(X)
    monkeypatch.setattr("fastspiral.model.PREDICT_ELEMENTS", 7 * net.n_hidden)
    # BLAS may pick other kernels for 7-row blocks: equal up to rounding.
    np.testing.assert_allclose(net.predict_proba(X), full, rtol=1e-13)


@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (np.zeros((4, 3)), ValueError, "X has 3 features .* trained on 2"),
        (np.array([[0.0, np.nan]]), ValueError, "NaN or infinite"),
        (np.zeros(2), ValueError, "must be 2-D"),
    ],
)
def test_predict_rejects_bad_X(models, bad, exc, msg):
    _, _, net, lin = models
    for model in (net, lin):
        for method in (model.predict, model.predict_proba):
            with pytest.raises(exc, match=msg):
                method(bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    X, y = fs.make_spiral(seed=1)
    for model in (
        fs.train_net(X, y, seed=1, iters=50, hidden=9, dtype=dtype),
        fs.train_linear(X, y, seed=1, dtype=dtype),
    ):
        path = tmp_path / f"{model.kind}.model"  # no .npz suffix: saved exactly there
        model.save(path)
        assert os.listdir(tmp_path).count(path.name) == 1
        back = fs.load(path)
        assert type(back) is type(model)
        assert back.info == model.info
        for name, value in model.params.items():
            assert back.params[name].dtype == value.dtype
            assert np.array_equal(back.params[name], value)
        assert np.array_equal(back.loss_history, model.loss_history)
        assert np.array_equal(back.predict_proba(X), model.predict_proba(X))


def test_load_errors_name_the_path(tmp_path, models):
    missing = tmp_path / "nope.npz"
    with pytest.raises(OSError, match="nope.npz"):
        fs.load(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        fs.load(garbage)
    good = tmp_path / "good.npz"
    models[2].save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz"):
        fs.load(truncated)
    other = tmp_path / "other.npz"
    np.savez(other, W=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        fs.load(other)


def _net_params(dtype=np.float64):
    return {
        "W1": np.ones((2, 4), dtype),
        "b1": np.zeros(4, dtype),
        "W2": np.ones((4, 3), dtype),
        "b2": np.zeros(3, dtype),
    }


@pytest.mark.parametrize(
    "change,exc,msg",
    [
        (
            lambda p: p.update(W1=np.ones((2, 4), np.int64)),
            TypeError,
            r"params\['W1'\] must be float32 or float64",
        ),
        (
            lambda p: p.update(b2=np.zeros(3, np.float16)),
            TypeError,
            r"params\['b2'\] must be float32 or float64",
        ),
        (
            lambda p: p.update(W2=np.ones((4, 3), complex)),
            TypeError,
            r"params\['W2'\] must be float32 or float64",
        ),
        (
            lambda p: p.update(W1=np.ones((2, 4), bool)),
            TypeError,
            r"params\['W1'\] must be float32 or float64",
        ),
        (
            lambda p: p.update(b1=np.zeros(4, object)),
            TypeError,
            r"params\['b1'\] must be float32 or float64",
        ),
        (lambda p: p.update(b1=np.zeros(4, np.float32)), TypeError, "share one dtype"),
        (lambda p: p["W1"].__setitem__((0, 0), np.nan), ValueError, r"params\['W1'\] contains NaN"),
        (lambda p: p.update(W2=np.ones((5, 3))), ValueError, "net params need"),
        (lambda p: p.pop("b2"), ValueError, r"missing \['b2'\]"),
        (lambda p: p.update(W3=np.ones(2)), ValueError, r"unexpected \['W3'\]"),
    ],
)
def test_models_refuse_what_trainers_never_return(change, exc, msg):
    params = _net_params()
    change(params)
    with pytest.raises(exc, match=msg):
        fs.NetModel(params, [1.0])


@pytest.mark.parametrize(
    "history,exc,msg",
    [
        ([1.0, np.nan], ValueError, "loss_history contains NaN"),
        ([[1.0]], ValueError, "loss_history must be 1-D"),
        (["a"], TypeError, "loss_history must hold real numbers"),
    ],
)
def test_models_refuse_a_bad_loss_history(history, exc, msg):
    with pytest.raises(exc, match=msg):
        fs.NetModel(_net_params(), history)


def test_model_constructors_copy_and_type_check():
    params = _net_params(np.float32)
    model = fs.NetModel(params, [2.0, 1.0], {"note": 1})
    params["W1"][:] = 7  # the caller's arrays stay the caller's
    assert model.params["W1"].max() == 1 and model.dtype == np.float32
    with pytest.raises(TypeError, match="params must be a dict"):
        fs.LinearModel([np.ones((2, 3)), np.zeros(3)], [])
    with pytest.raises(TypeError, match="info must be a dict"):
        fs.LinearModel({"W": np.ones((2, 3)), "b": np.zeros(3)}, [], info=[1])
    with pytest.raises(TypeError, match="info must hold JSON values"):  # else save would fail
        fs.LinearModel({"W": np.ones((2, 3)), "b": np.zeros(3)}, [], info={"seed": np.int64(1)})


def _archive(path, header, **arrays):
    """An .npz like save writes, with any header and arrays."""
    np.savez(
        path, header=np.array(header if isinstance(header, str) else json.dumps(header)), **arrays
    )


def test_load_refuses_damaged_and_hostile_files(tmp_path, models):
    good_arrays = {
        "loss_history": np.ones(3),
        **{f"param_{k}": v for k, v in _net_params().items()},
    }
    ok = {"format": "fastspiral-model", "version": 1, "kind": "net", "info": {}}
    cases = {
        "list": ([1, 2], good_arrays, "not a fastspiral model"),
        "null": ("null", good_arrays, "not a fastspiral model"),
        "number": ("3", good_arrays, "not a fastspiral model"),
        "nested": ("[" * 100_000 + "]" * 100_000, good_arrays, "readable"),
        "info-list": (dict(ok, info=[1]), good_arrays, "info must be a dict"),
        "kind": (dict(ok, kind="tree"), good_arrays, "unknown model kind"),
        "version": (dict(ok, version=99), good_arrays, "format version 99"),
        "int-params": (
            ok,
            {**good_arrays, "param_W1": np.ones((2, 4), np.int64)},
            "float32 or float64",
        ),
        "extra": (ok, {**good_arrays, "other": np.ones(2)}, "unexpected member 'other.npy'"),
    }
    for name, (header, arrays, msg) in cases.items():
        path = tmp_path / f"{name}.npz"
        _archive(path, header, **arrays)
        with pytest.raises(ValueError, match=msg) as info:
            fs.load(path)
        assert f"{name}.npz" in str(info.value)

    # A member whose .npy header declares far more data than it holds: np.load
    # would allocate the declared 8 TB before finding out.
    bomb = tmp_path / "bomb.npz"
    _archive(bomb, ok, **good_arrays)
    with zipfile.ZipFile(bomb) as zf:
        good_members = {m: zf.read(m) for m in zf.namelist()}
    members = dict(good_members)
    header = np.lib.format.header_data_from_array_1_0(np.ones(3))
    header["shape"] = (10**12,)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members["loss_history.npy"] = buf.getvalue() + np.ones(3).tobytes()
    with zipfile.ZipFile(bomb, "w") as zf:
        for m, data in members.items():
            zf.writestr(m, data)
    with pytest.raises(ValueError, match="declares 8,000,000,000,000 bytes"):
        fs.load(bomb)

    # Compressed far below its size: a small file that expands to gigabytes.
    deflated = tmp_path / "deflated.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros(2**20))
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for m, data in dict(good_members, **{"param_W1.npy": buf.getvalue()}).items():
            zf.writestr(m, data)
    with pytest.raises(ValueError, match="expands from"):
        fs.load(deflated)

    # Two members of one name: which one np.load reads is not the archive's business.
    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(twice, "w") as zf:
        for m, data in good_members.items():
            zf.writestr(m, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("param_W1.npy", good_members["param_W1.npy"])
    with pytest.raises(ValueError, match="more than once"):
        fs.load(twice)


def test_save_writes_through_links_and_refuses_other_files(tmp_path, models):
    model = models[3]
    target = tmp_path / "real.npz"
    model.save(target)
    os.chmod(target, 0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and fs.load(link).kind == "linear"
    assert os.stat(target).st_mode & 0o777 == 0o640  # an existing file keeps its mode
    with pytest.raises(ValueError, match="not a regular file"):
        model.save(tmp_path)
    if os.path.exists("/dev/null"):
        with pytest.raises(ValueError, match="not a regular file"):
            model.save("/dev/null")
    with pytest.raises(OSError, match="does not exist"):
        model.save(tmp_path / "no" / "such" / "m.npz")
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "new.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "new.npz").st_mode & 0o777 == 0o644  # as open() gives, not 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "new.npz", "real.npz"]


def _as_another_user(action):
    """``action()``'s outcome ("ok: " and its value, or the exception) in a process that cannot
    override file permissions: this one if it is not root, else a forked child that drops to
    user nobody (its modules are loaded already, so it needs no access to the installation)."""
    if os.getuid() != 0:
        try:
            return f"ok: {action()}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 0
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                outcome = f"ok: {action()}"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            outcome, code = f"setuid failed: {exc}", 3
        with os.fdopen(write, "w") as fh:
            fh.write(outcome)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        outcome = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 3:
        pytest.skip(f"cannot drop root to test permissions: {outcome}")
    return outcome


def test_save_refuses_a_file_open_would_refuse(models):
    """As a user who may not write it (chmod 444, or another's file in a folder the user may
    write), open(p, "w") and np.savez(p) raise PermissionError; save replaced the file by a rename,
    which needs only the folder's permission. Figures and results files share the writer."""
    import shutil
    import tempfile

    from matplotlib.figure import Figure

    from fastspiral._files import replace_text
    from fastspiral.plot import save_figure

    model = models[3]
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    fig.savefig(io.BytesIO(), format="png")  # what a PNG needs is imported before any fork
    np.savez(io.BytesIO(), a=np.zeros(1))
    writers = {
        ".npz": [lambda p: np.savez(p, a=np.zeros(1)), model.save],
        ".png": [lambda p: fig.savefig(p), lambda p: save_figure(fig, p)],
        ".json": [lambda p: replace_text(p, "{}", "results file")],
    }
    # in /tmp, open to all: a non-root user cannot reach pytest's tmp_path
    folder = tempfile.mkdtemp(prefix="fastspiral-permissions-")
    try:
        os.chmod(folder, 0o777)
        theirs = {suffix: os.path.join(folder, f"theirs{suffix}") for suffix in writers}
        for path in theirs.values():  # this user's files, readable by all: another's to nobody
            with open(path, "w") as fh:
                fh.write("theirs")
        if os.getuid() != 0:
            for path in theirs.values():
                os.chmod(path, 0o444)

        def attempts():
            outcomes = []
            for suffix, writes in writers.items():
                mine = os.path.join(folder, f"mine{suffix}")
                with open(mine, "w") as fh:
                    fh.write("mine")
                os.chmod(mine, 0o444)
                for path in (mine, theirs[suffix]):
                    for write in [lambda p: open(p, "w").close(), *writes]:
                        try:
                            write(path)
                            outcomes.append(f"{os.path.basename(path)} written")
                        except PermissionError:
                            pass
            return outcomes

        outcome = _as_another_user(attempts)
        assert outcome == "ok: []", outcome
        for path in theirs.values():
            assert open(path).read() == "theirs"
        assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temporary file left
    finally:
        shutil.rmtree(folder)


def test_save_writes_only_what_load_reads(tmp_path, models):
    """A 15,000-float info saved, and load refused its 1.2 MB header; and params, history or info
    changed after construction were written as they were, for load to refuse."""
    import sys

    from fastspiral.model import MAX_HEADER_BYTES, MAX_INFO_DEPTH

    X, y, net, _ = models
    path = tmp_path / "m.npz"
    scores = np.random.default_rng(0).random(15_000).tolist()  # ~20 characters each in JSON
    big = fs.NetModel(net.params, net.loss_history, {"scores": scores})
    with pytest.raises(ValueError, match="info is too large to save"):
        big.save(path)
    assert not os.listdir(tmp_path)
    # the largest info that save writes is read back: the limit is load's, not a smaller one
    lo, hi = 0, MAX_HEADER_BYTES // 4  # saved, refused
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            fs.NetModel(net.params, [], {"s": "x" * mid}).save(path)
            lo = mid
        except ValueError:
            hi = mid
    fs.NetModel(net.params, [], {"s": "x" * lo}).save(path)
    assert fs.load(path).info["s"] == "x" * lo
    with zipfile.ZipFile(path) as zf:  # within the .npy preamble's 128 bytes of the limit
        assert MAX_HEADER_BYTES - 128 <= zf.getinfo("header.npy").file_size <= MAX_HEADER_BYTES
    # a deep info loads wherever load is called: JSON's reader recurses, and an info nested 985
    # deep saved, then failed to load from 10 frames down
    deep, deeper = 1, 1
    for _ in range(MAX_INFO_DEPTH - 1):
        deep = [deep]
    for _ in range(500):
        deeper = [deeper]
    with pytest.raises(ValueError, match="info nests 501 lists or dicts deep"):
        fs.NetModel(net.params, [], {"x": deeper}).save(path)
    fs.NetModel(net.params, [], {"x": deep}).save(path)

    def load_from(frames):
        return fs.load(path) if frames == 0 else load_from(frames - 1)

    assert load_from(sys.getrecursionlimit() - 200).info == {"x": deep}
    # parts changed since construction are checked again
    changes = {
        "shape": lambda m: m.params.update(W1=np.ones((5, 5))),
        "nan": lambda m: m.params["b2"].__setitem__(0, np.nan),
        "history": lambda m: setattr(m, "loss_history", [1.0, np.inf]),
        "info": lambda m: m.info.update(seed=np.int64(3)),
        "info-size": lambda m: m.info.update(big=list(range(300_000))),
    }
    for name, change in changes.items():
        model = fs.NetModel(net.params, net.loss_history, net.info)
        change(model)
        with pytest.raises((ValueError, TypeError)):
            model.save(tmp_path / f"{name}.npz")
    assert os.listdir(tmp_path) == ["m.npz"]


def test_load_refuses_non_regular_files(tmp_path, models):
    """Load of a FIFO hung forever in open(), waiting for a writer; save already refused them."""
    import threading

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            fs.load(fifo)
        except Exception as exc:
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(60)
    if reader.is_alive():  # hung in open(): let it go, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        reader.join(60)
        pytest.fail("fs.load blocked on a FIFO")
    assert isinstance(outcome[0], ValueError)
    assert "fifo.npz" in str(outcome[0]) and "is not a regular file (it is a FIFO)" in str(
        outcome[0]
    )
    with pytest.raises(ValueError, match="is not a regular file \\(it is a folder\\)"):
        fs.load(tmp_path)
    if os.path.exists("/dev/zero"):  # endless: np.load would read it for ever
        with pytest.raises(ValueError, match="it is a character device"):
            fs.load("/dev/zero")
    link = tmp_path / "link.npz"  # symlinks are followed, to a regular file or not
    link.symlink_to(fifo)
    with pytest.raises(ValueError, match="it is a FIFO"):
        fs.load(link)
    models[2].save(tmp_path / "net.npz")
    link.unlink()
    link.symlink_to(tmp_path / "net.npz")
    assert fs.load(link).kind == "net"


SAVE_SLOWLY = """
import sys, time
import numpy as np
import fastspiral as fs

model = fs.LinearModel({"W": np.zeros((2, 3)), "b": np.zeros(3)}, [1.0])
real_savez = np.savez


def slow_savez(fh, **arrays):
    real_savez(fh, **arrays)
    print("writing", flush=True)
    time.sleep(60)


np.savez = slow_savez
model.save(sys.argv[1])
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_during_save_leaves_no_temporary_file(tmp_path, sig):
    """SIGTERM's default ends the process where it stands: the hidden temporary file of an
    interrupted save (40 MB for a large model) stayed behind."""
    import signal
    import subprocess
    import sys

    signum = getattr(signal, sig, None)
    if signum is None:
        pytest.skip(f"no {sig} here")
    (tmp_path / "m.npz").write_bytes(b"the previous model")
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVE_SLOWLY, str(tmp_path / "m.npz")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert len(os.listdir(tmp_path)) == 2  # the temporary file is there
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert os.listdir(tmp_path) == ["m.npz"]
    assert (tmp_path / "m.npz").read_bytes() == b"the previous model"


def test_a_trained_model_is_checked_and_copied_once(monkeypatch):
    """The trainer's copies become the model's parameters (no second copy and check), and X is
    checked once: not again for the scores after training, nor by decision_function."""
    from fastspiral import _problem, backends, model, train

    X, y = fs.make_spiral(seed=0)
    handed: list = []
    checks = {"X": 0, "param": 0}

    def counting(f, key):
        def wrapper(*args, **kwargs):
            checks[key] += 1
            return f(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(_problem, "check_X", counting(_problem.check_X, "X"))
    monkeypatch.setattr(model, "check_X", counting(model.check_X, "X"))
    monkeypatch.setattr(model, "_param", counting(model._param, "param"))
    monkeypatch.setattr(train, "_scores_bound", lambda params, X: np.inf)  # scores computed
    for name in ("numba", "numpy"):
        backend = backends.BACKENDS[name]

        def prepare(problem, real=backend.prepare):
            trainer = real(problem)
            params = trainer.params

            def handing():
                handed.append(params())
                return handed[-1]

            trainer.params = handing
            return trainer

        monkeypatch.setitem(
            backends.BACKENDS, name, backends.Backend(name, prepare, backend.workspace_bytes)
        )
    for name in ("numba", "numpy"):
        for trainer in (fs.train_net, fs.train_linear):
            checks.update(X=0, param=0)
            fitted = trainer(X, y, iters=5, seed=0, backend=name)
            assert checks == {"X": 1, "param": 0}
            for key, value in handed[-1].items():
                assert fitted.params[key] is value
    checks.update(X=0)
    fitted.predict_proba(X)
    assert checks["X"] == 1
    public = fs.LinearModel(fitted.params, fitted.loss_history, fitted.info)  # checks and copies
    assert checks["param"] == 2 and public.params["W"] is not fitted.params["W"]
