"""`alignlab db upgrade|current`: schema migrations."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="database schema")
    commands = parser.add_subparsers(dest="db_command", required=True)
    upgrade = commands.add_parser("upgrade", help="apply all migrations (safe to repeat)")
    upgrade.add_argument("--url", help="database URL (default: DATABASE_URL or data/alignlab.db)")
    upgrade.set_defaults(func=_upgrade)
    current = commands.add_parser("current", help="print the schema revision")
    current.add_argument("--url")
    current.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace) -> int:
    from db.migrate import upgrade
    from db.settings import database_url

    upgrade(args.url)
    print(f"schema up to date: {args.url or database_url()}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from db.migrate import current_revision

    print(current_revision(args.url) or "(empty database)")
    return 0
