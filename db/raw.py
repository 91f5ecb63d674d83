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

from collections.abc import Iterator

from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

DRIVER_BATCH_ROWS = 50_000


def driver_sql(session: Session, statement: Select) -> str:
    """The statement as SQL text for the session's dialect, its values written in (integers and short text
    from the code and the database, never raw user input: the ids and enum values of a study)."""
    dialect = session.get_bind().dialect
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def driver_batches(
    session: Session, statement: Select, batch_rows: int = DRIVER_BATCH_ROWS
) -> Iterator[list[tuple]]:
    """The statement's rows as plain tuples from the driver's cursor, `batch_rows` at a time."""
    connection = session.connection().execution_options(stream_results=True)
    result = connection.exec_driver_sql(driver_sql(session, statement))
    cursor = result.cursor
    try:
        while batch := cursor.fetchmany(batch_rows):
            yield batch
    finally:
        result.close()
