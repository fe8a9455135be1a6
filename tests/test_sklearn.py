"""scikit-learn estimators: the library's own estimator checks, pipelines, grid search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_regression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from locallearn.sklearn import (
    GBNNClassifier,
    GBNNRegressor,
    LocalLearningClassifier,
    LocalLearningRegressor,
)

# Tiny settings, passed through the constructors: the checks fit a few hundred times.
ESTIMATORS = [
    LocalLearningClassifier(
        "greedy", "mlp", blocks=2, width=16, epochs=8, lr=0.03, random_state=0, threads=1
    ),
    LocalLearningRegressor("bp", "mlp", width=16, epochs=15, lr=0.03, random_state=0, threads=1),
    GBNNClassifier(total_nn=6, num_nn_step=2, max_iter=15, lr=0.05, random_state=0, threads=1),
    GBNNRegressor(total_nn=6, num_nn_step=2, max_iter=30, lr=0.05, random_state=0, threads=1),
]


def expected_failed_checks(estimator):
    return getattr(estimator, "_expected_failures", lambda: {})()


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_every_check_applies():
    """No estimator declares an expected failure: every scikit-learn check runs (the four
    skips are scikit-learn's own array-API checks, which need SCIPY_ARRAY_API=1)."""
    assert all(expected_failed_checks(e) == {} for e in ESTIMATORS)


def test_pipeline_and_grid_search_over_a_rule_option():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(
        StandardScaler(),
        LocalLearningClassifier("greedy", blocks=2, width=8, epochs=5, random_state=0, threads=1),
    )
    search = GridSearchCV(pipe, {"locallearningclassifier__width": [4, 16]}, cv=2).fit(X, y)
    assert search.best_params_["locallearningclassifier__width"] in (4, 16)
    assert search.best_estimator_[-1].get_params()["width"] in (4, 16)
    assert search.score(X, y) > 0.6


def test_options_are_parameters_and_bad_ones_fail_at_fit():
    clf = LocalLearningClassifier("greedy", blocks=2, width=8)
    assert clf.get_params()["blocks"] == 2 and clf.get_params()["width"] == 8
    clf.set_params(width=4, lr=0.1)
    assert clf.get_params()["width"] == 4 and clf.lr == 0.1
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="invalid parameter 'no_such_option'"):
        LocalLearningClassifier(no_such_option=1, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="does not apply to rule 'bp'"):
        LocalLearningClassifier("bp", head="linear", epochs=1).fit(X, y)


def test_a_rule_without_regression_refuses_with_the_rules_that_can():
    X, y = make_regression(n_samples=40, n_features=4, random_state=0)
    with pytest.raises(ValueError, match="rule 'ff' does not support regression.*bp, gbnn"):
        LocalLearningRegressor("ff", epochs=1).fit(X, y)


def test_gbnn_estimators_predict_as_their_packed_network_and_keep_torch_rng():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    state = torch.get_rng_state()
    clf = GBNNClassifier(total_nn=6, num_nn_step=2, max_iter=10, random_state=0).fit(X, y)
    assert torch.equal(torch.get_rng_state(), state), "fit must not move torch's global RNG"
    net = clf.to_network()
    with torch.no_grad():
        proba = torch.softmax(net(torch.from_numpy(X).float()), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-5)
    staged = clf.staged_score(X, y)
    assert len(staged) == 3 and staged[-1] == pytest.approx(clf.score(X, y))
    assert clf.n_iter_ == 10
    Xr, yr = make_regression(n_samples=60, n_features=3, random_state=0)
    reg = GBNNRegressor(total_nn=4, max_iter=10, random_state=0).fit(Xr, yr)
    with torch.no_grad():
        out = reg.to_network()(torch.from_numpy(Xr).float()).numpy().reshape(-1)
    np.testing.assert_allclose(reg.predict(Xr), out, rtol=1e-4, atol=1e-3)
    assert reg.staged_score(Xr, yr)[-1] == pytest.approx(reg.score(Xr, yr))
