"""Forward-Forward: every layer learns to tell positive from negative data by its goodness.

Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations" (2022), sec. 3
(supervised FF on MNIST: label in the first 10 pixels, negatives with a wrong label, length
normalisation between layers, prediction by trying every label).

Memory. A layer's weight gradient is ``sum_i a_i * h_i x_i^T`` (``a_i`` a per-row scalar of
the goodness loss, ``h_i = relu(W x_i + b)``), so the local update needs the layer input
``x`` and one number per row: the fused autograd Function below saves exactly that and
recomputes ``h`` in backward. With positives and negatives in one batch (2B rows) a
1,000-unit layer therefore saves 2B x 1000 floats, which is the whole of FF's
``act_bytes_peak`` (see README, "Forward-Forward, FA and DFA").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.rules.base import RULES, Rule, Signal, Stage

READOUTS = ("sweep", "linear")
SCHEDULES = ("simultaneous", "greedy")
EPS = 1e-8


def dense_layers(network: nn.Sequential, rule: str) -> tuple[list[nn.Linear], nn.Linear]:
    """The hidden ``Linear`` layers of an ``mlp``-shaped network and its output layer.

    Each hidden unit must be ``[Flatten], Linear, ReLU`` and the last unit ``[Flatten],
    Linear``: the per-layer rules fuse the layer with its ReLU to save only its input.
    """
    hidden: list[nn.Linear] = []
    units = list(network)
    for k, unit in enumerate(units):
        parts = [m for m in (unit if isinstance(unit, nn.Sequential) else [unit])]
        parts = [m for m in parts if not isinstance(m, nn.Flatten)]
        last = k == len(units) - 1
        want = (nn.Linear,) if last else (nn.Linear, nn.ReLU)
        if len(parts) != len(want) or not all(isinstance(m, t) for m, t in zip(parts, want)):
            raise UsageError(
                f"rule {rule!r} needs a fully connected ReLU network (--model mlp); unit {k} "
                f"is {unit.__class__.__name__}({', '.join(type(m).__name__ for m in parts)})"
            )
        if last:
            return hidden, parts[0]
        hidden.append(parts[0])
    raise UsageError(f"rule {rule!r} needs at least one layer")  # pragma: no cover


def rms_normalise(h: torch.Tensor) -> torch.Tensor:
    """Length normalisation (sec. 3): divide each row by its root-mean-square, so only the
    direction of the previous layer's activity reaches the next layer (a row of length
    sqrt(units), as in the careful public reimplementation; unit length would need weights
    sqrt(units) times larger for the same goodness)."""
    return h / (h.pow(2).mean(dim=1, keepdim=True).sqrt() + EPS)


def overlay(x: torch.Tensor, labels: torch.Tensor | None, classes: int) -> torch.Tensor:
    """The input with its first ``classes`` values replaced by the label (sec. 3.3).

    The label is a one-hot scaled by each sample's own maximum value (so it is as bright as
    the brightest pixel, whatever the input normalisation); ``labels=None`` gives the
    neutral label, every entry ``max / classes`` (the paper's ten entries of 0.1).
    """
    flat = x.flatten(1).clone()
    scale = flat.amax(dim=1, keepdim=True)
    if labels is None:
        flat[:, :classes] = scale / classes
    else:
        flat[:, :classes] = 0
        flat.scatter_(1, labels.view(-1, 1), scale)
    return flat


class _GoodnessLayer(torch.autograd.Function):
    r"""One FF layer and its loss, fused: :math:`h = \mathrm{relu}(xW^T + b)`,
    :math:`G_i = \sum_j h_{ij}^2`, loss :math:`\frac1N\sum_i \mathrm{softplus}(s_i(\theta - G_i))`
    with :math:`s_i = +1` for positive rows and :math:`-1` for negative ones.

    Saves the input, the signs and the goodness (N floats each); ``h`` is recomputed in
    backward from ``x`` and the weights. ``h`` is returned as a non-differentiable output:
    the next layer learns from its own loss, never through this one.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        sign: torch.Tensor,
        threshold: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.linear(x, weight, bias).relu_()
        goodness = h.pow(2).sum(dim=1)
        loss = F.softplus(sign * (threshold - goodness)).mean()
        ctx.save_for_backward(x, weight, bias, sign, goodness)
        ctx.threshold = threshold
        ctx.mark_non_differentiable(h)
        return loss, h

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_h: torch.Tensor | None) -> Any:
        x, weight, bias, sign, goodness = ctx.saved_tensors
        h = F.linear(x, weight, bias).relu_()
        # d softplus(m)/dm = sigmoid(m); m = s (theta - G); dG/dz = 2h (h is 0 where z < 0)
        coef = grad_loss * torch.sigmoid(sign * (ctx.threshold - goodness)) * (-sign)
        grad_z = h.mul_((2.0 / x.shape[0]) * coef.unsqueeze(1))
        grad_x = grad_z @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad_z.t() @ x
        grad_b = grad_z.sum(dim=0) if bias is not None else None
        return grad_x, grad_w, grad_b, None, None


class FFLayer(nn.Module):
    """A hidden layer of a Forward-Forward network: (normalise), Linear, ReLU.

    In training with gradients on, the batch is [positives; negatives] (equal halves) and
    the layer computes its goodness loss in the same fused pass; the loss waits in
    ``pending`` for the stage's signal. Otherwise it is a plain forward pass.
    """

    def __init__(self, linear: nn.Linear, normalise: bool, threshold: float | None = None) -> None:
        super().__init__()
        self.linear = linear
        self.normalise = normalise
        # Goodness = sum of squares against threshold = units: the careful reimplementation's
        # choice (equivalently mean of squares against 1).
        self.threshold = float(linear.out_features if threshold is None else threshold)
        self.pending: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if self.normalise:
            x = rms_normalise(x)
        if not (self.training and torch.is_grad_enabled()):
            return F.linear(x, self.linear.weight, self.linear.bias).relu()
        half = x.shape[0] // 2
        sign = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
        sign[half:] = -1
        loss, h = _GoodnessLayer.apply(
            x, self.linear.weight, self.linear.bias, sign, self.threshold
        )
        self.pending = loss
        return h


class Goodness(Signal):
    """The goodness loss its layer computed in the forward pass (see ``FFLayer``)."""

    def __init__(self, layer: FFLayer) -> None:
        super().__init__()
        self._layer = (layer,)  # a tuple: not a submodule, its weights belong to the block

    def forward(self, h: torch.Tensor, y: Any) -> torch.Tensor:
        layer = self._layer[0]
        loss, layer.pending = layer.pending, None
        if loss is None:
            raise RuntimeError("Goodness: the layer ran no training forward pass this step")
        return loss


@dataclass
class FFTargets:
    """What every FF signal sees: the labels and, for the linear readout, the features of a
    neutral-label pass (computed without a graph in ``begin_step``)."""

    labels: torch.Tensor
    features: torch.Tensor | None = None


class LinearReadout(Signal):
    """Softmax classifier on the normalised activities of all but the first hidden layer,
    from a neutral-label input (sec. 3.3); no gradient reaches the layers."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(features, classes)

    def forward(self, h: torch.Tensor, target: FFTargets) -> torch.Tensor:
        assert target.features is not None
        return F.cross_entropy(self.classifier(target.features), target.labels)


class ForwardForward(Rule):
    r"""Each hidden layer :math:`k` minimises
    :math:`\frac1{2B}\sum_i \mathrm{softplus}(s_i(\theta_k - \|h_k(x_i)\|^2))` over its own
    weights, where the 2B rows are the batch with its true label overlaid (:math:`s=+1`)
    and with a random wrong label (:math:`s=-1`), :math:`\theta_k` = its number of units
    and its input is the previous layer's output, RMS-normalised (the first layer sees the
    raw overlaid input). Prediction (``sweep``): overlay each label, sum the goodness of
    every layer but the first (all layers if there is one), take the argmax; or (``linear``)
    a softmax classifier on the normalised activities of a neutral-label pass. The network's
    output layer is not used: a FF network is its hidden layers.
    """

    def __init__(
        self,
        layers: list[FFLayer],
        classes: int,
        readout: str,
        schedule: str,
    ) -> None:
        network = nn.Sequential(*layers)
        stages = [Stage(layer, Goodness(layer)) for layer in layers]
        self.readout_layers = list(range(1, len(layers))) if len(layers) > 1 else [0]
        self.readout: LinearReadout | None = None
        if readout == "linear":
            width = sum(layers[k].linear.out_features for k in self.readout_layers)
            self.readout = LinearReadout(width, classes)
            stages.append(Stage(nn.Identity(), self.readout))
        super().__init__(network, stages, cuts=list(range(1, len(layers))))
        self.layers = layers
        self.classes = classes
        self.schedule = schedule
        self.current = 0  # greedy schedule: the layer that learns in this epoch

    # -- schedule ------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Greedy: the epochs are split as evenly as possible, layer after layer
        (layer ``epoch * L // epochs``); the linear readout learns with the last layer."""
        if self.schedule != "greedy":
            return
        if epochs < len(self.layers):
            raise UsageError(
                f"--ff-schedule greedy trains {len(self.layers)} layers one after another; "
                f"--epochs {epochs} leaves some untrained (give at least {len(self.layers)})"
            )
        self.current = epoch * len(self.layers) // epochs

    def trains(self, stage_index: int) -> bool:
        if self.schedule != "greedy":
            return True
        return min(stage_index, len(self.layers) - 1) == self.current

    # -- data ----------------------------------------------------------------------------
    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, FFTargets]:
        """[positives; negatives]: the batch with its label and with a uniformly drawn wrong
        label; the linear readout's features come from an extra gradient-free pass."""
        shift = torch.randint(1, self.classes, y.shape, device=y.device)
        wrong = (y + shift) % self.classes
        h = torch.cat([overlay(x, y, self.classes), overlay(x, wrong, self.classes)])
        features = None
        if self.readout is not None and self.trains(len(self.layers)):
            with torch.no_grad():
                features = self.features(x)
        return h, FFTargets(y, features)

    # -- prediction ----------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised activities of the readout layers for a neutral-label input."""
        h, out = overlay(x, None, self.classes), []
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k in self.readout_layers:
                out.append(rms_normalise(h))
        return torch.cat(out, dim=1)

    def goodness_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes): summed goodness of the readout layers with each label overlaid."""
        scores = x.new_zeros(x.shape[0], self.classes)
        for c in range(self.classes):
            label = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            h = overlay(x, label, self.classes)
            for k, layer in enumerate(self.layers):
                h = layer(h)
                if k in self.readout_layers:
                    scores[:, c] += h.pow(2).sum(dim=1)
        return scores

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.readout is not None:
            return self.readout.classifier(self.features(x))
        return self.goodness_scores(x)


@RULES.register(
    "ff",
    description="Forward-Forward: per-layer goodness of positive vs wrong-label data",
    options=("ff_readout", "ff_schedule"),
    paper="Hinton, 'The Forward-Forward Algorithm' (2022)",
    families=("dense",),
    layerwise=True,
)
def build_ff(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    ff_readout: str = "sweep",
    ff_schedule: str = "simultaneous",
) -> ForwardForward:
    if ff_readout not in READOUTS:
        raise unknown_choice("--ff-readout", ff_readout, READOUTS)
    if ff_schedule not in SCHEDULES:
        raise unknown_choice("--ff-schedule", ff_schedule, SCHEDULES)
    hidden, _ = dense_layers(network, "ff")
    if not hidden:
        raise UsageError("rule 'ff' needs at least one hidden layer (--depth 1 or more)")
    inputs = hidden[0].in_features
    if inputs <= classes:
        raise UsageError(
            f"rule 'ff' overlays the label on the first {classes} input values; this input has "
            f"only {inputs}"
        )
    layers = [FFLayer(linear, normalise=k > 0) for k, linear in enumerate(hidden)]
    return ForwardForward(layers, classes, ff_readout, ff_schedule)
