"""The Python API: ``train`` and ``compare`` with the same options as the CLI.

    import locallearn
    summary = locallearn.train(rule="greedy", model="cnn1d", data="mnist1d", blocks=3, epochs=5)
    rows = locallearn.compare(rules=["bp", "greedy"], epochs=5)

``model`` may also be your own ``nn.Sequential`` (its children are the units that rules cut
between) and ``data`` your own tensors ``(x_train, y_train, x_test, y_test)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locallearn.config import RunConfig, check_momentum_applies, config_from_mapping
from locallearn.data import Dataset, as_sequences
from locallearn.data.subset import split_validation
from locallearn.engine.limits import check_rule_builds
from locallearn.engine.run import EpochCallback, Run, check_fresh_run_dir, load_configured_dataset
from locallearn.errors import UsageError
from locallearn.recipe import same_recipe as same_recipe_config
from locallearn.rules import RULES, rule_applies

DataArg = str | Dataset | tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _as_dataset(data: DataArg) -> Dataset | None:
    if isinstance(data, str):
        return None
    if isinstance(data, Dataset):
        return data
    try:
        x_train, y_train, x_test, y_test = data
    except (TypeError, ValueError):
        raise UsageError(
            "data must be a dataset name, a Dataset, or (x_train, y_train, x_test, y_test)"
        )
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    if y_train.is_floating_point():  # float targets: a regression dataset, one output
        y_train, y_test, task, classes = y_train.float(), y_test.float(), "regression", 1
    else:
        y_train, y_test, task = y_train.long(), y_test.long(), "classification"
        classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(
        name="custom",
        x_train=torch.as_tensor(x_train).float(),
        y_train=y_train,
        x_test=torch.as_tensor(x_test).float(),
        y_test=y_test,
        classes=classes,
        source="tensors passed to the Python API",
        task=task,
    )


def _resolve(
    rule: str, model: str | nn.Sequential, data: DataArg, options: dict[str, Any]
) -> tuple[RunConfig, Dataset | None, nn.Sequential | None]:
    dataset = _as_dataset(data)
    network = model if isinstance(model, nn.Module) else None
    if network is not None and not isinstance(network, nn.Sequential):
        raise UsageError("a custom model must be an nn.Sequential (its children are the units)")
    values = dict(options, rule=rule)
    values["model"] = "custom" if network is not None else model
    values["data"] = dataset.name if dataset is not None else data
    cfg = config_from_mapping(values)
    check_momentum_applies(values, optimizers_used(cfg, [rule]), where="momentum")
    if dataset is not None and cfg.as_sequence:
        dataset = as_sequences(dataset)
    return cfg, dataset, network


def train(
    rule: str = "bp",
    model: str | nn.Sequential = "cnn1d",
    data: DataArg = "mnist1d",
    *,
    out: str | Path | None = None,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train one run and return its summary dict (see DESIGN.md for the keys).

    ``options`` are RunConfig fields (``blocks``, ``epochs``, ``lr``, ``head`` ...). With
    ``out`` the run directory (config, metrics, checkpoint, summary) is written there.
    """
    cfg, dataset, network = _resolve(rule, model, data, options)
    if (cfg.workers or 1) > 1:
        raise UsageError(
            f"train(workers={cfg.workers}) runs in one process; start a run on workers with "
            f"`locallearn train ... --workers {cfg.workers}` or under torchrun"
        )
    return Run(
        cfg, out, dataset=dataset, network=network, progress=progress, on_epoch=on_epoch
    ).fit()


def optimizers_used(cfg: RunConfig, rules: Sequence[str]) -> list[str]:
    """The optimizer each of ``rules`` trains with under ``cfg``: the user's, else the rule's
    recipe's, else the global default's (unknown rule names are left to their own check)."""
    from locallearn.recipe import GLOBAL

    if cfg.optimizer is not None:
        return [cfg.optimizer]
    out = []
    for name in rules:
        if name not in RULES:
            continue
        recipe = RULES.get(name).meta.get("recipe")
        out.append((recipe.optimizer if recipe is not None else None) or GLOBAL.optimizer)
    return out


def default_rules(model: str | None = None) -> list[str]:
    """Every registered rule that applies to ``model`` (all for a custom network), BP first
    (it is the reference the others are compared to)."""
    names = [r for r in RULES.names() if model is None or rule_applies(r, model)]
    return sorted(names, key=lambda name: (name != "bp", name))


def configs_for_rules(cfg: RunConfig, rules: Sequence[str]) -> list[RunConfig]:
    """One config per rule; a rule option goes to the rules that take it.

    An option that no listed rule takes is an error, not silently ignored.
    """
    if not rules:
        raise UsageError("give at least one rule to compare")
    canonical = [RULES.canonical(r) for r in rules]
    if len(set(canonical)) != len(canonical):
        raise UsageError(f"--rules lists a rule twice: {','.join(rules)}")
    rule_options = {k: v for k, v in cfg.rule_options().items() if v is not None}
    for key in rule_options:
        if not any(key in RULES.get(r).options for r in canonical):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} does not apply to any of the rules {', '.join(canonical)}")
    configs = []
    for name in canonical:
        takes = RULES.get(name).options
        dropped = {k: None for k in rule_options if k not in takes}
        if cfg.momentum is not None and optimizers_used(cfg, [name]) == ["adam"]:
            dropped["momentum"] = None  # the user's momentum is for the rules that use SGD
        configs.append(cfg.replace(rule=name, **dropped))
    return configs


def compare(
    rules: Sequence[str] | str | None = None,
    model: str | nn.Sequential = "cnn1d",
    data: DataArg = "mnist1d",
    *,
    out: str | Path | None = None,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    seeds: Sequence[int] | None = None,
    same_recipe: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Train each rule with the same seed, data order and initial weights; one summary each
    (one per rule and seed with ``seeds``).

    Each rule trains at its own recipe (see ``locallearn list rules``) except for what the
    options set; ``same_recipe`` gives every rule the global default instead. With ``out``,
    each rule's run directory is ``out/<rule>`` (``out/<rule>-s<seed>`` with ``seeds``).
    """
    if rules is None:
        rules = default_rules(model if isinstance(model, str) else None)
    elif isinstance(rules, str):
        rules = [r for r in rules.split(",") if r]
    cfg, dataset, network = _resolve(rules[0] if rules else "bp", model, data, options)
    return compare_configs(
        cfg,
        rules,
        out,
        dataset=dataset,
        network=network,
        progress=progress,
        on_epoch=on_epoch,
        seeds=seeds,
        same_recipe=same_recipe,
    )


def compare_configs(
    cfg: RunConfig,
    rules: Sequence[str],
    out: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    network: nn.Sequential | None = None,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    on_run: Callable[[list[dict[str, Any]]], None] | None = None,
    seeds: Sequence[int] | None = None,
    same_recipe: bool = False,
) -> list[dict[str, Any]]:
    """``compare`` for a resolved config (the CLI's entry). ``on_run`` gets the summaries so
    far after each rule finishes, so a caller can report or save partial results.

    With ``seeds``, every rule trains once per seed (all rules on a seed before the next).
    """
    if same_recipe:
        cfg = same_recipe_config(cfg)
    configs = (
        [c.replace(seed=seed) for seed in check_seeds(seeds) for c in configs_for_rules(cfg, rules)]
        if seeds
        else configs_for_rules(cfg, rules)
    )
    name = (lambda c: f"{c.rule}-s{c.seed}") if seeds else (lambda c: c.rule)
    run_dirs = [Path(out) / name(c) if out is not None else None for c in configs]
    for run_dir in run_dirs:  # refuse before training anything, not after the first rule
        if run_dir is not None:
            check_fresh_run_dir(run_dir)
    if dataset is None:
        dataset = load_configured_dataset(cfg)
    # A rule that cannot be built for this model fails now, not after the others trained.
    for rule_cfg in configs if network is None else ():
        check_rule_builds(rule_cfg, dataset)
    dataset = _with_validation(dataset, cfg)
    results: list[dict[str, Any]] = []
    for rule_cfg, run_dir in zip(configs, run_dirs):
        net = copy.deepcopy(network) if network is not None else None
        run = Run(
            rule_cfg, run_dir, dataset=dataset, network=net, progress=progress, on_epoch=on_epoch
        )
        results.append(run.fit())
        if on_run is not None:
            on_run(results)
    return results


def check_seeds(seeds: Sequence[int] | None) -> list[int]:
    """``--seeds``: distinct integers (None: none given)."""
    if seeds is None:
        return []
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds must list distinct seeds, e.g. 0,1,2; got {seeds}")
    return seeds


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` (or a range ``0-4``)."""
    try:
        if "-" in text.strip("-") and "," not in text:
            first, last = (int(v) for v in text.split("-", 1))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}")
    return check_seeds(seeds)


def train_seeds(
    cfg: RunConfig,
    seeds: Sequence[int],
    out: str | Path | None = None,
    *,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    on_run: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """``train --seeds``: the run of ``cfg`` once per seed (``out/s<seed>`` each)."""
    configs = [cfg.replace(seed=seed) for seed in check_seeds(seeds)]
    run_dirs = [Path(out) / f"s{c.seed}" if out is not None else None for c in configs]
    for run_dir in run_dirs:
        if run_dir is not None:
            check_fresh_run_dir(run_dir)
    dataset = _with_validation(load_configured_dataset(cfg), cfg)
    results: list[dict[str, Any]] = []
    for seed_cfg, run_dir in zip(configs, run_dirs):
        run = Run(seed_cfg, run_dir, dataset=dataset, progress=progress, on_epoch=on_epoch)
        results.append(run.fit())
        if on_run is not None:
            on_run(results)
    return results


def _with_validation(dataset: Dataset, cfg: RunConfig) -> Dataset:
    # Split once for all runs of a comparison (each Run would otherwise copy the data again).
    if dataset.x_val is None and cfg.val_split > 0:
        return split_validation(dataset, cfg.val_split, cfg.data_seed or 0)
    return dataset
