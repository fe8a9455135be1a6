"""The command line: its output, its files and its errors (exit status 2, one line)."""

import json
import subprocess
import sys

import pytest

from locallearn.cli import main
from locallearn.rules import RULES

SMALL = ["--data", "mnist1d", "--train-limit", "300", "--epochs", "2", "--quiet"]


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_registry(capsys):
    code, out, _ = run(capsys, "list", "rules")
    assert code == 0 and "bp" in out and "greedy (dgl)" in out
    code, out, _ = run(capsys, "list", "models")
    assert all(m in out for m in ("mlp", "cnn1d", "cnn"))
    code, out, _ = run(capsys, "list", "datasets")
    assert "mnist1d-shuffled" in out and "1x40" in out and "3x32x32" in out


@pytest.mark.parametrize(
    "argv,expected",
    [
        (
            ["train", "--rule", "nosuch"],
            "unknown rule 'nosuch'; valid choices: " + ", ".join(RULES.names()) + ".",
        ),
        (["train", "--data", "nosuch"], "unknown dataset 'nosuch'"),
        (["train", "--model", "resnet"], "unknown model 'resnet'"),
        (["train", "--rule", "bp", "--blocks", "3"], "--blocks does not apply to rule 'bp'"),
        (["train", "--model", "cnn1d", "--depth", "3"], "--depth does not apply to model 'cnn1d'"),
        (["train", "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
        (["train", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
        (["train", "--lr", "0"], "--lr must be a positive number"),
        (
            ["compare", "--rules", "bp", "--head", "mlp"],
            "--head does not apply to any of the rules bp",
        ),
        (["compare", "--rules", "bp,greedy,dgl"], "lists a rule twice"),
        (["list", "rulez"], "unknown list 'rulez'"),
        (["resume", "/nonexistent/run"], "is not a run directory"),
        (["train", "--data", "mnist", "--data-dir", "/nonexistent"], "train-images-idx3-ubyte"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_valid_choices_listed_for_unknown_data(capsys):
    _, _, err = run(capsys, "train", "--data", "mnist1dd")
    assert "did you mean 'mnist1d'" in err and "valid choices:" in err and "digits" in err


def test_train_writes_the_run_directory(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run(
        capsys,
        "train",
        "--rule",
        "greedy",
        "--model",
        "mlp",
        "--blocks",
        "2",
        *SMALL,
        "--out",
        str(out_dir),
        "--json",
        str(tmp_path / "s.json"),
    )
    assert code == 0
    assert {p.name for p in out_dir.iterdir()} == {
        ".lock",  # the run-directory lock (its pid stays; the flock is released)
        "config.toml",
        "command.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoint.pt",
    }
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary == json.loads((out_dir / "summary.json").read_text())
    assert summary["rule"] == "greedy" and summary["blocks"] == 2
    assert "greedy" in out and "test acc" in out
    # The same directory again is refused rather than overwritten.
    code, _, err = run(capsys, "train", *SMALL, "--out", str(out_dir))
    assert code == 2 and "already holds a run" in err and "locallearn resume" in err


def test_config_file_and_flags(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('rule = "greedy"\nmodel = "mlp"\nblocks = 2\nepochs = 5\n')
    code, _, _ = run(capsys, "train", "--config", str(cfg), *SMALL, "--out", str(tmp_path / "r"))
    assert code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["rule"], summary["blocks"], summary["epochs"]) == ("greedy", 2, 2)


def test_compare_table_json_and_plot(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "compare",
        "--rules",
        "bp,greedy",
        "--blocks",
        "3",
        *SMALL,
        "--out",
        str(tmp_path / "c"),
        "--json",
        str(tmp_path / "c.json"),
        "--plot",
        str(tmp_path / "c.png"),
    )
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:3] == ["rule", "K", "test"] and "vs" in header and "time/epoch" in header
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["rule"] for r in rows] == ["bp", "greedy"]
    assert [r["blocks"] for r in rows] == [1, 3]
    assert rows[0]["weights_sha256"] != rows[1]["weights_sha256"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "c" / "bp" / "summary.json").exists()


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "locallearn.cli", "train", "--rule", "nosuch"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    from locallearn.rules import RULES

    assert result.stderr.strip() == (
        f"locallearn train: error: unknown rule 'nosuch'; valid choices: "
        f"{', '.join(RULES.names())}. `locallearn list rules` shows all"
    )
