"""VGG with batch normalisation, CIFAR style (Simonyan & Zisserman, ICLR 2015, configs A and
B; BN after every conv as in Ioffe & Szegedy 2015).

Each conv3x3-BN-ReLU is one unit; a 2x2 max-pool belongs to the conv unit before it. The
classifier of CIFAR VGGs (global pool + one linear layer over the last 8w channels) is merged
into the last conv unit, so VGG-11 has 8 units and VGG-13 10 (one per conv layer). A pool is
skipped once the map is already 1x1 (8x8 inputs would otherwise pool to nothing), and the
global average pool makes 28x28, 32x32 and 96x96 inputs all valid.
"""

from __future__ import annotations

from torch import nn

from locallearn.models.base import MODELS
from locallearn.models.layers import Classifier, ConvUnit, WithClassifier

# Channel multiples of the base width (64 in the paper); "M" is a 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    "vgg13": [1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
}


def vgg(
    name: str,
    input_shape: tuple[int, ...],
    classes: int,
    width: int = 64,
    activation: str = "relu",
) -> nn.Sequential:
    """VGG ``name`` (a key of CONFIGS) for ``input_shape`` = (C, H, W)."""
    channels, height, breadth = input_shape
    size = min(height, breadth)
    spec = CONFIGS[name]
    units: list[nn.Module] = []
    for i, item in enumerate(spec):
        if item == "M":
            continue
        out = width * int(item)
        pool = i + 1 < len(spec) and spec[i + 1] == "M" and size >= 2
        units.append(ConvUnit(channels, out, pool=pool, activation=activation))
        size //= 2 if pool else 1
        channels = out
    units[-1] = WithClassifier(units[-1], Classifier(channels, classes))
    return nn.Sequential(*units)


def _register(name: str, convs: int) -> None:
    @MODELS.register(
        name,
        description=f"VGG-{convs + 3} with BN, CIFAR style: {convs} conv3x3 units, global "
        "pool, linear; --width base channels (64)",
        options=("width", "activation"),
        family="conv",
        ranks=(3,),
    )
    def build(
        input_shape: tuple[int, ...], classes: int, width: int = 64, activation: str = "relu"
    ) -> nn.Sequential:
        return vgg(name, input_shape, classes, width, activation)


for _name in CONFIGS:
    _register(_name, sum(1 for item in CONFIGS[_name] if item != "M"))
