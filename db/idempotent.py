"""INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL: retries and duplicates are harmless."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Base


def insert_ignoring_duplicates(
    session: Session, model: type[Base], values: dict[str, Any], unique_columns: Sequence[str]
) -> bool:
    """Insert one row unless a row with the same `unique_columns` exists; True if a row was inserted."""
    statement = (
        _dialect_insert(session.get_bind().dialect.name, model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(unique_columns))
        .returning(*inspect(model).primary_key)
    )  # rowcount is unreliable with psycopg
    return session.execute(statement).first() is not None


def _dialect_insert(dialect: str, model: type[Base]) -> sqlite.Insert | postgresql.Insert:
    """The dialect's own INSERT: only those two have ON CONFLICT DO NOTHING."""
    if dialect == "sqlite":
        return sqlite.insert(model)
    if dialect == "postgresql":
        return postgresql.insert(model)
    raise NotImplementedError(f"idempotent insert is implemented for sqlite and postgresql, not {dialect!r}")
