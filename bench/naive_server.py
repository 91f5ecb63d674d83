"""ASGI entry for the naive one-rerun-per-trial page (bench/naive_trial_app.py) plus the image endpoint."""

from streamlit.starlette import App

from app.participant.blocks import api_prefix
from app.resources import get_db, get_token_key
from workflows.participant.api import api_routes

app = App("naive_trial_app.py", routes=api_routes(api_prefix(), get_db, get_token_key()))
