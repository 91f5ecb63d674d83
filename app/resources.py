"""Process-wide resources for the Streamlit app, created once per process (st.cache_resource)."""

from __future__ import annotations

import streamlit as st

from common.settings import data_home, ensure_home
from db.engine import Database
from workflows.participant.tokens import TokenKey, warn_if_new_key


@st.cache_resource
def get_db() -> Database:
    """One engine per app process (DATABASE_URL, or the SQLite file under ALIGNLAB_HOME); the data directory
    is created here, once, since the app writes under it (tokens key, generated password, run files)."""
    ensure_home()
    return Database.from_url()


@st.cache_resource
def get_token_key() -> TokenKey:
    """The participant token key, loaded once per process when the server starts (app/server.py) and shared
    by the REST routes and the participant page; a loud warning if it was just created while participants
    exist (their tokens no longer verify)."""
    key = TokenKey.load(data_home())
    warn_if_new_key(key, get_db())
    return key
