"""16 threads x 200 read-then-insert transactions lose nothing and raise nothing (a SQLite file and
PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.idempotent import insert_ignoring_duplicates
from db.models import InteractionEvent, Participant, Study

THREADS = 16
TRANSACTIONS = 200


def _make_participants(db: Database, n: int) -> list[int]:
    with db.write() as session:
        study = Study(slug="concurrency", salt="s")
        session.add(study)
        session.flush()
        people = [Participant(study_id=study.id, external_id=f"p{i}") for i in range(n)]
        session.add_all(people)
        session.flush()
        return [p.id for p in people]


def _writer(db: Database, participant_id: int) -> None:
    """Each transaction reads how many events exist, then inserts the next one: read-then-write."""
    for _ in range(TRANSACTIONS):
        with db.write() as session:
            n = session.scalar(select(func.count()).where(InteractionEvent.participant_id == participant_id))
            session.add(
                InteractionEvent(
                    participant_id=participant_id, client_event_id=f"e{n}", kind="blur", trial_index=n
                )
            )


def _run_writers(db: Database) -> list[int]:
    participant_ids = _make_participants(db, THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(_writer, db, pid) for pid in participant_ids]:
            future.result()  # re-raises any error
    return participant_ids


def _assert_nothing_lost(db: Database, participant_ids: list[int]) -> None:
    with db.read() as session:
        for pid in participant_ids:
            indices = session.scalars(
                select(InteractionEvent.trial_index).where(InteractionEvent.participant_id == pid)
            ).all()
            assert sorted(indices) == list(range(TRANSACTIONS))


def test_sqlite_file_concurrent_read_then_insert(tmp_path):
    from db.models import Base

    db = Database.from_url(f"sqlite:///{tmp_path / 'busy.db'}")
    Base.metadata.create_all(db.engine)
    _assert_nothing_lost(db, _run_writers(db))
    db.dispose()


@pytest.mark.postgres
def test_postgres_concurrent_read_then_insert(pg_db):
    _assert_nothing_lost(pg_db, _run_writers(pg_db))


def test_duplicate_submission_stores_one_row_and_reports_it(any_db):
    pid = _make_participants(any_db, 1)[0]
    values = dict(participant_id=pid, client_event_id="same", kind="blur")
    with any_db.write() as session:
        assert insert_ignoring_duplicates(
            session, InteractionEvent, values, ["participant_id", "client_event_id"]
        )
    with any_db.write() as session:
        assert not insert_ignoring_duplicates(
            session, InteractionEvent, values, ["participant_id", "client_event_id"]
        )
    with any_db.read() as session:
        assert session.scalar(select(func.count()).select_from(InteractionEvent)) == 1
