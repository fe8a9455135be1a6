"""One worker of a pipelined run: its slice of the stages, fed by the worker before it.

Every worker builds the same ``Run`` (same seed, so the same initial weights), keeps only its
own stages' signals and optimizers (and, from worker 2 on, only its own blocks), and runs
each batch through ``engine.loop.train_stages`` for its stages, exactly as one process would
for those stages. Worker 1 (rank 0) reads the batches in the seeded order and sends its
output, the labels and (for rules whose ``begin_step`` prepares per-batch targets) the input
on; each later worker receives them, runs its stages and sends on. Nothing goes backwards.

At the end of each epoch every worker hands its weights, signal and optimizer state, losses
and timings to rank 0 (``gather_object``): rank 0 evaluates the whole network, writes one
checkpoint.pt in the ordinary format (so ``resume`` and ``probe`` need nothing special, and
a run may even resume on another number of workers), metrics.jsonl and, at the end,
summary.json. That is the only collective besides a barrier at the start of each epoch.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from locallearn.config import RunConfig, to_toml
from locallearn.engine.checkpoint import identity
from locallearn.engine.io import atomic_torch_save, atomic_write_json, atomic_write_text
from locallearn.engine.loop import LossTotals, batches, train_stages
from locallearn.engine.provenance import write_resumed, write_started
from locallearn.engine.run import (
    CHECKPOINT_VERSION,
    EpochCallback,
    Run,
    _fmt,
    _held_out,
    _progress_bar,
    check_fresh_run_dir,
    epoch_generator,
    lr_factor,
    make_optimizer,
)
from locallearn.errors import Diverged, UsageError
from locallearn.measure import SavedTensorMeter
from locallearn.measure.memory import RSSWindow
from locallearn.parallel import transport
from locallearn.parallel.placement import balance, check_rule, measure_stages, parse_placement
from locallearn.rules import Rule

DEFAULT_TIMEOUT = 30.0
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # rank 0 evaluates while the others wait
SLOTS = 4  # messages a sender may be ahead of its receiver
TRANSPORTS = ("auto", "shm", "dist")


@dataclass
class Job:
    """This process's place in the job, from torchrun's environment variables."""

    rank: int
    world: int
    local_rank: int
    local_world: int

    @classmethod
    def from_env(cls) -> Job:
        world = int(os.environ["WORLD_SIZE"])
        return cls(
            rank=int(os.environ["RANK"]),
            world=world,
            local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        )


def in_job() -> bool:
    """Whether this process was started as one worker of a job (torchrun, or --workers)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def job_rank() -> int:
    return int(os.environ.get("RANK", "0")) if in_job() else 0


def needs_input(rule: Rule) -> bool:
    """A rule whose ``begin_step`` prepares more than (x, y) (InfoPro's raw image, FF's
    labelled data, layer-wise label projections) needs the batch itself on every worker."""
    return type(rule).begin_step is not Rule.begin_step


def job_config(cfg: RunConfig, job: Job) -> RunConfig:
    if cfg.workers not in (None, job.world):
        raise UsageError(
            f"--workers {cfg.workers} disagrees with this job's {job.world} processes "
            f"(WORLD_SIZE); drop --workers under torchrun or make them equal"
        )
    if (cfg.transport or "auto") not in TRANSPORTS:
        from locallearn.errors import unknown_choice

        raise unknown_choice("--transport", cfg.transport, TRANSPORTS)
    cfg = cfg.replace(workers=job.world)
    if cfg.device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < job.local_world:
            raise UsageError(
                f"{job.local_world} workers on this host need one GPU each (NCCL), but "
                f"{count} are visible; use --workers {count} or fewer, or --device cpu (gloo)"
            )
    return cfg


class PipelineRun:
    """The worker side of ``Run.fit`` for a job of ``WORLD_SIZE`` workers."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        self.job = job = Job.from_env()
        cfg = job_config(cfg, job)
        if cfg.device.startswith("cuda"):
            cfg = cfg.replace(device=f"cuda:{job.local_rank}")
            torch.cuda.set_device(job.local_rank)
        backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        shared: list[Any] = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)  # rank 0's default name (a time stamp) wins
        run_dir = Path(shared[0])
        if not resume:
            check_fresh_run_dir(run_dir)
        self.run = Run(cfg, run_dir)
        cfg = self.run.cfg  # with the rule's recipe and the thread count resolved
        self.cfg, self.rule, self.run_dir = cfg, self.run.rule, run_dir
        check_rule(cfg.rule, self.rule, job.world, cfg.rule_options())
        if cfg.placement is not None:
            parse_placement(cfg.placement, job.world, self.rule.blocks)
        self._lock()
        if resume and (run_dir / "checkpoint.pt").exists():
            self.run.load_checkpoint()
        self.timeout = cfg.worker_timeout or DEFAULT_TIMEOUT
        self.progress = progress and job.rank == 0
        self.on_epoch = on_epoch if job.rank == 0 else None
        self.peers: list[Any] = [None] * job.world
        dist.all_gather_object(self.peers, (socket.gethostname(), os.getpid()))
        self.stage_seconds: list[float] | None = None
        self.message_bytes: list[int] | None = None
        self.placement = self._place()
        self.mine = self.placement[job.rank]
        self._keep_only_mine()
        self.transport = self._transport_kind()
        self.receiver, self.sender = self._open_links()

    # -- set-up ---------------------------------------------------------------------------
    def _lock(self) -> None:
        """Worker 1 is the run directory's writer: it holds the lock (engine/lock.py) for
        the whole run, taken before any worker reads the checkpoint."""
        refused: list[Any] = [None]
        if self.job.rank == 0:
            assert self.run.lock is not None
            try:
                self.run.lock.acquire()
            except UsageError as err:
                refused[0] = str(err)
        dist.broadcast_object_list(refused, src=0)
        if refused[0] is not None:
            raise UsageError(refused[0])

    def _place(self) -> list[range]:
        cfg, rule, world = self.cfg, self.rule, self.job.world
        if cfg.placement is not None:
            return parse_placement(cfg.placement, world, rule.blocks)
        if world == rule.blocks:
            return [range(i, i + 1) for i in range(world)]
        shared: list[Any] = [None]
        if self.job.rank == 0:
            n = min(cfg.batch_size, self.run._x_train.shape[0])
            index = torch.arange(n, device=self.run._x_train.device)
            x = self.run._x_train.index_select(0, index)
            y = self.run._y_train.index_select(0, index)
            seconds, nbytes = measure_stages(rule, lambda p: make_optimizer(cfg, p), x, y)
            shared[0] = (seconds, nbytes)
        dist.broadcast_object_list(shared, src=0)
        self.stage_seconds, self.message_bytes = shared[0]
        return balance(self.stage_seconds, world)

    def _keep_only_mine(self) -> None:
        """Drop what other workers own: their optimizers everywhere, their blocks and
        signals from worker 2 on. Worker 1 keeps a copy of every stage's weights and signal
        state (refreshed each epoch), to evaluate the network and write the checkpoint."""
        meta = torch.device("meta")
        for i, stage in enumerate(self.rule.stages):
            if i in self.mine:
                continue
            self.run.optimizers[i] = None  # type: ignore[call-overload]
            if self.job.rank != 0:
                stage.signal.to(meta)
                stage.block.to(meta)

    def _transport_kind(self) -> str:
        kind = self.cfg.transport or "auto"
        same_host = len({host for host, _ in self.peers}) == 1
        cpu = not self.cfg.device.startswith("cuda")
        if kind == "shm" and not (same_host and cpu):
            raise UsageError(
                "--transport shm needs every worker on one host and --device cpu; use "
                "--transport dist (or auto)"
            )
        if kind == "auto":
            kind = "shm" if same_host and cpu else "dist"
        return kind

    def _open_links(self) -> tuple[Any, Any]:
        rank, world = self.job.rank, self.job.world
        device = self.run.device
        name = lambda r: f"worker {r + 1}"  # noqa: E731
        if self.transport == "dist":
            receiver = transport.DistReceiver(rank - 1, device, SLOTS, self.timeout)
            sender = transport.DistSender(rank + 1, device, SLOTS, self.timeout)
            return (receiver if rank > 0 else None), (sender if rank < world - 1 else None)
        shared: list[Any] = [uuid.uuid4().hex[:12] if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        base = transport.shm_dir() / f"locallearn-{os.environ.get('LOCALLEARN_JOB', shared[0])}"
        fifo = lambda r: Path(f"{base}-{r}.fifo")  # noqa: E731  link r -> r + 1
        ring = lambda r: Path(f"{base}-{r}.ring")  # noqa: E731
        receiver = sender = None
        if rank > 0:
            transport.make_fifo(fifo(rank - 1))
            receiver = transport.ShmReceiver(
                fifo(rank - 1),
                ring(rank - 1),
                name(rank - 1),
                self.peers[rank - 1][1],
                self.timeout,
            )
        dist.barrier()
        if rank < world - 1:
            sender = transport.ShmSender(
                fifo(rank), ring(rank), name(rank + 1), self.peers[rank + 1][1], SLOTS, self.timeout
            )
        dist.barrier()
        if rank > 0:
            os.unlink(fifo(rank - 1))  # both ends are open: the name is no longer needed
        return receiver, sender

    def close(self, clean: bool = True) -> None:
        """Close the links; after a clean finish also leave the process group (after a
        failure that could wait for peers that are gone: the process exits anyway)."""
        for end in (self.receiver, self.sender):
            if end is not None:
                end.close()
        if self.run.lock is not None:
            self.run.lock.release()
        if clean and dist.is_initialized():
            dist.destroy_process_group()

    # -- training -------------------------------------------------------------------------
    def _owned_state(self) -> dict[str, Any]:
        """This worker's part of a checkpoint: its blocks' weights, its signals' state and
        its optimizers' state (keys as in the whole network's state dicts)."""
        rule = self.rule
        mine_ids = set()
        for i in self.mine:
            block = rule.stages[i].block
            mine_ids |= {id(t) for t in [*block.parameters(), *block.buffers()]}
        network = {
            k: v.detach().cpu()
            for k, v in rule.network.state_dict(keep_vars=True).items()
            if id(v) in mine_ids
        }
        signals = {
            k: v.cpu()
            for k, v in rule.signal_modules().state_dict().items()
            if int(k.split(".", 1)[0]) in self.mine
        }
        optimizers = {i: self.run.optimizers[i].state_dict() for i in self.mine}
        return {"network": network, "signals": signals, "optimizers": optimizers}

    def fit(self) -> dict[str, Any] | None:
        """Train the remaining epochs; rank 0 returns the summary, the others None."""
        run, cfg, rule, job = self.run, self.cfg, self.rule, self.job
        lead = job.rank == 0
        run._rss = RSSWindow()
        self.diverged: tuple[str, int, int, float] | None = None
        if lead and run.state.epoch == 0:
            atomic_write_text(self.run_dir / "config.toml", to_toml(cfg))
            write_started(self.run_dir, str(run.device))
        elif lead:
            write_resumed(self.run_dir, str(run.device))
        if lead:
            atomic_write_json(
                self.run_dir / "workers.json",
                [
                    {"worker": r + 1, "host": h, "pid": p, "stages": list(self.placement[r])}
                    for r, (h, p) in enumerate(self.peers)
                ],
            )
        steps = -(-run._x_train.shape[0] // cfg.batch_size)
        if isinstance(self.receiver, transport.DistReceiver):
            self.receiver.expect(steps * (cfg.epochs - run.state.epoch))
        bar = _progress_bar(
            self.progress,
            total=cfg.epochs * steps,
            initial=run.state.epoch * steps,
            desc=f"{cfg.rule} x{job.world}",
        )
        extra = needs_input(rule)
        autocast = run._autocast()
        frozen = [*rule.network.parameters(), *rule.network.buffers()]
        frozen += [*rule.signal_modules().parameters(), *rule.signal_modules().buffers()]
        optimizers = run.optimizers
        for epoch in range(run.state.epoch, cfg.epochs):
            rule.train(True)
            rule.begin_epoch(epoch, cfg.epochs)
            for i in self.mine:
                for group in optimizers[i].param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
            meter = SavedTensorMeter(exclude=frozen)
            data = None
            if lead:
                data = run._augmented(
                    batches(
                        run._x_train, run._y_train, cfg.batch_size, epoch_generator(cfg.seed, epoch)
                    ),
                    epoch,
                )
            busy = 0.0
            sums = LossTotals()
            samples = 0
            for counter in (self.receiver, self.sender):
                if counter is not None:
                    counter.seconds, counter.bytes, counter.messages = 0.0, 0, 0
            dist.barrier()
            start = time.perf_counter()
            for step in range(steps):
                if data is not None:
                    x, y = next(data)
                    begin = time.perf_counter()
                    h, target = rule.begin_step(x, y)
                else:
                    message = self.receiver.recv()
                    begin = time.perf_counter()
                    if step == 0:  # own storages: the meter counts a view's whole buffer
                        message = [t.clone() for t in message]
                    h, y = message[0], message[1]
                    x = message[2] if extra else None
                    target = rule.begin_step(x, y)[1] if extra else y
                metered = meter if step == 0 else None
                with metered if metered is not None else nullcontext():
                    losses, out = train_stages(
                        rule, optimizers, h, target, self.mine, metered, autocast
                    )
                busy += time.perf_counter() - begin
                if self.sender is not None:
                    self.sender.send([out, y, x] if extra else [out, y])
                if self.receiver is not None:
                    self.receiver.release()
                rows = y.shape[0]
                sums.add(losses, rows)
                samples += rows
                if bar:
                    bar.update()
            if self.sender is not None:
                self.sender.flush()
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            seconds = time.perf_counter() - start
            result = sums.result()
            assert result is not None
            totals, counts = result
            report = {
                "totals": totals.tolist(),
                "counts": counts.tolist(),
                "samples": samples,
                "seconds": seconds,
                "busy_seconds": busy,
                "wait_seconds": self.receiver.seconds if self.receiver is not None else 0.0,
                "send_seconds": self.sender.seconds if self.sender is not None else 0.0,
                "bytes_sent": self.sender.bytes if self.sender is not None else 0,
                "segments": meter.segments,
                "peak": meter.peak,
                "state": self._owned_state(),
            }
            reports: list[Any] = [None] * job.world if lead else []
            dist.gather_object(report, reports if lead else None, dst=0)
            if lead:
                record = self._end_epoch(epoch, reports)
                if record and bar:
                    loss = _fmt(record["train_loss"])
                    bar.set_postfix(epoch=epoch + 1, loss=loss, **_held_out(record))
                if record and self.on_epoch is not None:
                    self.on_epoch(record, cfg)
            verdict: list[Any] = [self.diverged if lead else None]
            dist.broadcast_object_list(verdict, src=0)  # every worker stops on a divergence
            if verdict[0] is not None:
                message, at, block, lr = verdict[0]
                raise Diverged(message, epoch=at, block=block, lr=lr)
        if bar:
            bar.close()
        dist.barrier()
        if not lead:
            return None
        summary = self.summary()
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def _end_epoch(self, epoch: int, reports: list[dict[str, Any]]) -> dict[str, Any]:
        run, rule, state = self.run, self.rule, self.run.state
        network: dict[str, Any] = {}
        signals: dict[str, Any] = {}
        optimizers: dict[int, Any] = {}
        for report in reports:
            network.update(report["state"]["network"])
            signals.update(report["state"]["signals"])
            optimizers.update(report["state"]["optimizers"])
        missing = set(rule.network.state_dict()) - set(network)
        for key in missing:  # not in any block (none today): rank 0's copy is current
            network[key] = rule.network.state_dict()[key]
        rule.network.load_state_dict(network)
        rule.signal_modules().load_state_dict(signals)
        losses: list[float | None] = []
        for report in reports:
            for total, count in zip(report["totals"], report["counts"]):
                losses.append(total / max(count, 1) if count > 0 else None)
        seconds = max(r["seconds"] for r in reports)
        workers = [
            {
                "worker": w + 1,
                "stages": list(self.placement[w]),
                "busy_seconds": r["busy_seconds"],
                "wait_seconds": r["wait_seconds"],
                "send_seconds": r["send_seconds"],
                "bytes_sent": r["bytes_sent"],
                "idle_fraction": 1.0 - r["busy_seconds"] / seconds if seconds else 0.0,
            }
            for w, r in enumerate(reports)
        ]
        peak = max(r["peak"] for r in reports)
        segments = [s for r in reports for s in r["segments"]]
        self.diverged = None
        try:
            run._check_divergence(epoch, losses)
        except Diverged as err:
            self.diverged = (str(err), err.epoch, err.block, err.lr)
            return {}
        record = {
            "epoch": epoch + 1,
            "train_loss": losses[-1],
            "block_losses": losses,
            **run.evaluator.after_epoch(epoch),
            "epoch_seconds": seconds,
            "act_bytes_peak": peak,
            "pipeline_efficiency": sum(r["busy_seconds"] for r in reports)
            / (len(reports) * seconds)
            if seconds
            else 0.0,
            "workers": workers,
        }
        state.epoch = epoch + 1
        state.history.append(record)
        state.act_bytes_peak = max(state.act_bytes_peak, peak)
        previous = state.block_act_bytes or [0] * len(segments)
        state.block_act_bytes = [max(a, b) for a, b in zip(previous, segments)]
        state.train_seconds += seconds
        state.samples += reports[0]["samples"]
        rng = {"torch": torch.get_rng_state()}
        if run.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(run.device)
        # The ordinary checkpoint (engine/run.py): resume and probe read it as any other.
        ckpt = {
            "version": CHECKPOINT_VERSION,
            "identity": identity(self.cfg),
            "network": {k: v.cpu() for k, v in rule.network.state_dict().items()},
            "rule": rule.state_dict(),
            "optimizers": [optimizers[i] for i in range(rule.blocks)],
            "rng": rng,
            "state": asdict(state),
        }
        if run.evaluator.best is not None:
            ckpt["best"] = run.evaluator.best
        atomic_torch_save(self.run_dir / "checkpoint.pt", ckpt)
        run._write_metrics()
        return record

    def summary(self) -> dict[str, Any]:
        out = self.run.summary()
        history = self.run.state.history
        total = sum(r["epoch_seconds"] for r in history) or 1.0
        workers = []
        for w in range(self.job.world):
            rows = [r["workers"][w] for r in history if "workers" in r]
            sums = {
                key: sum(row[key] for row in rows)
                for key in ("busy_seconds", "wait_seconds", "send_seconds", "bytes_sent")
            }
            sums["idle_fraction"] = 1.0 - sums["busy_seconds"] / total
            workers.append({"worker": w + 1, "stages": list(self.placement[w]), **sums})
        out.update(
            workers=self.job.world,
            placement=[list(r) for r in self.placement],
            transport=self.transport,
            worker_stats=workers,
            pipeline_efficiency=sum(w["busy_seconds"] for w in workers) / (len(workers) * total),
            stage_seconds=self.stage_seconds,
        )
        return out


def run_worker(
    cfg: RunConfig,
    run_dir: Path | None,
    *,
    resume: bool = False,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any] | None:
    """Join the job in the environment as one worker; rank 0 returns the run's summary."""
    if run_dir is None:
        raise UsageError("a run on workers needs a run directory (--out)")
    worker = PipelineRun(cfg, run_dir, resume=resume, progress=progress, on_epoch=on_epoch)
    try:
        summary = worker.fit()
    except BaseException:
        worker.close(clean=False)
        raise
    worker.close()
    return summary
