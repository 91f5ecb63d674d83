"""Study data for the alignment stages: the stimuli in id order, held-out splits, embedding artifacts
(their file formats: workflows/artifacts.py; stage-specific files: the `teacher` directory, `labels_*` .npz,
the `student` directory)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import LoadableConfig
from db.engine import Database
from db.models import Run, RunStatus
from db.runs import get_run
from db.settings import data_home
from study.judgments import SplitBy, load_anchor_judgments, load_judgments, load_stimuli, split_judgments
from workflows.artifacts import read_embeddings, write_embeddings
from workflows.jobs import Progress, run_dir

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
        """Map stimulus ids to row indices, int32 like every triplet index array (raises on an id outside
        the set). The ids are sorted (id order), so this is a binary search, not a per-id lookup."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.searchsorted(self.stimulus_ids, ids).clip(0, max(len(self.stimulus_ids) - 1, 0))
        missing = self.stimulus_ids[rows] != ids if len(self.stimulus_ids) else np.ones(ids.shape, bool)
        if missing.any():
            raise ValueError(f"stimulus id {ids[missing].flat[0]} is not in the study's stimulus set")
        return rows.astype(np.int32)


def study_images(db: Database, slug: str) -> StudyImages:
    table = load_stimuli(db, slug)
    if table.empty:
        raise ValueError(f"study {slug!r} has no stimuli")
    paths = [data_home() / p for p in table["path"]]
    return StudyImages(table["id"].to_numpy(np.int64), paths, table)


@dataclass(frozen=True)
class SplitConfig(LoadableConfig):
    """How human judgments are held out for evaluation. `triplet` (THINGS-style) by default: an
    object-disjoint `image` split keeps only triplets made entirely of held-out images, few in a small set."""

    SECTION = "split"

    by: SplitBy = "triplet"
    test_fraction: float = 0.2
    seed: int = 0


_SNAPSHOT: ContextVar[dict[tuple[str, str], pd.DataFrame] | None] = ContextVar("judgments", default=None)


@contextmanager
def judgments_snapshot() -> Iterator[None]:
    """Within this block every stage reads a study's judgments from the database once: the closed loop
    (its checks, digest, teacher, evaluation) then works on one consistent snapshot, and THINGS-sized
    tables are not reloaded five times. Callers must not modify the frames they get."""
    token = _SNAPSHOT.set({})
    try:
        yield
    finally:
        _SNAPSHOT.reset(token)


def study_judgments(db: Database, slug: str) -> pd.DataFrame:
    """The study's usable judgments (`study.judgments.load_judgments`), from the snapshot when one is open."""
    snapshot = _SNAPSHOT.get()
    if snapshot is None:
        return load_judgments(db, slug)
    key = (str(db.engine.url), slug)
    if key not in snapshot:
        snapshot[key] = load_judgments(db, slug)
    return snapshot[key]


DIGEST_COLUMNS = ("participant_id", "trial_index", "stim0", "stim1", "stim2")


def judgments_digest(judgments: pd.DataFrame) -> str:
    """Fingerprint of a judgments table: new, removed or newly excluded judgments change it. Hashes the
    integer columns' bytes (no CSV is written)."""
    digest = hashlib.sha256(len(judgments).to_bytes(8, "little"))
    for column in DIGEST_COLUMNS:
        digest.update(np.ascontiguousarray(judgments[column].to_numpy(np.int64)).tobytes())
    return digest.hexdigest()[:16]


def split_study_judgments(db: Database, slug: str, config: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    judgments = study_judgments(db, slug)
    if judgments.empty:
        n_anchor = len(load_anchor_judgments(db, slug))
        if n_anchor:
            raise ValueError(
                f"study {slug!r} holds {n_anchor} anchor judgments (head, close, far) and no odd-one-out "
                "judgments; the teacher and evaluation stages cannot fit anchor judgments yet"
            )
    if len(judgments) < MIN_TRAIN_JUDGMENTS:
        raise ValueError(
            f"study {slug!r} has {len(judgments)} usable judgments (non-excluded, answered); "
            f"at least {MIN_TRAIN_JUDGMENTS} are needed to fit and evaluate a teacher"
        )
    train, test = split_judgments(judgments, config.by, config.test_fraction, config.seed)
    if len(train) < MIN_TRAIN_JUDGMENTS or test.empty:
        raise ValueError(
            f"the {config.by} split of study {slug!r} leaves {len(train)} training and {len(test)} "
            f"test judgments; need >= {MIN_TRAIN_JUDGMENTS} and >= 1 (collect more or change the split)"
        )
    return train, test


def compute_features(
    images: StudyImages, backbone_name: str, progress: Progress, share: float = 0.5
) -> np.ndarray:
    """Backbone features for every stimulus, through the content-addressed cache (only new images compute);
    reports progress from 0 to `share`."""
    from alignment.backbones import create_backbone
    from alignment.features import extract_features

    backbone = create_backbone(backbone_name, cache_dir=data_home() / WEIGHTS_DIR)
    return extract_features(
        backbone,
        images.paths,
        cache_dir=data_home() / FEATURE_CACHE_DIR,
        progress=lambda done, total: progress(share * done / max(total, 1), f"features {done}/{total}"),
    )


def save_embeddings(run_id: int, name: str, embeddings: np.ndarray, images: StudyImages) -> str:
    """Store a run's embeddings artifact; returns its path relative to the data directory."""
    path = write_embeddings(run_dir(run_id) / f"{name}.npz", embeddings, images.stimulus_ids)
    return str(path.relative_to(data_home()))


def load_embeddings(run: Run, name: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    if name not in run.artifacts:
        raise LookupError(
            f"run {run.id} ({run.kind}) has no {name!r} artifact; it has {sorted(run.artifacts)}"
        )
    return read_embeddings(data_home() / run.artifacts[name], f"run {run.id} ({run.kind})")


def finished_run(db: Database, run_id: int, kind: str | None = None) -> Run:
    """A succeeded run (optionally of a given kind), or a clear error before any long computation."""
    run = get_run(db, run_id)
    if kind and run.kind != kind:
        raise ValueError(f"run {run_id} is a {run.kind!r} run, expected a {kind!r} run")
    if run.status != RunStatus.SUCCEEDED:
        raise ValueError(
            f"run {run_id} ({run.kind}) has status {run.status.value!r}"
            + (f": {run.error}" if run.error else "")
            + "; only a succeeded run can be used"
        )
    return run
