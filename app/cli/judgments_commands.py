"""`alignlab judgments import`: judgments collected elsewhere (THINGS triplet files, CSVs) as a study."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("judgments", help="odd-one-out judgments collected outside AlignLab")
    commands = parser.add_subparsers(dest="judgments_command", required=True)
    importer = commands.add_parser("import", help="import a CSV / THINGS triplet file as an imported study")
    importer.add_argument(
        "csv",
        help="image1,image2,image3 (+ odd_one_out or choice, subject_id, rt, level); "
        "or a headerless THINGS file of indices, odd one out last",
    )
    importer.add_argument("--stimuli", required=True, help="name of the stimulus set the images belong to")
    importer.add_argument("--slug", required=True, help="slug of the new (imported) study")
    importer.add_argument("--title", default="")
    importer.add_argument(
        "--index-base",
        type=int,
        choices=[0, 1],
        default=0,
        help="integer image references count from 0 (default) or 1 (stimuli ordered by name)",
    )
    importer.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from db.engine import Database
    from study.judgments_import import import_judgments_csv

    summary = import_judgments_csv(
        Database.from_url(),
        args.csv,
        stimulus_set_name=args.stimuli,
        slug=args.slug,
        title=args.title,
        index_base=args.index_base,
    )
    print(
        f"imported {summary.n_judgments} judgments from {summary.n_participants} subjects as study {args.slug!r}"
    )
    return 0
