"""The denoising block of NoProp-DT (Li, Teh & Pascanu 2025, arXiv 2503.24322, Fig. 6 left).

One block maps (image x, noisy label embedding z) to class probabilities. It is a whole
network of its own: NoProp trains T of them, each from the image and its own noisy label,
never from another block's output (``rules/noprop.py``). Not registered as a model: the
rule builds T blocks and the output layer itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from locallearn.models.base import output_shape


def image_path(channels: int, dropout: float) -> nn.Sequential:
    """Three conv3x3 (32, 64, 128 channels), each ReLU, 2x2 max-pool, dropout."""
    layers: list[nn.Module] = []
    for width in (32, 64, 128):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
        ]
        channels = width
    return nn.Sequential(*layers, nn.Flatten())


class DenoiseBlock(nn.Module):
    """Fig. 6 (left): the image path (convs, then FC 256 and batch norm), the label path (FC
    256-BN-ReLU, then a residual pair FC-BN-ReLU-FC-BN around it), both concatenated and
    passed through FC 256-BN-ReLU, FC 128-BN-ReLU and a linear layer to class logits.

    ``forward`` takes one packed tensor ``[x.flatten(1), z]`` of shape (B, prod(image) + dim),
    so the one training loop can hand a block its input as one detached tensor; it returns
    the logits (B, classes).
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        dim: int,
        classes: int,
        width: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"DenoiseBlock takes images (C, H, W), got shape {image_shape}")
        self.image_shape = tuple(image_shape)
        self.image_size = math.prod(image_shape)
        self.dim = dim
        convs = image_path(image_shape[0], dropout)
        features = math.prod(output_shape(convs, self.image_shape))
        self.image = nn.Sequential(convs, nn.Linear(features, width), nn.BatchNorm1d(width))
        self.label_in = nn.Sequential(nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU())
        self.label_res = nn.Sequential(
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Linear(width, width // 2),
            nn.BatchNorm1d(width // 2),
            nn.ReLU(),
            nn.Linear(width // 2, classes),
        )

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        x = packed[:, : self.image_size].reshape(-1, *self.image_shape)
        z = packed[:, self.image_size :]
        fx = self.image(x)
        fz = self.label_in(z)
        fz = fz + self.label_res(fz)
        return self.head(torch.cat([fx, fz], dim=1))
