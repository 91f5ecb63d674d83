"""`alignlab features extract`, `alignlab teacher fit`: alignment stages run in this process, each recorded
as a run in the database (the app runs the same stages as background jobs)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    features = subparsers.add_parser("features", help="backbone features (cached on disk)")
    features_commands = features.add_subparsers(dest="features_command", required=True)
    extract = features_commands.add_parser("extract", help="features of a study's stimuli")
    extract.add_argument("--study", required=True)
    extract.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    extract.set_defaults(func=_features)

    teacher = subparsers.add_parser("teacher", help="the human-aligned teacher transform")
    teacher_commands = teacher.add_subparsers(dest="teacher_command", required=True)
    fit = teacher_commands.add_parser("fit", help="fit a teacher on a study's non-excluded judgments")
    fit.add_argument("--study", required=True)
    fit.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    fit.add_argument("--split", choices=["triplet", "subject", "image"], default="triplet",
                     help="how held-out judgments are chosen (image = object-disjoint)")
    fit.add_argument("--test-fraction", type=float, default=0.2)
    fit.add_argument("--config", help="TeacherConfig overrides as JSON, e.g. '{\"reg_weight\": 0.01}'")
    fit.set_defaults(func=_teacher)


def run_stage_here(kind: str, slug: str, overrides: dict) -> int:
    """Queue a run and execute it in this process with a progress bar; print its metrics."""
    from tqdm import tqdm

    from app import pipeline
    from app.jobs import execute
    from db.engine import Database
    from db.runs import get_run

    db = Database.from_url()
    run_id = pipeline.queue_action(db, kind, slug, overrides)
    with tqdm(total=100, desc=f"run {run_id} {kind}", unit="%") as bar:
        execute(db, run_id, on_progress=lambda fraction, _message: bar.update(round(100 * fraction) - bar.n))
    run = get_run(db, run_id)
    if run.error:
        raise ValueError(f"run {run_id} failed: {run.error}")
    print(json.dumps({"run": run_id, "metrics": run.metrics, "artifacts": run.artifacts}, indent=2, default=str))
    return 0


def _features(args: argparse.Namespace) -> int:
    return run_stage_here("features", args.study, {"backbone": args.backbone})


def _teacher(args: argparse.Namespace) -> int:
    overrides = {"backbone": args.backbone, "split": {"by": args.split, "test_fraction": args.test_fraction},
                 "teacher": json.loads(args.config) if args.config else {}}
    return run_stage_here("teacher", args.study, overrides)
