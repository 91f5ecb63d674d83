"""Who is arriving: the study slug and participant id from the link (Prolific or anonymous)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from study.pilot import PILOT_PARAM

ANONYMOUS_ID_PARAM = "participant"
LIST_PARAM = "list"  # a list asked for by name (from an imported design) or index from 0


@dataclass(frozen=True)
class Arrival:
    slug: str
    external_id: str | None  # None: a new anonymous participant
    external_study_id: str | None
    external_session_id: str | None
    source: str
    requested_list: str | None = None
    pilot_token: str | None = None


def arrival_from_query(params: Mapping[str, str]) -> Arrival:
    """Prolific links carry PROLIFIC_PID/STUDY_ID/SESSION_ID; lab and test links may carry `participant`
    (the id we generated and wrote into the URL on the first visit, so a reload finds it again). Any link
    may ask for a list (`list=`); the researcher's preview link carries `pilot=TOKEN` (a Prolific id on it
    is ignored: a pilot is never a Prolific participant)."""
    slug = params.get("study", "")
    extras = dict(requested_list=params.get(LIST_PARAM) or None, pilot_token=params.get(PILOT_PARAM) or None)
    if params.get("PROLIFIC_PID") and not extras["pilot_token"]:
        return Arrival(
            slug,
            params["PROLIFIC_PID"],
            params.get("STUDY_ID"),
            params.get("SESSION_ID"),
            "prolific",
            **extras,
        )
    return Arrival(slug, params.get(ANONYMOUS_ID_PARAM) or None, None, None, "anonymous", **extras)
