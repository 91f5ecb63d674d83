"""Researcher dashboard pages through AppTest: create and open a study, see participants, exclude, export."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from db.models import Participant, ParticipantStatus
from study import participation as P
from tests.app.conftest import MAIN


def _logged_in(page: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.session_state["researcher_logged_in"] = True
    at.run()
    return at.switch_page(page).run()


def test_researcher_pages_are_not_reachable_without_login(app_home):
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    with pytest.raises(ValueError, match="not a registered page|Could not find"):
        at.switch_page("pages/participants.py").run()


def test_create_open_watch_exclude_and_export(stimulus_set):
    at = _logged_in("pages/studies.py")
    assert not at.exception
    form_inputs = {w.label: w for w in at.text_input}
    form_inputs["Slug (used in the link)"].input("toy-study")
    numbers = {w.label: w for w in at.number_input}
    numbers["Lists"].set_value(3)
    numbers["Triplets per level"].set_value(2)
    numbers["Blocks"].set_value(1)
    numbers["Catch per block"].set_value(1)
    at.button(key="FormSubmitter:create_study-Create study").click().run()
    assert not at.exception and "Created draft study 'toy-study'" in at.success[0].value

    at.radio(key="status_choice").set_value("open")
    next(b for b in at.button if b.label == "Set status").click().run()
    assert "toy-study is now open" in at.success[0].value
    db = stimulus_set
    entry = P.enter_study(db, "toy-study", "PROLIFIC123")
    for trial in P.trial_plan(db, entry.participant_id):
        P.record_response(db, entry.participant_id, P.ResponsePayload(trial.trial_index, trial.shown, 0, 900.0))
    P.finish_participant(db, entry.participant_id, ParticipantStatus.COMPLETED)

    at = _logged_in("pages/participants.py")
    assert not at.exception
    assert at.dataframe  # the QC table shows the participant
    next(c for c in at.checkbox if c.label == "Exclude from analyses").check()
    next(t for t in at.text_input if t.label == "Reason").input("catch accuracy too low")
    next(b for b in at.button if b.label == "Save decision").click().run()
    assert not at.exception and "excluded" in at.success[0].value
    assert [b.label for b in at.get("download_button")] == ["Download things", "Download jspsych",
                                                            "Download parquet"]
    with db.read() as session:
        participant = session.get(Participant, entry.participant_id)
    assert participant.excluded is True and participant.exclusion_reason == "catch accuracy too low"
    assert participant.payment_status == "pending"  # exclusion is not a payment decision
