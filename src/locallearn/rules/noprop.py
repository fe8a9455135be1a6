r"""NoProp-DT: T blocks, each learning on its own to denoise a noisy label embedding.

Li, Teh & Pascanu, "NoProp: Training Neural Networks without Back-propagation or
Forward-propagation", arXiv 2503.24322 (2025). No official code. Only the paper's abstract
page was readable here, so the formulas below are the paper's method (sec. 2: eq. 3 the
inference step, eq. 8 the loss, Algorithm 1 the training of NoProp-DT, Fig. 6 the block,
Table 3 the settings) as restated by public re-implementations (DanielHalachev/NoProp and its
report, Tai225999/NoProp---Pytorch-Implementation; read, not copied) and checked here for
consistency: ``chain_coefficients`` is the Gaussian posterior of the noising process
(``tests/test_noprop.py`` derives it independently).

Notation (sec. 2). Labels y have embeddings :math:`u_y`, the rows of :math:`W_{Embed}`
(classes x d). Latents :math:`z_0, \dots, z_T` run from noise (:math:`z_0`) to the label
(:math:`z_T`); the variational posterior has marginals

.. math:: q(z_t \mid y) = \mathcal N\big(\sqrt{\bar\alpha_t}\, u_y,\ (1 - \bar\alpha_t) I\big),
          \qquad \bar\alpha_t = \textstyle\prod_{s=t}^{T} \alpha_s,\quad
          \mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t).

Block t (of T) is a whole network :math:`\hat u_{\theta_t}(z_{t-1}, x)` (``DenoiseBlock``,
Fig. 6: image path + label path -> class logits; its estimate of :math:`u_y` is
:math:`\mathrm{softmax}(\text{logits})\, W_{Embed}`). Training (Algorithm 1): for each t
and each batch, draw :math:`z_{t-1} \sim q(z_{t-1} \mid y)` and :math:`z_T \sim q(z_T \mid y)`
and take one step of :math:`(\theta_t, \theta_{out}, W_{Embed})` on

.. math:: \mathcal L_t = \frac1B \sum_i \Big[ -\log \hat p_{\theta_{out}}(y_i \mid z_{T,i})
          + D_{KL}\big(q(z_0 \mid y_i) \,\|\, \mathcal N(0, I)\big)
          + \frac{T}{2}\,\eta\,\big(\mathrm{SNR}(t) - \mathrm{SNR}(t-1)\big)\,
            \big\| \hat u_{\theta_t}(z_{t-1,i}, x_i) - u_{y_i} \big\|^2 \Big]

(eq. 8 at one t), :math:`\hat p_{\theta_{out}}` a linear layer and softmax. Inference (eq.
3, the posterior :math:`q(z_t \mid z_{t-1}, y)` with :math:`u_y` replaced by the block's
estimate): :math:`z_0 \sim \mathcal N(0, I)`, then for t = 1..T

.. math:: z_t = a_t\, \hat u_{\theta_t}(z_{t-1}, x) + b_t\, z_{t-1} + \sqrt{c_t}\, \epsilon_t,
          \quad a_t = \frac{\sqrt{\bar\alpha_t}(1 - \alpha_{t-1})}{1 - \bar\alpha_{t-1}},\
          b_t = \frac{\sqrt{\alpha_{t-1}}(1 - \bar\alpha_t)}{1 - \bar\alpha_{t-1}},\
          c_t = \frac{(1 - \bar\alpha_t)(1 - \alpha_{t-1})}{1 - \bar\alpha_{t-1}}

and the prediction is :math:`\arg\max \hat p_{\theta_{out}}(y \mid z_T)`.

How it goes through the one loop: stage t is block t (``--np-steps`` T stages; ``--blocks``
does not apply). ``begin_step`` draws every stage's noise for the batch; ``chunks`` hands
block t the packed input ``[x, z_{t-1}]``, so every block reads the image and its own noisy
label, never another block's output, and ``predict`` runs the chain. A stage's optimizer
holds its block and the shared :math:`(\theta_{out}, W_{Embed})`, as Algorithm 1 steps them
with every block's loss. No gradient crosses from one block to another; only one block's
graph is alive at a time, so ``act_bytes_peak`` is one block's.

Choices the paper leaves open, or where ours differs:

- Noise schedule (fixed for NoProp-DT, learned for CT; the form is the re-implementations'
  reading): the cosine schedule (Nichol & Dhariwal 2021, offset s = 0.008) with
  time reversed, :math:`\bar\alpha_t = f(T - t) / f(0)`,
  :math:`f(\tau) = \cos^2(\tfrac{\pi}{2} \tfrac{\tau/T + s}{1 + s})`, so
  :math:`\bar\alpha_0 \approx 0` (pure noise) and :math:`\bar\alpha_T = 1`. SNR(T) would be
  infinite: :math:`\bar\alpha_t` is clipped at 0.999 (SNR at most 999), as Nichol & Dhariwal
  clip :math:`\beta_t` at 0.999 at the other end.
- Embedding (the paper compares one-hot, learned and prototype embeddings): ``--np-embedding
  onehot`` (default; :math:`W_{Embed} = I`, d = classes, fixed) or ``learned``
  (``--np-embed-dim`` d, rows initialised orthonormal when d >= classes). Prototype
  embeddings are not implemented.
- Optimizers: each stage has its own optimizer state for the shared
  :math:`(\theta_{out}, W_{Embed})`, so they take T steps per batch, one per block's loss,
  as in Algorithm 1, but with T separate sets of Adam moments instead of one.
- Order: Algorithm 1 loops over t outside the batches (block 1 on the whole epoch, then
  block 2, ...); here each step trains every block on the batch. Each block still sees
  each sample once per epoch, with its own draw of :math:`z_{t-1}`.
- :math:`\eta` (``--np-eta``, Table 3: 0.1) weighs the denoising term against the
  cross-entropy and KL terms, which do not depend on :math:`\theta_t`. Under Adam a block's
  update is invariant to the scale of its loss, so :math:`\eta` and the SNR weight act only
  through the learned embedding (or with ``--optimizer sgd``); with the one-hot default they
  leave the blocks' training unchanged (up to Adam's epsilon).
- Table 3 trains with AdamW (lr 1e-3, weight decay 1e-3, batch 128, 100 epochs); our
  ``adam`` couples weight decay as an L2 term, so the recipe keeps lr 1e-3 and batch 128 and
  leaves weight decay at 0.
- The inference chain draws its noise from a generator seeded per call (seed 0), so an
  evaluation is reproducible and does not touch the training RNG; a sample's noise
  depends on its place in the batch.
- Block architecture (Fig. 6 as the re-implementations read it; they differ on pooling,
  after every conv or after the first and third, and on dropout, 0.2 or 0.3): 2x2
  max-pooling after each of the three convs (the cheaper on CPU), dropout 0.2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.noprop import DenoiseBlock
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage

EMBEDDINGS = ("onehot", "learned")
COSINE_OFFSET = 0.008  # Nichol & Dhariwal (2021) eq. 17
MAX_ALPHA_BAR = 0.999  # SNR(T) <= 999 instead of infinity (see the module docstring)
INFERENCE_SEED = 0
CHAIN_ROWS = 1000  # test rows of the summary's accuracy after each step of the chain


# -- the schedule ---------------------------------------------------------------------------
def cosine_alpha_bar(steps: int) -> torch.Tensor:
    """alpha-bar_t for t = 0..T (float64, increasing: t = 0 is noise, t = T the label)."""
    tau = steps - torch.arange(steps + 1, dtype=torch.float64)

    def f(tau: torch.Tensor) -> torch.Tensor:
        return torch.cos((tau / steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return (f(tau) / f(torch.zeros((), dtype=torch.float64))).clamp(0.0, MAX_ALPHA_BAR)


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar / (1 - alpha_bar)


def chain_coefficients(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(a_t, b_t, c_t) for t = 1..T: the mean and variance of q(z_t | z_{t-1}, y) =
    N(a_t u_y + b_t z_{t-1}, c_t I), with alpha_{t-1} = alpha-bar_{t-1} / alpha-bar_t."""
    prev, cur = alpha_bar[:-1], alpha_bar[1:]
    alpha = prev / cur
    a = cur.sqrt() * (1 - alpha) / (1 - prev)
    b = alpha.sqrt() * (1 - cur) / (1 - prev)
    c = (1 - cur) * (1 - alpha) / (1 - prev)
    return a, b, c


# -- modules --------------------------------------------------------------------------------
class NoPropOutput(nn.Module):
    """The class embeddings W_Embed (classes, d) and the output layer p(y | z_T) = softmax(
    Linear(z_T)); ``forward`` gives the logits."""

    def __init__(self, classes: int, dim: int, learned: bool) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, classes)
        if learned:
            weight = torch.empty(classes, dim)
            if dim >= classes:
                nn.init.orthogonal_(weight)  # orthonormal rows: distinct, unit-norm labels
            else:
                nn.init.normal_(weight, std=dim**-0.5)
            self.embedding = nn.Parameter(weight)
        else:
            self.register_buffer("embedding", torch.eye(classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(z)


@dataclass
class NoPropTargets:
    """What every stage sees for one batch: labels, images and the noise of every stage's
    z_{t-1} and z_T draws, each (T, B, d)."""

    labels: torch.Tensor
    images: torch.Tensor
    noise_in: torch.Tensor
    noise_top: torch.Tensor


class NoPropLoss(Signal):
    """L_t of the module docstring for the block of stage ``index`` (t = index + 1), from that
    block's logits."""

    def __init__(self, index: int, rule: NoProp) -> None:
        super().__init__()
        self.index = index
        self._rule = (rule,)  # a tuple: the rule's modules are not this signal's parameters

    def forward(self, logits: torch.Tensor, target: NoPropTargets) -> torch.Tensor:
        rule = self._rule[0]
        output = rule.output
        w = output.embedding
        u = w[target.labels]  # (B, d)
        u_hat = torch.softmax(logits, dim=1) @ w
        denoise = rule.weights[self.index] * (u_hat - u).pow(2).sum(dim=1).mean()
        ab_top, ab_0 = rule.alpha_bar[-1], rule.alpha_bar[0]
        z_top = math.sqrt(ab_top) * u + math.sqrt(1 - ab_top) * target.noise_top[self.index]
        ce = F.cross_entropy(output(z_top), target.labels)
        d = u.shape[1]
        kl = 0.5 * (ab_0 * u.pow(2).sum(dim=1) + d * (1 - ab_0) - d - d * math.log(1 - ab_0))
        return ce + kl.mean() + denoise


class NoProp(Rule):
    """NoProp-DT (module docstring): T denoising blocks, the output layer, the embedding."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        classes: int,
        steps: int,
        eta: float,
        embedding: str,
        dim: int,
    ) -> None:
        self.steps, self.eta, self.embedding, self.dim = steps, eta, embedding, dim
        self.classes = classes
        self.image_shape = tuple(image_shape)
        alpha_bar = cosine_alpha_bar(steps)
        self.alpha_bar = alpha_bar.tolist()
        ratios = snr(alpha_bar)
        # (T/2) eta (SNR(t) - SNR(t-1)) for t = 1..T.
        self.weights = (steps / 2 * eta * (ratios[1:] - ratios[:-1])).tolist()
        self.coefficients = [c.tolist() for c in chain_coefficients(alpha_bar)]
        self.output = NoPropOutput(classes, dim, embedding == "learned")
        blocks = [DenoiseBlock(image_shape, dim, classes) for _ in range(steps)]
        network = nn.Sequential(*blocks, self.output)
        stages = [Stage(block, NoPropLoss(i, self)) for i, block in enumerate(blocks)]
        super().__init__(network, stages, cuts=[])
        self.model_name = f"noprop-dt-{steps}"
        # The probes read the network unit after unit (probes/run.py); these units are not a
        # chain of layers.
        self.probe_refusal = (
            "its blocks each read the image and a noisy label, not the previous unit's output"
        )

    # -- training ------------------------------------------------------------------------
    def stage_parameters(self, index: int) -> list[nn.Parameter]:
        """Block ``index`` and the shared output layer and embedding (Algorithm 1)."""
        return [*self.stages[index].block.parameters(), *self.output.parameters()]

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, NoPropTargets]:
        noise = torch.randn(2, self.steps, x.shape[0], self.dim, device=x.device, dtype=x.dtype)
        return x, NoPropTargets(y, x, noise[0], noise[1])

    def chunks(
        self, stage_index: int, h: torch.Tensor, target: NoPropTargets
    ) -> Iterator[tuple[torch.Tensor, NoPropTargets]]:
        """Block t's input: the batch's images (not the previous block's output) and
        z_{t-1} ~ q(z_{t-1} | y), packed as one (B, pixels + d) tensor."""
        ab = self.alpha_bar[stage_index]
        u = self.output.embedding.detach()[target.labels]
        z = math.sqrt(ab) * u + math.sqrt(1 - ab) * target.noise_in[stage_index]
        yield torch.cat([target.images.flatten(1), z], dim=1), target

    # -- prediction ----------------------------------------------------------------------
    def chain(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """z_1, ..., z_T of the inference chain for ``x`` (noise from a generator seeded per
        call: see the module docstring)."""
        generator = torch.Generator(device=x.device).manual_seed(INFERENCE_SEED)
        shape = (x.shape[0], self.dim)
        z = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        pixels = x.flatten(1)
        w = self.output.embedding
        for t, stage in enumerate(self.stages):
            a, b, c = (coef[t] for coef in self.coefficients)
            u_hat = torch.softmax(stage.block(torch.cat([pixels, z], dim=1)), dim=1) @ w
            eps = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
            z = a * u_hat + b * z + math.sqrt(c) * eps
            yield z

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores: the output layer on z_T, the end of the chain."""
        *_, z_top = self.chain(x)
        return self.output(z_top)

    @torch.no_grad()
    def chain_accuracies(self, x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> list[float]:
        """Accuracy of the output layer on each z_t (t = 1..T) of the chain, on (x, y), in
        batches of the evaluation's size (engine/evaluation.py, 100): the chain's noise is
        drawn per call, so the last entry is the run's test accuracy."""
        self.train(False)
        correct = torch.zeros(self.steps)
        for start in range(0, x.shape[0], batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            for t, z in enumerate(self.chain(xb)):
                correct[t] += float((self.output(z).argmax(dim=1) == yb).sum())
        return (correct / max(1, x.shape[0])).tolist()

    def extra_summary(self, x_test: torch.Tensor, y_test: torch.Tensor) -> dict[str, Any]:
        # On the first CHAIN_ROWS test rows: the whole test set would cost a second pass of
        # the chain (on full MNIST, as long as the test evaluation itself).
        rows = slice(0, CHAIN_ROWS)
        return {
            "np_steps": self.steps,
            "np_eta": self.eta,
            "np_embedding": self.embedding,
            "np_embed_dim": self.dim,
            "np_alpha_bar": self.alpha_bar,
            "np_chain_test_acc": self.chain_accuracies(x_test[rows], y_test[rows]),
            "np_chain_rows": min(CHAIN_ROWS, int(x_test.shape[0])),
        }


@RULES.register(
    "noprop",
    description="NoProp-DT: T blocks each learn alone to denoise a noisy label embedding; "
    "inference runs them as a denoising chain",
    options=("np_steps", "np_eta", "np_embedding", "np_embed_dim"),
    paper="Li, Teh & Pascanu, arXiv 2503.24322, 2025",
    own_network=True,  # T whole blocks of the paper's Fig. 6; the --model is unused
    families=("conv",),
    ranks=(3,),
    recipe=Recipe(
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        source="Li et al. 2025 Table 3 (NoProp-DT, MNIST): AdamW lr 1e-3, batch 128, T=10, "
        "eta 0.1; weight decay 1e-3 left out (our adam couples it as L2)",
    ),
)
def build_noprop(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    np_steps: int = 10,
    np_eta: float = 0.1,
    np_embedding: str = "onehot",
    np_embed_dim: int | None = None,
) -> NoProp:
    if len(input_shape) != 3:
        raise UsageError(
            f"rule 'noprop' takes images (channels, height, width); this dataset's inputs "
            f"have shape {tuple(input_shape)} (give an image dataset, e.g. --data mnist)"
        )
    if np_steps < 1:
        raise UsageError(f"--np-steps must be at least 1 (the number of blocks T), got {np_steps}")
    if not (np_eta > 0 and math.isfinite(np_eta)):
        raise UsageError(f"--np-eta must be a positive number (Table 3: 0.1), got {np_eta}")
    if np_embedding not in EMBEDDINGS:
        raise unknown_choice("--np-embedding", np_embedding, EMBEDDINGS)
    if np_embed_dim is not None and np_embed_dim < 1:
        raise UsageError(f"--np-embed-dim must be at least 1, got {np_embed_dim}")
    if np_embedding == "onehot" and np_embed_dim not in (None, classes):
        raise UsageError(
            f"--np-embed-dim {np_embed_dim}: one-hot embeddings have d = classes = {classes}; "
            "give --np-embedding learned for another dimension"
        )
    dim = classes if np_embed_dim is None else np_embed_dim
    return NoProp(input_shape, classes, np_steps, np_eta, np_embedding, dim)
