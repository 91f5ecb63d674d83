"""The Arrow reader (`db.raw.sqlite_arrow_reader`): one read transaction on the session's SQLite file, a
failure as `ArrowReadFailed`, nothing where it cannot run."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import StimulusSet
from db.raw import ArrowReadFailed, sqlite_arrow_reader


def _add_set(db, name: str) -> None:
    with db.write() as session:
        session.add(StimulusSet(name=name))


def test_every_read_of_one_arrow_reader_sees_one_state_of_the_database(db):
    _add_set(db, "first")
    count = select(func.count().label("n")).select_from(StimulusSet)
    with db.read() as session, sqlite_arrow_reader(session) as reader:
        assert reader is not None
        assert reader.table(count).column("n").to_pylist() == [1]
        _add_set(db, "written meanwhile")  # committed by another connection
        assert reader.table(count).column("n").to_pylist() == [1]
        assert [batch.num_rows for batch in reader.batches(select(StimulusSet.name), 1)] == [1]
    with db.read() as session, sqlite_arrow_reader(session) as reader:
        assert reader is not None and reader.table(count).column("n").to_pylist() == [2]


def test_a_column_typed_from_its_first_batch_fails_as_arrow_read_failed(db):
    _add_set(db, "a")
    _add_set(db, "b")
    real_after_null = select(
        func.nullif(StimulusSet.id * 1.5, 1.5).label("x")  # NULL in the first row, a real in the second
    ).order_by(StimulusSet.id)
    with db.read() as session, sqlite_arrow_reader(session) as reader:
        assert reader is not None
        assert reader.table(real_after_null).column("x").to_pylist() == [None, 3.0]  # one batch: typed whole
        with pytest.raises(ArrowReadFailed, match="Type mismatch"):
            list(reader.batches(real_after_null, 1))


def test_no_arrow_reader_for_postgresql_or_a_memory_database(pg_db):
    from db.engine import Database
    from db.models import Base

    memory = Database.from_url("sqlite://")
    Base.metadata.create_all(memory.engine)
    for database in (pg_db, memory):
        with database.read() as session, sqlite_arrow_reader(session) as reader:
            assert reader is None
