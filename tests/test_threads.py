"""The default thread count: one thread for small models, recorded in config.toml."""

from __future__ import annotations

import os
import subprocess
import sys

import locallearn
from locallearn.config import load_config_file
from locallearn.engine import threads
from locallearn.models import build_model


def test_small_models_default_to_one_thread_and_large_ones_keep_torchs(monkeypatch):
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 2)
    small = build_model("cnn1d", (1, 40), 10)
    large = build_model("mlp", (1, 28, 28), 10, depth=3, width=1000)
    assert threads.forward_flops(small, (1, 40)) < threads.SMALL_MODEL_FLOPS
    assert threads.default_threads(small, (1, 40)) == 1
    assert threads.default_threads(large, (1, 28, 28)) == 2
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 1)
    assert threads.default_threads(large, (1, 28, 28)) == 1


def test_run_records_the_chosen_threads_and_a_flag_wins(tmp_path):
    s = locallearn.train(
        rule="greedy", model="cnn1d", data="mnist1d", train_limit=200, epochs=1, out=tmp_path / "a"
    )
    assert s["threads"] == 1
    assert load_config_file(tmp_path / "a" / "config.toml").threads == 1
    s = locallearn.train(
        rule="bp", model="cnn1d", data="mnist1d", train_limit=200, epochs=1, threads=2
    )
    assert s["threads"] == 2


def test_importing_locallearn_first_makes_openmp_threads_sleep():
    code = "import os, locallearn, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own setting is kept
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip() == "ACTIVE"
