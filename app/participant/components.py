"""The custom components (Streamlit components v2, inline JS/CSS, no build step): the trial block, the
session monitor and the device check. Their JavaScript lives in ./web and is read when the component is
first registered."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import streamlit as st

WEB = Path(__file__).with_name("web")
TRIAL_BLOCK_KEY = "trial_block"
MONITOR_KEY = "session_monitor"
DEVICE_CHECK_KEY = "device_check"


def _source(*names: str) -> str:
    return "\n".join((WEB / name).read_text() for name in names)


@cache
def _trial_block():
    return st.components.v2.component(
        "alignlab_trial_block", js=_source("outbox.js", "trial_block.js"), css=_source("trial_block.css")
    )


@cache
def _session_monitor():
    return st.components.v2.component(
        "alignlab_session_monitor", js=_source("outbox.js", "session_monitor.js")
    )


@cache
def _device_check():
    return st.components.v2.component("alignlab_device_check", js=_source("device_check.js"))


def _ignore() -> None:
    """Trigger values are read from the mount's result; registering a callback makes them visible."""


def trial_block(data: dict[str, Any]) -> Any:
    """Mount the block; returns the result whose `block_done` / `early_exit` is set on the rerun after one."""
    return _trial_block()(
        key=TRIAL_BLOCK_KEY, data=data, on_block_done_change=_ignore, on_early_exit_change=_ignore
    )


def session_monitor(data: dict[str, Any]) -> None:
    _session_monitor()(key=MONITOR_KEY, data=data, height=0)


def device_facts() -> dict[str, Any] | None:
    """What the browser reports about its device and window (None until the first report arrives; each
    report, also after a resize, reruns the page)."""
    result = _device_check()(key=DEVICE_CHECK_KEY, height=0, on_facts_change=_ignore)
    facts = getattr(result, "facts", None)
    return facts if isinstance(facts, dict) else None
