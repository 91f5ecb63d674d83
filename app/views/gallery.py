"""Public gallery (only when the researcher sets ALIGNLAB_PUBLIC_GALLERY=1): the latest maps, read-only.

Shows where the images lie before and after alignment and nothing else: no human judgments or results (RSA,
response times, evaluation), no downloads, no server paths. Everything here is computed by the cached
functions the Maps page uses, except the human comparison, which is never asked for.
"""

from __future__ import annotations

import streamlit as st

from app import map_cache
from app.resources import get_db
from db.settings import database_url
from workflows.maps.report import build_figures
from workflows.pipeline.loop import latest_loop


def gallery_pair(options: list[tuple[str, str]]) -> tuple[str, str]:
    """The latest closed loop's base features vs its AligNet student, else the two newest representations."""
    refs = [ref for ref, _ in options]
    loop = latest_loop(get_db())
    if loop:
        pair = (f"{loop.metrics['teacher_run']}:raw_embeddings", f"{loop.metrics['alignet_run']}:embeddings")
        if all(ref in refs for ref in pair):
            return pair
    return refs[1], refs[0]


@st.cache_resource(max_entries=4, show_spinner="Drawing the maps…")
def gallery_html(url: str, before: str, after: str, method: str) -> str:
    """The two maps with hover thumbnails, built without any human comparison."""
    inputs = map_cache.map_inputs(url, before, after)
    built = build_figures(
        inputs,
        map_cache.paired_maps(url, before, after, method, 0),
        map_cache.reorganisation(url, before, after, 10),
        None,
    )
    rows = tuple(range(len(built.points)))  # the gallery is for small sets: every thumbnail embedded
    thumbs = map_cache.thumbnails(url, before, after, rows)
    return built.maps_html([thumbs[row] for row in rows], plotly_js=True)


st.title("Gallery")
st.caption("The same images under a model's representation before and after alignment with human judgments.")
url = database_url()
options = map_cache.representations(url)
if len(options) < 2:
    st.info("Nothing to show yet.")
    st.stop()
before, after = gallery_pair(options)
method = st.radio("Map", ("pca", "umap"), format_func=str.upper, horizontal=True, key="gallery_method")
if method == "umap":
    map_cache.umap_ready()
try:
    st.iframe(gallery_html(url, before, after, method), height=600)
except (ValueError, LookupError, FileNotFoundError):
    st.info("The maps cannot be drawn right now.")  # details (paths) are for the researcher's Maps page
