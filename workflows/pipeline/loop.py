"""Stage `align`: the closed loop in one run — teacher fit → pseudo-labels → AligNet and UnAligNet students →
evaluation on the study's held-out judgments. Each step is a child run; a step whose inputs did not change
(same judgments, same configuration) reuses its earlier run, and features/activations come from the cache.

Minimum data, checked by `check_loop_inputs` before any run is created (each refusal is one line saying
what to add):
- teacher: at least 50 usable judgments, and a split leaving at least 50 to train on and 1 held out;
- Levels types: optional; judgments without a `level` are scored overall only;
- unseen-image test: at least 100 held-out judgments made only of held-out images; with fewer the loop
  still runs, scores seen images only and its note says how many images would do (not a refusal);
- pseudo-labels: the study's images are the pool; the unset settings follow the pool rule
  (`alignment.pseudolabels.PseudoLabelConfig`), and settings that were given must fit the pool;
- students: the pseudo-labelled triplets must reach `student.min_triplets` in at least
  `student.groups_per_step` groups (about 23 images with the defaults);
- one backbone for the whole loop: `backbone` gives the teacher's features, the pseudo-labels and both
  students; a `student.backbone` or `student.weights` that disagrees is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from alignment import DEFAULT_BACKBONE
from common.config import LoadableConfig
from db.engine import Database
from db.models import Run, RunStatus
from db.runs import RunCancelled, create_run, get_run
from workflows.jobs import Progress, Stage, StageResult, execute
from workflows.pipeline.caveats import loop_caveats
from workflows.pipeline.data import (
    SplitConfig,
    judgments_snapshot,
    study_digest,
    study_images,
)
from workflows.pipeline.evaluation import RESULTS_FORMAT
from workflows.pipeline.teacher_stage import TeacherStageConfig

if TYPE_CHECKING:
    from alignment.pseudolabels import PseudoLabelConfig
    from alignment.student import StudentConfig

# progress share of each step in the loop (they sum to 0.99; the caveats check takes the last 1%)
SHARES = {
    "teacher": 0.15,
    "pseudo_labels": 0.05,
    "student aligned": 0.35,
    "student untransformed": 0.35,
    "eval": 0.09,
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


# Presets for the loop's main settings (the Alignment page offers them; anything unset keeps its default).
# quick: a first look in about half the student time; thorough: twice the student passes and the last two
# backbone stages trained. Pseudo-label settings stay derived from the pool in all three.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"student": {"epochs": 6.0, "image_size": 128}},
    "standard": {},
    "thorough": {"student": {"epochs": 24.0, "trainable_stages": 2}},
}


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, section by section (a nested dict merges, anything else
    replaces)."""
    result = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def preset_overrides(preset: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The loop's overrides for a preset, with ``changes`` (e.g. from a form) on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return merged(PRESETS[preset], changes or {})


def latest_loop(db: Database, study_id: int | None = None) -> Run | None:
    """The newest succeeded closed-loop run (of a study), whose metrics name its child runs."""
    query = select(Run).where(Run.kind == "align", Run.status == RunStatus.SUCCEEDED).order_by(Run.id.desc())
    if study_id is not None:
        query = query.where(Run.study_id == study_id)
    with db.read() as session:
        return session.scalars(query.limit(1)).first()


def check_loop_inputs(db: Database, config: AlignConfig) -> None:
    """Clear errors before any long computation: unknown study, too few judgments, bad overrides, a pool
    too small for the students, a student on another backbone (the module docstring lists the minima)."""
    from alignment.pseudolabels import PseudoLabelConfig
    from alignment.student import StudentConfig
    from alignment.teacher import TeacherConfig
    from workflows.pipeline.data import split_study

    images = study_images(db, config.study)
    split_study(db, config.study, SplitConfig.from_dict(config.split))
    TeacherConfig.from_dict(config.teacher)
    student = StudentConfig.from_dict({"backbone": config.backbone, **config.student})
    check_one_backbone(config)
    check_label_supply(len(images.paths), PseudoLabelConfig.from_dict(config.pseudo), student)


def check_one_backbone(config: AlignConfig) -> None:
    """`backbone` means the whole loop: the students train the network whose features were labelled."""
    given = config.student.get("backbone", config.backbone)
    if given != config.backbone:
        raise ValueError(
            f"student.backbone {given!r} differs from the loop's backbone {config.backbone!r}: the "
            f"pseudo-labels are made from {config.backbone!r} features; set --backbone {given} for the "
            "whole loop instead"
        )
    if config.student.get("weights") is not None:
        raise ValueError(
            "student.weights is not used by the loop: the teacher and the students start from the "
            f"backbone's own weights ({config.backbone!r}); remove it"
        )


def check_label_supply(n_images: int, pseudo: PseudoLabelConfig, student: StudentConfig) -> None:
    """The pool must give the students enough pseudo-labelled triplets (``student.min_triplets``) in
    enough groups (``student.groups_per_step``); the error says how many images would."""
    settings = pseudo.for_pool(n_images)  # a given setting the pool cannot meet: its own message
    if _enough(settings, student):
        return
    needed = next(
        (n for n in range(n_images + 1, 100 * n_images + 100) if _pool_enough(n, pseudo, student)), None
    )
    raise ValueError(
        f"the study's {n_images} images give {settings.n_triplets} pseudo-labelled triplets in "
        f"{_groups(settings)} groups (pseudo-label settings {_shown_settings(settings)}); a student needs "
        f"at least student.min_triplets={student.min_triplets} in "
        f"student.groups_per_step={student.groups_per_step} groups: add images to the stimulus set"
        + (f" (about {needed} in all)" if needed else "")
        + " or lower student.min_triplets"
    )


def _groups(settings: PseudoLabelConfig) -> int:
    return -(-settings.setting("n_triplets") // settings.setting("triplets_per_group"))


def _enough(settings: PseudoLabelConfig, student: StudentConfig) -> bool:
    return (
        settings.setting("n_triplets") >= student.min_triplets
        and _groups(settings) >= student.groups_per_step
    )


def _pool_enough(n_images: int, pseudo: PseudoLabelConfig, student: StudentConfig) -> bool:
    try:
        return _enough(pseudo.for_pool(n_images), student)
    except ValueError:
        return False


def _shown_settings(settings: PseudoLabelConfig) -> str:
    names = ("n_clusters", "clusters_per_group", "images_per_cluster", "triplets_per_group")
    return ", ".join(f"{name}={getattr(settings, name)}" for name in names)


def align_stage(db: Database, run: Run, progress: Progress, *, stages: Mapping[str, Stage]) -> StageResult:
    """The loop; each step is a child run executed by its stage in ``stages`` (the pipeline's table)."""
    with judgments_snapshot():  # the loop's steps run in this process: one read of the judgments
        return _align(db, run, progress, stages)


def _align(db: Database, run: Run, progress: Progress, stages: Mapping[str, Stage]) -> StageResult:
    """The loop as child runs in order (teacher, pseudo-labels, both students, evaluation), each reused when
    its inputs did not change; then the caveats that say whether the results mean something."""
    config = AlignConfig.from_dict(run.config)
    check_loop_inputs(db, config)
    step = _Steps(db, run, progress, stages)
    teacher = _teacher_step(db, step, config)
    labels = step.run(
        "pseudo_labels",
        "pseudo_labels",
        {"study": config.study, "teacher_run": teacher, "pseudo": config.pseudo},
    )
    students = _student_steps(step, config, labels)
    evaluation = _evaluation_step(step, config, teacher, students)
    children = {
        "teacher_run": teacher,
        "labels_run": labels,
        "alignet_run": students["aligned"],
        "unalignet_run": students["untransformed"],
        "eval_run": evaluation,
    }
    progress(0.99, "checking whether the results mean something")
    checked = loop_caveats(db, config.study, children, config.similarity)
    metrics = {**get_run(db, evaluation).metrics, **children, "reused_steps": step.reused, **checked}
    return StageResult(metrics, get_run(db, evaluation).artifacts)


def _teacher_step(db: Database, step: _Steps, config: AlignConfig) -> int:
    """The teacher fit; its configuration carries the study's digest, so new judgments make a new fit
    instead of reusing the old one."""
    teacher_config = TeacherStageConfig(
        config.study,
        config.backbone,
        SplitConfig.from_dict(config.split),
        config.teacher,
        study_digest(db, config.study),
    )
    return step.run("teacher", "teacher", asdict(teacher_config))


def _student_steps(step: _Steps, config: AlignConfig, labels: int) -> dict[str, int]:
    """Both students on the same pseudo-labels, one in the teacher's aligned space (AligNet) and one in the
    untransformed space (UnAligNet), so the evaluation can tell the alignment from the extra training."""
    return {
        space: step.run(
            f"student {space}",
            "student",
            {"study": config.study, "labels_run": labels, "space": space, "student": config.student},
        )
        for space in ("aligned", "untransformed")
    }


def _evaluation_step(step: _Steps, config: AlignConfig, teacher: int, students: dict[str, int]) -> int:
    """Evaluation of the backbone, the teacher and both students on the held-out judgments of the teacher's
    split, in ``TABLE_MODELS`` order."""
    representations = [
        f"{teacher}:raw_embeddings",
        f"{teacher}",
        f"{students['aligned']}",
        f"{students['untransformed']}",
    ]
    return step.run(
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
