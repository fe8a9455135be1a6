"""InfoPro: each block keeps what it knows about the input and learns what it knows of y.

Wang, Ni, Song, Yang & Huang, "Revisiting Locally Supervised Learning: an Alternative to
End-to-end Training" (ICLR 2021): the InfoPro loss and its surrogate, reconstruction plus a
task term. Every detail below was checked against the official code
(blackfeather-wang/InfoPro-Pytorch, ``Experiments on CIFAR-SVHN-STL10``:
``networks/auxiliary_nets.py``, ``networks/resnet.py``, ``comand.sh``):

* local loss of block k < K:  lambda1_k * BCE(decoder(h), x_raw) + lambda2_k * task(head(h), y),
  the last block trains on the network's own cross-entropy;
* decoder: bilinear upsampling to the input's size (``align_corners=True``), conv3x3 -> 12
  channels, BN, ReLU, conv3x3 -> the input's channels, sigmoid; BCE (mean) against the
  *de-normalised* input x * std + mean;
* task head ("1c2f"): conv3x3 (no bias, stride 2 to the next stage's width, or stride 1 at
  the widest stage), BN, ReLU, global average pool, FC(128), ReLU, FC(classes) with
  cross-entropy, or FC(128) with the supervised contrastive loss at temperature 0.07;
* lambda schedule: linear in the block index from block 1 to block K-1,
  r_k = k / (K - 2) (r = 0 when K = 2), lambda_k = (1 - r_k) * lambda_first + r_k * lambda_last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.base import output_shape
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage, TaskLoss
from locallearn.rules.cutting import resolve_cuts, slice_blocks

TASK_LOSSES = ("ce", "contrast")
DECODER_CHANNELS = 12  # the official decoder's hidden width (widen factor 1)
HEAD_FEATURES = 128  # the official "1c2f" head's hidden FC width (aux_net_feature_dim)
TEMPERATURE = 0.07  # SupCon temperature in the official code (base temperature too)

# (lambda1 first, lambda1 last), (lambda2 first, lambda2 last) by K: the official ResNet-32
# CIFAR-10 commands (comand.sh). Other K use the nearest K of this table (log scale).
DEFAULT_WEIGHTS: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {
    2: ((5.0, 0.0), (1.0, 0.0)),
    4: ((6.0, 1.0), (0.0, 2.0)),
    8: ((5.0, 0.0), (0.0, 2.0)),
    16: ((5.0, 0.2), (0.05, 0.5)),
}


def default_weights(blocks: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """The published lambda endpoints for the table's K nearest to ``blocks`` (log scale;
    ties go to the smaller K)."""
    nearest = min(DEFAULT_WEIGHTS, key=lambda k: (abs(math.log(k) - math.log(blocks)), k))
    return DEFAULT_WEIGHTS[nearest]


def lambda_schedule(
    blocks: int, recon: Sequence[float], task: Sequence[float]
) -> list[tuple[float, float]]:
    """(lambda1, lambda2) for each of the K-1 local blocks, interpolated linearly between
    the first block's and the (K-1)-th block's values (``resnet.py``: ratio = k / (K-2))."""
    weights = []
    for k in range(blocks - 1):
        r = k / (blocks - 2) if blocks > 2 else 0.0
        weights.append(((1 - r) * recon[0] + r * recon[1], (1 - r) * task[0] + r * task[1]))
    return weights


class InputImage:
    """The current batch's raw image (x * std + mean, in [0, 1]): the decoders' target.

    The rule refreshes it in ``begin_step``; every decoder of the step reads the same tensor.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.image: torch.Tensor | None = None
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def update(self, x: torch.Tensor) -> None:
        key = (x.device, x.dtype)
        if key not in self._stats:  # made once per device: no host-to-device copy per step
            shape = (1, -1) + (1,) * (x.dim() - 2)
            self._stats[key] = tuple(
                torch.tensor(v, dtype=x.dtype, device=x.device).reshape(shape)
                for v in (self.mean, self.std)
            )
        mean, std = self._stats[key]
        # The clamp only removes rounding error for real image data (already in [0, 1]);
        # for inputs that never were pixels (random tensors in `measure`) it keeps BCE's
        # target a valid probability.
        self.image = torch.addcmul(mean, x, std).clamp_(0.0, 1.0)


class Decoder(nn.Module):
    """Reconstruction net of InfoPro (official ``Decoder``): upsample to the input size,
    conv3x3 -> 12, BN, ReLU, conv3x3 -> input channels, sigmoid.

    ``forward`` returns the pre-sigmoid logits: the sigmoid is folded into the loss
    (``binary_cross_entropy_with_logits``), which is the same function, numerically stabler
    and allowed under autocast (plain BCE is not).
    """

    def __init__(self, channels: int, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.size = tuple(image_shape[1:])
        self.net = nn.Sequential(
            nn.Conv2d(channels, DECODER_CHANNELS, 3, padding=1),
            nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(),
            nn.Conv2d(DECODER_CHANNELS, image_shape[0], 3, padding=1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if tuple(h.shape[2:]) != self.size:
            h = F.interpolate(h, size=self.size, mode="bilinear", align_corners=True)
        return self.net(h)

    def reconstruct(self, h: torch.Tensor) -> torch.Tensor:
        """The reconstructed image in [0, 1]."""
        return torch.sigmoid(self(h))


def task_head(
    feature_shape: tuple[int, ...], widest: int, classes: int, task_loss: str = "ce"
) -> nn.Sequential:
    """The official "1c2f" head, generalised beyond widths 16/32/64.

    The official head's conv goes to the next stage's width at stride 2 (16 -> 32, 32 -> 64)
    and stays at stride 1 in the widest stage (64 -> 64). Here: while the block's width is
    below the network's widest feature map, double it (capped at the widest) with stride 2;
    otherwise keep it, stride 1. On ResNets of widths 16/32/64 this is the official head.
    """
    channels = feature_shape[0]
    if channels < widest:
        out, stride = min(2 * channels, widest), 2
    else:
        out, stride = channels, 1
    final = classes if task_loss == "ce" else HEAD_FEATURES
    return nn.Sequential(
        nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(out, HEAD_FEATURES),
        nn.ReLU(),
        nn.Linear(HEAD_FEATURES, final),
    )


def supervised_contrastive(z: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""SupCon (Khosla et al. 2020) with one view, as InfoPro uses it: for anchor i with
    positives P(i) (same label, not i), :math:`-\frac{1}{|P(i)|}\sum_{p\in P(i)}
    \log\frac{e^{z_i\cdot z_p/T}}{\sum_{a\ne i} e^{z_i\cdot z_a/T}}`, averaged over anchors;
    an anchor without positives contributes 0 (the official loss does the same)."""
    z = F.normalize(z.float(), dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    count = positives.sum(1).clamp(min=1)
    return -(pos_log_prob / count).mean()


class InfoProLoss(Signal):
    r""":math:`\lambda_1 \mathrm{BCE}(\sigma(d(h)), x_{raw}) + \lambda_2 \ell(g(h), y)`.

    A term whose weight is 0 is skipped: its gradient would be exactly zero, so skipping it
    changes no weight and saves its activations.
    """

    def __init__(
        self,
        decoder: Decoder,
        head: nn.Module,
        recon_weight: float,
        task_weight: float,
        image: InputImage,
        task_loss: str = "ce",
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = head
        self.recon_weight = recon_weight
        self.task_weight = task_weight
        self.task_loss = task_loss
        self._image = image  # shared with the rule; not a module, so not checkpointed

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = h.new_zeros((), dtype=torch.float32)
        if self.recon_weight:
            target = self._image.image
            if target is None:
                raise RuntimeError("InfoProLoss needs the rule's begin_step to set the image")
            recon = F.binary_cross_entropy_with_logits(self.decoder(h).float(), target.float())
            loss = loss + self.recon_weight * recon
        if self.task_weight:
            out = self.head(h)
            if self.task_loss == "ce":
                task = F.cross_entropy(out, y)
            else:
                task = supervised_contrastive(out, y, TEMPERATURE)
            loss = loss + self.task_weight * task
        return loss


class InfoPro(Rule):
    r"""Block :math:`k < K` minimises :math:`\lambda_1^k \mathrm{BCE}(\sigma(d_k(h_k)), x_{raw})
    + \lambda_2^k \mathrm{CE}(g_k(h_k), y)` over the block and its decoder :math:`d_k` and head
    :math:`g_k`, with :math:`h_k = f_k(\bar h_{k-1})` and gradients stopped at the block's
    input (Wang et al. 2021, the surrogate InfoPro loss); block :math:`K` minimises the task
    loss.
    ``begin_step`` computes the de-normalised input every decoder reconstructs.
    """

    def __init__(
        self, network: nn.Sequential, stages: list[Stage], cuts: list[int], image: InputImage
    ) -> None:
        super().__init__(network, stages, cuts)
        self.image = image

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.image.update(x)
        return x, y


def widest_channels(network: nn.Sequential, input_shape: tuple[int, ...]) -> int:
    """The largest channel count among the network's 2-D feature maps (unit outputs)."""
    shape, widest = tuple(input_shape), 0
    for unit in network:
        shape = output_shape(unit, shape)
        if len(shape) == 3:
            widest = max(widest, shape[0])
    return widest


def check_image_input(rule: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise UsageError(
            f"rule {rule!r} reconstructs images: it needs inputs of shape CxHxW, got "
            f"{'x'.join(map(str, input_shape))}; use a 2-D image dataset and model, or the "
            f"greedy rule"
        )


def check_weights(name: str, values: Sequence[float] | None) -> tuple[float, float] | None:
    if values is None:
        return None
    values = list(values)
    if len(values) != 2 or any(not math.isfinite(v) or v < 0 for v in values):
        raise UsageError(
            f"--{name} takes two non-negative numbers, the first and the (K-1)-th block's "
            f"weight (e.g. 5,0), got {','.join(map(str, values))}"
        )
    return values[0], values[1]


def infopro_signal(
    feature_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    classes: int,
    widest: int,
    weights: tuple[float, float],
    image: InputImage,
    task_loss: str,
) -> InfoProLoss:
    """The decoder + head signal of one local block whose output has ``feature_shape``."""
    if len(feature_shape) != 3:
        raise UsageError(
            f"InfoPro's decoder and head need 2-D feature maps, but a block boundary carries "
            f"features of shape {feature_shape}; cut the network earlier (--cuts)"
        )
    return InfoProLoss(
        Decoder(feature_shape[0], input_shape),
        task_head(feature_shape, widest, classes, task_loss),
        weights[0],
        weights[1],
        image,
        task_loss,
    )


def resolve_weights(
    blocks: int, recon_weight: Sequence[float] | None, task_weight: Sequence[float] | None
) -> list[tuple[float, float]]:
    default_recon, default_task = default_weights(blocks)
    recon = check_weights("recon-weight", recon_weight) or default_recon
    task = check_weights("task-weight", task_weight) or default_task
    return lambda_schedule(blocks, recon, task)


def check_task_loss(task_loss: str) -> str:
    if task_loss not in TASK_LOSSES:
        raise unknown_choice("task loss", task_loss, TASK_LOSSES)
    return task_loss


@RULES.register(
    "infopro",
    description="InfoPro: per block, lambda1 * reconstruction (decoder, BCE) + lambda2 * "
    "classification head; lambdas interpolated across blocks",
    options=("blocks", "cuts", "recon_weight", "task_weight", "task_loss"),
    paper="Wang et al., ICLR 2021",
    recipe=Recipe(
        source="shared with BP, as in the paper (local and end-to-end networks trained with one "
        "recipe): the global default"
    ),
    families=("conv",),
    ranks=(3,),
    input_stats=True,
)
def build_infopro(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    blocks: int = 4,
    cuts: Sequence[int] | None = None,
    recon_weight: Sequence[float] | None = None,
    task_weight: Sequence[float] | None = None,
    task_loss: str = "ce",
    input_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> InfoPro:
    check_image_input("infopro", input_shape)
    check_task_loss(task_loss)
    weights = resolve_weights(blocks, recon_weight, task_weight)
    mean, std = input_stats if input_stats is not None else ((0.0,), (1.0,))
    image = InputImage(mean, std)
    cut_points = resolve_cuts(network, input_shape, blocks, cuts)
    parts = slice_blocks(network, cut_points)
    widest = widest_channels(network, input_shape)
    stages, shape = [], tuple(input_shape)
    for k, block in enumerate(parts):
        shape = output_shape(block, shape)
        if k == len(parts) - 1:
            signal: Signal = TaskLoss()
        else:
            signal = infopro_signal(
                shape, input_shape, classes, widest, weights[k], image, task_loss
            )
        stages.append(Stage(block, signal))
    return InfoPro(network, stages, cut_points, image)
