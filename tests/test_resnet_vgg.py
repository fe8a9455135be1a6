"""CIFAR-style ResNets and VGGs: unit layout, parameter counts, shapes, slices, fresh layers."""

import pytest
import torch
from torch import nn

from locallearn.models import MODELS, build_model
from locallearn.models.layers import BasicBlock, ConvUnit, Replicable, WithClassifier
from locallearn.rules.cutting import slice_blocks

CIFAR = (3, 32, 32)


def params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def resnet_params(n: int, channels: int = 3, classes: int = 10) -> int:
    """Hand count of a CIFAR ResNet with option-A shortcuts (no shortcut parameters)."""
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias)
    total = 9 * channels * 16 + bn(16)  # stem
    cin = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += 9 * cin * width + bn(width) + 9 * width * width + bn(width)
            cin = width
    return total + 64 * classes + classes


@pytest.mark.parametrize(
    "depth,units,published",
    [(20, 10, 0.27e6), (32, 16, 0.46e6), (56, 28, 0.85e6), (110, 55, 1.7e6)],
)
def test_resnet_units_and_parameter_counts(depth, units, published):
    net = build_model(f"resnet{depth}", CIFAR, 10)
    assert len(net) == units, f"resnet{depth}: {len(net)} units"
    n = (depth - 2) // 6
    assert params(net) == resnet_params(n)
    # He et al. (2016) table 6 rounds to two significant digits.
    assert abs(params(net) - published) / published < 0.02, params(net)
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert [b.width for b in blocks] == [16] * n + [32] * n + [64] * n
    assert [b.stride for b in blocks].count(2) == 2
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # depth counts the convs and the linear layer


def test_resnet20_exact_parameter_count():
    # 269,722: the option-A count of ResNet-20 ("0.27M" in He et al. 2016, table 6).
    assert params(build_model("resnet20", CIFAR, 10)) == 269_722


def test_resnet_unit_layout_stem_blocks_and_merged_classifier():
    net = build_model("resnet32", CIFAR, 10)
    assert isinstance(net[0], ConvUnit)
    assert all(isinstance(u, BasicBlock) for u in net[1:-1])
    assert isinstance(net[-1], WithClassifier) and isinstance(net[-1][0], BasicBlock)
    assert isinstance(net[-1][1][-1], nn.Linear)


def test_resnet_width_option():
    net = build_model("resnet20", CIFAR, 10, width=8)
    assert [b.width for b in net.modules() if isinstance(b, BasicBlock)][-1] == 32
    assert params(net) < params(build_model("resnet20", CIFAR, 10)) / 3


def test_option_a_shortcut_pads_channels_and_subsamples():
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert s[:, :8].abs().sum() == 0 and s[:, 24:].abs().sum() == 0
    assert params(block) == 9 * 16 * 32 + 9 * 32 * 32 + 4 * 32  # no projection weights


@pytest.mark.parametrize("name,convs", [("vgg11", 8), ("vgg13", 10)])
def test_vgg_units_and_widths(name, convs):
    net = build_model(name, CIFAR, 10)
    assert len(net) == convs  # one unit per conv; the classifier is in the last
    conv_layers = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(conv_layers) == convs
    assert conv_layers[0].out_channels == 64 and conv_layers[-1].out_channels == 512
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 5  # 32 -> 1
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(512, 10)]


def test_vgg_never_pools_below_one_pixel():
    net = build_model("vgg11", (1, 8, 8), 10, width=8)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3  # 8 -> 4 -> 2 -> 1
    h = torch.randn(2, 1, 8, 8)
    for unit in net[:-1]:
        h = unit(h)
        assert h.shape[-1] >= 1
    assert h.shape[-2:] == (1, 1)


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "vgg11", "vgg13"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 96, 96)])
def test_output_shapes_for_mnist_cifar_and_stl10_inputs(name, shape):
    width = {"vgg11": 8, "vgg13": 8}.get(name, 4)  # narrow: shapes do not depend on width
    net = build_model(name, shape, 7, width=width).eval()
    with torch.no_grad():
        assert net(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet20", "vgg11"])
def test_contiguous_slices_run_and_compose(name):
    net = build_model(name, (3, 8, 8), 10, width=4).eval()
    inputs = [torch.randn(2, 3, 8, 8)]
    with torch.no_grad():
        for unit in net:
            inputs.append(unit(inputs[-1]))
        n = len(net)
        for a in range(n):
            for b in sorted({a + 1, min(a + 3, n), n}):
                out = nn.Sequential(*list(net)[a:b])(inputs[a])
                torch.testing.assert_close(out, inputs[b])
        parts = slice_blocks(net, [1, 4, 7])
        h = inputs[0]
        for part in parts:
            h = part(h)
        torch.testing.assert_close(h, inputs[-1])


@pytest.mark.parametrize("name", ["resnet32", "vgg13"])
def test_every_unit_builds_a_fresh_layer_of_its_kind_and_width(name):
    net = build_model(name, CIFAR, 10)
    for unit in net:
        assert isinstance(unit, Replicable)
        layer = unit.fresh(16, stride=2)
        resnet_block = name.startswith("resnet") and unit is not net[0]  # net[0]: the stem
        kind = BasicBlock if resnet_block else ConvUnit
        assert isinstance(layer, kind) and layer.width == unit.width
        assert not isinstance(layer, WithClassifier), "the classifier is never replicated"
        own = {id(p) for p in unit.parameters()}
        assert not any(id(p) in own for p in layer.parameters())
        assert layer(torch.randn(2, 16, 8, 8)).shape == (2, unit.width, 4, 4)


def test_models_are_registered_as_conv_for_images():
    for name in ["resnet20", "resnet32", "resnet56", "resnet110", "vgg11", "vgg13"]:
        meta = MODELS.get(name).meta
        assert meta["family"] == "conv" and meta["ranks"] == (3,)
