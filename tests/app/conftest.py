"""App-test fixtures: a private data directory and database, and a known researcher password."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.engine import Database
from db.models import Base

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
RESEARCHER_PASSWORD = "s3cret-pass"


@pytest.fixture
def app_home(tmp_path, monkeypatch) -> Path:
    """ALIGNLAB_HOME in tmp with a migrated SQLite database; cached app resources reset."""
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ALIGNLAB_RESEARCHER_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("ALIGNLAB_RESEARCHER_PASSWORD", RESEARCHER_PASSWORD)
    database = Database.from_url()
    Base.metadata.create_all(database.engine)
    database.dispose()
    from app.auth import researcher_password_hash
    from app.resources import get_db

    get_db.clear()
    researcher_password_hash.clear()
    return tmp_path
