"""`alignlab` command line. Each command group lives in its own module with a `register(subparsers)`.

Heavy imports (torch, timm, umap) happen inside the command handlers so that `alignlab --help`
and `alignlab db upgrade` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "app.cli.db_commands",
    "app.cli.stimuli_commands",
    "app.cli.study_commands",
    "app.cli.researcher_commands",
    "app.cli.jobs_commands",
    "app.cli.demo_commands",
    "app.cli.align_commands",
    "app.cli.judgments_commands",
    "app.cli.map_commands",
]

USER_ERRORS = (ValueError, LookupError, FileNotFoundError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignlab", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:  # bad input: a clear message, no traceback
        print(f"alignlab {args.command}: error: {error}", file=sys.stderr)
        return 2
