"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db.engine import make_engine
from db.migrate import current_revision, upgrade
from db.models import Base


def _schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_sqlite_migrations_match_models_and_are_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(url)
    upgrade(url)  # a second upgrade is a no-op
    assert current_revision(url) is not None
    assert _schema_differences(url) == []


@pytest.mark.postgres
def test_postgres_migrations_match_models(postgres_server):
    from sqlalchemy import text

    engine = make_engine(postgres_server.url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    upgrade(postgres_server.url)
    assert _schema_differences(postgres_server.url) == []
    engine = make_engine(postgres_server.url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def test_cli_db_upgrade_creates_the_default_sqlite_file(tmp_path):
    env = {"ALIGNLAB_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "schema up to date" in result.stdout
    assert (tmp_path / "home" / "alignlab.db").is_file()
