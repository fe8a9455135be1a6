"""A trained network as a plain PyTorch module: ``export`` and ``load_network``.

An export file (``locallearn export RUN_DIR model.pt``) is a ``torch.save`` of plain data,
loadable with ``weights_only=True``:

    format "locallearn.network", version 1
    config       the run's resolved configuration (TOML text): the architecture recipe
    input_shape  one input, no batch dim;  classes;  input_stats (per-channel mean, std)
    network      the network's state_dict (what predicts)
    rule_state   the rule's other state (heads and other signal modules)
    weights_sha256, test_acc  to check a reload against the run's summary

``load_network`` rebuilds the architecture from the recipe through the model and rule
registries (the same builders a run uses) and loads the weights. It returns the network in
eval mode; for every rule but ``ff`` that is the ``nn.Sequential`` of units whose output
is the class scores, with the heads dropped. ``with_heads=True`` (and ``ff`` always, whose
prediction is a goodness sweep or a readout trained as its own block) returns a
``TrainedNetwork`` that predicts exactly as the run does and holds the heads as
``signals``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locallearn.config import RunConfig, config_from_mapping, load_config_file, to_toml
from locallearn.engine.io import atomic_torch_save
from locallearn.errors import UsageError
from locallearn.measure import weights_sha256
from locallearn.rules import Rule

FORMAT = "locallearn.network"
VERSION = 1


class TrainedNetwork(nn.Module):
    """A rule's network with its signal modules (heads); ``forward`` predicts as the run did.

    ``network`` is the ``nn.Sequential`` of units; ``signals`` holds one module per block
    (an auxiliary head, a decoder, a fixed projection, or nothing for the task loss).
    """

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        self.network = rule.network
        self.signals = rule.signal_modules()
        # The rule object holds the prediction logic (ff's label sweep); its modules are the
        # two registered above, so .to(), .eval() and state_dict() reach everything.
        self._rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._rule.predict(x)


def _predicts_with_network(rule: Rule) -> bool:
    return type(rule).predict is Rule.predict


def _load_run(run_dir: Path) -> tuple[Any, RunConfig]:
    """The run rebuilt from its directory and last checkpoint (the caller's RNG untouched)."""
    from locallearn.engine.run import Run

    config_path = run_dir / "config.toml"
    if not run_dir.is_dir() or not config_path.exists():
        raise UsageError(
            f"{run_dir} is not a run directory (no config.toml); give a run directory or a "
            "file written by `locallearn export`"
        )
    if not (run_dir / "checkpoint.pt").exists():
        raise UsageError(f"{run_dir} holds no checkpoint.pt: the run never finished an epoch")
    cfg = load_config_file(config_path)
    if "custom" in (cfg.model, cfg.data):
        what = "model" if cfg.model == "custom" else "dataset"
        raise UsageError(
            f"{run_dir} was trained on a custom {what} passed to the Python API; its "
            "architecture cannot be rebuilt from the run directory (load checkpoint.pt's "
            "'network' state_dict into your own module)"
        )
    cfg = cfg.replace(device="cpu", amp=False, channels_last=False, log=None)
    with torch.random.fork_rng(devices=[]):
        run = Run(cfg, run_dir)
        run.load_checkpoint()
    return run, cfg


def export_record(run_dir: str | Path) -> dict[str, Any]:
    """The export file's contents for the run in ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    run, cfg = _load_run(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    data = run.data
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": to_toml(cfg),
        "input_shape": list(data.input_shape),
        "classes": int(data.classes),
        "input_stats": [list(map(float, data.mean)), list(map(float, data.std))],
        "epochs": run.state.epoch,
        "network": run.rule.network.state_dict(),
        "rule_state": run.rule.state_dict(),
        "weights_sha256": weights_sha256(run.rule.network),
        "test_acc": summary.get("test_acc"),
    }


def export_network(run_dir: str | Path, path: str | Path) -> dict[str, Any]:
    """Write the run's trained network to ``path``; returns what was written (no weights)."""
    record = export_record(run_dir)
    atomic_torch_save(path, record)
    return {k: v for k, v in record.items() if k not in ("network", "rule_state")}


def rule_from_export(record: dict[str, Any]) -> Rule:
    """The rule (network and signals) an export file describes, with its weights loaded."""
    from locallearn.models import build_model
    from locallearn.rules import build_rule

    cfg = _config_from_text(record["config"])
    shape, classes = tuple(record["input_shape"]), int(record["classes"])
    mean, std = record["input_stats"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the weights are replaced; seeded for fixed buffers
        network = build_model(cfg.model, shape, classes, **cfg.model_options())
        rule = build_rule(
            cfg.rule, network, shape, classes, input_stats=(mean, std), **cfg.rule_options()
        )
    rule.network.load_state_dict(record["network"])
    rule.load_state_dict(record["rule_state"])
    return rule


def _config_from_text(text: str) -> RunConfig:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return config_from_mapping(tomllib.loads(text))


def _read_export(path: Path) -> dict[str, Any]:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"cannot read {path}: {err}")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UsageError(
            f"{path} is not a file written by `locallearn export` (for a checkpoint.pt, give "
            "its run directory)"
        )
    if record.get("version") != VERSION:
        raise UsageError(f"{path} has export version {record.get('version')}, expected 1")
    return record


def load_network(source: str | Path, *, with_heads: bool = False) -> nn.Module:
    """The trained network of a run directory or an export file, on CPU, in eval mode.

    A run directory is rebuilt through its dataset (for the input shape and statistics), so
    the data must be readable; an export file holds those and needs no data.

    Returns the ``nn.Sequential`` of units (its output: class scores) for rules that predict
    with it; a ``TrainedNetwork`` (network + ``signals``, forward = the run's prediction)
    with ``with_heads=True``, and always for ``ff``.
    """
    source = Path(source)
    if source.is_dir():
        rule = _load_run(source)[0].rule
    elif source.exists():
        rule = rule_from_export(_read_export(source))
    else:
        raise UsageError(f"{source} does not exist; give a run directory or an exported .pt")
    if with_heads or not _predicts_with_network(rule):
        module: nn.Module = TrainedNetwork(rule)
    else:
        module = rule.network
    return module.eval()


def torchscript(module: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> str:
    """Save ``module`` as TorchScript; returns how: "script", or "trace" where scripting
    fails (the recurrent and locally connected models). A trace records the ops run on a
    batch of zeros of ``input_shape``: it is fixed to that sequence length and does not
    follow data-dependent branches."""
    import io

    from locallearn.engine.io import atomic_write_bytes

    try:
        scripted, how = torch.jit.script(module), "script"
    except Exception:
        example = torch.zeros(2, *input_shape)
        scripted, how = torch.jit.trace(module, example, check_trace=False), "trace"
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return how


def torch_export(module: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> None:
    """Save ``module`` as a ``torch.export`` program (.pt2) with a free batch dimension."""
    import io

    from locallearn.engine.io import atomic_write_bytes

    example = torch.zeros(2, *input_shape)
    try:
        program = torch.export.export(
            module, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
        )
    except Exception as err:
        raise UsageError(f"torch.export cannot capture this network: {err}".splitlines()[0])
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())
