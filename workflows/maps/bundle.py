"""The maps page's interactive maps as files served next to the app, so the page itself stays small.

`write_bundle` writes one map (two representations, method, k, colouring) once, into
``<data dir>/cache/maps/pages/KEY/``: maps.html and thumbs.json (each row's stored thumbnail path). The page
shows it in an iframe whose src is ``{api prefix}/maps/KEY/maps.html``; that HTML loads plotly.min.js and,
for maps of more than EMBED_THUMBNAILS_MAX images, ``thumbs/ROW.jpg`` only when a point is hovered, from
the routes below. KEY is 128 random bits: the researcher page that wrote the bundle is the only one that
knows it (these routes sit beside Streamlit's and cannot see its login). The newest `KEEP_BUNDLES` are
kept on disk.

The download button reads the same maps.html (never a second copy held by the page) and inlines plotly.js
so the downloaded file opens offline.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from db.settings import data_home
from workflows.maps.data import EMBED_THUMBNAILS_MAX, thumbnail_data_uris, thumbnail_file
from workflows.maps.report import PLOTLY_JS, MapFigures, plotly_js_file

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
THUMB_PATTERN = re.compile(r"thumbs/(\d{1,9})\.jpg")
KEEP_BUNDLES = 32
CACHE_CONTROL = "private, max-age=86400"


def bundles_dir() -> Path:
    return data_home() / "cache" / "maps" / "pages"


@dataclass(frozen=True)
class MapBundle:
    key: str
    n_images: int

    @property
    def directory(self) -> Path:
        return bundles_dir() / self.key

    @property
    def html_file(self) -> Path:
        return self.directory / "maps.html"

    def url(self, api_prefix: str) -> str:
        return f"{api_prefix}/maps/{self.key}/maps.html"

    def standalone_html(self) -> bytes:
        """maps.html with plotly.js inlined, for the download button (read on click, from the one file)."""
        page = self.html_file.read_text()
        tag = f'<script charset="utf-8" src="{PLOTLY_JS}"></script>'
        inline = (
            '<script charset="utf-8" type="text/javascript">' + plotly_js_file().read_text() + "</script>"
        )
        return page.replace(tag, inline, 1).encode()


def write_bundle(figures: MapFigures, thumbnail_paths: list[str | None]) -> MapBundle:
    """Write a map's files once; small maps embed their thumbnails, large ones fetch them on hover."""
    bundle = MapBundle(secrets.token_urlsafe(16), len(thumbnail_paths))
    bundle.directory.mkdir(parents=True)
    embedded = thumbnail_data_uris(thumbnail_paths) if len(thumbnail_paths) <= EMBED_THUMBNAILS_MAX else None
    (bundle.directory / "thumbs.json").write_text(json.dumps(thumbnail_paths))
    partial_file = bundle.directory / "maps.html.tmp"
    partial_file.write_text(figures.maps_html(embedded, plotly_js=PLOTLY_JS))
    partial_file.replace(bundle.html_file)
    _forget_old_bundles()
    return bundle


def _forget_old_bundles() -> None:
    folders = sorted(bundles_dir().iterdir(), key=lambda path: path.stat().st_mtime, reverse=True)
    for stale in folders[KEEP_BUNDLES:]:
        shutil.rmtree(stale, ignore_errors=True)


@lru_cache(maxsize=8)
def _thumbnail_paths(key: str) -> list[str | None]:
    return json.loads((bundles_dir() / key / "thumbs.json").read_text())


async def get_map_file(request: Request) -> Response:
    """maps.html, plotly.min.js or thumbs/ROW.jpg of a bundle; 404 JSON for anything else."""
    key, name = request.path_params["key"], request.path_params["name"]
    directory = bundles_dir() / key
    if not KEY_PATTERN.fullmatch(key) or not directory.is_dir():
        return _missing("no such map (maps are kept while the page that drew them is recent)")
    if name == "maps.html":
        return FileResponse(directory / "maps.html", headers={"Cache-Control": CACHE_CONTROL})
    if name == PLOTLY_JS:
        return FileResponse(plotly_js_file(), headers={"Cache-Control": CACHE_CONTROL})
    match = THUMB_PATTERN.fullmatch(name)
    paths = _thumbnail_paths(key) if match else []
    row = int(match.group(1)) if match else -1
    file = thumbnail_file(paths[row]) if 0 <= row < len(paths) else None
    if file is None:
        return _missing(f"{name[:60]!r} is not a file of this map")
    return FileResponse(file, headers={"Cache-Control": CACHE_CONTROL})


def _missing(reason: str) -> JSONResponse:
    return JSONResponse({"status": "error", "reason": reason}, status_code=404)


def map_routes(prefix: str) -> list[Route]:
    """The bundle routes under `prefix` (the app's /api, below server.baseUrlPath)."""
    return [Route(f"{prefix}/maps/{{key}}/{{name:path}}", get_map_file, methods=["GET"])]
