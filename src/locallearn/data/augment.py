"""Training-time image augmentation, batched, on the batch's own device.

The standard recipe of the CIFAR ResNet papers (He et al., 2016, sec. 4.2, and the local
learning papers that reuse it: InfoPro, AugLocal, MAN): pad each image by ``p`` pixels, crop
a random window of the original size, and mirror it left-right with probability 1/2. Written
with tensor ops on the whole batch, so a batch already on the GPU never goes back to the host.

All randomness comes from the ``torch.Generator`` the engine passes in (one per epoch, apart
from the data order's), so a run is reproducible and resumable. The few random numbers (two
offsets and one coin per image) are drawn on the generator's device and then moved to the
batch's device: the engine's generator is a CPU one, and CUDA ops refuse a CPU generator.

Padding happens on the *normalised* batch, so "zero padding" means the value a black pixel
(raw value 0) has after normalisation, ``-mean / std`` per channel. That is what the papers'
pipeline (pad the raw image with zeros, then normalise) produces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from locallearn.data.base import Dataset
from locallearn.data.prepare import dataset_from_arrays

PAD_MODES = ("constant", "reflect")


def black_fill(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """Per-channel value of a raw 0 pixel after ``(x - mean) / std``."""
    return tuple(-m / s for m, s in zip(mean, std))


def pad(
    x: torch.Tensor, padding: int, fill: Sequence[float] = (0.0,), mode: str = "constant"
) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H + 2p, W + 2p): a border of ``fill`` (one value, or one per
    channel) for ``mode="constant"``, or the mirrored image for ``mode="reflect"``."""
    if mode == "reflect":
        return F.pad(x, (padding,) * 4, mode="reflect")
    n, c, h, w = x.shape
    value = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    if value.numel() not in (1, c):
        raise ValueError(f"fill has {value.numel()} values for {c} channels")
    out = value.reshape(1, -1, 1, 1).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    out[:, :, padding : padding + h, padding : padding + w] = x
    return out


def crop(
    padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Window ``size`` of each padded image, its corner at (top[i], left[i]). One gather for
    the whole batch: index tensors pick rows and columns per image."""
    n = padded.shape[0]
    h, w = size
    rows = top.reshape(n, 1) + torch.arange(h, device=padded.device)  # (N, H)
    cols = left.reshape(n, 1) + torch.arange(w, device=padded.device)  # (N, W)
    batch = torch.arange(n, device=padded.device).reshape(n, 1, 1)
    # Advanced indices split by the channel slice move to the front: (N, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``mask`` (N,) is True."""
    return torch.where(mask.reshape(-1, 1, 1, 1), x.flip(-1), x)


@dataclass(frozen=True)
class CropFlip:
    """Random crop after ``padding`` pixels of padding, then a random horizontal flip.

    Args:
        padding: pixels added on each side (0: no crop).
        flip: mirror with probability 1/2 (False for digits: a mirrored 2 is no digit).
        fill: per-channel border value for ``mode="constant"`` (in normalised units).
        mode: "constant" or "reflect".
    """

    padding: int
    flip: bool
    fill: tuple[float, ...] = (0.0,)
    mode: str = "constant"

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")
        if self.mode not in PAD_MODES:
            raise ValueError(f"mode must be one of {PAD_MODES}, got {self.mode!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"CropFlip takes image batches (N, C, H, W), got {tuple(x.shape)}")
        n, _, h, w = x.shape
        # Draw everything first, in a fixed order, so the stream does not depend on options.
        offsets = torch.randint(
            0, 2 * self.padding + 1, (2, n), generator=generator, device=generator.device
        )
        coins = torch.rand(n, generator=generator, device=generator.device) < 0.5
        offsets, coins = offsets.to(x.device), coins.to(x.device)
        out = x
        if self.padding:
            out = crop(pad(x, self.padding, self.fill, self.mode), offsets[0], offsets[1], (h, w))
        if self.flip:
            out = hflip(out, coins)
        return out


def crop_flip_for(dataset: Dataset, padding: int, flip: bool) -> CropFlip:
    """The crop-and-flip augmentation of ``dataset``, padding with black pixels."""
    return CropFlip(padding, flip, black_fill(dataset.mean, dataset.std))


def colour_images(name: str, *arrays: Any, padding: int, flip: bool, **options: Any) -> Dataset:
    """A dataset of 8-bit colour images (x_train, y_train, x_test, y_test), normalised per
    channel, with its crop-and-flip augmentation attached (used with --augment)."""
    dataset = dataset_from_arrays(name, *arrays, scale=255.0, **options)
    dataset.augment = crop_flip_for(dataset, padding=padding, flip=flip)
    return dataset
