"""``zforcing plot``: (re)draw a run's figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from .common import PROG, Parser, path_text, prepare_out, setup_logging


def plot_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=f"{PROG} plot", description="(Re)draw a run's figures as PNG in the run directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR", type=path_text, help="a run directory (with metrics.jsonl, eval-<split>.json)")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def command_plot(argv: List[str]) -> int:
    from ..evaluation.plots import plot_run
    from ..evaluation.reports import repair_reports

    args = plot_parser().parse_args(argv)
    setup_logging(args.quiet)
    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    prepare_out(run_dir, what="run directory")
    repair_reports(run_dir)
    for path in plot_run(run_dir):
        print(path)
    return 0
