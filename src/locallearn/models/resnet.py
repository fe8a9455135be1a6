"""CIFAR-style ResNets (He, Zhang, Ren & Sun, "Deep Residual Learning", CVPR 2016, sec. 4.2).

A conv3x3 stem, then 3 stages of n BasicBlocks at widths w, 2w, 4w (w = 16 in the paper), the
first block of stages 2 and 3 halving the resolution, then global average pooling and a
linear classifier; depth = 6n + 2. Shortcuts are option A (see ``layers.BasicBlock``).

Unit layout (what rules cut between), 3n + 1 units:

    unit 0         stem: conv3x3(C_in -> w) - BN - ReLU
    units 1..3n    one BasicBlock each
    unit 3n        its BasicBlock + average pool + linear (the classifier is merged in)

so ResNet-20/32/56/110 have 10/16/28/55 units, the K of "every residual block is a local
block" in InfoPro (Wang et al. 2021) and AugLocal (Ma et al. 2024). Any input size works
(1x28x28 MNIST, 3x32x32 CIFAR, 3x96x96 STL-10): the classifier pools globally.
"""

from __future__ import annotations

from torch import nn

from locallearn.models.base import MODELS
from locallearn.models.layers import BasicBlock, Classifier, ConvUnit, WithClassifier


def cifar_resnet(
    input_shape: tuple[int, ...],
    classes: int,
    depth: int,
    width: int = 16,
    activation: str = "relu",
) -> nn.Sequential:
    """ResNet-``depth`` (depth = 6n + 2) for ``input_shape`` = (C, H, W)."""
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, got {depth}")
    n = (depth - 2) // 6
    units: list[nn.Module] = [ConvUnit(input_shape[0], width, activation=activation)]
    channels = width
    for stage in range(3):
        stage_width = width * 2**stage
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            units.append(BasicBlock(channels, stage_width, stride, activation))
            channels = stage_width
    units[-1] = WithClassifier(units[-1], Classifier(channels, classes))
    return nn.Sequential(*units)


def _register(depth: int, params: str) -> None:
    @MODELS.register(
        f"resnet{depth}",
        description=f"CIFAR ResNet-{depth} (He et al. 2016): 3 stages x {(depth - 2) // 6} "
        f"BasicBlocks, --width base channels (16; {params} params)",
        options=("width", "activation"),
        family="conv",
        ranks=(3,),
    )
    def build(
        input_shape: tuple[int, ...], classes: int, width: int = 16, activation: str = "relu"
    ) -> nn.Sequential:
        return cifar_resnet(input_shape, classes, depth, width, activation)


for _depth, _params in ((20, "0.27M"), (32, "0.46M"), (56, "0.85M"), (110, "1.7M")):
    _register(_depth, _params)
