"""Live study progress for the researcher dashboard: who started, finished, dropped out, and when last seen."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from sqlalchemy import func, select

from db.engine import Database
from db.models import Participant, ParticipantStatus, Response, Study, TripletList, as_utc, utcnow
from study.config import StudyConfig

PROGRESS_COLUMNS = [
    "slug",
    "title",
    "status",
    "lists",
    "target",
    "in_progress",
    "completed",
    "abandoned",
    "no_consent",
    "early_exit",
    "simulated",
    "responses",
    "last_seen",
]


def participant_state(status: ParticipantStatus, last_seen, timeout_minutes: int, now=None) -> str:
    """A started participant silent for longer than the study's session timeout counts as abandoned."""
    if status != ParticipantStatus.STARTED:
        return status.value
    silent = as_utc(now or utcnow()) - as_utc(last_seen)
    return "abandoned" if silent > timedelta(minutes=timeout_minutes) else "in_progress"


def study_progress(db: Database) -> pd.DataFrame:
    """One row per study with participant counts by state, response count and the latest activity."""
    with db.read() as session:
        studies = session.scalars(select(Study).order_by(Study.created_at)).all()
        lists = dict(
            session.execute(select(TripletList.study_id, func.count()).group_by(TripletList.study_id)).all()
        )
        responses = dict(
            session.execute(
                select(Participant.study_id, func.count(Response.id))
                .join(Response, Response.participant_id == Participant.id)
                .group_by(Participant.study_id)
            ).all()
        )
        people = session.execute(
            select(
                Participant.study_id, Participant.status, Participant.last_seen_at, Participant.is_simulated
            )
        ).all()
    rows = [
        _study_row(
            study,
            lists.get(study.id, 0),
            responses.get(study.id, 0),
            [p for p in people if p.study_id == study.id],
        )
        for study in studies
    ]
    return pd.DataFrame(rows, columns=PROGRESS_COLUMNS)


def _study_row(study: Study, n_lists: int, n_responses: int, people: list) -> dict:
    timeout = StudyConfig.from_dict(study.config).session_timeout_minutes
    states = [participant_state(p.status, p.last_seen_at, timeout) for p in people]
    return dict(
        slug=study.slug,
        title=study.title,
        status=study.status.value,
        lists=n_lists,
        target=study.target_participants,
        in_progress=states.count("in_progress"),
        completed=states.count("completed"),
        abandoned=states.count("abandoned"),
        no_consent=states.count("no_consent"),
        early_exit=states.count("early_exit"),
        simulated=sum(p.is_simulated for p in people),
        responses=n_responses,
        last_seen=max((p.last_seen_at for p in people), default=None),
    )


def participant_overview(db: Database, slug: str) -> pd.DataFrame:
    """One row per participant of a study: ids, state, list, answered trials, times, exclusion."""
    with db.read() as session:
        study = session.scalar(select(Study).where(Study.slug == slug))
        if study is None:
            raise LookupError(f"no study with slug {slug!r}")
        timeout = StudyConfig.from_dict(study.config).session_timeout_minutes
        answered = dict(
            session.execute(
                select(Response.participant_id, func.count())
                .join(Participant, Participant.id == Response.participant_id)
                .where(Participant.study_id == study.id)
                .group_by(Response.participant_id)
            ).all()
        )
        people = session.scalars(
            select(Participant).where(Participant.study_id == study.id).order_by(Participant.started_at)
        ).all()
    return pd.DataFrame(
        [
            dict(
                participant_id=p.id,
                external_id=p.external_id,
                source=p.source,
                simulated=p.is_simulated,
                state=participant_state(p.status, p.last_seen_at, timeout),
                list_id=p.list_id,
                answered=answered.get(p.id, 0),
                started=p.started_at,
                last_seen=p.last_seen_at,
                finished=p.finished_at,
                excluded=p.excluded,
                payment=p.payment_status,
            )
            for p in people
        ]
    )
