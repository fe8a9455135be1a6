"""The ``locallearn`` command line: list, train, compare, resume, measure.

User errors (unknown names, bad values, missing files) print one line and exit 2; the
contract is in DESIGN.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from locallearn import cli_results
from locallearn.config import (
    LR_SCHEDULES,
    OPTIMIZERS,
    RunConfig,
    check_momentum_applies,
    config_from_mapping,
    read_config_values,
    validate,
)
from locallearn.engine.outputs import check_out_dir, check_out_file, check_plot_file
from locallearn.engine.provenance import set_command
from locallearn.engine.run import EpochCallback
from locallearn.errors import Diverged, UsageError

EXIT_USAGE = 2
EXIT_DIVERGED = 3  # training blew up (non-finite loss or weights); see engine/divergence.py
EXIT_PEER_LOST = 4  # a worker stopped because another worker of its job died (parallel/)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming the problem, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _run_options(parser: argparse.ArgumentParser, *, compare: bool) -> None:
    # Every run option defaults to SUPPRESS, so the namespace holds only what the user typed:
    # that is what lets a config file supply the rest (flags win) and lets us reject a flag
    # that does not apply to the chosen rule or model.
    S = argparse.SUPPRESS
    rule = parser.add_argument_group("rule")
    if compare:
        rule.add_argument(
            "--rules", default=None, help="comma-separated rules to compare (default: every rule)"
        )
    else:
        rule.add_argument("--rule", dest="rule", default=S, help="learning rule (default: bp)")
    rule.add_argument("--blocks", type=int, default=S, help="number of blocks K")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=S, help="model name (default: cnn1d)")
    groups = {"rule": rule, "model": model}
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=S, help="dataset name (default: mnist1d)")
    data.add_argument(
        "--data-dir",
        dest="data_dir",
        default=S,
        help="folder with dataset files (default: $LOCALLEARN_DATA or ~/.locallearn/data)",
    )
    data.add_argument(
        "--train-limit",
        dest="train_limit",
        type=int,
        default=S,
        help="train on a fixed stratified subset of N samples",
    )
    _optimisation_options(parser, epochs=True)
    run = parser.add_argument_group("run")
    groups.update(data=data, run=run)
    _field_options(groups, skip=PARALLEL_FIELDS if compare else ())
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help="run directory (compare: one folder per rule)")
    out.add_argument("--config", default=None, help="TOML file of options; flags override it")
    out.add_argument("--json", default=None, help="write the summary (compare: a list) here")
    if compare:
        out.add_argument("--plot", default=None, help="write the comparison figure here (.png)")
    out.add_argument("--quiet", action="store_true", help="no progress output")
    seeds = parser.add_argument_group("seeds and recipes")
    seeds.add_argument(
        "--seeds",
        default=None,
        help="train once per seed, e.g. 0,1,2; the table shows mean ± std, the JSON every run",
    )
    if compare:
        seeds.add_argument(
            "--same-recipe",
            dest="same_recipe",
            action="store_true",
            help="train every rule with the global default recipe instead of its own",
        )
    if not compare:
        _port_option(parser)


def _port_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="--workers: TCP port of the job's rendezvous on 127.0.0.1 (default: a free one)",
    )


def _optimisation_options(parser: argparse.ArgumentParser, *, epochs: bool) -> None:
    S = argparse.SUPPRESS
    opt = parser.add_argument_group("optimisation")
    if epochs:
        opt.add_argument("--epochs", type=int, default=S, help="epochs (default: 60)")
    # Defaults of these: the rule's recipe (`locallearn list rules`), then the global one.
    opt.add_argument(
        "--batch-size", dest="batch_size", type=int, default=S, help="default: recipe, else 100"
    )
    opt.add_argument(
        "--lr", type=float, default=S, help="learning rate (default: recipe, else 1e-2)"
    )
    opt.add_argument(
        "--optimizer", default=S, help=f"{'|'.join(OPTIMIZERS)} (default: recipe, else adam)"
    )
    opt.add_argument(
        "--momentum",
        type=float,
        default=S,
        help="SGD momentum (default: recipe, else 0.9); an error with adam",
    )
    opt.add_argument(
        "--weight-decay", dest="weight_decay", type=float, default=S, help="default: recipe, else 0"
    )
    opt.add_argument(
        "--lr-schedule",
        dest="lr_schedule",
        default=S,
        help=f"{'|'.join(LR_SCHEDULES)}: lr per epoch; cooldown = constant for the first "
        "half, then linear towards 0 (default: recipe, else constant)",
    )
    opt.add_argument("--seed", type=int, default=S, help="default: 0")
    opt.add_argument("--device", default=S, help="cpu|cuda (default: cpu)")


_FLAG_TYPES = {"int": int, "float": float, "str": str}
# Options of a run on workers: train and resume take them, compare and measure do not.
PARALLEL_FIELDS = ("workers", "placement", "transport", "worker_timeout")


def _field_options(groups: dict[str, Any], skip: Sequence[str] = ()) -> None:
    """A flag for every RunConfig field that names its group (model, rule, data, run);
    fields of groups not in ``groups`` and fields named in ``skip`` get none."""
    for f in dataclasses.fields(RunConfig):
        group = f.metadata.get("group")
        if group is None or group not in groups or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).split(" ")[0]
        if kind == "bool":
            groups[group].add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f.metadata["help"],
            )
        else:  # list[int] stays a string: config_from_mapping parses "1,3"
            groups[group].add_argument(
                flag,
                dest=f.name,
                type=_FLAG_TYPES.get(kind, str),
                default=argparse.SUPPRESS,
                help=f.metadata["help"],
            )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="locallearn", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    lister = sub.add_parser("list", help="list rules, models or datasets")
    lister.add_argument("what", help="rules | models | datasets")
    _run_options(sub.add_parser("train", help="train one rule"), compare=False)
    _run_options(sub.add_parser("compare", help="train several rules and compare"), compare=True)
    resume = sub.add_parser("resume", help="continue a run from its last checkpoint")
    resume.add_argument("run_dir")
    resume.add_argument(
        "--epochs", type=int, default=None, help="extend the run to N epochs in total"
    )
    resume.add_argument("--json", default=None, help="write the summary here")
    resume.add_argument("--quiet", action="store_true", help="no progress output")
    _port_option(resume)
    _measure_options(
        sub.add_parser("measure", help="memory and time of training steps, on random inputs")
    )
    _sweep_options(sub.add_parser("sweep", help="studies: `sweep dsd` (DSD sample complexity)"))
    _probe_options(sub.add_parser("probe", help="what a finished run learned (probes, collapse)"))
    cli_results.add_parsers(sub)
    return parser


def _probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run(s)")
    parser.add_argument("--device", default=None, help="cpu|cuda (default: the run's, else cpu)")
    parser.add_argument(
        "--max-train",
        dest="max_train",
        type=int,
        default=10_000,
        help="training samples used by probes and collapse statistics (default: 10000)",
    )
    parser.add_argument("--plot", default=None, help="one figure comparing the runs (.png)")
    parser.add_argument("--json", default=None, help="write the list of reports here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="dsd: smallest n reaching a target accuracy, per model")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--full", action="store_true", help="the larger grid (slow: hours on CPU)")
    grid.add_argument("--patches", default=None, help="values of k, e.g. 2,4,8")
    grid.add_argument("--patch-dims", dest="patch_dims", default=None, help="values of d")
    grid.add_argument("--models", default=None, help="default: dsd-cnn,dsd-lcn,dsd-fcn")
    grid.add_argument("--sigma", type=float, default=None, help="noise std (default: 0.5)")
    grid.add_argument("--seeds", type=int, default=None, help="seeds per n (default: 3)")
    grid.add_argument(
        "--target",
        type=float,
        default=None,
        help="fraction of the way from chance to Bayes accuracy (default: 0.75)",
    )
    grid.add_argument("--n-max", dest="n_max", type=int, default=None, help="largest n tried")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help="folder for dsd_sweep.json/.txt/.png")
    out.add_argument("--json", default=None, help="also write the JSON here")
    out.add_argument("--quiet", action="store_true", help="no progress output")


def _measure_options(parser: argparse.ArgumentParser) -> None:
    # The rule and model options of train (same RunConfig fields, same flags); no data.
    S = argparse.SUPPRESS
    rule = parser.add_argument_group("rule")
    rule.add_argument("--rule", dest="rule", default=S, help="one learning rule")
    rule.add_argument("--rules", default=None, help="comma-separated rules (default: all)")
    rule.add_argument("--blocks", type=int, default=S, help="number of blocks K")
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="model name")
    shape = parser.add_argument_group("input")
    shape.add_argument(
        "--input-shape", dest="input_shape", required=True, help="one input, e.g. 3x32x32"
    )
    shape.add_argument("--classes", type=int, default=10, help="number of classes (default: 10)")
    _optimisation_options(parser, epochs=False)
    run = parser.add_argument_group("run")
    _field_options(
        {"rule": rule, "model": model, "run": run},
        skip=("augment", "as_sequence", "log", *PARALLEL_FIELDS),
    )
    timing = parser.add_argument_group("measurement")
    timing.add_argument(
        "--steps", type=int, default=3, help="timed steps (default: 3; 0: memory only)"
    )
    timing.add_argument(
        "--warmup", type=int, default=1, help="untimed steps before them (default: 1)"
    )
    timing.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each rule in a fresh process, so its peak RSS is its own (default: on CPU "
        "with several rules)",
    )
    pipeline = parser.add_argument_group("workers (a prediction, docs/parallel.md)")
    pipeline.add_argument(
        "--workers", type=int, default=None, help="predict a run on W pipelined workers"
    )
    pipeline.add_argument(
        "--bandwidth",
        type=float,
        default=None,
        help="link bytes/s between workers, e.g. 1.25e9 for 10 GbE (default: one host)",
    )
    pipeline.add_argument(
        "--latency", type=float, default=None, help="link latency in s (default: 5e-5)"
    )
    pipeline.add_argument(
        "--epoch-steps",
        dest="epoch_steps",
        type=int,
        default=100,
        help="batches per simulated epoch (default: 100)",
    )
    pipeline.add_argument(
        "--placement", default=None, help="first stage of workers 2..W (default: balanced)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", default=None, help="write the list of results here")
    out.add_argument("--quiet", action="store_true", help="no progress output")


def _version() -> str:
    from locallearn import __version__

    return f"locallearn {__version__}"


_NOT_CONFIG = {
    "command",
    "out",
    "config",
    "json",
    "plot",
    "quiet",
    "rules",
    "seeds",
    "same_recipe",
    "port",
    "argv",
}


def _config(args: argparse.Namespace) -> RunConfig:
    """Defaults < config file < flags, checked before anything is loaded or built."""
    values = read_config_values(args.config) if args.config else {}
    if "out" in values:  # the run directory may come from the file too (--out wins)
        out = values.pop("out")
        if not isinstance(out, str):
            raise UsageError(f"out in config file {args.config!r} must be a folder name (a string)")
        if getattr(args, "out", None) is None:
            args.out = out
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and k != "file_keys"}
    args.file_keys = sorted(set(values) - set(flags))
    try:
        base = config_from_mapping(values)
    except UsageError as err:
        raise UsageError(f"config file {args.config!r}: {err}") from None
    cfg = config_from_mapping(flags, base)
    from locallearn.api import default_rules, optimizers_used

    if getattr(args, "rules", None):
        rules = [r for r in args.rules.split(",") if r]
    elif args.command == "compare":
        rules = default_rules(cfg.model) if cfg.model in _model_names() else []
    else:
        rules = [cfg.rule]
    check_momentum_applies({**values, **flags}, optimizers_used(cfg, rules))
    validate(cfg)
    return cfg


def _model_names() -> list[str]:
    from locallearn.models import MODELS

    return MODELS.names()


def _name_config_keys(message: str, args: argparse.Namespace) -> str:
    """A message that blames a flag the user set in the config file names the file's key."""
    for key in getattr(args, "file_keys", ()):
        flag = "--" + key.replace("_", "-")
        if re.search(re.escape(flag) + r"(?![\w-])", message):
            return f"{message} (set by `{key}` in {args.config})"
    return message


def _out_dir(args: argparse.Namespace, default: Path) -> Path:
    """The run directory: --out (or the config file's out), else ``default``; checked now."""
    path = check_out_dir(args.out) if args.out is not None else check_out_dir(default)
    args.run_dir_hint = path
    return path


def _check_outputs(args: argparse.Namespace) -> None:
    if getattr(args, "json", None) is not None:
        check_out_file(args.json, "--json")
    if getattr(args, "plot", None) is not None:
        check_plot_file(args.plot)


def _table_stream(args: argparse.Namespace) -> Any:
    """Tables go to standard output, unless --json - claimed it for the JSON."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _loss_text(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"  # None: the last block rested all epoch


def _score_text(record: dict[str, Any]) -> str:
    """Test accuracy, or for a regression run (test_acc None) test R^2 and RMSE."""
    if record.get("test_acc") is None and record.get("test_r2") is not None:
        return f"test R2 {record['test_r2']:.4f}  RMSE {record['test_rmse']:.4g}"
    return f"test acc {record['test_acc']:.4f}"


def _reporter(quiet: bool) -> tuple[bool, EpochCallback | None]:
    """(show a progress bar?, per-epoch callback for logs).

    On a terminal: a progress bar. Piped into a log: one line per epoch, at most one every
    10 seconds (and always the last), so long runs show progress without flooding the log.
    """
    if quiet:
        return False, None
    if sys.stderr.isatty():
        return True, None
    last = [0.0]

    def log_epoch(record: dict[str, Any], cfg: RunConfig) -> None:
        now = time.monotonic()
        if now - last[0] >= 10 or record["epoch"] == cfg.epochs:
            last[0] = now
            held_out = next(
                (
                    f"  {k.split('_')[0]} acc {record[k]:.4f}"
                    for k in ("val_acc", "test_acc")
                    if record.get(k) is not None
                ),
                "",
            )
            if record.get("test_acc") is None and record.get("test_r2") is not None:
                held_out = f"  {_score_text(record)}"  # a regression run
            print(
                f"[{cfg.rule}] epoch {record['epoch']}/{cfg.epochs}  "
                f"loss {_loss_text(record['train_loss'])}{held_out}",
                file=sys.stderr,
                flush=True,
            )

    return False, log_epoch


def _finished(summary: dict[str, Any], quiet: bool) -> None:
    if quiet:
        return
    from locallearn.report import format_bytes
    from locallearn.report.table import settings_text

    val = summary.get("val_acc")
    print(
        f"[{summary['rule']}] seed {summary['seed']}  {_score_text(summary)}  "
        + (f"val acc {val:.4f}  " if val is not None else "")
        + f"[{settings_text(summary)}]  "
        f"act memory {format_bytes(summary['act_bytes_peak'])}  "
        f"{summary['epoch_seconds']:.3f}s/epoch  -> {summary['run_dir']}",
        file=sys.stderr,
    )


def _write_json(path: str | None, obj: Any) -> None:
    if path == "-":
        print(json.dumps(obj, indent=2), flush=True)
    elif path:
        from locallearn.engine.io import atomic_write_json

        atomic_write_json(path, obj)


def cmd_list(args: argparse.Namespace) -> int:
    from locallearn.report import format_table

    what = args.what
    if what in ("rules", "rule"):
        from locallearn.rules import rule_infos

        infos = rule_infos()
        rows = [[r["name"], r["options"], r["description"]] for r in infos]
        print(format_table(["rule", "options", "description"], rows))
        print()
        rows = [[r["name"].split(" ")[0], r["recipe"], r["recipe_source"]] for r in infos]
        print(format_table(["rule", "recipe (for options not set)", "source"], rows))
    elif what in ("models", "model"):
        from locallearn.models import model_infos

        rows = [[m["name"], m["options"], m["description"]] for m in model_infos()]
        print(format_table(["model", "options", "description"], rows))
    elif what in ("datasets", "dataset", "data"):
        from locallearn.data import dataset_infos

        rows = [
            [
                d["name"],
                "x".join(map(str, d["shape"])),
                d["classes"],
                d.get("nodes", "-"),  # graph datasets: nodes, edges (directed pairs)
                d.get("edges", "-"),
                d["source"],
            ]
            for d in dataset_infos()
        ]
        print(format_table(["dataset", "shape", "classes", "nodes", "edges", "source"], rows))
    else:
        from locallearn.errors import unknown_choice

        raise unknown_choice("list", what, ["rules", "models", "datasets"])
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from locallearn.api import parse_seeds, train_seeds
    from locallearn.engine.run import Run
    from locallearn.report import summary_table

    cfg = _config(args)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    seed_text = "s" + "_".join(map(str, seeds)) if seeds else f"s{cfg.seed}"
    out = _out_dir(args, Path("runs") / f"{cfg.rule}-{cfg.model}-{cfg.data}-{seed_text}-{_stamp()}")
    _check_outputs(args)
    if seeds and (cfg.workers or 1) > 1:
        raise UsageError("--seeds trains one process per seed; drop --seeds or --workers")
    code = _on_workers(args, cfg, out, resume=False)
    if code is not None:
        return code
    progress, on_epoch = _reporter(args.quiet)
    if seeds:

        def on_run(summaries: list[dict[str, Any]]) -> None:
            _finished(summaries[-1], args.quiet)
            if args.json != "-":  # partial results survive a crash in a later seed
                _write_json(args.json, summaries)

        summaries = train_seeds(
            cfg, seeds, out, progress=progress, on_epoch=on_epoch, on_run=on_run
        )
        if args.json == "-":
            _write_json(args.json, summaries)
        print(summary_table(summaries), file=_table_stream(args))
        return 0
    run = Run(cfg, out, progress=progress, on_epoch=on_epoch)
    summary = run.fit()
    _write_json(args.json, summary)
    if summary.get("staged_test_score"):  # GBNN: the score after each round
        from locallearn.report.plot import plot_staged

        plot_staged(summary, out / "staged.png")
    _finished(summary, args.quiet)
    print(summary_table([summary]), file=_table_stream(args))
    return 0


def _on_workers(args: argparse.Namespace, cfg: RunConfig, out: Path, *, resume: bool) -> int | None:
    """A run on several workers: join the job in the environment (torchrun, or started by
    --workers), or start W workers here. None: an ordinary one-process run."""
    from locallearn.parallel.worker import in_job

    if in_job():
        from locallearn.parallel.worker import run_worker
        from locallearn.report import summary_table

        progress, on_epoch = _reporter(args.quiet)
        summary = run_worker(cfg, out, resume=resume, progress=progress, on_epoch=on_epoch)
        if summary is not None:  # worker 1 reports for the job
            _write_json(args.json, summary)
            _finished(summary, args.quiet)
            print(summary_table([summary]))
        return 0
    if (cfg.workers or 1) == 1:
        return None
    from locallearn.parallel.launch import launch, preflight

    preflight(cfg, out, resume=resume)
    argv = list(args.argv) if resume else [*args.argv, "--out", str(out)]
    return launch(argv, cfg.workers or 1, out, command=args.command, port=args.port)


def cmd_compare(args: argparse.Namespace) -> int:
    from locallearn.api import compare_configs, default_rules, parse_seeds
    from locallearn.report import summary_table

    cfg = _config(args)
    rules = [r for r in args.rules.split(",") if r] if args.rules else default_rules(cfg.model)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    seed_text = "s" + "_".join(map(str, seeds)) if seeds else f"s{cfg.seed}"
    out = _out_dir(args, Path("runs") / f"compare-{cfg.model}-{cfg.data}-{seed_text}-{_stamp()}")
    _check_outputs(args)
    progress, on_epoch = _reporter(args.quiet)

    def on_run(summaries: list[dict[str, Any]]) -> None:
        _finished(summaries[-1], args.quiet)
        if args.json != "-":  # partial results survive a crash in a later rule
            _write_json(args.json, summaries)

    summaries = compare_configs(
        cfg,
        rules,
        out,
        progress=progress,
        on_epoch=on_epoch,
        on_run=on_run,
        seeds=seeds,
        same_recipe=args.same_recipe,
    )
    if args.json == "-":
        _write_json(args.json, summaries)
    print(summary_table(summaries), file=_table_stream(args))
    if args.plot:
        from locallearn.report.plot import plot_comparison

        plot_comparison(summaries, args.plot)
        if not args.quiet:
            print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from locallearn.engine.run import load_run_config, resume_run
    from locallearn.report import summary_table

    _check_outputs(args)
    args.run_dir_hint = Path(args.run_dir)
    run_dir = Path(args.run_dir)
    if (run_dir / "config.toml").exists() and not (run_dir / "summary.json").exists():
        code = _on_workers(args, load_run_config(run_dir / "config.toml"), run_dir, resume=True)
        if code is not None:
            return code
    progress, on_epoch = _reporter(args.quiet)
    summary = resume_run(args.run_dir, progress=progress, on_epoch=on_epoch, epochs=args.epochs)
    _write_json(args.json, summary)
    _finished(summary, args.quiet)
    print(summary_table([summary]), file=_table_stream(args))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from locallearn.api import default_rules
    from locallearn.measure.step import (
        measure_configs,
        measure_note,
        measure_table,
        parse_input_shape,
    )

    _check_outputs(args)
    shape = parse_input_shape(args.input_shape)
    names = {f.name for f in dataclasses.fields(RunConfig)}
    cfg = config_from_mapping({k: v for k, v in vars(args).items() if k in names})
    if args.workers is None and (args.bandwidth, args.latency, args.placement) != (None,) * 3:
        raise UsageError("--bandwidth, --latency and --placement predict a run on --workers W")
    if args.workers is not None:
        return _measure_workers(args, cfg, shape)
    if args.rules is not None and "rule" in vars(args):
        raise UsageError("give --rule R or --rules R1,R2,..., not both")
    if args.rules is not None:
        rules = [r for r in args.rules.split(",") if r]
    elif "rule" in vars(args):
        rules = [cfg.rule]
    else:
        rules = default_rules(cfg.model)

    def on_result(results: list[dict[str, Any]]) -> None:
        if not args.quiet:
            from locallearn.report import format_bytes

            r = results[-1]
            step = "-" if r["step_seconds"] is None else f"{r['step_seconds'] * 1000:.1f} ms"
            print(
                f"[{r['rule']}] act memory {format_bytes(r['act_bytes_peak'])}  step {step}",
                file=sys.stderr,
                flush=True,
            )
        _write_json(args.json, results)  # partial results survive a later rule's failure

    results = measure_configs(
        cfg,
        rules,
        shape,
        args.classes,
        steps=args.steps,
        warmup=args.warmup,
        isolate=args.isolate,
        on_result=on_result,
    )
    print(measure_table(results))
    print(measure_note(results))
    return 0


def _measure_workers(args: argparse.Namespace, cfg: RunConfig, shape: tuple[int, ...]) -> int:
    from locallearn.parallel.simulate import predict_pipeline
    from locallearn.report import format_table

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.rules is not None:
        raise UsageError("measure --workers predicts one rule: give --rule R")
    if args.placement is not None:
        cfg = config_from_mapping({"placement": args.placement}, cfg)
    results = [
        predict_pipeline(
            cfg,
            shape,
            args.classes,
            args.workers,
            bandwidth=args.bandwidth,
            latency=args.latency,
            steps=args.epoch_steps,
        )
    ]
    rows = [
        [
            r["rule"],
            r["workers"],
            " ".join(f"{a}-{b - 1}" for a, b in r["placement"]),
            f"{r['samples_per_second']:.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['efficiency']:.2f}",
            " ".join(f"{f:.2f}" for f in r["idle_fraction"]),
        ]
        for r in results
    ]
    headers = ["rule", "W", "stages", "samples/s", "speedup", "efficiency", "idle"]
    print(format_table(headers, rows))
    link = "one host" if args.bandwidth is None else f"{args.bandwidth:.3g} B/s"
    print(f"predicted from measured stage times; link: {link}, latency {results[0]['latency']} s")
    _write_json(args.json, results)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from locallearn.errors import unknown_choice
    from locallearn.studies import dsd_sweep as sweep

    if args.study != "dsd":
        raise unknown_choice("study", args.study, ["dsd"])
    _check_outputs(args)
    if args.out is not None:
        check_out_dir(args.out)
    cfg = sweep.sweep_config(
        args.full,
        patches=args.patches and sweep.parse_ints(args.patches, "--patches"),
        patch_dims=args.patch_dims and sweep.parse_ints(args.patch_dims, "--patch-dims"),
        models=args.models and tuple(m for m in args.models.split(",") if m),
        sigma=args.sigma,
        seeds=args.seeds,
        target=args.target,
        n_max=args.n_max,
    )
    out = Path(args.out) if args.out else Path("runs") / f"sweep-dsd-{_stamp()}"
    result = sweep.run_sweep(cfg, None if args.quiet else sweep.stderr_log)
    paths = sweep.write_results(result, out)
    _write_json(args.json, result.to_json())
    print(sweep.table(result))
    if not args.quiet:
        print(f"results in {paths['json'].parent} ({result.seconds:.0f}s)", file=sys.stderr)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from locallearn.probes.run import probe_run, probe_text

    if args.max_train < 10:
        raise UsageError(f"--max-train must be at least 10, got {args.max_train}")
    _check_outputs(args)
    reports = []
    for run_dir in args.run_dirs:
        if not args.quiet:
            print(f"probing {run_dir} ...", file=sys.stderr, flush=True)
        report = probe_run(run_dir, device=args.device, max_train=args.max_train)
        reports.append(report)
        print(probe_text(report) + "\n")
        if not args.quiet:
            print(f"wrote {Path(run_dir) / 'probe.json'} and plots", file=sys.stderr)
    _write_json(args.json, reports)
    if args.plot:
        from locallearn.probes.plot import plot_probe_comparison

        plot_probe_comparison(reports, args.plot)
        if not args.quiet:
            print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


COMMANDS = {
    "list": cmd_list,
    "train": cmd_train,
    "compare": cmd_compare,
    "resume": cmd_resume,
    "measure": cmd_measure,
    "sweep": cmd_sweep,
    "probe": cmd_probe,
    **cli_results.COMMANDS,
}


def _worker_rank() -> int | None:
    """This process's rank when it is one worker of a job (torchrun, --workers), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


def _peer_failure(err: Exception) -> bool:
    """A worker stopping because another worker of its job died or fell silent."""
    if _worker_rank() is None or "torch" not in sys.modules:
        return False
    import torch.distributed as dist

    from locallearn.parallel.transport import PeerLost

    if isinstance(err, PeerLost | dist.DistError):
        return True
    # gloo reports a peer's closed socket as a plain RuntimeError from its TCP transport.
    text = str(err)
    return "gloo/transport" in text or "Connection reset by peer" in text


def _interrupted(args: argparse.Namespace) -> str:
    run_dir = getattr(args, "run_dir_hint", None)
    if run_dir is None:
        return "locallearn: interrupted"
    if args.command == "compare":
        started = sorted(p.parent for p in Path(run_dir).glob("*/config.toml"))
        if not started:
            return "locallearn: interrupted before the first run started; nothing to resume"
        last = started[-1]
        return f"locallearn: interrupted; continue the last run with `locallearn resume {last}`"
    if not (Path(run_dir) / "config.toml").exists():
        return "locallearn: interrupted before the run started; nothing to resume"
    return f"locallearn: interrupted; continue with `locallearn resume {run_dir}`"


def _show_warning(command: str) -> Any:
    """Our own warnings as one line in the CLI's voice; others (torch's) as Python shows them."""
    default = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        if "locallearn" in Path(filename).parts:
            print(f"locallearn {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, *rest)

    return show


def _peer_stopped(args: argparse.Namespace, rank: int | None, err: Exception) -> int:
    if not os.environ.get("LOCALLEARN_LAUNCHER"):  # else the launcher names the dead one
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        who = f"worker {(rank or 0) + 1}"
        print(f"locallearn {args.command}: {who} stopped: {first}", file=sys.stderr)
    return EXIT_PEER_LOST


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = build_parser().parse_args(argv)
    args.argv = argv
    rank = _worker_rank()
    prefix = f"locallearn {args.command}"
    set_command(["locallearn", *(sys.argv[1:] if argv is None else argv)])
    try:
        with warnings.catch_warnings():
            # once per invocation (also when main runs many times in one process)
            warnings.filterwarnings("default", category=UserWarning, module=r"locallearn\.")
            warnings.showwarning = _show_warning(args.command)
            return COMMANDS[args.command](args)
    except UsageError as err:
        if not rank:  # every worker finds the same mistake: worker 1 says it
            print(f"{prefix}: error: {_name_config_keys(str(err), args)}", file=sys.stderr)
        return EXIT_USAGE
    except Diverged as err:
        if not rank:
            print(f"{prefix}: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except PermissionError as err:  # a file or folder the user pointed us at
        print(f"{prefix}: error: cannot access {err.filename}: permission denied", file=sys.stderr)
        return EXIT_USAGE
    except (RuntimeError, MemoryError) as err:
        if _peer_failure(err):  # PeerLost and torch.distributed's errors are RuntimeErrors
            return _peer_stopped(args, rank, err)
        from locallearn.engine.limits import allocation_error

        usage = allocation_error(err)
        if usage is None:
            raise
        print(f"{prefix}: error: {usage}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if not rank and not os.environ.get("LOCALLEARN_LAUNCHER"):  # else the launcher says it
            print(_interrupted(args), file=sys.stderr)
        return 130
    finally:
        set_command(None)  # a later run started from Python in this process is not ours


if __name__ == "__main__":
    sys.exit(main())
