"""Where AlignLab keeps its data and which database it talks to (read from the environment)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "data"
SQLITE_FILENAME = "alignlab.db"


def data_home() -> Path:
    """The data directory (`ALIGNLAB_HOME`, default `./data`); created on first use."""
    home = Path(os.environ.get("ALIGNLAB_HOME", DEFAULT_HOME)).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url() -> str:
    """`DATABASE_URL` if set, else a SQLite file under the data directory."""
    url = os.environ.get("DATABASE_URL", "").strip()
    return normalise_url(url) if url else f"sqlite:///{data_home() / SQLITE_FILENAME}"


def normalise_url(url: str) -> str:
    """Map Heroku-style `postgres://` and bare `postgresql://` onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
