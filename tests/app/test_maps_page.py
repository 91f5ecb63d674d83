"""The maps page: two runs -> summary, hover-thumbnail maps, moved-most table with a linked image panel;
reruns and colour changes never recompute a map (counted), and it says what to do without runs. The maps
themselves are files served beside the app (workflows/maps/bundle.py): the page carries only their URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import alignment.maps
from app import map_cache
from db.engine import Database
from tests.support.map_fixtures import make_fake_runs
from workflows.maps.bundle import bundles_dir

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "views" / "maps.py")
CACHED = (
    "representations",
    "map_inputs",
    "layouts_on_disk",
    "neighbours",
    "paired_maps",
    "reorganisation",
    "human_comparison",
    "thumbnails",
    "figures",
    "map_bundle",
)


@pytest.fixture
def page_with_runs(app_home):
    for name in CACHED:
        getattr(map_cache, name).clear()
    db = Database.from_url()
    fake = make_fake_runs(db, app_home)
    db.dispose()
    return fake


@pytest.fixture
def embed_calls(monkeypatch) -> list[str]:
    """Every 2-D embedding computed in this process during the test, by method."""
    calls: list[str] = []
    real = alignment.maps.embed_2d

    def counting(embeddings, config, neighbours=None):
        calls.append(config.method)
        return real(embeddings, config, neighbours)

    monkeypatch.setattr(alignment.maps, "embed_2d", counting)
    return calls


def _open(method: str = "pca", timeout: float = 120) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=timeout)
    at.session_state["map_method"] = method
    return at.run()


def _maps_file(at: AppTest) -> Path:
    """The maps.html the page's iframe loads (the bundle route serves it from the data directory)."""
    src = at.get("iframe")[0].proto.src
    assert not at.get("iframe")[0].proto.srcdoc  # the map is not sent inside the page
    return bundles_dir() / src.split("/")[-2] / "maps.html"


def test_page_shows_summary_maps_with_hover_thumbnails_and_figures(page_with_runs):
    at = _open()
    assert not at.exception, at.exception
    summary = at.dataframe[0].value.set_index("measure")
    assert (
        summary.loc["category knn purity", "after"]
        == 1.0
        > 0.4
        > summary.loc["category knn purity", "before"]
    )
    maps_html = _maps_file(at).read_text()
    assert "alignlab-hover-thumb" in maps_html and maps_html.count("data:image/jpeg;base64,") == 80
    assert at.get("iframe")[0].proto.src.startswith("/api/maps/")
    assert len(at.get("plotly_chart")) == 4  # moved most, cluster quality, RSA heatmaps, entropy vs RT


def test_reruns_and_colour_changes_never_recompute_the_maps(page_with_runs, embed_calls):
    at = _open()
    assert embed_calls == ["pca", "pca"]  # before and after, once
    at.run()
    at.radio(key="map_colour").set_value("superordinate").run()
    at.slider(key="map_k").set_value(5).run()
    assert not at.exception
    assert embed_calls == ["pca", "pca"]
    second_session = _open()  # another browser session of the same server process shares the cache
    assert not second_session.exception and embed_calls == ["pca", "pca"]


def test_selecting_a_moved_image_shows_it_with_its_neighbours_before_and_after(page_with_runs):
    at = _open()
    moved = at.dataframe[1].value
    assert list(moved.columns[:3]) == ["thumbnail", "name", "category"]
    assert moved["thumbnail"].str.startswith("data:image/jpeg;base64,").all()
    assert any("Select a row" in caption.value for caption in at.caption)
    # AppTest cannot click a dataframe row: set the selection state the frontend would send
    at.session_state["moved_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert [c.value for c in at.caption if c.value.startswith("Nearest neighbours")] == [
        "Nearest neighbours before",
        "Nearest neighbours after",
    ]
    assert len(at.get("image")) == 1 + 5 + 5  # the image, then 5 neighbours before and 5 after


def test_without_two_mapped_runs_the_page_says_how_to_get_them(app_home):
    map_cache.representations.clear()
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert "need two runs" in at.info[0].value


@pytest.mark.slow
def test_umap_is_compiled_once_and_a_rerun_costs_no_embedding(page_with_runs, embed_calls, monkeypatch):
    map_cache.umap_ready.clear()  # as in a freshly started server
    monkeypatch.setattr(alignment.maps, "_umap_warm_seconds", [])
    fits = []
    real_fit = alignment.maps._umap_2d
    monkeypatch.setattr(
        alignment.maps, "_umap_2d", lambda x, config, nb=None: fits.append(len(x)) or real_fit(x, config, nb)
    )
    at = _open("umap", timeout=900)  # compiles UMAP: a minute on a loaded 2-core machine
    at.run()
    assert not at.exception and embed_calls == ["umap", "umap"]  # the rerun computed no embedding
    assert fits == [64, 80, 80]  # one compile (warm-up fit), then the before and after maps, once each
    for name in CACHED:  # a restarted server: the layouts are read back from disk, not fitted again
        getattr(map_cache, name).clear()
    assert not _open("umap", timeout=900).exception and fits == [64, 80, 80]
