"""REST endpoints next to the Streamlit app: the trial component posts every response here the moment it is
given (`fetch(..., {keepalive: true})`), so a block runs in the browser without one rerun per trial.

Protocol (paths below server.baseUrlPath, if one is set; every JSON answer has a `status`):

POST /api/responses  {token, trial_index, shown: [3 ids], chosen_position: 0|1|2|null, rt_ms,
                      client_onset_ms (epoch ms: performance.timeOrigin + onset), input_modality:
                      mouse|touch|keyboard|none, timed_out: bool, unavailable: bool (optional)}
  200 {"status": "stored", "trial_index": N}      stored now (or it replaced the trial's `unavailable` row)
  200 {"status": "duplicate", "trial_index": N}   this trial already has its outcome; the first one stands
  409 {"status": "rejected", "reason": ...}       valid token, but the study's rules refuse it: no consent or
        declined, finished, trial_index not in the participant's list, other images, RT under the study's
        minimum valid RT or over its window + slack, a timed-out/unavailable trial with a choice or RT,
        `unavailable` while every image of the trial is on the server ("images are available")
POST /api/events     {token, client_event_id, kind, detail: {} (<= 2 KB), trial_index, client_time_ms}
  200 {"status": "stored" | "duplicate"}
  409 {"status": "rejected", "reason": ...}       no consent, finished, or the per-participant cap reached
  429 {"status": "rejected", "reason": ...}       over the rate limit (Retry-After header): send again later
GET  /api/stimuli/{id}?token=TOKEN               the image, only if it is in the token's participant's list
  200 image bytes; 401 bad or missing token; 403 not in this participant's list; 404 the image file is gone
For all:
  400 {"status": "error", "reason": ...}   malformed body (not JSON, not an object, nested too deeply, a
                                           field of the wrong type or range); the reason names the field
  401 {"status": "error", "reason": ...}   missing, malformed or unverifiable token (e.g. signed with an
                                           old key)
  404 {"status": "error", "reason": ...}   the token's participant does not exist
  413 {"status": "error", "reason": ...}   body over 16 KB, refused from Content-Length or while streaming
Only 409 (and 200) are final for an outbox: 401, 404, 429 and 5xx may succeed later (a fresh token, a
restart).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import or_, select
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from db.engine import Database
from db.models import Participant, Stimulus, Trial
from study.participation import (
    EVENT_RATE_WINDOW_S,
    EventRejected,
    ParticipantNotFound,
    ResponseRejected,
    TooManyEvents,
    record_client_event,
    record_response,
    serving_file,
)
from workflows.adaptive import after_answer
from workflows.participant.payloads import BadRequest, parse_event, parse_response
from workflows.participant.tokens import InvalidToken, TokenKey

LOG = logging.getLogger("alignlab.api")
DatabaseSource = Callable[[], Database]  # returns the process-wide Database
MAX_BODY_BYTES = 16_384
STIMULUS_CACHE = "private, max-age=86400, immutable"


class BodyTooLarge(ValueError):
    pass


class NotInList(LookupError):
    pass


async def _read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, refused before it is read whole when it is over MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BodyTooLarge(f"request body of {declared[:20]} bytes is over the {MAX_BODY_BYTES}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"request body is over the {MAX_BODY_BYTES}-byte limit")
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest("request body is nested too deeply to be a response or an event") from None
    except ValueError as error:
        raise BadRequest(f"request body is not JSON: {str(error)[:120]}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got a JSON {type(data).__name__}")
    return data


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "reason": message}, status_code=status)


def _rejected(message: str, status: int = 409, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "rejected", "reason": message}, status_code=status, headers=headers)


def _refusal(error: Exception) -> JSONResponse:
    """The JSON answer for every refusal the endpoints know; anything else is a bug, logged, a JSON 500."""
    if isinstance(error, BodyTooLarge):
        return _error(413, str(error))
    if isinstance(error, BadRequest):
        return _error(400, str(error))
    if isinstance(error, InvalidToken):
        return _error(401, str(error))
    if isinstance(error, ParticipantNotFound):
        return _error(404, str(error))
    if isinstance(error, TooManyEvents):
        return _rejected(str(error), 429, {"Retry-After": str(EVENT_RATE_WINDOW_S)})
    if isinstance(error, ResponseRejected | EventRejected):
        return _rejected(str(error))
    LOG.exception("participant API failed", exc_info=error)
    return _error(500, "the server failed to handle this request; it was logged")


async def _verified_and_stored(
    get_db: DatabaseSource,
    key: TokenKey,
    request: Request,
    parse: Callable[[dict[str, Any]], Any],
    record: Callable[[Database, int, Any], bool],
) -> tuple[Any, int, bool]:
    """The body read as JSON, its token verified, parsed and recorded (in a worker thread, off the event
    loop): (what was parsed, whose it is, whether it was stored now rather than before). Raises what
    `_refusal` answers."""
    data = await _read_json(request)
    participant_id = key.participant(data.get("token"))
    parsed = parse(data)
    return parsed, participant_id, await run_in_threadpool(record, get_db(), participant_id, parsed)


async def post_response(get_db: DatabaseSource, key: TokenKey, request: Request) -> Response:
    try:
        payload, participant_id, stored = await _verified_and_stored(
            get_db, key, request, parse_response, record_response
        )
    except Exception as error:  # noqa: BLE001 - every failure answers JSON (see _refusal)
        if not isinstance(error, ResponseRejected):
            LOG.warning("response refused: %s", str(error)[:300])
        return _refusal(error)
    # adaptive designs: refit / new lists after the answer is sent, never on the participant's clock
    after = BackgroundTask(after_answer, get_db(), participant_id) if stored else None
    return JSONResponse(
        {"status": "stored" if stored else "duplicate", "trial_index": payload.trial_index}, background=after
    )


async def post_event(get_db: DatabaseSource, key: TokenKey, request: Request) -> Response:
    try:
        _, _, stored = await _verified_and_stored(get_db, key, request, parse_event, record_client_event)
    except Exception as error:  # noqa: BLE001 - every failure answers JSON (see _refusal)
        return _refusal(error)
    return JSONResponse({"status": "stored" if stored else "duplicate"})


def participant_stimulus(db: Database, participant_id: int, stimulus_id: int):
    """The serving file of a stimulus shown in the participant's list (None if the file is gone);
    ParticipantNotFound, or NotInList for any other stimulus (unknown ids included: nothing to enumerate)."""
    uses = or_(Trial.stim0_id == stimulus_id, Trial.stim1_id == stimulus_id, Trial.stim2_id == stimulus_id)
    with db.read() as session:
        participant = session.get(Participant, participant_id)
        if participant is None:
            raise ParticipantNotFound(f"no participant with id {participant_id}")
        in_list = session.scalar(select(Trial.id).where(Trial.list_id == participant.list_id, uses).limit(1))
        if participant.list_id is None or in_list is None:
            raise NotInList(f"stimulus {stimulus_id} is not in this participant's trials")
        return serving_file(session.scalar(select(Stimulus.path).where(Stimulus.id == stimulus_id)))


async def get_stimulus(get_db: DatabaseSource, key: TokenKey, request: Request) -> Response:
    raw = request.path_params["stimulus_id"]
    try:
        participant_id = key.participant(request.query_params.get("token"))
        if not (raw.isascii() and raw.isdigit() and int(raw) < 2**31):
            raise NotInList(f"{raw[:20]!r} is not a stimulus id")
        path = await run_in_threadpool(participant_stimulus, get_db(), participant_id, int(raw))
    except NotInList as error:
        return _error(403, str(error))
    except Exception as error:  # noqa: BLE001 - every failure answers JSON (see _refusal)
        return _refusal(error)
    if path is None:
        LOG.warning("stimulus %s has no serving file on disk", raw)
        return _error(404, f"the image file of stimulus {raw} is missing on the server")
    return FileResponse(path, headers={"Cache-Control": STIMULUS_CACHE})


def api_routes(prefix: str, get_db: DatabaseSource, key: TokenKey) -> list[Route]:
    """The endpoints under `prefix` (/api below server.baseUrlPath), storing through the process's database
    and checking tokens with the process's key.

    `get_db` and `key` are passed in by the server (one engine and one key per process) so this module stays
    free of Streamlit.
    """
    return [
        Route(f"{prefix}/responses", partial(post_response, get_db, key), methods=["POST"]),
        Route(f"{prefix}/events", partial(post_event, get_db, key), methods=["POST"]),
        Route(f"{prefix}/stimuli/{{stimulus_id}}", partial(get_stimulus, get_db, key), methods=["GET"]),
    ]
