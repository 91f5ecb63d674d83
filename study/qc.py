"""Per-participant quality control with the Levels and THINGS rules, and the recorded exclusion decision.

Rules (thresholds in `QCConfig`, defaults from the source studies):
- catch accuracy below 0.90 (Levels); timed-out catch trials count as wrong;
- more than 10 timeouts (Levels); trials whose images the server could not serve (`unavailable`) are no
  timeouts: they are counted separately (`n_unavailable`) and never judged;
- THINGS too fast: in a window of 20 answered trials the 5th-fastest RT < 800 ms and the 10th-fastest
  < 1100 ms; THINGS drops every such window and the whole worker at >= 5 flagged windows, so 1-4 flagged
  windows give the informational flag `fast_window` and 5 or more `too_fast`;
- THINGS position bias: any of left/middle/right chosen in > 40% or < 27% of answered trials
  (judged only with >= 100 answered trials, THINGS' >= 5 HITs of 20); an unbiased responder still trips
  it with probability ~0.30 at 100 answered trials, ~0.11 at 200, ~0.03 at 330 (multinomial simulation);
- fullscreen exits and window blurs are counted, and flagged only above a configured maximum;
- early responses: trials on which the participant pressed before the minimum valid RT (the press is ignored
  and the trial goes on, so with Levels' 1000 ms minimum the THINGS too-fast rule cannot fire; this count is
  the speed signal that remains), flagged only above a configured maximum.
Practice trials never count. Flags are suggestions; `set_exclusion` records the researcher's decision.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Select, String, func, select, type_coerce

from common.atomic import atomic_path
from common.config import LoadableConfig
from db.engine import Database
from db.models import InteractionEvent, Participant, Response, Study, Trial, TrialKind, TripletList
from study.judgments import analysed_participant, pseudonymise
from study.participation import ParticipantNotFound
from study.studies import get_study, select_labelled, study_rows

FULLSCREEN_EXIT_EVENTS = ("fullscreen_exit", "fullscreenexit")
BLUR_EVENTS = ("blur",)
EARLY_EVENTS = ("early_response",)  # logged once per trial by the trial component


@dataclass(frozen=True)
class QCConfig(LoadableConfig):
    """Thresholds of the quality-control rules; None = count only, never exclude for it."""

    SECTION = "qc"

    min_catch_accuracy: float = 0.90
    max_timeouts: int = 10
    fast_window: int = 20
    fast_5th_ms: float = 800.0
    fast_10th_ms: float = 1100.0
    max_fast_windows: int = 4  # THINGS: a worker with >= 5 flagged windows is dropped
    position_min_share: float = 0.27
    position_max_share: float = 0.40
    position_min_trials: int = 100
    max_fullscreen_exits: int | None = None  # None: count only
    max_blurs: int | None = None
    max_early_responses: int | None = (
        None  # trials with a press before the minimum valid RT; None: count only
    )

    def to_dict(self) -> dict:
        return asdict(self)


def catch_accuracy(chosen: np.ndarray, correct: np.ndarray) -> float:
    """Share of catch trials answered with the known odd one out; a timeout (chosen < 0 or NaN) is wrong."""
    chosen, correct = np.asarray(chosen, dtype=float), np.asarray(correct, dtype=float)
    if chosen.size == 0:
        return float("nan")
    return float(np.mean(chosen == correct))


def too_fast_windows(
    rts_ms: np.ndarray, window: int = 20, fifth_ms: float = 800.0, tenth_ms: float = 1100.0
) -> np.ndarray:
    """THINGS rule per consecutive window of `window` answered RTs (a trailing partial window is not judged):
    True where the 5th-fastest RT < `fifth_ms` and the 10th-fastest < `tenth_ms`."""
    rts = np.asarray(rts_ms, dtype=float)
    n_windows = rts.size // window
    if n_windows == 0:
        return np.zeros(0, dtype=bool)
    ranked = np.sort(rts[: n_windows * window].reshape(n_windows, window), axis=1)
    return (ranked[:, 4] < fifth_ms) & (ranked[:, 9] < tenth_ms)


def position_shares(positions: np.ndarray) -> np.ndarray:
    """Shares of left, middle, right among the chosen positions (0, 1, 2)."""
    positions = np.asarray(positions, dtype=int)
    if positions.size == 0:
        return np.full(3, np.nan)
    return np.bincount(positions, minlength=3)[:3] / positions.size


def position_biased(shares: np.ndarray, min_share: float = 0.27, max_share: float = 0.40) -> bool:
    """THINGS rule: any position chosen more than `max_share` or less than `min_share` of the time."""
    shares = np.asarray(shares, dtype=float)
    return bool(np.any(shares > max_share) or np.any(shares < min_share))


def participant_qc(db: Database, study_slug: str, config: QCConfig | None = None) -> pd.DataFrame:
    """One row per consenting participant of the study with every QC measure, `flags` and
    `suggest_exclude`. The response-based measures come from a per-participant cache (see `_measures_of`):
    only participants who answered since the last call are read and measured again."""
    config = config or QCConfig()
    participants = _participants(db, study_slug)
    ids = participants["participant_id"].tolist()
    measured = _measures_of(db, study_slug, config)
    events = _event_counts(db, ids)
    rows = []
    for participant in participants.itertuples(index=False):
        measures = dict(measured[participant.participant_id])
        measures["fullscreen_exits"] = events.get((participant.participant_id, "fullscreen"), 0)
        measures["blurs"] = events.get((participant.participant_id, "blur"), 0)
        measures["early_responses"] = events.get((participant.participant_id, "early"), 0)
        flags = _flags(measures, config)
        rows.append(
            {
                **participant._asdict(),
                **measures,
                "flags": ", ".join(flags),
                "suggest_exclude": bool(set(flags) & _EXCLUDING),
            }
        )
    return _without_nan_text(pd.DataFrame(rows, columns=list(participants.columns) + QC_COLUMNS))


QC_RESPONSE_COLUMNS = {  # what the response-based measures read, practice trials left out in SQL
    "participant_id": Response.participant_id,
    "kind": type_coerce(Trial.kind, String),
    "odd_known": Trial.odd_known,
    "stim2": Trial.stim2_id,
    "timed_out": Response.timed_out,
    "unavailable": Response.unavailable,
    "rt_ms": Response.rt_ms,
    "chosen_position": Response.chosen_position,
    "chosen_stimulus_id": Response.chosen_stimulus_id,
}
MEASURE_BATCH = 100  # participants whose responses are read and measured together (bounds memory)
_MEASURE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {config: {id: ...}}
_CACHE_LOCK = threading.Lock()


def _measures_of(db: Database, study_slug: str, config: QCConfig) -> dict[int, dict]:
    """participant id -> response-based measures, from a cache kept per database engine and QC config.

    A participant's entry is keyed by their `response_marks` entry; only participants whose mark changed are
    read again, in batches."""
    marks = response_marks(db, study_slug)
    store = _cache_file(db, study_slug, config)
    with _CACHE_LOCK:
        cache = _MEASURE_CACHE.setdefault(db.engine, {}).setdefault(config, {})
        if not cache and store is not None:
            cache.update(_read_cache(store))
        stale = [pid for pid, mark in marks.items() if pid not in cache or cache[pid][0] != mark]
    for start in range(0, len(stale), MEASURE_BATCH):
        batch = stale[start : start + MEASURE_BATCH]
        responses = _qc_responses(db, batch)
        by_participant = dict(tuple(responses.groupby("participant_id", sort=False)))
        fresh = {
            pid: (marks[pid], _measures(by_participant.get(pid, responses.iloc[0:0]), config))
            for pid in batch
        }
        with _CACHE_LOCK:
            cache.update(fresh)
    with _CACHE_LOCK:
        measured = {pid: cache[pid] for pid in marks}
    if stale and store is not None:
        _write_cache(store, measured)
    return {pid: entry[1] for pid, entry in measured.items()}


MARK_COLUMNS = ["n_responses", "max_response_id", "last_seen_at"]


def _cache_file(db: Database, slug: str, config: QCConfig) -> Path | None:
    """Where this study's measures are kept between server processes: `<database file>.cache/qc/`, one
    Parquet file per study and QC config (SQLite only: a shared PostgreSQL database is read by many hosts,
    each keeping its cache in memory)."""
    database = db.engine.url.database
    if db.dialect != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = hashlib.sha256(f"{slug}|{sorted(asdict(config).items())}".encode()).hexdigest()[:20]
    return Path(f"{database}.cache") / "qc" / f"{key}.parquet"


def _read_cache(path: Path) -> dict[int, tuple[tuple, dict]]:
    """The stored measures (empty when there are none or the file cannot be read: they are recomputed)."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return {}
    measures = [column for column in frame.columns if column not in ("participant_id", *MARK_COLUMNS)]
    entries = {}
    for row in frame.itertuples(index=False):
        values = row._asdict()
        seen = (
            values["last_seen_at"].to_pydatetime().replace(tzinfo=None)
            if pd.notna(values["last_seen_at"])
            else None
        )
        highest = None if pd.isna(values["max_response_id"]) else int(values["max_response_id"])
        mark = (int(values["n_responses"]), highest, seen)
        entries[int(values["participant_id"])] = (mark, {name: _plain(values[name]) for name in measures})
    return entries


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _write_cache(path: Path, measured: dict[int, tuple[tuple, dict]]) -> None:
    rows = [
        {"participant_id": pid, **dict(zip(MARK_COLUMNS, mark, strict=True)), **measures}
        for pid, (mark, measures) in measured.items()
    ]
    frame = pd.DataFrame(rows)
    frame["max_response_id"] = frame["max_response_id"].astype("Int64")
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


def response_marks(db: Database, slug: str) -> dict[int, tuple]:
    """Consenting participant id -> (response count, highest response id, last seen): the mark changes
    whenever one of their answers is stored or replaced, so equal marks mean unchanged answers. Counted in
    SQL over the index on `responses.participant_id`; no response row is read."""
    with db.read() as session:
        study = get_study(session, slug)
        people = select(Participant.id).where(Participant.study_id == study.id, analysed_participant())
        counted = {
            pid: (count, highest)
            for pid, count, highest in session.execute(
                select(Response.participant_id, func.count(), func.max(Response.id))
                .where(Response.participant_id.in_(people))
                .group_by(Response.participant_id)
            ).all()
        }
        seen = session.execute(
            select(Participant.id, Participant.last_seen_at).where(
                Participant.study_id == study.id, analysed_participant()
            )
        ).all()
    return {pid: (*counted.get(pid, (0, None)), last_seen) for pid, last_seen in seen}


def _qc_responses(db: Database, participant_ids: list[int]) -> pd.DataFrame:
    with db.read() as session:
        rows: Sequence[Any] = session.execute(
            select(*[column.label(name) for name, column in QC_RESPONSE_COLUMNS.items()])
            .join(Trial, Trial.id == Response.trial_id)
            .where(
                Response.participant_id.in_(participant_ids),
                type_coerce(Trial.kind, String) != TrialKind.PRACTICE.value,
            )
            .order_by(Response.participant_id, Response.trial_index)
        ).all()
    frame = pd.DataFrame(rows, columns=list(QC_RESPONSE_COLUMNS))
    frame = frame.astype({"odd_known": bool, "timed_out": bool, "unavailable": bool, "rt_ms": float})
    return frame


QC_COLUMNS = [
    "n_answered",
    "n_timeouts",
    "n_unavailable",
    "catch_accuracy",
    "n_catch",
    "fast_windows",
    "n_windows",
    "share_left",
    "share_middle",
    "share_right",
    "median_rt_ms",
    "fullscreen_exits",
    "blurs",
    "early_responses",
    "flags",
    "suggest_exclude",
]
_EXCLUDING = {"catch", "timeouts", "too_fast", "position_bias", "fullscreen", "blur", "early"}


def _measures(own: pd.DataFrame, config: QCConfig) -> dict:
    shown = own[~own["unavailable"]]
    answered = shown[~shown["timed_out"]]
    catch = shown[(shown["kind"] == TrialKind.CATCH.value) & shown["odd_known"]]
    fast = too_fast_windows(
        answered["rt_ms"].to_numpy(), config.fast_window, config.fast_5th_ms, config.fast_10th_ms
    )
    shares = position_shares(answered["chosen_position"].to_numpy())
    return {
        "n_answered": len(answered),
        "n_timeouts": int(shown["timed_out"].sum()),
        "n_unavailable": int(own["unavailable"].sum()),
        "catch_accuracy": catch_accuracy(
            catch["chosen_stimulus_id"].fillna(-1).to_numpy(), catch["stim2"].to_numpy()
        ),
        "n_catch": len(catch),
        "fast_windows": int(fast.sum()),
        "n_windows": len(fast),
        "share_left": shares[0],
        "share_middle": shares[1],
        "share_right": shares[2],
        "median_rt_ms": float(answered["rt_ms"].median()) if len(answered) else float("nan"),
    }


def _flags(m: dict, config: QCConfig) -> list[str]:
    """Names of the rules this participant breaks, in rule order; `fast_window` alone is informational."""
    shares = np.array([m["share_left"], m["share_middle"], m["share_right"]])
    broken = {
        "catch": m["n_catch"] > 0 and m["catch_accuracy"] < config.min_catch_accuracy,
        "timeouts": m["n_timeouts"] > config.max_timeouts,
        "too_fast": m["fast_windows"] > config.max_fast_windows,
        "fast_window": 0 < m["fast_windows"] <= config.max_fast_windows,
        "position_bias": m["n_answered"] >= config.position_min_trials
        and position_biased(shares, config.position_min_share, config.position_max_share),
        "fullscreen": config.max_fullscreen_exits is not None
        and m["fullscreen_exits"] > config.max_fullscreen_exits,
        "blur": config.max_blurs is not None and m["blurs"] > config.max_blurs,
        "early": config.max_early_responses is not None and m["early_responses"] > config.max_early_responses,
    }
    return [name for name, hit in broken.items() if hit]


PARTICIPANT_COLUMNS = {
    "participant_id": Participant.id,
    "external_id": Participant.external_id,
    "status": Participant.status,
    "is_simulated": Participant.is_simulated,
    "source": Participant.source,
    "excluded": Participant.excluded,
    "exclusion_reason": Participant.exclusion_reason,
    "payment_status": Participant.payment_status,
    "payment_reason": Participant.payment_reason,
    "bonus_cents": Participant.bonus_cents,
    "started_at": Participant.started_at,
    "finished_at": Participant.finished_at,
    "last_seen_at": Participant.last_seen_at,
    "external_study_id": Participant.external_study_id,
    "external_session_id": Participant.external_session_id,
    "list_index": TripletList.list_index,
    "config_version": Participant.config_version,
    "demographics": Participant.demographics,
    "strategy": Participant.strategy,
    "browser": Participant.browser,
}


def _participants(db: Database, slug: str) -> pd.DataFrame:
    """The study's consenting participants (no pilots), one row each, with `subject` (their pseudonym)
    third."""
    study, rows = study_rows(db, slug, _participants_query)
    salt = study.salt
    frame = pd.DataFrame(rows, columns=list(PARTICIPANT_COLUMNS))
    frame["status"] = frame["status"].map(str)
    frame["list_index"] = frame["list_index"].astype("Int64")
    frame["bonus_cents"] = frame["bonus_cents"].astype("Int64")
    frame["config_version"] = frame["config_version"].astype("Int64")
    frame.insert(2, "subject", [pseudonymise(salt, external) for external in frame["external_id"]])
    return frame


def _participants_query(study: Study) -> Select[*tuple[Any, ...]]:
    return (
        select_labelled(PARTICIPANT_COLUMNS)
        .outerjoin(TripletList, TripletList.id == Participant.list_id)
        .where(Participant.study_id == study.id, analysed_participant())
        .order_by(Participant.id)
    )


def _without_nan_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing reasons and answers as None, never NaN, so no page or file shows the text "nan"."""
    for column in ("exclusion_reason", "payment_reason", "strategy"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    for column in ("list_index", "bonus_cents", "config_version"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _event_counts(db: Database, participant_ids: list[int]) -> dict[tuple[int, str], int]:
    """(participant id, 'fullscreen' | 'blur' | 'early') -> number of such interaction events."""
    kinds = {
        **{kind: "fullscreen" for kind in FULLSCREEN_EXIT_EVENTS},
        **{kind: "blur" for kind in BLUR_EVENTS},
        **{kind: "early" for kind in EARLY_EVENTS},
    }
    with db.read() as session:
        rows = session.execute(
            select(InteractionEvent.participant_id, InteractionEvent.kind, func.count())
            .where(
                InteractionEvent.participant_id.in_(participant_ids), InteractionEvent.kind.in_(list(kinds))
            )
            .group_by(InteractionEvent.participant_id, InteractionEvent.kind)
        ).all()
    counts: dict[tuple[int, str], int] = {}
    for participant_id, kind, count in rows:
        key = (participant_id, kinds[kind])
        counts[key] = counts.get(key, 0) + count
    return counts


def set_exclusion(db: Database, participant_id: int, excluded: bool, reason: str | None = None) -> None:
    """Record the researcher's analysis decision (independent of payment); excluding needs a reason."""
    if excluded and not (reason or "").strip():
        raise ValueError("excluding a participant needs a reason (e.g. 'catch accuracy 0.75 < 0.90')")
    with db.write() as session:
        participant = session.get(Participant, participant_id)
        if participant is None:
            raise ParticipantNotFound(f"no participant with id {participant_id}")
        participant.excluded = excluded
        participant.exclusion_reason = reason.strip() if reason else None


def participant_by_reference(db: Database, slug: str, reference: str) -> int:
    """The internal id of the study's participant named by `reference`: an external id (PROLIFIC_PID or
    anonymous id) first, else an internal participant id (digits). LookupError naming the study if none."""
    reference = str(reference).strip()
    with db.read() as session:
        study = get_study(session, slug)
        found = session.scalar(
            select(Participant.id).where(
                Participant.study_id == study.id, Participant.external_id == reference
            )
        )
        if found is None and reference.isdigit():
            found = session.scalar(
                select(Participant.id).where(
                    Participant.study_id == study.id, Participant.id == int(reference)
                )
            )
    if found is None:
        raise ParticipantNotFound(
            f"study {slug!r} has no participant {reference!r} (expected an external id such as the "
            "PROLIFIC_PID, or the internal participant id shown on the Participants page)"
        )
    return found
