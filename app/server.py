"""ASGI entry point: the Streamlit app (app/main.py) plus the participant REST endpoints.

Run with `streamlit run app/server.py` (Streamlit detects the `App` and serves it with uvicorn).
"""

from streamlit.starlette import App

from app.participant.api import api_routes

app = App("main.py", routes=api_routes())
