"""Fuzz `train` with random flag values and random TOML values: every invocation ends with
exit 0, 2 (usage error) or 3 (diverged), and none with an exception or a traceback.

Seeded, so a failure reproduces; the failing argv (or TOML) is in the assertion message.
Runs stay tiny (digits, 50 samples, 1 epoch, an MLP) and most cases stop at validation, so
the 400 invocations take seconds.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from pathlib import Path

import pytest
import torch

from locallearn.cli import main
from locallearn.config import RunConfig

BASE = ["train", "--model", "mlp", "--data", "digits", "--train-limit", "50", "--epochs", "1"]
FLAG_INVOCATIONS = 250
TOML_INVOCATIONS = 150

INTS = ["-1", "0", "1", "2", "3", str(2**31), str(2**63), str(2**64), "x", "", "1.5", "-0", "1e3"]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e-3", "0.5", "1e6", "1e308", "x", "", "0x10"]
STRINGS = ["", "bp", "greedy", "drtp", "ff", "mlp", "cnn", "digits", "mnist1d", "cifar10", "adam"]
STRINGS += ["sgd", "cosine", "cpu", "cuda", "cuda:7", "nope", "ü", "../x", "a,b", "1,2", "tanh"]
# Flags and where their values come from; model/data stay cheap on purpose (no ResNet).
FLAGS = {
    "--rule": STRINGS,
    "--model": ["mlp", "cnn", "cnn1d", "gru", "nope", ""],
    "--data": ["digits", "nope", "cifar10", "mnist", ""],
    "--blocks": INTS,
    "--epochs": ["-1", "0", "1", "2", str(2**63), "x", "1e9"],
    "--batch-size": INTS,
    "--lr": FLOATS,
    "--optimizer": STRINGS,
    "--momentum": FLOATS,
    "--weight-decay": FLOATS,
    "--lr-schedule": STRINGS,
    "--seed": INTS,
    "--device": STRINGS,
    "--train-limit": INTS,
    "--width": INTS,
    "--depth": ["-1", "0", "1", "3", str(2**31), "x"],
    "--activation": STRINGS,
    "--head": ["auto", "linear", "mlp", "conv", "nope", ""],
    "--cuts": ["1", "2", "100", "0", "2,1", "1,2", "x", "", "-1"],
    "--threads": ["0", "1", "-3", str(2**40), "x"],
    "--out": ["", "/dev/null", "rel-run", "nested/dir/run", "a-file"],
    "--json": ["-", "", "s.json", "/dev/null", ".", "a-file/s.json"],
    "--data-dir": ["", "missing", "a-file", "."],
    "--ema-momentum": FLOATS,
    "--pyramid": FLOATS,
    "--task-loss": STRINGS,
    "--augment": None,
    "--no-augment": None,
    "--amp": None,
    "--as-sequence": None,
    "--bogus": None,
}


def _invoke(argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code if isinstance(exit.code, int) else 2
    return code, ""


def _check(argv: list[str], capsys: pytest.CaptureFixture[str], what: str) -> int:
    try:
        code, _ = _invoke(argv)
    except Exception as error:  # pragma: no cover - this is the failure being looked for
        raise AssertionError(f"{what} raised {type(error).__name__}: {error}") from error
    err = capsys.readouterr().err
    assert "Traceback" not in err, f"{what}:\n{err}"
    assert code in (0, 2, 3), f"{what} exited {code}:\n{err}"
    if code == 2:
        assert len(err.strip().splitlines()) >= 1, f"{what}: no message"
    return code


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A scratch cwd (relative --out/--json land here) with a file named a-file, no data
    location from the environment, and torch's thread count restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path / "data"))
    (tmp_path / "a-file").write_text("x")
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


def test_random_flags(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(1212)
    codes = []
    for i in range(FLAG_INVOCATIONS):
        argv = [*BASE, "--quiet"]
        for flag in rng.sample(sorted(FLAGS), rng.choice([1, 1, 2, 3])):
            values = FLAGS[flag]
            argv += [flag] if values is None else [flag, rng.choice(values)]
        if "--out" not in argv:
            argv += ["--out", f"runs/{i}"]
        codes.append(_check(argv, capsys, f"argv {argv}"))
    # the fuzz must reach training too, not only validation
    assert codes.count(0) >= 10 and codes.count(2) >= 100, codes


def _toml_value(rng: random.Random) -> str:
    """A random TOML value of any type, written as TOML."""
    kind = rng.choice(
        ["int", "bigint", "float", "special", "str", "bool", "array", "mixed", "table", "date"]
    )
    if kind == "int":
        return str(rng.choice([-1, 0, 1, 2, 3, 7]))
    if kind == "bigint":
        return str(rng.choice([2**31, 2**62, 2**63 - 1, -(2**63)]))
    if kind == "float":
        return repr(rng.choice([0.0, -1.5, 1e-3, 0.5, 1e6, 1e300]))
    if kind == "special":
        return rng.choice(["nan", "inf", "-inf", "+nan"])
    if kind == "str":
        return '"' + rng.choice([s for s in STRINGS if "\\" not in s]) + '"'
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "array":
        return "[" + ", ".join(str(rng.randint(-2, 5)) for _ in range(rng.randint(0, 3))) + "]"
    if kind == "mixed":
        return rng.choice(['[1, "a"]', "[[1], [2]]", "[1.5, 2]", "[true]", '["x"]'])
    if kind == "table":
        return rng.choice(["{ a = 1 }", "{}", '{ rule = "bp" }'])
    return rng.choice(
        [
            datetime.date(2024, 1, 2).isoformat(),
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "1979-05-27T00:32:00.999999",
        ]
    )


WELL_TYPED = [
    ("seed", "3"),
    ("width", "8"),
    ("depth", "1"),
    ("lr", "0.05"),
    ("optimizer", '"sgd"'),
    ("activation", '"tanh"'),
    ("batch_size", "7"),
    ("lr_schedule", '"cosine"'),
    ("weight_decay", "1e-4"),
    ("rule", '"greedy"'),
    ("out", '"toml-out-{i}"'),
    ("augment", "false"),
    ("threads", "1"),
]
KEYS = [f.name for f in dataclasses.fields(RunConfig)] + ["out", "bogus_key"]
FIXED = {"model": '"mlp"', "data": '"digits"', "train_limit": "50", "epochs": "1"}


def test_random_toml(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(1213)
    codes = []
    for i in range(TOML_INVOCATIONS):
        values = dict(FIXED)
        if rng.random() < 0.25:  # some well-typed values, so that runs train too
            key, value = rng.choice(WELL_TYPED)
            values[key] = value.replace("{i}", str(i))
        else:
            for key in rng.sample(KEYS, rng.choice([1, 1, 2])):
                values[key] = _toml_value(rng)
        if values.get("out", '"x"')[0] != '"':
            pass  # a non-string out is itself one of the cases
        elif "out" in values and values["out"].strip('"') in ("", "ü", "../x"):
            values["out"] = f'"toml-runs/{i}-x"'  # keep every write inside the sandbox
        text = "".join(f"{k} = {v}\n" for k, v in values.items())
        path = sandbox / f"c{i}.toml"
        path.write_text(text)
        argv = ["train", "--config", str(path), "--quiet"]
        if "out" not in values:
            argv += ["--out", f"toml-runs/{i}"]
        codes.append(_check(argv, capsys, f"config:\n{text}"))
    assert codes.count(0) >= 10 and codes.count(2) >= 50, codes
