"""The alignment engine's stages as background-job stages: glue between a study's data (study/) and
alignment/. `STAGES` lists every stage by run kind (the one place a stage is registered); `execute` runs
a queued run with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from db.engine import Database
from db.models import RunStatus
from db.runs import create_run
from study.studies import get_study
from workflows import jobs
from workflows.pipeline.data import FEATURE_CACHE_DIR, WEIGHTS_DIR, study_digest
from workflows.pipeline.distillation import (
    check_labels_inputs,
    check_student_inputs,
    pseudo_labels_stage,
    student_stage,
)
from workflows.pipeline.evaluation import eval_stage, parse_representation
from workflows.pipeline.loop import (
    PRESETS,
    AlignConfig,
    align_stage,
    check_loop_inputs,
    merged,
    preset_overrides,
)
from workflows.pipeline.teacher_stage import TeacherStageConfig, features_stage, teacher_stage

START_ACTIONS = {
    "Full loop: teacher → pseudo-labels → students → evaluation": "align",
    "Fit teacher only (features + human-aligned transform)": "teacher",
    "Pseudo-labels from a teacher run": "pseudo_labels",
    "Student from a pseudo-label run": "student",
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


def _adaptive_stage(db: Database, run, progress: jobs.Progress) -> jobs.StageResult:
    """An adaptive design's background refit (imported here: workflows.adaptive uses the teacher stage)."""
    from workflows.adaptive import adaptive_stage

    return adaptive_stage(db, run, progress)


STAGES["adaptive"] = _adaptive_stage

__all__ = [
    "FEATURE_CACHE_DIR",
    "PRESETS",
    "STAGES",
    "START_ACTIONS",
    "WEIGHTS_DIR",
    "MainSettings",
    "action_overrides",
    "execute",
    "preset_overrides",
    "queue_action",
]


def execute(db: Database, run_id: int, on_progress: jobs.Progress | None = None) -> RunStatus:
    """Run a queued pipeline run in this process (the CLI, the demo and `alignlab jobs run` call this)."""
    return jobs.execute(db, run_id, STAGES, on_progress)


@dataclass(frozen=True)
class MainSettings:
    """The main settings a form offers (0 or "" = the preset's or the default's value); ``extra`` is any
    other override, merged on top."""

    preset: str = "standard"
    backbone: str = ""
    student_epochs: float = 0.0
    student_image_size: int = 0
    n_triplets: int = 0
    split_by: str = ""
    input_run: int = 0  # the teacher run for pseudo-labels, the pseudo-label run for a student
    space: str = "aligned"
    extra: dict[str, Any] = field(default_factory=dict)


def action_overrides(kind: str, main: MainSettings) -> dict[str, Any]:
    """The overrides for a run of ``kind`` from a form's main settings: each kind takes the ones it uses."""
    student = {"epochs": main.student_epochs or None, "image_size": main.student_image_size or None}
    sections: dict[str, Any] = {
        "backbone": main.backbone or None,
        "split": {"by": main.split_by or None},
        "pseudo": {"n_triplets": main.n_triplets or None},
        "student": student,
    }
    used = {
        "align": ("backbone", "split", "pseudo", "student"),
        "teacher": ("backbone", "split"),
        "features": ("backbone",),
        "pseudo_labels": ("pseudo",),
        "student": ("student",),
    }[kind]
    chosen = {key: _without_unset(sections[key]) for key in used}
    preset = {k: v for k, v in preset_overrides(main.preset).items() if k in used}
    overrides = merged(merged(preset, {k: v for k, v in chosen.items() if v not in (None, {})}), main.extra)
    if kind == "pseudo_labels":
        overrides["teacher_run"] = main.input_run or overrides.get("teacher_run")
    elif kind == "student":
        overrides |= {"labels_run": main.input_run or overrides.get("labels_run"), "space": main.space}
    return overrides


def _without_unset(value: Any) -> Any:
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def queue_action(db: Database, action: str, slug: str, overrides: dict[str, Any] | None = None) -> int:
    """Create the run for an action chosen in the app or the CLI, after checking its inputs; the caller
    launches or executes it."""
    kind = START_ACTIONS.get(action, action)
    config = {"study": slug, **(overrides or {})}
    if kind == "teacher":
        TeacherStageConfig.from_dict(config).teacher_config()  # a bad setting is named before any reading
        # the digest of the judgments it will see: `align` reuses this run when the judgments and config match
        config.setdefault("judgments_digest", study_digest(db, slug))
        config = asdict(TeacherStageConfig.from_dict(config))
    elif kind == "align":
        check_loop_inputs(db, AlignConfig.from_dict(config))
    elif kind == "pseudo_labels":
        check_labels_inputs(db, config)
    elif kind == "student":
        check_student_inputs(db, config)
    elif kind == "eval":
        for spec in config["representations"]:
            parse_representation(db, spec)
    with db.read() as session:
        study_id = get_study(session, slug).id
    return create_run(db, kind, config, study_id=study_id, name=f"{kind} on {slug}")
