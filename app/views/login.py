"""Researcher login page."""

from app.auth import login_form

login_form()
