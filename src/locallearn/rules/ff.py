"""Forward-Forward: every layer learns to tell positive from negative data by its goodness.

Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations" (2022), sec. 3.3
(supervised FF on MNIST: label in the first 10 pixels, negatives with a wrong label, length
normalisation between layers, prediction by trying every label or by a linear classifier).
Where the paper leaves a choice open we follow the public reimplementation that reproduces
its MNIST number (1.45% error with 3x1000 units; see METHODS.md): the input is normalised
like every layer's, weights start from N(0, 1/units), goodness is the sum of squares against
a threshold equal to the number of units, and a small peer-normalisation term keeps every
unit in use.

Memory. A layer's weight gradient is ``sum_i g_i x_i^T`` with ``g_i`` a function of the row's
output ``h_i = relu(W x_i + b)`` and a few scalars, so the local update needs only the
layer input ``x`` beside ``h``, the layer's output, which the loop keeps until the next layer
runs anyway: the fused autograd Function below (loss and gradient in one) saves ``x`` and
a few scalars per row and unit, and reads ``h`` in backward (recomputing it only if it
changed in place). Positives and negatives then learn as
two parts of the step (``chunks``), one after the other, before the layer's single optimizer
step: the gradient is the one of the whole 2B-row batch, and a layer holds B rows of its input
at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.gnn import is_graph_network
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage
from locallearn.rules.forwardgnn import build_graph_ff
from locallearn.rules.schedule import LayerAfterLayer

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
    # ||h|| / sqrt(n) in one pass, without an (N, n) temporary of squares.
    return h / (torch.linalg.vector_norm(h, dim=1, keepdim=True) * h.shape[1] ** -0.5 + EPS)


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


def overlay_pair(
    x: torch.Tensor, labels: torch.Tensor, wrong: torch.Tensor, classes: int
) -> torch.Tensor:
    """``cat([overlay(x, labels), overlay(x, wrong)])`` in one buffer: the positives and the
    negatives share their image and so their scale, computed once."""
    flat = x.flatten(1)
    scale = flat.amax(dim=1, keepdim=True)
    pair = flat.repeat(2, 1)
    pair[:, :classes] = 0
    pair.scatter_(1, torch.cat([labels, wrong]).view(-1, 1), scale.repeat(2, 1))
    return pair


@dataclass
class FFTargets:
    """What every FF signal sees: the labels, the images (the linear readout computes its
    features from them), which half of the rows a goodness signal is looking at, and for
    the readout the features of its part of the batch."""

    labels: torch.Tensor
    images: torch.Tensor
    positive: bool = True
    share: float = 1.0  # this part's fraction of the step's rows: its loss is scaled by it
    features: torch.Tensor | None = None


class _GoodnessLoss(torch.autograd.Function):
    r"""One FF layer's loss on one part of the rows, fused with its gradient (the formula of
    ``Goodness``). Inputs: the layer's (normalised) input ``x``, its weights, its output
    :math:`h = \mathrm{relu}(xW^T + b)` computed without a graph, and the loss's constants.

    Forward: :math:`G_i = \|h_i\|^2`, the softplus argument :math:`u_i = s(\theta - G_i)`,
    the loss share :math:`\cdot\,\mathrm{mean}_i\,\mathrm{softplus}(u_i)`, and with peer
    normalisation (:math:`\lambda > 0`) the running activity
    :math:`r = m r_{old} + (1-m)\,\mathrm{mean}_i h_i` and :math:`\lambda\,\mathrm{mean}_j
    d_j^2` with :math:`d = \bar r - r`. Returns the loss and :math:`r` (no gradient).

    Backward, by hand: :math:`\partial L/\partial z_{ij} = -\frac{s\,\mathrm{share}}{N}
    \sigma(u_i)\,2h_{ij} - \frac{2\lambda(1-m)}{JN} d_j`, where the activity's part passes the
    ReLU as if it were the identity (the reimplementation's "full-gradient ReLU", so peer
    normalisation can wake a unit that is silent on every row) and the goodness part is 0
    where the ReLU is off either way; then :math:`\partial L/\partial W = (\partial L/\partial
    z)^T x`. Saved: ``x``, ``u`` and ``d``, the same tensors autograd would keep for these
    formulas. ``h`` is read again rather than saved: it is the layer's output, which the loop
    holds until the next layer has run whether or not backward reads it, so reading it costs
    no memory and spares the recomputation of :math:`xW^T`. Should ``h`` have changed in
    place before backward (its version moved), or backward run twice, it is recomputed.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        h: torch.Tensor,
        sign: float,
        threshold: float,
        share: float,
        running: torch.Tensor | None,
        momentum: float,
        peer_norm: float,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows, units = h.shape
        # u = s * (threshold - G), with G the squared row norm (one pass, no temporary).
        u = torch.linalg.vector_norm(h, dim=1).square_().sub_(threshold).mul_(-sign)
        loss = F.softplus(u).mean().mul_(share)
        deviation = new_running = None
        if running is not None and peer_norm > 0:
            new_running = torch.lerp(running, h.mean(dim=0), 1.0 - momentum)
            deviation = new_running.mean() - new_running
            loss = loss + peer_norm * deviation.square().mean()
        ctx.save_for_backward(x, weight, bias, u, deviation)
        ctx.constants = (sign, share, momentum, peer_norm)
        # Not save_for_backward: that would count the output as a second saved activation.
        ctx.output, ctx.output_version = h, h._version
        if new_running is not None:
            ctx.mark_non_differentiable(new_running)
        return loss, new_running

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_running: Any) -> Any:
        x, weight, bias, u, deviation = ctx.saved_tensors
        sign, share, momentum, peer_norm = ctx.constants
        h, ctx.output = ctx.output, None  # released as soon as it is used
        if h is None or h._version != ctx.output_version:
            h = F.linear(x, weight, bias).relu_()
        rows, units = h.shape
        # d(loss)/d(G_i) * 2: softplus' = sigmoid.
        scale = torch.sigmoid(u).mul_(grad_loss * (-2.0 * sign * share / rows)).unsqueeze(1)
        if deviation is not None:  # (N, units): goodness and activity parts in one op
            unit = deviation * (grad_loss * (-2.0 * peer_norm * (1.0 - momentum) / (units * rows)))
            grad_z = torch.addcmul(unit, h, scale)
        else:
            grad_z = h * scale
        grad_x = grad_z @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad_z.t() @ x
        grad_b = grad_z.sum(dim=0) if bias is not None else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


class FFLayer(nn.Module):
    """A hidden layer of a Forward-Forward network: normalise, Linear, ReLU.

    In training with gradients on, the layer's input and output wait in ``pending`` for the
    stage's signal, which builds the layer's loss and its gradient from them (``Goodness``);
    the output itself is computed without a graph. Otherwise it is a plain forward pass.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rms_normalise(x.flatten(1))
        learning = self.training and torch.is_grad_enabled()
        with torch.no_grad():
            h = F.linear(x, self.linear.weight, self.linear.bias).relu_()
        if learning:
            self.pending = (x, h)
        return h


class Goodness(Signal):
    r"""A layer's FF loss on one part of the step's rows (see ``ForwardForward.chunks``):
    share :math:`\times\,\mathrm{mean}_i\,\mathrm{softplus}(s(\theta - G_i))`, with
    :math:`s = +1` on positives and :math:`-1` on negatives, so the parts add up to the mean
    over all 2B rows; :math:`\theta` is the number of units.

    On positives it adds the peer-normalisation term
    :math:`\lambda\,\mathrm{mean}_j(\bar r - r_j)^2`, where :math:`r` is a running mean
    (momentum 0.9, kept in a buffer and checkpointed) of each unit's activity on positive
    data: units that are rarely on are pushed up, units always on are pushed down.
    The loss and its gradient are one fused Function, ``_GoodnessLoss``.
    """

    MOMENTUM = 0.9

    def __init__(self, layer: FFLayer, peer_norm: float) -> None:
        super().__init__()
        self._layer = (layer,)  # a tuple: not a submodule, its weights belong to the block
        self.threshold = float(layer.linear.out_features)
        self.peer_norm = peer_norm
        self.register_buffer("running_activity", torch.full((layer.linear.out_features,), 0.5))

    def forward(self, h: torch.Tensor, target: FFTargets) -> torch.Tensor:
        layer = self._layer[0]
        if layer.pending is None:
            raise RuntimeError("Goodness: the layer ran no training forward pass this step")
        (x, out), layer.pending = layer.pending, None
        peer = target.positive and self.peer_norm > 0
        loss, running = _GoodnessLoss.apply(
            x,
            layer.linear.weight,
            layer.linear.bias,
            out,
            1.0 if target.positive else -1.0,
            self.threshold,
            target.share,
            self.running_activity if peer else None,
            self.MOMENTUM,
            self.peer_norm,
        )
        if running is not None:
            self.running_activity.copy_(running)  # in place: the meter knows it
        return loss


class LinearReadout(Signal):
    """Softmax classifier on the normalised activities of all but the first hidden layer,
    from a neutral-label input (sec. 3.3); no gradient reaches the layers."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        # As in the reimplementation: no bias, all-zero start (every class equally likely).
        self.classifier = nn.Linear(features, classes, bias=False)
        nn.init.zeros_(self.classifier.weight)

    def forward(self, h: torch.Tensor, target: FFTargets) -> torch.Tensor:
        assert target.features is not None
        return target.share * F.cross_entropy(self.classifier(target.features), target.labels)


class ForwardForward(Rule):
    r"""Each hidden layer :math:`k` minimises
    :math:`\frac1{2B}\sum_i \mathrm{softplus}(s_i(\theta_k - \|h_k(x_i)\|^2))` (plus peer
    normalisation, see ``Goodness``) over its own weights, where the 2B rows are the batch
    with its true label overlaid (:math:`s=+1`) and with a random wrong label (:math:`s=-1`),
    :math:`\theta_k` = its number of units and its input is the previous layer's output (the
    first layer's: the overlaid image), RMS-normalised. Prediction (``sweep``): overlay each
    label, sum the goodness of every layer but the first (all layers if there is one), take
    the argmax; or (``linear``) a softmax classifier on the normalised activities of a
    neutral-label pass. The network's
    output layer is not used: a FF network is its hidden layers.
    """

    def __init__(
        self,
        layers: list[FFLayer],
        classes: int,
        readout: str,
        schedule: str,
        peer_norm: float,
    ) -> None:
        network = nn.Sequential(*layers)
        stages = [Stage(layer, Goodness(layer, peer_norm)) for layer in layers]
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
        # One kernel per SGD step instead of four passes over each 1000x1000 weight: the
        # step was a tenth of a 3x1000 MNIST step's time.
        self.fused_optimizer = True
        # The greedy schedule is layer after layer: --patience can drive it (engine.layerwise).
        self.layer_after_layer = schedule == "greedy"
        self.early_stopping = False

    # -- schedule ------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Greedy: the epochs are split as evenly as possible, layer after layer
        (layer ``epoch * L // epochs``); the linear readout learns with the last layer."""
        if self.schedule != "greedy" or self.early_stopping:
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
        return self.stage_position(stage_index) == self.current

    # The layer-after-layer protocol (rules/schedule.py): the readout learns with the last.
    positions = property(lambda self: len(self.layers))
    stage_position = LayerAfterLayer.stage_position
    position_state = LayerAfterLayer.position_state
    load_position_state = LayerAfterLayer.load_position_state

    # -- data ----------------------------------------------------------------------------
    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, FFTargets]:
        """[positives; negatives]: the batch with its label and with a uniformly drawn wrong
        label."""
        shift = torch.randint(1, self.classes, y.shape, device=y.device)
        wrong = (y + shift) % self.classes
        return overlay_pair(x, y, wrong, self.classes), FFTargets(y, x)

    def chunks(
        self, stage_index: int, h: torch.Tensor, target: FFTargets
    ) -> Iterator[tuple[torch.Tensor, FFTargets]]:
        """Two parts, each learning from half of the rows before the stage's one step: the
        same update as from the whole batch, with half of the graph alive at a time. A layer
        learns from the positives, then the negatives; the linear readout from each half of
        the batch, with the neutral-label features of the whole batch computed (without a
        graph) in one pass, each half copied out so that the classifier holds only its own."""
        if stage_index < len(self.layers):
            half = h.shape[0] // 2
            yield h[:half], dataclasses.replace(target, positive=True, share=0.5)
            yield h[half:], dataclasses.replace(target, positive=False, share=0.5)
            return
        rows = target.labels.shape[0]
        with torch.no_grad():
            features = self.features(target.images)
        for part in (slice(None, rows // 2), slice(rows // 2, None)):
            labels = target.labels[part]
            yield (
                h[part],
                dataclasses.replace(
                    target,
                    labels=labels,
                    features=features[part].clone(),
                    share=labels.shape[0] / rows,
                ),
            )

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
    options=("ff_readout", "ff_schedule", "ff_peer_norm", "ff_negatives"),
    paper="Hinton, 'The Forward-Forward Algorithm' (2022); graphs: Park et al., ICLR 2024",
    recipe=Recipe(
        optimizer="sgd",
        lr=1e-3,
        momentum=0.9,
        weight_decay=3e-4,
        lr_schedule="cooldown",
        batch_size=100,
        source="the public reimplementation loeweX/Forward-Forward (MNIST 3x1000, 1.45% "
        "error): SGD lr 1e-3, momentum 0.9, weight decay 3e-4, batch 100, lr cooled down "
        "over the second half",
    ),
    families=("dense", "graph"),
    layerwise=True,
)
def build_ff(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    ff_readout: str | None = None,
    ff_schedule: str | None = None,
    ff_peer_norm: float | None = None,
    ff_negatives: str | None = None,
) -> Rule:
    if is_graph_network(network):  # ForwardGNN's variants (rules/forwardgnn.py)
        for flag, value in (
            ("--ff-readout", ff_readout),
            ("--ff-schedule", ff_schedule),
            ("--ff-peer-norm", ff_peer_norm),
        ):
            if value is not None:
                raise UsageError(
                    f"{flag} applies to ff on fully connected networks; on a graph model ff "
                    "takes --ff-negatives label|virtual (and trains layer after layer)"
                )
        return build_graph_ff(network, input_shape, classes, ff_negatives or "label")
    if ff_negatives is not None:
        raise UsageError("--ff-negatives applies to ff on graph models (--model gcn, sage, gat)")
    ff_readout = ff_readout or "sweep"
    ff_schedule = ff_schedule or "simultaneous"
    ff_peer_norm = 0.03 if ff_peer_norm is None else ff_peer_norm
    if ff_readout not in READOUTS:
        raise unknown_choice("--ff-readout", ff_readout, READOUTS)
    if ff_schedule not in SCHEDULES:
        raise unknown_choice("--ff-schedule", ff_schedule, SCHEDULES)
    if not (ff_peer_norm >= 0 and math.isfinite(ff_peer_norm)):
        raise UsageError(
            f"--ff-peer-norm must be a number >= 0 (0 turns it off), got {ff_peer_norm}"
        )
    hidden, _ = dense_layers(network, "ff")
    if not hidden:
        raise UsageError("rule 'ff' needs at least one hidden layer (--depth 1 or more)")
    inputs = hidden[0].in_features
    if inputs <= classes:
        raise UsageError(
            f"rule 'ff' overlays the label on the first {classes} input values; this input has "
            f"only {inputs}"
        )
    for linear in hidden:  # the reimplementation's start: N(0, 1/units), zero bias
        nn.init.normal_(linear.weight, std=linear.out_features**-0.5)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
    layers = [FFLayer(linear) for linear in hidden]
    return ForwardForward(layers, classes, ff_readout, ff_schedule, ff_peer_norm)
