"""NoProp-DT (Li, Teh & Pascanu 2025): schedule, loss, isolation, memory, chain, options."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import locallearn
from isolation_helpers import RecordingOptimizer
from locallearn.api import default_rules
from locallearn.cli import main
from locallearn.engine.export import export_network
from locallearn.engine.loop import train_step
from locallearn.errors import UsageError
from locallearn.measure import SavedTensorMeter
from locallearn.rules import build_rule, rule_infos
from locallearn.rules.noprop import chain_coefficients, cosine_alpha_bar

SHAPE = (1, 8, 8)


def make_rule(steps=3, **options):
    torch.manual_seed(0)
    return build_rule("noprop", nn.Sequential(), SHAPE, 10, np_steps=steps, **options)


# -- the schedule and the chain's coefficients -------------------------------------------------
def test_cosine_schedule_runs_from_noise_to_the_clipped_label():
    ab = cosine_alpha_bar(10)
    assert ab.shape == (11,) and bool((ab[1:] > ab[:-1]).all())
    assert float(ab[0]) < 1e-12 and float(ab[-1]) == 0.999  # clipped: SNR(T) = 999, not inf

    def f(tau):  # Nichol & Dhariwal's cosine, s = 0.008, time reversed: tau = T - t
        return math.cos((tau / 10 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (1, 5, 9):
        assert float(ab[t]) == pytest.approx(f(10 - t) / f(0), rel=1e-12)
    assert float(ab[9]) == pytest.approx(0.97206, abs=1e-4)


def test_chain_coefficients_are_the_gaussian_posterior():
    # q(z_t | z_{t-1}, y) from the joint Gaussian of (z_t, z_{t-1}) given u: z_t has mean
    # sqrt(ab_t) u, variance 1 - ab_t; z_{t-1} = sqrt(alpha) z_t + sqrt(1 - alpha) e.
    ab = cosine_alpha_bar(6)
    a, b, c = chain_coefficients(ab)
    for t in range(1, 7):
        alpha = float(ab[t - 1] / ab[t])
        var_t, var_prev = 1 - float(ab[t]), 1 - float(ab[t - 1])
        cov = math.sqrt(alpha) * var_t
        slope = cov / var_prev
        assert float(b[t - 1]) == pytest.approx(slope, rel=1e-10)
        # mean = sqrt(ab_t) u + slope (z_{t-1} - sqrt(ab_{t-1}) u): a is the u coefficient
        expect_a = math.sqrt(float(ab[t])) - slope * math.sqrt(float(ab[t - 1]))
        assert float(a[t - 1]) == pytest.approx(expect_a, rel=1e-9, abs=1e-12)
        assert float(c[t - 1]) == pytest.approx(var_t - cov**2 / var_prev, rel=1e-9, abs=1e-12)
    # The first step ignores z_0 (pure noise); the last nearly copies the block's estimate.
    assert float(b[0]) < 1e-12 and float(a[-1]) > 0.98


# -- the loss ------------------------------------------------------------------------------------
def test_stage_loss_is_eq_8_at_one_t():
    rule = make_rule(steps=2)
    rule.train(False)  # no dropout: the block's logits are a function of its input
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 10, (6,))
    h, target = rule.begin_step(x, y)
    ab = cosine_alpha_bar(2).tolist()
    snr = [a / (1 - a) for a in ab]
    for t, stage in enumerate(rule.stages):
        (packed, tgt), *rest = list(rule.chunks(t, h, target))
        assert not rest
        u = F.one_hot(y, 10).float()
        z_prev = math.sqrt(ab[t]) * u + math.sqrt(1 - ab[t]) * target.noise_in[t]
        assert torch.equal(packed[:, :64], x.flatten(1))
        assert torch.allclose(packed[:, 64:], z_prev)
        logits = stage.block(packed).detach()
        u_hat = torch.softmax(logits, dim=1)  # one-hot embedding: W = I
        denoise = 2 / 2 * 0.1 * (snr[t + 1] - snr[t]) * ((u_hat - u) ** 2).sum(1).mean()
        z_top = math.sqrt(ab[2]) * u + math.sqrt(1 - ab[2]) * target.noise_top[t]
        ce = F.cross_entropy(rule.output(z_top), y)
        kl = 0.5 * (ab[0] * 1.0 + 10 * (1 - ab[0]) - 10 - 10 * math.log(1 - ab[0]))
        got = stage.signal(logits, tgt)
        assert float(got.detach()) == pytest.approx(float((ce + kl + denoise).detach()), rel=1e-5)


# -- gradient isolation --------------------------------------------------------------------
@pytest.mark.parametrize("embedding", ["onehot", "learned"])
def test_no_block_gradient_reaches_another_block(embedding):
    rule = make_rule(
        steps=3, np_embedding=embedding, np_embed_dim=12 if embedding != "onehot" else None
    )
    rule.train(True)
    opts = [RecordingOptimizer(rule.stage_parameters(i)) for i in range(rule.blocks)]
    inputs = []
    hooks = [
        s.block.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for s in rule.stages
    ]
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    train_step(rule, opts, x, y)
    for hook in hooks:
        hook.remove()
    for k, inp in enumerate(inputs):
        assert not inp.requires_grad, f"block {k} input is attached"
        assert torch.equal(inp[:, :64], x.flatten(1)), f"block {k} does not read the image"
    shared = {id(p) for p in rule.output.parameters()}
    for k, opt in enumerate(opts):
        own = {id(p) for p in rule.stages[k].block.parameters()}
        assert set(opt.seen) == own | shared
        assert all(opt.seen[i] is not None and bool(opt.seen[i].abs().sum() > 0) for i in own)
    # Each block's loss, recomputed alone: its gradient reaches its own block and the shared
    # output layer (and embedding), never another block.
    torch.manual_seed(1)
    h, target = rule.begin_step(x, y)
    params = list(rule.network.parameters())
    for k, stage in enumerate(rule.stages):
        packed, tgt = next(iter(rule.chunks(k, h, target)))
        loss = stage.signal(stage.block(packed.detach()), tgt)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for j, other in enumerate(rule.stages):
            got = [
                g for p, g in zip(params, grads) if any(p is q for q in other.block.parameters())
            ]
            if j == k:
                assert all(g is not None for g in got)
            else:
                assert all(g is None for g in got), f"block {k}'s loss reached block {j}"
        if embedding == "learned":  # eq. 8's denoising term trains the embedding too
            (w_grad,) = torch.autograd.grad(
                stage.signal(stage.block(packed.detach()), tgt), [rule.output.embedding]
            )
            assert bool(w_grad.abs().sum() > 0)


def test_learned_embedding_is_trained_and_checkpointed(tmp_path):
    s = locallearn.train(
        rule="noprop",
        model="cnn",
        data="digits",
        train_limit=200,
        epochs=1,
        np_steps=2,
        np_embedding="learned",
        np_embed_dim=16,
        out=tmp_path / "run",
    )
    assert s["np_embed_dim"] == 16 and s["np_embedding"] == "learned"
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    w = [v for k, v in ckpt["network"].items() if k.endswith("embedding")]
    assert len(w) == 1 and w[0].shape == (10, 16)
    torch.manual_seed(0)
    init = build_rule(
        "noprop", nn.Sequential(), SHAPE, 10, np_steps=2, np_embedding="learned", np_embed_dim=16
    )
    assert not torch.equal(init.output.embedding.detach(), w[0]), "the embedding did not learn"


# -- memory: one block's graph at a time -------------------------------------------------------
def _peak(steps):
    rule = make_rule(steps=steps)
    rule.train(True)
    opts = [torch.optim.Adam(rule.stage_parameters(i), lr=1e-3) for i in range(rule.blocks)]
    meter = SavedTensorMeter(exclude=list(rule.network.parameters()) + list(rule.network.buffers()))
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    with meter:
        train_step(rule, opts, x, y, meter)
    return meter.peak


def test_act_bytes_peak_is_one_blocks():
    one, four = _peak(1), _peak(4)
    assert one > 0
    assert four == one, f"T=4 peak {four} != one block's {one}: graphs of blocks overlap"


def test_summary_act_bytes_do_not_grow_with_t():
    small = locallearn.train(
        rule="noprop", model="cnn", data="digits", train_limit=64, epochs=1, np_steps=1
    )
    large = locallearn.train(
        rule="noprop", model="cnn", data="digits", train_limit=64, epochs=1, np_steps=3
    )
    assert small["act_bytes_peak"] == large["act_bytes_peak"] > 0
    assert large["blocks"] == 3 and large["params"] == 3 * (small["params"] - 110) + 110


# -- training and the inference chain -----------------------------------------------------------
def test_noprop_learns_digits():
    s = locallearn.train(rule="noprop", model="cnn", data="digits", epochs=15, seed=0, np_steps=3)
    assert s["test_acc"] > 0.9, s["test_acc"]
    chain = s["np_chain_test_acc"]
    # digits has 360 test rows, fewer than CHAIN_ROWS: the chain's last step is the test acc
    assert s["np_chain_rows"] == 360
    assert len(chain) == 3 and chain[-1] == pytest.approx(s["test_acc"])
    assert s["model"] == "noprop-dt-3" and s["settings"]["lr"] == 1e-3
    assert s["settings"]["batch_size"] == 128


def test_prediction_is_reproducible_and_leaves_the_rng_alone():
    rule = make_rule(steps=2)
    rule.train(False)
    x = torch.randn(5, *SHAPE)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with torch.no_grad():
        a, b = rule.predict(x), rule.predict(x)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)
    assert a.shape == (5, 10)


def test_export_loads_the_inference_chain(tmp_path):
    s = locallearn.train(
        rule="noprop",
        model="cnn",
        data="digits",
        train_limit=100,
        epochs=1,
        np_steps=2,
        out=tmp_path / "run",
    )
    export_network(tmp_path / "run", tmp_path / "m.pt")
    net = locallearn.load_network(tmp_path / "m.pt")
    x = torch.randn(7, *SHAPE)
    with torch.no_grad():
        got = net(x)
        assert torch.equal(got, locallearn.load_network(tmp_path / "run")(x))
    assert got.shape == (7, 10) and not net.training
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "cli.pt")]) == 0
    assert s["weights_sha256"] == torch.load(tmp_path / "m.pt", weights_only=True)["weights_sha256"]


# -- registry, recipe, compare, options ----------------------------------------------------
def test_listed_with_recipe_and_compared_on_image_models():
    info = {r["name"]: r for r in rule_infos()}["noprop"]
    assert info["recipe"] == "adam lr 0.001 batch 128"
    assert "Table 3" in info["recipe_source"] and "2503.24322" in info["paper"]
    assert "noprop" in default_rules("cnn") and "noprop" not in default_rules("mlp")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--np-steps", "0"], "--np-steps must be at least 1 (the number of blocks T), got 0"),
        (["--np-eta", "0"], "--np-eta must be a positive number (Table 3: 0.1), got 0.0"),
        (["--np-eta", "-1"], "--np-eta must be a positive number (Table 3: 0.1), got -1.0"),
        (
            ["--np-embedding", "onehott"],
            "unknown --np-embedding 'onehott' (did you mean 'onehot'?)",
        ),
        (["--np-embedding", "learned", "--np-embed-dim", "0"], "--np-embed-dim must be at least 1"),
        (["--np-embed-dim", "5"], "--np-embed-dim 5: one-hot embeddings have d = classes = 10"),
        (["--width", "8"], "--width does not apply to rule 'noprop': it builds its own network"),
        (["--blocks", "3"], "--blocks"),
    ],
)
def test_bad_values_exit_2_with_a_message(args, message, capsys):
    code = main(
        ["train", "--rule", "noprop", "--model", "cnn", "--data", "digits", "--epochs", "1", *args]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_refuses_data_that_is_not_images():
    with pytest.raises(UsageError, match=r"rule 'noprop' takes images .* shape \(1, 40\)"):
        build_rule("noprop", nn.Sequential(), (1, 40), 10)


def test_probe_refuses_with_the_reason(tmp_path):
    from locallearn.probes import probe_run

    locallearn.train(
        rule="noprop",
        model="cnn",
        data="digits",
        train_limit=64,
        epochs=1,
        np_steps=1,
        out=tmp_path / "r",
    )
    with pytest.raises(UsageError, match="cannot be probed unit by unit: its blocks each read"):
        probe_run(tmp_path / "r")
