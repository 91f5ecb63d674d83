"""`alignlab student export --run RUN_ID --out DIR`: a trained student as a timm checkpoint + triplet head +
model card (see alignment/export.py). `--weights PATH` exports a `student.pt` trained outside the database
(e.g. `torchrun -m alignment.finetune`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli import open_database


def register(subparsers: argparse._SubParsersAction) -> None:
    student = subparsers.add_parser("student", help="trained students: export")
    commands = student.add_subparsers(dest="student_command", required=True)
    export = commands.add_parser("export", help="timm-loadable checkpoint, triplet head and model card")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=int, help="a succeeded student run")
    source.add_argument("--weights", type=Path, help="a student.pt file (either student kind)")
    export.add_argument("--out", required=True, type=Path, help="export folder (replaced if it exists)")
    export.add_argument(
        "--eval-run",
        type=int,
        help="eval or align run whose table goes in the card (default: the align run "
        "that trained this student, if any)",
    )
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from alignment.export import export_student
    from common.settings import data_home

    evaluation, note = None, ""
    if args.run is not None:
        from workflows.pipeline.data import WEIGHTS_DIR, finished_run

        db = open_database()
        run = finished_run(db, args.run, "student")
        weights = data_home() / run.artifacts["student"]
        evaluation, table_run = _evaluation_rows(db, args.run, args.eval_run)
        study, space = run.config.get("study"), run.config.get("space")
        note = f"AlignLab run {run.id} (study `{study}`, label space `{space}`)"
        if table_run is not None:
            note += f"; evaluation from run {table_run}."
        cache_dir = data_home() / WEIGHTS_DIR
    else:
        if args.eval_run is not None:
            raise ValueError("--eval-run needs the database; use it with --run")
        weights, cache_dir = args.weights, None
    out = export_student(weights, args.out, evaluation=evaluation, run_note=note, cache_dir=cache_dir)
    print(f"exported to {out} (model.safetensors, triplet_head.safetensors, config.json, README.md)")
    return 0


def _evaluation_rows(db, student_run: int, eval_run: int | None) -> tuple[list[dict] | None, int | None]:
    """The evaluation table's rows for the card: of ``eval_run``, or of the align run that trained
    ``student_run``; each row's level names its test block (e.g. "overall · odd_one_out seen")."""
    from db.runs import get_run, list_runs
    from workflows.pipeline.evaluation import read_results

    if eval_run is None:
        parents = [
            r
            for r in list_runs(db, kind="align")
            if student_run in (r.metrics.get("alignet_run"), r.metrics.get("unalignet_run"))
        ]
        if not parents:
            return None, None
        eval_run = parents[0].id
    table = read_results(get_run(db, eval_run))  # a clear error for a run without a results table
    table["level"] = table["level"] + " · " + table["task"] + " " + table["held_out"]
    columns = {"n_judgments": "n", "ci_low": "accuracy_low", "ci_high": "accuracy_high"}
    return table.rename(columns=columns).drop(columns=["flags"]).to_dict("records"), eval_run
