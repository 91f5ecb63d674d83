"""Study data for the alignment stages: the stimuli in id order, held-out splits, embedding artifacts
(their file formats: workflows/artifacts.py; stage-specific files: the `teacher` directory, `labels_*` .npz,
the `student` directory)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

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

if TYPE_CHECKING:
    from alignment.features import SourceScale

FEATURE_CACHE_DIR = "feature_cache"
WEIGHTS_DIR = "weights"
MIN_TRAIN_JUDGMENTS = 50


@dataclass(frozen=True)
class StudyImages:
    """The study's stimuli in id order: the row order of every embedding array; `paths` are the files features
    are computed from (the originals, see `feature_files`)."""

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
    return StudyImages(table["id"].to_numpy(np.int64), feature_files(table), table)


def feature_files(table: pd.DataFrame) -> list[Path]:
    """The files alignment reads: each stimulus's original as imported (``study.stimuli.original_path``), or
    its serving copy for sets imported before originals were kept (and synthetic sets without files)."""
    from study.stimuli import original_path

    home = data_home()
    files = []
    for serving, content_hash in zip(table["path"], table["content_hash"], strict=True):
        original = home / original_path(serving, content_hash)
        files.append(original if original.is_file() else home / serving)
    return files


@dataclass(frozen=True)
class SplitConfig(LoadableConfig):
    """How human judgments are held out for evaluation, in two parts reported side by side.

    Unseen images: `unseen_fraction` of the judged images is held out entirely; the judgments made only of
    them are the unseen-image test (object-disjoint: what a teacher is for), and judgments mixing them with
    other images are used by nobody. When that test would hold fewer than `MIN_UNSEEN_JUDGMENTS`, no image
    is held out and the split says how many images it would need. Seen images: of the remaining judgments,
    `test_fraction` is held out `by` triplet (THINGS-style, random triplets of images the fit also trains
    on) or subject; `by="image"` makes the whole test object-disjoint (`test_fraction` of the images, no
    seen-image test). Unseen subjects: `subject_fraction` of the subjects is held out entirely (when the
    study has at least `MIN_SUBJECTS`); their judgments of seen images are the subject-disjoint test (people
    the fit never learnt from), their judgments of unseen images stay in the unseen-image test."""

    SECTION = "split"

    by: SplitBy = "triplet"
    test_fraction: float = 0.2
    unseen_fraction: float = 0.2
    subject_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.by not in ("triplet", "subject", "image"):
            raise ValueError(f"split by must be 'triplet', 'subject' or 'image'; got {self.by!r}")
        if not 0 <= self.unseen_fraction < 1:
            raise ValueError(f"unseen_fraction must be in [0, 1); got {self.unseen_fraction}")
        if not 0 <= self.subject_fraction < 1:
            raise ValueError(f"subject_fraction must be in [0, 1); got {self.subject_fraction}")


MIN_UNSEEN_JUDGMENTS = 100
MIN_SUBJECTS = 10  # holding out 10% of fewer subjects would leave no subject, or one, to test on
MIN_SUBJECT_JUDGMENTS = 100
ANCHOR_COLUMNS = ["head", "close", "far"]
TRIPLET_COLUMNS = ["stim0", "stim1", "stim2"]


@dataclass(frozen=True)
class StudySplit:
    """A study's judgments split for one fit: odd-one-out frames (`load_judgments` columns) and anchor frames
    (`load_anchor_judgments` columns plus `triplet_key`), each as train, seen-image test, unseen-image
    test and unseen-subject test."""

    train: pd.DataFrame
    seen: pd.DataFrame
    unseen: pd.DataFrame
    anchor_train: pd.DataFrame
    anchor_seen: pd.DataFrame
    anchor_unseen: pd.DataFrame
    unseen_images: np.ndarray  # stimulus ids held out entirely
    unseen_note: str  # why there is no unseen-image test and what it would need; "" when there is one
    subjects: pd.DataFrame  # judgments of the held-out subjects on seen images
    anchor_subjects: pd.DataFrame
    unseen_subjects: np.ndarray  # participant ids held out entirely
    subject_note: str  # why there is no unseen-subject test and what it would need; "" when there is one

    def test_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(participant id, trial index) of every held-out judgment [m, 2], whether it is an unseen-image
        judgment [m] and whether it is an unseen-subject (seen-image) judgment [m]."""
        parts = [
            (self.seen, False, False),
            (self.anchor_seen, False, False),
            (self.unseen, True, False),
            (self.anchor_unseen, True, False),
            (self.subjects, False, True),
            (self.anchor_subjects, False, True),
        ]
        keys = [np.empty((0, 2), np.int64)] + [
            f[["participant_id", "trial_index"]].to_numpy(np.int64).reshape(-1, 2) for f, _, _ in parts
        ]
        unseen = [np.zeros(0, bool)] + [np.full(len(f), flag) for f, flag, _ in parts]
        subject = [np.zeros(0, bool)] + [np.full(len(f), flag) for f, _, flag in parts]
        return np.concatenate(keys), np.concatenate(unseen), np.concatenate(subject)

    @property
    def n_train(self) -> int:
        return len(self.train) + len(self.anchor_train)


def study_anchor_judgments(db: Database, slug: str) -> pd.DataFrame:
    """The study's anchor judgments with a `triplet_key` (the head and the unordered other two), from the
    snapshot when one is open."""
    snapshot = _SNAPSHOT.get()
    key = (str(db.engine.url), slug, "anchor")
    if snapshot is not None and key in snapshot:
        return snapshot[key]
    anchors = load_anchor_judgments(db, slug)
    ids = anchors[ANCHOR_COLUMNS].to_numpy(np.int64)
    pair = np.sort(ids[:, 1:], axis=1)
    anchors["triplet_key"] = [
        f"{h}>{a}-{b}" for h, a, b in zip(ids[:, 0], pair[:, 0], pair[:, 1], strict=True)
    ]
    if snapshot is not None:
        snapshot[key] = anchors
    return anchors


def _within(frame: pd.DataFrame, columns: list[str], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(all three images in `images`, none of them in `images`) per row."""
    inside = frame[columns].isin(images).to_numpy() if len(frame) else np.zeros((0, 3), bool)
    return np.asarray(inside.all(axis=1)), np.asarray(~inside.any(axis=1))


def _unseen_images(
    judgments: pd.DataFrame, anchors: pd.DataFrame, fraction: float, seed: int
) -> tuple[np.ndarray, str]:
    """The stimulus ids held out entirely, or none and the reason with how many images it would take."""
    if fraction == 0:
        return np.array([], np.int64), "no unseen-image test: unseen_fraction is 0"
    used = np.unique(
        np.concatenate(
            [judgments[TRIPLET_COLUMNS].to_numpy().ravel(), anchors[ANCHOR_COLUMNS].to_numpy().ravel()]
        )
    )
    held = (
        np.random.default_rng(seed).choice(used, size=max(3, round(fraction * used.size)), replace=False)
        if used.size >= 6
        else np.array([], np.int64)
    )
    inside = (
        _within(judgments, TRIPLET_COLUMNS, held)[0].sum() + _within(anchors, ANCHOR_COLUMNS, held)[0].sum()
    )
    if inside >= MIN_UNSEEN_JUDGMENTS:
        return np.sort(held), ""
    total = len(judgments) + len(anchors)
    needed = int(np.ceil(used.size * (MIN_UNSEEN_JUDGMENTS / max(total, 1)) ** (1 / 3)))
    return np.array([], np.int64), (
        f"unseen-image accuracy not measured: holding out {held.size} of the {used.size} judged images "
        f"leaves {inside} judgments made only of them (need {MIN_UNSEEN_JUDGMENTS}); at this study's "
        "judgment density "
        f"about {needed} held-out images would do (a study of ~{int(np.ceil(needed / fraction))} images at "
        f"unseen_fraction {fraction}, judged as densely)"
    )


def _seen_split(
    frame: pd.DataFrame, by: str, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if by == "image" or frame.empty:
        return frame, frame.iloc[:0]
    return split_judgments(frame, cast(SplitBy, by), fraction, seed)


def _unseen_subjects(
    judgments: pd.DataFrame, anchors: pd.DataFrame, config: SplitConfig
) -> tuple[np.ndarray, str]:
    """The participant ids held out entirely, or none and the reason (`by="subject"`: the seen-image test is
    already subject-disjoint; too few subjects; too few of their judgments)."""
    if config.subject_fraction == 0:
        return np.array([], np.int64), "no unseen-subject test: subject_fraction is 0"
    if config.by == "subject":
        return np.array([], np.int64), "the seen-image test is itself subject-disjoint (split by subject)"
    judged_by = np.concatenate([judgments["participant_id"].to_numpy(), anchors["participant_id"].to_numpy()])
    subjects = np.unique(judged_by)
    if subjects.size < MIN_SUBJECTS:
        return np.array([], np.int64), (
            f"unseen-subject accuracy not measured: the judgments come from {subjects.size} subject(s) "
            f"(need {MIN_SUBJECTS}, so that {config.subject_fraction:g} of them can be held out; imported "
            "files without a subject column count as one subject)"
        )
    size = max(1, round(config.subject_fraction * subjects.size))
    held = np.sort(np.random.default_rng(config.seed + 1).choice(subjects, size=size, replace=False))
    theirs = int(np.isin(judged_by, held).sum())
    if theirs < MIN_SUBJECT_JUDGMENTS:
        return np.array([], np.int64), (
            f"unseen-subject accuracy not measured: the {size} held-out of {subjects.size} subjects made "
            f"{theirs} judgments (need {MIN_SUBJECT_JUDGMENTS})"
        )
    return held, ""


def split_study(db: Database, slug: str, config: SplitConfig) -> StudySplit:
    """The study's usable judgments of both kinds split into train, seen-image, unseen-image and
    unseen-subject tests: unseen images first (judgments mixing them with others are used by nobody), then
    the held-out subjects' judgments of the other images, then the seen-image test of the rest."""
    judgments, anchors = study_judgments(db, slug), study_anchor_judgments(db, slug)
    total = len(judgments) + len(anchors)
    if total < MIN_TRAIN_JUDGMENTS:
        raise ValueError(
            f"study {slug!r} has {total} usable judgments (non-excluded, answered; odd-one-out and anchor); "
            f"at least {MIN_TRAIN_JUDGMENTS} are needed to fit and evaluate a teacher"
        )
    fraction = config.test_fraction if config.by == "image" else config.unseen_fraction
    held, note = _unseen_images(judgments, anchors, fraction, config.seed)
    people, subject_note = _unseen_subjects(judgments, anchors, config)
    in_t, out_t = _within(judgments, TRIPLET_COLUMNS, held)
    in_a, out_a = _within(anchors, ANCHOR_COLUMNS, held)
    theirs_t = judgments["participant_id"].isin(people).to_numpy()
    theirs_a = anchors["participant_id"].isin(people).to_numpy()
    train, seen = _seen_split(judgments[out_t & ~theirs_t], config.by, config.test_fraction, config.seed)
    anchor_train, anchor_seen = _seen_split(
        anchors[out_a & ~theirs_a], config.by, config.test_fraction, config.seed
    )
    split = StudySplit(
        train,
        seen,
        judgments[in_t],
        anchor_train,
        anchor_seen,
        anchors[in_a],
        held,
        note,
        judgments[out_t & theirs_t],
        anchors[out_a & theirs_a],
        people,
        subject_note,
    )
    n_test = len(split.test_keys()[0])
    if split.n_train < MIN_TRAIN_JUDGMENTS or n_test == 0:
        raise ValueError(
            f"the {config.by} split of study {slug!r} leaves {split.n_train} training and {n_test} "
            f"test judgments; need >= {MIN_TRAIN_JUDGMENTS} and >= 1 (collect more or change the split)"
            + (f"; {note}" if note else "")
        )
    return split


_SNAPSHOT: ContextVar[dict[tuple[str, ...], pd.DataFrame] | None] = ContextVar("judgments", default=None)


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


def study_digest(db: Database, slug: str) -> str:
    """Fingerprint of a study's usable judgments of both kinds (odd-one-out, then anchor rows)."""
    anchors = study_anchor_judgments(db, slug).rename(
        columns=dict(zip(ANCHOR_COLUMNS, TRIPLET_COLUMNS, strict=True))
    )
    return judgments_digest(study_judgments(db, slug)) + (judgments_digest(anchors) if len(anchors) else "")


def compute_features(
    images: StudyImages, backbone_name: str, progress: Progress, share: float = 0.5
) -> np.ndarray:
    """Backbone features for every stimulus (see `backbone_features`)."""
    return backbone_features(backbone_name, images.paths, progress, share)[0]


def backbone_features(
    backbone_name: str,
    paths: list[Path],
    progress: Progress,
    share: float = 0.5,
    scales: list[SourceScale] | None = None,
) -> tuple[np.ndarray, list[SourceScale]]:
    """Features of image files through the content-addressed cache (only new images compute); several
    backbones joined by "+" are computed and cached one by one and combined, each standardised with
    `scales` or its own (mean, SD) (``alignment.features.combine_sources``), which are returned; a source
    `NAME@k` is that backbone's intermediate layer before stage k, averaged over space; reports progress
    from 0 to `share`."""
    from alignment.backbones import source_names
    from alignment.features import combine_sources, extract_source

    names = source_names(backbone_name)

    def source_progress(index: int) -> Callable[[int, int], None]:
        return lambda done, total: progress(
            share * (index + done / max(total, 1)) / len(names), f"{names[index]} features {done}/{total}"
        )

    parts = [
        extract_source(
            name,
            paths,
            cache_dir=data_home() / FEATURE_CACHE_DIR,
            weights_dir=data_home() / WEIGHTS_DIR,
            progress=source_progress(index),
        )
        for index, name in enumerate(names)
    ]
    return combine_sources(parts, scales)


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
