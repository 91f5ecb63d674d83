"""`alignlab study export|simulate|qc|reliability`: the analysis side of a study, added to the `study` group.

The `study` group itself lives in `app/cli/study_commands.py`, which calls `add_analysis_parsers`.
"""

from __future__ import annotations

import argparse

from app.cli import open_database


def add_analysis_parsers(study_subparsers: argparse._SubParsersAction) -> None:
    add_export_parser(study_subparsers)
    add_simulate_parser(study_subparsers)
    add_qc_parser(study_subparsers)
    add_reliability_parser(study_subparsers)


def add_export_parser(study_subparsers: argparse._SubParsersAction) -> None:
    parser = study_subparsers.add_parser(
        "export",
        help="write the study's judgments (THINGS, jsPsych-like CSV, Parquet), participants or events",
        description="participants and events: Parquet when --out ends in .parquet, CSV otherwise.",
    )
    parser.add_argument("slug")
    parser.add_argument(
        "--format",
        required=True,
        choices=["things", "jspsych", "parquet", "anchor", "participants", "events"],
        dest="export_format",
    )
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--include-excluded", action="store_true", help="keep participants marked excluded")
    parser.add_argument("--no-simulated", action="store_true", help="leave simulated participants out")
    parser.add_argument("--raw-ids", action="store_true", help="external ids instead of per-study pseudonyms")
    parser.set_defaults(func=_export)


def add_simulate_parser(study_subparsers: argparse._SubParsersAction) -> None:
    parser = study_subparsers.add_parser("simulate", help="run simulated participants through an open study")
    parser.add_argument("slug")
    parser.add_argument("--participants", type=int, required=True)
    parser.add_argument(
        "--careless", type=float, default=0.1, help="share of careless participants (default 0.1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_simulate)


def add_qc_parser(study_subparsers: argparse._SubParsersAction) -> None:
    parser = study_subparsers.add_parser("qc", help="per-participant quality control table")
    parser.add_argument("slug")
    parser.add_argument("--config", help="QC thresholds as JSON (fields of study.qc.QCConfig)")
    parser.add_argument("--csv", help="also write the full table to this CSV file (pseudonymised)")
    parser.add_argument("--raw-ids", action="store_true", help="keep external ids in the --csv file")
    parser.set_defaults(func=_qc)


def add_reliability_parser(study_subparsers: argparse._SubParsersAction) -> None:
    parser = study_subparsers.add_parser(
        "reliability", help="noise ceilings (Levels leave-one-out, THINGS modal)"
    )
    parser.add_argument("slug")
    parser.add_argument("--include-excluded", action="store_true")
    parser.add_argument("--no-simulated", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="subsampling and bootstrap seed")
    parser.set_defaults(func=_reliability)


def _export(args: argparse.Namespace) -> int:
    from study.export import export_study

    summary = export_study(
        open_database(),
        args.slug,
        args.export_format,
        args.out,
        include_excluded=args.include_excluded,
        include_simulated=not args.no_simulated,
        raw_ids=args.raw_ids,
    )
    print(
        f"wrote {summary.n_rows} rows from {summary.n_participants} participants to {summary.path} "
        f"({summary.format})"
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from study.simulate import simulate_participants

    summary = simulate_participants(
        open_database(), args.slug, args.participants, careless_share=args.careless, seed=args.seed
    )
    print(
        f"simulated {len(summary.participant_ids)} participants ({len(summary.careless_ids)} careless): "
        f"{summary.n_responses} responses, {summary.n_timeouts} timeouts"
    )
    return 0


QC_SHOWN = [
    "subject",
    "status",
    "is_simulated",
    "excluded",
    "n_answered",
    "n_timeouts",
    "catch_accuracy",
    "fast_windows",
    "early_responses",
    "share_left",
    "share_middle",
    "share_right",
    "median_rt_ms",
    "blurs",
    "fullscreen_exits",
    "flags",
    "suggest_exclude",
]


def _qc(args: argparse.Namespace) -> int:
    from study.export import write_csv
    from study.qc import QCConfig, participant_qc

    config = QCConfig.from_file(args.config) if args.config else QCConfig()
    table = participant_qc(open_database(), args.slug, config)
    if args.csv:
        raw = ["external_id", "external_study_id", "external_session_id"]
        write_csv(table if args.raw_ids else table.drop(columns=raw), args.csv)
    print(table[QC_SHOWN].to_string(index=False, float_format=lambda value: f"{value:.2f}"))
    print(f"{int(table['suggest_exclude'].sum())} of {len(table)} participants suggested for exclusion")
    return 0


def _reliability(args: argparse.Namespace) -> int:
    from study.judgments import load_judgments
    from study.reliability import levels_noise_ceiling, things_modal_consistency

    judgments = load_judgments(
        open_database(),
        args.slug,
        include_excluded=args.include_excluded,
        include_simulated=not args.no_simulated,
    )
    fmt = {"float_format": lambda value: f"{value:.3f}", "index": False}
    print("Levels leave-one-out majority (4-5 responses per triplet, bootstrap 95% CI):")
    print(levels_noise_ceiling(judgments, seed=args.seed).to_string(**fmt))
    print("\nTHINGS modal consistency, between participants (95% CI = 1.96 SD/sqrt(n)):")
    print(things_modal_consistency(judgments).to_string(**fmt))
    print("\nTHINGS modal consistency, within participants (repeats):")
    print(things_modal_consistency(judgments, scope="within").to_string(**fmt))
    return 0
