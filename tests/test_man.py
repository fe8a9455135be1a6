"""MAN (Su et al., ECCV 2024): the EMA update, a gradient-free EMA copy, a learnable bias that
trains, both hosts, exact resume, one block's graph at a time."""

import pytest
import torch

import locallearn
from locallearn.engine.loop import train_step
from locallearn.engine.run import resume_run
from locallearn.errors import UsageError
from locallearn.measure import SavedTensorMeter
from locallearn.models import build_model
from locallearn.rules import HeadLoss, TaskLoss, build_rule
from locallearn.rules.infopro import InfoProLoss
from locallearn.rules.man import MomentumSignal

SHAPE = (1, 8, 8)


def man_on_cnn(**options):
    torch.manual_seed(0)
    net = build_model("cnn", SHAPE, 10, width=8)
    return net, build_rule("man", net, SHAPE, 10, **{"blocks": 3, **options})


def batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_ema_and_lb_are_copies_of_the_next_blocks_first_unit():
    net, rule = man_on_cnn()
    for i, cut in enumerate(rule.cuts):
        signal = rule.stages[i].signal
        assert isinstance(signal, MomentumSignal) and isinstance(signal.host, HeadLoss)
        nxt = net[cut]
        assert rule.stages[i + 1].block[0] is nxt
        for e, b, p in zip(
            signal.ema.parameters(), signal.lb.parameters(), nxt.parameters(), strict=True
        ):
            assert e.shape == b.shape == p.shape
            assert torch.equal(e, p), "EMA starts at the next unit's weights"
            assert e.data_ptr() != p.data_ptr(), "a copy, not the unit itself"
            assert not e.requires_grad and b.requires_grad
        conv = [m for m in signal.lb.modules() if isinstance(m, torch.nn.Conv2d)][0]
        assert not torch.equal(conv.weight, nxt[0].weight), "LB starts freshly drawn"
    assert isinstance(rule.stages[-1].signal, TaskLoss)


def test_ema_update_is_the_formula_on_hand_made_tensors():
    net, rule = man_on_cnn(ema_momentum=0.9)
    ema = list(rule.stages[0].signal.ema.parameters())
    nxt = list(net[rule.cuts[0]].parameters())
    with torch.no_grad():
        for k, (e, p) in enumerate(zip(ema, nxt)):
            e.fill_(2.0 + k)
            p.fill_(-1.0)
    rule.after_step(0)
    for k, e in enumerate(ema):
        expected = torch.full_like(e, 0.9 * (2.0 + k) + 0.1 * -1.0)
        torch.testing.assert_close(e, expected)
    rule.after_step(len(rule.stages) - 1)  # the last block has no EMA: a no-op


def test_ema_follows_the_next_block_weights_of_before_its_step():
    net, rule = man_on_cnn(ema_momentum=0.9)
    rule.train(True)
    opts = [torch.optim.SGD(rule.stage_parameters(i), lr=0.5) for i in range(rule.blocks)]
    ema = list(rule.stages[0].signal.ema.parameters())
    nxt = list(net[rule.cuts[0]].parameters())
    with torch.no_grad():  # make the EMA differ from theta so that the update is visible
        for e in ema:
            e.add_(1.0)
    ema_before = [e.detach().clone() for e in ema]
    theta_before = [p.detach().clone() for p in nxt]
    train_step(rule, opts, *batch())
    assert not all(torch.equal(p, t) for p, t in zip(nxt, theta_before)), "block 2 stepped"
    # after_step(0) runs after block 1's step and before block 2's: it reads theta_before.
    for e, e0, t0 in zip(ema, ema_before, theta_before):
        torch.testing.assert_close(e, 0.9 * e0 + 0.1 * t0)


def test_ema_never_gets_a_gradient_and_is_in_no_optimizer_while_lb_trains():
    net, rule = man_on_cnn()
    rule.train(True)
    opts = [torch.optim.Adam(rule.stage_parameters(i), lr=1e-2) for i in range(rule.blocks)]
    ema = [p for s in rule.stages[:-1] for p in s.signal.ema.parameters()]
    lb = [p for s in rule.stages[:-1] for p in s.signal.lb.parameters()]
    lb_before = [p.detach().clone() for p in lb]
    in_optimizers = {id(p) for o in opts for g in o.param_groups for p in g["params"]}
    assert not in_optimizers & {id(p) for p in ema}
    assert {id(p) for p in lb} <= in_optimizers
    for _ in range(3):
        train_step(rule, opts, *batch())
        assert all(p.grad is None and not p.requires_grad for p in ema)
    changed = [not torch.equal(a, b) for a, b in zip(lb, lb_before)]
    assert all(changed), "every LB parameter learns"
    assert all(p.grad is not None for p in lb)


def test_gradient_reaches_the_block_through_both_copies():
    net, rule = man_on_cnn()
    signal, block = rule.stages[0].signal, rule.stages[0].block
    x, y = batch()
    h = block(x).detach().requires_grad_(True)
    (g_both,) = torch.autograd.grad(signal(h, y), h)
    (g_lb,) = torch.autograd.grad(signal.host(signal.lb(h) + signal.ema(h).detach(), y), h)
    assert g_both.abs().sum() > 0 and not torch.allclose(g_both, g_lb)


def test_infopro_host():
    stats = ((0.3,), (0.4,))
    torch.manual_seed(0)
    net = build_model("cnn", SHAPE, 10, width=8)
    rule = build_rule(
        "man", net, SHAPE, 10, blocks=3, host="infopro", task_weight=[1.0, 1.0], input_stats=stats
    )
    inner = [s.signal.host for s in rule.stages[:-1]]
    assert all(isinstance(s, InfoProLoss) for s in inner)
    # The decoder and head take the next unit's output (EMA + LB), not the block's own.
    assert inner[0].decoder.net[0].in_channels == net[rule.cuts[0]][0].out_channels
    x, y = batch()
    rule.begin_step(x, y)
    torch.testing.assert_close(rule.image.image, (x * 0.4 + 0.3).clamp(0, 1))
    rule.train(True)
    opts = [torch.optim.Adam(rule.stage_parameters(i), lr=1e-2) for i in range(rule.blocks)]
    first = train_step(rule, opts, x, y)
    for _ in range(4):
        last = train_step(rule, opts, x, y)
    assert all(float(b) < float(a) for a, b in zip(first, last))


@pytest.mark.parametrize("host", ["greedy", "infopro"])
def test_one_block_graph_at_a_time(host):
    net, rule = man_on_cnn(host=host)
    rule.train(True)
    opts = [torch.optim.SGD(rule.stage_parameters(i), lr=0.01) for i in range(rule.blocks)]
    meter = SavedTensorMeter(exclude=[*net.parameters(), *rule.aux_parameters()])
    with meter:
        train_step(rule, opts, *batch(), meter)
    assert meter.current == 0
    assert len(meter.segments) == 3 and meter.peak == max(meter.segments)
    assert meter.peak < sum(meter.segments)


def test_resume_restores_the_ema_exactly(tmp_path):
    class Crash(Exception):
        pass

    def crash(record, cfg):
        if record["epoch"] == 1:
            raise Crash

    opts = dict(
        rule="man", model="cnn", data="digits", train_limit=200, epochs=2, blocks=3, width=8
    )
    clean = locallearn.train(out=tmp_path / "clean", **opts)
    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "crashed", on_epoch=crash, **opts)
    resumed = resume_run(tmp_path / "crashed")
    assert resumed["weights_sha256"] == clean["weights_sha256"]
    a = torch.load(tmp_path / "clean" / "checkpoint.pt", weights_only=True)["rule"]
    b = torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=True)["rule"]
    ema_keys = [k for k in a["signals"] if ".ema." in k]
    assert ema_keys, "the EMA copies are checkpointed"
    assert all(torch.equal(a["signals"][k], b["signals"][k]) for k in a["signals"])
    assert a["ema_momentum"] == 0.995


def test_man_on_an_mlp_and_on_the_output_unit(mnist1d_small):
    s = locallearn.train(rule="man", model="mlp", data=mnist1d_small, epochs=2, blocks=2)
    assert s["train_loss_curve"][-1] < s["train_loss_curve"][0]
    # A boundary right before the output unit: EMA + LB already give class scores.
    net = build_model("cnn", SHAPE, 10, width=8)
    rule = build_rule("man", net, SHAPE, 10, blocks=2, cuts=[len(net) - 1])
    assert isinstance(rule.stages[0].signal.host, TaskLoss)
    with pytest.raises(UsageError, match="need 2-D feature maps"):
        build_rule("man", net, SHAPE, 10, blocks=2, cuts=[len(net) - 1], host="infopro")


def test_errors():
    net = build_model("cnn", SHAPE, 10, width=8)
    with pytest.raises(UsageError, match="unknown MAN host 'dgl'.*valid choices: greedy, infopro"):
        build_rule("man", net, SHAPE, 10, host="dgl")
    with pytest.raises(UsageError, match="--ema-momentum must be in"):
        build_rule("man", net, SHAPE, 10, ema_momentum=1.5)
    with pytest.raises(UsageError, match="--recon-weight applies to --host infopro only"):
        build_rule("man", net, SHAPE, 10, recon_weight=[1.0, 0.0])
    with pytest.raises(UsageError, match="--head applies to --host greedy only"):
        build_rule("man", net, SHAPE, 10, host="infopro", head="linear")
    with pytest.raises(UsageError, match="--aux-depth does not apply to rule 'man'"):
        build_rule("man", net, SHAPE, 10, aux_depth=2)
