"""REST endpoints next to the Streamlit app: the trial component posts every response here the moment it is
given (`fetch(..., {keepalive: true})`), so a block runs in the browser without one rerun per trial.

Paths below server.baseUrlPath, if one is set:
POST /api/responses  one response -> 200 {"status": "stored" | "duplicate"} or 409 {"status": "rejected"}
POST /api/events     one interaction event -> 200 {"status": "stored" | "duplicate"}
GET  /api/stimuli/N  the serving copy of stimulus N
Every POST carries the signed participant token the page handed to the component.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from db.engine import Database
from db.models import Stimulus
from db.settings import data_home
from study.participation import (
    ParticipantNotFound,
    ResponseRejected,
    record_event,
    record_response,
    update_participant,
)
from workflows.participant.payloads import BadRequest, finite_or_none, parse_response
from workflows.participant.tokens import InvalidToken, participant_from_token

LOG = logging.getLogger("alignlab.api")
DatabaseSource = Callable[[], Database]  # returns the process-wide Database
MAX_BODY_BYTES = 16_384
STIMULUS_CACHE = "public, max-age=86400, immutable"


async def _read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    try:
        data = json.loads(body)
    except ValueError as error:
        raise BadRequest(f"request body is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "reason": message}, status_code=status)


async def post_response(get_db: DatabaseSource, request: Request) -> Response:
    try:
        data = await _read_json(request)
        participant_id = participant_from_token(data.get("token"))
        payload = parse_response(data)
        stored = await run_in_threadpool(record_response, get_db(), participant_id, payload)
    except (BadRequest, InvalidToken) as error:
        LOG.warning("response refused: %s", error)
        return _error(400 if isinstance(error, BadRequest) else 401, str(error))
    except ParticipantNotFound as error:
        return _error(404, str(error))
    except ResponseRejected as error:
        return JSONResponse({"status": "rejected", "reason": str(error)}, status_code=409)
    return JSONResponse({"status": "stored" if stored else "duplicate", "trial_index": payload.trial_index})


def _store_event(get_db: DatabaseSource, participant_id: int, data: dict[str, Any]) -> bool:
    detail = data.get("detail") if isinstance(data.get("detail"), dict) else {}
    kind = str(data.get("kind", ""))[:32]
    if not kind or not data.get("client_event_id"):
        raise BadRequest("an event needs a kind and a client_event_id")
    trial_index = data.get("trial_index") if type(data.get("trial_index")) is int else None
    stored = record_event(
        get_db(),
        participant_id,
        kind,
        client_event_id=str(data["client_event_id"]),
        trial_index=trial_index,
        client_time_ms=finite_or_none(data, "client_time_ms"),
        detail=detail,
    )
    if stored and kind == "browser":
        update_participant(get_db(), participant_id, browser=detail)
    return stored


async def post_event(get_db: DatabaseSource, request: Request) -> Response:
    try:
        data = await _read_json(request)
        participant_id = participant_from_token(data.get("token"))
        stored = await run_in_threadpool(_store_event, get_db, participant_id, data)
    except (BadRequest, InvalidToken) as error:
        return _error(400 if isinstance(error, BadRequest) else 401, str(error))
    except ParticipantNotFound as error:
        return _error(404, str(error))
    return JSONResponse({"status": "stored" if stored else "duplicate"})


def stimulus_file(get_db: DatabaseSource, stimulus_id: int) -> Path | None:
    """The serving copy of a stimulus, only if it lies inside the data directory and exists."""
    with get_db().read() as session:
        relative = session.scalar(select(Stimulus.path).where(Stimulus.id == stimulus_id))
    if relative is None:
        return None
    home = data_home()
    path = (home / relative).resolve()
    return path if path.is_relative_to(home) and path.is_file() else None


async def get_stimulus(get_db: DatabaseSource, request: Request) -> Response:
    raw = request.path_params["stimulus_id"]
    path = await run_in_threadpool(stimulus_file, get_db, int(raw)) if raw.isdigit() else None
    if path is None:
        return _error(404, f"no image for stimulus {raw[:20]!r}")
    return FileResponse(path, headers={"Cache-Control": STIMULUS_CACHE})


def api_routes(prefix: str, get_db: DatabaseSource) -> list[Route]:
    """The endpoints under `prefix` (/api below server.baseUrlPath), storing through the process's database.

    `get_db` is passed in by the server (one engine per process) so this module stays free of Streamlit.
    """
    return [
        Route(f"{prefix}/responses", partial(post_response, get_db), methods=["POST"]),
        Route(f"{prefix}/events", partial(post_event, get_db), methods=["POST"]),
        Route(f"{prefix}/stimuli/{{stimulus_id}}", partial(get_stimulus, get_db), methods=["GET"]),
    ]
