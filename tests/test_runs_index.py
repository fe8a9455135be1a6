"""locallearn runs [DIR]: every run of a folder with the right status."""

import json

import pytest

from locallearn.cli import main
from locallearn.engine.index import is_locked, list_runs
from results_fixtures import held_lock


@pytest.fixture
def runs(result_runs):
    return result_runs


def test_every_run_has_its_status(runs, capsys):
    root, dirs = runs
    with held_lock(dirs["greedy-s1"]):
        assert is_locked(dirs["greedy-s1"])
        assert main(["runs", str(root), "--json"]) == 0
        entries = {e["run_dir"]: e for e in json.loads(capsys.readouterr().out)}
    assert not is_locked(dirs["greedy-s1"])  # the probe released nothing it did not take
    status = {name: entries[str(d)]["status"] for name, d in dirs.items()}
    assert status == {
        "bp-s0": "finished",
        "greedy-s0": "finished",
        "bp-s1": "finished",
        "greedy-s1": "running",
        "cut": "interrupted",
        "diverged": "diverged",
        "validated": "finished",
    }
    cut = entries[str(dirs["cut"])]
    assert (cut["epochs_done"], cut["epochs_planned"]) == (1, 2)
    assert cut["rule"] == "greedy" and cut["model"] == "mlp" and cut["data"] == "mnist1d"
    assert entries[str(dirs["diverged"])]["diverged"]["message"] == "loss is nan"
    # the diverged record's accuracy is not a result: the best comes from the ok epoch only
    first = json.loads((dirs["diverged"] / "metrics.jsonl").read_text().splitlines()[0])
    assert entries[str(dirs["diverged"])]["best_val_acc"] == first["val_acc"]
    assert entries[str(dirs["diverged"])]["best_test_acc"] is None  # no summary, no test
    validated = entries[str(dirs["validated"])]
    assert validated["best_val_acc"] == 0.42 and validated["seed"] == 7
    finished = entries[str(dirs["bp-s0"])]
    summary = json.loads((dirs["bp-s0"] / "summary.json").read_text())
    assert finished["best_val_acc"] == max(summary["val_acc_curve"])
    # with a validation split the test set is evaluated once: the best test is that figure
    assert finished["best_test_acc"] == summary["test_acc"]
    assert finished["started"].endswith("Z") and finished["epochs_done"] == 2


def test_table_and_filters(runs, capsys):
    root, dirs = runs
    assert main(["runs", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["started", "(UTC)", "rule"]
    assert len(table) == 2 + len(dirs)
    assert any("interrupted" in line and "1/2" in line for line in table)
    assert any("diverged" in line for line in table)

    assert [e["run_dir"] for e in list_runs(root, status="interrupted")] == [str(dirs["cut"])]
    assert {e["rule"] for e in list_runs(root, rule="bp")} == {"bp"}
    assert len(list_runs(root, rule="bp")) == 3  # two seeds and the diverged copy
    assert list_runs(root, data="mnist") == []
    assert main(["runs", str(root), "--data", "mnist"]) == 0
    assert "match the filters" in capsys.readouterr().out


def test_runs_errors(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist; give the folder that holds your runs (default: runs/)" in err
    assert main(["runs", str(tmp_path), "--status", "done"]) == 2
    err = capsys.readouterr().err
    assert "unknown --status 'done'" in err
    assert "valid choices: diverged, finished, interrupted, running" in err


def test_a_config_from_a_newer_version_is_listed_with_its_error(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.toml").write_text('rule = "greedy"\nepochs = 9\nwarp = 3\n')
    [entry] = list_runs(tmp_path)
    assert (entry["rule"], entry["model"], entry["epochs_planned"]) == ("greedy", "cnn1d", 9)
    assert entry["status"] == "interrupted" and "unknown configuration key 'warp'" in entry["error"]


def test_runs_defaults_to_the_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2
    assert "runs does not exist" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.strip() == "no runs under runs"
