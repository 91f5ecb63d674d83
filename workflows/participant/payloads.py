"""Checking the JSON a participant's browser sends (over REST or inside a trigger) before it reaches the
service: types, ranges that do not depend on the study, closed sets. Each refusal is a BadRequest whose
message names the field and what was expected; rules that depend on the study (RT window, minimum RT, the
participant's list, consent) are checked by `study.participation` and refused there."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from study.participation import EventPayload, ResponsePayload

MAX_INDEX = 2**31 - 1  # trial indices are 32-bit integers in the database
CLIENT_MODALITIES = ("mouse", "touch", "keyboard", "none")  # "simulated" is for the simulator only
ONSET_PAST_MS = 400 * 86_400_000  # an onset is epoch ms: at most ~a year before the server's clock...
ONSET_FUTURE_MS = 2 * 86_400_000  # ...and two days after it (a client clock may be off, not by decades)
CLIENT_EVENT_KINDS = frozenset(
    {
        # session monitor
        "browser",
        "reload",
        "blur",
        "focus",
        "visibility",
        "fullscreen_enter",
        "fullscreen_exit",
        "resize",
        "online",
        "offline",
        "refresh_rate",
        # trial block
        "block_start",
        "early_response",
        "trial_interrupted",
        "image_retry",
        "image_unavailable",
        # outbox and connection
        "connection_lost",
        "connection_restored",
        "outbox_stalled",
    }
)  # server-side kinds (rejected_response, session_resumed) can never be posted
MAX_EVENT_ID_CHARS = 64
MAX_DETAIL_BYTES = 2_048


class BadRequest(ValueError):
    pass


def finite_or_none(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number or null, got {_show(value)}")
    return float(value)


def strict_bool(data: dict[str, Any], name: str, default: bool = False) -> bool:
    """true or false as JSON booleans; "false", 0 or null are refused (never read as truthy)."""
    value = data.get(name, default)
    if type(value) is not bool:
        raise BadRequest(f"{name} must be true or false (a JSON boolean), got {_show(value)}")
    return value


def required_index(data: dict[str, Any], name: str, expected: str = "an integer") -> int:
    value = data.get(name)
    if type(value) is not int or not 0 <= value <= MAX_INDEX:
        raise BadRequest(f"{name} must be {expected} from 0 to {MAX_INDEX}, got {_show(value)}")
    return value


def index_or_none(data: dict[str, Any], name: str) -> int | None:
    return None if data.get(name) is None else required_index(data, name, "an integer or null")


def _show(value: object) -> str:
    """A value for an error message, cut short (a body may hold a 16 KB string)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_response(data: dict[str, Any], *, now_ms: float | None = None) -> ResponsePayload:
    """The JSON a component sends, checked for shape; plan and study checks happen in record_response."""
    shown = data.get("shown")
    if not (
        isinstance(shown, list)
        and len(shown) == 3
        and all(type(i) is int and 0 < i <= MAX_INDEX for i in shown)
    ):
        raise BadRequest(f"shown must be a list of three stimulus ids, got {_show(shown)}")
    position = data.get("chosen_position")
    if position is not None and (type(position) is not int or position not in (0, 1, 2)):
        raise BadRequest(f"chosen_position must be 0, 1, 2 or null, got {_show(position)}")
    modality = data.get("input_modality", "mouse")
    if not isinstance(modality, str) or modality not in CLIENT_MODALITIES:
        raise BadRequest(f"input_modality must be one of {list(CLIENT_MODALITIES)}, got {_show(modality)}")
    rt_ms = finite_or_none(data, "rt_ms")
    if rt_ms is not None and rt_ms < 0:
        raise BadRequest(f"rt_ms must be >= 0 or null, got {_show(rt_ms)}")
    return ResponsePayload(
        trial_index=required_index(data, "trial_index"),
        shown=tuple(shown),
        chosen_position=position,
        rt_ms=rt_ms,
        client_onset_ms=_onset(data, time.time() * 1000 if now_ms is None else now_ms),
        input_modality=modality,
        timed_out=strict_bool(data, "timed_out"),
        unavailable=strict_bool(data, "unavailable"),
    )


def _onset(data: dict[str, Any], now_ms: float) -> float | None:
    """Epoch ms of the trial's onset (performance.timeOrigin + onset), plausible against the server clock."""
    onset = finite_or_none(data, "client_onset_ms")
    if onset is not None and not now_ms - ONSET_PAST_MS <= onset <= now_ms + ONSET_FUTURE_MS:
        raise BadRequest(
            f"client_onset_ms must be epoch milliseconds near the server's time ({now_ms:.0f}), got {onset!r}"
        )
    return onset


def parse_event(data: dict[str, Any]) -> EventPayload:
    """An interaction event: a client kind, an id to dedupe re-sends, a small detail object."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_KINDS:
        raise BadRequest(f"kind must be one of {sorted(CLIENT_EVENT_KINDS)}, got {_show(kind)}")
    event_id = data.get("client_event_id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID_CHARS:
        raise BadRequest(
            f"client_event_id must be a string of 1-{MAX_EVENT_ID_CHARS} characters, got {_show(event_id)}"
        )
    detail = data.get("detail")
    detail = {} if detail is None else detail
    if not isinstance(detail, dict):
        raise BadRequest(f"detail must be a JSON object or null, got {_show(detail)}")
    size = len(json.dumps(detail).encode())
    if size > MAX_DETAIL_BYTES:
        raise BadRequest(f"detail is {size} bytes as JSON; at most {MAX_DETAIL_BYTES} are stored per event")
    return EventPayload(
        kind=kind,
        client_event_id=event_id,
        trial_index=index_or_none(data, "trial_index"),
        client_time_ms=finite_or_none(data, "client_time_ms"),
        detail=detail,
    )
