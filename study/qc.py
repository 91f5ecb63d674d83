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
from sqlalchemy import Select, String, and_, case, func, select, type_coerce

from common.atomic import atomic_path
from common.config import LoadableConfig
from db.engine import Database
from db.models import (
    InteractionEvent,
    Participant,
    ParticipantStatus,
    Response,
    Study,
    Trial,
    TrialKind,
    TripletList,
)
from db.raw import driver_batches
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


def participant_qc(
    db: Database,
    study_slug: str,
    config: QCConfig | None = None,
    participant_ids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One row per consenting participant of the study (only those of `participant_ids` when given: a page
    of the table) with every QC measure, `flags` and `suggest_exclude`. The response-based measures come
    from a per-participant cache (see `_measures_of`): only participants who answered since the last call
    are read and measured again."""
    config = config or QCConfig()
    participants = _participants(db, study_slug, participant_ids)
    ids = participants["participant_id"].tolist()
    measured = _measures_of(db, study_slug, config, participant_ids)
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


def participant_facts(db: Database, study_slug: str) -> pd.DataFrame:
    """`participant_qc`'s participant columns without the QC measures (no response is read): for pages that
    need who is who and the decisions about them, not their answers (payments)."""
    return _without_nan_text(_participants(db, study_slug))


MEASURE_BATCH = 1000  # participants whose responses are read and measured together (bounds memory)
_MEASURE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {config: {id: ...}}
_CACHE_LOCK = threading.Lock()


def _measures_of(
    db: Database, study_slug: str, config: QCConfig, participant_ids: Sequence[int] | None = None
) -> dict[int, dict]:
    """participant id -> response-based measures (of all, or of `participant_ids`), from a cache kept per
    database engine and QC config.

    A participant's entry is keyed by their `response_marks` entry; only participants whose mark changed are
    read again, in batches."""
    marks = response_marks(db, study_slug, participant_ids)
    store = _cache_file(db, study_slug, config)
    with _CACHE_LOCK:
        cache = _MEASURE_CACHE.setdefault(db.engine, {}).setdefault(config, {})
        if not cache and store is not None:
            cache.update(_read_cache(store))
        stale = [pid for pid, mark in marks.items() if pid not in cache or cache[pid][0] != mark]
    for start in range(0, len(stale), MEASURE_BATCH):
        batch = stale[start : start + MEASURE_BATCH]
        measured_batch = measures_of_rows(_qc_responses(db, batch), batch, config)
        fresh = {pid: (marks[pid], measured_batch[pid]) for pid in batch}
        with _CACHE_LOCK:
            cache.update(fresh)
    with _CACHE_LOCK:
        measured = {pid: cache[pid] for pid in marks}
        kept = dict(cache)  # a page's participants are stored with everyone measured before
    if stale and store is not None:
        _write_cache(store, kept)
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


def response_marks(db: Database, slug: str, participant_ids: Sequence[int] | None = None) -> dict[int, tuple]:
    """Consenting participant id (of all, or of `participant_ids`) -> (response count, highest response id,
    last seen): the mark changes whenever one of their answers is stored or replaced, so equal marks mean
    unchanged answers. Counted in SQL over the index on `responses.participant_id`; no response row is
    read."""
    with db.read() as session:
        study = get_study(session, slug)
        people = select(Participant.id).where(Participant.study_id == study.id, analysed_participant())
        if participant_ids is not None:
            people = people.where(Participant.id.in_(list(participant_ids)))
        counted = {
            pid: (count, highest)
            for pid, count, highest in session.execute(
                select(Response.participant_id, func.count(), func.max(Response.id))
                .where(Response.participant_id.in_(people))
                .group_by(Response.participant_id)
            ).all()
        }
        seen = session.execute(
            select(Participant.id, Participant.last_seen_at).where(Participant.id.in_(people))
        ).all()
    return {pid: (*counted.get(pid, (0, None)), last_seen) for pid, last_seen in seen}


# what the response-based measures read of each non-practice response, in participant and trial order: the
# trial facts and the answer's outcome packed into one small integer in SQL, so a batch is a few int arrays
_UNAVAILABLE, _TIMED_OUT, _KNOWN_CATCH, _CATCH_RIGHT, _POSITION_SHIFT = 1, 2, 4, 8, 4


def _qc_columns():
    def bit(condition, value: int):
        return case((condition, value), else_=0)

    packed = (
        bit(Response.unavailable.is_(True), _UNAVAILABLE)
        + bit(Response.timed_out.is_(True), _TIMED_OUT)
        + bit(
            and_(type_coerce(Trial.kind, String) == TrialKind.CATCH.value, Trial.odd_known.is_(True)),
            _KNOWN_CATCH,
        )
        + bit(Response.chosen_stimulus_id == Trial.stim2_id, _CATCH_RIGHT)
        + (func.coalesce(Response.chosen_position, -1) + 1) * (1 << _POSITION_SHIFT)
    )
    return Response.participant_id, packed, Response.rt_ms


@dataclass(frozen=True)
class QCRows:
    """The non-practice responses of some participants, in participant then trial order, as arrays."""

    participant_id: np.ndarray
    packed: np.ndarray  # _UNAVAILABLE | _TIMED_OUT | _KNOWN_CATCH | _CATCH_RIGHT | (position + 1) << 4
    rt_ms: np.ndarray  # NaN where none was recorded

    def has(self, bit: int) -> np.ndarray:
        return (self.packed & bit) != 0

    @property
    def position(self) -> np.ndarray:
        """The chosen position (0 left, 1 middle, 2 right), -1 for none."""
        return (self.packed >> _POSITION_SHIFT) - 1


def _qc_responses(db: Database, participant_ids: list[int]) -> QCRows:
    """Read through the driver's cursor (`db.raw`): a million responses are three numbers each, not rows."""
    query = (
        select(*_qc_columns())
        .join(Trial, Trial.id == Response.trial_id)
        .where(
            Response.participant_id.in_(participant_ids),
            type_coerce(Trial.kind, String) != TrialKind.PRACTICE.value,
        )
        .order_by(Response.participant_id, Response.trial_index)
    )
    with db.read() as session:
        chunks = [np.array(rows, dtype=np.float64) for rows in driver_batches(session, query)]
    values = np.concatenate(chunks) if chunks else np.zeros((0, 3))
    return QCRows(values[:, 0].astype(np.int64), values[:, 1].astype(np.int64), values[:, 2])


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


def measures_of_rows(rows: QCRows, participant_ids: list[int], config: QCConfig) -> dict[int, dict]:
    """participant id -> the response-based measures (the rules above), for every participant of the batch
    at once with counts per participant over integer arrays (`np.bincount`), never a table per participant.
    Participants without rows get counts of 0 and NaN shares, accuracy and median."""
    ids = np.array(sorted(participant_ids), dtype=np.int64)
    group = np.searchsorted(ids, rows.participant_id)
    n = len(ids)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(group[mask], minlength=n)

    unavailable, timed_out = rows.has(_UNAVAILABLE), rows.has(_TIMED_OUT)
    answered = ~unavailable & ~timed_out
    catch = ~unavailable & rows.has(_KNOWN_CATCH)
    n_answered, n_catch = count(answered), count(catch)
    right = count(catch & rows.has(_CATCH_RIGHT))
    positioned = answered & (rows.position >= 0)
    chosen = np.bincount(group[positioned] * 3 + rows.position[positioned], minlength=3 * n).reshape(n, 3)
    fast, n_windows = _fast_windows(group[answered], rows.rt_ms[answered], n, config)
    median = _medians(group[answered], rows.rt_ms[answered], n)
    timeouts, missing = count(~unavailable & timed_out), count(unavailable)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = right / n_catch
        shares = chosen / n_answered[:, None]
    return {
        int(pid): {
            "n_answered": int(n_answered[i]),
            "n_timeouts": int(timeouts[i]),
            "n_unavailable": int(missing[i]),
            "catch_accuracy": float(accuracy[i]) if n_catch[i] else float("nan"),
            "n_catch": int(n_catch[i]),
            "fast_windows": int(fast[i]),
            "n_windows": int(n_windows[i]),
            "share_left": float(shares[i, 0]) if n_answered[i] else float("nan"),
            "share_middle": float(shares[i, 1]) if n_answered[i] else float("nan"),
            "share_right": float(shares[i, 2]) if n_answered[i] else float("nan"),
            "median_rt_ms": float(median[i]),
        }
        for i, pid in enumerate(ids)
    }


def _fast_windows(
    group: np.ndarray, rts: np.ndarray, n: int, config: QCConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(flagged windows, judged windows) per participant: `too_fast_windows` over each participant's
    answered RTs in trial order (`group` sorted), all windows of all participants sorted in one call."""
    size = config.fast_window
    counts = np.bincount(group, minlength=n)
    n_windows = counts // size
    rank = np.arange(len(group)) - (np.cumsum(counts) - counts)[group]  # place in the participant's answers
    in_window = rank < (n_windows * size)[group]
    windows = np.sort(rts[in_window].reshape(-1, size), axis=1)
    flagged = (windows[:, 4] < config.fast_5th_ms) & (windows[:, 9] < config.fast_10th_ms)
    owner = group[in_window][::size]
    return np.bincount(owner[flagged], minlength=n), n_windows


def _medians(group: np.ndarray, rts: np.ndarray, n: int) -> np.ndarray:
    """Median of each participant's RTs (NaN RTs skipped, as pandas does; NaN for none)."""
    keep = ~np.isnan(rts)
    group, rts = group[keep], rts[keep]
    order = np.lexsort((rts, group))
    ranked = rts[order]
    counts = np.bincount(group, minlength=n)
    starts = np.cumsum(counts) - counts
    low = np.minimum(starts + (counts - 1) // 2, max(len(ranked) - 1, 0))
    high = np.minimum(starts + counts // 2, max(len(ranked) - 1, 0))
    if not len(ranked):
        return np.full(n, np.nan)
    return np.where(counts > 0, (ranked[low] + ranked[high]) / 2, np.nan)


QC_FLAGS = ("catch", "timeouts", "too_fast", "fast_window", "position_bias", "fullscreen", "blur", "early")


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


def _participants(db: Database, slug: str, participant_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """The study's consenting participants (no pilots; of `participant_ids` when given), one row each, with
    `subject` (their pseudonym) third."""

    def query(study: Study) -> Select[*tuple[Any, ...]]:
        chosen = _participants_query(study)
        return chosen if participant_ids is None else chosen.where(Participant.id.in_(list(participant_ids)))

    study, rows = study_rows(db, slug, query)
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


def participant_page(
    db: Database,
    slug: str,
    page: int,
    per_page: int = 100,
    *,
    statuses: Sequence[str] = (),
    hide_simulated: bool = False,
) -> tuple[list[int], int]:
    """(ids of the participants on `page` (from 0, by id), how many participants match) of the study's
    consenting participants with one of `statuses` (any when empty), simulated ones left out when asked:
    counted and paged in SQL, so a page of the table costs the same at any number of participants."""
    with db.read() as session:
        study = get_study(session, slug)
        query = select(Participant.id).where(Participant.study_id == study.id, analysed_participant())
        if statuses:
            query = query.where(Participant.status.in_([ParticipantStatus(status) for status in statuses]))
        if hide_simulated:
            query = query.where(Participant.is_simulated.is_(False))
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        ids = session.scalars(query.order_by(Participant.id).limit(per_page).offset(page * per_page)).all()
    return list(ids), total


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
