"""The alignment loop as background-job stages: glue between a study's data (study/) and alignment/.

Artifact conventions (paths relative to the data directory, listed in `Run.artifacts`):
- `embeddings`: an .npz with `embeddings` [n, D] float32 and `stimulus_ids` [n] (rows in stimulus-id
  order), what the maps page and the evaluation read;
- `split`: an .npz with the held-out human judgments' (participant id, trial index) pairs, so every stage evaluates on the same test set;
- stage-specific files (`teacher` directory, `labels` .npz, `student` checkpoint directory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.jobs import Progress, StageResult, register_stage, run_dir
from db.engine import Database
from db.models import Run
from db.runs import create_run, get_run
from db.settings import data_home
from study.judgments import load_judgments, load_stimuli, split_judgments

DEFAULT_BACKBONE = "timm:tf_efficientnet_lite0"
FEATURE_CACHE_DIR = "feature_cache"
WEIGHTS_DIR = "weights"
MIN_TRAIN_JUDGMENTS = 50


@dataclass(frozen=True)
class StudyImages:
    """The study's stimuli in id order: the row order of every embedding array."""

    stimulus_ids: np.ndarray
    paths: list[Path]
    table: pd.DataFrame

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Map stimulus ids to row indices (raises on an id outside the set)."""
        position = {int(s): i for i, s in enumerate(self.stimulus_ids)}
        try:
            return np.vectorize(lambda s: position[int(s)], otypes=[np.int64])(ids)
        except KeyError as error:
            raise ValueError(f"stimulus id {error.args[0]} is not in the study's stimulus set") from None


def study_images(db: Database, slug: str) -> StudyImages:
    table = load_stimuli(db, slug)
    if table.empty:
        raise ValueError(f"study {slug!r} has no stimuli")
    paths = [data_home() / p for p in table["path"]]
    return StudyImages(table["id"].to_numpy(np.int64), paths, table)


@dataclass(frozen=True)
class SplitConfig:
    """How human judgments are held out for evaluation. `triplet` (THINGS-style) by default: an
    object-disjoint `image` split keeps only triplets made entirely of held-out images, few in a small set."""

    by: str = "triplet"  # triplet | subject | image
    test_fraction: float = 0.2
    seed: int = 0


def split_study_judgments(db: Database, slug: str, config: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    judgments = load_judgments(db, slug)
    if len(judgments) < MIN_TRAIN_JUDGMENTS:
        raise ValueError(f"study {slug!r} has {len(judgments)} usable judgments (non-excluded, answered); "
                         f"at least {MIN_TRAIN_JUDGMENTS} are needed to fit and evaluate a teacher")
    train, test = split_judgments(judgments, config.by, config.test_fraction, config.seed)
    if len(train) < MIN_TRAIN_JUDGMENTS or test.empty:
        raise ValueError(f"the {config.by} split of study {slug!r} leaves {len(train)} training and {len(test)} "
                         f"test judgments; need >= {MIN_TRAIN_JUDGMENTS} and >= 1 (collect more or change the split)")
    return train, test


def compute_features(slug: str, images: StudyImages, backbone_name: str, progress: Progress) -> np.ndarray:
    """Backbone features for every stimulus, through the content-addressed cache (only new images compute)."""
    from alignment.backbones import create_backbone
    from alignment.features import extract_features

    backbone = create_backbone(backbone_name, cache_dir=data_home() / WEIGHTS_DIR)
    return extract_features(backbone, images.paths, cache_dir=data_home() / FEATURE_CACHE_DIR,
                            progress=lambda done, total: progress(0.5 * done / max(total, 1),
                                                                  f"features {done}/{total}"))


def save_embeddings(run_id: int, name: str, embeddings: np.ndarray, images: StudyImages) -> str:
    path = run_dir(run_id) / f"{name}.npz"
    np.savez_compressed(path, embeddings=embeddings.astype(np.float32), stimulus_ids=images.stimulus_ids)
    return str(path.relative_to(data_home()))


def load_embeddings(run: Run, name: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    if name not in run.artifacts:
        raise LookupError(f"run {run.id} ({run.kind}) has no {name!r} artifact; it has {sorted(run.artifacts)}")
    with np.load(data_home() / run.artifacts[name]) as data:
        return data["embeddings"], data["stimulus_ids"]


@register_stage("features")
def features_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    slug, backbone = run.config["study"], run.config.get("backbone", DEFAULT_BACKBONE)
    images = study_images(db, slug)
    features = compute_features(slug, images, backbone, progress)
    path = save_embeddings(run.id, "embeddings", features, images)
    return StageResult({"n_images": len(features), "dim": int(features.shape[1])}, {"embeddings": path})


@dataclass(frozen=True)
class TeacherStageConfig:
    study: str
    backbone: str = DEFAULT_BACKBONE
    split: SplitConfig = field(default_factory=SplitConfig)
    teacher: dict[str, Any] = field(default_factory=dict)  # TeacherConfig overrides

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherStageConfig:
        data = dict(data)
        data["split"] = SplitConfig(**data.get("split", {}))
        return cls(**data)


def training_triplets(train: pd.DataFrame, images: StudyImages) -> tuple[np.ndarray, np.ndarray]:
    """One row per distinct triplet with the human choice distribution [p01, p02, p12] (odd one out last)."""
    from study.reliability import triplet_human_stats

    stats = triplet_human_stats(train)
    triplets = images.rows(stats[["stim0", "stim1", "stim2"]].to_numpy())
    return triplets, stats[["p01", "p02", "p12"]].to_numpy(np.float64)


@register_stage("teacher")
def teacher_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    from alignment.teacher import TeacherConfig, fit_teacher

    config = TeacherStageConfig.from_dict(run.config)
    images = study_images(db, config.study)
    train, test = split_study_judgments(db, config.study, config.split)
    features = compute_features(config.study, images, config.backbone, progress)
    triplets, probs = training_triplets(train, images)
    progress(0.5, f"fitting the teacher on {len(triplets)} triplets ({len(train)} judgments)")
    teacher = fit_teacher(features, triplets, choice_probs=probs, config=TeacherConfig.from_dict(config.teacher),
                          progress=lambda step, total: progress(0.5 + 0.45 * step / max(total, 1), f"step {step}"))
    teacher_dir = teacher.save(run_dir(run.id) / "teacher")
    split_path = run_dir(run.id) / "split.npz"
    np.savez(split_path, test_keys=test[["participant_id", "trial_index"]].to_numpy(np.int64))
    artifacts = {"teacher": str(teacher_dir.relative_to(data_home())),
                 "embeddings": save_embeddings(run.id, "embeddings", teacher.transform(features), images),
                 "raw_embeddings": save_embeddings(run.id, "raw_embeddings", features, images),
                 "split": str(split_path.relative_to(data_home()))}
    summary = {k: v for k, v in teacher.summary.items() if isinstance(v, int | float | str)}
    return StageResult({**summary, "n_test_judgments": len(test)}, artifacts)


START_ACTIONS = {
    "Fit teacher (features + human-aligned transform)": "teacher",
    "Extract features only": "features",
}


def queue_action(db: Database, action: str, slug: str, overrides: dict[str, Any] | None = None) -> int:
    """Create the run for an action chosen in the app or the CLI; the caller launches it."""
    kind = START_ACTIONS.get(action, action)
    config = {"study": slug, **(overrides or {})}
    if kind == "teacher":
        config = asdict(TeacherStageConfig.from_dict(config))
    if kind == "eval":
        for spec in config["representations"]:  # fail now, not in the background job
            parse_representation(db, spec)
    return create_run(db, kind, config, study_id=_study_id(db, slug), name=f"{kind} on {slug}")


def _study_id(db: Database, slug: str) -> int:
    from study.studies import get_study

    with db.read() as session:
        return get_study(session, slug).id


def finished_run(db: Database, run_id: int, kind: str | None = None) -> Run:
    """A succeeded run (optionally of a given kind), or a clear error before any long computation."""
    run = get_run(db, run_id)
    if kind and run.kind != kind:
        raise ValueError(f"run {run_id} is a {run.kind!r} run, expected a {kind!r} run")
    if run.status.value != "succeeded":
        raise ValueError(f"run {run_id} ({run.kind}) has status {run.status.value!r}"
                         + (f": {run.error}" if run.error else "") + "; only a succeeded run can be used")
    return run


@dataclass(frozen=True)
class Representation:
    """One embedding to evaluate: a run's artifact, with the similarity it is meant to be read with."""

    label: str
    run_id: int
    artifact: str = "embeddings"
    similarity: str = "dot"
    temperature: float = 1.0


def parse_representation(db: Database, spec: str) -> Representation:
    """`RUN` or `RUN:ARTIFACT`; raw backbone features are read with cosine, learned embeddings with dot."""
    run_part, _, artifact = spec.partition(":")
    run = finished_run(db, int(run_part))
    artifact = artifact or "embeddings"
    raw = artifact == "raw_embeddings" or run.kind == "features"
    label = f"{run.kind} {run.id}" + (" (raw features)" if raw and run.kind != "features" else "")
    temperature = 1.0 if raw else float(run.metrics.get("temperature", 1.0))
    return Representation(label, run.id, artifact, "cosine" if raw else "dot", temperature)


def held_out_judgments(db: Database, slug: str, split_run_id: int | None) -> pd.DataFrame:
    """The judgments a split run held out (all judgments when no split run is given)."""
    judgments = load_judgments(db, slug)
    if split_run_id is None:
        return judgments
    run = finished_run(db, split_run_id)
    with np.load(data_home() / run.artifacts["split"]) as data:
        keys = {tuple(key) for key in data["test_keys"].tolist()}
    mask = [key in keys for key in zip(judgments["participant_id"], judgments["trial_index"], strict=True)]
    return judgments[mask]


def human_uncertainty(all_judgments: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Per test judgment, the choice entropy of its triplet over all responses (NaN with fewer than 2)."""
    from study.reliability import triplet_human_stats

    stats = triplet_human_stats(all_judgments, min_responses=2).set_index("triplet_key")["entropy"]
    return test["triplet_key"].map(stats).to_numpy(np.float64)


def noise_ceilings(all_judgments: pd.DataFrame) -> dict[str, float]:
    """Levels leave-one-out ceiling per level and overall (only levels with enough repeated triplets)."""
    from study.reliability import levels_noise_ceiling

    table = levels_noise_ceiling(all_judgments)
    return {row.level: float(row.ceiling) for row in table.itertuples() if row.n_triplets > 0}


def evaluate_representations(db: Database, slug: str, representations: list[Representation],
                             split_run_id: int | None, n_boot: int = 1000) -> pd.DataFrame:
    """The before/after table: every representation on the same held-out human judgments, per level."""
    from alignment.metrics import evaluate_triplets

    all_judgments = load_judgments(db, slug)
    test = held_out_judgments(db, slug, split_run_id)
    test = test[test["level"].notna()]
    if test.empty:
        raise ValueError(f"study {slug!r} has no held-out judgments with a Levels type to evaluate on")
    ceilings, entropy = noise_ceilings(all_judgments), human_uncertainty(all_judgments, test)
    tables = []
    for rep in representations:
        embeddings, ids = load_embeddings(finished_run(db, rep.run_id), rep.artifact)
        rows = StudyImages(ids, [], pd.DataFrame()).rows(test[["stim0", "stim1", "stim2"]].to_numpy())
        report = evaluate_triplets(embeddings, rows, levels=test["level"].tolist(), human_rt=test["rt_ms"],
                                   human_entropy=entropy, noise_ceiling=ceilings or None,
                                   similarity=rep.similarity, temperature=rep.temperature, n_boot=n_boot)
        tables.append(report.table().assign(representation=rep.label))
    table = pd.concat(tables, ignore_index=True)
    return table[["representation", *[c for c in table.columns if c != "representation"]]]


@register_stage("eval")
def eval_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    reps = [parse_representation(db, spec) for spec in run.config["representations"]]
    progress(0.1, f"evaluating {len(reps)} representations on held-out judgments")
    table = evaluate_representations(db, run.config["study"], reps, run.config.get("split_run"))
    path = run_dir(run.id) / "eval_table.csv"
    table.to_csv(path, index=False)
    overall = table[table["level"] == "overall"]
    metrics = {f"accuracy · {r.representation}": float(r.accuracy) for r in overall.itertuples()}
    return StageResult(metrics, {"table": str(path.relative_to(data_home()))})
