"""Stages `pseudo_labels` and `student` (AligNet §3–4): the teacher labels many triplets of the image pool,
and a student network is distilled on them. The same stage trains the UnAligNet control from the
`untransformed` labels (raw backbone similarities over the same triplets)."""

from __future__ import annotations

from typing import Any

from db.engine import Database
from db.models import Run
from db.settings import data_home
from workflows.jobs import Progress, StageResult, run_dir
from workflows.pipeline.data import (
    FEATURE_CACHE_DIR,
    WEIGHTS_DIR,
    finished_run,
    load_embeddings,
    save_embeddings,
    study_images,
)

LABEL_SPACES = ("aligned", "untransformed")


def pseudo_labels_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    from alignment.backbones import SOURCE_SEPARATOR, create_backbone, source_names
    from alignment.features import image_content_hash
    from alignment.pseudolabels import LabelProvenance, PseudoLabelConfig, make_pseudolabels
    from alignment.teacher import Teacher

    config = PseudoLabelConfig.from_dict(run.config.get("pseudo", {}))
    teacher_run = finished_run(db, run.config["teacher_run"], "teacher")
    images = study_images(db, run.config["study"])
    features, _ = load_embeddings(teacher_run, "raw_embeddings")
    teacher = Teacher.load(data_home() / teacher_run.artifacts["teacher"])
    backbones = [
        create_backbone(name, cache_dir=data_home() / WEIGHTS_DIR)
        for name in source_names(teacher_run.config["backbone"])
    ]
    progress(0.2, f"clustering {len(features)} images and labelling {config.n_triplets} triplets")
    provenance = LabelProvenance(
        SOURCE_SEPARATOR.join(backbone.name for backbone in backbones),
        SOURCE_SEPARATOR.join(backbone.weights_id for backbone in backbones),
        tuple(image_content_hash(p) for p in images.paths),
        f"run-{teacher_run.id}",
    )
    label_sets = make_pseudolabels(features, teacher, provenance, config)
    artifacts: dict[str, str] = {}
    metrics: dict[str, float] = {"n_triplets": len(label_sets["aligned"].triplets)}
    for space, labels in label_sets.items():
        artifacts[f"labels_{space}"] = str(
            labels.save(run_dir(run.id) / f"labels_{space}.npz").relative_to(data_home())
        )
        metrics[f"temperature_{space}"] = float(labels.meta.get("temperature", float("nan")))
    return StageResult(metrics, artifacts)


def student_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    from alignment.pseudolabels import PseudoLabels
    from alignment.student import (
        StudentConfig,
        build_student,
        pool_activations,
        student_embeddings,
        train_student,
    )

    space = run.config.get("space", "aligned")
    if space not in LABEL_SPACES:
        raise ValueError(f"student label space must be one of {LABEL_SPACES}, got {space!r}")
    config = StudentConfig.from_dict(run.config.get("student", {}))
    labels_run = finished_run(db, run.config["labels_run"], "pseudo_labels")
    labels = PseudoLabels.load(data_home() / labels_run.artifacts[f"labels_{space}"])
    images = study_images(db, run.config["study"])
    student = build_student(config, cache_dir=data_home() / WEIGHTS_DIR)
    acts = pool_activations(
        student,
        images.paths,
        cache_dir=data_home() / FEATURE_CACHE_DIR,
        progress=lambda done, total: progress(0.1 * done / max(total, 1), "trunk activations"),
    )
    result = train_student(
        student,
        acts,
        labels,
        config,
        run_dir(run.id) / "student",
        progress=lambda p: progress(
            0.1 + 0.85 * p.step / max(p.total_steps, 1), f"step {p.step}/{p.total_steps} loss {p.loss:.4f}"
        ),
    )
    embeddings = save_embeddings(run.id, "embeddings", student_embeddings(student, acts.activations), images)
    metrics: dict[str, Any] = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "seconds": result.seconds,
        "triplets_per_s": result.triplets_seen / max(result.seconds, 1e-9),
        "space": space,
    }
    return StageResult(
        metrics, {"student": str(result.student_path.relative_to(data_home())), "embeddings": embeddings}
    )
