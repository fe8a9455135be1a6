"""Record the ``gbnn`` package's boosting arithmetic on fixed weak-learner outputs.

    /tmp/gbnn-venv/bin/python benchmarks/gbnn_record.py   # the venv of gbnn_vs_package.py

Every ``MLPRegressor`` of the package is replaced by a stand-in whose ``predict`` returns
preset outputs, so ``fit`` runs the package's own F0, residual, Newton-step and loss code on
known numbers (subsample=1.0, eta=0.7). The printed values are the ones in tests/test_gbnn.py.
"""

import gbnn.GBNN as G
import numpy as np
from sklearn.preprocessing import LabelBinarizer


class PresetLearner:
    """Stands in for MLPRegressor: round i predicts the i-th preset array."""

    queue: list = []

    def __init__(self, hidden_layer_sizes=(1,), **kw):
        template = hidden_layer_sizes != (1,)  # the package's full-size template network
        self.out = None if template else PresetLearner.queue.pop(0)

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.array(self.out, dtype=np.float64)


G.MLPRegressor = PresetLearner

rng = np.random.RandomState(0)
X = rng.randn(6, 2)
y_multi = np.array([0, 1, 2, 1, 0, 2])
f_multi = [np.round(rng.randn(6, 3), 3) for _ in range(3)]
y_bin = np.array([0, 1, 1, 0, 1, 1])
f_bin = [np.round(rng.randn(6), 3) for _ in range(3)]
y_reg = np.round(rng.randn(6) * 3 + 1, 3)
f_reg = [np.round(rng.randn(6), 3) for _ in range(3)]
for name, est, y, fs in [
    ("multi", G.GNEGNEClassifier, y_multi, f_multi),
    ("binary", G.GNEGNEClassifier, y_bin, f_bin),
    ("regression", G.GNEGNERegressor, y_reg, f_reg),
]:
    PresetLearner.queue = [f.copy() for f in fs]
    m = est(total_nn=3, num_nn_step=1, eta=0.7, subsample=1.0)
    m.fit(X, y)
    enc = y
    if name == "multi":
        enc = LabelBinarizer().fit_transform(y)
    elif name == "binary":
        enc = LabelBinarizer(pos_label=1, neg_label=-1).fit_transform(y).ravel()
    acum = np.ones_like(enc, dtype=float) * m.intercept
    residuals = []
    for f, rho in zip(fs, m.steps):
        residuals.append(m.loss.derive(enc, acum))
        acum = acum + rho * f
    print(f"# {name}")
    print("y =", repr(y.tolist()))
    print("f =", repr([f.tolist() for f in fs]))
    print("f0 =", repr(np.atleast_1d(m.intercept).tolist()))
    print("rho =", repr([float(s) for s in m.steps]))
    print("residual_round1 =", repr(residuals[1].tolist()))
    print("losses =", repr([float(v) for v in m.losses]))
    print("staged =", repr([float(s) for s in m.staged_score(X, y)]))
    if name != "regression":
        print("proba =", repr(m.predict_proba(X).tolist()))
    else:
        print("pred =", repr(m.predict(X).tolist()))
