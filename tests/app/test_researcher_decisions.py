"""AppTest: the Participants page's exclusion form follows the selected participant, its payments section
stores decisions and offers Prolific's files, exports are built only on click, and the Studies page edits a
study's config as a new version."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import Database
from study.config_versions import config_versions
from study.participation import enter_study
from study.qc import participant_qc, set_exclusion
from study.studies import get_study, study_config
from tests.app.conftest import MAIN
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant

SLUG = "page-study"
PIDS = ("5f1a000000000000000000aa", "5f1a000000000000000000bb")


@pytest.fixture
def page_db(app_home):
    db = Database.from_url()
    ids = make_stimuli(db)
    make_study(db, SLUG, [[experimental(ids[0], ids[3], ids[6])]], participants_per_list=10)
    people = {}
    for pid in PIDS:
        enter_study(db, SLUG, pid, source="prolific")
        people[pid] = run_participant(db, SLUG, pid, [ids[6]])
    set_exclusion(db, people[PIDS[0]], True, "reason of the first")
    yield db, people
    db.dispose()


def _page(page: str, tab: str | None = None) -> AppTest:
    """A researcher page; on Participants & data, `tab` opens that tab (only the open tab's section runs)."""
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["researcher_logged_in"] = True
    if tab:
        at.session_state["data_tab"] = tab
    at.run()
    return at.switch_page(page).run()


def _widget(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def _choose(at: AppTest, key: str, participant_id: int) -> AppTest:
    box = at.selectbox(key=key)
    box.set_value(next(o for o in box.options if o.startswith(f"{participant_id} ·"))).run()
    return at


def test_the_exclusion_form_shows_the_selected_participants_own_decision(page_db):
    db, people = page_db
    first, second = people[PIDS[0]], people[PIDS[1]]
    at = _page("views/participants.py")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["PROLIFIC_PID"].tolist() == list(PIDS)
    assert table["exclusion reason"].tolist()[0] == "reason of the first"
    assert not isinstance(table["exclusion reason"].tolist()[1], str)  # empty, never the text "nan"

    _choose(at, "exclusion_participant", first)
    assert _widget(at.checkbox, "Exclude from analyses").value is True
    assert _widget(at.text_input, "Reason").value == "reason of the first"
    _choose(at, "exclusion_participant", second)  # the form follows: unchecked, empty reason
    assert _widget(at.checkbox, "Exclude from analyses").value is False
    assert _widget(at.text_input, "Reason").value == ""

    _widget(at.checkbox, "Exclude from analyses").check()
    _widget(at.text_input, "Reason").input("reason of the second")
    _widget(at.button, "Save decision").click().run()
    assert not at.exception and f"Participant {second}" in at.success[0].value
    decisions = participant_qc(db, SLUG).set_index("participant_id")
    assert decisions.loc[first, "exclusion_reason"] == "reason of the first"
    assert decisions.loc[second, "exclusion_reason"] == "reason of the second"
    _choose(at, "exclusion_participant", first)
    assert _widget(at.text_input, "Reason").value == "reason of the first"


def test_the_table_filters_by_status(page_db):
    db, _ = page_db
    enter_study(db, SLUG, "STILL-ANSWERING", source="prolific")
    at = _page("views/participants.py")
    assert len(at.dataframe[0].value) == 3
    at.multiselect(key="filter_status").set_value(["started"]).run()
    assert at.dataframe[0].value["PROLIFIC_PID"].tolist() == ["STILL-ANSWERING"]
    at.multiselect(key="filter_status").set_value(["completed"]).run()
    assert at.dataframe[0].value["PROLIFIC_PID"].tolist() == list(PIDS)


def test_payments_section_stores_decisions_and_offers_prolifics_files(page_db):
    db, people = page_db
    at = _page("views/participants.py", "Payments")
    _widget(at.button, "Approve all completed submissions still pending").click().run()
    assert "Approved 2 submission(s)" in at.success[0].value
    _choose(at, "payment_participant", people[PIDS[1]])
    at.radio(key=next(r.key for r in at.radio if r.label == "Decision")).set_value("rejected")
    _widget(at.text_input, "Reason (required to reject)").input("no attention")
    _widget(at.text_input, "Bonus (e.g. 1.50; empty = none)").input("0.40")
    _widget(at.button, "Save payment decision").click().run()
    assert not at.exception, at.exception
    labels = [button.label for button in at.get("download_button")]
    assert {"approve.csv (1)", "reject.csv (1)", "bonus.csv (1)"} <= set(labels)
    row = participant_qc(db, SLUG).set_index("participant_id").loc[people[PIDS[1]]]
    assert (row.payment_status, row.payment_reason, row.bonus_cents) == ("rejected", "no attention", 40)


def test_exports_are_built_only_when_asked_for(page_db, monkeypatch):
    import study.export

    calls = []
    original = study.export.export_study
    monkeypatch.setattr(study.export, "export_study", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    at = _page("views/participants.py", "Export")
    assert calls == [] and not [b for b in at.get("download_button") if b.label.startswith("Download")]
    _widget(at.button, "Prepare export files").click().run()
    assert not at.exception, at.exception
    assert "participants" in calls and "events" in calls
    offered = [b.label for b in at.get("download_button") if b.label.startswith("Download")]
    assert "Download participants (Parquet)" in offered and "Download anchor judgments" not in offered
    n_built = len(calls)
    at.run()  # a rerun (any click elsewhere) builds nothing
    assert len(calls) == n_built


def test_the_studies_page_edits_a_study_as_a_new_version(page_db):
    db, _ = page_db
    at = _page("views/studies.py")
    assert not at.exception, at.exception
    _widget(at.text_area, "Consent text").input("A new consent text.")
    _widget(at.text_input, "Completion URL ({code} is replaced; empty = show the code only)").input(
        "https://x.org/?cc={cc}"
    )
    _widget(at.button, "Save as new version").click().run()
    assert "{code} is the only one allowed" in at.error[0].value
    assert len(config_versions(db, SLUG)) == 1  # nothing stored

    _widget(at.text_input, "Completion URL ({code} is replaced; empty = show the code only)").input("")
    _widget(at.button, "Save as new version").click().run()
    assert not at.exception and "config version 2 saved" in at.success[0].value
    with db.read() as session:
        config = study_config(get_study(session, SLUG))
    assert (config.consent_text, config.completion_url_template) == ("A new consent text.", "")
    assert _widget(at.text_area, "Consent text").value == "A new consent text."  # the form shows version 2
