"""`alignlab design propose --study SLUG --n N --out FILE`: the next N triplets the study's latest teacher
would ask (Levels mix of the study's design, each with its reason), written as CSV; nothing is stored."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("design", help="adaptive designs: propose the next triplets")
    commands = parser.add_subparsers(dest="design_command", required=True)
    propose = commands.add_parser("propose", help="write the next N triplets the latest teacher would ask")
    propose.add_argument("--study", required=True, metavar="SLUG")
    propose.add_argument("--n", type=int, required=True, help="number of triplets (split over the levels)")
    propose.add_argument("--out", required=True, type=Path, metavar="FILE", help="CSV to write")
    propose.add_argument(
        "--strategy",
        choices=("uncertainty", "disagreement", "random"),
        help="default: the study's design strategy",
    )
    propose.add_argument("--seed", type=int, default=0)
    propose.set_defaults(func=_propose)


def _propose(args: argparse.Namespace) -> int:
    from db.engine import Database
    from study.adaptive import design_config
    from study.design import split_by_level
    from study.studies import get_study
    from workflows.adaptive import propose, write_proposal

    if args.n < 1:
        raise ValueError(f"--n must be at least 1; got {args.n}")
    db = Database.from_url()
    with db.read() as session:
        config = design_config(get_study(session, args.study))
    specs = propose(db, args.study, split_by_level(args.n, config), args.seed, strategy=args.strategy)
    write_proposal(db, specs, args.out)
    run = next((s.selection or {}).get("teacher_run", "") for s in specs) if specs else ""
    print(f"wrote {len(specs)} triplets to {args.out} (teacher run {run or 'none: drawn at random'})")
    return 0
