"""`alignlab study exclude|include|approve|reject|bonus|payments|edit|versions`: the researcher's decisions
on a running study, added to the `study` group by `app/cli/study_commands.py`.

PARTICIPANT is an external id (the PROLIFIC_PID, or an anonymous id) or the internal participant id shown on
the Participants page.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli import open_database


def add_decision_parsers(commands: argparse._SubParsersAction) -> None:
    for add in (_add_exclude, _add_include, _add_approve, _add_reject, _add_bonus, _add_payments, _add_edit):
        add(commands)


def _participant_parser(commands: argparse._SubParsersAction, name: str, help_text: str):
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("slug")
    parser.add_argument("participant", help="external id (PROLIFIC_PID) or internal participant id")
    return parser


def _participant_id(db, args: argparse.Namespace) -> int:
    from study.qc import participant_by_reference

    return participant_by_reference(db, args.slug, args.participant)


# ---------------------------------------------------------------- exclusion (analysis decision)


def _add_exclude(commands: argparse._SubParsersAction) -> None:
    parser = _participant_parser(commands, "exclude", "exclude a participant from analyses, with a reason")
    parser.add_argument("--reason", required=True, help="why (kept with the decision and exported)")
    parser.set_defaults(func=_exclude, excluded=True)


def _add_include(commands: argparse._SubParsersAction) -> None:
    parser = _participant_parser(commands, "include", "undo an exclusion: the participant is analysed again")
    parser.set_defaults(func=_exclude, excluded=False, reason=None)


def _exclude(args: argparse.Namespace) -> int:
    from study.qc import set_exclusion

    db = open_database()
    set_exclusion(db, _participant_id(db, args), args.excluded, args.reason)
    state = f"excluded ({args.reason.strip()})" if args.excluded else "included"
    print(f"participant {args.participant} of {args.slug!r} is {state}")
    return 0


# ---------------------------------------------------------------- payment decisions


def _add_approve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("approve", help="approve Prolific submissions (payment decision)")
    parser.add_argument("slug")
    parser.add_argument("participants", nargs="*", metavar="PARTICIPANT", help="external or internal ids")
    parser.add_argument(
        "--all-completed", action="store_true", help="approve every completed submission still pending"
    )
    parser.set_defaults(func=_approve)


def _approve(args: argparse.Namespace) -> int:
    from study.payments import approve_completed, set_payment
    from study.qc import participant_by_reference

    if not args.participants and not args.all_completed:
        raise ValueError("name at least one PARTICIPANT to approve, or pass --all-completed")
    db = open_database()
    ids = [participant_by_reference(db, args.slug, reference) for reference in args.participants]
    for participant_id in ids:  # every reference checked before anything is stored
        set_payment(db, participant_id, "approved")
    bulk = approve_completed(db, args.slug) if args.all_completed else 0
    print(f"approved {len(ids) + bulk} submission(s) of {args.slug!r}")
    return 0


def _add_reject(commands: argparse._SubParsersAction) -> None:
    parser = _participant_parser(commands, "reject", "reject a Prolific submission, with a reason")
    parser.add_argument("--reason", required=True, help="shown to the participant by Prolific")
    parser.set_defaults(func=_reject)


def _reject(args: argparse.Namespace) -> int:
    from study.payments import set_payment

    db = open_database()
    set_payment(db, _participant_id(db, args), "rejected", args.reason)
    print(f"participant {args.participant} of {args.slug!r}: rejected ({args.reason.strip()})")
    return 0


def _add_bonus(commands: argparse._SubParsersAction) -> None:
    parser = _participant_parser(commands, "bonus", "set a participant's bonus (0 removes it)")
    parser.add_argument("amount", help="in the Prolific study's currency, e.g. 1.50")
    parser.set_defaults(func=_bonus)


def _bonus(args: argparse.Namespace) -> int:
    from study.payments import set_bonus

    db = open_database()
    set_bonus(db, _participant_id(db, args), args.amount)
    print(f"participant {args.participant} of {args.slug!r}: bonus {args.amount}")
    return 0


def _add_payments(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "payments", help="write approve.csv, reject.csv and bonus.csv for Prolific's bulk tools"
    )
    parser.add_argument("slug")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the three files")
    parser.set_defaults(func=_payments)


def _payments(args: argparse.Namespace) -> int:
    from study.payments import write_payment_files

    files = write_payment_files(open_database(), args.slug, args.out)
    print(
        f"wrote {files.folder}/approve.csv ({files.n_approved} ids), reject.csv ({files.n_rejected}), "
        f"bonus.csv ({files.n_bonuses} bonuses, total {files.bonus_total})"
    )
    if files.n_left_out:
        print(f"  {files.n_left_out} decision(s) on participants without a PROLIFIC_PID were not written")
    return 0


# ---------------------------------------------------------------- edit the config


def _add_edit(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "edit",
        help="change a study's config (a new version; new participants get it)",
        description="The file gives only the settings to change (StudyConfig keys, TOML or JSON, optionally "
        "under [study]); they are laid over the current config and checked as at creation.",
    )
    parser.add_argument("slug")
    parser.add_argument("--config", metavar="FILE", help="settings to change (TOML or JSON)")
    parser.add_argument("--target", type=int, help="new target number of completed participants")
    parser.add_argument("--note", default="", help="what changed and why (kept with the version)")
    parser.set_defaults(func=_edit)


def _edit(args: argparse.Namespace) -> int:
    from common.config import settings_table
    from study.config_versions import UNCHANGED, edit_study_config

    if args.config is None and args.target is None:
        raise ValueError("give --config FILE and/or --target N: there is nothing to change")
    if args.config and args.config.endswith((".toml", ".json")) and not Path(args.config).is_file():
        raise FileNotFoundError(f"config file {args.config} does not exist")
    changes = settings_table(args.config, section="study") if args.config else {}
    target = UNCHANGED if args.target is None else args.target
    edit = edit_study_config(open_database(), args.slug, changes, target_participants=target, note=args.note)
    if not edit.changed:
        print(f"study {args.slug!r}: nothing changed; config version {edit.version} stays current")
    else:
        print(f"study {args.slug!r}: config version {edit.version} ({', '.join(edit.changed)})")
    return 0
