"""Bad input of every kind ends in one line and exit status 2, never a traceback.

Each case is what a careless or hostile user typed (or left lying around): output paths,
config files, values, data files and run directories. The CLI runs in-process on a tiny
problem (digits, 50 samples, 1 epoch), so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from locallearn.cli import main

TINY = ["--model", "mlp", "--data", "digits", "--train-limit", "50", "--epochs", "1", "--quiet"]
TRAIN = ["train", *TINY]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, expected: int, *needles: str) -> None:
    assert "Traceback" not in err, err
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# --- a finished run and a crafted CIFAR folder, shared by the run-directory cases --------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TRAIN, "--out", str(run_dir)]) == 0
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("config.toml", "checkpoint.pt", "metrics.jsonl", "summary.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


class WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def cifar_dir(root: Path, labels: object) -> Path:
    """A CIFAR-10 folder whose first training batch has ``labels`` (others are genuine)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for i, name in enumerate(names):
        batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
        if i == 0:
            batch[b"labels"] = labels
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


# --- cases: (setup(tmp) -> argv, expected needles) -----------------------------------------

Case = Callable[[Path], list[str]]


def _readonly(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """This suite runs as root on CI, where chmod cannot make a folder unwritable; the
    check consults os.access and statvfs, so those are what the cases below stand in for."""
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(str(path)).absolute() == target.absolute() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


OUTPUT_CASES: dict[str, tuple[Case, tuple[str, ...]]] = {
    "out is /dev/null": (
        lambda t: [*TRAIN, "--out", "/dev/null"],
        ("--out /dev/null is a file, not a folder",),
    ),
    "out is a file": (
        lambda t: [*TRAIN, "--out", str(write(t / "f", "x"))],
        ("is a file, not a folder", "choose another --out"),
    ),
    "out is empty": (lambda t: [*TRAIN, "--out", ""], ("--out is empty",)),
    "out inside a file": (
        lambda t: [*TRAIN, "--out", str(write(t / "f", "x") / "run")],
        ("is a file, not a folder",),
    ),
    "json is a folder": (
        lambda t: [*TRAIN, "--out", str(t / "run"), "--json", str(t)],
        ("--json", "is a folder; give a file name inside it"),
    ),
    "json is a device": (
        lambda t: [*TRAIN, "--out", str(t / "run"), "--json", "/dev/null"],
        ("--json /dev/null is not a regular file",),
    ),
    "plot has an unknown extension": (
        lambda t: ["compare", "--rules", "bp", *TINY, "--out", str(t / "c"), "--plot", "x.xyz"],
        ("--plot x.xyz: unknown figure format 'xyz'", ".png"),
    ),
    "probe plot unknown extension": (
        lambda t: ["probe", str(t), "--plot", "fig.docx"],
        ("unknown figure format 'docx'",),
    ),
}


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_output_paths_are_checked_before_training(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, needles = OUTPUT_CASES[name]
    argv = setup(tmp_path)
    code, _, err = run(argv, capsys)
    assert_one_line(code, err, 2, *needles)
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists(), "it trained first"


def test_unwritable_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    _readonly(monkeypatch, locked)
    code, _, err = run([*TRAIN, "--out", str(locked / "run")], capsys)
    assert_one_line(code, err, 2, "not writable (permission denied)", "choose another --out")
    code, _, err = run([*TRAIN, "--out", str(tmp_path / "r"), "--json", str(locked / "s")], capsys)
    assert_one_line(code, err, 2, "--json", "not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder anyway")
def test_really_unwritable_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, err = run([*TRAIN, "--out", str(locked / "run")], capsys)
    assert_one_line(code, err, 2, "not writable")


def test_read_only_filesystem_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.statvfs

    class ReadOnly:
        def __init__(self, stat: os.statvfs_result) -> None:
            self.f_flag = stat.f_flag | os.ST_RDONLY

    monkeypatch.setattr(
        os, "statvfs", lambda p: ReadOnly(real(p)) if Path(p) == tmp_path else real(p)
    )
    code, _, err = run([*TRAIN, "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, "read-only filesystem")


def test_json_dash_writes_the_summary_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([*TRAIN, "--out", str(tmp_path / "run"), "--json", "-"], capsys)
    assert code == 0, err
    summary = json.loads(out)  # stdout is the JSON alone; the table went to stderr
    assert summary["rule"] == "bp" and "test acc" in err
    assert not Path("-").exists()


# --- config files ------------------------------------------------------------------------

CONFIG_CASES: dict[str, tuple[str | bytes | None, tuple[str, ...]]] = {
    "not utf-8": (b"epochs = 1\n\xff\xfe = 2\n", ("is not UTF-8 text",)),
    "a directory": (None, ("is a directory; give a .toml file",)),
    "key named, not flag": ("epochs = 0\n", ("--epochs must be at least 1", "`epochs` in")),
    "epochs absurd": ("epochs = 100000000\n", ("--epochs must be at most 1,000,000", "`epochs`")),
    "wrong type": ('epochs = "ten"\n', ("epochs must be an integer, got 'ten'", "config file")),
    "out not a string": ("out = 3\n", ("out in config file", "must be a folder name")),
    "momentum with adam": ("momentum = 0.5\n", ("--momentum applies to --optimizer sgd only",)),
    "lr nan": ("lr = nan\n", ("--lr must be a finite number, got nan", "`lr` in")),
    "unknown key": ("epoks = 1\n", ("unknown configuration key 'epoks'", "epochs")),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_config_file_errors(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, needles = CONFIG_CASES[name]
    path = tmp_path / "c.toml"
    if text is None:
        path.mkdir()
    else:
        write(path, text)
    argv = ["train", "--model", "mlp", "--data", "digits", "--train-limit", "50", "--quiet"]
    code, _, err = run([*argv, "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, *needles)


def test_config_file_may_name_the_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "c.toml", 'out = "from-file"\n')
    code, _, err = run([*TRAIN, "--config", "c.toml"], capsys)
    assert code == 0, err
    assert (tmp_path / "from-file" / "summary.json").is_file()
    code, _, err = run([*TRAIN, "--config", "c.toml", "--out", "flag"], capsys)  # flag wins
    assert code == 0 and (tmp_path / "flag" / "summary.json").is_file()


# --- values -----------------------------------------------------------------------------

VALUE_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "seed too large": (["--seed", str(2**63)], ("--seed must be in 0..9223372036854775807",)),
    "seed negative": (["--seed", "-1"], ("--seed must be in 0..",)),
    "width of two billion": (
        ["--width", "2000000000"],
        ("model mlp with --width 2000000000", "choose a smaller --width"),
    ),
    "model larger than memory": (
        ["--width", "20000", "--depth", "300"],
        ("GiB of weights", "available on cpu"),
    ),
    "depth absurd": (["--depth", "2000000000"], ("--depth must be at most 10,000",)),
    "momentum with adam": (["--momentum", "0.5"], ("--momentum applies to --optimizer sgd",)),
    "lr nan": (["--lr", "nan"], ("--lr must be a finite number, got nan",)),
    "lr inf": (["--lr", "inf"], ("--lr must be a",)),
    "weight decay nan": (["--weight-decay", "nan"], ("--weight-decay must be a finite number",)),
    "weight decay inf": (["--weight-decay", "inf"], ("--weight-decay must be a finite number",)),
    "ema momentum nan": (
        ["--rule", "man", "--ema-momentum", "nan"],
        ("--ema-momentum must be a finite number",),
    ),
    "threads absurd": (["--threads", "100000"], ("--threads must be in 1..1024",)),
    "cuts beyond the network": (
        ["--rule", "greedy", "--cuts", "100"],
        ("--cuts 100 must be strictly increasing unit indices in 1..2", "3 units"),
    ),
    "epochs zero": (["--epochs", "0"], ("--epochs must be at least 1, got 0",)),
    "unknown rule": (["--rule", "bq"], ("unknown rule 'bq'", "bp")),
    "not an int": (["--width", "wide"], ("--width: invalid int value: 'wide'",)),
}


@pytest.mark.parametrize("name", list(VALUE_CASES))
def test_bad_values(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags, needles = VALUE_CASES[name]
    code, _, err = run([*TRAIN, *flags, "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, *needles)
    if name == "cuts beyond the network":
        assert "--blocks" not in err


def test_the_largest_seed_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([*TRAIN, "--seed", str(2**63 - 1), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err


def test_momentum_with_sgd_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TRAIN, "--optimizer", "sgd", "--momentum", "0.5", "--out", str(tmp_path / "r")]
    assert run(argv, capsys)[0] == 0


def test_momentum_with_adam_in_the_api() -> None:
    import locallearn
    from locallearn.errors import UsageError

    with pytest.raises(UsageError, match="momentum applies to --optimizer sgd only"):
        locallearn.train(model="mlp", data="digits", epochs=1, momentum=0.5)


def test_compare_names_the_rule_whose_default_blocks_do_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--rules", "greedy,infopro", *TINY, "--out", str(tmp_path / "c")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert "rule infopro cuts 4 blocks by default" in err and "3 units" in err
    assert "--blocks 4 is out of range" not in err
    assert not (tmp_path / "c" / "greedy" / "summary.json").exists(), "greedy trained first"


# --- data files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, needle",
    [
        ([0.5, 1, 2, 3], "labels must be integers, got float64"),
        ([None, 1, 2, 3], "labels must be integers, got object"),
        (["a", "b", "c", "d"], "labels must be integers"),
        ([0, 1, 2, 10], "labels outside 0..9"),
    ],
)
def test_cifar_labels_must_be_integers_in_range(
    labels: list, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = cifar_dir(tmp_path / "data", labels)
    argv = ["train", "--model", "mlp", "--data", "cifar10", "--data-dir", str(data), "--quiet"]
    code, _, err = run([*argv, "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, needle, "data_batch_1")


def test_crafted_cifar_batch_runs_no_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    data = cifar_dir(tmp_path / "evil", WritesMarker(marker))
    argv = ["train", "--model", "mlp", "--data", "cifar10", "--data-dir", str(data), "--quiet"]
    code, _, err = run([*argv, "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, "data_batch_1", "posix.system", "refused")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["probe", "resume"])
def test_crafted_run_directory_runs_no_code(
    command: str, tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run directory (copied from someone) whose config.toml points at a hostile data dir:
    # probe and resume read the dataset before the checkpoint.
    marker = tmp_path / "marker"
    data = cifar_dir(tmp_path / "evil", WritesMarker(marker))
    run_dir = copy_run(finished_run, tmp_path / "run")
    config = (run_dir / "config.toml").read_text().replace('data = "digits"', 'data = "cifar10"')
    (run_dir / "config.toml").write_text(config + f'data_dir = "{data}"\n')
    (run_dir / "summary.json").unlink()
    code, _, err = run([command, str(run_dir), "--quiet"], capsys)
    assert_one_line(code, err, 2, "posix.system", "refused")
    assert not marker.exists()


def test_unreadable_data_dir_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = cifar_dir(tmp_path / "data", [0, 1, 2, 3])
    folder = data / "cifar-10-batches-py"
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, *a, **k: False if Path(p) == folder else real_access(p, mode, *a, **k),
    )
    argv = ["train", "--model", "mlp", "--data", "cifar10", "--data-dir", str(data), "--quiet"]
    code, _, err = run([*argv, "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, f"cannot read {folder}: permission denied")


def test_permission_denied_anywhere_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file the process may not open (as a non-root user would meet it).
    import locallearn.engine.run as engine_run

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", "/data/train-images")

    monkeypatch.setattr(engine_run, "load_configured_dataset", denied)
    code, _, err = run([*TRAIN, "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, "cannot access /data/train-images: permission denied")


# --- run directories --------------------------------------------------------------------


def _foreign_checkpoint(path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: pickled classes


RUN_DIR_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "checkpoint empty": (
        lambda d: (d / "checkpoint.pt").write_bytes(b""),
        ("checkpoint", "is empty (0 bytes)"),
    ),
    "checkpoint garbage": (
        lambda d: (d / "checkpoint.pt").write_bytes(b"\x00garbage" * 10),
        ("is not a readable checkpoint",),
    ),
    "checkpoint truncated": (
        lambda d: (d / "checkpoint.pt").write_bytes((d / "checkpoint.pt").read_bytes()[:300]),
        ("is not a readable checkpoint",),
    ),
    "checkpoint of another program": (
        lambda d: _foreign_checkpoint(d / "checkpoint.pt"),
        ("holds objects that a locallearn checkpoint never contains",),
    ),
    "checkpoint a list": (
        lambda d: torch.save([1, 2, 3], d / "checkpoint.pt"),
        ("holds a list, not a locallearn checkpoint",),
    ),
    "checkpoint missing keys": (
        lambda d: torch.save({"version": 1, "network": {}}, d / "checkpoint.pt"),
        ("has no 'rule' entry",),
    ),
    "checkpoint wrong type": (
        lambda d: torch.save(
            {**torch.load(d / "checkpoint.pt", weights_only=True), "optimizers": "adam"},
            d / "checkpoint.pt",
        ),
        ("has a str as 'optimizers', expected list",),
    ),
    "checkpoint wrong version": (
        lambda d: torch.save(
            {**torch.load(d / "checkpoint.pt", weights_only=True), "version": 99},
            d / "checkpoint.pt",
        ),
        ("has version 99, expected 1",),
    ),
    "checkpoint a directory": (
        lambda d: ((d / "checkpoint.pt").unlink(), (d / "checkpoint.pt").mkdir()),
        ("is a directory, not a file",),
    ),
    "config.toml not utf-8": (
        lambda d: (d / "config.toml").write_bytes(b"rule = \xff\n"),
        ("config.toml", "is not UTF-8 text"),
    ),
    "config.toml a directory": (
        lambda d: ((d / "config.toml").unlink(), (d / "config.toml").mkdir()),
        ("config.toml", "is a directory"),
    ),
    "config of another run": (
        lambda d: (d / "config.toml").write_text(
            (d / "config.toml").read_text().replace("width", "depth = 3\nwidth")
            if "width" in (d / "config.toml").read_text()
            else (d / "config.toml").read_text() + "width = 7\n"
        ),
        ("come from different runs", "the weights do not fit its model"),
    ),
    "config of another seed": (
        lambda d: (d / "config.toml").write_text(
            (d / "config.toml").read_text().replace("seed = 0", "seed = 5")
        ),
        ("come from different runs", "seed 0", "says 5"),
    ),
}


@pytest.mark.parametrize("command", ["resume", "probe"])
@pytest.mark.parametrize("name", list(RUN_DIR_CASES))
def test_damaged_run_directories(
    name: str,
    command: str,
    tmp_path: Path,
    finished_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damage, needles = RUN_DIR_CASES[name]
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / "summary.json").unlink()  # resume must read the checkpoint
    damage(run_dir)
    code, _, err = run([command, str(run_dir), "--quiet"], capsys)
    assert_one_line(code, err, 2, *needles)
    assert "weights_only" not in err


def test_corrupt_summary_is_named(
    tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    for text in (b"{not json", b"\xff\xfe", b"[1, 2]"):
        (run_dir / "summary.json").write_bytes(text)
        for command in ("resume", "probe"):
            code, _, err = run([command, str(run_dir), "--quiet"], capsys)
            assert_one_line(code, err, 2, "summary.json", "delete it")


# --- misleading messages ----------------------------------------------------------------


def test_interrupt_before_the_run_starts_says_nothing_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import locallearn.engine.run as engine_run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "load_configured_dataset", interrupted)
    code, _, err = run([*TRAIN, "--out", str(tmp_path / "run")], capsys)
    assert code == 130 and "Traceback" not in err
    assert "before the run started; nothing to resume" in err and "RUN_DIR" not in err


def test_interrupt_during_training_names_the_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import locallearn.engine.run as engine_run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "train_epoch", interrupted)
    code, _, err = run([*TRAIN, "--out", str(tmp_path / "run")], capsys)
    assert code == 130
    assert f"continue with `locallearn resume {tmp_path / 'run'}`" in err


def test_relu_warning_is_one_line_in_the_cli_voice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DRTP's recipe picks tanh; the warning is for a user who asks for ReLU.
    argv = ["train", *TINY[:-1], "--rule", "drtp", "--activation", "relu"]
    argv += ["--out", str(tmp_path / "run"), "--quiet"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if "ReLU" in line]
    assert len(warning) == 1 and warning[0].startswith("locallearn train: warning: DRTP on ReLU")
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_momentum_follows_the_optimizer_the_recipe_picks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # FF's recipe trains with SGD: a momentum for it is meaningful, not an Adam error.
    from locallearn.api import optimizers_used
    from locallearn.config import RunConfig

    assert optimizers_used(RunConfig(), ["ff"]) == ["sgd"]
    assert optimizers_used(RunConfig(), ["bp"]) == ["adam"]
    assert optimizers_used(RunConfig(optimizer="sgd"), ["bp"]) == ["sgd"]
    code, _, err = run(["train", "--rule", "bp", "--momentum", "0.5", "--quiet"], capsys)
    assert code == 2 and "--momentum applies to --optimizer sgd only" in err


def test_compare_gives_momentum_only_to_the_rules_on_sgd() -> None:
    from locallearn.api import configs_for_rules
    from locallearn.config import RunConfig

    configs = configs_for_rules(RunConfig(momentum=0.5, model="mlp"), ["bp", "ff"])
    assert {c.rule: c.momentum for c in configs} == {"bp": None, "ff": 0.5}
