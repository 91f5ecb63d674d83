"""`alignlab study create|import-design|open|pause|close|list|pilot-link` (and the analysis and decision
commands): studies from the command line.

Each subcommand is an `_add_<name>(commands)` function listed in SUBCOMMANDS; add new ones there.
"""

from __future__ import annotations

import argparse

from app.cli import open_database
from app.cli.index_options import add_index_options, index_rule
from app.cli.study_analysis_commands import add_analysis_parsers  # export, simulate, qc, reliability
from app.cli.study_decision_commands import add_decision_parsers  # exclude, include, payments, edit...

# design options: CLI flag -> DesignConfig field
DESIGN_FLAGS = {
    "--lists": ("n_lists", int, "number of triplet lists (participants per list: study config)"),
    "--between": ("n_between_class", int, "between_class triplets per list"),
    "--within": ("n_within_class", int, "within_class triplets per list"),
    "--border": ("n_class_border", int, "class_border triplets per list"),
    "--blocks": ("n_blocks", int, "experimental blocks"),
    "--catch-per-block": ("catch_per_block", int, "catch triplets per block"),
    "--practice": ("n_practice", int, "practice triplets"),
    "--within-repeats": ("within_repeats", int, "triplets repeated later in the same list"),
    "--shared": ("n_shared", int, "triplets every list shares (between-participant repeats)"),
    "--within-scope": ("within_class_scope", str, "auto | category | superordinate"),
    "--seed": ("seed", int, "random seed"),
    "--mode": ("mode", str, "fixed | adaptive (later lists chosen by the latest teacher)"),
    "--strategy": ("strategy", str, "adaptive: uncertainty | information | disagreement | random"),
    "--refit-every": ("refit_every", int, "adaptive: refit the teacher every N answers"),
    "--refit-minutes": (
        "refit_minutes",
        float,
        "adaptive: also every N minutes in which answers came (0 = off)",
    ),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="studies: create, edit, open/pause/close, list, QC, exclusions, payments, export"
    )
    commands = parser.add_subparsers(dest="study_command", required=True)
    for add in SUBCOMMANDS:
        add(commands)


def _add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slug", help="short id used in links, e.g. pilot-1 (lowercase letters, digits, -)")
    parser.add_argument("--stimuli", required=True, metavar="SET", help="name of an imported stimulus set")
    parser.add_argument("--config", metavar="FILE", help="study config (TOML or JSON; see StudyConfig)")
    parser.add_argument("--title", default="", help="title shown to participants (default: from the config)")
    parser.add_argument("--target", type=int, help="target number of completed participants")


def _study_config(args: argparse.Namespace):
    from study.config import StudyConfig

    return StudyConfig.from_file(args.config) if args.config else StudyConfig()


# ---------------------------------------------------------------- create


def _add_create(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "create", help="generate a Levels-style design from a stimulus set (draft study)"
    )
    _add_study_options(parser)
    parser.add_argument("--design", metavar="FILE", help="design config (TOML or JSON; see DesignConfig)")
    for flag, (_, kind, help_text) in DESIGN_FLAGS.items():
        parser.add_argument(flag, type=kind, help=f"{help_text} (overrides --design)")
    parser.add_argument("--open", action="store_true", help="open the study right away")
    parser.set_defaults(func=_create)


def _create(args: argparse.Namespace) -> int:
    from study.design import create_study_from_design
    from study.stimuli import stimulus_set_id_by_name

    db = open_database()
    set_id = stimulus_set_id_by_name(db, args.stimuli)
    study_id, design = create_study_from_design(
        db,
        args.slug,
        set_id,
        _design_config(args),
        _study_config(args),
        title=args.title,
        target_participants=args.target,
    )
    sizes = sorted({len(trials) for trials in design.lists})
    print(
        f"created study {args.slug!r} (id {study_id}): {len(design.lists)} list(s) of "
        f"{'/'.join(map(str, sizes))} trials from stimulus set {args.stimuli!r}"
    )
    for note in design.notes():
        print(f"  {note}")
    return _finish(db, args)


def _design_config(args: argparse.Namespace):
    from study.design import DesignConfig

    data = DesignConfig.from_file(args.design).to_dict() if args.design else {}
    for flag, (field, _, _) in DESIGN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            data[field] = value
    return DesignConfig.from_dict(data)


def _finish(db, args: argparse.Namespace) -> int:
    from study.studies import set_study_status

    if getattr(args, "open", False):
        set_study_status(db, args.slug, "open")
        print(f"study {args.slug!r} is open")
    else:
        print(f"study {args.slug!r} is a draft; open it with: alignlab study open {args.slug}")
    return 0


# ---------------------------------------------------------------- import-design


def _add_import_design(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-design",
        help="a study from an existing design: Levels CSV or THINGS index file",
        description="levels: CSV with id, image1, image2, image3, trial, triplet_class (one list per id). "
        "things: rows of three indices into the set's stimuli (see --image-list, --index-order), "
        "odd one out last.",
    )
    _add_study_options(parser)
    parser.add_argument("path", help="design file")
    parser.add_argument(
        "--format",
        choices=("levels", "things"),
        help="default: levels for .csv files with a triplet_class column, else things",
    )
    add_index_options(parser)
    parser.add_argument("--per-list", type=int, help="things: triplets per list (default: all in one list)")
    parser.add_argument(
        "--blocks",
        type=int,
        default=0,
        help="split each list into this many blocks with breaks "
        "(default: the file's block column, else one block)",
    )
    parser.add_argument(
        "--catch-per-block",
        type=int,
        default=0,
        help="catch trials drawn from the set, spread over each block",
    )
    parser.add_argument(
        "--practice", type=int, default=0, help="practice trials drawn from the set, before the first block"
    )
    parser.add_argument(
        "--keep-image-order",
        action="store_true",
        help="show each triplet's images left to right as the file lists them (default: shuffled per "
        "participant)",
    )
    parser.add_argument(
        "--structure-seed", type=int, default=0, help="seed of the drawn catch/practice trials"
    )
    parser.add_argument("--open", action="store_true", help="open the study right away")
    parser.set_defaults(func=_import_design)


def _import_design(args: argparse.Namespace) -> int:
    from study.design import ImportStructure
    from study.design_import import import_levels_design, import_things_design
    from study.stimuli import stimulus_set_id_by_name

    db = open_database()
    set_id = stimulus_set_id_by_name(db, args.stimuli)
    structure = ImportStructure(
        n_blocks=args.blocks,
        catch_per_block=args.catch_per_block,
        n_practice=args.practice,
        keep_image_order=args.keep_image_order,
        seed=args.structure_seed,
    )
    options = dict(title=args.title, target_participants=args.target, structure=structure)
    if (args.format or _guess_format(args.path)) == "levels":
        imported = import_levels_design(db, args.slug, set_id, args.path, _study_config(args), **options)
    else:
        imported = import_things_design(
            db,
            args.slug,
            set_id,
            args.path,
            _study_config(args),
            index=index_rule(args),
            triplets_per_list=args.per_list,
            **options,
        )
    print(f"imported design {args.path} as {args.slug!r}: {imported.summary()}")
    return _finish(db, args)


def _guess_format(path: str) -> str:
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"design file {path} does not exist")
    with open(file, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline().lower()
    return "levels" if "triplet_class" in header else "things"


# ---------------------------------------------------------------- open / pause / close, list


def _add_status_commands(commands: argparse._SubParsersAction) -> None:
    for name, status in (("open", "open"), ("pause", "paused"), ("close", "closed")):
        parser = commands.add_parser(name, help=f"set a study's status to {status}")
        parser.add_argument("slug")
        parser.set_defaults(func=_set_status, status=status)


def _set_status(args: argparse.Namespace) -> int:
    from study.studies import set_study_status

    set_study_status(open_database(), args.slug, args.status)
    print(f"study {args.slug!r} is now {args.status}")
    return 0


def _add_list(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list studies with their participant counts")
    parser.set_defaults(func=_list)


def _list(_args: argparse.Namespace) -> int:
    from study.monitoring import study_progress

    table = study_progress(open_database())
    if table.empty:
        print("no studies yet: alignlab study create SLUG --stimuli SET")
        return 0
    columns = [
        "slug",
        "status",
        "lists",
        "target",
        "in_progress",
        "reserved",
        "completed",
        "abandoned",
        "title",
    ]
    print(table[columns].to_string(index=False))
    return 0


def _add_pilot_link(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "pilot-link",
        help="the researcher's preview link: the real participant flow, stored as pilot",
        description="Pilot runs work for draft studies too, take no list slot, count toward no target and "
        "are left out of QC, noise ceilings, exports, payments and alignment. Do not give this link to "
        "participants.",
    )
    parser.add_argument("slug")
    parser.add_argument("--base", default="http://localhost:8501", help="public address of the app")
    parser.set_defaults(func=_pilot_link)


def _pilot_link(args: argparse.Namespace) -> int:
    from study.pilot import pilot_link, pilot_token

    print(pilot_link(args.base, args.slug, pilot_token(open_database(), args.slug)))
    return 0


SUBCOMMANDS = [
    _add_create,
    _add_import_design,
    _add_status_commands,
    _add_list,
    _add_pilot_link,
    add_analysis_parsers,
    add_decision_parsers,
]
