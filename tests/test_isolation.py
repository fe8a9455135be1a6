"""Gradient isolation: no gradient crosses a block boundary in the one loop."""

import pytest
import torch
import torch.nn.functional as F

from isolation_helpers import RecordingOptimizer
from locallearn.engine.loop import train_step
from locallearn.models import build_model
from locallearn.rules import build_rule


@pytest.mark.parametrize("model,shape", [("mlp", (1, 40)), ("cnn1d", (1, 40)), ("cnn", (1, 8, 8))])
def test_each_block_gets_exactly_its_local_gradient(model, shape):
    torch.manual_seed(0)
    net = build_model(model, shape, 10, **({"depth": 4} if model != "cnn1d" else {}))
    rule = build_rule("greedy", net, shape, 10, blocks=3)
    rule.train(True)
    opts = [RecordingOptimizer(rule.stage_parameters(i)) for i in range(rule.blocks)]
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))

    inputs = []
    hooks = [
        s.block.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for s in rule.stages
    ]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    train_step(rule, opts, x, y)
    for h in hooks:
        h.remove()

    for k, inp in enumerate(inputs):
        assert inp.grad_fn is None and not inp.requires_grad, f"block {k} input is attached"

    # Recompute each block's local gradient on its own, from the same starting weights.
    net.load_state_dict(state)
    h = x
    for k, (stage, opt) in enumerate(zip(rule.stages, opts)):
        params = rule.stage_parameters(k)
        h = stage.block(h.detach())
        expected = torch.autograd.grad(stage.signal(h, y), params, allow_unused=True)
        for p, g in zip(params, expected):
            got = opt.seen[id(p)]
            if g is None:
                assert got is None
            else:
                torch.testing.assert_close(got, g, msg=f"block {k}: gradient differs")
        # A later block's loss leaves this block's gradients untouched.
        for p in params:
            assert p.grad is None or torch.equal(p.grad, opt.seen[id(p)])


def test_later_loss_cannot_reach_earlier_blocks():
    torch.manual_seed(0)
    net = build_model("mlp", (1, 40), 10, depth=3)
    rule = build_rule("greedy", net, (1, 40), 10, blocks=2)
    first, second = rule.stages
    h = second.block(first.block(torch.randn(4, 1, 40)).detach())
    F.cross_entropy(h, torch.zeros(4, dtype=torch.long)).backward()
    assert all(p.grad is None for p in first.block.parameters())
    assert all(p.grad is not None for p in second.block.parameters())


def test_bp_is_one_block_whose_gradient_reaches_the_first_layer():
    torch.manual_seed(0)
    net = build_model("mlp", (1, 40), 10, depth=3)
    rule = build_rule("bp", net, (1, 40), 10)
    opts = [RecordingOptimizer(rule.stage_parameters(0))]
    train_step(rule, opts, torch.randn(4, 1, 40), torch.randint(0, 10, (4,)))
    first = next(net.parameters())
    assert opts[0].seen[id(first)] is not None and opts[0].seen[id(first)].abs().sum() > 0
