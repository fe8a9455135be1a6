"""GBNN: a one-hidden-layer network trained by gradient boosting, J hidden units per round.

Emami & Martinez-Munoz, "Sequential Training of Neural Networks with Gradient Boosting",
IEEE Access 11 (2023). Its code is the ``gbnn`` package (0.0.2, ``gbnn/GBNN.py``); every
formula below was checked against that source (see METHODS.md and ``tests/test_gbnn.py``).

The model after round t is :math:`F_t(x) = F_0 + \\sum_{s \\le t} \\rho_s f_s(x)`, where
:math:`f_s(x) = W^{(2)}_s\\,\\sigma(W^{(1)}_s x + b^{(1)}_s) + b^{(2)}_s` is round s's weak
learner: J hidden units and one output per target column. Round t fits :math:`f_t` by least
squares to the pseudo-residual :math:`r_t = -\\partial L / \\partial F` at :math:`F_{t-1}`,
on a subsample of the training rows, then takes a step :math:`\\rho_t` computed on all rows.
Per task, as in the package:

- multi-class (K > 2 classes): y one-hot, :math:`F_0 = 0`, :math:`r = y - \\mathrm{softmax}(F)`,
  one scalar Newton step for the round,
  :math:`\\rho = -\\eta \\sum f (y - p) / \\sum f^2 p (p - 1)` with :math:`p = y - r`;
- binary: :math:`y \\in \\{-1, +1\\}`, :math:`L = \\log(1 + e^{-2yF})`,
  :math:`F_0 = \\tfrac12 \\log\\frac{1 + \\bar y}{1 - \\bar y}`, :math:`r = 2y / (1 + e^{2yF})`,
  :math:`\\rho = \\eta \\sum r f / \\sum r f^2 (2y - r)`, :math:`P(y = +1) = 1 / (1 + e^{-2F})`;
- regression: :math:`F_0 = \\bar y`, :math:`r = y - F`, :math:`\\rho = \\eta`.

The rounds pack into one plain ``nn.Sequential`` (``rule.network``): Flatten, a hidden layer of
T*J units (round s's units are rows sJ..sJ+J-1), the activation, and an output layer whose
columns are :math:`\\rho_s W^{(2)}_s` and whose bias is :math:`F_0 + \\sum_s \\rho_s b^{(2)}_s`.
Its output is the class logits: :math:`F` (multi-class: softmax gives the package's
probabilities), :math:`[0, 2F]` (binary: softmax gives :math:`1/(1+e^{-2F})`, the package's
``to_NN`` doubling), or the prediction :math:`F` (regression). A round not yet trained has
zero output weights, so at any time the network predicts :math:`F` of the finished rounds.

How the rounds go through the one loop: each round is a stage (``--blocks`` is T). Round t
``trains`` only while it is current; a resting round hands its input on unchanged
(``rest``), so a step costs one round's forward and backward. ``epoch_batches`` feeds the
current round's batches (its subsample, with its residuals as targets); ``after_step`` ends
a round after its last step (rho, packing). Only the current round's graph is ever alive, and
``act_bytes_peak`` is that round's.

Where ours differs from the package, and why:

- The weak learner is trained by the run's optimizer (default Adam, ``--lr``) for
  ``--gb-steps`` steps on mini-batches of ``--batch-size`` rows of the subsample (full batch
  when the batch size covers it), minimising the mean squared error; the package runs
  scikit-learn's ``MLPRegressor`` with L-BFGS for up to ``max_iter=200`` iterations, full
  batch, with an L2 penalty ``alpha=1e-4`` (ours: ``--weight-decay``, default 0). The
  optimizer is what the one loop steps; L-BFGS is not a per-batch optimizer.
- Unless ``--no-gb-refit``, at the end of its round the weak learner's output layer (which
  the output is linear in) is refit by exact least squares on the round's subsample, given
  its trained hidden units: the point L-BFGS converges to for those weights. With a budget
  of a few dozen Adam steps it is what keeps a round's fit close to the package's (chosen
  on validation splits; BENCHMARKS.md).
- The boosting arithmetic (residuals, rho, losses) runs in float64 like the package's numpy;
  the weak learners train in float32. In float32 a softmax saturates once a class leads by
  about 17 and the multi-class Newton step's denominator becomes exactly 0.
- The multi-class Newton step diverges on training sets the rounds separate (p(1-p) -> 0,
  rho grows round after round): the package does the same (iris, T=50: both blow up on
  some seeds; BENCHMARKS.md). We keep its formula; a round whose rho is not finite adds
  nothing (rho = 0), where the package would propagate inf/NaN.
- The weak learner's output is multiplied by a fixed scale, the RMS of its targets (set at
  the round's start): the same function class, so the same boosted model, but Adam's step
  size then means the same for residuals of size 0.01 or 100 (L-BFGS is scale-free).
- The subsample (``int(subsample * N)`` rows, without replacement, as the package) is drawn
  with a torch generator seeded from the run seed and the round, so a run is reproducible
  and resumable; the package draws it from numpy's global RNG, not its ``random_state``.
- Initial weights: Glorot-uniform as scikit-learn's MLP (bound sqrt(2/(fan_in+fan_out)) for
  the logistic activation, sqrt(6/...) otherwise), drawn from torch's generator.
- Epochs: the T * ``--gb-steps`` optimizer steps are split evenly over ``--epochs`` (an
  epoch record may end inside a round); ``--epochs`` sets how often the run is evaluated and
  checkpointed, not how much it trains. Give --epochs T for one record per round. The
  run's ``train_loss`` is the last trained stage's (a round's normalised residual fit);
  the boosted model's loss after each round is ``gb_train_loss``.
- The package's multi-class training "loss" is a sum over rows; ``gb_train_loss`` here is the
  mean (cross-entropy, log-exponential or squared error) after each round.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "identity": nn.Identity,
}
SEED_STREAM = 1_000_033  # mixes (round, pass) into the subsample/permutation generators


# -- the package's losses, as functions of tensors ------------------------------------------
class BoostLoss:
    """One task's boosting loss: F0, the pseudo-residual, the round's step, the loss."""

    name = ""

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """Targets as the package sees them, (N, outputs) float."""
        raise NotImplementedError

    def init(self, y: torch.Tensor) -> torch.Tensor:
        """F0, (outputs,)."""
        raise NotImplementedError

    def residual(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, y: torch.Tensor, r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """The round's step before shrinkage (a 0-dim tensor), from the targets, the
        round's residuals and its weak learner's predictions, all on every training row."""
        raise NotImplementedError

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Mean loss of raw predictions ``f`` (N, outputs)."""
        raise NotImplementedError


class MultiClassLoss(BoostLoss):
    name = "multi-class"

    def __init__(self, classes: int) -> None:
        self.classes = classes

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y.long(), self.classes).to(torch.get_default_dtype())

    def init(self, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros(y.shape[1], dtype=y.dtype, device=y.device)

    def residual(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return y - torch.softmax(f, dim=1)

    def step(self, y: torch.Tensor, r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        p = y - r
        return -(f * (y - p)).sum() / (f * f * p * (p - 1)).sum()

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(f, dim=1) - (y * f).sum(dim=1)).mean()


class BinaryLoss(BoostLoss):
    name = "binary"

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        return (2.0 * y.to(torch.get_default_dtype()) - 1.0).reshape(-1, 1)  # class 1 -> +1

    def init(self, y: torch.Tensor) -> torch.Tensor:
        mean = y.mean()
        return (0.5 * torch.log((1 + mean) / (1 - mean))).reshape(1)

    def residual(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(2.0 * y / (1 + torch.exp(2.0 * y * f)))

    def step(self, y: torch.Tensor, r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (r * f).sum() / (r * f * f * (2.0 * y - r)).sum()

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return F.softplus(-2.0 * y * f).mean()  # log(1 + e^(-2yF)), without overflow


class SquaredLoss(BoostLoss):
    name = "regression"

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(torch.get_default_dtype()).reshape(y.shape[0], -1)

    def init(self, y: torch.Tensor) -> torch.Tensor:
        return y.mean(dim=0)

    def residual(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return y - f

    def step(self, y: torch.Tensor, r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return torch.ones((), dtype=f.dtype, device=f.device)

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (y - f).pow(2).mean()


def boost_loss(task: str, classes: int) -> BoostLoss:
    """The package's choice: squared loss for regression, log-exponential for two classes,
    multi-class cross-entropy otherwise."""
    if task == "regression":
        return SquaredLoss()
    return BinaryLoss() if classes == 2 else MultiClassLoss(classes)


def staged_raw(f0: torch.Tensor, rhos: torch.Tensor, learner_outputs: torch.Tensor) -> torch.Tensor:
    """(T, N, outputs): F after each round, from the weak learners' outputs (T, N, outputs)."""
    return f0 + torch.cumsum(rhos.reshape(-1, 1, 1) * learner_outputs, dim=0)


def staged_score(kind: str, staged: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The score after each round from ``staged_raw``: accuracy for ``kind`` multi-class
    (argmax of F) or binary (F > 0, i.e. P(+1) = 1/(1 + e^(-2F)) > 1/2), with ``y`` the class
    indices; R^2 for regression, with ``y`` the targets (N,)."""
    if kind == "regression":
        target = y.reshape(1, -1).to(staged.dtype)
        ss_res = (staged[..., 0] - target).pow(2).sum(dim=1)
        ss_tot = (target - target.mean()).pow(2).sum()
        if float(ss_tot) == 0:
            return [1.0 if float(v) == 0 else 0.0 for v in ss_res]
        return (1 - ss_res / ss_tot).tolist()
    pred = (staged[..., 0] > 0).long() if kind == "binary" else staged.argmax(dim=2)
    return (pred == y.reshape(1, -1)).double().mean(dim=1).tolist()


# -- modules --------------------------------------------------------------------------------
def glorot_(linear: nn.Linear, activation: str) -> None:
    """scikit-learn MLP's initialisation (``_init_coef``): weights and biases uniform in
    +-sqrt(factor / (fan_in + fan_out)), factor 2 for the logistic activation, else 6."""
    factor = 2.0 if activation == "logistic" else 6.0
    bound = math.sqrt(factor / (linear.in_features + linear.out_features))
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound)
        linear.bias.uniform_(-bound, bound)


def _activation_grad(activation: str, a: torch.Tensor) -> torch.Tensor:
    """d act / d z written with the activation's output a = act(z)."""
    if activation == "logistic":
        return a * (1 - a)
    if activation == "tanh":
        return 1 - a * a
    if activation == "relu":
        return (a > 0).to(a.dtype)
    return torch.ones_like(a)


class _OneHiddenLayer(torch.autograd.Function):
    r"""A weak learner's forward, fused: :math:`f = s\,(W_2\,\sigma(W_1 x + b_1) + b_2)`.

    One autograd node instead of five: a round's step is a few tiny matrix products, so the
    nodes' overhead, not the arithmetic, is what a round costs. Saves x and the hidden
    activity; the input's gradient is not computed (a round's input is the data).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
        scale: torch.Tensor,
        activation: str,
    ) -> torch.Tensor:
        a = ACTIVATION_FNS[activation](torch.addmm(b1, x, w1.t()))
        ctx.save_for_backward(x, a, w2, scale)
        ctx.activation = activation
        return torch.addmm(b2, a, w2.t()) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, a, w2, scale = ctx.saved_tensors
        g2 = grad * scale  # (B, outputs)
        gz = (g2 @ w2) * _activation_grad(ctx.activation, a)  # (B, J)
        return None, gz.t() @ x, gz.sum(0), g2.t() @ a, g2.sum(0), None, None


ACTIVATION_FNS = {
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda z: z,
}


class _GlorotLinear(nn.Linear):
    """A linear layer left uninitialised by its constructor: ``glorot_`` sets it (torch's
    default init would draw twice as many random numbers, all overwritten)."""

    def reset_parameters(self) -> None:
        pass


class WeakLearner(nn.Module):
    """One round: Flatten, J hidden units, the activation, one output per target column,
    times a fixed ``scale`` (the RMS of the round's targets; see the module docstring)."""

    def __init__(self, inputs: int, units: int, outputs: int, activation: str) -> None:
        super().__init__()
        self.hidden = _GlorotLinear(inputs, units)
        self.act = ACTIVATIONS[activation]()
        self.out = _GlorotLinear(units, outputs)
        self.activation = activation
        glorot_(self.hidden, activation)
        glorot_(self.out, activation)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if torch.is_grad_enabled():
            h, o = self.hidden, self.out
            return _OneHiddenLayer.apply(
                x, h.weight, h.bias, o.weight, o.bias, self.scale, self.activation
            )
        return self.out(self.act(self.hidden(x))) * self.scale


class ResidualFit(Signal):
    """Mean squared error of the round's output against its residual targets, in units of the
    targets' RMS (1.0: no better than predicting 0): ``weight`` is 1 / scale^2, set by the
    rule with its learner's scale at the start of each round (a Python number: no tensor op
    and no device sync per step)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = 1.0

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(h, y) * self.weight


# -- the rule -------------------------------------------------------------------------------
class GBNN(Rule):
    """Gradient boosting of one-hidden-layer networks, one round per stage (module docstring)."""

    def __init__(
        self,
        inputs: int,
        classes: int,
        task: str,
        rounds: int,
        units: int,
        subsample: float,
        eta: float,
        steps: int,
        activation: str,
        refit: bool = True,
    ) -> None:
        self.refit = refit
        self.loss_fn = boost_loss(task, classes)
        self.task = task
        self.outputs = 1 if task == "regression" or classes == 2 else classes
        self.rounds, self.units, self.steps = rounds, units, steps
        self.subsample, self.eta, self.activation = subsample, eta, activation
        self.learners = nn.ModuleList(
            WeakLearner(inputs, units, self.outputs, activation) for _ in range(rounds)
        )
        logits = 2 if self.loss_fn.name == "binary" else self.outputs
        network = nn.Sequential(
            nn.Flatten(),
            nn.Linear(inputs, rounds * units),
            ACTIVATIONS[activation](),
            nn.Linear(rounds * units, logits),
        )
        with torch.no_grad():
            for p in network.parameters():
                p.zero_()
        stages = [Stage(learner, ResidualFit()) for learner in self.learners]
        super().__init__(network, stages, cuts=[])
        # Built once: the engine asks for them several times a run, T modules each time.
        self._signals = nn.ModuleList(stage.signal for stage in self.stages)
        self.fused_optimizer = True  # T stages of four tiny tensors each
        self.model_name = f"gbnn-{rounds}x{units}"
        # Drawn from the global generator right after the run's manual_seed: the subsamples
        # depend on the run seed only, and a rebuilt rule (resume) draws the same value.
        self.base_seed = int(torch.randint(0, 2**31 - 1, ()))
        self.f0 = torch.zeros(self.outputs)
        self.rhos = torch.zeros(rounds, dtype=torch.float64)
        self.train_losses: list[float] = []
        self.finished = 0  # rounds whose rho is known (packed into the network)
        self.current = 0
        self._epoch, self._epochs = 0, 1
        self._round: dict[str, Any] | None = None  # the current round's rows and targets
        # (y, x, next round, encoded targets, F): what the next round's start would recompute
        self._cache: tuple[Any, ...] | None = None
        self._step = -1  # global step index of the batch in flight

    # -- schedule ------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, epochs: int) -> None:
        total = self.rounds * self.steps
        if epochs > total:
            raise UsageError(
                f"rule 'gbnn' trains {self.rounds} rounds x {self.steps} steps = {total} "
                f"optimizer steps; --epochs {epochs} would leave epochs without one (give at "
                f"most {total}, or more --gb-steps)"
            )
        self._epoch, self._epochs = epoch, epochs

    def trains(self, stage_index: int) -> bool:
        return stage_index == self.current

    def rest(self, stage_index: int, h: torch.Tensor) -> torch.Tensor:
        return h  # every round reads the input itself

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batches from ``epoch_batches`` carry residuals (N, outputs); a batch of plain
        labels (``locallearn measure``'s random data) is encoded as the package's targets,
        a stand-in of the same shape and cost."""
        if y.dim() == 1:
            y = self.loss_fn.encode(y).to(x.device, x.dtype)
        return x, y

    def epoch_batches(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's share of the T * steps optimizer steps, in order: step k belongs to
        round k // steps and draws its batch from that round's subsample (``generator`` is not
        used: a round's batches depend on (seed, round) only, so an epoch boundary inside a
        round changes nothing)."""
        total = self.rounds * self.steps
        first = self._epoch * total // self._epochs
        last = (self._epoch + 1) * total // self._epochs
        return self._batches(x, y, batch_size, first, last)

    def _generator(self, *keys: int) -> torch.Generator:
        seed = self.base_seed
        for key in keys:
            seed = (seed * SEED_STREAM + key + 1) % (2**63 - 1)
        return torch.Generator().manual_seed(seed)

    def _batches(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, first: int, last: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(first, last):
            r, j = divmod(k, self.steps)
            if self._round is None or self._round["index"] != r:
                self._start_round(r, x, y)
            rd = self._round
            assert rd is not None
            rows: torch.Tensor = rd["rows"]
            size = min(batch_size, rows.numel())
            per_pass = -(-rows.numel() // size)
            part, q = divmod(j, per_pass)
            if per_pass > 1:
                if rd["pass"] != part:  # a fresh order of the subsample for every pass
                    order = torch.randperm(rows.numel(), generator=self._generator(r, part))
                    rd["pass"], rd["order"] = part, rows[order.to(rows.device)]
                index = rd["order"][q * size : (q + 1) * size]
                batch = x.index_select(0, index), rd["targets"].index_select(0, index)
            else:  # the whole subsample every step: gathered once for the round
                if rd["batch"] is None:
                    rd["batch"] = x.index_select(0, rows), rd["targets"].index_select(0, rows)
                batch = rd["batch"]
            self.current, self._step = r, k
            yield batch

    @torch.no_grad()
    def _start_round(self, r: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Residuals of F_{r-1} on every row; the round's subsample and target scale."""
        if r != self.finished:
            raise RuntimeError(f"gbnn: round {r} starts after {self.finished} finished rounds")
        # The boosting arithmetic in float64, as the package's numpy: in float32 a softmax
        # saturates (p == 1 exactly) once a class leads by ~17, the Newton step's denominator
        # p (1 - p) becomes 0 and rho explodes; float64 holds out to ~37.
        cached = self._cache
        if cached is not None and cached[0] is y and cached[1] is x and cached[2] == r:
            target, raw = cached[3], cached[4]  # from the previous round's end, same rows
        else:
            target = self.loss_fn.encode(y).to(x.device, torch.float64)
            raw = None
        if r == 0:
            self.f0 = self.loss_fn.init(target).float().cpu()
        if raw is None:
            raw = self.raw(x).double()
        self._cache = None
        residual = self.loss_fn.residual(target, raw)
        n = x.shape[0]
        if self.subsample < 1.0:
            # int(subsample * n) rows without replacement, as the package's
            # sample_without_replacement(n, int(subsample * n)).
            count = max(1, int(self.subsample * n))
            rows = torch.randperm(n, generator=self._generator(r))[:count].to(x.device)
        else:
            rows = torch.arange(n, device=x.device)
        sub = residual.index_select(0, rows)
        scale = sub.pow(2).mean().sqrt()
        train_targets = residual.to(x.dtype)
        learner = self.learners[r]
        assert isinstance(learner, WeakLearner)
        value = float(scale) if float(scale) > 0 else 1.0
        learner.scale.fill_(value)
        signal = self.stages[r].signal
        assert isinstance(signal, ResidualFit)
        signal.weight = 1.0 / value / value  # inf, never a ZeroDivisionError, if it underflows
        self._round = {
            "index": r,
            "rows": rows,
            "residual": residual,
            "targets": train_targets,
            "encoded": target,
            "x": x,
            "y": y,
            "pass": -1,
            "order": rows,
            "batch": None,
        }

    def after_step(self, stage_index: int) -> None:
        # Only a step fed by epoch_batches ends a round (measure's steps have no round).
        if self._round is not None and self._step % self.steps == self.steps - 1:
            self._finish_round(stage_index)

    @torch.no_grad()
    def _finish_round(self, r: int) -> None:
        """The round's step rho on every training row; its units go into the network."""
        rd = self._round
        assert rd is not None and rd["index"] == r
        learner = self.learners[r]
        assert isinstance(learner, WeakLearner)
        if self.refit:
            self._refit_output(learner, rd)
        f = learner(rd["x"]).double()  # no dropout or norm layers: no eval mode needed
        rho = self.eta * self.loss_fn.step(rd["encoded"], rd["residual"], f)
        rho = torch.nan_to_num(rho, nan=0.0, posinf=0.0, neginf=0.0)  # f == 0: no step
        self.rhos[r] = float(rho)
        self._pack(r)
        raw = self.raw(rd["x"]).double()
        self.train_losses.append(float(self.loss_fn.loss(rd["encoded"], raw)))
        self.finished = r + 1
        self._round = None
        self._cache = (rd["y"], rd["x"], r + 1, rd["encoded"], raw)

    @staticmethod
    @torch.no_grad()
    def _refit_output(learner: WeakLearner, rd: dict[str, Any]) -> None:
        """The weak learner's output layer by least squares on the round's subsample, given
        its trained hidden units (ridge 1e-8 per row against a rank-deficient design)."""
        x = rd["x"].index_select(0, rd["rows"]).flatten(1)
        hidden = learner.act(learner.hidden(x)).double()
        design = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1)  # (n, J + 1)
        target = rd["residual"].index_select(0, rd["rows"]) / learner.scale.double()
        gram = design.T @ design
        gram += (
            1e-8 * design.shape[0] * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        )
        beta = torch.linalg.solve(gram, design.T @ target)  # (J + 1, outputs)
        if bool(torch.isfinite(beta).all()):
            learner.out.weight.copy_(beta[:-1].T)
            learner.out.bias.copy_(beta[-1])

    @torch.no_grad()
    def _pack(self, r: int) -> None:
        """Round r's units into rows rJ..rJ+J-1 of the packed network; the output bias is
        recomputed from F0 and every finished round."""
        learner = self.learners[r]
        assert isinstance(learner, WeakLearner)
        _, hidden, _, out = self.network
        assert isinstance(hidden, nn.Linear) and isinstance(out, nn.Linear)
        units = slice(r * self.units, (r + 1) * self.units)
        hidden.weight[units] = learner.hidden.weight
        hidden.bias[units] = learner.hidden.bias
        gain = 2.0 if self.loss_fn.name == "binary" else 1.0
        rho = float(self.rhos[r])
        weight = rho * learner.scale * learner.out.weight  # (outputs, J)
        rows = slice(1, 2) if gain == 2.0 else slice(None)
        # F0 plus every finished round's rho * bias, summed in round order: the bias so far
        # (over the gain, a power of two: exact) plus this round's term.
        bias = self.f0.to(out.bias.device).clone() if r == 0 else out.bias[rows] / gain
        bias += rho * learner.scale * learner.out.bias
        out.weight[rows, units] = gain * weight
        out.bias[rows] = gain * bias

    # -- prediction ----------------------------------------------------------------------
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) of the finished rounds, (N, outputs), read from the packed network."""
        logits = self.network(x)
        return logits[:, 1:] / 2.0 if self.loss_fn.name == "binary" else logits

    def learner_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(finished rounds, N, outputs): each finished round's weak learner on x."""
        # A weak learner has no dropout or norm layer: its mode does not change its output.
        outs = [learner(x) for learner in list(self.learners)[: self.finished]]
        return torch.stack(outs) if outs else x.new_zeros(0, x.shape[0], self.outputs)

    @torch.no_grad()
    def staged_scores(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """The score after each finished round on (x, y): accuracy, or R^2 (regression)."""
        staged = staged_raw(
            self.f0.to(x.device), self.rhos[: self.finished].to(x.device), self.learner_outputs(x)
        )
        return staged_score(self.loss_fn.name, staged, y)

    def extra_summary(self, x_test: torch.Tensor, y_test: torch.Tensor) -> dict[str, Any]:
        return {
            "gb_rounds": self.rounds,
            "gb_units": self.units,
            "gb_finished_rounds": self.finished,
            "gb_loss": self.loss_fn.name,
            "gb_f0": self.f0.tolist(),
            "gb_rho": self.rhos[: self.finished].tolist(),
            "gb_train_loss": list(self.train_losses),
            "staged_metric": "r2" if self.task == "regression" else "accuracy",
            "staged_test_score": self.staged_scores(x_test, y_test),
        }

    # -- bookkeeping ----------------------------------------------------------------------
    def signal_modules(self) -> nn.ModuleList:
        return self._signals

    def to(self, device: torch.device | str) -> GBNN:
        super().to(device)
        self.learners.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "learners": self.learners.state_dict(),
            "f0": self.f0.clone(),
            "rhos": self.rhos.clone(),
            "train_losses": torch.tensor(self.train_losses, dtype=torch.float64),
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.learners.load_state_dict(state["learners"])
        self.f0 = state["f0"].cpu().clone()
        self.rhos = state["rhos"].cpu().clone()
        self.train_losses = [float(v) for v in state["train_losses"]]
        self.finished = int(state["finished"])
        self.current = min(self.finished, self.rounds - 1)
        self._round = None
        self._cache = None


@RULES.register(
    "gbnn",
    description="gradient-boosted sequential training: T rounds of J hidden units, packed",
    options=(
        "gb_rounds",
        "gb_units",
        "gb_subsample",
        "gb_eta",
        "gb_steps",
        "gb_activation",
        "gb_refit",
    ),
    paper="Emami & Martinez-Munoz, IEEE Access 2023",
    tasks=("classification", "regression"),
    own_network=True,
    families=("dense",),  # it builds a fully connected network of its own
    recipe=Recipe(
        optimizer="adam",
        lr=1e-2,
        source="chosen on validation splits of the training sets (BENCHMARKS.md, 'GBNN: how "
        "the weak learner's training budget was chosen'); the package trains each round by "
        "L-BFGS, full batch",
    ),
)
def build_gbnn(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    task: str = "classification",
    gb_rounds: int = 200,
    gb_units: int = 1,
    gb_subsample: float = 0.5,
    gb_eta: float = 1.0,
    gb_steps: int = 50,
    gb_activation: str = "logistic",
    gb_refit: bool = True,
) -> GBNN:
    for flag, value in (("--gb-rounds", gb_rounds), ("--gb-units", gb_units)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if gb_steps < 1:
        raise UsageError(
            f"--gb-steps must be at least 1 (optimizer steps per round), got {gb_steps}"
        )
    if not 0 < gb_subsample <= 1:
        raise UsageError(f"--gb-subsample must be in (0, 1] (1: every row), got {gb_subsample}")
    if not (gb_eta > 0 and math.isfinite(gb_eta)):
        raise UsageError(f"--gb-eta must be a positive number (the shrinkage), got {gb_eta}")
    if gb_activation not in ACTIVATIONS:
        raise unknown_choice("--gb-activation", gb_activation, ACTIVATIONS)
    if task == "classification" and classes < 2:
        raise UsageError(f"rule 'gbnn' needs at least 2 classes, got {classes}")
    return GBNN(
        math.prod(input_shape),
        classes,
        task,
        gb_rounds,
        gb_units,
        gb_subsample,
        gb_eta,
        gb_steps,
        gb_activation,
        gb_refit,
    )
