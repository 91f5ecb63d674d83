"""The Alignment runs page starts a job in a separate process and shows its progress and result."""

from __future__ import annotations

import json
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


@pytest.fixture
def launched(monkeypatch) -> list[int]:
    """Runs the page launches (recorded, not started: these tests check what would run)."""
    import workflows.jobs

    started: list[int] = []
    monkeypatch.setattr(workflows.jobs, "launch", started.append)
    return started


def _judged_study(db, slug: str = "toy-study", participants: int = 10):
    from db.models import StudyStatus
    from study.simulate import simulate_participants
    from study.studies import set_study_status

    design = DesignConfig(
        n_lists=12, n_between_class=4, n_within_class=4, n_class_border=4, n_blocks=1, catch_per_block=1
    )
    create_study_from_design(db, slug, 1, design)
    set_study_status(db, slug, StudyStatus.OPEN)
    if participants:
        simulate_participants(db, slug, participants)


def _widget(widgets, label):
    return next(w for w in widgets if w.label.startswith(label))


def test_the_form_starts_the_full_loop_with_a_preset_and_changed_settings(stimulus_set, launched):
    _judged_study(stimulus_set)
    at = _page()
    _widget(at.radio, "Preset").set_value("quick")
    _widget(at.number_input, "Student epochs").set_value(3.0)
    _widget(at.text_area, "More settings").set_value('{"teacher": {"reg_weight": 0.5}}')
    _widget(at.button, "Start in the background").click().run()
    assert not at.exception and not at.error
    run = list_runs(stimulus_set)[0]
    assert launched == [run.id] and run.kind == "align"
    assert run.config == {
        "study": "toy-study",
        "student": {"epochs": 3.0, "image_size": 128},  # the quick preset, epochs changed in the form
        "split": {"by": "triplet"},
        "teacher": {"reg_weight": 0.5},
    }


def test_a_refused_start_says_why_in_one_line_and_starts_nothing(stimulus_set, launched):
    _judged_study(stimulus_set, participants=0)
    at = _page()
    _widget(at.button, "Start in the background").click().run()
    assert "Not started" in at.error[0].value and "at least 50 are needed" in at.error[0].value
    assert launched == [] and list_runs(stimulus_set) == []


def test_a_finished_run_shows_its_config_and_caveats_and_reruns_with_changes(stimulus_set, launched):
    from db.runs import create_run, finish_run

    _judged_study(stimulus_set)
    config = {"study": "toy-study", "student": {"epochs": 2.0}}
    done = create_run(stimulus_set, "align", config, name="align on toy-study")
    caveat = {"check": "x", "subject": "AligNet", "reason": "AligNet did not learn", "help": "more steps"}
    finish_run(stimulus_set, done, {"caveats": [caveat]}, {})
    at = _page()
    assert any(json.loads(j.value) == config for j in at.json)
    assert any("AligNet did not learn — would help: more steps" in w.value for w in at.warning)
    edited = {"student": {"epochs": 5.0}, "pseudo": {"n_triplets": 300}}
    _widget(at.text_area, "Settings for a re-run").set_value(json.dumps(edited))
    _widget(at.button, "Re-run with these settings").click().run()
    assert not at.exception and not at.error
    again = max(list_runs(stimulus_set), key=lambda r: r.id)
    assert again.id != done and launched == [again.id]
    assert again.config == {"study": "toy-study", **edited}
