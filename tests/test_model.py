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
