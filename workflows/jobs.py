"""Background jobs: each alignment run executes in its own process (`alignlab jobs run ID`), so it never
blocks the Streamlit script thread and survives browser reloads. Progress, status, metrics and
artifacts live in the run's database row; the log is a file in the run's directory.

A stage is a function `(db, run, progress) -> StageResult`; `execute` is given the table of stages by run
kind (the pipeline's is `workflows.pipeline.STAGES`: listed there, not registered by importing modules).
`progress(fraction, message)` stores progress and raises RunCancelled when cancel was requested.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db.engine import Database
from db.models import Run, RunStatus, as_utc
from db.runs import ACTIVE_STATUSES, RunCancelled, fail_run, finish_run, get_run, report_progress, start_run
from db.settings import data_home

Progress = Callable[[float, str], None]


@dataclass
class StageResult:
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the data directory


Stage = Callable[[Database, Run, Progress], StageResult]


def run_dir(run_id: int) -> Path:
    path = data_home() / "runs" / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(run_id: int) -> Path:
    return run_dir(run_id) / "log.txt"


def launch(run_id: int) -> subprocess.Popen:
    """Start `alignlab jobs run ID` as a detached process writing to the run's log file."""
    log = open(log_path(run_id), "a")  # noqa: SIM115 - handed to the child process
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "jobs", "run", str(run_id)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ.copy(),
    )


def execute(
    db: Database, run_id: int, stages: Mapping[str, Stage], on_progress: Progress | None = None
) -> RunStatus:
    """Run a queued run's stage (looked up in `stages` by the run's kind) in this process; record success,
    failure or cancellation.

    `on_progress` also sees every progress report (the CLI draws a progress bar with it)."""
    run = get_run(db, run_id)
    stage = stages.get(run.kind)
    if stage is None:
        fail_run(db, run_id, f"no stage registered for run kind {run.kind!r}; known: {sorted(stages)}")
        return RunStatus.FAILED
    logger, handler = _file_logger(run_id)
    try:
        return _execute_stage(db, run, stage, logger, on_progress)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _execute_stage(
    db: Database, run: Run, stage: Stage, logger: logging.Logger, on_progress: Progress | None
) -> RunStatus:
    start_run(db, run.id)
    logger.info("run %s (%s) started with config %s", run.id, run.kind, run.config)

    def progress(fraction: float, message: str = "") -> None:
        if message:
            logger.info("%3.0f%% %s", 100 * fraction, message)
        report_progress(db, run.id, fraction, message)
        if on_progress:
            on_progress(fraction, message)

    try:
        result = stage(db, run, progress)
    except RunCancelled:
        logger.info("cancelled")
        fail_run(db, run.id, "cancelled by the user", cancelled=True)
        return RunStatus.CANCELLED
    except Exception as error:  # recorded on the run: the UI shows the message, the log the traceback
        logger.error("failed: %s\n%s", error, traceback.format_exc())
        fail_run(db, run.id, f"{type(error).__name__}: {error}")
        return RunStatus.FAILED
    finish_run(db, run.id, result.metrics, result.artifacts)
    logger.info("finished: %s", result.metrics)
    return RunStatus.SUCCEEDED


def _file_logger(run_id: int) -> tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger(f"alignlab.run.{run_id}")
    handler = logging.FileHandler(log_path(run_id))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, handler


def mark_lost_runs(db: Database, silence_minutes: float = 10.0) -> list[int]:
    """Runs still marked queued/running whose process stopped reporting (killed, machine restarted) fail
    with a clear message, so nobody waits for them and a new run can be started."""
    from sqlalchemy import select

    cutoff = as_utc(datetime.now(UTC)) - timedelta(minutes=silence_minutes)
    with db.read() as session:
        active = session.scalars(select(Run).where(Run.status.in_(ACTIVE_STATUSES))).all()
    lost = [run.id for run in active if as_utc(run.heartbeat_at or run.created_at) < cutoff]
    for run_id in lost:
        fail_run(
            db,
            run_id,
            f"lost: no progress report for {silence_minutes:g} minutes (the job's process stopped)",
        )
    return lost


def read_log(run_id: int, max_lines: int = 200) -> str:
    path = log_path(run_id)
    return "\n".join(path.read_text().splitlines()[-max_lines:]) if path.exists() else ""


def eta_seconds(run: Run, now: datetime) -> float | None:
    """Remaining time from the progress rate so far (None before any progress)."""
    if run.status != RunStatus.RUNNING or not run.started_at or run.progress <= 0:
        return None
    elapsed = (as_utc(now) - as_utc(run.started_at)).total_seconds()
    return elapsed * (1 - run.progress) / run.progress
