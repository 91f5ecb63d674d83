"""`alignlab demo build`: create the built-in demo (photos, study, simulated participants) if missing."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the built-in demo")
    commands = parser.add_subparsers(dest="demo_command", required=True)
    build = commands.add_parser("build", help="build what is missing of the demo (idempotent, fast when done)")
    build.add_argument("--source", help="image source: tuxpaint-photos (default), fashion-mnist, folder:PATH")
    build.add_argument("--participants", type=int, default=24, help="simulated participants (default 24)")
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from app.demo import ensure_demo
    from db.engine import Database

    state = ensure_demo(Database.from_url(), source=args.source, participants=args.participants)
    print(f"demo ready: study {state.slug!r} with {state.simulated_participants} simulated participants")
    return 0
