"""The two custom components (Streamlit components v2, inline JS/CSS, no build step): the trial block and
the session monitor. Their JavaScript lives in ./web and is read when the component is first registered."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import streamlit as st

WEB = Path(__file__).with_name("web")
TRIAL_BLOCK_KEY = "trial_block"
MONITOR_KEY = "session_monitor"


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


def _ignore() -> None:
    """Trigger values are read from the mount's result; registering a callback makes them visible."""


def trial_block(data: dict[str, Any]) -> Any:
    """Mount the block; returns the result whose `block_done` / `early_exit` is set on the rerun after one."""
    return _trial_block()(
        key=TRIAL_BLOCK_KEY, data=data, on_block_done_change=_ignore, on_early_exit_change=_ignore
    )


def session_monitor(data: dict[str, Any]) -> None:
    _session_monitor()(key=MONITOR_KEY, data=data, height=0)
