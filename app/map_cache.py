"""Cached computations behind the maps page: a rerun (a click, a colour change) never recomputes a map.

Keys are plain values (database URL, "RUN:ARTIFACT" references, method, seed, k), so every browser
session of one server process shares the results. The 2-D maps depend only on the two
representations, the method and the seed; neighbourhoods only on k; figures on the colouring.
UMAP's numba compilation is paid once per process (`umap_ready`). Beyond the process, each
representation's neighbour search and 2-D layout are kept on disk (workflows.maps.data.map_cache_dir),
so a restarted server maps the same representations without fitting again. The interactive maps are
files served beside the app (workflows.maps.bundle), written once per map.
"""

from __future__ import annotations

import streamlit as st

from alignment import maps as map_engine
from alignment.maps import MapConfig, PairedMaps
from alignment.neighbours import Neighbours
from alignment.reorganisation import Reorganisation
from app.resources import get_db
from workflows.maps.analysis import (
    HumanComparison,
    analyse_reorganisation,
    compare_with_humans,
    representation_neighbours,
)
from workflows.maps.bundle import MapBundle, write_bundle
from workflows.maps.data import (
    MapInputs,
    load_human_judgments,
    load_map_inputs,
    map_cache_dir,
    mappable_representations,
    resolve_representation,
    thumbnail_data_uris,
)
from workflows.maps.report import MapFigures, build_figures


@st.cache_resource(show_spinner="Compiling UMAP for this server process (once, up to a minute)…")
def umap_ready() -> float:
    """Seconds the one-off UMAP compilation took in this process."""
    return map_engine.warm_umap()


@st.cache_data(max_entries=16, show_spinner=False)
def layouts_on_disk(database_url: str, before: str, after: str, method: str, seed: int) -> bool:
    """Both 2-D layouts were fitted before (by any process): the page need not compile UMAP to show them."""
    inputs, config = map_inputs(database_url, before, after), MapConfig(method=method, seed=seed)
    return all(
        map_engine.layout_cached(x, config, map_cache_dir())
        for x in (inputs.before.embeddings, inputs.after.embeddings)
    )


@st.cache_data(ttl=30, show_spinner=False)
def representations(database_url: str) -> list[tuple[str, str]]:
    return mappable_representations(get_db())


@st.cache_resource(max_entries=8, show_spinner="Loading embeddings…")
def map_inputs(database_url: str, before: str, after: str) -> MapInputs:
    """Shared, not copied, per rerun (arrays can be large); treat as read-only."""
    db = get_db()
    return load_map_inputs(db, resolve_representation(db, before), resolve_representation(db, after))


@st.cache_resource(max_entries=8, show_spinner="Finding each image's nearest neighbours…")
def neighbours(database_url: str, before: str, after: str) -> tuple[Neighbours, Neighbours]:
    """Searched once per pair of representations, for every k of the slider and for UMAP; read-only."""
    return representation_neighbours(map_inputs(database_url, before, after), cache_dir=map_cache_dir())


@st.cache_data(max_entries=16, show_spinner="Computing the two maps…")
def paired_maps(database_url: str, before: str, after: str, method: str, seed: int) -> PairedMaps:
    inputs = map_inputs(database_url, before, after)
    return map_engine.paired_maps(
        inputs.before.embeddings,
        inputs.after.embeddings,
        MapConfig(method=method, seed=seed),
        neighbours=neighbours(database_url, before, after) if method == "umap" else None,
        cache_dir=map_cache_dir(),
    )


@st.cache_resource(max_entries=16, show_spinner="Comparing neighbourhoods…")
def reorganisation(database_url: str, before: str, after: str, k: int) -> Reorganisation:
    """Shared read-only (its neighbour arrays are large)."""
    inputs = map_inputs(database_url, before, after)
    return analyse_reorganisation(inputs, k, neighbours(database_url, before, after))


@st.cache_data(max_entries=8, show_spinner="Comparing with human judgments…")
def human_comparison(database_url: str, before: str, after: str) -> HumanComparison | None:
    inputs = map_inputs(database_url, before, after)
    study_id = inputs.after.study_id or inputs.before.study_id
    judgments = load_human_judgments(get_db(), study_id, inputs.before.stimulus_ids)
    return compare_with_humans(inputs, judgments) if judgments else None


@st.cache_data(max_entries=64, show_spinner=False)
def thumbnails(database_url: str, before: str, after: str, rows: tuple[int, ...]) -> dict[int, str]:
    """Data URIs of the given map rows only (the page shows a few dozen images, never all)."""
    paths = map_inputs(database_url, before, after).stimuli["thumbnail_path"].iloc[list(rows)].tolist()
    return dict(zip(rows, thumbnail_data_uris(paths), strict=True))


@st.cache_resource(max_entries=16, show_spinner=False)
def figures(
    database_url: str, before: str, after: str, method: str, seed: int, k: int, colour_by: str
) -> MapFigures:
    """Built once per (inputs, map, k, colouring); shared read-only across sessions."""
    inputs = map_inputs(database_url, before, after)
    return build_figures(
        inputs,
        paired_maps(database_url, before, after, method, seed),
        reorganisation(database_url, before, after, k),
        human_comparison(database_url, before, after),
        colour_by,
    )


@st.cache_resource(max_entries=16, show_spinner="Writing the interactive maps…")
def map_bundle(
    database_url: str, before: str, after: str, method: str, seed: int, k: int, colour_by: str
) -> MapBundle:
    """The two maps as a page served beside the app, written once (see workflows/maps/bundle.py)."""
    built = figures(database_url, before, after, method, seed, k, colour_by)
    paths = map_inputs(database_url, before, after).stimuli["thumbnail_path"].tolist()
    return write_bundle(built, paths)
