"""scikit-learn estimators over every rule: numpy in, numpy out.

    from locallearn.sklearn import GBNNClassifier, LocalLearningClassifier
    clf = LocalLearningClassifier(rule="greedy", model="mlp", blocks=2, epochs=20).fit(X, y)
    clf.predict_proba(X_test)
    GBNNRegressor(total_nn=50, random_state=0).fit(X, y).score(X_test, y_test)  # R^2

Each ``fit`` is one in-memory run of the one training loop (no run directory) on the rows
given; ``X`` is float, one row per sample (``model`` must accept inputs of shape
(n_features,): ``mlp`` does). Options of one rule or model (``blocks``, ``head``, ``width``,
``depth`` ...) are keyword arguments of the estimator, named as the RunConfig fields, and are
parameters like the others (``get_params``/``set_params``, grid search). ``random_state``
seeds the run (an int gives the same model every time; None draws a seed from numpy's global
generator, as scikit-learn does). Fitting leaves torch's global RNG state as it was.
Predictions are computed in float64 by a copy of the trained rule, so they do not depend on
how the rows are batched.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from locallearn.config import RunConfig
from locallearn.data import Dataset
from locallearn.engine.run import Run
from locallearn.errors import UsageError

_RUN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "device", "threads")


class _LocalLearningBase(BaseEstimator):
    """What the classifier and the regressor share: parameters, one run per fit, predict."""

    _task = "classification"

    def __init__(
        self,
        rule: str = "bp",
        model: str = "mlp",
        *,
        epochs: int = 20,
        batch_size: int = 100,
        lr: float = 1e-2,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        threads: int | None = None,
        **options: Any,
    ) -> None:
        self.rule = rule
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self._options = dict(options)  # private: scikit-learn's checks allow no other attribute

    # -- parameters: the signature's plus the rule/model options given -----------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {**super().get_params(deep=deep), **self._options}

    def set_params(self, **params: Any) -> _LocalLearningBase:
        # As scikit-learn's convention: store now, validate in fit (an unknown option is a
        # ValueError there).
        own = set(super().get_params(deep=False))
        for key in [k for k in params if k not in own and "__" not in k]:
            self._options[key] = params.pop(key)
        super().set_params(**params)
        return self

    # -- fitting ------------------------------------------------------------------------------
    def _config(self, seed: int) -> RunConfig:
        values = {k: getattr(self, k) for k in _RUN_KEYS}
        values.update(self._options)
        fields = set(RunConfig.__dataclass_fields__) - {
            "rule",
            "model",
            "data",
            "seed",
            "val_split",
        }
        unknown = sorted(k for k in values if k not in fields)
        if unknown:
            raise ValueError(
                f"invalid parameter {unknown[0]!r} for {type(self).__name__}: give a RunConfig "
                "option (width, depth, blocks, head, ...; see `locallearn train --help`)"
            )
        # val_split 0: fit trains on every row it is given (cross-validation is the caller's).
        return RunConfig(
            rule=self.rule, model=self.model, data="numpy", seed=seed, val_split=0.0, **values
        )

    def _fit(self, X: np.ndarray, y: np.ndarray, y_train: torch.Tensor, outputs: int) -> None:
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        x_train = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        # Run evaluates a test split after each epoch; one row keeps that free.
        dataset = Dataset(
            name="numpy",
            x_train=x_train,
            y_train=y_train,
            x_test=x_train[:1].clone(),
            y_test=y_train[:1].clone(),
            classes=outputs,
            source="arrays passed to fit",
            task=self._task,
        )
        cfg = self._config(seed)
        try:
            with torch.random.fork_rng(devices=[]):  # the user's torch RNG state is kept
                run = Run(cfg, dataset=dataset)
                self.summary_ = run.fit()
        except UsageError as err:
            raise ValueError(str(err)) from None
        self.n_iter_ = self._iterations()
        rule = run.rule if run.device.type == "cpu" else run.rule.to("cpu")
        rule = rule.to(torch.float64)  # type: ignore[arg-type]
        rule.train(False)
        self.rule_ = rule

    def _iterations(self) -> int:
        return int(self.summary_["epochs"])

    def _scores(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "rule_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        x = torch.from_numpy(np.ascontiguousarray(X))
        with torch.no_grad():
            out = self.rule_.predict(x)
        return out.numpy()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu"
        return tags


class LocalLearningClassifier(ClassifierMixin, _LocalLearningBase):
    """Any rule as a scikit-learn classifier: ``fit(X, y)`` trains it, ``predict_proba`` is
    the softmax of the rule's class scores (for GBNN, the package's probabilities)."""

    def fit(self, X: Any, y: Any) -> LocalLearningClassifier:
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got only one class "
                f"({self.classes_[0]!r})"
            )
        self._fit(X, y, torch.from_numpy(index.astype(np.int64)), len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        scores = torch.from_numpy(self._scores(X))
        return torch.softmax(scores, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        scores = self._scores(X)  # first: an unfitted estimator raises NotFittedError
        return self.classes_[np.argmax(scores, axis=1)]


class LocalLearningRegressor(RegressorMixin, _LocalLearningBase):
    """A rule that supports regression (bp, greedy, gbnn) as a scikit-learn regressor: mean
    squared error loss, one output; ``score`` is R^2."""

    _task = "regression"

    def fit(self, X: Any, y: Any) -> LocalLearningRegressor:
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        y_train = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        self._fit(X, y, y_train, 1)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self._scores(X).reshape(-1)


class _GBNNParams:
    """The ``gbnn`` package's parameter names, mapped onto rule ``gbnn``'s options.

    ``total_nn`` hidden units in all, ``num_nn_step`` per round (T = total_nn // num_nn_step,
    as the package), ``eta`` shrinkage, ``subsample`` rows per round (without replacement),
    ``activation``, ``random_state``; ``max_iter`` is the number of optimizer steps of each
    round's weak learner (the package: L-BFGS iterations, default 200; ours default 5 Adam
    steps at lr 3e-2, full batch: ``batch_size=None`` gives the whole subsample; chosen on
    validation splits of the training sets, see BENCHMARKS.md: in the worst case over six
    datasets and J = 1, 4 as good as the former 30 steps at 1e-2, at a sixth of the cost).
    ``refit`` (rule option ``gb_refit``: the output layer refit by least squares at the end
    of each round), ``lr``,
    ``optimizer``, ``weight_decay`` (the package's ``alpha`` is an L2 penalty of 1e-4),
    ``device`` and ``threads`` are ours.
    """

    def __init__(
        self,
        total_nn: int = 200,
        num_nn_step: int = 1,
        eta: float = 1.0,
        subsample: float = 0.5,
        max_iter: int = 5,
        random_state: int | np.random.RandomState | None = None,
        activation: str = "logistic",
        *,
        refit: bool = True,
        lr: float = 3e-2,
        batch_size: int | None = None,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.total_nn = total_nn
        self.num_nn_step = num_nn_step
        self.eta = eta
        self.subsample = subsample
        self.max_iter = max_iter
        self.random_state = random_state
        self.activation = activation
        self.refit = refit
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.device = device
        self.threads = threads

    @property
    def _options(self) -> dict[str, Any]:
        return {}

    @property
    def rule(self) -> str:
        return "gbnn"

    @property
    def model(self) -> str:
        return "mlp"  # unused: the rule builds its own network

    @property
    def epochs(self) -> int:
        return 1  # the run is evaluated once; the rounds and steps set how much it trains

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return BaseEstimator.get_params(self, deep=deep)  # type: ignore[arg-type]

    def set_params(self, **params: Any) -> Any:
        return BaseEstimator.set_params(self, **params)  # type: ignore[arg-type]

    def _iterations(self) -> int:
        return self.max_iter  # optimizer steps of each round's weak learner

    def _config(self, seed: int) -> RunConfig:
        if self.num_nn_step < 1 or self.total_nn < self.num_nn_step:
            raise ValueError(
                f"total_nn ({self.total_nn}) must be at least num_nn_step ({self.num_nn_step}) "
                "and num_nn_step at least 1"
            )
        return RunConfig(
            rule="gbnn",
            data="numpy",
            seed=seed,
            val_split=0.0,
            epochs=1,
            batch_size=self.batch_size if self.batch_size is not None else 2**31 - 1,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            device=self.device,
            threads=self.threads,
            gb_rounds=self.total_nn // self.num_nn_step,
            gb_units=self.num_nn_step,
            gb_eta=self.eta,
            gb_subsample=self.subsample,
            gb_steps=self.max_iter,
            gb_activation=self.activation,
            gb_refit=self.refit,
        )


class GBNNClassifier(_GBNNParams, LocalLearningClassifier):
    """GBNN (Emami & Martinez-Munoz 2023) with the ``gbnn`` package's ``GNEGNEClassifier``
    parameters. ``staged_score(X, y)`` is the accuracy after each round (as the package's),
    ``to_network()`` the packed ``nn.Sequential`` (its softmax is ``predict_proba``)."""

    def staged_score(self, X: Any, y: Any) -> list[float]:
        check_is_fitted(self, "rule_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        y = np.asarray(y)
        index = np.searchsorted(self.classes_, y).clip(0, len(self.classes_) - 1)
        index = np.where(self.classes_[index] == y, index, -1)  # an unseen label is wrong
        return self.rule_.staged_scores(torch.from_numpy(X), torch.from_numpy(index))

    def to_network(self) -> torch.nn.Sequential:
        check_is_fitted(self, "rule_")
        return copy.deepcopy(self.rule_.network).float()


class GBNNRegressor(_GBNNParams, LocalLearningRegressor):
    """GBNN with the ``gbnn`` package's ``GNEGNERegressor`` parameters (squared loss, rho =
    eta). ``staged_score(X, y)`` is R^2 after each round (the package's is the MSE),
    ``to_network()`` the packed ``nn.Sequential`` whose output is the prediction."""

    def staged_score(self, X: Any, y: Any) -> list[float]:
        check_is_fitted(self, "rule_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        target = torch.from_numpy(np.asarray(y, dtype=np.float64).reshape(-1))
        return self.rule_.staged_scores(torch.from_numpy(X), target)

    def to_network(self) -> torch.nn.Sequential:
        check_is_fitted(self, "rule_")
        return copy.deepcopy(self.rule_.network).float()


__all__ = ["GBNNClassifier", "GBNNRegressor", "LocalLearningClassifier", "LocalLearningRegressor"]
