"""Process-wide resources for the Streamlit app, created once per process (st.cache_resource)."""

from __future__ import annotations

import streamlit as st

from common.settings import ensure_home
from db.engine import Database


@st.cache_resource
def get_db() -> Database:
    """One engine per app process (DATABASE_URL, or the SQLite file under ALIGNLAB_HOME); the data directory
    is created here, once, since the app writes under it (tokens key, generated password, run files)."""
    ensure_home()
    return Database.from_url()
