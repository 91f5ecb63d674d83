"""Checking the JSON a trial component sends (over REST or inside a trigger) before it reaches the service."""

from __future__ import annotations

import math
from typing import Any

from study.participation import ResponsePayload


class BadRequest(ValueError):
    pass


def finite_or_none(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number or null, got {value!r}")
    return float(value)


def parse_response(data: dict[str, Any]) -> ResponsePayload:
    """The JSON a component sends, checked for shape; plan checks happen in record_response."""
    shown = data.get("shown")
    if not (isinstance(shown, list) and len(shown) == 3 and all(type(i) is int for i in shown)):
        raise BadRequest(f"shown must be a list of three stimulus ids, got {shown!r}")
    trial_index, position = data.get("trial_index"), data.get("chosen_position")
    if type(trial_index) is not int:
        raise BadRequest(f"trial_index must be an integer, got {trial_index!r}")
    if position is not None and type(position) is not int:
        raise BadRequest(f"chosen_position must be 0, 1, 2 or null, got {position!r}")
    return ResponsePayload(
        trial_index=trial_index,
        shown=tuple(shown),
        chosen_position=position,
        rt_ms=finite_or_none(data, "rt_ms"),
        client_onset_ms=finite_or_none(data, "client_onset_ms"),
        input_modality=str(data.get("input_modality", "mouse"))[:16],
        timed_out=bool(data.get("timed_out", False)),
    )
