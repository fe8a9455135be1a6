# Records the gbnn package's arithmetic on fixed weak-learner outputs (run in /tmp/gbnn-venv).
import numpy as np
import gbnn.GBNN as G

OUT = {}
class Fake:
    queue = []
    def __init__(self, hidden_layer_sizes=(1,), **kw):
        self.template = hidden_layer_sizes != (1,)
        self.out = None if self.template else Fake.queue.pop(0)
    def fit(self, X, y):
        return self
    def predict(self, X):
        return np.array(self.out, dtype=np.float64)
G.MLPRegressor = Fake

rng = np.random.RandomState(0)
X = rng.randn(6, 2)
cases = {}
# multi-class: 6 rows, 3 classes
y_multi = np.array([0, 1, 2, 1, 0, 2])
f_multi = [np.round(rng.randn(6, 3), 3) for _ in range(3)]
y_bin = np.array([0, 1, 1, 0, 1, 1])
f_bin = [np.round(rng.randn(6), 3) for _ in range(3)]
y_reg = np.round(rng.randn(6) * 3 + 1, 3)
f_reg = [np.round(rng.randn(6), 3) for _ in range(3)]
np.set_printoptions(precision=17)
for name, est, y, fs, eta in [
    ("multi", G.GNEGNEClassifier, y_multi, f_multi, 0.7),
    ("binary", G.GNEGNEClassifier, y_bin, f_bin, 0.7),
    ("regression", G.GNEGNERegressor, y_reg, f_reg, 0.7),
]:
    Fake.queue = [f.copy() for f in fs]
    m = est(total_nn=3, num_nn_step=1, eta=eta, subsample=1.0)
    if est is G.GNEGNEClassifier:
        G.MLPClassifier_orig = G.MLPClassifier
    m.fit(X, y)
    # residuals of each round: recompute the way fit does
    enc = y
    if name == "multi":
        from sklearn.preprocessing import LabelBinarizer
        enc = LabelBinarizer().fit_transform(y)
    elif name == "binary":
        from sklearn.preprocessing import LabelBinarizer
        enc = LabelBinarizer(pos_label=1, neg_label=-1).fit_transform(y).ravel()
    acum = np.ones_like(enc, dtype=float) * m.intercept
    res = []
    for f, rho in zip(fs, m.steps):
        res.append(m.loss.derive(enc, acum))
        acum = acum + rho * f
    print(f"# {name}")
    print("y =", repr(y.tolist()))
    print("f =", repr([f.tolist() for f in fs]))
    print("f0 =", repr(np.atleast_1d(m.intercept).tolist()))
    print("rho =", repr([float(s) for s in m.steps]))
    print("residual_round1 =", repr(res[1].tolist()))
    print("losses =", repr([float(l) for l in m.losses]))
    print("staged =", repr([float(s) for s in m.staged_score(X, y)]))
    if name != "regression":
        print("proba =", repr(m.predict_proba(X).tolist()))
    else:
        print("pred =", repr(m.predict(X).tolist()))
