"""Live model–human agreement while a study runs: how often the base model (and the latest teacher run) picks
the odd one out the participants picked, per Levels type, next to the human noise ceiling, with 95% CIs and
the number of answers each number rests on.

The models' features are the study's own run artifacts in the data directory (a features run's `embeddings`
or a teacher run's `raw_embeddings` for the base model, the newest teacher run's `embeddings`), read once per
process. Answers are scored incrementally: each participant's judgments are read and scored once, and again
only when their answers change (the per-participant mark of `study.qc`: count, highest id, last seen), so a
refresh scores only what arrived since the last one; the tables are recomputed only when the study's data or
the exclusions changed. Scores count ties as wrong (`alignment.conventions.correct_choices`, dot similarity);
each distinct triplet counts once (the share of its judgments the model agrees with), and the CIs are
percentile bootstraps over triplets (`study.reliability.bootstrap_mean_ci`), as in the evaluation table.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import select

from alignment.conventions import correct_choices, pair_similarities
from db.engine import Database
from db.models import Participant, Run, RunStatus
from study.judgments import load_judgments
from study.qc import response_marks
from study.reliability import CEILING_KINDS, OVERALL, bootstrap_mean_ci, levels_noise_ceiling
from study.studies import get_study
from workflows.pipeline.data import load_embeddings

N_BOOT = 1000
READ_BATCH = 500  # participants whose judgments are read in one query
BASE_LABEL = "base model"
JUDGMENT_FIELDS = ["participant_id", "trial_index", "kind", "level", "triplet_key", "stim0", "stim1", "stim2"]


@dataclass(frozen=True)
class ModelFeatures:
    """One representation: its label, where it came from, and its embeddings by stimulus id."""

    label: str
    source: str  # "RUN:ARTIFACT"
    embeddings: np.ndarray
    stimulus_ids: np.ndarray

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row indices of stimulus ids; -1 for an image the representation lacks."""
        rows = np.searchsorted(self.stimulus_ids, ids).clip(0, len(self.stimulus_ids) - 1)
        return np.where(self.stimulus_ids[rows] == ids, rows, -1)


@dataclass
class _StudyScores:
    """Per participant: their mark and their judgments with one `correct` column per model source."""

    by_participant: dict[int, tuple[tuple, pd.DataFrame]] = field(default_factory=dict)
    result: tuple[tuple, pd.DataFrame] | None = None


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {study id: _StudyScores}
_FEATURES: dict[tuple[str, str], ModelFeatures] = {}  # (engine url, "RUN:ARTIFACT") -> features
_LOCK = threading.Lock()


def study_models(db: Database, slug: str) -> list[tuple[str, Run, str]]:
    """(label, run, artifact) of the base model (newest succeeded features run, or teacher run's raw
    features) and the newest succeeded teacher run of the study; empty when it has neither yet."""
    with db.read() as session:
        study = get_study(session, slug)
        runs = session.scalars(
            select(Run)
            .where(
                Run.study_id == study.id,
                Run.status == RunStatus.SUCCEEDED,
                Run.kind.in_(["features", "teacher"]),
            )
            .order_by(Run.id.desc())
        ).all()
    base = next(
        (
            (run, artifact)
            for run in runs
            for artifact in ("embeddings" if run.kind == "features" else "raw_embeddings",)
            if artifact in (run.artifacts or {})
        ),
        None,
    )
    teacher = next(
        (run for run in runs if run.kind == "teacher" and "embeddings" in (run.artifacts or {})), None
    )
    models: list[tuple[str, Run, str]] = [(BASE_LABEL, base[0], base[1])] if base else []
    if teacher:
        models.append((f"teacher run {teacher.id}", teacher, "embeddings"))
    return models


def model_features(db: Database, label: str, run: Run, artifact: str) -> ModelFeatures:
    """The run's embeddings, read from the data directory once per process."""
    key = (str(db.engine.url), f"{run.id}:{artifact}")
    with _LOCK:
        cached = _FEATURES.get(key)
    if cached is None or cached.label != label:
        embeddings, ids = load_embeddings(run, artifact)
        order = np.argsort(ids)
        cached = ModelFeatures(label, key[1], np.asarray(embeddings)[order], np.asarray(ids)[order])
        with _LOCK:
            _FEATURES[key] = cached
    return cached


def live_agreement(db: Database, slug: str) -> pd.DataFrame:
    """One row per Levels type present and `overall`: answers and triplets it rests on, each model's
    agreement with the participants and the human noise ceiling, each with its 95% CI (excluded
    participants left out). Empty when there are no judgments yet."""
    models = [model_features(db, *model) for model in study_models(db, slug)]
    with db.read() as session:
        study = get_study(session, slug)
        excluded = frozenset(
            session.scalars(
                select(Participant.id).where(Participant.study_id == study.id, Participant.excluded.is_(True))
            )
        )
    scores = _refreshed_scores(db, slug, study.id, models)
    state = (
        tuple(sorted((pid, mark) for pid, (mark, _) in scores.by_participant.items())),
        excluded,
        tuple(m.source for m in models),
    )
    with _LOCK:
        if scores.result is not None and scores.result[0] == state:
            return scores.result[1]
    frames = [
        frame for pid, (_, frame) in scores.by_participant.items() if pid not in excluded and len(frame)
    ]
    judgments = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=JUDGMENT_FIELDS)
    table = agreement_table(judgments, models)
    with _LOCK:
        scores.result = (state, table)
    return table


def _refreshed_scores(db: Database, slug: str, study_id: int, models: list[ModelFeatures]) -> _StudyScores:
    """The study's scored judgments, reading and scoring only participants whose answers changed, and
    scoring every cached judgment only for a model not scored before."""
    marks = response_marks(db, slug)
    with _LOCK:
        scores = _CACHE.setdefault(db.engine, {}).setdefault(study_id, _StudyScores())
        stale = [pid for pid, mark in marks.items() if scores.by_participant.get(pid, (None,))[0] != mark]
        for gone in set(scores.by_participant) - set(marks):
            del scores.by_participant[gone]
    for start in range(0, len(stale), READ_BATCH):
        batch = stale[start : start + READ_BATCH]
        fresh = load_judgments(db, slug, include_excluded=True, kinds=CEILING_KINDS, participant_ids=batch)[
            JUDGMENT_FIELDS
        ]
        by_participant = dict(tuple(fresh.groupby("participant_id", sort=False)))
        scored = {
            pid: (marks[pid], _scored(by_participant.get(pid, fresh.iloc[0:0]), models)) for pid in batch
        }
        with _LOCK:
            scores.by_participant.update(scored)
    with _LOCK:
        for pid, (mark, frame) in list(scores.by_participant.items()):
            missing = [m for m in models if m.source not in frame.columns]
            if missing:
                scores.by_participant[pid] = (mark, _scored(frame, missing))
    return scores


def _scored(judgments: pd.DataFrame, models: list[ModelFeatures]) -> pd.DataFrame:
    """The judgments with one column per model: 1.0 where it picks the participant's odd one out, 0.0
    where not (ties count wrong), NaN where it lacks an image."""
    frame = judgments.copy()
    ids = frame[["stim0", "stim1", "stim2"]].to_numpy(np.int64)
    for model in models:
        rows = model.rows(ids) if len(ids) else np.zeros((0, 3), np.int64)
        known = (rows >= 0).all(axis=1)
        correct = np.full(len(frame), np.nan)
        if known.any():
            sims = pair_similarities(model.embeddings, rows[known], "dot")
            correct[known] = correct_choices(sims).astype(float)
        frame[model.source] = correct
    return frame


def agreement_table(judgments: pd.DataFrame, models: list[ModelFeatures]) -> pd.DataFrame:
    """The numbers of `live_agreement` from scored judgments (see the module docstring)."""
    if judgments.empty:
        return pd.DataFrame()
    ceiling = levels_noise_ceiling(judgments, n_boot=N_BOOT).set_index("level")
    levels = sorted(judgments["level"].dropna().unique().tolist())
    rows = []
    for level in [*levels, OVERALL]:
        part = judgments if level == OVERALL else judgments[judgments["level"] == level]
        row: dict = {"level": level, "answers": len(part), "triplets": int(part["triplet_key"].nunique())}
        for model in models:
            per_triplet = part.groupby("triplet_key")[model.source].mean().dropna().to_numpy()
            low, high = bootstrap_mean_ci(per_triplet, n_boot=N_BOOT)
            mean = float(per_triplet.mean()) if len(per_triplet) else float("nan")
            row[model.label] = (mean, low, high)
        if level in ceiling.index:
            line = ceiling.loc[level]
            row["human ceiling"] = (float(line["ceiling"]), float(line["ci_low"]), float(line["ci_high"]))
            row["ceiling triplets"] = int(line["n_triplets"])
        else:
            row["human ceiling"] = (float("nan"),) * 3
            row["ceiling triplets"] = 0
        rows.append(row)
    return pd.DataFrame(rows)
