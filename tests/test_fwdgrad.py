"""fwdgrad: the forward-gradient estimator is unbiased with the right scale, the network saves
nothing for backward, the rule trains through the one loop, resumes, and refuses bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import locallearn
from locallearn.api import default_rules
from locallearn.cli import main
from locallearn.engine.loop import train_step
from locallearn.engine.run import resume_run
from locallearn.errors import UsageError
from locallearn.measure.memory import SavedTensorMeter
from locallearn.models import build_model
from locallearn.rules import RULES, build_rule, rule_applies
from locallearn.rules.fwdgrad import ForwardGradient


def _rule(
    model: str, shape: tuple[int, ...], seed: int = 0, width: int | None = None, **options
) -> ForwardGradient:
    torch.manual_seed(seed)
    model_options = {"width": 5, "depth": 2} if model == "mlp" else {"width": 3}
    if width is not None:
        model_options["width"] = width
    net = build_model(model, shape, 4, **model_options)
    rule = build_rule("fwdgrad", net, shape, 4, **options)
    assert isinstance(rule, ForwardGradient)
    return rule


def _true_grads(rule: ForwardGradient, index: int, x: torch.Tensor, y: torch.Tensor):
    """Autograd's gradient of the stage's local loss (head CE, batch mean) w.r.t. its block."""
    stage = rule.stages[index]
    loss = stage.signal(stage.block(x), y)
    return torch.autograd.grad(loss, list(stage.block.parameters()))


def _samples(rule: ForwardGradient, index: int, x, y, n: int) -> torch.Tensor:
    """n independent one-direction estimates, flattened: (n, parameters)."""
    rows = []
    for _ in range(n):
        _, _, grads = rule.forward_gradient(index, x, y)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows).double()


def _agrees(samples: torch.Tensor, true: torch.Tensor) -> tuple[bool, float, float]:
    """Whether the sample mean agrees with ``true`` entry by entry and in scale.

    By the central limit theorem the mean of n i.i.d. estimates is normal around their
    expectation with standard error s / sqrt(n) per entry. Entry test: every |z| < 5 (for
    the few hundred entries here a false alarm has probability < 1e-4). Scale test: the
    projection c_i = <g_i, true> / |true|^2 has mean 1 for an unbiased estimator; its mean
    must be within 5 standard errors of 1. Returns (agrees, mean c, its standard error).
    """
    n = samples.shape[0]
    mean = samples.mean(0)
    se = samples.std(0) / n**0.5
    entries = ((mean - true).abs() <= 5 * se + 1e-12).all()
    c = samples @ true / true.dot(true)
    c_se = float(c.std() / n**0.5)
    return bool(entries) and abs(float(c.mean()) - 1) <= 5 * c_se, float(c.mean()), c_se


@pytest.mark.parametrize(
    "model,shape,perturb,blocks",
    [
        ("mlp", (6,), "activity", 3),  # one layer per block
        ("mlp", (6,), "activity", 2),  # two layers in one block: joint directions
        ("mlp", (6,), "weight", 2),
        ("cnn1d", (1, 12), "activity", 3),  # conv layers, two in one block
    ],
)
def test_expected_forward_gradient_is_the_true_gradient(model, shape, perturb, blocks):
    rule = _rule(model, shape, fg_perturb=perturb, blocks=blocks)
    x, y = torch.randn(32, *shape), torch.arange(32) % 4
    true = torch.cat([g.reshape(-1) for g in _true_grads(rule, 0, x, y)]).double()
    # Weight perturbation's variance grows with the parameter count: more samples for it.
    samples = _samples(rule, 0, x, y, 1000 if perturb == "activity" else 2500)
    ok, c, c_se = _agrees(samples, true)
    assert ok, f"{model}/{perturb}: mean forward gradient disagrees (scale {c:.3f} +- {c_se:.3f})"
    # The check has the power to see what a broken estimator gives: a wrong scale (0.7x,
    # 1.3x), a mean of zero (a slope paired with the wrong direction), or a bias of
    # 0.3 |true| on one entry.
    assert c_se < 0.04, f"too few samples to see a 30% scale error: se {c_se}"
    biased = samples.clone()
    biased[:, int(true.abs().argmax())] += 0.3 * true.norm()
    for wrong in (0.7 * samples, 1.3 * samples, samples - true, biased):
        assert not _agrees(wrong, true)[0]


def test_directions_average_independent_estimates():
    """--fg-directions D averages D successive one-direction estimates, so its variance is
    1/D of one direction's."""
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 3] * 2)
    single = _rule("mlp", (6,), blocks=2)
    many = _rule("mlp", (6,), blocks=2, fg_directions=4)
    _, loss4, grads4 = many.forward_gradient(0, x, y)
    ones = [single.forward_gradient(0, x, y) for _ in range(4)]
    for k, g in enumerate(grads4):
        torch.testing.assert_close(g, sum(o[2][k] for o in ones) / 4)
    assert float(loss4) == pytest.approx(float(ones[0][1]))
    s1 = _samples(single, 0, x, y, 200).var(0).sum()
    s8 = _samples(_rule("mlp", (6,), blocks=2, fg_directions=8), 0, x, y, 200).var(0).sum()
    assert 0.5 / 8 < float(s8 / s1) < 2 / 8, f"variance ratio {float(s8 / s1)} for D=8"


def _group_true_grads(rule: ForwardGradient, index: int, x: torch.Tensor, y: torch.Tensor):
    """Autograd's gradient of the sum of the G group losses: the head on the block's output
    with every unit outside group g detached (torch.where, not the rule's masking)."""
    layers, tail, _ = rule.layers[index]
    h = x
    for layer in layers:
        h = layer.activate(layer.affine(layer.lead(h)))
    size = h.shape[1] // rule.groups
    channel = torch.arange(h.shape[1]).view(1, -1, *([1] * (h.dim() - 2)))
    signal = rule.stages[index].signal
    total = sum(
        signal(tail(torch.where(channel // size == g, h, h.detach())), y)
        for g in range(rule.groups)
    )
    return torch.autograd.grad(total, list(rule.stages[index].block.parameters()))


@pytest.mark.parametrize(
    "model,shape,width,groups,blocks",
    [
        ("mlp", (6,), 6, 3, 3),  # one layer per block: every layer grouped
        ("mlp", (6,), 6, 2, 2),  # two layers in one block: the last one grouped
        ("cnn1d", (1, 12), 4, 2, 3),  # groups of channels, two conv layers in one block
    ],
)
def test_grouped_estimate_is_the_gradient_of_the_sum_of_group_losses(
    model, shape, width, groups, blocks
):
    rule = _rule(model, shape, width=width, blocks=blocks, fg_groups=groups)
    x, y = torch.randn(32, *shape), torch.arange(32) % 4
    grouped = _group_true_grads(rule, 0, x, y)
    # The sum of the group losses has the block loss's gradient (each unit is live in
    # exactly one group's loss), so the grouped estimator aims at the same gradient.
    for g, t in zip(grouped, _true_grads(rule, 0, x, y)):
        torch.testing.assert_close(g, t)
    true = torch.cat([g.reshape(-1) for g in grouped]).double()
    samples = _samples(rule, 0, x, y, 1000)
    ok, c, c_se = _agrees(samples, true)
    assert ok, f"{model}/G={groups}: mean grouped estimate disagrees ({c:.3f} +- {c_se:.3f})"
    assert c_se < 0.04, f"too few samples to see a 30% scale error: se {c_se}"
    for wrong in (0.7 * samples, 1.3 * samples, samples - true):
        assert not _agrees(wrong, true)[0]
    _, loss, _ = rule.forward_gradient(0, x, y)
    stage = rule.stages[0]
    with torch.no_grad():
        block_loss = float(stage.signal(stage.block(x), y))
    assert float(loss) == pytest.approx(block_loss, rel=1e-5)


def _predicted_variance(rule: ForwardGradient, x: torch.Tensor, y: torch.Tensor) -> float:
    """The exact summed variance of one estimate of a one-layer ReLU block's (W, b).

    With a = dl_n/dz_n (l_n the example's loss / N) and s_{n,g} = sum_{j in g} a_j u_j,
    entry c of the estimate of z_n is s_{n,g(c)} u_c (0 where inactive), whose variance is
    |a_{n,g}|^2 + a_c^2 (E[u_j^2 u_c^2] = 1 + 2[j = c]). Summed over a group's k_{n,g}
    active units: (k_{n,g} + 1) |a_{n,g}|^2 (inactive units have a = 0). Examples draw
    independent directions, and ghat(W) = sum_n ghat(z_n) x_n^T, ghat(b) = sum_n ghat(z_n):
    V = sum_n (|x_n|^2 + 1) sum_g (k_{n,g} + 1) |a_{n,g}|^2."""
    (layer,), _, _ = rule.layers[0]
    z = layer.affine(x).detach().requires_grad_()
    loss = rule.stages[0].signal.per_example(layer.activate(z), y).sum() / x.shape[0]
    (a,) = torch.autograd.grad(loss, z)
    n, c = a.shape
    a2 = (a.double() ** 2).view(n, rule.groups, -1).sum(2)
    active = (z > 0).double().view(n, rule.groups, -1).sum(2)
    return float((((x.double() ** 2).sum(1) + 1) * ((active + 1) * a2).sum(1)).sum())


def test_groups_lower_the_variance_as_the_math_says():
    """G groups of m units: the summed variance falls from about (C+1)|a|^2 to (m+1)|a|^2
    per example; measured and predicted agree within 10% (a sample variance of 4000
    estimates, each summed over 32 examples), and the measured ratio is below 1/2."""
    x, y = torch.randn(32, 6), torch.arange(32) % 4
    measured, predicted = {}, {}
    for groups in (1, 6):
        rule = _rule("mlp", (6,), width=24, blocks=3, fg_groups=groups)
        measured[groups] = float(_samples(rule, 0, x, y, 4000).var(0).sum())
        predicted[groups] = _predicted_variance(rule, x, y)
        assert 0.9 < measured[groups] / predicted[groups] < 1.1, (groups, measured, predicted)
    ratio = measured[6] / measured[1]
    assert predicted[6] / predicted[1] < 0.5 and ratio < 0.5, (ratio, measured, predicted)


def test_the_network_saves_nothing_for_backward():
    """The jvp runs without autograd: no tensor of the network is saved. The meter sees only
    what the head (or the readout) saves with its input detached."""
    rule = _rule("mlp", (6,))
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 3] * 2)
    packed: list[torch.Size] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        packed.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rule.forward_gradient(0, x, y)
        rule.forward_gradient(1, torch.relu(torch.randn(8, 5)), y)
    assert packed == [], f"forward gradient saved tensors for backward: {packed}"
    # In the loop: each hidden stage's segment is exactly its head's saved bytes.
    frozen = [*rule.network.parameters(), *rule.aux_parameters()]
    meter = SavedTensorMeter(exclude=frozen)
    opts = [torch.optim.SGD(rule.stage_parameters(i), lr=0.1) for i in range(rule.blocks)]
    with meter:
        train_step(rule, opts, x, y, meter)
    h = x
    for k, stage in enumerate(rule.stages[:-1]):
        with torch.no_grad():
            h = stage.block(h)
        head_only = SavedTensorMeter(exclude=frozen)
        with head_only:
            stage.signal(h.clone(), y).backward()
        assert meter.segments[k] == head_only.peak, (k, meter.segments, head_only.peak)
        # the head's input (one layer's input), its log-softmax, the labels and the loss's
        # total weight (a float scalar), nothing more
        assert head_only.peak == h.numel() * 4 + 8 * 4 * 4 + 8 * 8 + 4


def test_held_bytes_count_what_the_estimator_keeps_alive():
    """fg_held_bytes_peak: the pre-activation and the direction of a one-layer block (two
    (N, units) floats) and the N slopes; the block's input and output are not counted."""
    rule = _rule("mlp", (6,))
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 3] * 2)
    rule.forward_gradient(0, x, y)
    assert rule.held_bytes_peak == 2 * 8 * 5 * 4 + 8 * 4
    weight = _rule("mlp", (6,), fg_perturb="weight")
    weight.forward_gradient(0, x, y)
    assert weight.held_bytes_peak == (6 * 5 + 5) * 4 + 4  # a direction per parameter


def test_fwdgrad_learns_beyond_its_heads(digits_small, monkeypatch):
    """The hidden layers' forward gradients help: with them zeroed (only the heads and the
    readout learn, on fixed random features) the readout ends worse."""
    opts = dict(model="mlp", data=digits_small, epochs=10, seed=0, val_split=0.0, lr=1e-2)
    learned = locallearn.train(rule="fwdgrad", **opts)
    real = ForwardGradient.forward_gradient

    def zeroed(self, index, x, y):
        out, loss, grads = real(self, index, x, y)
        return out, loss, [torch.zeros_like(g) for g in grads]

    monkeypatch.setattr(ForwardGradient, "forward_gradient", zeroed)
    frozen = locallearn.train(rule="fwdgrad", **opts)
    assert learned["train_loss"] < 0.9 * frozen["train_loss"], (learned, frozen)
    assert learned["test_acc"] > 0.8, learned["test_acc"]
    assert learned["fg_perturb"] == "activity" and learned["fg_directions"] == 1


def test_fwdgrad_resumes_exactly(tmp_path):
    class Crash(Exception):
        pass

    def crash(record, cfg):
        if record["epoch"] == 2:
            raise Crash

    options = dict(rule="fwdgrad", model="mlp", data="mnist1d", train_limit=300, epochs=3)
    clean = locallearn.train(out=tmp_path / "clean", **options)
    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "crashed", on_epoch=crash, **options)
    resumed = resume_run(tmp_path / "crashed")
    assert resumed["weights_sha256"] == clean["weights_sha256"]


def test_registry_recipe_and_compare():
    entry = RULES.get("fwdgrad")
    assert entry.meta["recipe"].source and entry.meta["recipe"].optimizer == "adam"
    assert rule_applies("fwdgrad", "mlp") and rule_applies("fwdgrad", "cnn1d")
    assert not rule_applies("fwdgrad", "cnn") and not rule_applies("fwdgrad", "gru")
    assert "fwdgrad" in default_rules("mlp") and "fwdgrad" not in default_rules("cnn")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"fg_perturb": "node"}, "fg-perturb"),
        ({"fg_directions": 0}, "--fg-directions must be an integer >= 1, got 0"),
        ({"blocks": 1}, "--blocks 1 is out of range for fwdgrad"),
        ({"fg_groups": 0}, "--fg-groups must be an integer >= 1, got 0"),
        ({"fg_groups": 2}, "--fg-groups 2 must divide .* block 1 has 5; valid: 1, 5"),
        ({"fg_groups": 5, "fg_perturb": "weight"}, "with --fg-perturb weight use --fg-groups 1"),
        ({"blocks": 4}, "K must be between 2 and 3"),
    ],
)
def test_bad_values_are_refused(options, message):
    net = build_model("mlp", (6,), 4, width=5, depth=2)
    with pytest.raises(UsageError, match=message):
        build_rule("fwdgrad", net, (6,), 4, **options)


def test_unknown_perturbation_lists_the_choices():
    net = build_model("mlp", (6,), 4)
    with pytest.raises(UsageError, match="activity, weight"):
        build_rule("fwdgrad", net, (6,), 4, fg_perturb="node")


def test_models_it_cannot_handle_are_refused_naming_the_valid_ones():
    net = build_model("cnn", (1, 8, 8), 4)  # BatchNorm couples the batch's examples
    with pytest.raises(UsageError, match=r"BatchNorm2d.*|models: mlp, cnn1d"):
        build_rule("fwdgrad", net, (1, 8, 8), 4)
    readout_only = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    )
    with pytest.raises(UsageError, match="at least one hidden layer"):
        build_rule("fwdgrad", readout_only, (6,), 4)


def test_cli_bad_value_exits_2_in_one_line(capsys):
    tiny = ["--model", "mlp", "--data", "digits", "--train-limit", "50", "--epochs", "1", "--quiet"]
    code = main(["train", "--rule", "fwdgrad", *tiny, "--fg-directions", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith("error: --fg-directions must be an integer >= 1, got 0"), err
    code = main(["train", "--rule", "fwdgrad", *tiny, "--width", "10", "--fg-groups", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--fg-groups 3 must divide" in err and "valid: 1, 2, 5, 10" in err, err
    code = main(["train", "--rule", "greedy", *tiny, "--fg-perturb", "weight"])
    err = capsys.readouterr().err
    assert code == 2 and "--fg-perturb does not apply to rule 'greedy'" in err, err


def test_listed_with_its_recipe(capsys):
    assert main(["list", "rules"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("fwdgrad ")]
    assert any("--fg-directions, --fg-groups, --fg-perturb" in line for line in lines), out
    assert any("adam lr 0.003 schedule cosine batch 100" in line for line in lines), out


def test_per_example_loss_is_the_head_loss_sample_by_sample():
    rule = _rule("mlp", (6,))
    h, y = torch.randn(8, 5), torch.tensor([0, 1, 2, 3] * 2)
    signal = rule.stages[0].signal
    torch.testing.assert_close(signal.per_example(h, y).mean(), F.cross_entropy(signal.head(h), y))
