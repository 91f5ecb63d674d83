"""Shared fixtures: a fresh SQLite database per test, and a real PostgreSQL server per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from db.engine import Database  # noqa: E402
from db.models import Base  # noqa: E402
from tests.support.pg_temp import TemporaryPostgres  # noqa: E402


@pytest.fixture
def db(tmp_path) -> Database:
    """A file-backed SQLite database with the current schema (create_all: fast; migrations are tested
    apart)."""
    database = Database.from_url(f"sqlite:///{tmp_path / 'test.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL cluster for the whole test session (Debian's binaries, loopback)."""
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture
def pg_db(postgres_server) -> Database:
    """A PostgreSQL database with the current schema, emptied after the test."""
    database = Database.from_url(postgres_server.url)
    Base.metadata.create_all(database.engine)
    yield database
    Base.metadata.drop_all(database.engine)
    database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(request, tmp_path) -> Database:
    """The same test against SQLite and against the real PostgreSQL server."""
    if request.param == "sqlite":
        yield request.getfixturevalue("db")
    else:
        yield request.getfixturevalue("pg_db")
