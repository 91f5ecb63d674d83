"""Live study progress for the researcher dashboard: who started, finished, dropped out, and when last seen.

States of a participant who consented and has not finished: `reserved` (no answer yet, holding a list slot
for the study's reservation timeout), `expired` (no answer within it: the slot went back), `in_progress`
(answering) and `abandoned` (silent beyond the session timeout). Reservations are counted apart from
completed and in-progress participants, so page loads and people who never start do not look like data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import Participant, ParticipantStatus, Response, Study, Trial, TripletList, as_utc, utcnow
from study.config import StudyConfig
from study.judgments import analysed_participant
from study.studies import get_study

STATE_COLUMNS = ("in_progress", "reserved", "expired", "completed", "abandoned", "no_consent", "early_exit")
PROGRESS_COLUMNS = [
    "slug",
    "title",
    "status",
    "lists",
    "target",
    *STATE_COLUMNS,
    "simulated",
    "responses",
    "last_seen",
]


def participant_state(
    status: ParticipantStatus,
    last_seen,
    config: StudyConfig,
    *,
    started,
    answered: int,
    now=None,
) -> str:
    """The finished status, or for a started participant: reserved / expired before the first answer (the
    same rule as list assignment, `study.participation.holds_slot`), in_progress / abandoned after it."""
    if status != ParticipantStatus.STARTED:
        return status.value
    now = as_utc(now or utcnow())
    silent = now - as_utc(last_seen) > timedelta(minutes=config.session_timeout_minutes)
    if answered:
        return "abandoned" if silent else "in_progress"
    waited = now - as_utc(started) > timedelta(minutes=config.reservation_timeout_minutes)
    return "expired" if silent or waited else "reserved"


def study_progress(db: Database) -> pd.DataFrame:
    """One row per study with participant counts by state, response count and the latest activity.

    Responses are only counted, per participant, in SQL over the index on `responses.participant_id` (the
    database never hands over a response row), so this stays cheap at millions of judgments."""
    with db.read() as session:
        studies = session.scalars(select(Study).order_by(Study.created_at)).all()
        lists = dict(
            session.execute(select(TripletList.study_id, func.count()).group_by(TripletList.study_id)).all()
        )
        answered = dict(
            session.execute(
                select(Response.participant_id, func.count()).group_by(Response.participant_id)
            ).all()
        )
        people = session.execute(
            select(
                Participant.id,
                Participant.study_id,
                Participant.status,
                Participant.started_at,
                Participant.last_seen_at,
                Participant.is_simulated,
            ).where(Participant.is_pilot.is_(False))  # pilots are the researcher's preview, not progress
        ).all()
    by_study: dict[int, list] = {}
    for person in people:
        by_study.setdefault(person.study_id, []).append(
            _Person(
                person.status,
                person.started_at,
                person.last_seen_at,
                person.is_simulated,
                answered.get(person.id, 0),
            )
        )
    rows = [_study_row(study, lists.get(study.id, 0), by_study.get(study.id, [])) for study in studies]
    return pd.DataFrame(rows, columns=PROGRESS_COLUMNS)


@dataclass(frozen=True)
class _Person:
    status: ParticipantStatus
    started_at: datetime
    last_seen_at: datetime
    is_simulated: bool
    answered: int


def _study_row(study: Study, n_lists: int, people: list) -> dict:
    config = StudyConfig.from_dict(study.config)
    states = [
        participant_state(p.status, p.last_seen_at, config, started=p.started_at, answered=p.answered)
        for p in people
    ]
    return dict(
        slug=study.slug,
        title=study.title,
        status=study.status.value,
        lists=n_lists,
        target=study.target_participants,
        **{state: states.count(state) for state in STATE_COLUMNS},
        simulated=sum(p.is_simulated for p in people),
        responses=sum(p.answered for p in people),
        last_seen=max((p.last_seen_at for p in people), default=None),
    )


def participant_overview(db: Database, slug: str) -> pd.DataFrame:
    """One row per participant of a study: ids, state, list, answered trials, times, exclusion."""
    with db.read() as session:
        study = get_study(session, slug)
        config = StudyConfig.from_dict(study.config)
        answered = _answered_counts(session, study.id)
        people = session.scalars(
            select(Participant).where(Participant.study_id == study.id).order_by(Participant.started_at)
        ).all()
    return pd.DataFrame([_overview_row(p, config, answered) for p in people])


def _answered_counts(session: Session, study_id: int) -> dict[int, int]:
    """Stored responses per participant of the study (participants without any are absent)."""
    return dict(
        session.execute(
            select(Response.participant_id, func.count())
            .join(Participant, Participant.id == Response.participant_id)
            .where(Participant.study_id == study_id)
            .group_by(Response.participant_id)
        ).all()
    )


def _overview_row(p: Participant, config: StudyConfig, answered: dict[int, int]) -> dict[str, Any]:
    return dict(
        participant_id=p.id,
        external_id=p.external_id,
        source=p.source,
        simulated=p.is_simulated,
        state=participant_state(
            p.status, p.last_seen_at, config, started=p.started_at, answered=answered.get(p.id, 0)
        ),
        list_id=p.list_id,
        answered=answered.get(p.id, 0),
        started=p.started_at,
        last_seen=p.last_seen_at,
        finished=p.finished_at,
        excluded=p.excluded,
        payment=p.payment_status,
    )


def rt_histogram(db: Database, slug: str, bin_ms: int = 100) -> pd.DataFrame:
    """Answered trials per (level, or kind for trials without one) and response-time bin, counted in SQL:
    columns `group`, `rt_ms` (the bin's start) and `n`."""
    group = func.coalesce(type_coerce(Trial.level, String), type_coerce(Trial.kind, String))
    bin_start = func.floor(Response.rt_ms / bin_ms) * bin_ms
    with db.read() as session:
        study = get_study(session, slug)
        rows = session.execute(
            select(group.label("group"), bin_start.label("bin_ms"), func.count().label("n"))
            .join(Trial, Trial.id == Response.trial_id)
            .join(Participant, Participant.id == Response.participant_id)
            .where(
                Participant.study_id == study.id,
                analysed_participant(),
                Response.timed_out.is_(False),
                Response.unavailable.is_(False),
                Response.rt_ms.is_not(None),
            )
            .group_by("group", "bin_ms")  # not "rt_ms": SQLite would group by the column of that name
            .order_by("group", "bin_ms")
        ).all()
    return pd.DataFrame(rows, columns=["group", "rt_ms", "n"])
