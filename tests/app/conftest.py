"""App-test fixtures: a private data directory and database, and a known researcher password."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from db.engine import Database
from db.models import Base
from study.stimuli import import_stimulus_set

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
    from app.resources import get_db, get_token_key

    get_db.clear()
    get_token_key.clear()
    researcher_password_hash.clear()
    return tmp_path


@pytest.fixture
def stimulus_set(app_home, tmp_path_factory):
    """A small real import: 3 superordinates x 2 categories x 4 generated images."""
    folder = tmp_path_factory.mktemp("images")
    colours = iter(range(0, 250, 10))
    for sup in ("animal", "food", "tool"):
        for cat in ("a", "b"):
            (folder / sup / f"{sup}-{cat}").mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), (next(colours), 80 + 10 * i, 120)).save(
                    folder / sup / f"{sup}-{cat}" / f"{i}.png"
                )
    db = Database.from_url()
    import_stimulus_set(db, folder, "toy set")
    return db
