"""InfoPro (Wang et al., ICLR 2021): decoder and head recipes, lambda schedule, BCE target,
last-block task loss, one block's graph at a time."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from locallearn.config import config_from_mapping, load_config_file, to_toml
from locallearn.engine.loop import train_step
from locallearn.errors import UsageError
from locallearn.measure import SavedTensorMeter
from locallearn.models import build_model
from locallearn.rules import TaskLoss, build_rule
from locallearn.rules.infopro import (
    Decoder,
    InfoProLoss,
    default_weights,
    lambda_schedule,
    supervised_contrastive,
    task_head,
    widest_channels,
)


def test_decoder_recipe_and_shapes():
    dec = Decoder(64, (3, 32, 32))
    kinds = [type(m).__name__ for m in dec.net]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]  # sigmoid folded into the loss
    c1, c2 = dec.net[0], dec.net[3]
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.padding) == (64, 12, (3, 3), (1, 1))
    assert (c2.in_channels, c2.out_channels, c2.kernel_size, c2.padding) == (12, 3, (3, 3), (1, 1))
    h = torch.randn(2, 64, 8, 8)
    assert dec(h).shape == (2, 3, 32, 32)
    # Bilinear upsampling with aligned corners (official Decoder), then the convs.
    up = F.interpolate(h, size=(32, 32), mode="bilinear", align_corners=True)
    torch.testing.assert_close(dec(h), dec.net(up))
    rec = dec.reconstruct(h)
    assert rec.min() >= 0 and rec.max() <= 1
    assert Decoder(16, (1, 8, 8))(torch.randn(2, 16, 4, 4)).shape == (2, 1, 8, 8)


def test_task_head_is_the_official_1c2f_on_resnet_widths():
    def summary(head):
        conv, lin1, lin2 = head[0], head[5], head[7]
        return (conv.in_channels, conv.out_channels, conv.stride[0], conv.bias is None), (
            lin1.in_features,
            lin1.out_features,
            lin2.out_features,
        )

    kinds = [type(m).__name__ for m in task_head((16, 32, 32), 64, 10)]
    assert kinds == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    # inplanes 16 -> conv to 32 stride 2; 32 -> 64 stride 2; 64 -> 64 stride 1; FC 128.
    assert summary(task_head((16, 32, 32), 64, 10)) == ((16, 32, 2, True), (32, 128, 10))
    assert summary(task_head((32, 16, 16), 64, 10)) == ((32, 64, 2, True), (64, 128, 10))
    assert summary(task_head((64, 8, 8), 64, 10)) == ((64, 64, 1, True), (64, 128, 10))
    assert summary(task_head((64, 8, 8), 64, 10, "contrast"))[1] == (64, 128, 128)
    assert task_head((16, 32, 32), 64, 10)(torch.randn(3, 16, 32, 32)).shape == (3, 10)
    assert widest_channels(build_model("resnet20", (3, 32, 32), 10), (3, 32, 32)) == 64


def test_lambda_schedule_by_hand():
    # K = 4: three local blocks, r = 0, 1/2, 1.
    assert lambda_schedule(4, (6.0, 1.0), (0.0, 2.0)) == [(6.0, 0.0), (3.5, 1.0), (1.0, 2.0)]
    # K = 2: one local block, r = 0 (the official code's ratio for K = 2).
    assert lambda_schedule(2, (5.0, 0.0), (1.0, 0.0)) == [(5.0, 1.0)]
    k5 = lambda_schedule(5, (4.0, 1.0), (0.0, 3.0))  # r = 0, 1/3, 2/3, 1
    assert [pytest.approx(w) for w in k5] == [(4.0, 0.0), (3.0, 1.0), (2.0, 2.0), (1.0, 3.0)]


def test_default_weights_are_the_published_resnet32_ones():
    assert default_weights(2) == ((5.0, 0.0), (1.0, 0.0))
    assert default_weights(4) == ((6.0, 1.0), (0.0, 2.0))
    assert default_weights(8) == ((5.0, 0.0), (0.0, 2.0))
    assert default_weights(16) == ((5.0, 0.2), (0.05, 0.5))
    assert default_weights(3) == default_weights(4)  # log 3 is nearer log 4 than log 2
    assert default_weights(6) == default_weights(8)
    assert default_weights(55) == default_weights(16)


def test_rule_stages_weights_and_last_block(digits_small):
    net = build_model("cnn", (1, 8, 8), 10)
    rule = build_rule(
        "infopro",
        net,
        (1, 8, 8),
        10,
        blocks=4,
        recon_weight=[6.0, 1.0],
        task_weight=[0.0, 2.0],
        input_stats=(digits_small.mean, digits_small.std),
    )
    signals = [s.signal for s in rule.stages]
    assert isinstance(signals[-1], TaskLoss), "the last block trains on the task loss"
    assert all(isinstance(s, InfoProLoss) for s in signals[:-1])
    assert [(s.recon_weight, s.task_weight) for s in signals[:-1]] == [
        (6.0, 0.0),
        (3.5, 1.0),
        (1.0, 2.0),
    ]
    assert [m for s in rule.stages for m in s.block] == list(net)


def test_bce_target_is_the_denormalised_input(digits_small):
    torch.manual_seed(0)
    net = build_model("cnn", (1, 8, 8), 10)
    stats = (digits_small.mean, digits_small.std)
    rule = build_rule(
        "infopro", net, (1, 8, 8), 10, blocks=2, task_weight=[0.0, 0.0], input_stats=stats
    )
    x, y = digits_small.x_train[:16], digits_small.y_train[:16]
    rule.begin_step(x, y)
    raw = x * digits_small.std[0] + digits_small.mean[0]
    torch.testing.assert_close(rule.image.image, raw)
    assert rule.image.image.min() >= 0 and rule.image.image.max() <= 1
    assert raw.max() > 0.99  # digits' brightest pixels: really the [0, 1] image
    # The local loss is lambda1 * BCE(sigmoid(decoder(h)), raw) when lambda2 = 0.
    stage = rule.stages[0]
    h = stage.block(x)
    expected = 5.0 * F.binary_cross_entropy(stage.signal.decoder.reconstruct(h), raw)
    torch.testing.assert_close(stage.signal(h, y), expected)


def test_a_zero_weight_term_is_skipped():
    torch.manual_seed(0)
    net = build_model("cnn", (1, 8, 8), 10)
    rule = build_rule("infopro", net, (1, 8, 8), 10, blocks=2, task_weight=[0.0, 0.0])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    rule.begin_step(x, y)
    signal = rule.stages[0].signal
    signal(rule.stages[0].block(x), y).backward()
    assert all(p.grad is None for p in signal.head.parameters())
    assert all(p.grad is not None for p in signal.decoder.parameters())


def test_supervised_contrastive_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    y = torch.tensor([0, 0, 1, 2])
    t = 0.5
    s = z @ z.t() / t  # unit vectors already
    losses = []
    for i in range(4):
        others = [a for a in range(4) if a != i]
        denom = math.log(sum(math.exp(s[i, a]) for a in others))
        pos = [p for p in others if y[p] == y[i]]
        losses.append(-sum(s[i, p] - denom for p in pos) / len(pos) if pos else 0.0)
    expected = torch.tensor(float(sum(losses)) / 4)
    torch.testing.assert_close(supervised_contrastive(z, y, t), expected)


def test_one_block_graph_at_a_time():
    torch.manual_seed(0)
    net = build_model("cnn", (1, 8, 8), 10)
    rule = build_rule("infopro", net, (1, 8, 8), 10, blocks=3, task_weight=[1.0, 1.0])
    rule.train(True)
    opts = [torch.optim.SGD(rule.stage_parameters(i), lr=0.01) for i in range(rule.blocks)]
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    meter = SavedTensorMeter(exclude=[*net.parameters(), *rule.aux_parameters()])
    with meter:
        train_step(rule, opts, x, y, meter)
    assert meter.current == 0, "every block's graph must be freed"
    # Each block alone (its forward, decoder, head and loss) ...
    alone = []
    h = x
    rule.begin_step(x, y)
    for stage in rule.stages:
        m = SavedTensorMeter(exclude=[*net.parameters(), *rule.aux_parameters()])
        with m:
            h = stage.block(h.detach())
            stage.signal(h, y).backward()
        alone.append(m.peak)
    # ... is what the step holds at once: the peak is one block's, never the sum.
    assert meter.peak < sum(alone)
    assert len(meter.segments) == 3 and meter.peak == max(meter.segments)
    for got, want in zip(meter.segments, alone):
        # The step also holds the de-normalised image (made in begin_step) across blocks.
        assert abs(got - want) <= x.numel() * 4, (meter.segments, alone)


def test_resnet20_stages_get_official_heads():
    net = build_model("resnet20", (3, 32, 32), 10)
    rule = build_rule("infopro", net, (3, 32, 32), 10, blocks=4, cuts=[3, 5, 8])
    convs = [s.signal.head[0] for s in rule.stages[:-1]]
    # Block outputs: 16 ch at 32x32 (unit 2), 32 ch at 16x16 (unit 4), 64 ch at 8x8 (unit 7).
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (16, 32, 2),
        (32, 64, 2),
        (64, 64, 1),
    ]
    decoders = [s.signal.decoder for s in rule.stages[:-1]]
    assert all(d.size == (32, 32) and d.net[-1].out_channels == 3 for d in decoders)


def test_errors_name_the_value_and_the_fix():
    mlp = build_model("mlp", (1, 40), 10)
    with pytest.raises(UsageError, match="needs inputs of shape CxHxW, got 1x40"):
        build_rule("infopro", mlp, (1, 40), 10)
    net = build_model("cnn", (1, 8, 8), 10)
    with pytest.raises(UsageError, match="unknown task loss 'mse'.*valid choices: ce, contrast"):
        build_rule("infopro", net, (1, 8, 8), 10, task_loss="mse")
    with pytest.raises(UsageError, match="--recon-weight takes two non-negative numbers"):
        build_rule("infopro", net, (1, 8, 8), 10, recon_weight=[1.0, 2.0, 3.0])
    with pytest.raises(UsageError, match="--head does not apply to rule 'infopro'"):
        build_rule("infopro", net, (1, 8, 8), 10, head="mlp")


def test_weight_options_parse_from_flags_and_files(tmp_path):
    cfg = config_from_mapping({"recon_weight": "5,0.5", "task_weight": [0, 2]})
    assert cfg.recon_weight == [5.0, 0.5] and cfg.task_weight == [0.0, 2.0]
    assert cfg.rule_options()["task_loss"] is None
    # The run directory's config.toml gives the same lists back (resume reads it).
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    again = load_config_file(tmp_path / "config.toml")
    assert again.recon_weight == [5.0, 0.5] and again.task_weight == [0.0, 2.0]
    with pytest.raises(UsageError, match="recon_weight must be a comma-separated list"):
        config_from_mapping({"recon_weight": "5,x"})


def test_contrastive_task_loss_trains(digits_small):
    torch.manual_seed(0)
    net = build_model("cnn", (1, 8, 8), 10)
    rule = build_rule("infopro", net, (1, 8, 8), 10, blocks=2, task_loss="contrast")
    head = rule.stages[0].signal.head
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 128
    opts = [torch.optim.Adam(rule.stage_parameters(i), lr=1e-2) for i in range(2)]
    x, y = digits_small.x_train[:32], digits_small.y_train[:32]
    first = train_step(rule, opts, x, y)
    for _ in range(5):
        last = train_step(rule, opts, x, y)
    assert float(last[0]) < float(first[0])
