"""A participant's path through a study on the server side: entry and list assignment, the trial plan,
recording responses and interaction events (idempotently), and finishing.

Every function takes plain values and a `Database`; the Streamlit page, the REST endpoint and the
simulated participants all go through the same functions, so there is one recording path.

The server enforces the flow: a participant row and its list slot are created at consent (`enter_study`),
never on a page load; responses and client events are accepted only from a participant who consented and
has not finished. A consented participant who has not answered yet holds a list slot for
`reservation_timeout_minutes` only (then the slot goes to the next arrival); one who answered holds it until
silent for `session_timeout_minutes`.

Simulated participants and pilots (a researcher's preview run) go through the same path but never hold a
list slot or count toward the target: they take the list their own kind has used least (or the one the link
asks for), so live participants are admitted exactly as if they were not there.

A link may ask for a list (`list=` its name in the imported design or its index from 0), and a design whose
list names are Prolific ids gives each such participant their own list; a list asked for that is taken is
refused unless the study's config allows shared lists.

Each trial ends with one response row: answered, timed out, or `unavailable` (one of its images is missing
on the server, verified here when the row is stored). An unavailable row does not count as answered: the page
offers the trial again in the participant's next browser session, and the trial's next real outcome replaces
the row in place (one row per trial). For completion it counts as settled: a participant is never kept from
their completion code by an image the server lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.idempotent import insert_ignoring_duplicates
from db.models import (
    InteractionEvent,
    Participant,
    ParticipantStatus,
    Response,
    Stimulus,
    Study,
    StudyStatus,
    Trial,
    TrialKind,
    TripletLevel,
    TripletList,
    utcnow,
)
from db.settings import data_home
from study.config import StudyConfig
from study.design import is_adaptive
from study.studies import as_triplet, get_study, study_config

EXTERNAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INPUT_MODALITIES = ("mouse", "touch", "keyboard", "none", "simulated")
FINISHED = (ParticipantStatus.COMPLETED, ParticipantStatus.EARLY_EXIT, ParticipantStatus.NO_CONSENT)
MAX_RT_SLACK_MS = 5_000  # RTs up to the response window plus this are plausible (slow frames, timers)
NO_WINDOW_MAX_RT_MS = 3_600_000  # the longest plausible RT of a study without a response window
MAX_EVENTS_PER_PARTICIPANT = 3_000  # a whole session logs a few hundred; more is a fault or abuse
EVENT_RATE_WINDOW_S = 10
MAX_EVENTS_PER_RATE_WINDOW = 120  # a reconnecting outbox flushes bursts; a loop or a flood is cut off


class InvalidParticipantId(ValueError):
    pass


class StudyUnavailable(LookupError):
    """The study is not accepting new participants (draft, paused, closed or full)."""


class ListUnavailable(StudyUnavailable):
    """The list a link asks for does not exist or is taken."""


class ParticipantNotFound(LookupError):
    pass


class ResponseRejected(ValueError):
    """A response that does not fit the participant's plan; nothing is stored, an event is logged."""


class EventRejected(ValueError):
    """A client event from a participant who may not send one (no consent, finished, over the cap)."""


class TooManyEvents(EventRejected):
    """More client events in the rate window than allowed: refused for now, fine to send again later."""


class IncompleteSession(RuntimeError):
    def __init__(self, missing: list[int]):
        super().__init__(f"{len(missing)} trials have no stored response yet: {missing[:10]}")
        self.missing = missing


@dataclass(frozen=True)
class Entry:
    participant_id: int
    study_id: int
    external_id: str
    status: ParticipantStatus
    is_new: bool


@dataclass(frozen=True)
class PlannedTrial:
    """A trial as this participant sees it: `shown` are stimulus ids left, middle, right."""

    trial_index: int
    trial_id: int
    block: int
    kind: TrialKind
    level: TripletLevel | None
    shown: tuple[int, int, int]


@dataclass(frozen=True)
class ResponsePayload:
    trial_index: int
    shown: tuple[int, int, int]
    chosen_position: int | None  # 0 left, 1 middle, 2 right; None with timed_out
    rt_ms: float | None
    client_onset_ms: float | None = None
    input_modality: str = "mouse"
    timed_out: bool = False
    unavailable: bool = False  # an image could not be served: no choice, no RT, modality "none"


@dataclass(frozen=True)
class EventPayload:
    """One interaction event as a client sends it (kinds and sizes checked by the API's payload parser)."""

    kind: str
    client_event_id: str
    trial_index: int | None = None
    client_time_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def validate_external_id(external_id: str) -> str:
    if not isinstance(external_id, str) or not EXTERNAL_ID_PATTERN.match(external_id):
        raise InvalidParticipantId(
            f"participant id {str(external_id)[:80]!r} is not valid: "
            "expected 1-64 letters, digits, '_' or '-'"
        )
    return external_id


def new_anonymous_id() -> str:
    return "anon-" + secrets.token_hex(8)


def enter_study(
    db: Database,
    slug: str,
    external_id: str | None = None,
    *,
    consent: bool = True,
    external_study_id: str | None = None,
    external_session_id: str | None = None,
    source: str | None = None,
    browser: dict[str, Any] | None = None,
    simulated: bool = False,
    pilot: bool = False,
    requested_list: str | None = None,
) -> Entry:
    """The participant for (study, external id) once they answered the consent question.

    `consent=True` creates the row and assigns a list slot (StudyUnavailable if the study cannot take
    them); `consent=False` records the refusal (status no_consent, no list slot). A returning participant
    (same id) gets the same row back, whatever its status: resume and the end page are the caller's
    decision, never a second session. A row from before consent was asked at entry takes the answer now.

    `pilot`: a researcher's preview run (the caller checked the preview token); admitted whatever the
    study's status, target and list slots, and kept out of them. `requested_list`: the list the link asks
    for (ListUnavailable if unknown or taken).
    """
    external_id = validate_external_id(external_id) if external_id else new_anonymous_id()
    with db.write() as session:
        study = get_study(session, slug)
        existing = _find(session, study.id, external_id)
        if existing is not None:
            existing.last_seen_at = utcnow()
            if existing.consent is None:
                _record_consent(existing, consent)
            return Entry(existing.id, study.id, external_id, existing.status, is_new=False)
        kind = "pilot" if pilot else "simulated" if simulated else "live"
        if consent:
            participant = _admit(session, study, external_id, kind, requested_list)
        else:
            participant = Participant(study_id=study.id, external_id=external_id)
            session.add(participant)
        participant.is_simulated, participant.is_pilot = simulated, pilot
        _record_consent(participant, consent)
        participant.config_version = study.config_version  # the settings this person was shown
        participant.external_study_id = external_study_id
        participant.external_session_id = external_session_id
        participant.source = kind if pilot else source or ("anonymous" if kind == "live" else kind)
        participant.browser = browser or {}
        session.flush()
        return Entry(participant.id, study.id, external_id, participant.status, is_new=True)


def returning_entry(db: Database, slug: str, external_id: str | None) -> Entry | None:
    """The participant who already answered the consent question under this id, or None (nothing is
    created: a page load reserves nothing). Raises StudyNotFound and InvalidParticipantId."""
    if external_id is not None:
        validate_external_id(external_id)
    with db.write() as session:
        study = get_study(session, slug)
        existing = _find(session, study.id, external_id) if external_id else None
        if existing is None:
            return None
        existing.last_seen_at = utcnow()
        return Entry(existing.id, study.id, existing.external_id, existing.status, is_new=False)


def check_admission(
    db: Database, slug: str, external_id: str | None = None, requested_list: str | None = None
) -> StudyConfig:
    """The study's config if a newcomer could be admitted now (open, below target, a list slot free, the
    list asked for free); StudyUnavailable otherwise. Read-only: the slot is taken at consent
    (`enter_study`)."""
    with db.read() as session:
        study = get_study(session, slug)
        config = study_config(study)
        _check_open(session, study)
        assign_list(session, study, config, external_id=external_id, requested=requested_list)
        return config


def _find(session: Session, study_id: int, external_id: str) -> Participant | None:
    return session.scalar(
        select(Participant).where(Participant.study_id == study_id, Participant.external_id == external_id)
    )


def give_consent(db: Database, participant_id: int, consent: bool) -> None:
    """The consent answer of a participant row stored before consent was asked at entry (older sessions)."""
    with db.write() as session:
        participant = _participant(session, participant_id)
        if participant.consent is None:
            _record_consent(participant, consent)
        participant.last_seen_at = utcnow()


def _record_consent(participant: Participant, consent: bool) -> None:
    participant.consent = consent
    if not consent and participant.status not in FINISHED:
        participant.status = ParticipantStatus.NO_CONSENT
        participant.finished_at = utcnow()


def _admit(session: Session, study: Study, external_id: str, kind: str, requested: str | None) -> Participant:
    """A new participant row with its list: live ones through the admission rules, simulated ones and pilots
    on the list their kind has used least (or the one asked for), taking no slot."""
    config = study_config(study)
    if kind == "live":
        session.execute(select(Study.id).where(Study.id == study.id).with_for_update())  # serialise (PG)
        _check_open(session, study)
        list_id = assign_list(session, study, config, external_id=external_id, requested=requested)
    else:
        if kind == "simulated":
            _check_open(session, study)
        list_id = _list_apart(session, study, config, kind, requested)
    participant = Participant(study_id=study.id, external_id=external_id, list_id=list_id)
    session.add(participant)
    return participant


def _list_apart(session: Session, study: Study, config: StudyConfig, kind: str, requested: str | None) -> int:
    """The list asked for, else the list participants of this kind (simulated or pilot) have used least."""
    lists = _lists(session, study)
    if requested:
        return _named_list(study, config, lists, requested)
    flag = Participant.is_pilot if kind == "pilot" else Participant.is_simulated
    used = dict(
        session.execute(
            select(Participant.list_id, func.count())
            .where(Participant.study_id == study.id, flag.is_(True))
            .group_by(Participant.list_id)
        ).all()
    )
    list_id, _ = min(lists, key=lambda row: (used.get(row.id, 0), row.list_index))
    return list_id


def _check_open(session: Session, study: Study) -> None:
    if study.status != StudyStatus.OPEN:
        raise StudyUnavailable(f"study {study.slug!r} is {study.status.value}, not accepting participants")
    if (
        study.target_participants is not None
        and _completed_count(session, study.id) >= study.target_participants
    ):
        raise StudyUnavailable(f"study {study.slug!r} has reached its target of {study.target_participants}")


def _completed_count(session: Session, study_id: int) -> int:
    """Completed live participants: what the target counts (never simulated ones or pilots)."""
    return (
        session.scalar(
            select(func.count()).where(
                Participant.study_id == study_id,
                Participant.status == ParticipantStatus.COMPLETED,
                is_live(),
            )
        )
        or 0
    )


def is_live():
    """SQL condition: a real participant, neither simulated nor a pilot."""
    return and_(Participant.is_simulated.is_(False), Participant.is_pilot.is_(False))


def assign_list(
    session: Session,
    study: Study,
    config: StudyConfig,
    *,
    external_id: str | None = None,
    requested: str | None = None,
) -> int:
    """The list asked for (`requested`, else the list named by the participant's external id in an imported
    design), refused when taken unless the study allows shared lists; otherwise the list with the fewest
    participants holding a slot: completed ones, and started ones that are neither silent beyond the session
    timeout nor, without any answer yet, past the reservation timeout. Simulated participants and pilots
    hold no slot. Ties go to the first list, or in an adaptive design to the newest (chosen by the newest
    teacher; lists an older teacher chose wait as a reserve).

    Must run inside a write transaction that serialises assignments (BEGIN IMMEDIATE on SQLite,
    the study row locked on PostgreSQL), so concurrent arrivals never share a slot.
    """
    counts = dict(
        session.execute(
            select(Participant.list_id, func.count())
            .where(Participant.study_id == study.id, holds_slot(config))
            .group_by(Participant.list_id)
        ).all()
    )
    lists = _lists(session, study)
    named = _named_list(study, config, lists, requested) if requested else None
    if named is None and external_id:
        named = _list_by_name(config, lists, external_id)
    if named is not None:
        if counts.get(named, 0) >= config.participants_per_list and not config.allow_shared_lists:
            asked = requested or external_id
            raise ListUnavailable(
                f"list {asked!r} of study {study.slug!r} is taken: it has {counts[named]} participant(s) "
                "completed or in progress, and the study does not allow shared lists"
            )
        return named
    newest_first = (
        -1 if is_adaptive(config.extra) else 1
    )  # an adaptive study's newest list has the newest teacher
    list_id, _ = min(lists, key=lambda row: (counts.get(row.id, 0), newest_first * row.list_index))
    if counts.get(list_id, 0) >= config.participants_per_list:
        raise StudyUnavailable(
            f"study {study.slug!r} is full: every list has {config.participants_per_list} "
            "participant(s) completed or in progress"
        )
    return list_id


def _lists(session: Session, study: Study) -> list:
    lists = session.execute(
        select(TripletList.id, TripletList.list_index)
        .where(TripletList.study_id == study.id)
        .order_by(TripletList.list_index)
    ).all()
    if not lists:
        raise StudyUnavailable(f"study {study.slug!r} has no triplet lists")
    return list(lists)


def list_names(config: StudyConfig) -> list[str]:
    """The lists' names in list order: the ids of an imported design file ([] for a generated design)."""
    names = (config.extra.get("design") or {}).get("list_ids") or []
    return [str(name) for name in names]


def _named_list(study: Study, config: StudyConfig, lists: list, asked: str) -> int:
    """The id of the list a link asks for: its design name, or its index from 0; ListUnavailable if none."""
    found = _list_by_name(config, lists, asked)
    if found is None and asked.isascii() and asked.isdigit():
        found = next((row.id for row in lists if row.list_index == int(asked)), None)
    if found is None:
        names = list_names(config)
        named = f"a name of {names[:3]}{'...' if len(names) > 3 else ''} or " if names else ""
        raise ListUnavailable(
            f"study {study.slug!r} has no list {asked[:80]!r}; "
            f"expected {named}an index from 0 to {len(lists) - 1}"
        )
    return found


def _list_by_name(config: StudyConfig, lists: list, name: str) -> int | None:
    """The id of the list the imported design named `name` (e.g. a Prolific id), or None."""
    names = list_names(config)
    if name not in names:
        return None
    return next((row.id for row in lists if row.list_index == names.index(name)), None)


def holds_slot(config: StudyConfig, now=None):
    """SQL condition: this participant row holds its list slot (see `assign_list`); simulated participants
    and pilots never do."""
    now = now or utcnow()
    recent = Participant.last_seen_at >= now - timedelta(minutes=config.session_timeout_minutes)
    reserved = Participant.started_at >= now - timedelta(minutes=config.reservation_timeout_minutes)
    answered = exists().where(Response.participant_id == Participant.id)
    return and_(
        is_live(),
        or_(
            Participant.status == ParticipantStatus.COMPLETED,
            and_(Participant.status == ParticipantStatus.STARTED, recent, or_(answered, reserved)),
        ),
    )


def display_order(participant_id: int, trial_index: int) -> tuple[int, int, int]:
    """Left/middle/right permutation of the stored triplet, random per trial but stable across reloads."""
    digest = hashlib.sha256(f"{participant_id}:{trial_index}".encode()).digest()
    order = [0, 1, 2]
    random.Random(digest).shuffle(order)
    return as_triplet(order)


def trial_plan(db: Database, participant_id: int) -> list[PlannedTrial]:
    with db.read() as session:
        participant = _participant(session, participant_id)
        trials = session.scalars(
            select(Trial).where(Trial.list_id == participant.list_id).order_by(Trial.trial_index)
        ).all()
        return [_planned(participant_id, trial) for trial in trials]


def _planned(participant_id: int, trial: Trial) -> PlannedTrial:
    """The trial with its images left to right: the design's fixed order where it has one, else random."""
    stored = (trial.stim0_id, trial.stim1_id, trial.stim2_id)
    order = (
        as_triplet(int(i) for i in trial.display_order)
        if trial.display_order
        else display_order(participant_id, trial.trial_index)
    )
    shown = as_triplet(stored[i] for i in order)
    return PlannedTrial(trial.trial_index, trial.id, trial.block, trial.kind, trial.level, shown)


@dataclass(frozen=True)
class ParticipantView:
    """What the participant page needs to decide the next step; read fresh on every page run."""

    participant_id: int
    external_id: str
    status: ParticipantStatus
    consent: bool | None
    demographics: dict[str, Any]
    strategy: str | None
    flow_state: dict[str, Any]
    config: StudyConfig
    study_id: int
    is_pilot: bool = False


def participant_view(db: Database, participant_id: int) -> ParticipantView:
    with db.read() as session:
        participant = _participant(session, participant_id)
        config = study_config(session.get_one(Study, participant.study_id))
        return ParticipantView(
            participant.id,
            participant.external_id,
            participant.status,
            participant.consent,
            dict(participant.demographics or {}),
            participant.strategy,
            dict(participant.flow_state or {}),
            config,
            participant.study_id,
            participant.is_pilot,
        )


def answered_trials(db: Database, participant_id: int) -> set[int]:
    """Trials with a real outcome (answered or timed out); unavailable ones are to be offered again."""
    return _trials_where(db, participant_id, Response.unavailable.is_(False))


def unavailable_trials(db: Database, participant_id: int) -> set[int]:
    """Trials whose row says an image could not be served (no real outcome yet)."""
    return _trials_where(db, participant_id, Response.unavailable.is_(True))


def _trials_where(db: Database, participant_id: int, condition) -> set[int]:
    with db.read() as session:
        return set(
            session.scalars(
                select(Response.trial_index).where(Response.participant_id == participant_id, condition)
            )
        )


def record_response(db: Database, participant_id: int, payload: ResponsePayload) -> bool:
    """Store one response row; True if stored now, False if it was already stored (a duplicate).

    A real outcome replaces an `unavailable` row of the same trial (still one row per trial). Raises
    ResponseRejected (after logging a `rejected_response` event) when the response does not fit: no consent,
    an unknown trial, other images than assigned, an impossible choice or RT, images said to be unavailable
    that are there, or a finished session.
    """
    try:
        with db.write() as session:
            participant = _participant(session, participant_id)
            config = study_config(session.get_one(Study, participant.study_id))
            _require_consent(participant)
            trial = _assigned_trial(session, participant, payload)
            existing = session.scalar(
                select(Response).where(
                    Response.participant_id == participant_id, Response.trial_index == payload.trial_index
                )
            )
            if participant.status in FINISHED:
                if existing is not None:
                    return False
                raise ResponseRejected(
                    f"participant {participant.external_id} already finished "
                    f"({participant.status.value}); response to trial {payload.trial_index} refused"
                )
            _check_response(session, config, payload)
            participant.last_seen_at = utcnow()
            values = _response_values(participant, trial, payload)
            if existing is None:
                return insert_ignoring_duplicates(
                    session, Response, values, ("participant_id", "trial_index")
                )
            if existing.unavailable and not payload.unavailable:
                for name, value in values.items():
                    setattr(existing, name, value)
                return True
            return False
    except ResponseRejected as rejected:
        _log_rejection(db, participant_id, payload, str(rejected))
        raise


def _require_consent(participant: Participant) -> None:
    if participant.consent is not True:
        given = "declined consent" if participant.consent is False else "not given consent"
        raise ResponseRejected(
            f"participant {participant.external_id} has {given}; responses are accepted only after consent"
        )


def _assigned_trial(session: Session, participant: Participant, payload: ResponsePayload) -> Trial:
    trial = session.scalar(
        select(Trial).where(Trial.list_id == participant.list_id, Trial.trial_index == payload.trial_index)
    )
    if trial is None:
        raise ResponseRejected(
            f"trial_index {payload.trial_index} is not part of participant {participant.external_id}'s list"
        )
    if sorted(payload.shown) != sorted((trial.stim0_id, trial.stim1_id, trial.stim2_id)):
        raise ResponseRejected(
            f"trial {payload.trial_index}: shown images {list(payload.shown)} are not the "
            "images assigned to this participant"
        )
    return trial


def _response_values(participant: Participant, trial: Trial, payload: ResponsePayload) -> dict[str, Any]:
    chosen = None if payload.chosen_position is None else payload.shown[payload.chosen_position]
    return dict(
        participant_id=participant.id,
        trial_index=payload.trial_index,
        trial_id=trial.id,
        shown_left_id=payload.shown[0],
        shown_middle_id=payload.shown[1],
        shown_right_id=payload.shown[2],
        chosen_position=payload.chosen_position,
        chosen_stimulus_id=chosen,
        rt_ms=payload.rt_ms,
        client_onset_ms=payload.client_onset_ms,
        input_modality=payload.input_modality,
        timed_out=payload.timed_out,
        unavailable=payload.unavailable,
        server_received_at=utcnow(),
    )


def _check_response(session: Session, config: StudyConfig, payload: ResponsePayload) -> None:
    """Every stored value checked against the study: modality, the outcome's fields, the RT range."""
    if payload.input_modality not in INPUT_MODALITIES:
        raise ResponseRejected(
            f"input_modality {payload.input_modality!r} is not one of {list(INPUT_MODALITIES)}"
        )
    if payload.timed_out or payload.unavailable:
        _check_no_answer(payload)
        if payload.unavailable and not missing_images(session, payload.shown):
            raise ResponseRejected(
                f"trial {payload.trial_index} reported unavailable, "
                "but its images are available on the server"
            )
        return
    if payload.chosen_position not in (0, 1, 2):
        raise ResponseRejected(f"chosen_position must be 0, 1 or 2, got {payload.chosen_position!r}")
    _check_rt(config, payload.rt_ms)


def _check_no_answer(payload: ResponsePayload) -> None:
    outcome = "an unavailable trial" if payload.unavailable else "a timed-out trial"
    if payload.timed_out and payload.unavailable:
        raise ResponseRejected("timed_out and unavailable cannot both be true")
    if payload.chosen_position is not None:
        raise ResponseRejected(f"chosen_position must be null for {outcome}, got {payload.chosen_position!r}")
    if payload.rt_ms is not None:
        raise ResponseRejected(f"rt_ms must be null for {outcome}, got {payload.rt_ms!r}")
    if payload.unavailable and payload.input_modality != "none":
        raise ResponseRejected(f"input_modality must be 'none' for {outcome}, got {payload.input_modality!r}")


def _check_rt(config: StudyConfig, rt: float | None) -> None:
    if rt is None or not math.isfinite(rt):
        raise ResponseRejected(f"rt_ms must be a finite number for an answered trial, got {rt!r}")
    longest = (
        config.response_window_ms + MAX_RT_SLACK_MS if config.response_window_ms else NO_WINDOW_MAX_RT_MS
    )
    if rt < config.min_valid_rt_ms:
        raise ResponseRejected(
            f"rt_ms {rt:g} is under the study's minimum valid response time of {config.min_valid_rt_ms} ms"
        )
    if rt > longest:
        raise ResponseRejected(f"rt_ms {rt:g} is over the study's response window plus slack ({longest} ms)")


def serving_file(relative: str | None) -> Path | None:
    """The serving copy of a stimulus from its stored path, only if it lies inside the data directory
    and exists."""
    if relative is None:
        return None
    home = data_home().resolve()
    path = (home / relative).resolve()
    return path if path.is_relative_to(home) and path.is_file() else None


def missing_images(session: Session, stimulus_ids: tuple[int, ...]) -> list[int]:
    """Those of the stimuli whose serving file is not on disk (an unknown id counts as missing)."""
    paths = dict(
        session.execute(select(Stimulus.id, Stimulus.path).where(Stimulus.id.in_(stimulus_ids))).all()
    )
    return [sid for sid in stimulus_ids if serving_file(paths.get(sid)) is None]


def _log_rejection(db: Database, participant_id: int, payload: ResponsePayload, reason: str) -> None:
    """An internal event per refused response, up to the participant's event cap (no flooding)."""
    with contextlib.suppress(ParticipantNotFound):
        if _event_count(db, participant_id) >= MAX_EVENTS_PER_PARTICIPANT:
            return
        record_event(
            db,
            participant_id,
            "rejected_response",
            client_event_id="rej-" + secrets.token_hex(8),
            trial_index=payload.trial_index,
            detail={"reason": reason[:500]},
        )


def _event_count(db: Database, participant_id: int) -> int:
    with db.read() as session:
        mine = InteractionEvent.participant_id == participant_id
        return session.execute(select(func.count()).where(mine)).scalar_one()


def record_event(
    db: Database,
    participant_id: int,
    kind: str,
    *,
    client_event_id: str,
    trial_index: int | None = None,
    client_time_ms: float | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Store a server-side (or simulated) event once per (participant, client_event_id); True if new.
    Client events go through `record_client_event`, which enforces the flow and the limits."""
    with db.write() as session:
        participant = _participant(session, participant_id)
        event = EventPayload(kind, client_event_id, trial_index, client_time_ms, detail or {})
        return _insert_event(session, participant, event)


def record_client_event(db: Database, participant_id: int, event: EventPayload) -> bool:
    """Store an event a participant's browser sent; True if new, False for a re-sent one.

    EventRejected when the participant has not consented, has finished, or reached the per-participant
    cap; TooManyEvents when over the rate limit. A `browser` event also stores its facts on the participant.
    """
    with db.write() as session:
        participant = _participant(session, participant_id)
        seen = select(InteractionEvent.id).where(
            InteractionEvent.participant_id == participant_id,
            InteractionEvent.client_event_id == event.client_event_id,
        )
        if session.scalar(seen) is not None:
            return False
        _check_event_allowed(session, participant)
        stored = _insert_event(session, participant, event)
        if stored and event.kind == "browser":
            participant.browser = event.detail
        return stored


def _check_event_allowed(session: Session, participant: Participant) -> None:
    who = f"participant {participant.external_id}"
    if participant.consent is not True:
        given = "declined consent" if participant.consent is False else "not given consent"
        raise EventRejected(f"{who} has {given}; events are accepted only after consent")
    if participant.status in FINISHED:
        raise EventRejected(
            f"{who} already finished ({participant.status.value}); events are no longer accepted"
        )
    mine = InteractionEvent.participant_id == participant.id
    if session.execute(select(func.count()).where(mine)).scalar_one() >= MAX_EVENTS_PER_PARTICIPANT:
        raise EventRejected(f"{who} has reached the cap of {MAX_EVENTS_PER_PARTICIPANT} events")
    since = utcnow() - timedelta(seconds=EVENT_RATE_WINDOW_S)
    recent = session.execute(
        select(func.count()).where(mine, InteractionEvent.server_received_at >= since)
    ).scalar_one()
    if recent >= MAX_EVENTS_PER_RATE_WINDOW:
        raise TooManyEvents(
            f"{who} sent {recent} events in the last {EVENT_RATE_WINDOW_S} s "
            f"(at most {MAX_EVENTS_PER_RATE_WINDOW}); send again later"
        )


def _insert_event(session: Session, participant: Participant, event: EventPayload) -> bool:
    participant.last_seen_at = utcnow()
    values = dict(
        participant_id=participant.id,
        client_event_id=str(event.client_event_id)[:64],
        kind=event.kind[:32],
        trial_index=event.trial_index,
        client_time_ms=event.client_time_ms,
        detail=event.detail,
        server_received_at=utcnow(),
    )
    return insert_ignoring_duplicates(
        session, InteractionEvent, values, ("participant_id", "client_event_id")
    )


def update_participant(db: Database, participant_id: int, **fields: Any) -> None:
    """Store demographics, strategy, browser facts or flow state (only these fields; consent is given
    through `enter_study`)."""
    allowed = {"demographics", "strategy", "browser", "flow_state"}
    if set(fields) - allowed:
        raise ValueError(f"cannot update {sorted(set(fields) - allowed)}; allowed: {sorted(allowed)}")
    with db.write() as session:
        participant = _participant(session, participant_id)
        for name, value in fields.items():
            setattr(participant, name, value)
        participant.last_seen_at = utcnow()


def finish_participant(db: Database, participant_id: int, status: ParticipantStatus) -> str:
    """Complete (only once every trial is stored), exit early or decline consent; returns the code to show."""
    with db.write() as session:
        participant = _participant(session, participant_id)
        config = study_config(session.get_one(Study, participant.study_id))
        if participant.status not in FINISHED:
            if status == ParticipantStatus.COMPLETED:
                _require_all_answered(session, participant)
            participant.status = status
            participant.finished_at = utcnow()
        return code_for(config, participant.status)


def _require_all_answered(session: Session, participant: Participant) -> None:
    """Every planned trial has a row; an unavailable one counts (the server verified the image is gone)."""
    planned = set(session.scalars(select(Trial.trial_index).where(Trial.list_id == participant.list_id)))
    stored = set(
        session.scalars(select(Response.trial_index).where(Response.participant_id == participant.id))
    )
    missing = sorted(planned - stored)
    if missing:
        raise IncompleteSession(missing)


def code_for(config: StudyConfig, status: ParticipantStatus) -> str:
    return {
        ParticipantStatus.COMPLETED: config.completion_code,
        ParticipantStatus.EARLY_EXIT: config.early_exit_code,
        ParticipantStatus.NO_CONSENT: config.no_consent_code,
    }.get(status, "")


def _participant(session: Session, participant_id: int) -> Participant:
    participant = session.get(Participant, participant_id)
    if participant is None:
        raise ParticipantNotFound(f"no participant with id {participant_id}")
    return participant
