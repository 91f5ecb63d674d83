"""The alignment engine's stages as background-job stages: glue between a study's data (study/) and
alignment/. `STAGES` lists every stage by run kind (the one place a stage is registered); `execute` runs
a queued run with it."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

from db.engine import Database
from db.models import RunStatus
from db.runs import create_run
from study.studies import get_study
from workflows import jobs
from workflows.pipeline.data import FEATURE_CACHE_DIR, WEIGHTS_DIR, study_digest
from workflows.pipeline.distillation import pseudo_labels_stage, student_stage
from workflows.pipeline.evaluation import eval_stage, parse_representation
from workflows.pipeline.loop import AlignConfig, align_stage, check_loop_inputs
from workflows.pipeline.teacher_stage import TeacherStageConfig, features_stage, teacher_stage

START_ACTIONS = {
    "Full loop: teacher → pseudo-labels → students → evaluation": "align",
    "Fit teacher only (features + human-aligned transform)": "teacher",
    "Extract features only": "features",
}

STAGES: dict[str, jobs.Stage] = {
    "features": features_stage,
    "teacher": teacher_stage,
    "pseudo_labels": pseudo_labels_stage,
    "student": student_stage,
    "eval": eval_stage,
}
STAGES["align"] = partial(align_stage, stages=STAGES)  # the loop runs its steps with the same table

__all__ = ["FEATURE_CACHE_DIR", "STAGES", "START_ACTIONS", "WEIGHTS_DIR", "execute", "queue_action"]


def execute(db: Database, run_id: int, on_progress: jobs.Progress | None = None) -> RunStatus:
    """Run a queued pipeline run in this process (the CLI, the demo and `alignlab jobs run` call this)."""
    return jobs.execute(db, run_id, STAGES, on_progress)


def queue_action(db: Database, action: str, slug: str, overrides: dict[str, Any] | None = None) -> int:
    """Create the run for an action chosen in the app or the CLI, after checking its inputs; the caller
    launches or executes it."""
    kind = START_ACTIONS.get(action, action)
    config = {"study": slug, **(overrides or {})}
    if kind == "teacher":
        # the digest of the judgments it will see: `align` reuses this run when the judgments and config match
        config.setdefault("judgments_digest", study_digest(db, slug))
        stage_config = TeacherStageConfig.from_dict(config)
        stage_config.teacher_config()
        config = asdict(stage_config)
    elif kind == "align":
        check_loop_inputs(db, AlignConfig.from_dict(config))
    elif kind == "eval":
        for spec in config["representations"]:
            parse_representation(db, spec)
    with db.read() as session:
        study_id = get_study(session, slug).id
    return create_run(db, kind, config, study_id=study_id, name=f"{kind} on {slug}")
