"""Forward gradients with local losses.

Ren, Kornblith, Liao & Hinton, "Scaling Forward Gradient With Local Losses", ICLR 2023
(arXiv 2210.03310); reference code: google-research/google-research
``local_forward_gradient`` (JAX, Apache-2.0), read, not copied. A related variant is LocalFG
(Fournier et al., "Can Forward Gradient Match Backpropagation?", ICML 2023), which guides the
directions with a local loss's gradient; not implemented here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.base import output_shape
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, HeadLoss, Rule, Stage, TaskLoss
from locallearn.rules.cutting import resolve_cuts, slice_blocks
from locallearn.rules.heads import make_head
from locallearn.rules.projection import ACTIVATIONS, AFFINE, _affine_param_grads

PERTURBATIONS = ("activity", "weight")
MODELS_TAKEN = ("mlp", "cnn1d")
# Parameter-free ops a layer may run before its weights (they carry the tangent unchanged).
_LEAD_OPS = (
    nn.Flatten,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)


@dataclass
class _Layer:
    """One layer of a block: parameter-free lead ops, the affine op, its activation."""

    lead: nn.Sequential
    affine: nn.Module
    act: nn.Module | None

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.act is None else self.act(z)


def _flat(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flat(child)]
    return [module]


def _refuse(what: str) -> UsageError:
    return UsageError(
        f"rule 'fwdgrad' trains plain stacks of Linear/Conv layers with ReLU, tanh or sigmoid "
        f"(models: {', '.join(MODELS_TAKEN)}); this model has {what}, which its forward "
        "gradient cannot handle (a norm couples the examples of a batch)"
    )


def plain_layers(block: nn.Sequential) -> tuple[list[_Layer], nn.Sequential]:
    """``block`` as layers (lead ops, affine, activation) and the parameter-free ops after
    its last layer; a UsageError for any module the estimator cannot handle."""
    layers: list[_Layer] = []
    lead: list[nn.Module] = []
    for module in _flat(block):
        if isinstance(module, AFFINE):
            if not isinstance(module, nn.Linear) and module.padding_mode != "zeros":
                raise _refuse(f"a {type(module).__name__} with padding_mode {module.padding_mode}")
            layers.append(_Layer(nn.Sequential(*lead), module, None))
            lead = []
        elif isinstance(module, ACTIVATIONS) and layers and not lead and layers[-1].act is None:
            layers[-1].act = module
        elif isinstance(module, _LEAD_OPS):
            lead.append(module)
        else:
            raise _refuse(f"a {type(module).__name__}")
    if not layers:
        raise UsageError("rule 'fwdgrad': a block of this network has no layer with weights")
    return layers, nn.Sequential(*lead)


class LocalHead(HeadLoss):
    """A hidden block's local loss: cross-entropy of a linear head on the block's output
    (Ren et al. 2023, Sec. 3, block-wise loss); ``per_example`` gives it sample by sample,
    which the activity-perturbed estimator needs."""

    def per_example(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(h), y, reduction="none")


def _bytes(tensors: Iterable[torch.Tensor], exclude: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages of ``tensors``, leaving out those of ``exclude``."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


class ForwardGradient(Rule):
    r"""Forward-gradient learning with block-wise local losses; no backward pass through
    the network.

    The network is cut into blocks whose inputs are detached; hidden block :math:`k` learns
    the local loss :math:`L_k = \frac1N \sum_n \ell_{k,n}`, :math:`\ell_{k,n} =
    \mathrm{CE}(g_k(f_k(\bar h_{k-1,n})), y_n)` with a linear head :math:`g_k` (Sec. 3,
    block-wise losses). The block's weights learn from a *forward gradient*: a directional
    derivative computed by forward-mode AD (``torch.func.jvp``) along a random direction,
    times that direction (Sec. 2). Two perturbations (``--fg-perturb``):

    - ``activity`` (default; Sec. 2, activity-perturbed forward gradient): for every layer
      :math:`z = W x + b` of the block, each example draws :math:`u_n \sim \mathcal N(0, I)`
      of :math:`z_n`'s shape; one jvp of the per-example losses along all the block's
      :math:`u` at once gives :math:`s_n = \sum_{\text{layers}} \nabla_{z_n}\ell_n \cdot
      u_n` with the loss itself, and

      .. math:: \hat g(z_n) = \tfrac1N\, s_n u_n, \qquad
                \hat g(W) = \textstyle\sum_n \hat g(z_n)\, x_n^\top, \qquad
                \hat g(b) = \textstyle\sum_n \hat g(z_n).

      Unbiased because :math:`E[u u^\top] = I` and directions of different layers and
      examples are independent (the cross terms have mean 0). For a ReLU layer the entries
      of inactive units are set to 0: their true gradient is exactly 0, so the estimate stays
      unbiased with less variance (the reference code's mask in
      ``update_forward_grad_activations``).
    - ``weight`` (Sec. 2, weight-perturbed forward gradient): one direction
      :math:`v \sim \mathcal N(0, I)` of the block's parameters, shared by the batch;
      :math:`\hat g(\theta) = (\nabla_\theta L_k \cdot v)\, v`. Its variance grows with the
      number of parameters, the activity version's with the number of units, which is why
      the paper (and this default) perturbs activities.

    ``--fg-directions D`` averages D independent estimates (D jvp passes; the reference's
    ``num_passes``, 1 in its configs), dividing the variance by D.

    ``--fg-groups G`` (activity only; Sec. 3, group-wise losses): the output units (channels
    of a conv layer) of a hidden block are split into G equal contiguous groups; group
    :math:`g` has its own loss :math:`L_{k,g}`, the same head on the block's output with
    every other group's units detached. Its value is :math:`L_k`'s, and :math:`\sum_g
    L_{k,g}` has :math:`L_k`'s gradient, but a perturbation of group :math:`g`'s units now
    reaches only :math:`L_{k,g}`. One jvp of the :math:`G` per-example losses gives a slope
    :math:`s_{n,g}` per group and :math:`\hat g(z_{n,c}) = \tfrac1N s_{n,g(c)} u_{n,c}`
    for the block's last layer, still unbiased, with the variance of a layer of
    :math:`C/G` units instead of :math:`C`: the summed variance of :math:`\hat g(z_n)` is
    :math:`\sum_g (k_{n,g}+1)\,|a_{n,g}|^2`, with :math:`a_{n,g}` the true gradient on group
    :math:`g` and :math:`k_{n,g}` its perturbed (for ReLU: active) units. Earlier layers of
    a block of several layers reach every group; their slope is :math:`\sum_g s_{n,g}`, as
    with one loss. The head learns from :math:`L_k` (shared by the groups, as in the paper).

    The heads and the network's last layer (the readout, always a block of its own) learn
    from their exact local gradient with their input detached, as in the reference code,
    where the local classifiers and the final linear classifier take their true gradients
    (``local_classif_grad``, ``global_classif_grad``): autograd runs through the head alone.

    Memory: the jvp runs without autograd (``torch.no_grad``; forward-mode AD is not
    disabled by it), so the network saves nothing for backward: the meter counts only what
    a head or the readout saves (its detached input, the next layer's input, and its
    log-softmax). What the estimator itself keeps alive across its jvp, outside autograd
    and so unseen by the meter (the pre-activations and directions, and inner layers'
    inputs in a block of several layers), is counted exactly, storage by storage, as
    ``fg_held_bytes_peak`` in the run summary.

    Sources: sections are the ICLR paper's (2: forward gradient learning, weight and
    activity perturbation; 3: local losses). Only its abstract could be read here; every
    formula above was checked against the reference code (``train_mixer_supervised.py``:
    ``update_forward_grad_activations``, ``update_forward_grad_weights``, ``loss``, whose
    per-example local losses are divided by the batch size as here).

    Simplifications, stated: block-wise and group-wise losses (no patch-wise losses, which
    need the paper's LocalMixer; no LayerNorm); plain layer stacks (``mlp``,
    ``cnn1d``); cross-entropy heads (classification only).
    """

    def __init__(
        self,
        network: nn.Sequential,
        stages: list[Stage],
        cuts: list[int],
        layers: list[tuple[list[_Layer], nn.Sequential, list[tuple[int, ...]]]],
        perturb: str,
        directions: int,
        groups: int = 1,
    ) -> None:
        super().__init__(network, stages, cuts)
        self.groups = groups
        self.layers = layers  # per hidden stage: (layers, tail ops, pre-activation shapes)
        self.perturb = perturb
        self.directions = directions
        # One generator per stage, seeded from the run's RNG: a stage draws the same
        # directions wherever it runs (one process or a worker of a pipeline).
        self._seeds = [int(torch.randint(2**62, ())) for _ in layers]
        self._generators: dict[int, torch.Generator] = {}
        self._pending: dict[int, torch.Tensor] = {}
        self.held_bytes_peak = 0

    # -- the estimator ---------------------------------------------------------------------
    def _generator(self, index: int, device: torch.device) -> torch.Generator:
        gen = self._generators.get(index)
        if gen is None or gen.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._seeds[index])
            if index in self._pending:
                gen.set_state(self._pending.pop(index))
            self._generators[index] = gen
        return gen

    def _randn(self, index: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        gen = self._generator(index, like.device)
        return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def forward_gradient(
        self, index: int, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Hidden stage ``index`` on batch (x, y): its output, its local loss and the
        forward-gradient estimate of each block parameter (in ``block.parameters()``
        order), averaged over ``directions``. Nothing is written to ``.grad``."""
        block = self.stages[index].block
        params = list(block.parameters())
        grads = [torch.zeros_like(p) for p in params]
        out = loss = None
        for _ in range(self.directions):
            if self.perturb == "activity":
                out, loss, estimate = self._activity(index, x, y)
            else:
                out, loss, estimate = self._weight(index, x, y)
            for g, e in zip(grads, estimate):
                g.add_(e)
        if self.directions > 1:
            for g in grads:
                g.div_(self.directions)
        assert out is not None and loss is not None
        return out, loss, grads

    def _activity(
        self, index: int, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        layers, tail, shapes = self.layers[index]
        signal = self.stages[index].signal
        assert isinstance(signal, LocalHead)
        n = x.shape[0]
        first = layers[0].lead(x)
        z1 = layers[0].affine(first)  # the first layer's activity is the jvp's primal
        tangents = [self._randn(index, (n, *shape), x) for shape in shapes]
        zeros = [torch.zeros_like(t) for t in tangents[1:]]  # later layers: z + 0, tangent u

        def local_loss(
            z: torch.Tensor, eps: list[torch.Tensor]
        ) -> tuple[torch.Tensor, tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]]:
            h = layers[0].activate(z)
            inputs, acts = [first], [h]
            for layer, e in zip(layers[1:], eps):
                inputs.append(layer.lead(h))
                h = layer.activate(layer.affine(inputs[-1]) + e)
                acts.append(h)
            out = tail(h)
            if self.groups == 1:
                return signal.per_example(out, y) / n, (out, inputs, acts)
            return self._group_losses(signal, h, tail, y) / n, (out, inputs, acts)

        losses, slopes, (out, inputs, acts) = jvp(
            local_loss, (z1, zeros), (tangents[0], tangents[1:]), has_aux=True
        )
        held = _bytes([z1, *tangents, *zeros, *inputs, *acts, slopes], exclude=[x, out])
        self.held_bytes_peak = max(self.held_bytes_peak, held)
        estimate: list[torch.Tensor] = []
        for k, (layer, inp, act, u) in enumerate(zip(layers, inputs, acts, tangents)):
            if self.groups == 1:
                slope = slopes
            elif k == len(layers) - 1:  # the grouped layer: each unit its own group's slope
                slope = slopes.repeat_interleave(u.shape[1] // self.groups, dim=1)
            else:  # an earlier layer reaches every group's loss
                slope = slopes.sum(1)
            gz = slope.view(*slope.shape, *([1] * (u.dim() - slope.dim()))) * u
            if isinstance(layer.act, nn.ReLU):  # inactive units: true gradient exactly 0
                gz = gz * (act > 0)
            has_bias = layer.affine.bias is not None
            gw, gb = _affine_param_grads(layer.affine, inp, gz, has_bias)
            estimate += [gw, gb] if gb is not None else [gw]
        loss = losses.sum() if self.groups == 1 else losses[:, 0].sum()  # groups: same value
        return out, loss, self._in_block_order(index, layers, estimate)

    def _group_losses(
        self, signal: LocalHead, h: torch.Tensor, tail: nn.Sequential, y: torch.Tensor
    ) -> torch.Tensor:
        """Per-example losses of the G groups, (N, G): the head on ``h`` with all but group
        g's units (dim 1) detached. Under the jvp ``h - h.detach()`` is 0 with h's tangent,
        so group g's loss has the shared value and only group g's tangent."""
        n, c, g = h.shape[0], h.shape[1], self.groups
        mask = torch.eye(g, dtype=h.dtype, device=h.device).repeat_interleave(c // g, dim=1)
        mask = mask.view(g, 1, c, *([1] * (h.dim() - 2)))
        base = h.detach()
        grouped = (base.unsqueeze(0) + mask * (h - base).unsqueeze(0)).flatten(0, 1)
        per = signal.per_example(tail(grouped), y.repeat(g))
        return per.view(g, n).T

    def _weight(
        self, index: int, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        block = self.stages[index].block
        signal = self.stages[index].signal
        assert isinstance(signal, LocalHead)
        names = [name for name, _ in block.named_parameters()]
        primals = {name: p.detach() for name, p in block.named_parameters()}
        tangents = {name: self._randn(index, tuple(p.shape), p) for name, p in primals.items()}

        def local_loss(ps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            out = functional_call(block, ps, (x,))
            return signal.per_example(out, y).mean(), out

        loss, slope, out = jvp(local_loss, (primals,), (tangents,), has_aux=True)
        held = _bytes([*tangents.values(), slope], exclude=[x, out])
        self.held_bytes_peak = max(self.held_bytes_peak, held)
        return out, loss, [slope * tangents[name] for name in names]

    def _in_block_order(
        self, index: int, layers: list[_Layer], estimate: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The per-layer estimates (weight, bias, ...) in ``block.parameters()`` order."""
        by_id = {}
        flat = [
            p for layer in layers for p in (layer.affine.weight, layer.affine.bias) if p is not None
        ]
        for p, g in zip(flat, estimate):
            by_id[id(p)] = g
        return [by_id[id(p)] for p in self.stages[index].block.parameters()]

    # -- the loop's hooks ------------------------------------------------------------------
    def set_grads(
        self, stage_index: int, h: torch.Tensor, target: Any
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if stage_index >= len(self.layers):
            return None  # the readout: its exact gradient, through the loop's backward
        stage = self.stages[stage_index]
        out, _, estimate = self.forward_gradient(stage_index, h, target)
        for p, g in zip(stage.block.parameters(), estimate):
            p.grad = g if p.grad is None else p.grad.add_(g)
        # The head: its exact gradient, autograd through the head alone (input detached).
        loss = stage.signal(out, target)
        loss.backward()
        return out, loss.detach()

    def extra_summary(self, x_test: torch.Tensor, y_test: torch.Tensor) -> dict[str, Any]:
        return {
            "fg_perturb": self.perturb,
            "fg_directions": self.directions,
            "fg_groups": self.groups,
            "fg_held_bytes_peak": self.held_bytes_peak,
        }

    def state_dict(self) -> dict[str, Any]:
        states = [
            self._generators[i].get_state() if i in self._generators else self._pending.get(i)
            for i in range(len(self.layers))
        ]
        return {
            **super().state_dict(),
            "fg_seeds": torch.tensor(self._seeds, dtype=torch.int64),
            "fg_generators": [
                s if s is not None else torch.empty(0, dtype=torch.uint8) for s in states
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._seeds = [int(s) for s in state["fg_seeds"]]
        self._generators = {}
        self._pending = {i: s for i, s in enumerate(state["fg_generators"]) if s.numel() > 0}


@RULES.register(
    "fwdgrad",
    description="forward gradients (torch.func.jvp, no backward through the network), a "
    "local linear head per block",
    options=("blocks", "fg_perturb", "fg_directions", "fg_groups"),
    paper="Ren, Kornblith, Liao & Hinton, ICLR 2023",
    recipe=Recipe(
        optimizer="adam",
        lr=3e-3,
        lr_schedule="cosine",
        batch_size=100,
        source="Ren et al. 2023 reference code (local_forward_gradient): batch 100, one "
        "direction per step, activity perturbation, cosine schedule; Adam lr 3e-3 chosen on "
        "the MNIST validation split (BENCHMARKS.md, fwdgrad)",
    ),
    families=("dense", "conv"),
    models=MODELS_TAKEN,
)
def build_fwdgrad(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    blocks: int | None = None,
    fg_perturb: str | None = None,
    fg_directions: int | None = None,
    fg_groups: int | None = None,
) -> ForwardGradient:
    perturb = fg_perturb or "activity"
    if perturb not in PERTURBATIONS:
        raise unknown_choice("--fg-perturb", perturb, PERTURBATIONS)
    directions = 1 if fg_directions is None else fg_directions
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise UsageError(f"--fg-directions must be an integer >= 1, got {fg_directions}")
    groups = 1 if fg_groups is None else fg_groups
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise UsageError(f"--fg-groups must be an integer >= 1, got {fg_groups}")
    if groups > 1 and perturb != "activity":
        raise UsageError(
            f"--fg-groups {groups} needs --fg-perturb activity (a weight direction is shared "
            "by all units, so it cannot be split into groups); with --fg-perturb weight use "
            "--fg-groups 1"
        )
    units = len(network)
    if units < 2:
        raise UsageError(
            "rule 'fwdgrad' needs at least one hidden layer before the readout (--depth 1 or more)"
        )
    blocks = units if blocks is None else blocks  # default: every unit its own block
    if blocks < 2 or blocks > units:
        raise UsageError(
            f"--blocks {blocks} is out of range for fwdgrad: the readout is a block of its "
            f"own, so K must be between 2 and {units} (this network has {units} units)"
        )
    cuts = [*resolve_cuts(network[:-1], input_shape, blocks - 1), units - 1]
    parts = slice_blocks(network, cuts)
    stages, layers, shape = [], [], tuple(input_shape)
    for part in parts[:-1]:
        block_layers, tail = plain_layers(part)
        shapes, h = [], shape
        for layer in block_layers:
            shapes.append(output_shape(nn.Sequential(layer.lead, layer.affine), h))
            h = output_shape(nn.Sequential(layer.lead, layer.affine, *filter(None, [layer.act])), h)
        if shapes[-1][0] % groups:
            raise UsageError(
                f"--fg-groups {groups} must divide the units (channels) of every hidden "
                f"block's output; block {len(stages) + 1} has {shapes[-1][0]}; valid: "
                + ", ".join(str(d) for d in range(1, shapes[-1][0] + 1) if shapes[-1][0] % d == 0)
            )
        shape = output_shape(part, shape)
        head = LocalHead(make_head("linear", shape, classes))
        stages.append(Stage(part, head))
        layers.append((block_layers, tail, shapes))
    stages.append(Stage(parts[-1], TaskLoss()))
    return ForwardGradient(network, stages, cuts, layers, perturb, directions, groups)
