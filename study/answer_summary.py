"""A study's answers reduced to what the human-agreement tables and the response-time histogram need, kept
up to date incrementally and on disk, so a page render never reads the answers of a whole study.

The summary holds, per participant: their first answer to each triplet of the ceiling kinds (which of the
triplet's three images, in ascending id order, they chose: the sufficient statistic of the Levels and THINGS
agreement rules) and their answered trials counted per (level or kind, 100 ms RT bin), counted in SQL. It
remembers the highest response id and the latest `last_seen_at` it has read; an update reads again only the
participants with a newer answer or a newer `last_seen_at` (an unavailable answer replaced in place), and
replaces their rows. Exclusions are applied when the tables are computed, so an exclusion reads no answer.

From the summary, `agreement_tables` gives exactly `levels_noise_ceiling` and `things_modal_consistency`
over `load_judgments_compact` (same triplets, same seeded subsamples, same bootstrap), and `rt_counts`
exactly `study.monitoring.rt_histogram`.

The summary is kept per database engine in memory and, for SQLite, in `<database file>.cache/summary/`
(like the QC cache); a server started on a database it has summarised before reads the file and then only
what arrived since.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, String, func, or_, select, type_coerce

from common.atomic import atomic_path
from db.engine import Database
from db.models import Participant, Response, Study, Trial
from study.judgments import analysed_participant, answer_batches, answered_query, trial_facts
from study.reliability import CEILING_KINDS, summarise_levels_ceiling, summarise_modal_consistency
from study.studies import get_study

READ_BATCH = 500  # participants read together in an update
RT_BIN_MS = 100
Progress = Callable[[int, int], None]  # (participants read, participants to read)


@dataclass(frozen=True)
class AnswerSummary:
    """Flat arrays, one row per (participant, triplet) first answer and one per (participant, group, bin)."""

    last_response_id: int = 0
    last_seen: datetime | None = None
    triplet_keys: tuple[str, ...] = ()  # code -> triplet key
    triplet_levels: tuple[str | None, ...] = ()
    groups: tuple[str, ...] = ()  # code -> RT histogram group (level, or kind for trials without one)
    participant: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    triplet: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    choice: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    rt_participant: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rt_group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    rt_bin: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rt_n: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_participants(self) -> int:
        return len(np.union1d(self.participant, self.rt_participant))


_SUMMARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {study key: AnswerSummary}
_LOCK = threading.Lock()


def cached_summary(db: Database, slug: str) -> AnswerSummary | None:
    """The last finished summary (memory, else the file), however old; None when never computed (or the
    study does not exist)."""
    key = study_key(db, slug)
    if key is None:
        return None
    with _LOCK:
        known = _SUMMARIES.setdefault(db.engine, {})
        if key not in known:
            path = summary_file(db, key)
            stored = _read(path) if path else None
            if stored is None:
                return None
            known[key] = stored
        return known[key]


def study_key(db: Database, slug: str) -> str | None:
    """What a summary is kept under: the slug, the study's id and its creation time, so a study deleted and
    created again under the same slug, or a database rebuilt in the same file, never gets an old study's
    summary. None when there is no such study."""
    with db.read() as session:
        row = session.execute(select(Study.id, Study.created_at).where(Study.slug == slug)).first()
    return None if row is None else f"{slug}|{row.id}|{row.created_at.isoformat()}"


def stale_participants(db: Database, slug: str, summary: AnswerSummary | None) -> list[int]:
    """Analysed participants with an answer newer than the summary (by response id or last seen), over the
    indexes on responses.id and the study's participants; all who answered when there is no summary."""
    summary = summary or AnswerSummary()
    with db.read() as session:
        study = get_study(session, slug)
        people = Participant.study_id == study.id
        newer = select(Response.participant_id).where(Response.id > summary.last_response_id)
        condition: ColumnElement[bool] = Participant.id.in_(newer)
        if summary.last_seen is not None:
            condition = or_(condition, Participant.last_seen_at > summary.last_seen)
        return list(
            session.scalars(
                select(Participant.id)
                .where(people, analysed_participant(), condition)
                .order_by(Participant.id)
            )
        )


def update_summary(db: Database, slug: str, progress: Progress | None = None) -> AnswerSummary:
    """The summary brought up to date: the stale participants' rows read again (`READ_BATCH` at a time,
    `progress` told after each batch), stored in memory and on disk. The marks are read before the stale
    participants, so an answer arriving meanwhile is read now or by the next update, never missed."""
    summary = cached_summary(db, slug) or AnswerSummary()
    with db.read() as session:  # read the marks first: what arrives while reading is read next time
        study = get_study(session, slug)
        highest = session.scalar(
            select(func.max(Response.id))
            .join(Participant, Participant.id == Response.participant_id)
            .where(Participant.study_id == study.id)
        )
        seen = session.scalar(
            select(func.max(Participant.last_seen_at)).where(Participant.study_id == study.id)
        )
    stale = stale_participants(db, slug, summary)
    for start in range(0, len(stale), READ_BATCH):
        summary = _with_participants(db, slug, summary, stale[start : start + READ_BATCH])
        if progress:
            progress(min(start + READ_BATCH, len(stale)), len(stale))
    summary = replace(summary, last_response_id=max(summary.last_response_id, highest or 0), last_seen=seen)
    key = study_key(db, slug) or slug  # the study was read above: it exists
    with _LOCK:
        _SUMMARIES.setdefault(db.engine, {})[key] = summary
    path = summary_file(db, key)
    if path is not None:
        _write(path, summary)
    return summary


def _with_participants(db: Database, slug: str, summary: AnswerSummary, ids: list[int]) -> AnswerSummary:
    """`summary` with the rows of `ids` replaced by what their stored answers give now."""
    with db.read() as session:
        study = get_study(session, slug)
        trials = trial_facts(session, study.id)
        query = answered_query(study.id, include_excluded=True).where(Participant.id.in_(ids))
        chunks = list(answer_batches(session, query, 100_000))
        rt_rows = session.execute(_rt_query(study.id).where(Participant.id.in_(ids))).all()
    keys, levels, groups = list(summary.triplet_keys), list(summary.triplet_levels), list(summary.groups)
    participant, triplet, choice = _first_answers(chunks, trials, keys, levels)
    rt = pd.DataFrame(rt_rows, columns=["participant_id", "group", "bin", "n"])
    group_codes = {name: code for code, name in enumerate(groups)}
    for name in rt["group"].unique():
        if name not in group_codes:
            group_codes[name] = len(groups)
            groups.append(name)
    keep = ~np.isin(summary.participant, ids)
    keep_rt = ~np.isin(summary.rt_participant, ids)
    return replace(
        summary,
        triplet_keys=tuple(keys),
        triplet_levels=tuple(levels),
        groups=tuple(groups),
        participant=np.concatenate([summary.participant[keep], participant]),
        triplet=np.concatenate([summary.triplet[keep], triplet]),
        choice=np.concatenate([summary.choice[keep], choice]),
        rt_participant=np.concatenate(
            [summary.rt_participant[keep_rt], rt["participant_id"].to_numpy(np.int64)]
        ),
        rt_group=np.concatenate([summary.rt_group[keep_rt], rt["group"].map(group_codes).to_numpy(np.int32)]),
        rt_bin=np.concatenate([summary.rt_bin[keep_rt], rt["bin"].to_numpy(np.int64)]),
        rt_n=np.concatenate([summary.rt_n[keep_rt], rt["n"].to_numpy(np.int64)]),
    )


def _first_answers(
    chunks: list[np.ndarray], trials: pd.DataFrame, keys: list[str], levels: list[str | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(participant, triplet code, chosen position) of each participant's first answer to each triplet of
    the ceiling kinds; `keys` and `levels` grow with triplets seen for the first time."""
    answers = np.concatenate(chunks) if chunks else np.zeros((0, 5))
    ids = answers[:, :4].astype(np.int64)  # participant, trial index, trial, chosen; by participant, index
    row = trials.index.get_indexer(ids[:, 2])
    ceiling = np.isin(trials["kind"].to_numpy(object)[row], CEILING_KINDS)
    ids, row = ids[ceiling], row[ceiling]
    codes = {key: code for code, key in enumerate(keys)}
    trial_keys = trials["triplet_key"].to_numpy(object)
    trial_levels = trials["level"].to_numpy(object)
    triplet = np.empty(len(row), dtype=np.int32)
    for position, (key, level) in enumerate(zip(trial_keys[row], trial_levels[row], strict=True)):
        code = codes.get(key)
        if code is None:
            code = codes[key] = len(keys)
            keys.append(key)
            levels.append(level)
        triplet[position] = code
    stored = np.sort(trials[["stim0", "stim1", "stim2"]].to_numpy(np.int64)[row], axis=1)
    choice = (stored == ids[:, 3:4]).argmax(axis=1).astype(np.int8)
    first = ~pd.DataFrame({"p": ids[:, 0], "t": triplet}).duplicated().to_numpy()  # rows are in answer order
    return ids[first, 0], triplet[first], choice[first]


def _rt_query(study_id: int):
    """`rt_histogram`'s counts per participant: (participant, group, bin start, n), bucketed in SQL."""
    group = func.coalesce(type_coerce(Trial.level, String), type_coerce(Trial.kind, String))
    bin_start = func.floor(Response.rt_ms / RT_BIN_MS) * RT_BIN_MS
    return (
        select(Participant.id, group.label("group"), bin_start.label("bin_ms"), func.count())
        .join(Trial, Trial.id == Response.trial_id)
        .join(Participant, Participant.id == Response.participant_id)
        .where(
            Participant.study_id == study_id,
            analysed_participant(),
            Response.timed_out.is_(False),
            Response.unavailable.is_(False),
            Response.rt_ms.is_not(None),
        )
        .group_by(Participant.id, "group", "bin_ms")
    )


def excluded_participants(db: Database, slug: str) -> tuple[int, ...]:
    with db.read() as session:
        study = get_study(session, slug)
        return tuple(
            session.scalars(
                select(Participant.id)
                .where(Participant.study_id == study.id, Participant.excluded.is_(True))
                .order_by(Participant.id)
            )
        )


def agreement_tables(
    summary: AnswerSummary, excluded: tuple[int, ...], *, n_boot: int = 2000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(Levels leave-one-out ceiling, THINGS modal consistency) of the summary without the excluded
    participants; None when nobody answered a ceiling trial."""
    kept = ~np.isin(summary.participant, excluded)
    participant, triplet, choice = summary.participant[kept], summary.triplet[kept], summary.choice[kept]
    if not len(participant):
        return None
    keys = np.array(summary.triplet_keys, dtype=object)
    levels = np.array(summary.triplet_levels, dtype=object)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.argsort(keys.astype(str), kind="stable")] = np.arange(len(keys))
    order = np.lexsort((participant, rank[triplet]))  # by triplet key, then participant: the groups' order
    by_triplet, chosen = triplet[order], choice[order]
    starts = np.flatnonzero(np.r_[True, by_triplet[1:] != by_triplet[:-1]])
    sizes = np.diff(np.r_[starts, len(by_triplet)])
    codes = by_triplet[starts]
    counts = np.zeros((len(codes), 3), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(codes)), sizes), chosen), 1)
    ceiling = summarise_levels_ceiling(
        _levels_scores(keys[codes], levels[codes], starts, sizes, counts, chosen, seed=seed), n_boot, seed
    )
    repeated = sizes >= 2
    modal = pd.DataFrame(
        {
            "level": levels[codes][repeated],
            "n": sizes[repeated],
            "score": counts[repeated].max(axis=1) / sizes[repeated],
        }
    )
    return ceiling, summarise_modal_consistency(modal)


def _levels_scores(keys, levels, starts, sizes, counts, chosen, *, seed, min_responses=4, max_responses=5):
    """Per triplet with >= `min_responses` answers: leave-one-out majority agreement of its answers, those of
    triplets with more than `max_responses` subsampled with the same seeded draws as `levels_noise_ceiling`
    (in triplet-key order, answers in participant order)."""
    rng = np.random.default_rng(seed)
    used = counts.copy()
    for group in np.flatnonzero(sizes > max_responses):
        sample = rng.choice(
            chosen[starts[group] : starts[group] + sizes[group]], size=max_responses, replace=False
        )
        used[group] = np.bincount(sample, minlength=3)
    kept = sizes >= min_responses
    return pd.DataFrame(
        {
            "triplet_key": keys[kept],
            "level": levels[kept],
            "n": used[kept].sum(axis=1),
            "score": loo_majority_from_counts(used[kept]),
        }
    )


def loo_majority_from_counts(counts: np.ndarray) -> np.ndarray:
    """`study.reliability.loo_majority_agreement` for many triplets at once, from [t, 3] choice counts."""
    n = counts.sum(axis=1)
    credit = np.zeros(len(counts))
    for held in range(3):
        others = counts.copy()
        others[:, held] -= 1
        top = others.max(axis=1, keepdims=True)
        majority = others == top
        is_majority = majority[:, held] & (counts[:, held] > 0)
        credit += np.where(is_majority, counts[:, held] / majority.sum(axis=1), 0.0)
    return credit / n


def rt_counts(summary: AnswerSummary) -> pd.DataFrame:
    """`study.monitoring.rt_histogram` from the summary: columns `group`, `rt_ms`, `n`."""
    frame = pd.DataFrame({"group": summary.rt_group, "rt_ms": summary.rt_bin, "n": summary.rt_n})
    counted = frame.groupby(["group", "rt_ms"], as_index=False)["n"].sum()
    counted["group"] = np.array(summary.groups, dtype=object)[counted["group"].to_numpy()]
    return counted.sort_values(["group", "rt_ms"], ignore_index=True)[["group", "rt_ms", "n"]]


def summary_file(db: Database, key: str) -> Path | None:
    """`<database file>.cache/summary/<hash of the study key>.npz` (SQLite only, like the QC cache)."""
    database = db.engine.url.database
    if db.dialect != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(f"{database}.cache") / "summary" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


_ARRAYS = ("participant", "triplet", "choice", "rt_participant", "rt_group", "rt_bin", "rt_n")


def _write(path: Path, summary: AnswerSummary) -> None:
    levels = [level if level is not None else "" for level in summary.triplet_levels]
    with atomic_path(path) as temporary:
        np.savez(
            temporary,
            **{name: getattr(summary, name) for name in _ARRAYS},
            last_response_id=np.int64(summary.last_response_id),
            last_seen=np.array(summary.last_seen.isoformat() if summary.last_seen else ""),
            triplet_keys=np.array(summary.triplet_keys, dtype=str),
            triplet_levels=np.array(levels, dtype=str),
            has_level=np.array([level is not None for level in summary.triplet_levels], dtype=bool),
            groups=np.array(summary.groups, dtype=str),
        )


def _read(path: Path) -> AnswerSummary | None:
    """The stored summary; None when there is none or it cannot be read (it is then computed again)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            seen = str(stored["last_seen"])
            return AnswerSummary(
                last_response_id=int(stored["last_response_id"]),
                last_seen=datetime.fromisoformat(seen) if seen else None,
                triplet_keys=tuple(str(key) for key in stored["triplet_keys"]),
                triplet_levels=tuple(
                    str(level) if has else None
                    for level, has in zip(stored["triplet_levels"], stored["has_level"], strict=True)
                ),
                groups=tuple(str(group) for group in stored["groups"]),
                **{name: stored[name] for name in _ARRAYS},
            )
    except (OSError, ValueError, KeyError):
        return None
