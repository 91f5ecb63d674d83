"""The researcher login gate. Participants never see researcher pages: `?study=` links route elsewhere,
and researcher pages are only added to the navigation after a successful login."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import streamlit as st

from app.resources import get_db
from common.settings import data_home, ensure_home, trusted_proxies
from study.access import attempt_login, client_address, hash_password

GENERATED_PASSWORD_FILE = "researcher_password.txt"


def generated_password_path() -> Path:
    return data_home() / GENERATED_PASSWORD_FILE


@st.cache_resource
def researcher_password_hash() -> str:
    """From ALIGNLAB_RESEARCHER_PASSWORD_HASH, secrets, ALIGNLAB_RESEARCHER_PASSWORD, or a generated file."""
    if os.environ.get("ALIGNLAB_RESEARCHER_PASSWORD_HASH"):
        return os.environ["ALIGNLAB_RESEARCHER_PASSWORD_HASH"]
    try:
        if "researcher_password_hash" in st.secrets:
            return str(st.secrets["researcher_password_hash"])
    except FileNotFoundError:
        pass
    if os.environ.get("ALIGNLAB_RESEARCHER_PASSWORD"):
        return hash_password(os.environ["ALIGNLAB_RESEARCHER_PASSWORD"])
    return hash_password(_generated_password())


def _generated_password() -> str:
    """First run without a configured password: create one, readable only by this machine's user."""
    path = generated_password_path()
    if not path.exists():
        ensure_home()
        path.write_text(secrets.token_urlsafe(12) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def is_researcher() -> bool:
    return bool(st.session_state.get("researcher_logged_in"))


def login_form() -> None:
    st.title("Researcher login")
    _explain_password_source()
    with st.form("login"):
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        result = attempt_login(get_db(), _client(), password, researcher_password_hash())
        if result.ok:
            st.session_state["researcher_logged_in"] = True
            st.rerun()
        st.error(result.message)


def _client() -> str:
    """The real client address (X-Forwarded-For only from ALIGNLAB_TRUSTED_PROXIES; study.access)."""
    peer = st.context.ip_address if isinstance(st.context.ip_address, str) else None
    return client_address(peer, st.context.headers.get("X-Forwarded-For"), trusted_proxies())


def _explain_password_source() -> None:
    configured = os.environ.get("ALIGNLAB_RESEARCHER_PASSWORD_HASH") or os.environ.get(
        "ALIGNLAB_RESEARCHER_PASSWORD"
    )
    if not configured:
        researcher_password_hash()  # on a fresh install this generates the file the hint points to
    if not configured and generated_password_path().exists():
        st.caption(  # the file's name only: this page is public, the server's paths are not
            f"No researcher password is configured, so one was generated on first run: see "
            f"`{GENERATED_PASSWORD_FILE}` in the data directory on the server. Set "
            "ALIGNLAB_RESEARCHER_PASSWORD_HASH (from `alignlab researcher hash-password`) for a real study."
        )


def logout_button() -> None:
    if st.sidebar.button("Log out"):
        st.session_state.pop("researcher_logged_in", None)
        st.rerun()
