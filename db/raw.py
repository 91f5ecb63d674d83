"""Rows straight from the database driver, a batch at a time, for the few readers that move a whole study
(QC, human agreement, exports over a million answers): there, building a SQLAlchemy row with per-value type
conversion costs more than the query itself. The query is still written with SQLAlchemy (one definition of
which rows count, e.g. `study.judgments.analysed_participant`), compiled with its literal values for the
engine's dialect, and run on the driver's cursor: SQLite and PostgreSQL alike (PostgreSQL through a
server-side cursor, so a batch, not the whole result, is in memory).

Values arrive as the driver gives them: SQLite booleans as 0/1 and timestamps as ISO text, PostgreSQL
booleans as bool and timestamps as datetimes; callers select plain numbers and text (CASE in SQL), or
convert whole columns at once.

`sqlite_arrow_reader` reads a SQLite database as Arrow record batches through the ADBC SQLite driver (no
Python object per value, the interpreter lock released while it reads): about twice the rows per second of
`driver_batches` for a study's million answers. It is optional: where it cannot run (PostgreSQL, an
in-memory database, the driver not installed) it gives None, and where it fails to read a statement it
raises `ArrowReadFailed`; either way the caller reads through `driver_batches`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

DRIVER_BATCH_ROWS = 50_000
_CURSOR_NUMBERS = itertools.count()  # server-side cursors need names unique on their connection


def driver_sql(session: Session, statement: Select) -> str:
    """The statement as SQL text for the session's dialect, its values written in (integers and short text
    from the code and the database, never raw user input: the ids and enum values of a study)."""
    dialect = session.get_bind().dialect
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def driver_batches(
    session: Session, statement: Select, batch_rows: int = DRIVER_BATCH_ROWS
) -> Iterator[Sequence[Any]]:
    """The statement's rows as plain tuples from the driver's cursor, `batch_rows` at a time (on the session's
    own connection and transaction; PostgreSQL through a named, server-side cursor)."""
    connection = session.connection()
    driver = connection.connection  # the DBAPI connection the session's transaction runs on
    if connection.dialect.name == "postgresql":
        cursor = driver.cursor(name=f"alignlab_rows_{next(_CURSOR_NUMBERS)}")
    else:
        cursor = driver.cursor()
    try:
        cursor.execute(driver_sql(session, statement))
        while batch := cursor.fetchmany(batch_rows):
            yield batch
    finally:
        cursor.close()


ARROW_BATCH_ROWS_OPTION = "adbc.sqlite.query.batch_rows"
_WHOLE_RESULT_ROWS = 2**30  # one batch for a whole (small) result: the driver types it from every row


class ArrowReadFailed(Exception):
    """The Arrow reader could not read a statement: a column the driver typed from its first batch (all
    NULL there: int64) holds another type later, or any other driver error. Nothing read is kept; the
    caller reads again through `driver_batches`."""


@dataclass(frozen=True)
class ArrowReader:
    """Statements of a session's dialect run on an ADBC SQLite connection to the same database file, all in
    the connection's one read transaction (opened by the driver, its snapshot taken at the first read): what
    one export reads through it comes from one consistent state of the database."""

    connection: Any  # adbc_driver_sqlite.dbapi.Connection
    session: Session  # compiles the statements (`driver_sql`); nothing is read on it

    def batches(self, statement: Select, batch_rows: int = DRIVER_BATCH_ROWS) -> Iterator[Any]:
        """The statement's rows as pyarrow RecordBatches of `batch_rows` rows, each column typed from the
        first batch (integers int64, reals double, text string; a column NULL throughout it: int64, so a
        nullable REAL column must not be selected bare); a driver failure raises `ArrowReadFailed`."""
        with self._executed(statement, batch_rows) as reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except Exception as error:  # e.g. OSError "[SQLite] Type mismatch in column 0"
                    raise ArrowReadFailed(str(error)) from error
                yield batch

    def table(self, statement: Select) -> Any:
        """All of the statement's rows as one pyarrow Table, typed from every row (one batch; no rows: the
        columns, typed int64)."""
        with self._executed(statement, _WHOLE_RESULT_ROWS) as reader:
            try:
                return reader.read_all()
            except Exception as error:
                raise ArrowReadFailed(str(error)) from error

    @contextmanager
    def _executed(self, statement: Select, batch_rows: int) -> Iterator[Any]:
        """The statement run on a new cursor: its pyarrow RecordBatchReader, the cursor closed after."""
        cursor = self.connection.cursor()
        try:
            try:
                cursor.adbc_statement.set_options(**{ARROW_BATCH_ROWS_OPTION: str(batch_rows)})
                cursor.execute(driver_sql(self.session, statement))
                reader = cursor.fetch_record_batch()
            except Exception as error:
                raise ArrowReadFailed(str(error)) from error
            yield reader
        finally:
            cursor.close()


@contextmanager
def sqlite_arrow_reader(session: Session) -> Iterator[ArrowReader | None]:
    """An `ArrowReader` on the session's SQLite database file, closed (its read transaction ended) on
    exit; None for PostgreSQL, an in-memory database, or where `adbc_driver_sqlite` is not installed."""
    connection = _adbc_connection(session)
    if connection is None:
        yield None
        return
    try:
        yield ArrowReader(connection, session)
    finally:
        connection.close()


def _adbc_connection(session: Session) -> Any:
    bind = session.get_bind()
    path = bind.engine.url.database  # an Engine, or a Connection of one
    if bind.dialect.name != "sqlite" or path is None or path in ("", ":memory:") or path.startswith("file:"):
        return None
    try:
        import adbc_driver_sqlite.dbapi as adbc_sqlite
    except ImportError:
        return None
    try:
        return adbc_sqlite.connect(path)  # autocommit off: the driver's one transaction until close
    except Exception:  # noqa: BLE001 - any driver failure: the caller reads through `driver_batches`
        return None
