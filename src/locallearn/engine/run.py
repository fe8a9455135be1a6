"""One run: build everything from a RunConfig, train epoch by epoch, checkpoint, summarise.

Determinism: the model is initialised right after ``torch.manual_seed(seed)``, the data
order of epoch e comes from a generator seeded with (seed, e), and the checkpoint holds the
global RNG state, so a resumed run on CPU ends with bit-identical weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locallearn import __version__
from locallearn.config import RunConfig, load_config_file, to_toml, validate
from locallearn.data import DATASETS, Dataset, load_dataset
from locallearn.data.graph import GraphDataset
from locallearn.data.subset import split_validation
from locallearn.engine.checkpoint import check_belongs, identity, mismatch, read_checkpoint
from locallearn.engine.divergence import diverged_stage
from locallearn.engine.evaluation import Evaluator, resolve_run_config
from locallearn.engine.io import atomic_torch_save, atomic_write_json, atomic_write_text
from locallearn.engine.layerwise import LayerEarlyStopping
from locallearn.engine.limits import check_model_fits
from locallearn.engine.lock import RunDirLock
from locallearn.engine.logs import EpochLogs, parse_log_kinds
from locallearn.engine.loop import batches, train_epoch
from locallearn.engine.provenance import write_resumed, write_started
from locallearn.engine.threads import default_threads
from locallearn.errors import Diverged, UsageError
from locallearn.measure import SavedTensorMeter, count_params, peak_rss_bytes, weights_sha256
from locallearn.measure.memory import RSSWindow
from locallearn.models import MODELS, build_model
from locallearn.recipe import resolve as resolve_recipe
from locallearn.recipe import settings_used
from locallearn.rules import RULES, Rule, build_rule

CHECKPOINT_VERSION = 1
AUGMENT_STREAM = 7_919_000  # offsets the augmentation generator's seed from the data order's

# Called after each epoch with (epoch record, config); the CLI uses it for progress lines.
EpochCallback = Callable[[dict[str, Any], RunConfig], None]


@dataclass
class TrainState:
    """What the loop accumulates across epochs; checkpointed with the weights."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    act_bytes_peak: int = 0
    block_act_bytes: list[int] = field(default_factory=list)
    train_seconds: float = 0.0
    samples: int = 0
    eval_seconds: float = 0.0
    best_epoch: int = 0  # --keep-best: the epoch of the best validation accuracy so far
    best_val_acc: float | None = None


def load_configured_dataset(cfg: RunConfig) -> Dataset:
    """The dataset a config names, with its options, subset and sequence form applied."""
    return load_dataset(
        cfg.data,
        cfg.data_dir,
        cfg.train_limit,
        as_sequence=cfg.as_sequence,
        **cfg.data_options(),
    )


def load_run_config(path: Path) -> RunConfig:
    """A run directory's config.toml. One written before --val-split, recipes and recorded
    threads existed is read as that run trained: on the whole training set, with its model as
    written, on torch's default thread count."""
    cfg = load_config_file(path)
    text = path.read_text()
    if "val_split" not in text:
        cfg = cfg.replace(val_split=0.0)
    if "recipe_from" not in text:  # written before recipes: no recipe may change the model
        cfg = cfg.replace(recipe_from="configuration from before recipes")
    if cfg.threads is None:  # before default threads were recorded: torch's default was used
        from locallearn.engine.threads import TORCH_DEFAULT_THREADS

        cfg = cfg.replace(threads=TORCH_DEFAULT_THREADS)
    return cfg


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name} was asked for, but this PyTorch build sees no CUDA device"
        )
    return torch.device(name)


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run never overwrites another: refuse a directory that already holds one."""
    for name in ("checkpoint.pt", "summary.json"):
        if (run_dir / name).exists():
            raise UsageError(
                f"{run_dir} already holds a run ({name}); continue it with "
                f"`locallearn resume {run_dir}` or choose another --out"
            )


def make_optimizer(
    cfg: RunConfig, params: list[nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    cfg = resolve_recipe(cfg, None)  # a config not resolved by a Run: unset = global default
    # foreach: one batched call over a block's tensors instead of a Python loop per tensor;
    # with many small blocks and heads the loop would rival the forward/backward work.
    # fused (a rule's ``fused_optimizer``): one kernel per step, ~2.7x faster than foreach for
    # a stage of a few tiny tensors (GBNN's weak learners), where the step is all overhead.
    kind = {"fused": True} if fused else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kind)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kind
    )


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The multiple of ``--lr`` used in epoch ``epoch`` (0-based) of ``epochs``.

    constant: 1. cosine: (1 + cos(pi * epoch / epochs)) / 2. cooldown: 1 for the first half,
    then 2 * (epochs - epoch) / epochs, falling linearly to 2 / epochs in the last epoch (the
    schedule of the Forward-Forward reimplementation; see METHODS.md).
    """
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "cooldown":
        return min(1.0, 2.0 * (epochs - epoch) / epochs)
    return 1.0


def apply_threads(threads: int | None) -> None:
    """``--threads N``: intra-op CPU threads of this process (None leaves torch's choice)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data order of one epoch depends only on (seed, epoch): resumable, comparable."""
    # Modulo 2**64, the generator's seed range, so every --seed up to 2**63 - 1 works; below
    # the wrap (all seeds < 1.8e13) the order is the same as without it.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)


class Run:
    """A run of one (rule, model, data, seed). ``run_dir`` None keeps everything in memory."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        *,
        dataset: Dataset | None = None,
        network: nn.Sequential | None = None,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        validate(cfg)
        # Names first: a typo should fail before a dataset is read or a model is built.
        RULES.get(cfg.rule)
        if network is None:
            MODELS.get(cfg.model)
        cfg = resolve_run_config(cfg, custom_model=network is not None)
        validate(cfg)
        if dataset is None:
            DATASETS.get(cfg.data)
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.lock = RunDirLock(self.run_dir) if self.run_dir is not None else None
        self.progress = progress
        self.on_epoch = on_epoch
        self.device = resolve_device(cfg.device)
        self.log_kinds = parse_log_kinds(cfg.log)  # before the data: a missing package fails fast
        apply_threads(cfg.threads)
        self.data = dataset if dataset is not None else load_configured_dataset(cfg)
        if self.data.x_val is None and cfg.val_split > 0:
            self.data = split_validation(self.data, cfg.val_split, cfg.data_seed or 0)
        if cfg.augment and self.data.augment is None:
            raise UsageError(f"--augment: dataset {self.data.name!r} defines no augmentation")
        check_accelerator_options(cfg, self.device)
        own_network = bool(RULES.get(cfg.rule).meta.get("own_network"))
        if network is None and not own_network:  # before allocating: too large is a usage error
            check_model_fits(cfg, self.data, self.device)
        torch.manual_seed(cfg.seed)
        if own_network:
            network = own_network_placeholder(cfg)
        elif network is None:
            network = build_model(
                cfg.model, self.data.input_shape, self.data.classes, **cfg.model_options()
            )
        if cfg.threads is None and self.device.type == "cpu":
            # Recorded in config.toml: a resumed run keeps the count (and its exact weights).
            cfg = self.cfg = cfg.replace(threads=default_threads(network, self.data.input_shape))
            apply_threads(cfg.threads)
        self.rule: Rule = build_rule(
            cfg.rule,
            network,
            self.data.input_shape,
            self.data.classes,
            input_stats=(self.data.mean, self.data.std),
            task=self.data.task,
            **cfg.rule_options(),
        )
        self.rule.to(self.device)
        if cfg.channels_last:
            self.rule.network.to(memory_format=torch.channels_last)
        self.optimizers = [
            make_optimizer(cfg, self.rule.stage_parameters(i), self.rule.fused_optimizer)
            for i in range(self.rule.blocks)
        ]
        self.state = TrainState()
        self._x_train, self._y_train = self._to_device(self.data.x_train, self.data.y_train)
        self._x_test, self._y_test = self._to_device(self.data.x_test, self.data.y_test)
        # A graph dataset is one batch, the whole graph in node order, for training and for
        # every evaluation; its labels outside each split are ignored (data/graph.py).
        self.graph = None
        if isinstance(self.data, GraphDataset) and self.data.graph is not None:
            self.graph = self.data.graph.to(self.device)
            self.rule.bind_graph(self.graph)
        self.evaluator = Evaluator(self)
        self.stopper: LayerEarlyStopping | None = None
        # --patience, else the rule's own default (sf trains each layer to early stopping).
        patience = (
            cfg.patience if cfg.patience is not None else RULES.get(cfg.rule).meta.get("patience")
        )
        default = self.evaluator.val is not None and getattr(self.rule, "layer_after_layer", False)
        if patience is not None and (cfg.patience is not None or default):
            self.stopper = self._early_stopping(cfg, patience)

    def _early_stopping(self, cfg: RunConfig, patience: int) -> LayerEarlyStopping:
        if self.evaluator.val is None:
            raise UsageError(
                "--patience stops each layer on validation accuracy; this run has no validation "
                "split (give --val-split F, F > 0)"
            )
        if cfg.lr_schedule != "constant":
            raise UsageError(
                f"--patience ends each layer at its own epoch, so --lr-schedule "
                f"{cfg.lr_schedule} has no fixed length to follow; use --lr-schedule constant"
            )
        return LayerEarlyStopping(self.rule, patience, cfg.epochs)

    def finished(self) -> bool:
        """Whether every epoch has run (or, with --patience, the last layer has stopped)."""
        if self.stopper is not None:
            return self.stopper.finished
        return self.state.epoch >= self.cfg.epochs

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Datasets here fit in device memory; one copy up front beats a copy per batch. On
        # CUDA the copy goes from pinned memory, without a pageable staging buffer.
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        if self.cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _autocast(self) -> Any:
        if not self.cfg.amp:
            return None
        return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _augmented(
        self, data: Iterator[tuple[torch.Tensor, torch.Tensor]], epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        augment = self.data.augment
        if not self.cfg.augment or augment is None:
            yield from data
            return
        # Its own generator, so augmentation never shifts the data order of an epoch.
        generator = epoch_generator(self.cfg.seed, epoch + AUGMENT_STREAM)
        for x, y in data:
            yield augment(x, generator), y

    # -- files ----------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return self.run_dir / name if self.run_dir is not None else None

    def _save_checkpoint(self) -> None:
        path = self._path("checkpoint.pt")
        if path is None:
            return
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        ckpt = {
            "version": CHECKPOINT_VERSION,
            "identity": identity(self.cfg),
            "network": self.rule.network.state_dict(),
            "rule": self.rule.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "rng": rng,
            "state": asdict(self.state),
        }
        if self.evaluator.best is not None:
            ckpt["best"] = self.evaluator.best
        if self.stopper is not None:
            ckpt["stopper"] = self.stopper.state_dict()
        atomic_torch_save(path, ckpt)

    def load_checkpoint(self) -> None:
        path = self._path("checkpoint.pt")
        if path is None or not path.exists():
            raise UsageError(f"no checkpoint to resume from: {path} does not exist")
        ckpt = read_checkpoint(path, self.device, CHECKPOINT_VERSION)
        check_belongs(ckpt, self.cfg, path)
        try:
            self.rule.network.load_state_dict(ckpt["network"])
            self.rule.load_state_dict(ckpt["rule"])
            if len(ckpt["optimizers"]) != len(self.optimizers):
                raise ValueError(
                    f"{len(ckpt['optimizers'])} optimizers for {len(self.optimizers)} blocks"
                )
            for opt, state in zip(self.optimizers, ckpt["optimizers"]):
                opt.load_state_dict(state)
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
            if "cuda" in ckpt["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)
            self.state = TrainState(**ckpt["state"])
            self.evaluator.best = ckpt.get("best")
            if self.stopper is not None:
                self.stopper.load_state_dict(ckpt["stopper"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            # Shapes or keys that do not fit the model config.toml describes.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise mismatch(path, f"the weights do not fit its model: {first}") from None

    def _write_metrics(self) -> None:
        path = self._path("metrics.jsonl")
        if path is not None:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.state.history))

    # -- training -------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs (all of them for a new run) and return the summary.

        Holds the run directory's lock throughout; raises ``Diverged`` (after recording the
        epoch in metrics.jsonl, keeping the last good checkpoint) if training blows up.
        """
        if self.lock is None:
            return self._fit()
        with self.lock:
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.run_dir is not None and self.state.epoch == 0:
            check_fresh_run_dir(self.run_dir)
            atomic_write_text(self.run_dir / "config.toml", to_toml(cfg))
            write_started(self.run_dir, str(self.device))
        logs = EpochLogs(self.run_dir, self.log_kinds, self.state.epoch)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        # The memory training adds: data loading's peak (the float32 dataset) is the same for
        # every rule and would hide the difference between them (measure does the same).
        self._rss = RSSWindow()
        steps_per_epoch = -(-self._x_train.shape[0] // cfg.batch_size)
        bar = _progress_bar(
            self.progress,
            total=cfg.epochs * steps_per_epoch,
            initial=self.state.epoch * steps_per_epoch,
            desc=f"{cfg.rule}",
        )
        frozen = [*self.rule.network.parameters(), *self.rule.network.buffers()]
        frozen += [*self.rule.signal_modules().parameters(), *self.rule.signal_modules().buffers()]
        for stage in self.rule.stages:  # a block need not be part of the network (GBNN)
            frozen += [*stage.block.parameters(), *stage.block.buffers()]
        epochs = self.stopper.total_epochs if self.stopper else cfg.epochs
        for epoch in range(self.state.epoch, epochs):
            if self.stopper is not None and self.stopper.finished:
                break
            meter = SavedTensorMeter(exclude=frozen)
            if self.graph is not None:
                data: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(
                    [(self._x_train, self._y_train)]
                )
            else:
                data = batches(
                    self._x_train, self._y_train, cfg.batch_size, epoch_generator(cfg.seed, epoch)
                )
            self.rule.begin_epoch(epoch, cfg.epochs)
            own = self.rule.epoch_batches(
                self._x_train, self._y_train, cfg.batch_size, epoch_generator(cfg.seed, epoch)
            )
            data = own if own is not None else data
            lr = cfg.lr * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            start = time.perf_counter()
            losses, samples = train_epoch(
                self.rule,
                self.optimizers,
                self._augmented(data, epoch),
                meter,
                on_batch=bar.update if bar else None,
                autocast=self._autocast(),
            )
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            self._check_divergence(epoch, losses)
            record = {
                "epoch": epoch + 1,
                "train_loss": losses[-1],
                "block_losses": losses,
                **self.evaluator.after_epoch(epoch),
                "epoch_seconds": seconds,
                "act_bytes_peak": meter.peak,
                "lr": lr,
            }
            if self.stopper is not None and record.get("val_acc") is not None:
                record["layer"] = self.rule.current  # type: ignore[attr-defined]
                self.stopper.update(record["val_acc"])
            self.state.epoch = epoch + 1
            self.state.history.append(record)
            self.state.act_bytes_peak = max(self.state.act_bytes_peak, meter.peak)
            previous = self.state.block_act_bytes or [0] * len(meter.segments)
            self.state.block_act_bytes = [max(a, b) for a, b in zip(previous, meter.segments)]
            self.state.train_seconds += seconds
            self.state.samples += samples
            # Checkpoint first: it is the state resume trusts; metrics.jsonl is rewritten from
            # the checkpoint's history, so a kill between the two writes loses nothing.
            self._save_checkpoint()
            self._write_metrics()
            logs.write(self.state.history)
            if bar:
                bar.set_postfix(epoch=epoch + 1, loss=_fmt(losses[-1]), **_held_out(record))
            if self.on_epoch is not None:
                self.on_epoch(record, cfg)
        logs.close()
        if bar:
            bar.close()
        summary = self.summary()
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def _check_divergence(self, epoch: int, losses: list[float | None]) -> None:
        found = diverged_stage(self.rule, losses)
        if found is None:
            return
        block, why = found
        lr = self.optimizers[block].param_groups[0]["lr"]
        kept = (
            f"the checkpoint of epoch {self.state.epoch} is kept"
            if self.state.epoch
            else "no checkpoint was written"
        )
        message = (
            f"training diverged in epoch {epoch + 1} at block {block + 1} of {self.rule.blocks} "
            f"(lr {lr:g}): {why}; {kept}; try a smaller --lr"
        )
        record = {
            "epoch": epoch + 1,
            "status": "diverged",
            "block": block + 1,
            "lr": lr,
            "message": message,
            "block_losses": [x if x is None or math.isfinite(x) else None for x in losses],
        }
        path = self._path("metrics.jsonl")
        if path is not None:
            lines = [*self.state.history, record]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in lines))
        raise Diverged(message, epoch=epoch + 1, block=block + 1, lr=lr)

    def summary(self) -> dict[str, Any]:
        """The summary of the run so far: the test set evaluated once, here, at the end."""
        final = self.evaluator.final()
        out = self._summary()
        out.update(final)
        out["eval_seconds"] = self.state.eval_seconds / max(1, self.state.epoch)
        return out

    def _summary(self) -> dict[str, Any]:
        cfg, state, rule = self.cfg, self.state, self.rule
        last = state.history[-1] if state.history else {}
        out: dict[str, Any] = {
            "rule": cfg.rule,
            "model": getattr(rule, "model_name", cfg.model),
            "data": cfg.data,
            "task": self.data.task,
            "blocks": rule.blocks,
            "epochs": state.epoch,
            "seed": cfg.seed,
            "device": str(self.device),
            "train_loss": last.get("train_loss"),
            "block_losses": last.get("block_losses"),
            "params": count_params(rule.network.parameters()),
            "aux_params": count_params(rule.aux_parameters()),
            "act_bytes_peak": state.act_bytes_peak,
            "block_act_bytes": state.block_act_bytes,
            "peak_rss_bytes": peak_rss_bytes(),
            "rss_added_bytes": self._rss.added() if hasattr(self, "_rss") else None,
            "epoch_seconds": state.train_seconds / max(1, state.epoch),
            "samples_per_second": state.samples / state.train_seconds
            if state.train_seconds
            else 0.0,
            "weights_sha256": weights_sha256(rule.network),
            "cuts": rule.cuts,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "optimizer": cfg.optimizer,
            "settings": settings_used(cfg),
            "recipe_from": cfg.recipe_from,
            "threads": torch.get_num_threads(),
            "train_size": int(self._x_train.shape[0]),
            "val_size": int(self.data.y_val.shape[0]) if self.data.y_val is not None else 0,
            "test_size": int(self._x_test.shape[0]),
            # Per-epoch held-out accuracy: validation (older runs and --val-split 0: test).
            "val_acc_curve": [r.get("val_acc") for r in state.history],
            **(
                {"test_acc_curve": [r.get("test_acc") for r in state.history]}
                if any("test_acc" in r for r in state.history)
                else {}
            ),
            "train_loss_curve": [r["train_loss"] for r in state.history],
            "torch_version": torch.__version__,
            "locallearn_version": __version__,
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
        }
        if self.data.task == "regression":  # held-out R^2 per epoch: validation, else test
            out["val_r2_curve"] = [r.get("val_r2") for r in state.history]
            out["test_r2_curve"] = [r.get("test_r2") for r in state.history]
        out.update(rule.extra_summary(self._x_test, self._y_test))
        if self.graph is not None:
            out["train_size"] = int((self._y_train >= 0).sum())  # labelled nodes, not nodes
            out["val_size"] = int((self.data.y_val >= 0).sum())
            out["test_size"] = int((self._y_test >= 0).sum())
            out["nodes"], out["edges"] = self.graph.num_nodes, int(self.graph.edge_index.shape[1])
        if self.stopper is not None:
            out["layer_epochs"] = self.stopper.stopped_at
        if self.device.type == "cuda":
            out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(self.device)
        return out


def own_network_placeholder(cfg: RunConfig) -> nn.Sequential:
    """The empty network handed to a rule that builds its own (GBNN, NoProp): model options would
    be ignored, so setting one is an error."""
    for key, value in cfg.model_options().items():
        if value is not None:
            raise UsageError(
                f"--{key.replace('_', '-')} does not apply to rule {cfg.rule!r}: it builds its "
                "own network (`locallearn list rules` shows its options)"
            )
    return nn.Sequential()


def _fmt(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.3f}"


def _held_out(record: dict[str, Any]) -> dict[str, str]:
    for key in ("val_acc", "test_acc", "val_r2", "test_r2"):
        if record.get(key) is not None:
            return {key.split("_")[0]: f"{record[key]:.3f}"}
    return {}


def check_accelerator_options(cfg: RunConfig, device: torch.device) -> None:
    """--amp and --channels-last are CUDA speed options; on CPU they would only mislead."""
    for flag, on in (("--amp", cfg.amp), ("--channels-last", cfg.channels_last)):
        if on and device.type != "cuda":
            raise UsageError(f"{flag} applies to --device cuda only (this run is on {device})")


def _progress_bar(enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(unit="step", leave=False, dynamic_ncols=True, **kwargs)


def resume_run(
    run_dir: str | Path,
    *,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint; returns its summary.

    ``epochs`` extends the run (finished or not) to that many epochs in total; see
    ``extend_config`` for what that does to a schedule planned for the old total.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.exists():
        raise UsageError(f"{run_dir} is not a run directory: {config_path} does not exist")
    cfg = load_run_config(config_path)
    if epochs is not None:
        cfg = extend_config(cfg, epochs, run_dir)
    run = Run(cfg, run_dir, progress=progress, on_epoch=on_epoch)
    assert run.lock is not None
    with run.lock:  # before reading the checkpoint: another writer may be replacing it
        if (run_dir / "checkpoint.pt").exists():
            run.load_checkpoint()
        # else: the run died before its first checkpoint; with the same seed, starting over
        # is exactly what an uninterrupted run would have done.
        if epochs is not None and epochs < run.state.epoch:
            raise UsageError(
                f"--epochs {epochs} is fewer than the {run.state.epoch} epochs {run_dir} has "
                "already trained; give a larger total"
            )
        summary_path = run_dir / "summary.json"
        if run.finished() and summary_path.exists():
            return read_summary(summary_path)
        if epochs is not None:
            atomic_write_text(config_path, to_toml(cfg))  # the directory now plans `epochs`
        if run.state.epoch > 0:  # else fit() starts the run over and records it as started
            write_resumed(run_dir, str(run.device))
        return run.fit()


def read_summary(path: Path) -> dict[str, Any]:
    """A run's summary.json, or a UsageError saying it is damaged."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(
            f"{path} is damaged ({type(error).__name__}); delete it and run "
            f"`locallearn resume {path.parent}` to write it again"
        ) from None
    if not isinstance(summary, dict):
        raise UsageError(
            f"{path} holds a {type(summary).__name__}, not a run summary; delete it and run "
            f"`locallearn resume {path.parent}` to write it again"
        )
    return summary


def extend_config(cfg: RunConfig, epochs: int, run_dir: Path) -> RunConfig:
    """``cfg`` planned for ``epochs`` in total (``resume --epochs``).

    A constant schedule continues exactly as if the run had been planned that long: on CPU the
    weights equal those of a run trained for ``epochs`` from the start. A schedule computed
    from the total (cosine, cooldown; Forward-Forward's greedy layer schedule) is re-planned
    for the new total: epochs already trained keep what they had, the rest follow the new
    plan from the current epoch on (so a cosine lr that had decayed to ~0 jumps back up).
    The result then differs from a run planned for ``epochs`` from the start; a warning says
    so.
    """
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}")
    if epochs != cfg.epochs:
        planned = [f"--lr-schedule {cfg.lr_schedule}"] if cfg.lr_schedule != "constant" else []
        if cfg.ff_schedule == "greedy":
            planned.append("--ff-schedule greedy")
        if planned:
            import warnings

            warnings.warn(
                f"{run_dir}: {' and '.join(planned)} depend on the total epochs; extending "
                f"from {cfg.epochs} to {epochs} re-plans them for {epochs} from the current "
                f"epoch on, so the result differs from a run planned for {epochs} epochs",
                stacklevel=3,
            )
    return cfg.replace(epochs=epochs)
