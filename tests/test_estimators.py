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
