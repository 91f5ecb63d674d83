"""Stages `features` and `teacher`: backbone features of a study's stimuli, and the human-aligned teacher
fitted on the study's non-excluded training judgments (the held-out split is saved for evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from alignment import DEFAULT_BACKBONE
from common.config import LoadableConfig
from db.engine import Database
from db.models import Run
from db.settings import data_home
from workflows.artifacts import write_split
from workflows.jobs import Progress, StageResult, run_dir
from workflows.pipeline.data import (
    ANCHOR_COLUMNS,
    SplitConfig,
    StudyImages,
    backbone_features,
    compute_features,
    save_embeddings,
    split_study,
    study_images,
    study_judgments,
)
from workflows.pipeline.evaluation import evaluation_metrics, score_held_out, split_sets, store_results

if TYPE_CHECKING:
    from alignment.teacher import TeacherConfig


def features_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    images = study_images(db, run.config["study"])
    features = compute_features(images, run.config.get("backbone", DEFAULT_BACKBONE), progress, share=1.0)
    path = save_embeddings(run.id, "embeddings", features, images)
    return StageResult({"n_images": len(features), "dim": int(features.shape[1])}, {"embeddings": path})


@dataclass(frozen=True)
class TeacherStageConfig(LoadableConfig):
    study: str
    backbone: str = DEFAULT_BACKBONE
    split: SplitConfig = field(default_factory=SplitConfig)
    teacher: dict[str, Any] = field(default_factory=dict)  # TeacherConfig overrides
    judgments_digest: str = ""  # which judgments the run saw (the closed loop reuses runs on unchanged data)

    def teacher_config(self) -> TeacherConfig:
        """The checked TeacherConfig of the overrides: a bad override fails before any computation."""
        from alignment.teacher import TeacherConfig

        return TeacherConfig.from_dict(self.teacher)


def training_triplets(train: pd.DataFrame, images: StudyImages) -> tuple[np.ndarray, np.ndarray | None]:
    """One row per distinct triplet with the human choice distribution [p01, p02, p12] (odd one out last)."""
    from study.reliability import triplet_human_stats

    if train.empty:
        return np.empty((0, 3), np.int32), None
    stats = triplet_human_stats(train)
    triplets = images.rows(stats[["stim0", "stim1", "stim2"]].to_numpy())
    return triplets, stats[["p01", "p02", "p12"]].to_numpy(np.float64)


def teacher_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    """Fit on the training judgments of both kinds; store the teacher, embeddings, the split, and the base vs
    teacher table on the seen-image, unseen-image and unseen-subject tests."""
    from alignment.teacher import fit_teacher

    config = TeacherStageConfig.from_dict(run.config)
    teacher_config = config.teacher_config()
    images = study_images(db, config.study)
    split = split_study(db, config.study, config.split)
    features, scales = backbone_features(config.backbone, images.paths, progress)
    triplets, probs = training_triplets(split.train, images)
    anchors = images.rows(split.anchor_train[ANCHOR_COLUMNS].to_numpy())
    progress(0.5, f"fitting the teacher on {len(triplets)} triplets and {len(anchors)} anchor judgments")
    teacher = fit_teacher(
        features,
        triplets,
        choice_probs=probs,
        anchors=anchors,
        config=teacher_config,
        progress=lambda step, total: progress(0.5 + 0.4 * step / max(total, 1), f"step {step}"),
    )
    progress(0.9, "scoring base and teacher on the held-out judgments")
    aligned = teacher.transform(features)
    results = score_held_out(
        split_sets(split), {"base": features, "teacher": aligned}, images, study_judgments(db, config.study)
    )
    teacher_dir = teacher.save(run_dir(run.id) / "teacher")
    split_path = write_split(run_dir(run.id) / "split.npz", *split.test_keys())
    artifacts = {
        "teacher": str(teacher_dir.relative_to(data_home())),
        "embeddings": save_embeddings(run.id, "embeddings", aligned, images),
        "raw_embeddings": save_embeddings(run.id, "raw_embeddings", features, images),
        "split": str(split_path.relative_to(data_home())),
        **store_results(run.id, results),
    }
    summary = {k: v for k, v in teacher.summary.items() if isinstance(v, int | float | str | dict)}
    counts = {
        "n_train_judgments": len(split.train),
        "n_train_anchor_judgments": len(split.anchor_train),
        "n_unseen_images": len(split.unseen_images),
        "unseen_note": split.unseen_note,
        "n_unseen_subjects": len(split.unseen_subjects),
        "subject_note": split.subject_note,
        "feature_scales": scales,  # per source (mean, SD) when several are combined: applying it reuses them
    }
    return StageResult({**summary, **counts, **evaluation_metrics(results)}, artifacts)
