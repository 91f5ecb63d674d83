"""Engine settings: URL handling, SQLite pragmas, transactions that leave nothing half-written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from db.engine import Database
from db.models import StimulusSet
from db.settings import database_url, normalise_url


def test_postgres_urls_use_psycopg3():
    assert normalise_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_default_database_is_a_sqlite_file_under_alignlab_home(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    assert database_url() == f"sqlite:///{tmp_path / 'home' / 'alignlab.db'}"
    assert (tmp_path / "home").is_dir()


def test_a_new_sqlite_file_and_its_wal_are_readable_only_by_this_user(tmp_path):
    database = Database.from_url(f"sqlite:///{tmp_path / 'private.db'}")
    with database.write() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    assert (tmp_path / "private.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "private.db-wal").stat().st_mode & 0o777 == 0o600
    database.dispose()


def test_database_url_from_environment_is_normalised(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://me@db.example/study")
    assert database_url() == "postgresql+psycopg://me@db.example/study"


def test_sqlite_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys(db):
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_write_transactions_begin_immediate_on_sqlite(db):
    """A second writer cannot start while one holds the write lock: proof the BEGIN was IMMEDIATE."""
    import sqlite3

    raw = sqlite3.connect(db.engine.url.database, timeout=0.05)
    with db.write() as session:
        session.execute(select(func.count()).select_from(StimulusSet))  # a read: lock already held
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            raw.execute("BEGIN IMMEDIATE")
    raw.execute("BEGIN IMMEDIATE")  # free again after commit
    raw.rollback()
    raw.close()


def test_failed_write_leaves_nothing_behind(any_db: Database):
    with pytest.raises(RuntimeError), any_db.write() as session:
        session.add(StimulusSet(name="half-written"))
        session.flush()
        raise RuntimeError("boom")
    with any_db.read() as session:
        assert session.scalar(select(func.count()).select_from(StimulusSet)) == 0
