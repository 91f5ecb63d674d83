"""Engine and session factory: SQLite (WAL, IMMEDIATE write transactions) or PostgreSQL, same code."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from db.settings import database_url, normalise_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
DATABASE_FILE_MODE = 0o600  # SQLite gives its -wal and -shm files the database file's mode


def make_engine(url: str | None = None, **kwargs) -> Engine:
    """Create an engine for `url` (default: `DATABASE_URL` or the SQLite file under the data dir)."""
    url = normalise_url(url) if url else database_url()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        _create_private_file(engine.url.database)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 40)
    return create_engine(url, **kwargs)


def _create_private_file(database: str | None) -> None:
    """Create a new SQLite file readable only by this user (mode 600) before SQLite creates it with the
    umask's 644: it holds participants' data. An existing file is left as it is."""
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return
    path = Path(database)
    if path.parent.is_dir():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, DATABASE_FILE_MODE))
        except FileExistsError:
            return


def _configure_sqlite(engine: Engine) -> None:
    """WAL, synchronous=NORMAL, busy_timeout, foreign keys; we emit BEGIN ourselves.

    The driver's legacy transaction handling is switched off (isolation_level=None) so that a
    write transaction can start with BEGIN IMMEDIATE: a deferred transaction that reads and then
    writes gets SQLITE_BUSY at once under WAL, whatever the busy timeout.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@dataclass
class Database:
    """One engine plus two session factories: `read()` and `write()` (BEGIN IMMEDIATE on SQLite)."""

    engine: Engine
    _reader: sessionmaker = field(init=False, repr=False)
    _writer: sessionmaker = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        writer_bind = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._writer = sessionmaker(bind=writer_bind, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs) -> Database:
        return cls(make_engine(url, **kwargs))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back (leaving nothing half-written) on error."""
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work; closing it discards anything written (loaded objects stay usable)."""
        with self._reader() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
