import pytest

from locallearn.config import RunConfig, config_from_mapping, load_config_file, to_toml, validate
from locallearn.errors import UsageError


def test_toml_round_trip(tmp_path):
    cfg = RunConfig(rule="greedy", blocks=4, lr=3e-4, cuts=[1, 3, 5], data_dir="/data", head="mlp")
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_config_file(path) == cfg


def test_file_overrides_defaults_and_flags_override_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('rule = "greedy"\nepochs = 7\nlr = 0.5\n')
    from_file = load_config_file(path)
    assert (from_file.rule, from_file.epochs, from_file.lr, from_file.seed) == ("greedy", 7, 0.5, 0)
    flags = config_from_mapping({"epochs": 3}, from_file)
    assert (flags.rule, flags.epochs, flags.lr) == ("greedy", 3, 0.5)


def test_unknown_key_and_bad_types_are_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epoch = 3\n")
    with pytest.raises(
        UsageError, match="unknown configuration key 'epoch'.*did you mean 'epochs'"
    ):
        load_config_file(path)
    with pytest.raises(UsageError, match="epochs must be an integer, got '3'"):
        config_from_mapping({"epochs": "3"})
    with pytest.raises(UsageError, match="cuts must be a comma-separated list of integers"):
        config_from_mapping({"cuts": "1,x"})
    assert config_from_mapping({"cuts": "1,3"}).cuts == [1, 3]
    path.write_text("epochs = \n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        load_config_file(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"lr": -1.0}, "--lr must be a positive number, got -1.0"),
        ({"weight_decay": -0.1}, "--weight-decay must be >= 0"),
        ({"momentum": 1.0}, "--momentum must be in [0, 1)"),
        ({"optimizer": "adamw"}, "unknown optimizer 'adamw'.*valid choices: adam, sgd"),
        ({"device": "tpu"}, "unknown device 'tpu'.*valid choices: cpu, cuda"),
        ({"blocks": 0}, "--blocks must be at least 1"),
    ],
)
def test_validation_names_the_bad_value(change, message):
    with pytest.raises(UsageError) as err:
        validate(RunConfig().replace(**change))
    assert all(part in str(err.value) for part in message.split(".*")), str(err.value)


def test_threads_sets_the_intra_op_threads_of_the_process() -> None:
    import torch

    from locallearn.engine.run import apply_threads

    before = torch.get_num_threads()
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1
        apply_threads(None)  # None leaves the current setting alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_below_one_is_a_usage_error() -> None:
    import pytest

    from locallearn.config import RunConfig, validate
    from locallearn.errors import UsageError

    with pytest.raises(UsageError, match="--threads must be in 1..1024, got 0"):
        validate(RunConfig(threads=0))


def test_python_dash_m_locallearn_runs_the_cli() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "locallearn", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("locallearn ")
