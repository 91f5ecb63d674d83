"""Rows straight from the database driver, a batch at a time, for the few readers that move a whole study
(QC, human agreement, exports over a million answers): there, building a SQLAlchemy row with per-value type
conversion costs more than the query itself. The query is still written with SQLAlchemy (one definition of
which rows count, e.g. `study.judgments.analysed_participant`), compiled with its literal values for the
engine's dialect, and run on the driver's cursor: SQLite and PostgreSQL alike (PostgreSQL through a
server-side cursor, so a batch, not the whole result, is in memory).

Values arrive as the driver gives them: SQLite booleans as 0/1 and timestamps as ISO text, PostgreSQL
booleans as bool and timestamps as datetimes; callers select plain numbers and text (CASE in SQL), or
convert whole columns at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
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
