"""``locallearn probe RUN_DIR``: what a finished run's network learned.

The run is rebuilt from its config.toml and checkpoint.pt through ``engine.run.Run``, so a
probe works for every rule: it reads only the rule's network (an ``nn.Sequential`` of units),
its cut points and ``predict``, never a rule's internals.

- linear probes at every unit boundary (the input, each unit's output), with the block ends
  marked: the boundaries are the same for every rule on one model, so rules compare point by
  point, and the block outputs (``blocks``) are the subset where a local signal was attached;
- neural collapse NC1-NC4 on the input of the network's last linear layer (``collapse.py``);
- filter quality of every convolution layer (``filters.py``);
- shortcut bias when the run's data is ``shortcut`` (``studies/shortcut.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from locallearn.data import Dataset
from locallearn.engine.io import atomic_write_json
from locallearn.engine.loop import batches, evaluate
from locallearn.errors import UsageError
from locallearn.probes.collapse import nc4, neural_collapse
from locallearn.probes.filters import filter_quality
from locallearn.probes.linear import MAX_FEATURES, linear_probe, pool_features

MAX_TRAIN = 10_000  # probes and collapse statistics use at most this many training samples
BATCH = 500


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, ...]:
    if limit is None or x.shape[0] <= limit:
        return x, y
    # A fixed random subset: the same samples for every run probed, whatever its seed.
    index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:limit]
    index = index.sort().values.to(x.device)
    return x.index_select(0, index), y.index_select(0, index)


@torch.no_grad()
def unit_features(
    network: nn.Sequential, x: torch.Tensor, max_features: int = MAX_FEATURES
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Pooled features at every unit boundary (the input, then each unit's output), on CPU.

    Returns one (N, F) float32 tensor per boundary and, for each, its activation shape and
    how it was pooled. Runs in eval mode, in batches, without a graph.
    """
    network.eval()
    units = list(network.children())
    chunks: list[list[torch.Tensor]] = [[] for _ in range(len(units) + 1)]
    info: list[dict[str, Any]] = []
    for xb, _ in batches(x, x.new_zeros(x.shape[0], dtype=torch.long), BATCH):
        h = xb
        for j in range(len(units) + 1):
            if j > 0:
                h = units[j - 1](h)
            pooled, how = pool_features(h.float(), max_features)
            chunks[j].append(pooled.cpu())
            if len(info) <= j:
                info.append({"shape": list(h.shape[1:]), "pooling": how})
    feats = [torch.cat(c) for c in chunks]
    for rec, f in zip(info, feats):
        rec["features"] = int(f.shape[1])
    return feats, info


@torch.no_grad()
def last_features(network: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, nn.Linear] | None:
    """(the input of the nn.Linear that runs last in a forward pass, for all of ``x``, as
    (N, p); that layer), or None if the network runs no nn.Linear.

    "Last to run", found with forward hooks, rather than "last registered": it is the layer
    that produces the scores, whatever order a model declares its modules in.
    """
    network.eval()
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], _out: Any) -> None:
        calls.append((module, args[0].detach()))

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, nn.Linear)]
    try:
        layer: nn.Module | None = None
        chunks = []
        for xb, _ in batches(x, x.new_zeros(x.shape[0], dtype=torch.long), BATCH):
            calls.clear()
            network(xb)
            if not calls:
                return None
            layer = calls[-1][0]
            chunks.append(calls[-1][1].float().reshape(xb.shape[0], -1).cpu())
        if not isinstance(layer, nn.Linear):
            return None  # no samples
        return torch.cat(chunks), layer
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _predictions(rule: Any, x: torch.Tensor) -> np.ndarray:
    rule.train(False)
    out = [
        rule.predict(xb).argmax(dim=1).cpu()
        for xb, _ in batches(x, x.new_zeros(x.shape[0], dtype=torch.long), BATCH)
    ]
    return torch.cat(out).numpy()


def collapse_report(
    rule: Any,
    data: Dataset,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
) -> dict[str, Any]:
    """NC1-NC4 on the training features (as the paper measures them), NC4 also on test."""
    found = last_features(rule.network, x_train)
    if found is None:
        return {
            "skipped": "the network has no nn.Linear layer whose input could be the last features"
        }
    feats, layer = found
    if layer.out_features != data.classes:
        return {
            "skipped": f"the last linear layer maps to {layer.out_features} outputs, not the "
            f"{data.classes} classes: it is not a classifier over last features"
        }
    labels = y_train.cpu().numpy()
    h = feats.numpy()
    if len(np.unique(labels)) < 2:
        return {"skipped": "fewer than two classes in the probed training samples"}
    out = neural_collapse(
        h, labels, layer.weight.detach().cpu().numpy(), _predictions(rule, x_train)
    )
    test = last_features(rule.network, x_test)
    if test is not None:
        out["nc4_test"] = nc4(h, labels, _predictions(rule, x_test), query=test[0].numpy())
    out["features"] = int(h.shape[1])
    out["samples"] = int(h.shape[0])
    return out


def shortcut_report(rule: Any, data: Dataset, device: torch.device) -> dict[str, Any]:
    """Shortcut bias of the network's predictions on the test set (Hermann et al., ICLR
    2024), as ``studies.shortcut.shortcut_bias`` defines it."""
    from locallearn.studies.shortcut import shortcut_bias

    rule.train(False)
    try:
        return shortcut_bias(rule.predict, data, device=device)
    except UsageError as err:  # e.g. a subset that dropped the latent features
        return {"skipped": str(err)}


def _block_ends(cuts: list[int], units: int) -> list[int]:
    """Unit boundaries where blocks end (boundary j = the output of unit j, 1-based)."""
    ends = [c for c in cuts if 0 < c < units]
    return sorted(set(ends)) + [units]


def _load(run_dir: Path, custom_given: bool) -> Any:
    """The run's config, after checking that ``run_dir`` holds a run that can be rebuilt."""
    config_path = run_dir / "config.toml"
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory; probe takes a run directory")
    if not config_path.exists():
        raise UsageError(
            f"{run_dir} is not a run directory: {config_path.name} is missing "
            "(make one with `locallearn train --out DIR`)"
        )
    if not (run_dir / "checkpoint.pt").exists():
        raise UsageError(f"{run_dir} holds no checkpoint.pt: the run never finished an epoch")
    from locallearn.engine.run import load_run_config

    cfg = load_run_config(config_path)
    if not custom_given and "custom" in (cfg.model, cfg.data):
        what = "model" if cfg.model == "custom" else "dataset"
        raise UsageError(
            f"{run_dir} was trained on a custom {what} passed to the Python API; probe it with "
            "probe_run(run_dir, network=..., dataset=...)"
        )
    return cfg


def probe_run(
    run_dir: str | Path,
    *,
    device: str | None = None,
    max_train: int | None = MAX_TRAIN,
    max_features: int = MAX_FEATURES,
    network: nn.Sequential | None = None,
    dataset: Dataset | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Probe the finished run in ``run_dir``; returns (and writes as probe.json) the report.

    ``device`` defaults to the run's own device, or the CPU when that is not available.
    ``network``/``dataset`` rebuild a run trained on a custom model or data through the API.
    """
    from locallearn.engine.run import Run, read_summary

    run_dir = Path(run_dir)
    cfg = _load(run_dir, custom_given=network is not None or dataset is not None)
    if device is None:
        device = cfg.device if cfg.device == "cpu" or torch.cuda.is_available() else "cpu"
    if device == "cpu":
        cfg = cfg.replace(device="cpu", amp=False, channels_last=False)
    else:
        cfg = cfg.replace(device=device)
    # Building a Run seeds the global RNG and loading its checkpoint restores the run's RNG
    # state; a probe is a read-only measurement, so the caller's RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        run = Run(cfg, run_dir, dataset=dataset, network=network)
        run.load_checkpoint()
    if run.data.task == "regression":
        raise UsageError(
            f"{run_dir} is a regression run ({cfg.data}); probes measure class accuracy and "
            "apply to classification runs only"
        )
    if run.state.epoch < cfg.epochs:
        raise UsageError(
            f"{run_dir} is unfinished (epoch {run.state.epoch} of {cfg.epochs}); finish it with "
            f"`locallearn resume {run_dir}` before probing"
        )
    if run.graph is not None:
        raise UsageError(
            f"{run_dir} trained on graph dataset {cfg.data!r}; probes read samples, not the "
            "nodes of one graph, and do not handle graph runs yet"
        )
    refusal = getattr(run.rule, "probe_refusal", None)
    if refusal is not None:
        raise UsageError(f"{run_dir}: rule {cfg.rule!r} cannot be probed unit by unit: {refusal}")
    rule, data = run.rule, run.data
    x_train, y_train = _subset(data.x_train, data.y_train, max_train)
    x_train, y_train = x_train.to(run.device), y_train.to(run.device)
    x_test, y_test = data.x_test.to(run.device), data.y_test.to(run.device)

    feats_train, info = unit_features(rule.network, x_train, max_features)
    feats_test, _ = unit_features(rule.network, x_test, max_features)
    units = len(info) - 1
    ends = _block_ends(list(rule.cuts), units)
    records = []
    for j, (tr, te, rec) in enumerate(zip(feats_train, feats_test, info)):
        result = linear_probe(tr, y_train.cpu(), te, y_test.cpu(), data.classes)
        records.append(
            {
                "boundary": j,
                "after": "input" if j == 0 else f"unit {j}",
                "block_end": ends.index(j) + 1 if j in ends else None,
                **rec,
                **result,
            }
        )

    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "rule": cfg.rule,
        "model": cfg.model,
        "data": cfg.data,
        "seed": cfg.seed,
        "epochs": run.state.epoch,
        "blocks": rule.blocks,
        "cuts": list(rule.cuts),
        "device": str(run.device),
        "test_acc": evaluate(rule, x_test, y_test),
        "probe_method": "softmax regression, L-BFGS (at most 100 iterations) on standardised "
        "features, l2 1e-3",
        "probe_train_samples": int(x_train.shape[0]),
        "probe_test_samples": int(x_test.shape[0]),
        "max_features": max_features,
        "units": records,
        "blocks_probe": [records[j] | {"block": k + 1} for k, j in enumerate(ends)],
        "input_probe_acc": records[0]["test_acc"],
        "collapse": collapse_report(rule, data, x_train, y_train, x_test, y_test),
        "filters": filter_quality(rule.network),
    }
    if cfg.data == "shortcut":
        report["shortcut"] = shortcut_report(rule, data, run.device)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        report["summary_test_acc"] = read_summary(summary_path).get("test_acc")
    if write:
        atomic_write_json(run_dir / "probe.json", report)
        from locallearn.probes.plot import plot_probe

        plot_probe(report, run_dir)
    return report


def probe_text(report: dict[str, Any]) -> str:
    """The report as terminal tables: probes per unit, collapse, filters."""
    from locallearn.report import format_table

    head = (
        f"{report['rule']} (K={report['blocks']}) {report['model']} on {report['data']}, "
        f"seed {report['seed']}: network test acc {report['test_acc']:.4f}"
    )
    rows = [
        [
            u["after"],
            u["block_end"] if u["block_end"] is not None else "",
            "x".join(map(str, u["shape"])),
            f"{u['features']} ({u['pooling']})",
            f"{u['train_acc']:.4f}",
            f"{u['test_acc']:.4f}",
        ]
        for u in report["units"]
    ]
    parts = [
        head,
        format_table(
            ["probe after", "end of block", "shape", "features", "train acc", "test acc"], rows
        ),
    ]
    c = report["collapse"]
    if "skipped" in c:
        parts.append(f"neural collapse: skipped ({c['skipped']})")
    else:
        parts.append(
            f"neural collapse ({c['samples']} train samples, {c['features']} features): "
            f"NC1 {c['nc1']:.4g}  NC2 equinorm {c['nc2_equinorm']:.4g} "
            f"equiangle {c['nc2_equiangle']:.4g}  NC3 {c['nc3']:.4g}  "
            f"NC4 {c['nc4']:.4g} (test {c.get('nc4_test', float('nan')):.4g})"
        )
    if report["filters"]:
        rows = [
            [
                f["layer"],
                f"{f['kind']} {'x'.join(map(str, f['kernel']))}",
                f["filters"],
                f"{f['sparsity']:.4f}",
                f"{f['variance_entropy']:.4f} / {f['max_entropy']:.4f}",
            ]
            for f in report["filters"]
        ]
        parts.append(
            format_table(["layer", "kernel", "filters", "sparsity", "variance entropy / max"], rows)
        )
    if "shortcut" in report:
        parts.append(f"shortcut bias: {json.dumps(report['shortcut'])}")
    return "\n\n".join(parts)
