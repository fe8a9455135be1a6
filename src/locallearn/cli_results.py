"""The commands that work on finished runs: ``runs``, ``report``, ``export``.

Kept beside cli.py (which builds the parser and dispatches) so that the training commands
and these read-only ones can change independently.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPORT_FORMATS = ("html", "md")


def add_parsers(sub: Any) -> None:
    runs = sub.add_parser("runs", help="list the runs under a folder, with their status")
    runs.add_argument("dir", nargs="?", default="runs", help="folder of runs (default: runs/)")
    runs.add_argument("--rule", default=None, help="only runs of this rule")
    runs.add_argument("--data", default=None, help="only runs on this dataset")
    runs.add_argument(
        "--status", default=None, help="only finished|running|interrupted|diverged runs"
    )
    runs.add_argument("--json", action="store_true", help="print the index as JSON")

    report = sub.add_parser("report", help="one self-contained HTML (or markdown) report")
    report.add_argument(
        "dirs", nargs="+", metavar="RUN_DIR|COMPARE_DIR", help="runs, or folders of runs"
    )
    report.add_argument("--out", default=None, help="report file (default: report.html/.md)")
    report.add_argument(
        "--format", default=None, help="html|md (default: from --out's suffix, else html)"
    )
    report.add_argument("--title", default=None, help="report title")
    report.add_argument("--quiet", action="store_true", help="no progress output")

    export = sub.add_parser("export", help="write a run's trained network as a plain file")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("path", metavar="MODEL.pt", help="state_dict + architecture recipe")
    export.add_argument(
        "--torchscript", default=None, metavar="FILE", help="also a TorchScript module here"
    )
    export.add_argument(
        "--torch-export",
        dest="torch_export",
        default=None,
        metavar="FILE.pt2",
        help="also a torch.export program here",
    )
    export.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_runs(args: argparse.Namespace) -> int:
    from locallearn.engine.index import list_runs
    from locallearn.report.runs import runs_table

    entries = list_runs(args.dir, rule=args.rule, data=args.data, status=args.status)
    if args.json:
        print(json.dumps(entries, indent=2))
    elif entries:
        print(runs_table(entries))
    else:
        print(f"no runs under {args.dir}" + (" match the filters" if _filtered(args) else ""))
    return 0


def _filtered(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.rule, args.data, args.status))


def cmd_report(args: argparse.Namespace) -> int:
    from locallearn.report.collect import collect_runs

    fmt = args.format
    if fmt is None:
        fmt = "md" if args.out and Path(args.out).suffix.lower() in (".md", ".markdown") else "html"
    if fmt not in REPORT_FORMATS:
        from locallearn.errors import unknown_choice

        raise unknown_choice("--format", fmt, REPORT_FORMATS)
    out = Path(args.out) if args.out else Path(f"report.{fmt}")
    runs = collect_runs(args.dirs)
    if fmt == "html":
        from locallearn.report.html import write_html

        write_html(runs, out, title=args.title)
    else:
        from locallearn.report.markdown import write_markdown

        write_markdown(runs, out, title=args.title)
    if not args.quiet:
        print(f"report of {len(runs)} run(s) written to {out}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from locallearn.engine.export import export_network, load_network, torch_export, torchscript

    info = export_network(args.run_dir, args.path)
    lines = [f"network of {args.run_dir} (epoch {info['epochs']}) written to {args.path}"]
    if args.torchscript or args.torch_export:
        module = load_network(args.path)
        shape = tuple(info["input_shape"])
        if args.torchscript:
            how = torchscript(module, shape, args.torchscript)
            lines.append(f"TorchScript ({how}) written to {args.torchscript}")
        if args.torch_export:
            torch_export(module, shape, args.torch_export)
            lines.append(f"torch.export program written to {args.torch_export}")
    if not args.quiet:
        print("\n".join(lines), file=sys.stderr)
    return 0


COMMANDS = {"runs": cmd_runs, "report": cmd_report, "export": cmd_export}
