"""Maps of many images stay small: no embedded thumbnails above the threshold, a bounded number of bytes per
image, and the thumbnails and plotly.js served by the bundle routes only when asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from alignment.maps import MapConfig, paired_maps
from workflows.maps.analysis import analyse_reorganisation
from workflows.maps.bundle import map_routes, write_bundle
from workflows.maps.data import EMBED_THUMBNAILS_MAX, MapInputs, RunEmbeddings
from workflows.maps.report import build_figures

N_LARGE = EMBED_THUMBNAILS_MAX + 500
BYTES_PER_IMAGE = 160  # names, labels, overlap, 2 x 5 neighbour rows, float32 coordinates (measured ~110)


def _inputs(n: int) -> MapInputs:
    rng = np.random.default_rng(0)
    category = rng.integers(0, 20, n)
    centres = rng.normal(size=(2, 20, 24))
    before = (centres[0][category] + rng.normal(size=(n, 24))).astype(np.float32)
    after = (centres[1][category] + rng.normal(size=(n, 24))).astype(np.float32)
    ids = np.arange(1, n + 1)
    stimuli = pd.DataFrame(
        {
            "id": ids,
            "name": [f"c{c}/{i}.jpg" for i, c in enumerate(category)],
            "category": [f"c{c}" for c in category],
            "superordinate": [f"s{c % 4}" for c in category],
            "thumbnail_path": [f"thumbs/{i}.jpg" for i in range(n)],
        }
    )
    return MapInputs(
        RunEmbeddings(1, "#1 base", None, before, ids),
        RunEmbeddings(2, "#2 aligned", None, after, ids),
        stimuli,
    )


@pytest.fixture
def large_map(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path))
    (tmp_path / "thumbs").mkdir()
    for row in (0, 7):
        Image.new("RGB", (16, 16), (row * 30, 90, 20)).save(tmp_path / "thumbs" / f"{row}.jpg")
    inputs = _inputs(N_LARGE)
    maps = paired_maps(inputs.before.embeddings, inputs.after.embeddings, MapConfig(method="pca"))
    figures = build_figures(inputs, maps, analyse_reorganisation(inputs, 10), None)
    return tmp_path, figures, write_bundle(figures, inputs.stimuli["thumbnail_path"].tolist())


def test_a_large_map_embeds_no_thumbnails_and_stays_within_its_bytes_per_image(large_map):
    _, figures, bundle = large_map
    page = bundle.html_file.read_text()
    assert "data:image" not in page and "thumbs/" in page
    assert "scattergl" in page  # WebGL markers above the SVG limit
    assert 'src="plotly.min.js"' in page and len(page) < N_LARGE * BYTES_PER_IMAGE + 60_000
    assert "c0/0.jpg" not in page.split("scattergl")[0]  # no per-point hover strings in the traces
    standalone = bundle.standalone_html()
    assert b'src="plotly.min.js"' not in standalone and len(standalone) > len(page) + 3_000_000


def test_the_routes_serve_the_map_its_thumbnails_and_plotly_and_nothing_else(large_map):
    home, _, bundle = large_map
    client = TestClient(Starlette(routes=map_routes("/api")))
    base = f"/api/maps/{bundle.key}"
    assert client.get(f"{base}/maps.html").text == bundle.html_file.read_text()
    assert client.get(f"{base}/plotly.min.js").text.startswith("/**")
    assert client.get(f"{base}/thumbs/7.jpg").content == (home / "thumbs" / "7.jpg").read_bytes()
    for missing in ("thumbs/3.jpg", f"thumbs/{N_LARGE}.jpg", "thumbs.json", "../../../alignlab.db"):
        assert client.get(f"{base}/{missing}").status_code == 404, missing
    assert client.get("/api/maps/AAAAAAAAAAAAAAAAAAAAAA/maps.html").status_code == 404  # unknown key
    assert client.get("/api/maps/..%2F..%2Fx/maps.html").status_code == 404
