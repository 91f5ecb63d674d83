"""`alignlab features extract`, `alignlab teacher fit`: alignment stages run in this process, each recorded
as a run in the database (the app runs the same stages as background jobs)."""

from __future__ import annotations

import argparse
import json

from alignment import DEFAULT_BACKBONE
from app.cli import open_database
from common.config import settings_table

BACKBONE_HELP = (
    "feature spec: LIB:ARCH (pooled pre-logits, e.g. timm:tf_efficientnet_lite0); LIB:ARCH@k (the "
    "layer before stage k, averaged over space); a :gridG suffix (G >= 2) averages that map, or the last "
    "one, over each cell of a G x G grid instead (where things are is kept; G*G times the width); "
    "several sources joined by '+', each standardised (e.g. timm:a+timm:a@5:grid3)"
)


def feature_spec(text: str) -> str:
    """argparse type for --backbone: a malformed spec is refused with the reason before any work starts."""
    from alignment.backbones import source_names

    try:
        source_names(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    for add in (_add_features, _add_teacher, _add_eval, _add_align):
        add(subparsers)


def _stage_command(
    subparsers: argparse._SubParsersAction, group: tuple[str, str], command: tuple[str, str]
) -> argparse.ArgumentParser:
    """`alignlab GROUP COMMAND --study SLUG [--backbone NAME]` (each a (name, help) pair): a stage run on a
    study's images with one backbone."""
    commands = subparsers.add_parser(group[0], help=group[1]).add_subparsers(
        dest=f"{group[0]}_command", required=True
    )
    parser = commands.add_parser(command[0], help=command[1])
    parser.add_argument("--study", required=True)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, type=feature_spec, help=BACKBONE_HELP)
    return parser


def _add_features(subparsers: argparse._SubParsersAction) -> None:
    group = ("features", "backbone features (cached on disk)")
    extract = _stage_command(subparsers, group, ("extract", "features of a study's stimuli"))
    extract.set_defaults(func=_features)


def _add_teacher(subparsers: argparse._SubParsersAction) -> None:
    group = ("teacher", "the human-aligned teacher transform")
    fit = _stage_command(subparsers, group, ("fit", "fit a teacher on a study's non-excluded judgments"))
    fit.add_argument(
        "--split",
        choices=["triplet", "subject", "image"],
        default="triplet",
        help="how held-out judgments are chosen (image = object-disjoint)",
    )
    fit.add_argument("--test-fraction", type=float, default=0.2)
    fit.add_argument(
        "--config",
        help="TeacherConfig overrides as JSON or a .json/.toml file, e.g. '{\"reg_weight\": 0.01}'",
    )
    fit.set_defaults(func=_teacher)


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser("eval", help="evaluate representations on a study's held-out judgments")
    evaluate.add_argument("--study", required=True)
    evaluate.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="RUN[:ARTIFACT]",
        help="e.g. 4:raw_embeddings 4 (a teacher run's raw features, then its aligned space)",
    )
    evaluate.add_argument(
        "--split-run", type=int, help="evaluate on the judgments this run held out (default: all judgments)"
    )
    evaluate.set_defaults(func=_eval)


def _add_align(subparsers: argparse._SubParsersAction) -> None:
    align = subparsers.add_parser(
        "align", help="the closed loop: teacher, pseudo-labels, students, evaluation"
    )
    align.add_argument("--study", required=True)
    align.add_argument("--backbone", default=DEFAULT_BACKBONE, type=feature_spec, help=BACKBONE_HELP)
    align.add_argument(
        "--config",
        help="AlignConfig overrides as JSON or a .json/.toml file: keys split, teacher, "
        "pseudo, student (each a dict of that stage's settings), similarity",
    )
    align.set_defaults(func=_align)


def run_stage_here(kind: str, slug: str, overrides: dict, *, show: bool = True):
    """Queue a run and execute it in this process with a progress bar; print its metrics; return the run."""
    from tqdm import tqdm

    from db.runs import get_run
    from workflows import pipeline
    from workflows.pipeline.data import judgments_snapshot

    db = open_database()
    with judgments_snapshot():  # the input checks and the run share one read of the judgments
        run_id = pipeline.queue_action(db, kind, slug, overrides)
        with tqdm(total=100, desc=f"run {run_id} {kind}", unit="%") as bar:
            pipeline.execute(
                db, run_id, on_progress=lambda fraction, _message: bar.update(round(100 * fraction) - bar.n)
            )
    run = get_run(db, run_id)
    if run.error:
        raise ValueError(f"run {run_id} failed: {run.error}")
    if show:
        print(
            json.dumps(
                {"run": run_id, "metrics": run.metrics, "artifacts": run.artifacts}, indent=2, default=str
            )
        )
    return run


def _features(args: argparse.Namespace) -> int:
    run_stage_here("features", args.study, {"backbone": args.backbone})
    return 0


def _teacher(args: argparse.Namespace) -> int:
    overrides = {
        "backbone": args.backbone,
        "split": {"by": args.split, "test_fraction": args.test_fraction},
        "teacher": settings_table(args.config, section="teacher") if args.config else {},
    }
    run = run_stage_here("teacher", args.study, overrides, show=False)
    selection = run.metrics.get("selection", {})
    print(
        f"teacher run {run.id}: reg_weight {run.metrics.get('reg_weight')} chosen by "
        f"{selection.get('method', '?')}"
        + (f" over {selection['folds']} image folds" if selection.get("method") == "image_cv" else "")
        + (f" ({selection['why_not_image_cv']})" if selection.get("why_not_image_cv") else "")
        + f"; fit {run.metrics.get('fit_seconds')} s"
    )
    print_eval_table(run)
    return 0


def _eval(args: argparse.Namespace) -> int:
    run = run_stage_here(
        "eval", args.study, {"representations": args.runs, "split_run": args.split_run}, show=False
    )
    print_eval_table(run)
    return 0


def _align(args: argparse.Namespace) -> int:
    overrides = {"backbone": args.backbone, **(settings_table(args.config) if args.config else {})}
    run = run_stage_here("align", args.study, overrides, show=False)
    reused = run.metrics.get("reused_steps") or "none"
    print(f"closed loop run {run.id}; steps reused from earlier runs: {reused}")
    print_eval_table(run)
    print_caveats(run.metrics)
    return 0


def print_caveats(metrics: dict) -> None:
    """The loop's caveats, or that there are none (so a clean run says so too)."""
    from app.results_display import caveat_lines

    if "caveats" not in metrics:
        print("caveats: not checked (a run stored before the checks existed)")
        return
    lines = caveat_lines(metrics)
    print(f"caveats ({len(lines)}):" if lines else "caveats: none (every check passed)")
    for line in lines:
        print(f"  ! {line}")


def print_eval_table(run) -> None:
    import pandas as pd

    from app.results_display import display_table
    from workflows.pipeline.evaluation import read_results

    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(display_table(read_results(run), detail=True).to_string(index=False))
    for note in ("unseen_note", "subject_note"):
        if run.metrics.get(note):
            print(run.metrics[note])
    print(
        "accuracy: per held-out triplet the share of its n human judgments the model agrees with "
        "(ties wrong), averaged over the distinct triplets; 95% CIs bootstrap the triplets; seen images: "
        "held-out judgments "
        "of images the teacher also trained on; unseen images: judgments made only of images no fit saw; "
        "unseen subjects: judgments of seen images by people the fit never learnt from; "
        "anchor: agreement with s(head, close) > s(head, far), chance 1/2; gain: over the first "
        "representation, paired 95% CI; normalised = (acc - 1/3) / (ceiling - 1/3); ρ = Spearman of model "
        "entropy with the triplet's median human RT / choice entropy"
    )
