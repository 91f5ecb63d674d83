"""Record alignment-engine runs (config, status, progress, metrics, artifacts) in the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import Run, RunStatus, utcnow

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)  # a run that has not ended


class RunCancelled(RuntimeError):
    """Raised inside a job when a user asked for its run to be cancelled."""


def create_run(
    db: Database,
    kind: str,
    config: dict[str, Any],
    *,
    study_id: int | None = None,
    parent_run_id: int | None = None,
    name: str = "",
) -> int:
    with db.write() as session:
        run = Run(kind=kind, config=config, study_id=study_id, parent_run_id=parent_run_id, name=name)
        session.add(run)
        session.flush()
        return run.id


def start_run(db: Database, run_id: int) -> None:
    _update(db, run_id, status=RunStatus.RUNNING, started_at=utcnow(), heartbeat_at=utcnow())


def report_progress(db: Database, run_id: int, fraction: float, message: str = "") -> None:
    """Store progress; raise RunCancelled if someone asked for the run to stop."""
    with db.write() as session:
        run = _existing_run(session, run_id)
        run.progress = min(max(fraction, 0.0), 1.0)
        run.heartbeat_at = utcnow()
        if message:
            run.message = message
        cancelled = run.cancel_requested
    if cancelled:
        raise RunCancelled(f"run {run_id} was cancelled")


def finish_run(db: Database, run_id: int, metrics: dict[str, Any], artifacts: dict[str, str]) -> None:
    _update(
        db,
        run_id,
        status=RunStatus.SUCCEEDED,
        progress=1.0,
        metrics=metrics,
        artifacts=artifacts,
        finished_at=utcnow(),
    )


def fail_run(db: Database, run_id: int, error: str, *, cancelled: bool = False) -> None:
    status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
    _update(db, run_id, status=status, error=error, finished_at=utcnow())


def request_cancel(db: Database, run_id: int) -> None:
    _update(db, run_id, cancel_requested=True)


def get_run(db: Database, run_id: int) -> Run:
    with db.read() as session:
        return _existing_run(session, run_id)


def list_runs(db: Database, kind: str | None = None, study_id: int | None = None) -> list[Run]:
    query = select(Run).order_by(Run.id.desc())
    if kind:
        query = query.where(Run.kind == kind)
    if study_id is not None:
        query = query.where(Run.study_id == study_id)
    with db.read() as session:
        return list(session.scalars(query))


def _update(db: Database, run_id: int, **values: Any) -> None:
    with db.write() as session:
        run = _existing_run(session, run_id)
        for key, value in values.items():
            setattr(run, key, value)


def _existing_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"no run with id {run_id}")
    return run
