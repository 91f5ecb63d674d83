"""Stages `pseudo_labels` and `student` (AligNet §3–4): the teacher labels many triplets of the image pool,
and a student network is distilled on them. The same stage trains the UnAligNet control from the
`untransformed` labels (raw backbone similarities over the same triplets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from alignment.student import StudentConfig

LABEL_SPACES = ("aligned", "untransformed")


def check_labels_inputs(db: Database, config: dict[str, Any]) -> None:
    """A pseudo-label run's inputs, before it is queued: a succeeded teacher run of this study, and
    settings its image pool can meet."""
    from alignment.pseudolabels import PseudoLabelConfig

    if "teacher_run" not in config:
        raise ValueError("pseudo-labels need a teacher run (teacher_run)")
    finished_run(db, config["teacher_run"], "teacher")
    PseudoLabelConfig.from_dict(config.get("pseudo", {})).for_pool(
        len(study_images(db, config["study"]).paths)
    )


def check_student_inputs(db: Database, config: dict[str, Any]) -> None:
    """A student run's inputs, before it is queued: a succeeded pseudo-label run, a label space, settings."""
    from alignment.pseudolabels import PseudoLabels

    if "labels_run" not in config:
        raise ValueError("a student needs a pseudo-label run (labels_run)")
    if config.get("space", "aligned") not in LABEL_SPACES:
        raise ValueError(f"student label space must be one of {LABEL_SPACES}, got {config.get('space')!r}")
    labels_run = finished_run(db, config["labels_run"], "pseudo_labels")
    labels = PseudoLabels.load(data_home() / labels_run.artifacts[f"labels_{config.get('space', 'aligned')}"])
    labels.require_at_least(
        student_config(config.get("student", {}), labels.meta, labels_run.id).min_triplets
    )


def pseudo_labels_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    from alignment.backbones import SOURCE_SEPARATOR, create_backbone, parse_source, source_names
    from alignment.features import image_content_hash
    from alignment.pseudolabels import LabelProvenance, PseudoLabelConfig, make_pseudolabels
    from alignment.teacher import Teacher

    config = PseudoLabelConfig.from_dict(run.config.get("pseudo", {}))
    teacher_run = finished_run(db, run.config["teacher_run"], "teacher")
    images = study_images(db, run.config["study"])
    features, _ = load_embeddings(teacher_run, "raw_embeddings")
    teacher = Teacher.load(data_home() / teacher_run.artifacts["teacher"])
    names = source_names(teacher_run.config["backbone"])
    backbones = [
        create_backbone(parse_source(name).backbone, cache_dir=data_home() / WEIGHTS_DIR) for name in names
    ]
    expected = config.for_pool(len(features))  # the pool rule; bounded again by the actual clusters
    progress(0.2, f"clustering {len(features)} images and labelling {expected.n_triplets} triplets")
    provenance = LabelProvenance(
        SOURCE_SEPARATOR.join(names),
        SOURCE_SEPARATOR.join(backbone.weights_id for backbone in backbones),
        tuple(image_content_hash(p) for p in images.paths),
        f"run-{teacher_run.id}",
    )
    label_sets = make_pseudolabels(features, teacher, provenance, config)
    artifacts: dict[str, str] = {}
    used = label_sets["aligned"].meta["config"]
    metrics: dict[str, Any] = {
        "n_triplets": len(label_sets["aligned"].triplets),
        "settings": {k: v for k, v in used.items() if k != "seed"},  # as derived from the pool or given
    }
    for space, labels in label_sets.items():
        artifacts[f"labels_{space}"] = str(
            labels.save(run_dir(run.id) / f"labels_{space}.npz").relative_to(data_home())
        )
        metrics[f"temperature_{space}"] = float(labels.meta.get("temperature", float("nan")))
    return StageResult(metrics, artifacts)


def student_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    """Train a student on one label space of a pseudo-labels run and save its embeddings of the study's
    images, with the fit to the labels before and after training in the metrics."""
    from alignment.student import build_student, pool_activations, student_embeddings, train_student

    space, labels_run, labels = _student_labels(db, run.config)
    config = student_config(run.config.get("student", {}), labels.meta, labels_run.id)
    images = study_images(db, run.config["study"])
    student = build_student(config, cache_dir=data_home() / WEIGHTS_DIR)
    acts = pool_activations(
        student,
        images.paths,
        cache_dir=data_home() / FEATURE_CACHE_DIR,
        progress=lambda done, total: progress(0.1 * done / max(total, 1), "trunk activations"),
    )
    start = fit_to_labels(student, acts.activations, labels, config)
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
    end = fit_to_labels(student, acts.activations, labels, config)
    return StageResult(
        _student_metrics(result, space, start, end),
        {"student": str(result.student_path.relative_to(data_home())), "embeddings": embeddings},
    )


def _student_labels(db: Database, config: dict[str, Any]):
    """The label space asked for (refused by name when unknown, before anything loads), the finished
    pseudo-labels run and its labels in that space."""
    from alignment.pseudolabels import PseudoLabels

    space = config.get("space", "aligned")
    if space not in LABEL_SPACES:
        raise ValueError(f"student label space must be one of {LABEL_SPACES}, got {space!r}")
    labels_run = finished_run(db, config["labels_run"], "pseudo_labels")
    return space, labels_run, PseudoLabels.load(data_home() / labels_run.artifacts[f"labels_{space}"])


def _student_metrics(result, space: str, start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Training speed and loss, plus the fit to the labels before (``*_start``) and after (``*_end``)
    training, which the loop's "did it learn" check reads (workflows.pipeline.caveats)."""
    return {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "seconds": result.seconds,
        "triplets_per_s": result.triplets_seen / max(result.seconds, 1e-9),
        "space": space,
        **{f"{key}_start": value for key, value in start.items()},
        **{f"{key}_end": value for key, value in end.items()},
    }


def student_config(overrides: dict[str, Any], labels_meta: dict[str, Any], labels_run: int) -> StudentConfig:
    """The student trains the network its pseudo-labels were made from: ``backbone`` defaults to the
    labels', and another one is refused here, before any computation."""
    from alignment.student import StudentConfig

    config = StudentConfig.from_dict({"backbone": labels_meta["backbone"], **overrides})
    if config.backbone != labels_meta["backbone"]:
        raise ValueError(
            f"student.backbone {config.backbone!r} is not the backbone the pseudo-labels of run {labels_run} "
            f"were made from ({labels_meta['backbone']!r}); leave student.backbone unset to train that one, "
            "or make labels with a teacher on the other backbone"
        )
    return config


def fit_to_labels(student, activations, labels, config: StudentConfig) -> dict[str, float]:
    """How well the student matches its pseudo-labels, over all of them: ``teacher_agreement`` (share of
    triplets whose pair (0, 1) is its strict most-similar pair) and ``label_loss`` (the training loss, mean
    over the triplets). Measured alike before and after training."""
    import torch

    from alignment.conventions import correct_choices, pair_similarities
    from alignment.student_losses import get_student_loss

    with torch.inference_mode():
        z = torch.cat([student(activations[i : i + 1024]) for i in range(0, len(activations), 1024)])
        sims = pair_similarities(z, torch.from_numpy(labels.triplets))
        targets = torch.from_numpy(labels.similarities)
        loss = get_student_loss(config.loss)(targets, sims, config.tau).mean()
    return {
        "teacher_agreement": float(correct_choices(sims.double().numpy()).mean()),
        "label_loss": float(loss),
    }
