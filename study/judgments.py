"""The read side of a study for analysis: every response as a table, judgments in the odd-one-out-last
convention, the stimulus table, pseudonymised participant ids, and held-out splits.

QC, noise ceilings, exports and the alignment engine all read responses through `load_responses`,
so there is one definition of "a judgment". Only participants who gave consent are ever read: a declined
(or never asked) participant appears in no export or analysis. Pilot runs (the researcher's preview,
`study.pilot`) are left out too, unless `load_responses` is asked for them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Iterator
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import pandas as pd
from sqlalchemy import Select, String, and_, select, type_coerce

from db.engine import Database
from db.models import JudgmentTask, Participant, Response, Stimulus, Trial, TrialKind, TripletList
from db.raw import driver_batches
from study.studies import as_triplet, get_study, select_labelled

PSEUDONYM_LENGTH = 16
ANALYSED_KINDS = (TrialKind.EXPERIMENTAL.value, TrialKind.REPEAT.value, TrialKind.CATCH.value)
SplitBy = Literal["subject", "image", "triplet"]

RESPONSE_COLUMNS = {
    "participant_id": Participant.id,
    "external_id": Participant.external_id,
    "source": Participant.source,
    "is_simulated": Participant.is_simulated,
    "excluded": Participant.excluded,
    "exclusion_reason": Participant.exclusion_reason,
    "status": Participant.status,
    "started_at": Participant.started_at,
    "config_version": Participant.config_version,
    "trial_index": Response.trial_index,
    "block": Trial.block,
    "kind": Trial.kind,
    "task": Trial.task,
    "level": Trial.level,
    "odd_known": Trial.odd_known,
    "triplet_key": Trial.triplet_key,
    "stim0": Trial.stim0_id,
    "stim1": Trial.stim1_id,
    "stim2": Trial.stim2_id,
    "shown_left": Response.shown_left_id,
    "shown_middle": Response.shown_middle_id,
    "shown_right": Response.shown_right_id,
    "chosen_position": Response.chosen_position,
    "chosen_stimulus_id": Response.chosen_stimulus_id,
    "rt_ms": Response.rt_ms,
    "client_onset_ms": Response.client_onset_ms,
    "server_received_at": Response.server_received_at,
    "input_modality": Response.input_modality,
    "timed_out": Response.timed_out,
    "unavailable": Response.unavailable,
    "selection": Trial.selection,  # why an adaptive design asked the triplet (None in fixed designs)
}


def pseudonymise(salt: str, external_id: str) -> str:
    """HMAC-SHA256 of the external id keyed by the study's salt, truncated: stable per study, not
    reversible."""
    digest = hmac.new(salt.encode(), external_id.encode(), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_LENGTH]


def analysed_participant(include_pilot: bool = False):
    """SQL condition: a participant whose answers are data: consented, and no pilot unless asked for."""
    consented = Participant.consent.is_(True)
    return consented if include_pilot else and_(consented, Participant.is_pilot.is_(False))


def pseudonymised(salt: str, external_ids: pd.Series) -> pd.Series:
    """`pseudonymise` over a column of external ids (each distinct id hashed once)."""
    pseudonyms = {external: pseudonymise(salt, external) for external in external_ids.unique()}
    return external_ids.map(pseudonyms)


def consenting_responses(
    columns: dict[str, Any], study_id: int, *, include_pilot: bool = False
) -> Select[*tuple[Any, ...]]:
    """A query of `columns` over the response rows of one study's analysed participants (consenting, no
    pilots unless asked for), each joined to its trial and participant, by participant then trial index:
    the one place that says whose answers are read (no answer of someone who did not consent is ever
    analysed or exported)."""
    return (
        select_labelled(columns)
        .join(Participant, Participant.id == Response.participant_id)
        .join(Trial, Trial.id == Response.trial_id)
        .where(Participant.study_id == study_id, analysed_participant(include_pilot))
        .order_by(Participant.id, Response.trial_index)
    )


def _json_values(values: pd.Series) -> pd.Series:
    """JSON text (SQLite's driver) parsed, each distinct text once (a trial's selection repeats on every
    answer to it); values already parsed (PostgreSQL) kept. The parsed values are shared: read them only."""
    parsed: dict[str, Any] = {}

    def value(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        if text not in parsed:
            parsed[text] = json.loads(text)
        return parsed[text]

    return values.map(value)


def load_responses(
    db: Database, slug: str, participant_ids: list[int] | None = None, *, include_pilot: bool = False
) -> pd.DataFrame:
    """Every stored response row of the study's consenting participants (timeouts and unavailable trials
    included; pilots only with `include_pilot`), with its trial and participant facts; only the given
    participants' when `participant_ids` is given (exports read a study in batches of participants). Read
    through the driver's cursor (`db.raw`) and typed a column at a time.

    Adds `subject` (the pseudonymised external id). Sorted by participant, then trial index.
    """
    with db.read() as session:
        study = get_study(session, slug)
        query = consenting_responses(RESPONSE_COLUMNS, study.id, include_pilot=include_pilot)
        if participant_ids is not None:
            query = query.where(Participant.id.in_(participant_ids))
        rows = [row for batch in driver_batches(session, query) for row in batch]
        salt = study.salt
    frame = pd.DataFrame(rows, columns=list(RESPONSE_COLUMNS))
    for column in ("started_at", "server_received_at"):  # SQLite's driver gives text, PostgreSQL's datetimes
        if len(frame) and not pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    frame = frame.astype(
        {name: bool for name in ("is_simulated", "excluded", "odd_known", "timed_out", "unavailable")}
    )
    frame = frame.astype({"rt_ms": float, "client_onset_ms": float})
    for column in ("kind", "task", "level", "status"):
        frame[column] = frame[column].map(str, na_action="ignore")  # enum members -> their values
    frame["selection"] = _json_values(frame["selection"])  # SQLite's driver gives JSON as text
    frame["subject"] = pseudonymised(salt, frame["external_id"])
    return frame


def odd_last(stored: tuple[int, int, int], chosen: int) -> tuple[int, int, int]:
    """The triplet with the chosen odd one out last and the other two in ascending id order (stable)."""
    if chosen not in stored:
        raise ValueError(f"chosen stimulus {chosen} is not one of the triplet's images {stored}")
    first, second = sorted(i for i in stored if i != chosen)
    return first, second, chosen


def odd_last_array(stored: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """`odd_last` for many triplets at once: [m, 3] stored ids and [m] chosen ids -> [m, 3] int64."""
    stored = np.asarray(stored, dtype=np.int64).reshape(-1, 3)
    chosen = np.asarray(chosen).astype(np.int64)
    is_chosen = stored == chosen[:, None]
    bad = np.flatnonzero(is_chosen.sum(axis=1) != 1)
    if bad.size:
        odd_last(as_triplet(int(i) for i in stored[bad[0]]), int(chosen[bad[0]]))  # raises with the reason
        raise ValueError(f"triplet {stored[bad[0]].tolist()} repeats its chosen stimulus {chosen[bad[0]]}")
    others = np.sort(stored[~is_chosen].reshape(-1, 2), axis=1)
    return np.column_stack([others, chosen])


JUDGMENT_COLUMNS = {
    "participant_id": Participant.id,
    "external_id": Participant.external_id,
    "is_simulated": Participant.is_simulated,
    "excluded": Participant.excluded,
    "trial_index": Response.trial_index,
    "kind": type_coerce(Trial.kind, String),  # plain strings: no enum conversion per row
    "level": type_coerce(Trial.level, String),
    "triplet_key": Trial.triplet_key,
    "rt_ms": Response.rt_ms,
    "stim0": Trial.stim0_id,
    "stim1": Trial.stim1_id,
    "stim2": Trial.stim2_id,
    "chosen_stimulus_id": Response.chosen_stimulus_id,
}

# the participant and trial facts both judgment tables keep, in this order
JUDGMENT_FACTS = (
    "participant_id",
    "subject",
    "external_id",
    "is_simulated",
    "excluded",
    "trial_index",
    "kind",
)


class JudgmentFilter(TypedDict, total=False):
    """Which answered trials the judgment loaders return (each optional; the defaults are `_answered`'s):
    excluded participants' (no), simulated participants' (yes), of which trial kinds (ANALYSED_KINDS), of
    which participants (all; a list reads a study in batches)."""

    include_excluded: bool
    include_simulated: bool
    kinds: tuple[str, ...]
    participant_ids: list[int] | None


LOAD_CHUNK_ROWS = 200_000  # rows fetched and typed at a time: memory is the typed frame, not millions of rows


_JUDGMENT_DTYPES = {
    "participant_id": np.int64,
    "is_simulated": bool,
    "excluded": bool,
    "trial_index": np.int64,
    "rt_ms": float,  # a missing RT (None) becomes NaN
    "stim0": np.int64,
    "stim1": np.int64,
    "stim2": np.int64,
    "chosen_stimulus_id": np.int64,
}


def _shared_strings(values: tuple) -> np.ndarray:
    """An object column whose equal strings are one Python object: the driver returns a fresh string per row,
    so a few distinct values (kind, level, external id) would otherwise cost ~60 bytes per judgment."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    shared = np.empty(len(uniques) + 1, dtype=object)  # the last slot stays None: code -1 (a missing value)
    shared[:-1] = uniques
    return shared[codes]


def _judgment_column(name: str, values: tuple) -> np.ndarray:
    if name in _JUDGMENT_DTYPES:
        return np.array(values, dtype=_JUDGMENT_DTYPES[name])
    if name == "triplet_key":  # nearly one per judgment at THINGS scale: nothing to share
        return np.array(values, dtype=object)
    return _shared_strings(values)


def _judgment_chunk(rows) -> pd.DataFrame:
    """Some fetched judgment rows as a typed frame, built column by column from the transposed rows (no
    per-cell pandas conversion: a million judgments type in about a second)."""
    columns = list(zip(*rows, strict=True)) if len(rows) else [()] * len(JUDGMENT_COLUMNS)
    return pd.DataFrame(
        {name: _judgment_column(name, values) for name, values in zip(JUDGMENT_COLUMNS, columns, strict=True)}
    )


def _answered(
    db: Database,
    slug: str,
    task: JudgmentTask,
    *,
    include_excluded: bool = False,
    include_simulated: bool = True,
    kinds: tuple[str, ...] = ANALYSED_KINDS,
    participant_ids: list[int] | None = None,
) -> pd.DataFrame:
    """The answered trials of one task, filtered in SQL and with only the columns judgments need: THINGS-
    sized studies load in seconds (the full `load_responses` table is several times slower)."""
    with db.read() as session:
        study = get_study(session, slug)
        query = answered_query(
            study.id,
            include_excluded=include_excluded,
            include_simulated=include_simulated,
            task=task,
            kinds=kinds,
            columns=JUDGMENT_COLUMNS,
        )
        if participant_ids is not None:
            query = query.where(Participant.id.in_(participant_ids))
        # the driver's rows as they come (`db.raw`): at a million judgments SQLAlchemy's per-row result
        # processing cost more CPU than the query (6.1 vs 3.8 CPU s to fetch 1M rows)
        chunks = [_judgment_chunk(rows) for rows in driver_batches(session, query, LOAD_CHUNK_ROWS)]
        salt = study.salt
    frame = pd.concat(chunks, ignore_index=True) if chunks else _judgment_chunk([])
    frame.insert(1, "subject", pseudonymised(salt, frame["external_id"]))
    return frame


def load_judgments(db: Database, slug: str, **which: Unpack[JudgmentFilter]) -> pd.DataFrame:
    """One row per answered odd-one-out trial (no timeouts, no unavailable trials): stim0, stim1, stim2
    with the chosen odd one out last. Practice trials are left out by default; excluded participants unless
    `include_excluded`; only the given participants when `participant_ids` is given (incremental readers).
    """
    answered = _answered(db, slug, JudgmentTask.ODD_ONE_OUT, **which)
    triplets = odd_last_array(
        answered[["stim0", "stim1", "stim2"]].to_numpy(np.int64), answered["chosen_stimulus_id"].to_numpy()
    )
    frame = answered[[*JUDGMENT_FACTS, "level", "triplet_key", "rt_ms"]].copy()
    for position in range(3):
        frame.insert(2 + position, f"stim{position}", triplets[:, position])
    return frame


def load_anchor_judgments(db: Database, slug: str, **which: Unpack[JudgmentFilter]) -> pd.DataFrame:
    """One row per answered anchor trial: `head`, `close` (judged more similar to the head), `far`."""
    answered = _answered(db, slug, JudgmentTask.ANCHOR, **which)
    frame = answered[[*JUDGMENT_FACTS, "rt_ms"]].reset_index(drop=True)
    stored = answered[["stim0", "stim1", "stim2"]].to_numpy(np.int64)
    chosen = answered["chosen_stimulus_id"].to_numpy(np.int64)
    frame.insert(2, "head", stored[:, 0])
    frame.insert(3, "close", chosen)
    frame.insert(4, "far", np.where(chosen == stored[:, 1], stored[:, 2], stored[:, 1]))
    return frame


def load_stimuli(db: Database, slug: str) -> pd.DataFrame:
    """The study's stimulus table (id, name, serving-copy path relative to the data dir, category,
    superordinate, sha256 of the original)."""
    with db.read() as session:
        study = get_study(session, slug)
        rows = session.execute(
            select(
                Stimulus.id,
                Stimulus.name,
                Stimulus.path,
                Stimulus.category,
                Stimulus.superordinate,
                Stimulus.content_hash,
            )
            .where(Stimulus.stimulus_set_id == study.stimulus_set_id)
            .order_by(Stimulus.id)
        ).all()
    return pd.DataFrame(rows, columns=["id", "name", "path", "category", "superordinate", "content_hash"])


def split_judgments(
    judgments: pd.DataFrame, by: SplitBy, test_fraction: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out split into (train, test) by subject, by triplet, or object-disjoint by image.

    `image`: a `test_fraction` of the images is held out; test keeps the triplets made only of held-out
    images, train the triplets with none of them, and mixed triplets are dropped (no test image is
    ever seen in training).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    rng = np.random.default_rng(seed)
    if by in ("subject", "triplet"):
        column = "participant_id" if by == "subject" else "triplet_key"
        # the units as codes into their sorted distinct values: sampling positions of the sorted units draws
        # the same units as sampling the units, and the test mask is one array lookup, not a string isin
        codes, units = pd.factorize(judgments[column], sort=True, use_na_sentinel=False)
        held_out = np.zeros(len(units), dtype=bool)
        held_out[_sample_units(np.arange(len(units)), test_fraction, rng)] = True
        in_test = held_out[codes]
        return judgments[~in_test], judgments[in_test]
    if by == "image":
        stim = judgments[["stim0", "stim1", "stim2"]]
        held_out = _sample_units(np.unique(stim.to_numpy()), test_fraction, rng)
        n_held = stim.isin(held_out).sum(axis=1)
        return judgments[n_held == 0], judgments[n_held == 3]
    raise ValueError(f"split by must be 'subject', 'image' or 'triplet', got {by!r}")


def _sample_units(units: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    units = np.sort(units)
    if len(units) < 2:
        raise ValueError(f"a held-out split needs at least 2 units to split, got {len(units)}")
    n_test = min(len(units) - 1, max(1, round(fraction * len(units))))
    return rng.choice(units, size=n_test, replace=False)


ANALYSIS_COLUMNS = (
    "participant_id",
    "trial_index",
    "kind",
    "level",
    "triplet_key",
    "stim0",
    "stim1",
    "stim2",
)
COMPACT_BATCH_ROWS = 100_000  # answers fetched from the driver and turned into integer arrays at a time
COMPACT_TRIAL_FACTS = ("kind", "level", "triplet_key")


def load_judgments_compact(
    db: Database, slug: str, columns: tuple[str, ...] = ANALYSIS_COLUMNS
) -> pd.DataFrame:
    """`load_judgments` (excluded participants left out) with only `columns` (of `ANALYSIS_COLUMNS`), for
    analyses over a whole study (the noise ceilings at a million judgments): each answer is read from the
    driver as four integers (participant, trial index, trial, chosen image; `db.raw`) and joined to the
    study's trial table in numpy, so no text is read per answer and the text columns share the trials'
    strings."""
    unknown = set(columns) - set(ANALYSIS_COLUMNS)
    if unknown:
        raise ValueError(
            f"compact judgments have no column(s) {sorted(unknown)}; expected {ANALYSIS_COLUMNS}"
        )
    with db.read() as session:
        study = get_study(session, slug)
        chunks = list(answer_batches(session, answered_query(study.id), COMPACT_BATCH_ROWS))
        trials = trial_facts(session, study.id)
    answers = np.concatenate(chunks) if chunks else np.zeros((0, 5))
    ids = answers[:, :4].astype(np.int64)
    row = trials.index.get_indexer(ids[:, 2])
    stored = trials[["stim0", "stim1", "stim2"]].to_numpy(np.int64)[row]
    triplets = odd_last_array(stored, ids[:, 3])
    frame = pd.DataFrame({"participant_id": ids[:, 0], "trial_index": ids[:, 1]})
    for name in COMPACT_TRIAL_FACTS:
        frame[name] = trials[name].to_numpy(object)[row]
    for position in range(3):
        frame[f"stim{position}"] = triplets[:, position]
    return frame[list(columns)]


ANSWER_NUMBERS = {
    "participant_id": Participant.id,
    "trial_index": Response.trial_index,
    "trial_id": Response.trial_id,
    "chosen_stimulus_id": Response.chosen_stimulus_id,
    "rt_ms": Response.rt_ms,
}


def answered_query(
    study_id: int,
    *,
    include_excluded: bool = False,
    include_simulated: bool = True,
    task: JudgmentTask = JudgmentTask.ODD_ONE_OUT,
    kinds: tuple[str, ...] = ANALYSED_KINDS,
    columns: dict[str, Any] | None = None,
) -> Select[*tuple[Any, ...]]:
    """The answered trials (of `kinds`, of one task; no timeouts, no unavailable trials) of the study's
    analysed participants, by participant then trial index. By default five numbers per answer for
    `answer_batches` (participant, trial index, trial id, chosen image, RT); `_answered` asks for its
    own `columns`."""
    query = consenting_responses(columns or ANSWER_NUMBERS, study_id).where(
        Response.timed_out.is_(False),
        Response.unavailable.is_(False),
        Response.chosen_stimulus_id.is_not(None),
        type_coerce(Trial.kind, String).in_(list(kinds)),
        type_coerce(Trial.task, String) == task.value,
    )
    if not include_excluded:
        query = query.where(Participant.excluded.is_(False))
    if not include_simulated:
        query = query.where(Participant.is_simulated.is_(False))
    return query


def answer_batches(session, query: Select, batch_rows: int) -> Iterator[np.ndarray]:
    """`answered_query`'s rows from the driver as float arrays [m, 5] (ids are exact below 2^53; a missing
    RT is NaN)."""
    for rows in driver_batches(session, query, batch_rows):  # fromiter: a third of np.array's time on tuples
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=5 * len(rows))
        yield flat.reshape(-1, 5)


def trial_facts(session, study_id: int) -> pd.DataFrame:
    """The study's trials by id: kind, level and task as plain text, triplet key and stored images."""
    rows = session.execute(
        select(
            Trial.id,
            type_coerce(Trial.kind, String),
            type_coerce(Trial.level, String),
            Trial.triplet_key,
            Trial.stim0_id,
            Trial.stim1_id,
            Trial.stim2_id,
        )
        .join(TripletList, TripletList.id == Trial.list_id)
        .where(TripletList.study_id == study_id)
    ).all()
    columns = ["id", *COMPACT_TRIAL_FACTS, "stim0", "stim1", "stim2"]
    frame = pd.DataFrame(rows, columns=columns).set_index("id")
    for position, name in enumerate(COMPACT_TRIAL_FACTS, start=1):  # text objects; no level: None, not NaN
        frame[name] = pd.Series([row[position] for row in rows], index=frame.index, dtype=object)
    return frame
