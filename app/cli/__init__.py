"""`alignlab` command line. Each command group lives in its own module with a `register(subparsers)`.

Heavy imports (torch, timm, umap) happen inside the command handlers so that `alignlab --help`
and `alignlab db upgrade` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING

from common.settings import ensure_home

if TYPE_CHECKING:
    from db.engine import Database

COMMAND_MODULES = [
    "app.cli.db_commands",
    "app.cli.stimuli_commands",
    "app.cli.study_commands",
    "app.cli.design_commands",
    "app.cli.researcher_commands",
    "app.cli.jobs_commands",
    "app.cli.demo_commands",
    "app.cli.align_commands",
    "app.cli.judgments_commands",
    "app.cli.map_commands",
    "app.cli.student_commands",
    "app.cli.embed_commands",
]

# bad input, not a bug: config errors (ConfigError is a ValueError), missing input files, unknown slugs or
# runs
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
        ensure_home()
        return int(args.func(args) or 0)
    except USER_ERRORS as error:  # bad input: one clear line, exit code 2 (as argparse), no traceback
        print(f"alignlab: error: {one_line(error)}", file=sys.stderr)
        return 2


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's message is its quoted key: shown without quotes)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(message).split()) or type(error).__name__


def open_database() -> Database:
    """The database of this invocation (`DATABASE_URL`, or the SQLite file under the data directory): the
    one place the CLI builds its resource, as `app.resources.get_db` is for the app. Imported here, on the
    first command that needs it, so that `alignlab --help` stays fast."""
    from db.engine import Database

    return Database.from_url()
