"""`alignlab judgments import`: judgments collected elsewhere (THINGS triplet files, CSVs) as a study."""

from __future__ import annotations

import argparse

from app.cli import open_database
from app.cli.index_options import add_index_options, index_rule

FILE_FORMATS = (
    "odd-one-out",
    "anchor",
    "levels",
)  # study.judgments_import.FILE_FORMATS (imported lazily there)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("judgments", help="odd-one-out judgments collected outside AlignLab")
    commands = parser.add_subparsers(dest="judgments_command", required=True)
    importer = commands.add_parser("import", help="import a CSV / THINGS triplet file as an imported study")
    importer.add_argument(
        "csv",
        help="image1,image2,image3 (+ odd_one_out or choice, subject_id, rt, level); head,close,far (anchor "
        "triplets, salmon/NEXT head,winner,loser); a headerless file with --format; an AligNet .npz; or a "
        "folder of Levels per-participant CSVs (image1Path..image3Path, selected_image, triplet_type, rt)",
    )
    importer.add_argument("--stimuli", required=True, help="name of the stimulus set the images belong to")
    importer.add_argument("--slug", required=True, help="slug of the new (imported) study")
    importer.add_argument("--title", default="")
    importer.add_argument(
        "--format",
        choices=FILE_FORMATS,
        dest="file_format",
        help="what the columns of a headerless file are: odd-one-out (THINGS: three indices, odd one out "
        "last) or anchor (head, close, far); required for headerless files, checked against a header; "
        "levels: Levels response files (recognised by their columns without it)",
    )
    add_index_options(importer)
    importer.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from study.judgments_import import import_judgments_csv

    summary = import_judgments_csv(
        open_database(),
        args.csv,
        stimulus_set_name=args.stimuli,
        slug=args.slug,
        title=args.title,
        file_format=args.file_format,
        index=index_rule(args),
    )
    print(
        f"imported {summary.n_judgments} {summary.task} judgments from {summary.n_participants} subjects "
        f"as study {args.slug!r}"
    )
    return 0
