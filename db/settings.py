"""Which database AlignLab talks to (read from the environment). The data directory itself is
`common.settings` (re-exported here for the layers above)."""

from __future__ import annotations

import os

from common.settings import data_home, ensure_home

SQLITE_FILENAME = "alignlab.db"

__all__ = ["SQLITE_FILENAME", "data_home", "database_url", "ensure_home", "normalise_url"]


def database_url() -> str:
    """`DATABASE_URL` if set, else a SQLite file under the data directory (created here, since the
    database file cannot be opened in a missing folder; this runs once per engine, not per path lookup)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    return normalise_url(url) if url else f"sqlite:///{ensure_home() / SQLITE_FILENAME}"


def normalise_url(url: str) -> str:
    """Map Heroku-style `postgres://` and bare `postgresql://` onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
