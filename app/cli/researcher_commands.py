"""`alignlab researcher hash-password`: make the hash to put in ALIGNLAB_RESEARCHER_PASSWORD_HASH."""

from __future__ import annotations

import argparse
import getpass
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("researcher", help="researcher access")
    commands = parser.add_subparsers(dest="researcher_command", required=True)
    hash_parser = commands.add_parser(
        "hash-password", help="print an scrypt hash of a password (read from stdin or a prompt)"
    )
    hash_parser.set_defaults(func=_hash_password)


def _hash_password(_args: argparse.Namespace) -> int:
    from study.access import hash_password

    password = (
        getpass.getpass("Researcher password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    )
    print(hash_password(password))
    return 0
