"""One-shot messages that survive the rerun that follows an action (st.rerun would drop st.success)."""

from __future__ import annotations

import streamlit as st

KEY = "_flash_messages"


def flash(message: str, kind: str = "success") -> None:
    st.session_state.setdefault(KEY, []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop(KEY, []):
        getattr(st, kind)(message)
