"""``locallearn measure``: exact activation memory and step time on random inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import locallearn
from locallearn.cli import main
from locallearn.config import RunConfig
from locallearn.errors import UsageError
from locallearn.measure.step import (
    PIXEL_MEAN,
    PIXEL_STD,
    measure_config,
    measure_note,
    measure_rules,
    measure_step,
    measure_table,
    parse_input_shape,
    random_batch,
)

FAST = {"steps": 1, "warmup": 0}


@pytest.mark.parametrize(
    "text, shape",
    [("3x32x32", (3, 32, 32)), ("1x40", (1, 40)), (" 784 ", (784,)), ("1X8X8", (1, 8, 8))],
)
def test_parse_input_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("bad", ["", "3x32x", "x", "3x0x32", "3x-2", "3,32,32", "axb", "3.5x2"])
def test_bad_input_shape_names_the_value(bad: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_input_shape(bad)
    message = str(caught.value)
    assert repr(bad) in message and "3x32x32" in message and "\n" not in message


def test_random_inputs_are_normalised_images() -> None:
    x, y = random_batch((3, 8, 8), 7, 500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 3, 8, 8) and y.shape == (500,)
    raw = x * PIXEL_STD + PIXEL_MEAN  # what a reconstruction loss compares against
    assert raw.min() >= 0 and raw.max() <= 1
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02
    assert y.min() >= 0 and y.max() == 6


@pytest.mark.parametrize(
    "rule, model, options",
    [
        ("bp", "mlp", {}),
        ("greedy", "mlp", {"blocks": 3}),
        ("greedy", "cnn", {"blocks": 2, "width": 8, "depth": 2}),
    ],
)
def test_act_bytes_equal_a_real_training_run(
    rule: str, model: str, options: dict, mnist1d_small, digits_small
) -> None:
    data = digits_small if model == "cnn" else mnist1d_small
    summary = locallearn.train(rule, model, data, epochs=1, batch_size=50, **options)
    measured = measure_step(rule, model, data.input_shape, 10, 50, **FAST, **options)
    assert measured["act_bytes_peak"] == summary["act_bytes_peak"] > 0
    assert measured["block_act_bytes"] == summary["block_act_bytes"]
    assert (measured["params"], measured["aux_params"]) == (
        summary["params"],
        summary["aux_params"],
    )
    assert measured["blocks"] == summary["blocks"] and measured["cuts"] == summary["cuts"]


def test_act_bytes_scale_with_the_batch() -> None:
    # Saved activations of an MLP are per-sample tensors: 4x the batch, 4x the bytes.
    small = measure_step("bp", "mlp", "1x40", 10, 32, **FAST)
    large = measure_step("bp", "mlp", "1x40", 10, 128, **FAST)
    assert large["act_bytes_peak"] == pytest.approx(4 * small["act_bytes_peak"], rel=0.01)


def test_local_rule_is_below_bp_on_an_mlp() -> None:
    results = measure_rules(
        "bp,greedy", "mlp", (1, 40), 10, 256, depth=4, width=256, blocks=5, **FAST
    )
    bp, greedy = results
    assert (bp["rule"], greedy["rule"]) == ("bp", "greedy")
    assert bp["act_vs_bp"] == 1.0
    assert greedy["act_vs_bp"] == greedy["act_bytes_peak"] / bp["act_bytes_peak"]
    # Five blocks of one hidden layer each hold about a fifth of BP's graph (plus a head).
    assert greedy["act_vs_bp"] < 0.5
    assert len(greedy["block_act_bytes"]) == 5
    assert max(greedy["block_act_bytes"]) == greedy["act_bytes_peak"]
    assert greedy["aux_params"] > 0 and bp["aux_params"] == 0
    assert bp["params"] == greedy["params"]


def test_result_fields_and_timing() -> None:
    r = measure_step("greedy", "mlp", "1x40", 10, 64, blocks=2, steps=3, warmup=1, seed=3)
    assert r["step_seconds_all"] and len(r["step_seconds_all"]) == 3
    assert r["step_seconds"] == sorted(r["step_seconds_all"])[1]  # the median
    assert r["samples_per_second"] == pytest.approx(64 / r["step_seconds"])
    assert (r["input_shape"], r["classes"], r["batch_size"], r["seed"]) == ([1, 40], 10, 64, 3)
    assert r["options"] == {"blocks": 2} and r["device"] == "cpu"
    assert r["rss_scope"] == "process" and r["peak_rss_bytes"] >= r["rss_base_bytes"] > 0
    assert r["act_vs_bp"] is None  # no BP in the list


def test_rule_option_for_no_listed_rule_is_an_error() -> None:
    with pytest.raises(UsageError, match="--head does not apply to any of the rules bp"):
        measure_rules("bp", "mlp", "1x40", 10, 32, head="linear", **FAST)


def test_rule_option_goes_only_to_the_rules_that_take_it() -> None:
    results = measure_rules("bp,greedy", "mlp", "1x40", 10, 32, blocks=2, head="linear", **FAST)
    assert [r["blocks"] for r in results] == [1, 2]
    assert results[0]["options"] == {} and results[1]["options"]["head"] == "linear"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "cnn1d", "depth": 2}, "--depth does not apply to model 'cnn1d'"),
        ({"model": "cnn", "input_shape": (1, 40)}, "rank 3"),
        ({"model": "mlpp"}, "unknown model 'mlpp'"),
        ({"rule": "greedyy"}, "unknown rule 'greedyy'"),
        ({"classes": 1}, "--classes must be an integer of at least 2"),
        ({"steps": -1}, "--steps must be >= 0"),
        ({"augment": True}, "--augment does not apply to measure"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"device": "cpuu"}, "unknown device 'cpuu'"),
    ],
)
def test_bad_requests_are_usage_errors(kwargs: dict, message: str) -> None:
    args = {"rule": "bp", "model": "mlp", "input_shape": (1, 40), "classes": 10}
    args.update(kwargs)
    args.setdefault("batch_size", 16)
    args.setdefault("steps", 1)
    with pytest.raises(UsageError, match=message):
        measure_step(
            args.pop("rule"),
            args.pop("model"),
            args.pop("input_shape"),
            args.pop("classes"),
            args.pop("batch_size"),
            warmup=0,
            **args,
        )


def test_isolated_measurement_runs_in_a_fresh_process() -> None:
    here = measure_step("greedy", "mlp", "1x40", 10, 64, blocks=2, **FAST)
    apart = measure_step("greedy", "mlp", "1x40", 10, 64, blocks=2, isolate=True, **FAST)
    assert apart["act_bytes_peak"] == here["act_bytes_peak"]
    assert apart["block_act_bytes"] == here["block_act_bytes"]
    assert (here["rss_scope"], apart["rss_scope"]) == ("process", "fresh process")
    assert "fresh process" in measure_note([apart]) and "whole process" in measure_note([here])


def test_isolated_errors_come_back_as_usage_errors() -> None:
    # The model option is checked in the child (where the model is built).
    with pytest.raises(UsageError, match="--depth does not apply"):
        measure_step("bp", "cnn1d", "1x40", 10, 8, isolate=True, depth=3, **FAST)


def test_table_has_a_row_per_rule_and_the_ratio() -> None:
    results = measure_rules("bp,greedy", "mlp", "1x40", 10, 64, blocks=3, **FAST)
    table = measure_table(results).splitlines()
    assert table[0].split()[:4] == ["rule", "K", "act", "memory"]
    assert table[2].startswith("bp") and "1.00x" in table[2]
    assert table[3].startswith("greedy") and f"{results[1]['act_vs_bp']:.2f}x" in table[3]


def test_cli_measure_writes_json_and_prints_a_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.json"
    code = main(
        [
            "measure",
            "--model",
            "mlp",
            "--input-shape",
            "1x40",
            "--classes",
            "10",
            "--batch-size",
            "32",
            "--rules",
            "bp,greedy",
            "--blocks",
            "2",
            "--width",
            "64",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--no-isolate",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["rule"] for r in results] == ["bp", "greedy"]
    assert results[1]["blocks"] == 2 and results[1]["options"] == {"blocks": 2, "width": 64}
    captured = capsys.readouterr()
    assert "act memory" in captured.out and "greedy" in captured.out
    assert captured.err == ""  # --quiet
    direct = measure_config(
        RunConfig(rule="greedy", model="mlp", blocks=2, width=64, batch_size=32),
        (1, 40),
        10,
        **FAST,
    )
    assert direct["act_bytes_peak"] == results[1]["act_bytes_peak"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input-shape", "3x32x"], "--input-shape '3x32x' is not a shape"),
        (["--input-shape", "1x40", "--rules", "bp", "--head", "mlp"], "--head does not apply"),
        (["--input-shape", "1x40", "--rule", "bp", "--rules", "greedy"], "not both"),
        (["--input-shape", "1x40", "--rule", "bp", "--steps", "-2"], "--steps must be >= 0"),
    ],
)
def test_cli_measure_errors_are_one_line_exit_2(argv: list[str], message: str, capsys) -> None:
    code = main(["measure", "--model", "mlp", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_measure_refuses_dataset_flags(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["measure", "--model", "mlp", "--input-shape", "1x40", "--augment"])
    assert caught.value.code == 2
    assert "--augment" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_is_reported_on_cuda() -> None:
    r = measure_step("greedy", "mlp", "1x40", 10, 64, blocks=2, device="cuda", **FAST)
    assert r["cuda_peak_bytes"] >= r["act_bytes_peak"] > 0
    cpu = measure_step("greedy", "mlp", "1x40", 10, 64, blocks=2, **FAST)
    assert cpu["act_bytes_peak"] == r["act_bytes_peak"]


def test_zero_steps_measures_memory_only() -> None:
    r = measure_step("greedy", "mlp", "1x40", 10, 32, blocks=2, steps=0, warmup=0)
    assert r["act_bytes_peak"] > 0 and r["step_seconds_all"] == []
    assert r["step_seconds"] is None and r["samples_per_second"] is None
    assert "-" in measure_table([r]).splitlines()[2]
