"""INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL: retries and duplicates are harmless."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Base


def insert_ignoring_duplicates(
    session: Session, model: type[Base], values: dict[str, Any], unique_columns: Sequence[str]
) -> bool:
    """Insert one row unless a row with the same `unique_columns` exists; True if a row was inserted."""
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(
            f"idempotent insert is implemented for sqlite and postgresql, not {dialect!r}"
        )
    statement = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(unique_columns))
        .returning(*model.__table__.primary_key.columns)
    )  # rowcount is unreliable with psycopg
    return session.execute(statement).first() is not None
