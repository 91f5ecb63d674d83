"""The Alignment runs page starts a job in a separate process and shows its progress and result."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from db.models import RunStatus
from db.runs import get_run, list_runs
from study.design import DesignConfig, create_study_from_design
from tests.app.conftest import MAIN


def _page() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.session_state["researcher_logged_in"] = True
    at.run()
    return at.switch_page("views/alignment.py").run()


@pytest.mark.slow
def test_started_job_runs_outside_the_script_and_lands_as_a_run(stimulus_set):
    db = stimulus_set
    create_study_from_design(
        db,
        "toy-study",
        1,
        DesignConfig(
            n_lists=2, n_between_class=2, n_within_class=2, n_class_border=2, n_blocks=1, catch_per_block=1
        ),
    )
    at = _page()
    next(s for s in at.selectbox if s.label == "What to run").set_value("Extract features only")
    next(b for b in at.button if b.label == "Start in the background").click().run()
    assert not at.exception and "Started run" in at.success[0].value
    run_id = list_runs(db)[0].id
    deadline = time.time() + 240
    while get_run(db, run_id).status in (RunStatus.QUEUED, RunStatus.RUNNING) and time.time() < deadline:
        time.sleep(1)
    run = get_run(db, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.metrics["n_images"] == 24 and run.metrics["dim"] == 1280
    at = _page()  # a fresh session (as after a browser reload) sees the finished run
    assert any("features" in str(frame.value) for frame in at.dataframe)
