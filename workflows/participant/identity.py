"""Who is arriving: the study slug and participant id from the link (Prolific or anonymous)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ANONYMOUS_ID_PARAM = "participant"


@dataclass(frozen=True)
class Arrival:
    slug: str
    external_id: str | None  # None: a new anonymous participant
    external_study_id: str | None
    external_session_id: str | None
    source: str


def arrival_from_query(params: Mapping[str, str]) -> Arrival:
    """Prolific links carry PROLIFIC_PID/STUDY_ID/SESSION_ID; lab and test links may carry `participant`
    (the id we generated and wrote into the URL on the first visit, so a reload finds it again)."""
    slug = params.get("study", "")
    if params.get("PROLIFIC_PID"):
        return Arrival(
            slug, params["PROLIFIC_PID"], params.get("STUDY_ID"), params.get("SESSION_ID"), "prolific"
        )
    return Arrival(slug, params.get(ANONYMOUS_ID_PARAM) or None, None, None, "anonymous")
