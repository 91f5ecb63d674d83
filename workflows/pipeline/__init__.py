"""The alignment engine's stages as background-job stages: glue between a study's data (study/) and
alignment/. Importing this package registers every stage with workflows.jobs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from db.engine import Database
from db.runs import create_run
from study.studies import get_study
from workflows.pipeline import distillation, evaluation, loop, teacher_stage  # noqa: F401 - registers the stages
from workflows.pipeline.data import FEATURE_CACHE_DIR, WEIGHTS_DIR
from workflows.pipeline.evaluation import parse_representation
from workflows.pipeline.loop import AlignConfig, check_loop_inputs
from workflows.pipeline.teacher_stage import TeacherStageConfig

START_ACTIONS = {
    "Full loop: teacher → pseudo-labels → students → evaluation": "align",
    "Fit teacher only (features + human-aligned transform)": "teacher",
    "Extract features only": "features",
}

__all__ = ["FEATURE_CACHE_DIR", "START_ACTIONS", "WEIGHTS_DIR", "queue_action"]


def queue_action(db: Database, action: str, slug: str, overrides: dict[str, Any] | None = None) -> int:
    """Create the run for an action chosen in the app or the CLI, after checking its inputs; the caller
    launches or executes it."""
    kind = START_ACTIONS.get(action, action)
    config = {"study": slug, **(overrides or {})}
    if kind == "teacher":
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
