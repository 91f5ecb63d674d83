"""Pilot runs: the researcher's preview link runs the real participant flow, stored as `pilot`.

A pilot is admitted whatever the study's status (a draft can be tried before it opens), takes no list slot
and counts toward no target; QC, noise ceilings, exports, payments and the alignment engine leave pilots out
(`study.judgments.load_responses` and `load_judgments` read live and simulated participants only).

The preview link carries a token derived from the study's secret salt, so only someone who was shown the link
on the researcher's Studies page can start a pilot; a participant cannot turn themselves into one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pandas as pd
from sqlalchemy import func, select

from db.engine import Database
from db.models import Participant, Response, Study
from study.config import StudyConfig
from study.studies import get_study, study_config

PILOT_PARAM = "pilot"
PILOT_ID_PREFIX = "pilot-"
TOKEN_CHARS = 24


class PilotRefused(PermissionError):
    """A preview link whose token does not belong to the study."""


def pilot_token(db: Database, slug: str) -> str:
    """The study's preview token (stable: the same link works until the study is deleted)."""
    with db.read() as session:
        return _token(get_study(session, slug))


def _token(study: Study) -> str:
    return hmac.new(study.salt.encode(), f"pilot:{study.slug}".encode(), hashlib.sha256).hexdigest()[
        :TOKEN_CHARS
    ]


def check_pilot_token(db: Database, slug: str, token: str) -> StudyConfig:
    """The study's config if `token` is its preview token; PilotRefused otherwise (StudyNotFound for an
    unknown study)."""
    with db.read() as session:
        study = get_study(session, slug)
        expected, config = _token(study), study_config(study)
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
        raise PilotRefused(f"the preview link of study {slug!r} is not valid (its token does not match)")
    return config


def pilot_link(base_url: str, slug: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?study={slug}&{PILOT_PARAM}={token}"


def new_pilot_id() -> str:
    return PILOT_ID_PREFIX + secrets.token_hex(8)


def pilot_runs(db: Database, slug: str) -> pd.DataFrame:
    """The study's pilot runs, newest first: id, status, list, answered trials, start and finish."""
    with db.read() as session:
        study = get_study(session, slug)
        rows = session.execute(
            select(
                Participant.external_id,
                Participant.status,
                Participant.list_id,
                func.count(Response.id),
                Participant.started_at,
                Participant.finished_at,
            )
            .outerjoin(Response, Response.participant_id == Participant.id)
            .where(Participant.study_id == study.id, Participant.is_pilot.is_(True))
            .group_by(Participant.id)
            .order_by(Participant.started_at.desc())
        ).all()
    frame = pd.DataFrame(rows, columns=["pilot_id", "status", "list_id", "answered", "started", "finished"])
    frame["status"] = frame["status"].map(str)
    return frame
