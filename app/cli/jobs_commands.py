"""`alignlab jobs run|list|cancel`: background alignment runs recorded in the database."""

from __future__ import annotations

import argparse

from app.cli import open_database


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jobs", help="alignment runs (background jobs)")
    commands = parser.add_subparsers(dest="jobs_command", required=True)
    run = commands.add_parser("run", help="execute a queued run in this process (the app starts these)")
    run.add_argument("run_id", type=int)
    run.set_defaults(func=_run)
    listing = commands.add_parser("list", help="list runs")
    listing.add_argument("--kind")
    listing.set_defaults(func=_list)
    cancel = commands.add_parser("cancel", help="ask a running job to stop at its next progress report")
    cancel.add_argument("run_id", type=int)
    cancel.set_defaults(func=_cancel)


def _run(args: argparse.Namespace) -> int:
    from db.models import RunStatus
    from workflows.pipeline import execute

    return 0 if execute(open_database(), args.run_id) == RunStatus.SUCCEEDED else 1


def _list(args: argparse.Namespace) -> int:
    from db.runs import list_runs

    for run in list_runs(open_database(), kind=args.kind):
        print(
            f"{run.id:>5}  {run.kind:<13} {run.status.value:<10} {100 * run.progress:5.1f}%  "
            f"{run.name}  {run.error or ''}"
        )
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from db.runs import request_cancel

    request_cancel(open_database(), args.run_id)
    print(f"cancel requested for run {args.run_id}")
    return 0
