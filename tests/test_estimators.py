"""scikit-learn compatibility: the library's own estimator checks, pipelines, grid search."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastspiral as fs
from fastspiral.estimators import LinearClassifier, NetClassifier


# Fewer iterations than the case study's 10,000 keep the ~50 checks quick;
# the checks' accuracy bars (e.g. > 0.83 on blobs) are still met.
# A fixed random_state makes them deterministic, so no check is skipped for it.
# Marked slow: on an empty compile cache the checks' dozen data shapes each
# compile kernels of their own (about two minutes); .ci/run runs them after
# the README's test command.
@pytest.mark.slow
@parametrize_with_checks(
    [
        NetClassifier(iters=300, hidden=20, random_state=0),
        LinearClassifier(iters=100, random_state=0),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_matches_train_net_and_accepts_any_labels():
    X, y = fs.make_spiral(seed=0)
    palette = np.array(["blue", "red", "yellow"])
    names = palette[y]
    clf = NetClassifier(random_state=0, iters=2000).fit(X, names)
    net = fs.train_net(X, y, seed=0, iters=2000)
    assert list(clf.classes_) == ["blue", "red", "yellow"]
    assert clf.n_features_in_ == 2 and clf.n_iter_ == 2000
    np.testing.assert_array_equal(clf.loss_curve_, net.loss_history)
    np.testing.assert_array_equal(clf.predict(X), palette[net.predict(X)])
    np.testing.assert_allclose(clf.predict_proba(X), net.predict_proba(X))
    # Non-contiguous integer labels map to columns in sorted order.
    odd = np.array([10, -5, 42])[y]
    lin = LinearClassifier(random_state=0).fit(X, odd)
    assert list(lin.classes_) == [-5, 10, 42]
    assert set(np.unique(lin.predict(X))) <= {-5, 10, 42}


def test_warm_start_continues_training():
    X, y = fs.make_spiral(seed=1)
    clf = NetClassifier(iters=200, random_state=0, warm_start=True)
    clf.fit(X, y)
    clf.fit(X, y)
    straight = fs.train_net(X, y, seed=0, iters=400)
    # MLPClassifier's convention: the warm fit extends loss_curve_ and n_iter_
    assert clf.n_iter_ == 400 and clf.loss_curve_.shape == (400,)
    np.testing.assert_allclose(clf.loss_curve_[200:], straight.loss_history[200:], rtol=1e-12)
    np.testing.assert_array_equal(clf.loss_curve_[:200], straight.loss_history[:200])
    cold = NetClassifier(iters=200, random_state=0).fit(X, y)
    cold.fit(X, y)
    np.testing.assert_array_equal(cold.loss_curve_, straight.loss_history[:200])
    with pytest.raises(ValueError, match="warm_start=True needs the classes"):
        clf.fit(X[y < 2], y[y < 2])


def test_pipeline_and_grid_search_on_the_spiral():
    X, y = fs.make_spiral(seed=2)
    pipe = make_pipeline(StandardScaler(), NetClassifier(iters=3000, random_state=0))
    assert pipe.fit(X, y).score(X, y) >= 0.95
    search = GridSearchCV(
        NetClassifier(iters=1500, random_state=0),
        {"hidden": [2, 50], "reg": [1e-3, 1.0]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    search.fit(X, y)
    assert search.best_params_ == {"hidden": 50, "reg": 1e-3}
    assert search.best_score_ > 0.8
    assert search.cv_results_["mean_test_score"].min() < 0.7  # tiny or over-regularised nets lose


def test_importing_fastspiral_does_not_import_sklearn():
    import subprocess
    import sys

    code = "import sys, fastspiral; print('sklearn' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("warm_start", [False, True])
def test_a_failed_fit_changes_nothing(warm_start):
    """fit set classes_ and n_features_in_ before training; when the training raised, the old
    model_ was read through the new labels (predict gave the new labels, predict_proba 3 columns
    for 2 classes)."""
    from sklearn.exceptions import NotFittedError

    X, y = fs.make_spiral(seed=0)
    names = np.array(["a", "b", "c"])[y]
    clf = NetClassifier(iters=50, hidden=10, random_state=0, warm_start=warm_start).fit(X, names)
    before = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    predicted, proba = clf.predict(X), clf.predict_proba(X)
    two = y < 2
    for attempt in (
        lambda: clf.set_params(step_size=1e8).fit(X[two], np.array(["p", "q"])[y[two]]),
        lambda: clf.set_params(step_size=1e8).fit(X, names),
        lambda: clf.set_params(step_size=1.0, iters=-1).fit(np.c_[X, X], names),
        lambda: clf.set_params(iters=50, hidden=0).fit(np.c_[X, X], names),
    ):
        with pytest.raises((FloatingPointError, ValueError)):
            attempt()
        assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == before.keys()
        for key, value in before.items():
            assert vars(clf)[key] is value
        np.testing.assert_array_equal(clf.predict(X), predicted)
        np.testing.assert_array_equal(clf.predict_proba(X), proba)
    fresh = NetClassifier(iters=50, step_size=1e8, random_state=0)
    with pytest.raises(FloatingPointError):
        fresh.fit(X, names)
    assert not [k for k in vars(fresh) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        fresh.predict(X)


def test_dates_are_refused_as_features():
    """scikit-learn's checks cast datetime and timedelta features to float without a word."""
    X, y = fs.make_spiral(seed=0)
    clf = LinearClassifier(iters=10, random_state=0)
    for bad in (X.astype("m8[s]"), X.astype("M8[D]")):
        with pytest.raises(TypeError, match="X must hold numbers, not dates or durations"):
            clf.fit(bad, y)
    clf.fit(X, y)
    with pytest.raises(TypeError, match="X must hold numbers, not dates or durations"):
        clf.predict(X.astype("m8[s]"))
    dates = np.array(["2024-01-01", "2024-06-01", "2025-01-01"], "M8[D]")
    assert set(clf.fit(X, dates[y]).predict(X)) <= set(dates)  # dates as labels are labels


def test_predictions_check_X_once_and_keep_float32_checks(monkeypatch):
    from fastspiral import model

    X, y = fs.make_spiral(seed=0)
    clf = NetClassifier(iters=20, random_state=0).fit(X, y)
    calls = []
    monkeypatch.setattr(model, "check_X", lambda *a, **k: calls.append(1))
    clf.predict(X)
    clf.predict_proba(X)
    assert calls == []  # scikit-learn's check, then the model's arithmetic
    monkeypatch.undo()
    small = NetClassifier(iters=20, random_state=0, dtype="float32").fit(X, y)
    with pytest.raises(ValueError, match="X holds values too large for float32"):
        small.predict(X * 1e300)  # finite in float64, inf in the model's float32
