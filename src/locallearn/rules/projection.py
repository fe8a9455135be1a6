"""Fixed random projections of the label as per-layer learning signals, and layers that learn
from them with nothing saved but what their own update needs.

Shared by DRTP (``rules/drtp.py``) and tpSGD (``rules/tpsgd.py``); DFA can use
``fixed_projection`` and ``split_layers`` too. Every layer of the network is its own block:

- ``split_layers`` cuts the network into layers, each ending at its activation, so that a
  layer's signal is applied *before* pooling (Frenkel et al. 2021; the reference code's conv
  blocks run conv -> activation -> signal -> pool). Pooling and flattening that follow an
  activation open the next layer.
- ``fixed_projection`` draws the fixed matrix B (classes, *unit shape) He-uniform, as in the
  DRTP reference: bound sqrt(6 / fan_in) with fan_in = prod(unit shape).
- ``LocalLayer`` runs one layer and its local loss. A plain layer (parameter-free ops, then a
  Linear/Conv1d/Conv2d, then ReLU/Tanh/Sigmoid or nothing) runs through ``_CompactLocal``, an
  autograd Function that saves only the layer input, the label indices and, for DRTP with
  ReLU, a 1-byte derivative mask; the learning signal B[y] (a batch x units float) is rebuilt
  from the labels in backward instead of being kept. Any other layer (BatchNorm, recurrent)
  runs through ordinary autograd and holds what autograd saves. Both are counted by the
  memory meter in the same way; ``tests/test_drtp.py`` checks the compact path against plain
  autograd and the bytes against hand arithmetic.

The labels reach a layer through ``LocalTarget.labels``, set by the rule's ``begin_step``;
the layer leaves its loss in ``LocalTarget.pending`` for the loop's ``signal(h, y)`` call.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError
from locallearn.models.base import output_shape
from locallearn.rules.base import Rule, Signal, Stage

# Local losses a hidden layer can minimise against its target t = B[y] (see local_value).
LOCAL_LOSSES = ("mse", "l1", "ce")
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid)
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


# -- the network as layers ------------------------------------------------------------------
def _flat_modules(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flat_modules(child)]
    return [module]


def _is_main(module: nn.Module) -> bool:
    """A module that carries the layer's weights (not a norm, which belongs to its layer)."""
    has_params = any(True for _ in module.parameters(recurse=True))
    return has_params and not isinstance(module, NORMS)


def split_layers(network: nn.Sequential) -> tuple[list[nn.Sequential], list[int]]:
    """The network as layers (sharing its modules) and, for each layer, the index of the unit
    that holds its weights.

    A layer is [ops after the previous activation (pool, flatten)] + [weights] + [norm] +
    [activation]. A module with ``includes_activation`` (a recurrent layer) closes its layer
    itself. Whatever follows the last weights joins the last layer.
    """
    flat: list[tuple[int, nn.Module]] = [
        (u, m) for u, unit in enumerate(network) for m in _flat_modules(unit)
    ]
    layers: list[list[nn.Module]] = []
    owners: list[int] = []
    lead: list[nn.Module] = []
    current: list[nn.Module] | None = None
    closed = False
    for unit_index, module in flat:
        if _is_main(module):
            if current is not None:
                layers.append(current)
            current, lead = [*lead, module], []
            owners.append(unit_index)
            closed = bool(getattr(module, "includes_activation", False))
        elif current is None or closed:
            lead.append(module)
        else:
            current.append(module)
            closed = isinstance(module, ACTIVATIONS)
    if current is None:
        raise UsageError("this network has no layer with weights to train")
    layers.append(current + lead)
    return [nn.Sequential(*layer) for layer in layers], owners


def unit_shape(layer: nn.Sequential, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one sample's signal for ``layer``: its output shape, or per step (the last
    dim) for a layer that outputs a sequence of states (``sequence_output``)."""
    shape = output_shape(layer, input_shape)
    if any(getattr(m, "sequence_output", False) for m in layer):
        return shape[-1:]
    return shape


def fixed_projection(classes: int, shape: tuple[int, ...]) -> torch.Tensor:
    """B of shape (classes, *shape), He-uniform: U(-b, b), b = sqrt(6 / prod(shape)).

    DRTP reference: ``kaiming_uniform_`` on (classes, units) or (classes, C, H, W), whose
    fan_in is prod(shape). Drawn from the global RNG, seeded by the run.
    """
    bound = math.sqrt(6.0 / math.prod(shape))
    return torch.empty(classes, *shape).uniform_(-bound, bound)


# -- local losses: value and gradient in closed form ------------------------------------------
def _target(proj: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """t = B[y] (one-hot label times B), broadcast over the time steps of a sequence."""
    t = proj.index_select(0, y)
    extra = a.dim() - t.dim()
    return t.view(t.shape[0], *([1] * extra), *t.shape[1:]) if extra > 0 else t


def _per_step(a: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """(N, S, F): F = the signal's features, S = time steps (1 without)."""
    return a.reshape(a.shape[0], -1, math.prod(proj.shape[1:]))


def local_value(kind: str, a: torch.Tensor, y: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """The local loss of output ``a`` against t = B[y] (differentiable in ``a``).

    drtp: sum(a * t), summed over the batch as in the reference code (its hook hands each
    sample the gradient y*^T B, and the batch's weight gradient is their sum), whose gradient
    is the DRTP signal B^T y* per sample;
    mse: mean (a - t)^2;  l1: mean |a - t|;
    ce: mean over samples (and steps) of the cross-entropy between softmax(t) and softmax(a)
    over the layer's units.
    """
    t = _target(proj, y, a)
    if kind == "drtp":
        return (a * t).sum()
    if kind == "mse":
        return (a - t).pow(2).mean()
    if kind == "l1":
        return (a - t).abs().mean()
    if kind == "ce":
        soft = _per_step(t, proj).softmax(-1)
        return -(soft * _per_step(a, proj).log_softmax(-1)).sum(-1).mean()
    raise ValueError(kind)


def local_grad(kind: str, a: torch.Tensor, y: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """d local_value / d a, in closed form (checked against autograd in the tests)."""
    t = _target(proj, y, a)
    if kind == "drtp":
        return t.expand_as(a).clone()
    if kind == "mse":
        return 2 * (a - t) / a.numel()
    if kind == "l1":
        return torch.sign(a - t) / a.numel()
    if kind == "ce":
        steps = _per_step(a, proj)
        diff = steps.softmax(-1) - _per_step(t, proj).softmax(-1)
        return (diff / (steps.shape[0] * steps.shape[1])).reshape(a.shape)
    raise ValueError(kind)


# -- one layer, one local update --------------------------------------------------------------
def _affine(
    module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
    return conv(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def _affine_param_grads(
    module: nn.Module, x: torch.Tensor, g: torch.Tensor, has_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias gradients of the affine op for output gradient ``g``."""
    if isinstance(module, nn.Linear):
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        return g2.t() @ x2, g2.sum(0) if has_bias else None
    weight_grad = (
        torch.nn.grad.conv1d_weight
        if isinstance(module, nn.Conv1d)
        else torch.nn.grad.conv2d_weight
    )
    gw = weight_grad(
        x, module.weight.shape, g, module.stride, module.padding, module.dilation, module.groups
    )
    dims = [0, *range(2, g.dim())]
    return gw, g.sum(dims) if has_bias else None


def _activate(act: nn.Module | None, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, da/dz) for the supported activations."""
    if act is None:
        return z, torch.ones_like(z)
    if isinstance(act, nn.ReLU):
        return z.clamp(min=0), (z > 0).to(z.dtype)
    if isinstance(act, nn.Tanh):
        a = torch.tanh(z)
        return a, 1 - a * a
    a = torch.sigmoid(z)
    return a, a * (1 - a)


class _CompactLocal(torch.autograd.Function):
    """One layer's forward and local loss; backward gives the layer's own weight gradients.

    Saved for backward (through ``save_for_backward``, so the meter counts them): the layer
    input, the label indices, B (a buffer, not counted), and for DRTP with ReLU the mask
    z > 0 as bool (1 byte per unit). Otherwise the pre-activation is recomputed from the
    input in backward (one more affine op) rather than kept as a float tensor.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        proj: torch.Tensor,
        layer: LocalLayer,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kind = layer.kind
        z = _affine(layer.affine, x, weight, bias)
        a, _ = _activate(layer.act, z)
        value = local_value(kind, a, y, proj)
        ctx.layer, ctx.has_bias = layer, bias is not None
        if kind == "drtp" and isinstance(layer.act, nn.ReLU):
            ctx.save_for_backward(x, y, proj, z > 0)
        else:
            ctx.save_for_backward(x, y, proj)
        ctx.mark_non_differentiable(a)
        return a, value

    @staticmethod
    def backward(ctx: Any, _grad_a: torch.Tensor | None, grad_value: torch.Tensor) -> tuple:
        x, y, proj, *mask = ctx.saved_tensors
        layer = ctx.layer
        weight = layer.affine.weight
        bias = layer.affine.bias
        if mask:  # DRTP with ReLU: B[y] where z > 0, from the labels and the mask alone
            g = _target(proj, y, mask[0]) * mask[0]
        else:
            z = _affine(layer.affine, x, weight, bias)
            a, deriv = _activate(layer.act, z)
            g = local_grad(layer.kind, a, y, proj) * deriv
        g = g * grad_value
        gw, gb = _affine_param_grads(layer.affine, x, g, ctx.has_bias)
        return None, None, None, None, gw, gb


class LocalTarget(Signal):
    """A hidden layer's signal: its local loss against t = B[y], B fixed (a buffer).

    The loss itself is computed by the layer (``LocalLayer``), which needs the labels in its
    forward; this module holds B, hands the labels to the layer (``labels``, set by the rule
    each step) and returns the loss the layer left (``pending``).
    """

    def __init__(self, kind: str, projection: torch.Tensor) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("projection", projection)
        self.labels: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None
        # The fraction of the step's loss that the current part carries (one time step of
        # a streamed sequence: 1 / steps); see TpSGD.chunks.
        self.share = 1.0

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss, self.pending = self.pending, None
        if loss is None:
            raise RuntimeError("LocalTarget: the layer did not run in training mode this step")
        return loss


class LocalLayer(nn.Module):
    """Block = one layer; in a training step it also computes its local loss (see
    ``LocalTarget``). Outside training (no labels, or no grad) it is the plain layer."""

    def __init__(self, layer: nn.Sequential, target: LocalTarget) -> None:
        super().__init__()
        self.layer = layer
        self.kind = target.kind
        self._target = [target]  # a list: the signal is the stage's, not a submodule of this
        self.lead, self.affine, self.act = self._compact_parts(layer)

    @staticmethod
    def _compact_parts(layer: nn.Sequential) -> tuple[nn.Sequential, nn.Module | None, Any]:
        """(parameter-free lead, affine module, activation) when the layer has the plain
        form the compact Function handles; affine None otherwise."""
        modules = list(layer)
        mains = [i for i, m in enumerate(modules) if _is_main(m)]
        if len(mains) != 1:
            return nn.Sequential(), None, None
        i = mains[0]
        lead, main, rest = modules[:i], modules[i], modules[i + 1 :]
        plain_lead = all(not any(True for _ in m.parameters()) for m in lead)
        plain_main = isinstance(main, AFFINE) and (
            isinstance(main, nn.Linear) or main.padding_mode == "zeros"
        )
        plain_rest = len(rest) == 0 or (len(rest) == 1 and isinstance(rest[0], ACTIVATIONS))
        if not (plain_lead and plain_main and plain_rest):
            return nn.Sequential(), None, None
        return nn.Sequential(*lead), main, rest[0] if rest else None

    @property
    def compact(self) -> bool:
        return self.affine is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = self._target[0]
        if target.labels is None or not torch.is_grad_enabled():
            return self.layer(x)
        y, proj = target.labels, target.projection
        if self.affine is not None:
            with torch.no_grad():  # pooling/flatten of a detached input: nothing to save
                x = self.lead(x)
            a, loss = _CompactLocal.apply(x, y, proj, self, self.affine.weight, self.affine.bias)
        else:
            a = self.layer(x)
            loss = local_value(self.kind, a, y, proj)
        target.pending = loss if target.share == 1.0 else loss * target.share
        return a


class OneHotLoss(Signal):
    """The output layer's own loss against the one-hot label.

    bce: binary cross-entropy of sigmoid outputs (the DRTP reference's output layer);
    mse / l1: the logits against the one-hot target (the output layer's activation is the
    identity, so its "activated output" is the logits); ce: cross-entropy of the logits.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "ce":
            return F.cross_entropy(h, y)
        onehot = F.one_hot(y, h.shape[1]).to(h.dtype)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(h, onehot)
        return F.mse_loss(h, onehot) if self.kind == "mse" else F.l1_loss(h, onehot)


class LayerwiseRule(Rule):
    """Each layer its own block with a local target; ``begin_step`` hands the labels to the
    layers (they need them in their forward), ``after_step`` takes them back."""

    def __init__(self, network: nn.Sequential, stages: list[Stage], cuts: list[int]) -> None:
        super().__init__(network, stages, cuts)
        # Kept here, not looked up through the stages, so a wrapped signal still gets labels.
        self.targets: dict[int, LocalTarget] = {
            i: s.signal for i, s in enumerate(stages) if isinstance(s.signal, LocalTarget)
        }

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for target in self.targets.values():
            target.labels = y
        return x, y

    def after_step(self, stage_index: int) -> None:
        if stage_index in self.targets:
            self.targets[stage_index].labels = None


def build_layerwise(
    rule_class: type[LayerwiseRule],
    network: nn.Sequential,
    input_shape: tuple[int, ...],
    classes: int,
    hidden_kind: str,
    output_kind: str,
) -> LayerwiseRule:
    """Cut ``network`` into layers; hidden layers learn ``hidden_kind`` against a fixed
    projection B_k of the label, the output layer ``output_kind`` against the label."""
    layers, owners = split_layers(network)
    if len(layers) < 2:
        raise UsageError(
            "a layer-wise rule needs at least one hidden layer; this network has a single "
            "layer with weights (use --rule bp, or a model with --depth 1 or more)"
        )
    for layer in layers:
        main = next(m for m in layer if _is_main(m))
        if not (isinstance(main, AFFINE) or getattr(main, "includes_activation", False)):
            raise UsageError(
                f"a layer-wise rule trains plain layer stacks (Linear/Conv layers or recurrent "
                f"layers, e.g. mlp, cnn, cnn1d, gru); this model has a compound unit "
                f"{type(main).__name__!r} whose inner layers it cannot reach"
            )
    if any(isinstance(m, nn.ReLU) for layer in layers[:-1] for m in layer):
        warnings.warn(
            f"{rule_class.__name__} on ReLU hidden units: with a fixed label projection as the "
            "signal, ReLU layers learn poorly (DRTP's pseudo-loss is unbounded, tpSGD's "
            "negative targets are unreachable; README, 'DRTP and tpSGD'). The paper's "
            "networks use tanh (--model mlp --activation tanh)",
            stacklevel=3,
        )
    stages, shape = [], tuple(input_shape)
    for k, layer in enumerate(layers):
        if k == len(layers) - 1:
            stages.append(Stage(layer, OneHotLoss(output_kind)))
            break
        target = LocalTarget(hidden_kind, fixed_projection(classes, unit_shape(layer, shape)))
        stages.append(Stage(LocalLayer(layer, target), target))
        shape = output_shape(layer, shape)
    return rule_class(network, stages, cuts=owners[1:])
