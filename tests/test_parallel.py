"""Blocks on workers (parallel/): slices of the one step, placement, transport, simulation,
refusals, and -- in a few launched jobs, each bounded by a timeout -- bit-identical weights
on W workers, torchrun, faults and exact resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from locallearn.cli import main
from locallearn.config import RunConfig
from locallearn.engine.loop import train_stages, train_step
from locallearn.engine.run import Run
from locallearn.errors import UsageError
from locallearn.measure import weights_sha256
from locallearn.parallel import balance, parse_placement, simulate, transport, worker_support
from locallearn.rules import RULES

PYTHON = sys.executable
JOB_TIMEOUT = 240  # seconds: a hung job fails the test instead of blocking the suite
SMALL = ["--data", "digits", "--seed", "0", "--threads", "1", "--quiet"]
GREEDY = ["--rule", "greedy", "--model", "mlp", "--depth", "3", "--width", "64", "--blocks", "4"]
INFOPRO = ["--rule", "infopro", "--model", "cnn", "--depth", "4", "--width", "8", "--blocks", "3"]
FF = ["--rule", "ff", "--model", "mlp", "--depth", "3", "--width", "64"]


# -- the engine: a slice of the stages is the same step ------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        dict(rule="greedy", model="mlp", depth=3, width=32, blocks=4),
        dict(rule="infopro", model="cnn", depth=4, width=8, blocks=3),
        dict(rule="ff", model="mlp", depth=3, width=32),
    ],
    ids=["greedy", "infopro", "ff"],
)
def test_slices_back_to_back_equal_the_full_step(options, digits_small):
    cfg = RunConfig(data="digits", **options)
    whole, sliced = Run(cfg, dataset=digits_small), Run(cfg, dataset=digits_small)
    k = whole.rule.blocks
    x, y = digits_small.x_train[:32], digits_small.y_train[:32]
    for _ in range(2):
        torch.manual_seed(1)
        expected = train_step(whole.rule, whole.optimizers, x, y)
        torch.manual_seed(1)
        h, target = sliced.rule.begin_step(x, y)
        first, h = train_stages(sliced.rule, sliced.optimizers, h, target, range(0, 1))
        rest, _ = train_stages(sliced.rule, sliced.optimizers, h.detach(), target, range(1, k))
        assert torch.equal(torch.stack(expected), torch.stack(first + rest))
    assert weights_sha256(whole.rule.network) == weights_sha256(sliced.rule.network)


# -- placement ---------------------------------------------------------------------------------
def test_balance_minimises_the_slowest_worker():
    assert balance([1.0, 1.0, 1.0, 1.0], 2) == [range(0, 2), range(2, 4)]
    assert balance([3.0, 1.0, 1.0, 1.0], 2) == [range(0, 1), range(1, 4)]
    assert balance([1.0, 1.0, 1.0, 5.0], 2) == [range(0, 3), range(3, 4)]
    assert balance([2.0, 1.0, 1.0, 2.0], 3) == [range(0, 1), range(1, 3), range(3, 4)]
    assert balance([1.0, 2.0], 2) == [range(0, 1), range(1, 2)]


def test_placement_is_parsed_and_checked():
    assert parse_placement([2, 3], 3, 4) == [range(0, 2), range(2, 3), range(3, 4)]
    with pytest.raises(UsageError, match=r"2 number\(s\) for --workers 3, got 1 \(2\); e.g. "):
        parse_placement([2], 3, 4)
    with pytest.raises(UsageError, match=r"must increase strictly within 1..3 .*this run has 4"):
        parse_placement([3, 2], 3, 4)
    with pytest.raises(UsageError, match="must increase strictly"):
        parse_placement([0], 2, 4)
    with pytest.raises(UsageError, match="must increase strictly"):
        parse_placement([4], 2, 4)


def test_every_rule_says_whether_it_runs_on_workers():
    rows = {name: (ok, why) for name, ok, why in worker_support()}
    assert set(rows) == set(RULES.names())  # a new rule must be classified
    assert rows["greedy"][0] and rows["infopro"][0] and rows["ff"][0]
    for refused in ("man", "dfa", "bp", "fa"):
        assert not rows[refused][0] and rows[refused][1]


# -- refusals: exit 2 and a message saying what to change, before any process starts -----
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--rule", "man", "--model", "mlp", "--blocks", "2"],
            "rule 'man' cannot run on workers: "
            "block i's signal holds an EMA copy of block i+1's first unit",
        ),
        (
            ["--rule", "dfa", "--model", "mlp", "--depth", "2"],
            "rule 'dfa' cannot run on workers: "
            "every step begins with a forward pass through all layers",
        ),
        ([*FF, "--ff-readout", "linear"], "--ff-readout linear cannot run on workers"),
        (
            ["--rule", "bp", "--model", "mlp"],
            "--workers 2 needs at least 2 stages, but this run "
            "has 1 (rule 'bp' trains the whole network as one block); use --workers 1 or fewer",
        ),
        ([*GREEDY, "--workers", "5"], "--workers 5 needs at least 5 stages, but this run has 4"),
        ([*GREEDY, "--placement", "1,2"], "--placement gives the first stage of workers 2..2"),
        ([*GREEDY, "--placement", "4"], "must increase strictly within 1..3"),
        ([*GREEDY, "--device", "cuda"], "2 workers on this host need one GPU each (NCCL)"),
        ([*GREEDY, "--transport", "tcp"], "unknown --transport 'tcp'"),
    ],
    ids=[
        "man",
        "dfa",
        "ff-linear",
        "bp",
        "W>K",
        "placement-count",
        "placement-range",
        "nccl-gpus",
        "transport",
    ],
)
def test_refused_runs_exit_2_with_a_message(args, message, tmp_path, capsys):
    if "--device" in args and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    workers = [] if "--workers" in args else ["--workers", "2"]
    code = main(["train", *args, *SMALL, *workers, "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_port_in_use_is_refused(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(
            [
                "train",
                *GREEDY,
                *SMALL,
                "--workers",
                "2",
                "--port",
                str(port),
                "--out",
                str(tmp_path / "r"),
            ]
        )
    err = capsys.readouterr().err
    assert code == 2
    assert f"--port {port} cannot be used on 127.0.0.1" in err and "pass another --port" in err


# -- transport ---------------------------------------------------------------------------------
def test_messages_round_trip_through_the_shared_memory_ring(tmp_path):
    fifo, ring = tmp_path / "l.fifo", tmp_path / "l.ring"
    transport.make_fifo(fifo)
    receiver = transport.ShmReceiver(fifo, ring, "worker 1", os.getpid(), timeout=5)
    sender = transport.ShmSender(fifo, ring, "worker 2", os.getpid(), slots=2, timeout=5)
    sent = []
    for rows in (5, 5, 5, 3):  # a smaller last batch; the ring wraps around twice
        msg = [torch.randn(rows, 7), torch.randint(0, 9, (rows,)), torch.rand(rows, 1, 2, 2) > 0.5]
        sent.append(msg)
    sender.send(sent[0])
    sender.send(sent[1])
    for i, msg in enumerate(sent):
        got = receiver.recv()
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(msg, got))
        receiver.release()
        if i + 2 < len(sent):
            sender.send(sent[i + 2])
    assert sender.bytes == sum(transport.message_bytes(m) for m in sent)
    assert not ring.exists()  # unlinked once mapped: nothing is left behind
    sender.close()
    with pytest.raises(transport.PeerLost, match="worker 1 closed its channel"):
        receiver.recv()
    receiver.close()


def test_a_message_larger_than_the_first_is_an_error():
    buffer = torch.empty(transport.message_bytes([torch.zeros(4)]), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="does not fit"):
        transport.pack(buffer, [torch.zeros(100)])


# -- simulation --------------------------------------------------------------------------------
def test_simulation_of_a_pipeline():
    free = dict(steps=100, batch_size=10, bandwidth=1e12, latency=0.0)
    one = simulate([1.0, 1.0], [8, 8], 1, **free)
    assert one["speedup"] == pytest.approx(1.0) and one["idle_fraction"] == [0.0]
    two = simulate([1.0, 1.0], [8, 8], 2, **free)
    assert two["speedup"] == pytest.approx(200 / 101)  # one batch of fill
    assert two["idle_fraction"][1] == pytest.approx(1 / 101)
    # A link slower than the compute sets the period.
    slow = simulate([1.0, 1.0], [8, 8], 2, steps=100, batch_size=10, bandwidth=4.0, latency=0.0)
    assert slow["period_seconds"] == pytest.approx(2.0)
    assert slow["seconds"] == pytest.approx(1 + 100 * 2.0, rel=0.02)
    uneven = simulate([3.0, 1.0, 1.0, 1.0], [8] * 4, 2, **free)
    assert uneven["placement"] == [[0, 1], [1, 4]]


# -- launched jobs: exactness, torchrun, faults ------------------------------------------------
def _sha(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["weights_sha256"]


def _one_process(args: list[str], out: Path) -> str:
    assert main(["train", *args, *SMALL, "--out", str(out)]) == 0
    return _sha(out)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _job(argv: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [PYTHON, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(proc: subprocess.Popen, timeout: float = JOB_TIMEOUT) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the job did not finish within {timeout} s")
    return proc.returncode, err


@pytest.mark.parametrize(
    "args, workers",
    [
        (GREEDY + ["--epochs", "2"], 3),
        (INFOPRO + ["--epochs", "2"], 2),
        (FF + ["--epochs", "2", "--transport", "dist"], 2),  # the gloo path, as across hosts
    ],
    ids=["greedy-W3", "infopro-W2", "ff-W2-gloo"],
)
def test_workers_end_with_the_weights_of_one_process(args, workers, tmp_path):
    expected = _one_process(args, tmp_path / "one")
    out = tmp_path / "many"
    assert main(["train", *args, *SMALL, "--workers", str(workers), "--out", str(out)]) == 0
    assert _sha(out) == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == workers and len(summary["worker_stats"]) == workers
    assert summary["transport"] == ("dist" if "dist" in args else "shm")
    stats = summary["worker_stats"]
    assert all(s["busy_seconds"] > 0 for s in stats) and stats[0]["bytes_sent"] > 0
    assert 0 < summary["pipeline_efficiency"] <= 1
    # The run directory of any run, plus the list of workers.
    names = {p.name for p in out.iterdir()}
    assert names == {p.name for p in (tmp_path / "one").iterdir()} | {"workers.json"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and len(records[0]["workers"]) == workers
    assert "workers = " in (out / "config.toml").read_text()


def test_torchrun_launch_equals_the_workers_launch(tmp_path):
    args = GREEDY + ["--epochs", "2"]
    expected = _one_process(args, tmp_path / "one")
    out = tmp_path / "torchrun"
    proc = _job(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "locallearn",
            "train",
            *args,
            *SMALL,
            "--out",
            str(out),
        ]
    )
    code, err = _finish(proc)
    assert code == 0, err
    assert _sha(out) == expected
    assert json.loads((out / "summary.json").read_text())["workers"] == 2


def _wait_for(
    path: Path, proc: subprocess.Popen, newer_than: float = 0.0, timeout: float = JOB_TIMEOUT
) -> None:
    """Wait until ``path`` exists and was written after ``newer_than`` (an mtime)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_mtime_ns <= newer_than:
        if proc.poll() is not None:
            pytest.fail(f"the job ended before {path.name} appeared: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def test_ctrl_c_and_a_killed_worker_stop_the_job_and_resume_is_exact(tmp_path, capsys):
    args = GREEDY + ["--epochs", "12", "--batch-size", "32"]
    expected = _one_process(args, tmp_path / "one")
    out = tmp_path / "many"
    launcher = ["-m", "locallearn", "train", *args, *SMALL, "--workers", "2", "--out", str(out)]

    # Ctrl-C at a terminal (SIGINT to the whole process group) stops every worker cleanly.
    proc = _job(launcher, start_new_session=True)
    _wait_for(out / "checkpoint.pt", proc)
    pids = [w["pid"] for w in json.loads((out / "workers.json").read_text())]
    os.killpg(proc.pid, signal.SIGINT)
    code, err = _finish(proc, 60)
    assert code == 130, err
    assert "interrupted; all 2 workers stopped" in err and "Traceback" not in err
    assert all(_gone(pid) for pid in pids)
    assert not (out / "summary.json").exists()

    # SIGKILL of worker 2 mid-run: the launcher stops worker 1 and names worker 2.
    written = (out / "checkpoint.pt").stat().st_mtime_ns
    proc = _job(["-m", "locallearn", "resume", str(out), "--quiet"])
    _wait_for(out / "checkpoint.pt", proc, newer_than=written)
    time.sleep(0.2)
    pids = [w["pid"] for w in json.loads((out / "workers.json").read_text())]
    start = time.monotonic()
    os.kill(pids[1], signal.SIGKILL)
    code, err = _finish(proc, 60)
    assert time.monotonic() - start < 30
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    assert "worker 2 of 2" in lines[0] and "killed by SIGKILL" in lines[0]
    assert all(_gone(pid) for pid in pids)
    assert not (out / "summary.json").exists()

    # resume needs no flags and reaches the uninterrupted weights.
    capsys.readouterr()
    assert main(["resume", str(out), "--quiet"]) == 0
    assert _sha(out) == expected
    assert not list(Path(transport.shm_dir()).glob("locallearn-*"))


def test_workers_options_belong_to_train_and_resume_only(capsys):
    import locallearn

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--rules", "greedy", "--workers", "2"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --workers 2" in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"train\(workers=2\) runs in one process; start a run"):
        locallearn.train("greedy", "mlp", "digits", workers=2)


def test_measure_predicts_a_run_on_workers(tmp_path, capsys):
    out = tmp_path / "p.json"
    args = [
        "measure",
        "--rule",
        "greedy",
        "--model",
        "mlp",
        "--depth",
        "3",
        "--width",
        "32",
        "--input-shape",
        "1x8x8",
        "--blocks",
        "4",
        "--threads",
        "1",
        "--json",
        str(out),
    ]
    assert main([*args, "--workers", "2", "--bandwidth", "1e6", "--latency", "0.001"]) == 0
    (result,) = json.loads(out.read_text())
    assert result["workers"] == 2 and len(result["stage_seconds"]) == 4
    assert result["message_bytes"][0] == 100 * 32 * 4 + 100 * 8  # (100, 32) float32, labels
    assert 0 < result["efficiency"] <= 1 and len(result["idle_fraction"]) == 2
    assert "link: 1e+06 B/s, latency 0.001 s" in capsys.readouterr().out
    assert main([*args, "--workers", "2", "--placement", "3"]) == 0
    assert main([*args, "--bandwidth", "1e9"]) == 2
    assert "predict a run on --workers W" in capsys.readouterr().err
    assert main([*args, "--workers", "5"]) == 2
    assert "--workers 5 needs at least 5 stages" in capsys.readouterr().err


def test_gloo_connection_errors_count_as_a_lost_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    # A surviving worker whose neighbour was killed mid-collective sees this from gloo; it
    # must stop quietly (exit 4) so the launcher names the dead worker, with no traceback.
    from locallearn import cli

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
        "[127.0.0.1]:39119: Connection reset by peer."
    )
    assert cli._peer_failure(gloo)
    assert not cli._peer_failure(RuntimeError("shape mismatch"))
