"""Prediction and exact save/load."""

import os

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
    np.testing.assert_allclose(probs, np.exp(scores) / np.exp(scores).sum(1, keepdims=True), rtol=1e-12)
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


@pytest.mark.parametrize("bad,exc,msg", [
    (np.zeros((4, 3)), ValueError, "X has 3 features .* trained on 2"),
    (np.array([[0.0, np.nan]]), ValueError, "NaN or infinite"),
    (np.zeros(2), ValueError, "must be 2-D"),
])
def test_predict_rejects_bad_X(models, bad, exc, msg):
    _, _, net, lin = models
    for model in (net, lin):
        for method in (model.predict, model.predict_proba):
            with pytest.raises(exc, match=msg):
                method(bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    X, y = fs.make_spiral(seed=1)
    for model in (fs.train_net(X, y, seed=1, iters=50, hidden=9, dtype=dtype),
                  fs.train_linear(X, y, seed=1, dtype=dtype)):
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
