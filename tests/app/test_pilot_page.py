"""The participant page under AppTest for the researcher's side of a study: the preview link runs the real
flow as a pilot (draft studies included, no redirect, nothing counted), a forged preview link is refused,
a link may ask for a list, and an instruction example the images cannot fill says why."""

from __future__ import annotations

from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.models import Participant, ParticipantStatus, Stimulus, Study, StudyStatus
from study import participation as P
from study.pilot import pilot_token
from study.studies import set_study_status
from tests.app.test_participant_flow import (  # noqa: F401  (study_db is a fixture)
    answer_block,
    open_link,
    study_db,
    texts,
    through_instructions,
)

SLUG = "test-study"


def _people(db) -> list[Participant]:
    with db.read() as session:
        return list(session.scalars(select(Participant)))


def test_the_preview_link_runs_a_draft_study_as_a_pilot_that_is_counted_nowhere(study_db):  # noqa: F811
    set_study_status(study_db, SLUG, StudyStatus.DRAFT)
    at = open_link(study=SLUG, pilot=pilot_token(study_db, SLUG))
    assert not at.exception
    assert "Pilot run" in texts(at)
    assert at.query_params["participant"].startswith("pilot-")
    through_instructions(at)
    for _ in range(3):  # practice, block 1, block 2
        answer_block(at)
    at.text_area[0].input("tried it myself")
    at.button[0].click().run()
    assert "ALIGNLAB-DONE" in texts(at)
    [pilot] = _people(study_db)
    assert (pilot.is_pilot, pilot.source, pilot.status) == (True, "pilot", ParticipantStatus.COMPLETED)
    set_study_status(study_db, SLUG, StudyStatus.OPEN)
    assert P.check_admission(study_db, SLUG)  # nothing counted: a live participant is still admitted


def test_a_forged_preview_link_is_refused_and_stores_nothing(study_db):  # noqa: F811
    set_study_status(study_db, SLUG, StudyStatus.DRAFT)
    at = open_link(study=SLUG, pilot="0" * 24)
    assert not at.exception
    assert "preview link is not valid" in at.error[0].value
    assert _people(study_db) == []


def test_a_link_that_asks_for_an_unknown_list_is_refused_before_consent(study_db):  # noqa: F811
    at = open_link(study=SLUG, PROLIFIC_PID="p1", list="7")
    assert not at.exception
    assert "has no list '7'" in at.warning[0].value
    assert _people(study_db) == []
    at = open_link(study=SLUG, PROLIFIC_PID="p1", list="0")
    at.button(key="consent_yes").click().run()
    assert [p.external_id for p in _people(study_db)] == ["p1"]


def test_an_example_the_images_cannot_fill_is_explained_not_left_dangling(study_db):  # noqa: F811
    def page(study_id: int) -> None:
        from app.participant.steps import instruction_page

        instruction_page(
            study_id, "Here the image on the right is the odd one out:\n\n[[example: ambiguous]]", image_px=80
        )

    with study_db.read() as session:
        study_id = session.scalar(select(Study.id))
    with study_db.write() as session:  # only two images per category left: no three of one category
        for stimulus in session.scalars(select(Stimulus)):
            if int(stimulus.name.split("/")[1].split(".")[0]) >= 2:
                stimulus.category = stimulus.name.split("/")[0] + "-" + stimulus.name
    at = AppTest.from_function(page, kwargs={"study_id": study_id}, default_timeout=30).run()
    assert not at.exception
    assert "odd one out:" in at.markdown[0].value
    assert (
        "No example can be shown here: no category of this study's images has three images"
        in at.info[0].value
    )


def test_the_studies_page_keeps_pilot_and_simulation_apart_and_shows_the_preview_link(study_db):  # noqa: F811
    from tests.app.test_dashboard import _logged_in

    at = _logged_in("views/studies.py")
    assert not at.exception
    assert "Pilot and simulation" in [h.value for h in at.header]
    assert at.selectbox(key="pilot_study").value is None  # nothing preselected
    assert at.selectbox(key="simulate_study").value is None
    at.selectbox(key="pilot_study").select(SLUG).run()
    links = [c.value for c in at.code if "pilot=" in c.value]
    assert links == [f"http://localhost:8501/?study={SLUG}&pilot={pilot_token(study_db, SLUG)}"]


def test_the_stimuli_page_says_what_size_of_zip_it_takes(app_home):
    from tests.app.test_dashboard import _button, _logged_in

    at = _logged_in("views/stimuli.py")
    next(t for t in at.text_input if t.label == "Name of the new set").input("big set")
    _button(at, "Import").click().run()
    assert "Choose a zip file of at most 200 MB" in at.error[0].value
    assert "alignlab stimuli import" in at.error[0].value
