"""AugLocal: the index and depth formulas against hand-computed values, the auxiliary
networks' layers, parameter isolation and per-block memory."""

import pytest
import torch
from torch import nn

import locallearn
from locallearn.engine.loop import train_step
from locallearn.errors import UsageError
from locallearn.measure.memory import SavedTensorMeter
from locallearn.models import build_model
from locallearn.models.layers import BasicBlock, ConvUnit
from locallearn.rules import build_rule
from locallearn.rules.auglocal import auxiliary_network, pyramid_depths, sampled_indices

CIFAR = (3, 32, 32)


# -- sampled_indices: round(l + (N - l - 1) / d * i), i = 1..d ---------------------------
@pytest.mark.parametrize(
    "layer,expected",
    [
        (0, [5, 10, 15]),  # 15/3 = 5
        (1, [6, 10, 15]),  # 1 + 14/3 = 5.67, 1 + 28/3 = 10.33
        (2, [6, 11, 15]),  # 6.33, 10.67
        (4, [8, 11, 15]),  # 7.67, 11.33
        (11, [12, 14, 15]),  # 12.33, 13.67
        (12, [13, 14, 15]),  # exactly d later layers remain: all of them
        (13, [14, 15]),  # fewer than d remain: all of them
        (14, [15]),
    ],
)
def test_sampled_indices_resnet32(layer, expected):
    assert sampled_indices(layer, 16, 3) == expected


@pytest.mark.parametrize(
    "layer,expected",
    [
        (0, [18, 36, 54]),  # 54/3 = 18
        (10, [25, 39, 54]),  # 10 + 44/3 = 24.67, 10 + 88/3 = 39.33
        (50, [51, 53, 54]),  # 51.33, 52.67
        (51, [52, 53, 54]),
        (53, [54]),
    ],
)
def test_sampled_indices_resnet110(layer, expected):
    assert sampled_indices(layer, 55, 3) == expected


def test_sampled_indices_round_halves_to_even_as_the_reference_code():
    assert sampled_indices(2, 16, 2) == [8, 15]  # 2 + 13/2 = 8.5 -> 8
    assert sampled_indices(0, 16, 2) == [8, 15]  # 7.5 -> 8
    assert sampled_indices(6, 16, 2) == [10, 15]  # 10.5 -> 10
    assert sampled_indices(0, 16, 1) == [15]
    with pytest.raises(ValueError):
        sampled_indices(16, 16, 3)
    with pytest.raises(ValueError):
        sampled_indices(0, 16, 0)


# -- pyramid_depths: max(1, round(d (1 - i c/(K-2)) + i c/(K-2))), i = 0..K-2 ------------
def test_pyramid_depths_hand_values():
    # K = 16, d = 3, c = 0.5: round(3 - i/14); i = 7 gives exactly 2.5 -> 2.
    assert pyramid_depths(16, 3, 0.5) == [3] * 7 + [2] * 8
    # K = 13 (ResNet-32 with the last d = 3 layers on the head): round(3 - i/11).
    assert pyramid_depths(13, 3, 0.5) == [3] * 6 + [2] * 6
    # K = 55 (ResNet-110, every unit a block): round(3 - i/53), 2.5 is never hit.
    assert pyramid_depths(55, 3, 0.5) == [3] * 27 + [2] * 27
    # K = 52 (ResNet-110 default): i = 25 gives 2.5 -> 2.
    assert pyramid_depths(52, 3, 0.5) == [3] * 25 + [2] * 26
    # c = 1: down to depth 1 at the last local block; round(3 - i/7).
    assert pyramid_depths(16, 3, 1.0) == [3] * 4 + [2] * 7 + [1] * 4
    assert pyramid_depths(16, 3, 0.0) == [3] * 15
    assert pyramid_depths(2, 3, 0.5) == [3]  # K - 2 = 0: the one local block keeps d
    assert pyramid_depths(1, 3, 0.5) == []


# -- the rule on the paper's networks ---------------------------------------------------
def test_resnet32_every_unit_a_block_as_in_the_issue():
    net = build_model("resnet32", CIFAR, 10)
    rule = build_rule("auglocal", net, CIFAR, 10, blocks=16, aux_depth=3, pyramid=0.5)
    assert rule.blocks == 16 and rule.cuts == list(range(1, 16))
    assert rule.aux_depths == [3] * 7 + [2] * 8
    assert rule.aux_indices[0] == [5, 10, 15]
    assert rule.aux_indices[7] == [11, 15]  # d = 2: 7 + 8/2 = 11
    assert rule.aux_indices[13] == [14, 15]
    assert rule.aux_indices[14] == [15]
    # Block 0's auxiliary net: fresh BasicBlocks of widths 16, 32, 64 (stride 2 where the
    # width grows), then pool and linear; no BatchNorm1d with more than one layer.
    aux = rule.stages[0].signal.head
    blocks = [m for m in aux if isinstance(m, BasicBlock)]
    assert [(b.width, b.stride) for b in blocks] == [(16, 1), (32, 2), (64, 2)]
    assert [type(m).__name__ for m in aux][3:] == ["AdaptiveAvgPool2d", "Flatten", "Linear"]
    # One auxiliary layer: a BatchNorm1d before the linear layer (reference code).
    assert [type(m).__name__ for m in rule.stages[14].signal.head][-2:] == [
        "BatchNorm1d",
        "Linear",
    ]
    assert not hasattr(rule.stages[-1].signal, "head")  # the real classifier


def test_resnet32_default_is_the_papers_configuration():
    # Reference train.py: K = 16 - d local modules; the last d + 1 units train with the head.
    net = build_model("resnet32", CIFAR, 10)
    rule = build_rule("auglocal", net, CIFAR, 10)
    assert rule.blocks == 13 and rule.cuts == list(range(1, 13))
    assert len(rule.stages[-1].block) == 4
    assert rule.aux_depths == [3] * 6 + [2] * 6
    assert rule.aux_indices[6] == [10, 15]  # 6 + 9/2 = 10.5 -> 10
    assert rule.aux_indices[11] == [13, 15]


def test_resnet110_every_unit_a_block():
    net = build_model("resnet110", CIFAR, 10, width=4)  # width does not change the recipe
    rule = build_rule("auglocal", net, CIFAR, 10, blocks=55, aux_depth=3, pyramid=0.5)
    assert rule.aux_depths == [3] * 27 + [2] * 27
    assert rule.aux_indices[0] == [18, 36, 54]
    assert rule.aux_indices[10] == [25, 39, 54]
    assert rule.aux_indices[26] == [35, 45, 54]  # 26 + 28/3 = 35.33, 26 + 56/3 = 44.67
    assert rule.aux_indices[27] == [40, 54]  # d = 2: 27 + 27/2 = 40.5 -> 40 (half to even)
    assert rule.aux_indices[53] == [54]


def test_strides_carry_over_when_the_width_jumps():
    units = [ConvUnit(3, 16), ConvUnit(16, 64), ConvUnit(64, 64)]
    aux = auxiliary_network(units, [1, 2], (16, 8, 8), 10)
    convs = [m for m in aux.modules() if isinstance(m, nn.Conv2d)]
    # 16 -> 64 owes two halvings: the first layer pays one, the next layer the other.
    assert [c.stride[0] for c in convs] == [2, 2]
    assert aux(torch.randn(2, 16, 8, 8)).shape == (2, 10)


def test_auxiliary_layers_share_nothing_with_the_network():
    net = build_model("resnet20", CIFAR, 10, width=8)
    rule = build_rule("auglocal", net, CIFAR, 10, blocks=10)
    main = {p.untyped_storage().data_ptr() for p in net.parameters()}
    main |= {b.untyped_storage().data_ptr() for b in net.buffers()}
    ids = {id(p) for p in net.parameters()}
    for k, stage in enumerate(rule.stages[:-1]):
        for name, p in stage.signal.named_parameters():
            assert id(p) not in ids, f"block {k}: {name} is a network parameter"
            assert p.untyped_storage().data_ptr() not in main, f"block {k}: {name} shares storage"
    # Fresh means freshly initialised too: the copy of unit 5 differs from unit 5.
    copy = rule.stages[0].signal.head[0]
    assert isinstance(copy, BasicBlock)
    assert not torch.equal(copy.conv2.weight, net[rule.aux_indices[0][0]].conv2.weight)


def test_each_block_graph_is_freed_before_the_next():
    torch.manual_seed(0)
    net = build_model("resnet20", (1, 8, 8), 10, width=4)
    rule = build_rule("auglocal", net, (1, 8, 8), 10, blocks=10)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    optimizers = [torch.optim.SGD(rule.stage_parameters(i), lr=0.01) for i in range(10)]
    meter = SavedTensorMeter(exclude=[*net.parameters(), *rule.aux_parameters()])
    with meter:
        train_step(rule, optimizers, x, y, meter)
    assert meter.current == 0
    # Each block alone: what it saves with its auxiliary net, nothing left from before.
    alone, h = [], x
    for stage in rule.stages:
        single = SavedTensorMeter(exclude=[*net.parameters(), *rule.aux_parameters()])
        with single:
            h = stage.block(h.detach())
            stage.signal(h, y).backward()
        alone.append(single.peak)
    assert meter.segments == alone
    assert meter.peak == max(alone) < sum(alone) / 3


def test_trains_through_the_api_with_block_memory(digits_small):
    s = locallearn.train(
        rule="auglocal",
        model="resnet32",
        data=digits_small,
        width=4,
        blocks=16,
        aux_depth=3,
        pyramid=0.5,
        epochs=1,
        batch_size=100,
    )
    assert s["blocks"] == 16 and len(s["block_act_bytes"]) == 16
    assert s["act_bytes_peak"] == max(s["block_act_bytes"])
    assert s["aux_params"] > 0


def test_errors_name_the_bad_value():
    mlp = build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(UsageError, match="unit 0 .* has no conv layer"):
        build_rule("auglocal", mlp, (1, 8, 8), 10)
    net = build_model("resnet20", CIFAR, 10, width=4)
    with pytest.raises(UsageError, match="--aux-depth must be at least 1, got 0"):
        build_rule("auglocal", net, CIFAR, 10, aux_depth=0)
    with pytest.raises(UsageError, match=r"--pyramid must be in \[0, 1\].*got 1.5"):
        build_rule("auglocal", net, CIFAR, 10, pyramid=1.5)
    with pytest.raises(UsageError, match="between 1 and 10"):
        build_rule("auglocal", net, CIFAR, 10, blocks=11)


@pytest.mark.parametrize("model,shape", [("cnn", (1, 8, 8)), ("cnn1d", (1, 40)), ("vgg11", CIFAR)])
def test_other_conv_models(model, shape):
    options = {"width": 8} if model != "cnn1d" else {}
    net = build_model(model, shape, 10, **options)
    rule = build_rule("auglocal", net, shape, 10, blocks=len(net))
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    h = x
    for stage in rule.stages:
        h = stage.block(h.detach())
        assert torch.isfinite(stage.signal(h, y))
    if model == "cnn":  # the trailing classifier unit is never sampled
        assert max(i for picks in rule.aux_indices for i in picks) == len(net) - 2


def test_issue_command_runs_on_cifar10_files(tmp_path, capsys):
    """The issue's `train --rule auglocal --model resnet32 --blocks 16 --aux-depth 3
    --pyramid 0.5` on CIFAR-10 read from files in the python-batch format (generated)."""
    import json

    from locallearn.cli import main
    from test_data import make_cifar

    make_cifar(tmp_path / "data" / "cifar-10-batches-py", per_batch=4)
    argv = ["train", "--rule", "auglocal", "--model", "resnet32", "--data", "cifar10"]
    argv += ["--data-dir", str(tmp_path / "data"), "--blocks", "16", "--aux-depth", "3"]
    argv += ["--pyramid", "0.5", "--epochs", "1", "--batch-size", "10", "--augment"]
    argv += ["--out", str(tmp_path / "run"), "--json", str(tmp_path / "s.json"), "--quiet"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["blocks"] == 16 and summary["data"] == "cifar10"
    assert summary["train_size"] + summary["val_size"] == 20 and summary["act_bytes_peak"] > 0
