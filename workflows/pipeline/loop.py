"""Stage `align`: the closed loop in one run — teacher fit → pseudo-labels → AligNet and UnAligNet students →
evaluation on the study's held-out judgments. Each step is a child run; a step whose inputs did not change
(same judgments, same configuration) reuses its earlier run, and features/activations come from the cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from alignment import DEFAULT_BACKBONE
from common.config import LoadableConfig
from db.engine import Database
from db.models import Run, RunStatus
from db.runs import RunCancelled, create_run, get_run
from workflows.jobs import Progress, Stage, StageResult, execute
from workflows.pipeline.data import (
    SplitConfig,
    judgments_snapshot,
    study_digest,
    study_images,
)
from workflows.pipeline.evaluation import RESULTS_FORMAT
from workflows.pipeline.teacher_stage import TeacherStageConfig

# progress share of each step in the loop (they sum to 1)
SHARES = {
    "teacher": 0.15,
    "pseudo_labels": 0.05,
    "student aligned": 0.35,
    "student untransformed": 0.35,
    "eval": 0.10,
}
TABLE_MODELS = ("base", "teacher", "AligNet", "UnAligNet")


@dataclass(frozen=True)
class AlignConfig(LoadableConfig):
    """Everything the loop needs; the defaults are the laptop-scale demo (a GPU user raises them)."""

    study: str
    backbone: str = DEFAULT_BACKBONE
    split: dict[str, Any] = field(default_factory=dict)  # SplitConfig fields
    teacher: dict[str, Any] = field(default_factory=dict)  # TeacherConfig overrides
    pseudo: dict[str, Any] = field(default_factory=dict)  # PseudoLabelConfig overrides
    student: dict[str, Any] = field(default_factory=dict)  # StudentConfig overrides
    similarity: str = "dot"


def latest_loop(db: Database, study_id: int | None = None) -> Run | None:
    """The newest succeeded closed-loop run (of a study), whose metrics name its child runs."""
    query = select(Run).where(Run.kind == "align", Run.status == RunStatus.SUCCEEDED).order_by(Run.id.desc())
    if study_id is not None:
        query = query.where(Run.study_id == study_id)
    with db.read() as session:
        return session.scalars(query.limit(1)).first()


def check_loop_inputs(db: Database, config: AlignConfig) -> None:
    """Clear errors before any long computation: unknown study, too few judgments, bad overrides."""
    from alignment.pseudolabels import PseudoLabelConfig
    from alignment.student import StudentConfig
    from alignment.teacher import TeacherConfig
    from workflows.pipeline.data import split_study

    study_images(db, config.study)
    split_study(db, config.study, SplitConfig.from_dict(config.split))
    TeacherConfig.from_dict(config.teacher)
    PseudoLabelConfig.from_dict(config.pseudo)
    StudentConfig.from_dict(config.student)


def align_stage(db: Database, run: Run, progress: Progress, *, stages: Mapping[str, Stage]) -> StageResult:
    """The loop; each step is a child run executed by its stage in ``stages`` (the pipeline's table)."""
    with judgments_snapshot():  # the loop's steps run in this process: one read of the judgments
        return _align(db, run, progress, stages)


def _align(db: Database, run: Run, progress: Progress, stages: Mapping[str, Stage]) -> StageResult:
    config = AlignConfig.from_dict(run.config)
    check_loop_inputs(db, config)
    step = _Steps(db, run, progress, stages)
    teacher_config = TeacherStageConfig(
        config.study,
        config.backbone,
        SplitConfig.from_dict(config.split),
        config.teacher,
        study_digest(db, config.study),
    )
    teacher = step.run("teacher", "teacher", asdict(teacher_config))
    labels = step.run(
        "pseudo_labels",
        "pseudo_labels",
        {"study": config.study, "teacher_run": teacher, "pseudo": config.pseudo},
    )
    students = {
        space: step.run(
            f"student {space}",
            "student",
            {"study": config.study, "labels_run": labels, "space": space, "student": config.student},
        )
        for space in ("aligned", "untransformed")
    }
    representations = [
        f"{teacher}:raw_embeddings",
        f"{teacher}",
        f"{students['aligned']}",
        f"{students['untransformed']}",
    ]
    evaluation = step.run(
        "eval",
        "eval",
        {
            "study": config.study,
            "representations": representations,
            "labels": list(TABLE_MODELS),
            "split_run": teacher,
            "similarity": config.similarity,
            "results_format": RESULTS_FORMAT,
        },
    )
    children = {
        "teacher_run": teacher,
        "labels_run": labels,
        "alignet_run": students["aligned"],
        "unalignet_run": students["untransformed"],
        "eval_run": evaluation,
    }
    metrics = {**get_run(db, evaluation).metrics, **children, "reused_steps": step.reused}
    return StageResult(metrics, get_run(db, evaluation).artifacts)


class _Steps:
    """Runs the loop's steps as child runs, mapping their progress into the parent's."""

    def __init__(self, db: Database, parent: Run, progress: Progress, stages: Mapping[str, Stage]):
        self.db, self.parent, self.progress, self.stages = db, parent, progress, stages
        self.done = 0.0
        self.reused: list[str] = []

    def run(self, name: str, kind: str, config: dict[str, Any]) -> int:
        share, start = SHARES[name], self.done
        previous = _reusable(self.db, kind, config)
        if previous is not None:
            self.reused.append(name)
            child = previous
        else:
            child = create_run(
                self.db,
                kind,
                config,
                study_id=self.parent.study_id,
                parent_run_id=self.parent.id,
                name=f"{name} ({self.parent.name})",
            )
            status = execute(
                self.db,
                child,
                self.stages,
                on_progress=lambda f, m: self.progress(start + share * f, f"{name}: {m}"),
            )
            _require_success(self.db, child, name, status)
        self.done += share
        self.progress(self.done, f"{name} done (run {child})")
        return child


def _reusable(db: Database, kind: str, config: dict[str, Any]) -> int | None:
    """The latest succeeded run of this kind with exactly this configuration, if any."""
    with db.read() as session:
        runs = session.scalars(
            select(Run).where(Run.kind == kind, Run.status == RunStatus.SUCCEEDED).order_by(Run.id.desc())
        ).all()
    return next((r.id for r in runs if r.config == config), None)


def _require_success(db: Database, child: int, name: str, status: RunStatus) -> None:
    if status == RunStatus.CANCELLED:
        raise RunCancelled(f"{name} (run {child}) was cancelled")
    if status != RunStatus.SUCCEEDED:
        raise RuntimeError(f"{name} (run {child}) failed: {get_run(db, child).error}")
