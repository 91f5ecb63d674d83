"""A participant's path through a study on the server side: entry and list assignment, the trial plan,
recording responses and interaction events (idempotently), and finishing.

Every function takes plain values and a `Database`; the Streamlit page, the REST endpoint and the
simulated participants all go through the same functions, so there is one recording path.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.idempotent import insert_ignoring_duplicates
from db.models import (
    InteractionEvent,
    Participant,
    ParticipantStatus,
    Response,
    Study,
    StudyStatus,
    Trial,
    TrialKind,
    TripletLevel,
    TripletList,
    utcnow,
)
from study.config import StudyConfig
from study.studies import get_study, study_config

EXTERNAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INPUT_MODALITIES = ("mouse", "touch", "keyboard", "none", "simulated")
FINISHED = (ParticipantStatus.COMPLETED, ParticipantStatus.EARLY_EXIT, ParticipantStatus.NO_CONSENT)
MAX_RT_SLACK_MS = 5_000  # RTs up to the response window plus this are plausible (slow frames, timers)


class InvalidParticipantId(ValueError):
    pass


class StudyUnavailable(LookupError):
    """The study is not accepting new participants (draft, paused, closed or full)."""


class ParticipantNotFound(LookupError):
    pass


class ResponseRejected(ValueError):
    """A response that does not fit the participant's plan; nothing is stored, an event is logged."""


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


def validate_external_id(external_id: str) -> str:
    if not isinstance(external_id, str) or not EXTERNAL_ID_PATTERN.match(external_id):
        raise InvalidParticipantId(
            f"participant id {str(external_id)[:80]!r} is not valid: expected 1-64 letters, digits, '_' or '-'"
        )
    return external_id


def new_anonymous_id() -> str:
    return "anon-" + secrets.token_hex(8)


def enter_study(
    db: Database,
    slug: str,
    external_id: str | None = None,
    *,
    external_study_id: str | None = None,
    external_session_id: str | None = None,
    source: str | None = None,
    browser: dict[str, Any] | None = None,
    simulated: bool = False,
) -> Entry:
    """Return the participant for (study, external id), creating it and assigning a list if new.

    A returning participant (same id) gets the same row back, whatever its status: resume and the
    end page are the caller's decision, never a second session.
    """
    external_id = validate_external_id(external_id) if external_id else new_anonymous_id()
    with db.write() as session:
        study = get_study(session, slug)
        existing = session.scalar(
            select(Participant).where(
                Participant.study_id == study.id, Participant.external_id == external_id
            )
        )
        if existing is not None:
            existing.last_seen_at = utcnow()
            return Entry(existing.id, study.id, external_id, existing.status, is_new=False)
        participant = _admit(session, study, external_id, simulated)
        participant.external_study_id = external_study_id
        participant.external_session_id = external_session_id
        participant.source = source or ("simulated" if simulated else "anonymous")
        participant.browser = browser or {}
        session.flush()
        return Entry(participant.id, study.id, external_id, participant.status, is_new=True)


def _admit(session: Session, study: Study, external_id: str, simulated: bool) -> Participant:
    if study.status != StudyStatus.OPEN:
        raise StudyUnavailable(f"study {study.slug!r} is {study.status.value}, not accepting participants")
    session.execute(select(Study.id).where(Study.id == study.id).with_for_update())  # serialise (PostgreSQL)
    if (
        study.target_participants is not None
        and _completed_count(session, study.id) >= study.target_participants
    ):
        raise StudyUnavailable(f"study {study.slug!r} has reached its target of {study.target_participants}")
    list_id = assign_list(session, study, study_config(study))
    participant = Participant(
        study_id=study.id, external_id=external_id, list_id=list_id, is_simulated=simulated
    )
    session.add(participant)
    return participant


def _completed_count(session: Session, study_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Participant.study_id == study_id, Participant.status == ParticipantStatus.COMPLETED
            )
        )
        or 0
    )


def assign_list(session: Session, study: Study, config: StudyConfig) -> int:
    """The list with the fewest completed plus recently started (not timed-out) participants.

    Must run inside a write transaction that serialises assignments (BEGIN IMMEDIATE on SQLite,
    the study row locked on PostgreSQL), so concurrent arrivals never share a slot.
    """
    cutoff = utcnow() - timedelta(minutes=config.session_timeout_minutes)
    holding = or_(
        Participant.status == ParticipantStatus.COMPLETED,
        and_(Participant.status == ParticipantStatus.STARTED, Participant.last_seen_at >= cutoff),
    )
    counts = dict(
        session.execute(
            select(Participant.list_id, func.count())
            .where(Participant.study_id == study.id, holding)
            .group_by(Participant.list_id)
        ).all()
    )
    lists = session.execute(
        select(TripletList.id, TripletList.list_index).where(TripletList.study_id == study.id)
    ).all()
    if not lists:
        raise StudyUnavailable(f"study {study.slug!r} has no triplet lists")
    list_id, _ = min(lists, key=lambda row: (counts.get(row.id, 0), row.list_index))
    if counts.get(list_id, 0) >= config.participants_per_list:
        raise StudyUnavailable(
            f"study {study.slug!r} is full: every list has {config.participants_per_list} "
            "participant(s) completed or in progress"
        )
    return list_id


def display_order(participant_id: int, trial_index: int) -> tuple[int, int, int]:
    """Left/middle/right permutation of the stored triplet, random per trial but stable across reloads."""
    digest = hashlib.sha256(f"{participant_id}:{trial_index}".encode()).digest()
    order = [0, 1, 2]
    random.Random(digest).shuffle(order)
    return tuple(order)


def trial_plan(db: Database, participant_id: int) -> list[PlannedTrial]:
    with db.read() as session:
        participant = _participant(session, participant_id)
        trials = session.scalars(
            select(Trial).where(Trial.list_id == participant.list_id).order_by(Trial.trial_index)
        ).all()
        return [_planned(participant_id, trial) for trial in trials]


def _planned(participant_id: int, trial: Trial) -> PlannedTrial:
    stored = (trial.stim0_id, trial.stim1_id, trial.stim2_id)
    shown = tuple(stored[i] for i in display_order(participant_id, trial.trial_index))
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


def participant_view(db: Database, participant_id: int) -> ParticipantView:
    with db.read() as session:
        participant = _participant(session, participant_id)
        config = study_config(session.get(Study, participant.study_id))
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
        )


def answered_trials(db: Database, participant_id: int) -> set[int]:
    with db.read() as session:
        return set(
            session.scalars(select(Response.trial_index).where(Response.participant_id == participant_id))
        )


def record_response(db: Database, participant_id: int, payload: ResponsePayload) -> bool:
    """Store one response row; True if stored now, False if it was already stored (a duplicate).

    Raises ResponseRejected (after logging a `rejected_response` event) when the response does not
    fit: an unknown trial, other images than assigned, an impossible choice or RT, or a finished session.
    """
    try:
        with db.write() as session:
            participant = _participant(session, participant_id)
            trial = _assigned_trial(session, participant, payload)
            values = _response_values(participant, trial, payload)
            if participant.status in FINISHED:
                if _has_response(session, participant_id, payload.trial_index):
                    return False
                raise ResponseRejected(
                    f"participant {participant.external_id} already finished "
                    f"({participant.status.value}); response to trial {payload.trial_index} refused"
                )
            participant.last_seen_at = utcnow()
            return insert_ignoring_duplicates(session, Response, values, ("participant_id", "trial_index"))
    except ResponseRejected as rejected:
        _log_rejection(db, participant_id, payload, str(rejected))
        raise


def _assigned_trial(session: Session, participant: Participant, payload: ResponsePayload) -> Trial:
    trial = session.scalar(
        select(Trial).where(Trial.list_id == participant.list_id, Trial.trial_index == payload.trial_index)
    )
    if trial is None:
        raise ResponseRejected(
            f"trial {payload.trial_index} is not part of participant {participant.external_id}'s list"
        )
    if sorted(payload.shown) != sorted((trial.stim0_id, trial.stim1_id, trial.stim2_id)):
        raise ResponseRejected(
            f"trial {payload.trial_index}: shown images {list(payload.shown)} are not the "
            "images assigned to this participant"
        )
    return trial


def _response_values(participant: Participant, trial: Trial, payload: ResponsePayload) -> dict[str, Any]:
    _check_choice(payload)
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
        server_received_at=utcnow(),
    )


def _check_choice(payload: ResponsePayload) -> None:
    if payload.input_modality not in INPUT_MODALITIES:
        raise ResponseRejected(f"input modality {payload.input_modality!r} not one of {INPUT_MODALITIES}")
    if payload.timed_out:
        if payload.chosen_position is not None:
            raise ResponseRejected("a timed-out trial cannot carry a chosen position")
        return
    if payload.chosen_position not in (0, 1, 2):
        raise ResponseRejected(f"chosen position must be 0, 1 or 2, got {payload.chosen_position!r}")
    rt = payload.rt_ms
    if rt is None or not math.isfinite(rt) or rt < 0 or rt > 3_600_000:
        raise ResponseRejected(f"response time {rt!r} ms is not a plausible value")


def _has_response(session: Session, participant_id: int, trial_index: int) -> bool:
    return (
        session.scalar(
            select(Response.id).where(
                Response.participant_id == participant_id, Response.trial_index == trial_index
            )
        )
        is not None
    )


def _log_rejection(db: Database, participant_id: int, payload: ResponsePayload, reason: str) -> None:
    with contextlib.suppress(ParticipantNotFound):
        record_event(
            db,
            participant_id,
            "rejected_response",
            client_event_id="rej-" + secrets.token_hex(8),
            trial_index=payload.trial_index,
            detail={"reason": reason},
        )


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
    """Store an interaction event once per (participant, client_event_id); True if new."""
    with db.write() as session:
        participant = _participant(session, participant_id)
        participant.last_seen_at = utcnow()
        values = dict(
            participant_id=participant_id,
            client_event_id=str(client_event_id)[:64],
            kind=kind[:32],
            trial_index=trial_index,
            client_time_ms=client_time_ms,
            detail=detail or {},
            server_received_at=utcnow(),
        )
        return insert_ignoring_duplicates(
            session, InteractionEvent, values, ("participant_id", "client_event_id")
        )


def update_participant(db: Database, participant_id: int, **fields: Any) -> None:
    """Store consent, demographics, strategy, browser facts or flow state (only these fields)."""
    allowed = {"consent", "demographics", "strategy", "browser", "flow_state"}
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
        config = study_config(session.get(Study, participant.study_id))
        if participant.status not in FINISHED:
            if status == ParticipantStatus.COMPLETED:
                _require_all_answered(session, participant)
            participant.status = status
            participant.finished_at = utcnow()
        return code_for(config, participant.status)


def _require_all_answered(session: Session, participant: Participant) -> None:
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
