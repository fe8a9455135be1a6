"""Filter quality of convolution layers (Gavrikov & Keuper, "CNN Filter DB", CVPR 2022).

A layer's filters are its 2-D kernel slices: a Conv2d of shape (out, in, 3, 3) holds
n = out * in filters, stacked as an n x 9 matrix W (sec. 3 of the paper).

- sparsity: the share of filters whose every |w| is below ``eps * max|W|`` (eps = 1/100 in
  the paper): filters that have died out;
- variance entropy: with s_i the singular values of the centred matrix W - mean over filters,
  and v_i = s_i^2 / sum_j s_j^2 the share of the variance along principal direction i,
  H = -sum_i v_i log10 v_i. H lies in [0, log10 9]: 0 when every filter is the same (or the
  filters vary along one direction only: a redundant layer), log10 9 when the variance is
  spread evenly over all 9 directions, as in random noise (an untrained-looking layer).

The paper studies 3x3 kernels; the same formulas are applied here to any kernel of k > 1
elements (range [0, log10 k]), e.g. the k=3 and k=5 kernels of a Conv1d, and each layer's
record says whether it is the paper's 3x3 case.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SPARSITY_EPS = 0.01  # the paper's threshold: 1% of the layer's largest |w|


def filter_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *kernel) conv weight -> (out * in, kernel volume) float64 matrix."""
    if weight.dim() < 3:
        raise ValueError(f"a conv weight is (out, in, *kernel); got shape {tuple(weight.shape)}")
    return weight.detach().reshape(-1, math.prod(weight.shape[2:])).to("cpu", torch.float64)


def sparsity(filters: torch.Tensor, eps: float = SPARSITY_EPS) -> float:
    """Share of rows of ``filters`` (n x k) whose every |w| < eps * max|W|."""
    magnitude = filters.abs()
    top = float(magnitude.max()) if magnitude.numel() else 0.0
    if top == 0.0:
        return 1.0  # an all-zero layer: every filter is dead
    return float((magnitude < eps * top).all(dim=1).double().mean())


def variance_entropy(filters: torch.Tensor) -> float:
    """-sum v_i log10 v_i of the normalised singular-value energy of the centred matrix."""
    centred = filters - filters.mean(dim=0, keepdim=True)
    energy = torch.linalg.svdvals(centred) ** 2
    total = float(energy.sum())
    if total <= 0.0:
        return 0.0  # identical filters: no variance in any direction
    share = energy / total
    share = share[share > 0]
    return float(-(share * torch.log10(share)).sum())


def filter_quality(network: nn.Module, eps: float = SPARSITY_EPS) -> list[dict[str, Any]]:
    """One record per convolution layer of ``network`` (kernels of more than one element)."""
    layers = []
    for name, module in network.named_modules():
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        kernel = tuple(int(k) for k in module.kernel_size)
        if math.prod(kernel) < 2:
            continue  # 1x1 kernels have no spatial structure to measure
        filters = filter_matrix(module.weight)
        layers.append(
            {
                "layer": name,
                "kind": type(module).__name__,
                "kernel": list(kernel),
                "paper_case": kernel == (3, 3) and isinstance(module, nn.Conv2d),
                "filters": int(filters.shape[0]),
                "sparsity": sparsity(filters, eps),
                "variance_entropy": variance_entropy(filters),
                "max_entropy": math.log10(filters.shape[1]),
            }
        )
    return layers
