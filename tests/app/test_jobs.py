"""Background runs: success, failure and cancellation end up recorded on the run, with a log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.models import Run, RunStatus, utcnow
from db.runs import create_run, get_run, request_cancel
from workflows import jobs


@pytest.fixture
def stage_kind(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path))
    return "unit-test-stage"


def test_successful_stage_records_metrics_artifacts_and_log(db, stage_kind):
    def stage(_db, run, progress):
        progress(0.5, "halfway")
        return jobs.StageResult(metrics={"accuracy": 0.7}, artifacts={"model": f"runs/{run.id}/model.pt"})

    run_id = create_run(db, stage_kind, {"lr": 0.1})
    assert jobs.execute(db, run_id, {stage_kind: stage}) == RunStatus.SUCCEEDED
    run = get_run(db, run_id)
    assert (run.status, run.progress, run.metrics["accuracy"]) == (RunStatus.SUCCEEDED, 1.0, 0.7)
    assert "halfway" in jobs.read_log(run_id)


def test_failing_stage_records_the_error(db, stage_kind):
    def stage(_db, _run, _progress):
        raise ValueError("study 'x' has only 3 judgments; at least 50 are needed")

    run_id = create_run(db, stage_kind, {})
    assert jobs.execute(db, run_id, {stage_kind: stage}) == RunStatus.FAILED
    run = get_run(db, run_id)
    assert "only 3 judgments" in run.error and "Traceback" in jobs.read_log(run_id)


def test_cancel_request_stops_the_stage_at_its_next_progress_report(db, stage_kind):
    reached = []

    def stage(db_, run, progress):
        request_cancel(db_, run.id)  # as if the user pressed Cancel mid-run
        progress(0.1, "step 1")
        reached.append("after")
        return jobs.StageResult()

    run_id = create_run(db, stage_kind, {})
    assert jobs.execute(db, run_id, {stage_kind: stage}) == RunStatus.CANCELLED
    assert reached == [] and get_run(db, run_id).status == RunStatus.CANCELLED


def test_unknown_kind_fails_with_the_known_kinds_listed(db, stage_kind):
    run_id = create_run(db, "no-such-kind", {})
    assert jobs.execute(db, run_id, {stage_kind: lambda *_: jobs.StageResult()}) == RunStatus.FAILED
    assert get_run(db, run_id).error == (
        "no stage registered for run kind 'no-such-kind'; known: ['unit-test-stage']"
    )


def test_the_pipeline_lists_every_stage_explicitly():
    from workflows.pipeline import STAGES

    assert sorted(STAGES) == ["adaptive", "align", "eval", "features", "pseudo_labels", "student", "teacher"]


def test_eta_extrapolates_the_progress_rate():
    now = utcnow()
    run = Run(kind="x", status=RunStatus.RUNNING, progress=0.25, started_at=now - timedelta(seconds=30))
    assert jobs.eta_seconds(run, now) == pytest.approx(90.0)
    assert jobs.eta_seconds(Run(kind="x", status=RunStatus.QUEUED, progress=0.0), now) is None


def test_runs_whose_process_stopped_reporting_are_failed_as_lost(db, stage_kind):
    from db.models import Run

    silent = create_run(db, stage_kind, {})
    fresh = create_run(db, stage_kind, {})
    with db.write() as session:
        session.get(Run, silent).created_at = utcnow() - timedelta(minutes=30)
    assert jobs.mark_lost_runs(db, silence_minutes=10) == [silent]
    assert get_run(db, silent).status == RunStatus.FAILED and "lost" in get_run(db, silent).error
    assert get_run(db, fresh).status == RunStatus.QUEUED
