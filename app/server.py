"""ASGI entry point: the Streamlit app (app/main.py) plus the participant REST endpoints and the maps page's
map files (workflows/maps/bundle.py).

Run with `streamlit run app/server.py` (Streamlit detects the `App` and serves it with uvicorn). The token
key is loaded here, at start-up, so a key problem is logged before the first participant arrives.
"""

from streamlit.starlette import App

from alignment.maps import start_umap_warmup
from app.participant.blocks import api_prefix
from app.resources import get_db, get_token_key
from workflows.maps.bundle import map_routes
from workflows.participant.api import api_routes

app = App("main.py", routes=api_routes(api_prefix(), get_db, get_token_key()) + map_routes(api_prefix()))
start_umap_warmup()  # compile UMAP in the background once per server process, before anyone opens Maps
