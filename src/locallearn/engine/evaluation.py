"""What a run evaluates, when, and what it costs.

Per epoch: the validation split (``--val-split``; every ``--eval-every`` epochs and always the
last). At the end: the test set, once, and the training accuracy on a fixed subset of the
training set. With ``--keep-best`` the weights of the best validation epoch are kept (in
memory and in the checkpoint) and the test set is evaluated for them too. With validation
off (``--val-split 0``) the epoch records carry ``test_acc`` as older runs did, and the last
epoch's figure is the summary's (never a second pass over the test set).

When the rule predicts with its network (``Rule.predict``, most rules), evaluation runs a view
of the network with every eval-mode BatchNorm folded into its conv (``engine/fold.py``): the
same function up to float rounding. The view is traced once per run, its folded weights are
recomputed before each pass, and each pass first checks it against ``rule.predict`` on a few
rows (any disagreement beyond rounding: the run evaluates unfolded from then on). Graph
models, and rules with their own ``predict``, are evaluated as they are.

Evaluation runs at ``EVAL_BATCH`` samples per batch: on CPU a conv net's forward pass costs
more per sample in large batches (measured, resnet20 on MNIST, one thread: 3.1-3.9 ms per
sample at batch 50-100, 4.1-4.8 at 250, 8.1 at 1,000, for issue 11; with the folded view,
batch 50, 100 and 250 side by side: BENCHMARKS.md, "evaluation speed").

On a regression dataset every ``*_acc`` key is None (the summary keeps it: DESIGN.md requires
``test_acc`` and ``train_acc``) and ``*_r2`` (the figure compared, kept best by
``--keep-best``) and ``*_rmse`` stand beside it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from locallearn.config import RunConfig
from locallearn.engine.fold import BatchNormFold
from locallearn.engine.loop import Predict, evaluate, evaluate_regression
from locallearn.errors import UsageError
from locallearn.rules.base import Rule

if TYPE_CHECKING:  # engine.run imports this module
    from locallearn.engine.run import Run

EVAL_BATCH = 100
TRAIN_ACC_SAMPLES = 1_000  # the fixed training subset the summary's train_acc is measured on
CHECK_ROWS = 16  # rows each pass compares the folded view with the network on


def resolve_run_config(cfg: RunConfig, *, custom_model: bool = False) -> RunConfig:
    """Fill the unset training settings from the rule's recipe, then the global default."""
    from locallearn.models import MODELS
    from locallearn.recipe import resolve
    from locallearn.rules import RULES

    takes = () if custom_model else MODELS.get(cfg.model).options
    return resolve(cfg, RULES.get(cfg.rule).meta.get("recipe"), takes)


def fixed_subset(n: int, size: int) -> torch.Tensor:
    """``size`` indices spread evenly over ``range(n)`` (all of them when n <= size)."""
    if n <= size:
        return torch.arange(n)
    return torch.linspace(0, n - 1, size).round().long()


class Evaluator:
    """The evaluations of one Run; their time goes into ``run.state.eval_seconds``."""

    def __init__(self, run: Run) -> None:
        self.run = run
        data = run.data
        self.regression = data.task == "regression"
        self._rmse: float | None = None
        self.val: tuple[torch.Tensor, torch.Tensor] | None = None
        if data.x_val is not None and data.y_val is not None:
            self.val = run._to_device(data.x_val, data.y_val)
        if run.cfg.keep_best and self.val is None:
            raise UsageError("--keep-best needs a validation split: give --val-split F (F > 0)")
        # A graph is evaluated whole (its nodes are not independent samples): one batch, and
        # the training accuracy over all training nodes (the other labels are ignored).
        graph = getattr(run, "graph", None)
        self.batch_size = graph.num_nodes if graph is not None else EVAL_BATCH
        if graph is not None:
            self.train_subset = (run._x_train, run._y_train)
        else:
            index = fixed_subset(run._x_train.shape[0], TRAIN_ACC_SAMPLES)
            index = index.to(run._x_train.device)
            self.train_subset = (run._x_train[index], run._y_train[index])
        # --keep-best: {"epoch", "val_acc", "network", "rule"} of the best validation epoch.
        self.best: dict[str, Any] | None = None
        # (epoch, test acc or R^2, RMSE or None) of a pass made
        self._test_cache: tuple[int, float, float | None] | None = None
        # The BatchNorm-folded view: None until first needed, False where it is not used.
        self._fold: BatchNormFold | bool | None = None
        if graph is not None or type(run.rule).predict is not Rule.predict:
            self._fold = False
        self.folded = False  # whether any pass ran on the folded view (the summary says)

    def _predict(self, x: torch.Tensor) -> Predict | None:
        """The folded view, refreshed from the live weights, or None (``rule.predict``).

        Called in eval mode. Every pass first checks the view against ``rule.predict`` on
        ``CHECK_ROWS`` rows of ``x``: a trace bakes in Python-side values (a float attribute
        a rule changes between epochs), which only such a check would notice. On any
        disagreement the run evaluates unfolded from then on."""
        if self._fold is False:
            return None
        rule = self.run.rule
        if self._fold is None or (isinstance(self._fold, BatchNormFold) and self._fold.stale()):
            self._fold = BatchNormFold.of(rule.network) or False
            if self._fold is False:
                return None
        assert isinstance(self._fold, BatchNormFold)
        view = self._fold.refresh()
        if not _agrees(view, rule.predict, x[:CHECK_ROWS]):
            self._fold = False
            return None
        self.folded = True
        return view

    def _timed(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy, or for a regression dataset R^2 (its RMSE is kept in ``_rmse``)."""
        start = time.perf_counter()
        rule = self.run.rule
        rule.train(False)
        predict = self._predict(x)  # its trace and check count as evaluation time
        if self.regression:
            scores = evaluate_regression(rule, x, y, batch_size=self.batch_size, predict=predict)
            score, self._rmse = scores["r2"], scores["rmse"]
        else:
            score = evaluate(rule, x, y, batch_size=self.batch_size, predict=predict)
        self.run.state.eval_seconds += time.perf_counter() - start
        return score

    def _keys(self, split: str, score: float, rmse: float | None = None) -> dict[str, Any]:
        """The record keys of one score: ``{split}_acc``, or for regression ``{split}_acc``
        None beside ``{split}_r2`` and ``{split}_rmse``."""
        if not self.regression:
            return {f"{split}_acc": score}
        return {f"{split}_acc": None, f"{split}_r2": score, f"{split}_rmse": rmse}

    def after_epoch(self, epoch: int) -> dict[str, Any]:
        """The held-out figure of the epoch just trained, for its metrics record."""
        cfg, state = self.run.cfg, self.run.state
        last = epoch + 1 == cfg.epochs or getattr(self.run, "stopper", None) is not None
        if not last and (epoch + 1) % cfg.eval_every:
            return {}
        if self.val is None:
            acc = self._timed(self.run._x_test, self.run._y_test)
            self._test_cache = (epoch + 1, acc, self._rmse)
            return self._keys("test", acc, self._rmse)
        acc = self._timed(*self.val)
        if cfg.keep_best and (state.best_val_acc is None or acc > state.best_val_acc):
            state.best_val_acc, state.best_epoch = acc, epoch + 1
            self.best = {
                "epoch": epoch + 1,
                "val_acc": acc,
                "network": _cpu_copy(self.run.rule.network.state_dict()),
                "rule": _cpu_copy(self.run.rule.state_dict()),
            }
        return self._keys("val", acc, self._rmse)

    def test_acc(self) -> float:
        """Test accuracy (regression: R^2) of the current weights, one pass per epoch."""
        epoch = self.run.state.epoch
        if self._test_cache is None or self._test_cache[0] != epoch:
            acc = self._timed(self.run._x_test, self.run._y_test)
            self._test_cache = (epoch, acc, self._rmse)
        return self._test_cache[1]

    def final(self) -> dict[str, Any]:
        """The summary's accuracies: test (one pass), val, train (fixed subset), best."""
        run = self.run
        test = self.test_acc()
        assert self._test_cache is not None
        out: dict[str, Any] = self._keys("test", test, self._test_cache[2])
        key = "val_r2" if self.regression else "val_acc"
        vals = [r for r in run.state.history if r.get(key) is not None]
        out["val_acc"] = vals[-1]["val_acc"] if vals else None
        if getattr(run, "stopper", None) is not None and self.val is not None:
            # --patience restored each layer's best state after its last epoch's record.
            out["val_acc"] = self._timed(*self.val)
        if self.regression:
            out["val_r2"] = vals[-1]["val_r2"] if vals else None
            out["val_rmse"] = vals[-1]["val_rmse"] if vals else None
        if not hasattr(self, "_train_acc") or self._train_acc[0] != run.state.epoch:
            self._train_acc = (run.state.epoch, self._timed(*self.train_subset), self._rmse)
        out.update(self._keys("train", self._train_acc[1], self._train_acc[2]))
        out["train_acc_samples"] = int((self.train_subset[1] >= 0).sum())
        out["eval_folded"] = self.folded
        if run.cfg.keep_best and self.best is not None:
            out.update(
                best_epoch=self.best["epoch"],
                best_val_acc=self.best["val_acc"],
                best_test_acc=self._best_test_acc(),
            )
        return out

    def _best_test_acc(self) -> float:
        """Test accuracy of the kept weights; the run's own weights are put back after."""
        assert self.best is not None
        rule = self.run.rule
        if "test_acc" in self.best and self.best.get("at") == self.run.state.epoch:
            return self.best["test_acc"]
        stopper = getattr(self.run, "stopper", None)
        if self.best["epoch"] == self.run.state.epoch and stopper is None:
            # The best epoch is the last: its weights are the run's own, already tested.
            return self.test_acc()
        current = (_cpu_copy(rule.network.state_dict()), _cpu_copy(rule.state_dict()))
        rule.network.load_state_dict(self.best["network"])
        rule.load_state_dict(self.best["rule"])
        try:
            acc = self._timed(self.run._x_test, self.run._y_test)
        finally:
            rule.network.load_state_dict(current[0])
            rule.load_state_dict(current[1])
        self.best["test_acc"], self.best["at"] = acc, self.run.state.epoch
        return acc


@torch.no_grad()
def _agrees(view: Predict, predict: Predict, x: torch.Tensor) -> bool:
    """Whether the folded view gives ``predict``'s outputs on ``x`` up to float rounding
    (relative to the outputs' scale: a fold changes the order of a few multiply-adds)."""
    if x.shape[0] == 0:
        return False
    ref, out = predict(x), view(x)
    if ref.shape != out.shape or ref.dtype != out.dtype:
        return False
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return bool(torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, scale)))


def _cpu_copy(state: Any) -> Any:
    """A deep copy on the CPU of a (nested) state dict: kept weights never alias live ones."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return type(state)((k, _cpu_copy(v)) for k, v in state.items())
    if isinstance(state, list | tuple):
        return type(state)(_cpu_copy(v) for v in state)
    return state
