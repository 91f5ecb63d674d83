"""`alignlab demo build`: create the built-in demo (photos, study, simulated participants) if missing."""

from __future__ import annotations

import argparse

from app.cli import open_database


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the built-in demo")
    commands = parser.add_subparsers(dest="demo_command", required=True)
    build = commands.add_parser(
        "build", help="build what is missing of the demo (idempotent, fast when done)"
    )
    build.add_argument("--source", help="image source: tuxpaint-photos (default), fashion-mnist, folder:PATH")
    build.add_argument(
        "--participants",
        type=int,
        help="simulated participants (default: workflows.demo.DEMO_PARTICIPANTS, 120)",
    )
    build.add_argument(
        "--runs",
        choices=["background", "wait", "skip"],
        default="background",
        help="the demo's closed-loop run: start it in the background (default), wait for it, or skip",
    )
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from workflows.demo import ensure_demo, ensure_demo_runs

    db = open_database()
    state = ensure_demo(
        db,
        source=args.source,
        **({"participants": args.participants} if args.participants is not None else {}),
    )
    print(f"demo ready: study {state.slug!r} with {state.simulated_participants} simulated participants")
    if args.runs != "skip":
        ensure_demo_runs(db, wait=args.runs == "wait")
    return 0
