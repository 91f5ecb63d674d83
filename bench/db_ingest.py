"""Response ingest under concurrency: responses/s and commit latency through the real recording path.

Each writer thread is one participant answering its own list through `study.participation.record_response`
(validation + idempotent insert + last-seen update, one transaction per response), as the app's
request threads do. Runs on a SQLite file (WAL) and on a throwaway PostgreSQL server, then checks
that every response is stored exactly once.

    .venv/bin/python -m bench.db_ingest [--responses 2400] [--writers 1 4 16 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from db.engine import Database
from db.models import Base, Response, StudyStatus, TrialKind
from study.config import StudyConfig
from study.participation import ResponsePayload, enter_study, record_response, trial_plan
from study.studies import TrialSpec, create_study
from tests.support.analysis_helpers import placeholder_stimuli, stimulus_set_id
from tests.support.pg_temp import TemporaryPostgres


def _setup_study(db: Database, writers: int, trials_per_writer: int) -> list[int]:
    ids = placeholder_stimuli(db, "bench", 30, ".png", categories=5)
    rng = np.random.default_rng(0)
    specs = [
        TrialSpec(tuple(int(x) for x in rng.choice(ids, 3, replace=False)), TrialKind.EXPERIMENTAL)
        for _ in range(trials_per_writer)
    ]
    create_study(
        db,
        "bench-study",
        stimulus_set_id(db, "bench"),
        [specs] * writers,
        StudyConfig(),
        status=StudyStatus.OPEN,
    )
    return [enter_study(db, "bench-study", f"writer{w}").participant_id for w in range(writers)]


def _answer_all(db: Database, participant_id: int) -> list[float]:
    latencies = []
    for trial in trial_plan(db, participant_id):
        payload = ResponsePayload(trial.trial_index, trial.shown, trial.trial_index % 3, 1500.0)
        start = time.perf_counter()
        record_response(db, participant_id, payload)
        latencies.append(time.perf_counter() - start)
    return latencies


def measure(url: str, writers: int, responses: int) -> dict:
    db = Database.from_url(url, **({} if url.startswith("sqlite") else {"pool_size": writers + 2}))
    Base.metadata.drop_all(db.engine)
    Base.metadata.create_all(db.engine)
    per_writer = max(responses // writers, 1)
    participants = _setup_study(db, writers, per_writer)
    errors, latencies = 0, []
    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        for future in [pool.submit(_answer_all, db, pid) for pid in participants]:
            try:
                latencies += future.result()
            except Exception:  # counted and reported: the target is zero
                errors += 1
    elapsed = time.perf_counter() - start
    with db.read() as session:
        stored = session.scalar(select(func.count()).select_from(Response))
    db.dispose()
    expected = per_writer * writers
    return dict(
        writers=writers,
        responses=expected,
        per_s=expected / elapsed,
        p50_ms=1000 * np.percentile(latencies, 50),
        p95_ms=1000 * np.percentile(latencies, 95),
        lost=expected - stored,
        errors=errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=2400)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16, 64])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, TemporaryPostgres() as postgres:
        backends = {"sqlite (WAL)": f"sqlite:///{Path(tmp) / 'bench.db'}", "postgresql": postgres.url}
        for backend, url in backends.items():
            for writers in args.writers:
                rows.append((backend, measure(url, writers, args.responses)))
    print(
        f"{'backend':<14}{'writers':>8}{'responses':>10}{'resp/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'lost':>6}{'errors':>7}"
    )
    for backend, r in rows:
        print(
            f"{backend:<14}{r['writers']:>8}{r['responses']:>10}{r['per_s']:>9.0f}{r['p50_ms']:>9.1f}"
            f"{r['p95_ms']:>9.1f}{r['lost']:>6}{r['errors']:>7}"
        )


if __name__ == "__main__":
    main()
