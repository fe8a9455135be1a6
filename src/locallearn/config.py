"""The run configuration: one flat dataclass, read from TOML, validated, written back.

Precedence: dataclass defaults < config file < command-line flags; training settings left
unset (None) are filled from the rule's recipe, then the global default (locallearn.recipe).
An unknown key in a file is an error, as is a value of the wrong type; the resolved
configuration is written into every run directory so that the run can be reproduced (and
resumed) from it alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from locallearn.errors import UsageError, unknown_choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the backport of the same module
    import tomli as tomllib

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "cooldown")
DEVICES = ("cpu", "cuda")


def _opt(group: str, help: str, default: Any = None) -> Any:
    return field(default=default, metadata={"group": group, "help": help})


@dataclass
class RunConfig:
    rule: str = "bp"
    model: str = "cnn1d"
    data: str = "mnist1d"
    blocks: int | None = None  # None: the rule's default (bp 1, greedy 3)
    epochs: int = 60  # MNIST-1D: ~2,400 steps, where the reference CNN reaches ~92%
    # Training settings: None = not set by the user; a run fills them from the rule's recipe,
    # then the global default (locallearn.recipe: Adam lr 1e-2, batch 100, momentum 0.9 for
    # SGD, no weight decay, constant lr; lr_schedule: see engine.run.lr_factor).
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    lr_schedule: str | None = None
    # Which recipe filled the unset training fields (written by locallearn.recipe.resolve).
    recipe_from: str | None = None
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    train_limit: int | None = None
    # -- options of one model, rule or dataset ---------------------------------------------
    # None means "the entry's default", and setting one the chosen entry does not take is an
    # error. Each field's metadata names its group and CLI help; the CLI builds a flag for
    # every such field, so a new option is one field here (in its owner's section).
    # models
    width: int | None = _opt("model", "units or channels per layer")
    depth: int | None = _opt("model", "number of hidden layers")
    activation: str | None = _opt(
        "model", "hidden activation, relu|tanh (mlp, cnn1d, cnn, vgg, resnet; default relu)"
    )
    dropout: float | None = _opt("model", "gcn/sage/gat: dropout on each layer's input (0.5)")
    # rules: greedy and the auxiliary-head family
    head: str | None = _opt("rule", "auxiliary head: auto|linear|mlp|conv")
    cuts: list[int] | None = _opt(
        "rule", "explicit cut points, e.g. 1,3 (default: balance activation bytes)"
    )
    # rules: infopro, auglocal, man
    aux_depth: int | None = _opt("rule", "AugLocal: layers in each auxiliary network (d)")
    pyramid: float | None = _opt("rule", "AugLocal: pyramidal depth coefficient c")
    host: str | None = _opt("rule", "MAN: the local rule it plugs into, greedy|infopro")
    ema_momentum: float | None = _opt("rule", "MAN: EMA momentum m")
    recon_weight: list[float] | None = _opt(
        "rule", "InfoPro: reconstruction weight lambda1 at block 1 and block K-1, e.g. 5,0"
    )
    task_weight: list[float] | None = _opt(
        "rule", "InfoPro: task-loss weight lambda2 at block 1 and block K-1, e.g. 0,2"
    )
    task_loss: str | None = _opt("rule", "InfoPro: local task loss, ce|contrast (SupCon)")
    # rules: drtp, tpsgd, ff, fa, dfa
    local_loss: str | None = _opt("rule", "tpSGD: local loss against the target, mse|l1|ce")
    ff_readout: str | None = _opt("rule", "Forward-Forward prediction: sweep|linear")
    ff_schedule: str | None = _opt("rule", "Forward-Forward layers: simultaneous|greedy")
    ff_peer_norm: float | None = _opt("rule", "Forward-Forward: peer normalisation weight")
    # rules on graphs: sf, ff (ForwardGNN, Park et al. 2024)
    temperature: float | None = _opt("rule", "sf: softmax temperature of the similarities")
    ff_negatives: str | None = _opt(
        "rule", "ff on graphs: negatives by label appending or virtual nodes, label|virtual"
    )
    # rules: gbnn (Emami & Martinez-Munoz 2023)
    gb_rounds: int | None = _opt("rule", "GBNN: boosting rounds T (default 200)")
    gb_units: int | None = _opt("rule", "GBNN: hidden units J added per round (default 1)")
    gb_subsample: float | None = _opt(
        "rule", "GBNN: fraction of training rows per round, without replacement (default 0.5)"
    )
    gb_eta: float | None = _opt("rule", "GBNN: shrinkage eta of each round's step (default 1)")
    gb_steps: int | None = _opt("rule", "GBNN: optimizer steps per round (default 50)")
    gb_activation: str | None = _opt(
        "rule", "GBNN: hidden activation, logistic|tanh|relu|identity (default logistic)"
    )
    gb_refit: bool | None = _opt(
        "rule", "GBNN: refit each round's output layer by least squares at its end (default on)"
    )
    # rules: fwdgrad (Ren, Kornblith, Liao & Hinton, ICLR 2023)
    fg_perturb: str | None = _opt(
        "rule", "fwdgrad: what the random directions perturb, activity|weight (default activity)"
    )
    fg_directions: int | None = _opt(
        "rule", "fwdgrad: random directions (jvp passes) averaged per step (default 1)"
    )
    fg_groups: int | None = _opt(
        "rule",
        "fwdgrad: group-wise local losses, G groups of each hidden block's output units; G "
        "must divide their count; activity perturbation only (default 1)",
    )
    # rules: noprop (Li, Teh & Pascanu 2025)
    np_steps: int | None = _opt("rule", "NoProp: denoising blocks T (default 10)")
    np_eta: float | None = _opt("rule", "NoProp: weight eta of the denoising loss (default 0.1)")
    np_embedding: str | None = _opt(
        "rule", "NoProp: label embedding W_Embed, onehot|learned (default onehot)"
    )
    np_embed_dim: int | None = _opt(
        "rule", "NoProp: dimension d of a learned embedding (default: the class count)"
    )
    # rules: monoforward (Gong, Li & Abdulla 2025)
    mf_readout: str | None = _opt("rule", "Mono-Forward prediction: last|sum|output (default last)")
    # datasets (options of one dataset entry; see data_options)
    # datasets: dsd (Lahoti et al. 2024) and shortcut (Hermann et al. 2024)
    patches: int | None = _opt("data", "DSD: number of patches k (default 4)")
    patch_dim: int | None = _opt("data", "DSD: patch dimension d (default 16)")
    sigma: float | None = _opt("data", "DSD: noise standard deviation (default 0.5)")
    train_size: int | None = _opt("data", "dsd/shortcut: training samples to generate")
    data_seed: int | None = _opt("data", "dsd/shortcut/sbm: seed of the generated data (default 0)")
    core_predictivity: float | None = _opt(
        "data", "shortcut: P(core feature agrees with the label) (default 0.9)"
    )
    shortcut_predictivity: float | None = _opt(
        "data", "shortcut: P(shortcut feature agrees with the label) (default 0.8)"
    )
    core_amplification: float | None = _opt("data", "shortcut: scale of the core feature")
    shortcut_amplification: float | None = _opt("data", "shortcut: scale of the shortcut feature")
    core_nesting: int | None = _opt("data", "shortcut: tanh layers nesting the core feature")
    shortcut_nesting: int | None = _opt("data", "shortcut: tanh layers nesting the shortcut")
    # datasets: sbm (generated stochastic block model graph)
    nodes: int | None = _opt("data", "sbm: number of nodes (default 1000)")
    communities: int | None = _opt("data", "sbm: number of communities = classes (default 4)")
    avg_degree: float | None = _opt("data", "sbm: average node degree (default 8)")
    homophily: float | None = _opt("data", "sbm: P(an edge stays in its community) (0.8)")
    feature_noise: float | None = _opt("data", "sbm: std of the feature noise (default 2)")
    node_features: int | None = _opt("data", "sbm: feature dimension (default 32)")
    # -- options of every run ------------------------------------------------------------------
    as_sequence: bool = _opt(
        "run", "feed inputs as sequences: (length, features); images row by row", False
    )
    augment: bool = _opt("run", "the dataset's training augmentation (CIFAR: crop + flip)", False)
    amp: bool = _opt("run", "CUDA: mixed precision (bfloat16 autocast)", False)
    channels_last: bool = _opt("run", "CUDA: channels_last memory format for 2-D convs", False)
    threads: int | None = _opt("run", "intra-op CPU threads per process (default: torch's)")
    patience: int | None = _opt(
        "run",
        "layer-after-layer rules: a layer stops after this many epochs without a better "
        "validation accuracy (its best state is restored) and the next layer starts; "
        "--epochs is then the most epochs per layer",
    )
    log: str | None = _opt(
        "run", "also log each epoch as csv|tensorboard (comma-separated), beside metrics.jsonl"
    )
    val_split: float = _opt(
        "run",
        "fraction of the training set held out for validation (stratified, fixed per data "
        "seed; per-epoch evaluation uses it, the test set is evaluated once at the end; 0: off)",
        0.1,
    )
    eval_every: int = _opt("run", "evaluate on the validation set every N epochs (and the last)", 1)
    keep_best: bool = _opt(
        "run", "also report the test accuracy of the epoch with the best validation accuracy", False
    )
    # blocks on workers (parallel/, docs/parallel.md)
    workers: int | None = _opt("run", "processes the stages are spread over (default 1)")
    placement: list[int] | None = _opt(
        "run", "first stage (0-based) of workers 2..W, e.g. 2,3 (default: balance step time)"
    )
    transport: str | None = _opt("run", "worker messages: auto|shm|dist (default auto)")
    worker_timeout: float | None = _opt(
        "run", "seconds a worker waits for a silent peer before stopping (default 30)"
    )

    def _group(self, group: str) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("group") == group
        }

    def model_options(self) -> dict[str, Any]:
        return self._group("model")

    def rule_options(self) -> dict[str, Any]:
        return {"blocks": self.blocks, **self._group("rule")}

    def data_options(self) -> dict[str, Any]:
        return self._group("data")

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in fields(RunConfig)}


def _check_type(key: str, value: Any) -> Any:
    """Coerce/validate one value against the field's annotation (str | int | float | ...)."""
    kind = str(_FIELDS[key].type)
    if value is None:
        if "None" in kind:
            return None
        raise UsageError(f"{key} may not be empty")
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise UsageError(f"{key} must be true or false, got {value!r}")
        return value
    if kind.startswith("list[int]"):
        if isinstance(value, str):
            try:
                value = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise UsageError(f"{key} must be a comma-separated list of integers, got {value!r}")
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise UsageError(f"{key} must be a list of integers, got {value!r}")
        return value
    if kind.startswith("list[float]"):
        if isinstance(value, str):
            try:
                value = [float(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise UsageError(f"{key} must be a comma-separated list of numbers, got {value!r}")
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise UsageError(f"{key} must be a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key} must be an integer, got {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{key} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise UsageError(f"{key} must be a string, got {value!r}")
    return value


def config_from_mapping(values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """``base`` (or the defaults) overridden by ``values``; unknown keys are errors."""
    base = base or RunConfig()
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise unknown_choice("configuration key", unknown[0], _FIELDS)
    return base.replace(**{k: _check_type(k, v) for k, v in values.items()})


def load_config_file(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    return config_from_mapping(read_config_values(path), base)


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The key/value pairs of a TOML config file, before they are checked against RunConfig."""
    path = Path(path)
    name = repr(str(path))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {name} does not exist")
    except IsADirectoryError:
        raise UsageError(f"config file {name} is a directory; give a .toml file")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"config file {name} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        )
    except OSError as err:
        raise UsageError(f"config file {name} cannot be read: {err.strerror}")
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {name} is not valid TOML: {err}")


def to_toml(cfg: RunConfig) -> str:
    """Flat TOML of the set fields (stdlib tomllib reads TOML but cannot write it)."""
    lines = []
    for key, value in dataclasses.asdict(cfg).items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)  # a JSON string is a valid TOML basic string
        elif isinstance(value, float):
            text = repr(value) if math.isfinite(value) else str(value)
        else:
            text = json.dumps(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


# Bounds that no real run reaches; beyond them a value is a typo (or an attack on memory).
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**63 - 1  # the largest seed every generator we use (torch, NumPy) takes
MAX_DEPTH = 10_000
MAX_THREADS = 1024
MAX_FLOAT = 1e38  # float32 overflows just above 3.4e38
MAX_INT = 2**62  # sizes and counts beyond this overflow torch's int64 shapes


def validate(cfg: RunConfig) -> None:
    """Check the values that do not depend on a registry (names are checked on build)."""
    for f in fields(cfg):  # before the range checks: nan passes every comparison
        value = getattr(cfg, f.name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise UsageError(f"--{f.name.replace('_', '-')} must be a finite number, got {v}")
            if isinstance(v, float) and abs(v) > MAX_FLOAT:
                # Optimizers apply it to float32 tensors, where it would overflow.
                raise UsageError(
                    f"--{f.name.replace('_', '-')} must be at most {MAX_FLOAT:g} in size, got {v:g}"
                )
            if isinstance(v, int) and abs(v) > MAX_INT and f.name not in ("seed", "data_seed"):
                raise UsageError(f"--{f.name.replace('_', '-')} must be at most 2**62, got {v}")
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "eval_every": cfg.eval_every}
    for key, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    if cfg.epochs > MAX_EPOCHS:
        raise UsageError(f"--epochs must be at most {MAX_EPOCHS:,}, got {cfg.epochs:,}")
    for key in ("seed", "data_seed"):
        value = getattr(cfg, key)
        if value is not None and not 0 <= value <= MAX_SEED:
            raise UsageError(
                f"--{key.replace('_', '-')} must be in 0..{MAX_SEED} (2**63 - 1), got {value}"
            )
    if cfg.depth is not None and cfg.depth > MAX_DEPTH:
        raise UsageError(f"--depth must be at most {MAX_DEPTH:,}, got {cfg.depth:,}")
    if cfg.threads is not None and not 1 <= cfg.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be in 1..{MAX_THREADS}, got {cfg.threads}")
    if cfg.patience is not None and cfg.patience < 1:
        raise UsageError(f"--patience must be at least 1, got {cfg.patience}")
    if cfg.workers is not None and cfg.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.worker_timeout is not None and not cfg.worker_timeout > 0:
        raise UsageError(
            f"--worker-timeout must be a positive number of seconds, got {cfg.worker_timeout}"
        )
    if cfg.blocks is not None and cfg.blocks < 1:
        raise UsageError(f"--blocks must be at least 1, got {cfg.blocks}")
    # Unset (None) training fields are filled from a recipe before a run starts; the values
    # checked here are the user's (a recipe's own are checked in tests/test_recipe.py).
    if cfg.lr is not None and (not cfg.lr > 0 or not math.isfinite(cfg.lr)):
        raise UsageError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.weight_decay is not None and cfg.weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    if cfg.momentum is not None and not 0 <= cfg.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.optimizer is not None and cfg.optimizer not in OPTIMIZERS:
        raise unknown_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    if cfg.lr_schedule is not None and cfg.lr_schedule not in LR_SCHEDULES:
        raise unknown_choice("--lr-schedule", cfg.lr_schedule, LR_SCHEDULES)
    if not 0 <= cfg.val_split < 1:
        raise UsageError(
            "--val-split must be a fraction in [0, 1) (0 turns validation off), "
            f"got {cfg.val_split}"
        )
    if cfg.device not in DEVICES and not cfg.device.startswith("cuda:"):
        raise unknown_choice("device", cfg.device, DEVICES)


def check_momentum_applies(
    values: dict[str, Any], optimizers: list[str], where: str = "--momentum"
) -> None:
    """``momentum`` given explicitly (flag, file or API) when every rule of the invocation
    trains with Adam (``optimizers``: the optimizer each rule will use, its recipe's where
    the user set none) is an error: Adam has no momentum option (its betas play that part),
    and silently ignoring it would mislead."""
    if "momentum" in values and optimizers and all(o == "adam" for o in optimizers):
        raise UsageError(
            f"{where} applies to --optimizer sgd only (this run uses adam, whose betas play "
            "that part); drop it or add --optimizer sgd"
        )
