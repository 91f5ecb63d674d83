"""`alignlab stimuli import|list`: stimulus sets (labelled image folders, zips, or folders plus a CSV
manifest)."""

from __future__ import annotations

import argparse

from app.cli import open_database


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stimuli", help="stimulus sets")
    commands = parser.add_subparsers(dest="stimuli_command", required=True)
    _add_import(commands)
    _add_list(commands)


def _add_import(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import",
        help="import a folder or .zip laid out superordinate/category/image.ext (or with a manifest)",
        description="Validate every image, then import all of them or none. Layout: superordinate/category/"
        "image.ext or category/image.ext, or any layout plus a CSV manifest with columns path, "
        "category[, superordinate] (other columns are kept as attributes; a manifest.csv in the "
        "folder or zip is used automatically).",
    )
    parser.add_argument("path", help="image folder or .zip file")
    parser.add_argument("--name", required=True, help="name of the new stimulus set (must be unused)")
    parser.add_argument(
        "--manifest", help="CSV with path, category[, superordinate] (paths relative to PATH)"
    )
    parser.add_argument("--max-file-mb", type=float, help="largest accepted file in MB (default 50)")
    parser.add_argument(
        "--max-megapixels", type=float, help="largest accepted image in megapixels (default 40)"
    )
    parser.add_argument(
        "--serving-px", type=int, help="longest side of the copies participants see (default 512)"
    )
    parser.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from study.stimuli import import_stimulus_set

    report = import_stimulus_set(
        open_database(), args.path, args.name, manifest=args.manifest, limits=_limits(args)
    )
    print(report.summary())
    return 0


def _limits(args: argparse.Namespace):
    from dataclasses import replace

    from study.stimuli import ImportLimits

    limits = ImportLimits()
    if args.max_file_mb is not None:
        limits = replace(limits, max_file_bytes=int(args.max_file_mb * 2**20))
    if args.max_megapixels is not None:
        limits = replace(limits, max_pixels=int(args.max_megapixels * 1e6))
    if args.serving_px is not None:
        limits = replace(limits, serving_px=args.serving_px)
    return limits


def _add_list(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list stimulus sets")
    parser.set_defaults(func=_list)


def _list(_args: argparse.Namespace) -> int:
    from study.stimuli import list_stimulus_sets

    sets = list_stimulus_sets(open_database())
    if not sets:
        print("no stimulus sets yet: alignlab stimuli import PATH --name NAME")
    for s in sets:
        print(
            f"{s.id:>4}  {s.name:<30} {s.n_images:>6} images  {s.n_categories:>4} categories  "
            f"{s.n_superordinates:>3} superordinates"
        )
    return 0
