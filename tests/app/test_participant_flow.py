"""The participant page under AppTest: bad links, consent, demographics, instructions, blocks (the trial
component's triggers injected through session state), strategy, end page, resume and early exit."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import Database
from db.models import InteractionEvent, Participant, ParticipantStatus, Response
from study.config import StudyConfig
from study.participation import ResponsePayload, record_response
from tests.app.conftest import MAIN
from tests.support.participant_study import FAST_CONFIG, make_study

CONFIG = StudyConfig.from_dict(FAST_CONFIG.to_dict() | {"instruction_min_seconds": 0})


@pytest.fixture
def study_db(app_home) -> Database:
    database = Database.from_url()
    make_study(database, app_home, config=CONFIG)
    yield database
    database.dispose()


def open_link(**params: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=30)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def component_data(at: AppTest, name: str) -> dict:
    found = [e for e in at.get("bidi_component") if e.proto.component_name == name]
    assert found, f"no {name} component on the page"
    return json.loads(found[0].proto.json)


def trial_block(at: AppTest) -> dict:
    return component_data(at, "alignlab_trial_block")


def answer_block(
    at: AppTest, positions=lambda i: i % 3, event: str = "block_done", count: int | None = None
) -> None:
    """What the component sends at the end of a block: its responses in the trigger payload."""
    data = trial_block(at)
    trials = data["trials"][:count]
    responses = [
        {
            "trial_index": t["trial_index"],
            "shown": t["shown"],
            "chosen_position": positions(t["trial_index"]),
            "rt_ms": 1500.0,
            "client_onset_ms": time.time() * 1000,
            "input_modality": "keyboard",
            "timed_out": False,
        }
        for t in trials
    ]
    at.session_state["trial_block"] = {
        event: {"block_key": data["block_key"], "block": data["block"], "attempt": 1, "responses": responses}
    }
    at.run()


def participant(db: Database) -> Participant:
    with db.read() as session:
        return session.scalars(select(Participant)).one()


def responses(db: Database) -> list[Response]:
    with db.read() as session:
        return list(session.scalars(select(Response).order_by(Response.trial_index)))


def through_instructions(at: AppTest) -> None:
    at.button(key="consent_yes").click().run()
    at.number_input[0].set_value(34)
    at.selectbox[0].select("female")
    at.button[0].click().run()
    at.button(key="instr_next_0").click().run()
    at.button(key="instr_next_1").click().run()


def texts(at: AppTest) -> str:
    return " ".join(
        str(e.value) for kind in (at.header, at.markdown, at.error, at.warning, at.info) for e in kind
    )


def test_unknown_study_gets_a_clear_message_and_stores_nothing(study_db):
    at = open_link(study="no-such-study")
    assert not at.exception
    assert "There is no study at this link" in at.error[0].value
    with study_db.read() as session:
        assert session.scalars(select(Participant)).all() == []


@pytest.mark.parametrize("bad_id", ["has spaces", "x" * 65, "semi;colon", "ü-umlaut"])
def test_malformed_or_overlong_participant_id_is_refused(study_db, bad_id):
    at = open_link(study="test-study", PROLIFIC_PID=bad_id)
    assert not at.exception
    assert "invalid participant id" in at.error[0].value
    with study_db.read() as session:
        assert session.scalars(select(Participant)).all() == []


def test_anonymous_participant_gets_an_id_in_the_url_and_the_same_row_after_a_reload(study_db):
    at = open_link(study="test-study")
    external_id = at.query_params["participant"]
    assert external_id.startswith("anon-")
    at.button(key="consent_yes").click().run()
    reloaded = open_link(study="test-study", participant=external_id)
    assert "About you" in texts(reloaded)  # consent is not asked again
    assert participant(study_db).external_id == external_id


def test_declining_consent_ends_with_the_no_consent_code(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p1", STUDY_ID="s1", SESSION_ID="x1")
    at.button(key="consent_no").click().run()
    assert "ALIGNLAB-NOCONSENT" in texts(at)
    stored = participant(study_db)
    assert (stored.status, stored.consent, stored.source) == (ParticipantStatus.NO_CONSENT, False, "prolific")
    assert (stored.external_study_id, stored.external_session_id) == ("s1", "x1")


def test_whole_session_stores_one_row_per_trial_and_shows_the_completion_code(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p2")
    through_instructions(at)
    intros = []
    for _ in range(3):  # practice, block 1, block 2
        intros.append(trial_block(at)["intro"]["kind"])
        answer_block(at)
    assert intros == ["start", "practice_done", "break"]
    at.text_area[0].input("colour first")
    at.button[0].click().run()
    assert "ALIGNLAB-DONE" in texts(at)
    rows = responses(study_db)
    assert [r.trial_index for r in rows] == list(range(10))
    assert all(r.chosen_position == r.trial_index % 3 for r in rows)
    stored = participant(study_db)
    assert stored.status == ParticipantStatus.COMPLETED
    assert stored.demographics == {"age": 34, "gender": "female"}
    assert stored.strategy == "colour first"


def test_reload_mid_block_runs_only_the_unanswered_trials_with_a_resume_screen(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p3")
    through_instructions(at)
    answer_block(at)  # practice
    answer_block(at, count=2)  # two of block 1's four trials, then the tab is reloaded
    reloaded = open_link(study="test-study", PROLIFIC_PID="p3")
    data = trial_block(reloaded)
    assert data["intro"]["kind"] == "resume"
    assert [t["trial_index"] for t in data["trials"]] == [4, 5]
    with study_db.read() as session:
        kinds = set(session.scalars(select(InteractionEvent.kind)))
    assert "session_resumed" in kinds


def test_restart_block_policy_runs_the_whole_current_block_again(study_db, app_home):
    make_study(
        study_db,
        app_home,
        "restart-study",
        config=StudyConfig.from_dict(CONFIG.to_dict() | {"resume_policy": "restart_block"}),
        stimulus_ids=_ids(study_db),
    )
    at = open_link(study="restart-study", PROLIFIC_PID="p4")
    through_instructions(at)
    answer_block(at)
    answer_block(at, count=2)
    reloaded = open_link(study="restart-study", PROLIFIC_PID="p4")
    assert [t["trial_index"] for t in trial_block(reloaded)["trials"]] == [2, 3, 4, 5]


def test_block_policy_ends_an_interrupted_session_with_the_early_exit_code(study_db, app_home):
    make_study(
        study_db,
        app_home,
        "strict-study",
        config=StudyConfig.from_dict(CONFIG.to_dict() | {"resume_policy": "block"}),
        stimulus_ids=_ids(study_db),
    )
    at = open_link(study="strict-study", PROLIFIC_PID="p5")
    through_instructions(at)
    answer_block(at)
    reloaded = open_link(study="strict-study", PROLIFIC_PID="p5")
    assert "cannot be resumed" in texts(reloaded)
    assert "ALIGNLAB-EARLY" in texts(reloaded)


def _ids(db: Database) -> dict[str, list[int]]:
    from db.models import Stimulus

    with db.read() as session:
        ids: dict[str, list[int]] = {}
        for stimulus in session.scalars(select(Stimulus).order_by(Stimulus.id)):
            ids.setdefault(stimulus.category, []).append(stimulus.id)
        return ids


def test_finished_participant_sees_the_end_page_again_and_never_a_second_session(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p6")
    through_instructions(at)
    for _ in range(3):
        answer_block(at)
    at.button[0].click().run()  # strategy left empty
    back = open_link(study="test-study", PROLIFIC_PID="p6")
    assert "ALIGNLAB-DONE" in texts(back)
    assert not [e for e in back.get("bidi_component") if e.proto.component_name == "alignlab_trial_block"]
    assert (
        component_data(back, "alignlab_session_monitor")["redirect"] == ""
    )  # shown again, not re-redirected


def test_early_exit_from_the_trial_block_keeps_the_answers_and_shows_the_early_exit_code(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p7")
    through_instructions(at)
    answer_block(at, event="early_exit", count=1)
    assert "ALIGNLAB-EARLY" in texts(at)
    assert [r.trial_index for r in responses(study_db)] == [0]
    assert participant(study_db).status == ParticipantStatus.EARLY_EXIT


def test_stop_control_on_the_instructions_asks_then_exits(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p8")
    at.button(key="consent_yes").click().run()
    at.button(key="stop_study").click().run()
    at.button(key="stop_no").click().run()
    assert participant(study_db).status == ParticipantStatus.STARTED
    at.button(key="stop_study").click().run()
    at.button(key="stop_yes").click().run()
    assert "ALIGNLAB-EARLY" in texts(at)


def test_redirect_to_the_completion_url_is_handed_out_only_once_the_session_is_complete(study_db, app_home):
    make_study(
        study_db,
        app_home,
        "prolific-study",
        config=StudyConfig.from_dict(
            CONFIG.to_dict() | {"completion_url_template": "https://example.org/done?cc={code}"}
        ),
        stimulus_ids=_ids(study_db),
    )
    at = open_link(study="prolific-study", PROLIFIC_PID="p9")
    through_instructions(at)
    for _ in range(3):
        assert component_data(at, "alignlab_session_monitor")["redirect"] == ""
        answer_block(at)
    at.button[0].click().run()
    assert (
        component_data(at, "alignlab_session_monitor")["redirect"]
        == "https://example.org/done?cc=ALIGNLAB-DONE"
    )


def test_block_done_with_a_missing_response_runs_that_trial_again(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p10")
    through_instructions(at)
    first = trial_block(at)
    answer_block(at, count=1)  # the block claims to be done but trial 1 never arrived
    again = trial_block(at)
    assert again["block_key"] != first["block_key"]
    assert [t["trial_index"] for t in again["trials"]] == [1]


def test_responses_stored_over_rest_are_not_duplicated_by_the_trigger_payload(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="p11")
    through_instructions(at)
    data = trial_block(at)
    pid = participant(study_db).id
    first = data["trials"][0]
    assert record_response(
        study_db, pid, ResponsePayload(first["trial_index"], tuple(first["shown"]), 2, 1800.0)
    )
    answer_block(at)  # carries position 0 for trial 0 too: the first stored response wins
    rows = responses(study_db)
    assert [(r.trial_index, r.chosen_position) for r in rows] == [(0, 2), (1, 1)]


def test_instruction_examples_show_three_images_each_from_the_study(app_home):
    database = Database.from_url()
    pages = ("Pick the odd one out.", "Easy:\n\n[[example: obvious]]\n\nHarder:\n\n[[example: ambiguous]]")
    make_study(
        database, app_home, config=StudyConfig.from_dict(CONFIG.to_dict() | {"instructions": list(pages)})
    )
    at = open_link(study="test-study", PROLIFIC_PID="ex1")
    at.button(key="consent_yes").click().run()
    at.button[0].click().run()
    assert "Pick the odd one out." in texts(at) and not at.get("image")
    at.button(key="instr_next_0").click().run()
    images = at.get("image")
    assert len(images) == 6 and not at.exception
    assert "Easy:" in texts(at) and "Harder:" in texts(at) and "[[example" not in texts(at)
    database.dispose()


def _count_participants(db: Database) -> int:
    with db.read() as session:
        return len(session.scalars(select(Participant)).all())


def test_page_loads_before_consent_store_nothing_and_hand_out_no_token(study_db, app_home):
    make_study(
        study_db,
        app_home,
        "one-slot",
        config=CONFIG,
        participants_per_list=1,
        stimulus_ids=_ids(study_db),
    )
    for _ in range(3):  # three anonymous page loads of a one-slot study
        at = open_link(study="one-slot")
        assert at.button(key="consent_yes") and not at.get("bidi_component")  # no monitor, no token
    assert _count_participants(study_db) == 0
    real = open_link(study="one-slot", PROLIFIC_PID="real1")  # the next real participant is not turned away
    real.button(key="consent_yes").click().run()
    token = component_data(real, "alignlab_session_monitor")["token"]
    from app.resources import get_token_key

    assert get_token_key().participant(token) == participant(study_db).id
    full = open_link(study="one-slot", PROLIFIC_PID="real2")
    assert "not taking part in new sessions" in texts(full) and not full.get("button")
    assert _count_participants(study_db) == 1


def test_declining_stores_a_row_without_list_slot_and_no_token(study_db):
    at = open_link(study="test-study", PROLIFIC_PID="no1")
    at.button(key="consent_no").click().run()
    stored = participant(study_db)
    assert (stored.consent, stored.list_id, stored.status) == (False, None, ParticipantStatus.NO_CONSENT)
    assert component_data(at, "alignlab_session_monitor")["token"] == ""


def test_a_reload_after_a_key_change_gets_a_fresh_valid_token(study_db, app_home):
    from app.resources import get_token_key
    from workflows.participant.tokens import SECRET_FILENAME

    at = open_link(study="test-study", PROLIFIC_PID="k1")
    at.button(key="consent_yes").click().run()
    old = component_data(at, "alignlab_session_monitor")["token"]
    (app_home / SECRET_FILENAME).unlink()  # a new key after a restart
    get_token_key.clear()
    reloaded = open_link(study="test-study", PROLIFIC_PID="k1")
    new = component_data(reloaded, "alignlab_session_monitor")["token"]
    assert new != old and get_token_key().participant(new) == participant(study_db).id


def test_a_block_whose_answers_never_arrive_stops_with_a_clear_message(study_db, caplog):
    at = open_link(study="test-study", PROLIFIC_PID="stall")
    through_instructions(at)
    answer_block(at, count=1)  # the block ends with trial 1 missing...
    for _ in range(2):  # ...and so do both of its re-runs
        assert [t["trial_index"] for t in trial_block(at)["trials"]] == [1]
        answer_block(at, count=0)
    assert "Your answers could not be saved" in texts(at) and "reload this page" in texts(at)
    assert not [e for e in at.get("bidi_component") if e.proto.component_name == "alignlab_trial_block"]
    assert "still has unstored trials" in caplog.text
    at.button(key="stalled_retry").click().run()
    assert [t["trial_index"] for t in trial_block(at)["trials"]] == [1]


def test_an_unexpected_error_shows_a_short_message_and_logs_it(study_db, monkeypatch, caplog):
    import app.participant.page as page

    at = open_link(study="test-study", PROLIFIC_PID="err1")
    at.button(key="consent_yes").click().run()

    def broken(*args, **kwargs):
        raise RuntimeError("boom in the page")

    monkeypatch.setattr(page, "participant_view", broken)
    at.run()
    assert not at.exception
    assert "Something went wrong on our side" in texts(at) and "boom" not in texts(at)
    assert "boom in the page" in caplog.text


def test_an_unavailable_trial_is_not_rerun_in_the_session_but_offered_again_on_resume(study_db, app_home):
    from db.models import Stimulus

    at = open_link(study="test-study", PROLIFIC_PID="un1")
    through_instructions(at)
    data = trial_block(at)
    first, second = data["trials"]
    with study_db.read() as session:
        (app_home / session.get(Stimulus, first["shown"][0]).path).unlink()  # this image is gone
    gone = {**_carried(first, None), "unavailable": True, "timed_out": False, "input_modality": "none"}
    gone["rt_ms"] = gone["client_onset_ms"] = None
    at.session_state["trial_block"] = {
        "block_done": {
            "block_key": data["block_key"],
            "block": data["block"],
            "attempt": 1,
            "responses": [gone, _carried(second, 2)],
        }
    }
    at.run()
    assert trial_block(at)["intro"]["kind"] == "practice_done"  # moved on: no re-run loop in this session
    rows = {r.trial_index: r for r in responses(study_db)}
    assert rows[first["trial_index"]].unavailable and not rows[second["trial_index"]].unavailable
    resumed = open_link(study="test-study", PROLIFIC_PID="un1")
    again = trial_block(resumed)
    assert again["intro"]["kind"] == "resume" and [t["trial_index"] for t in again["trials"]] == [0]
    resumed.session_state["trial_block"] = {  # still gone: the session goes on, the trial stays unavailable
        "block_done": {
            "block_key": again["block_key"],
            "block": again["block"],
            "attempt": 1,
            "responses": [gone],
        }
    }
    resumed.run()
    assert trial_block(resumed)["intro"]["kind"] == "practice_done"
    assert [r.trial_index for r in responses(study_db) if r.unavailable] == [first["trial_index"]]


def _carried(trial: dict, position: int | None) -> dict:
    return {
        "trial_index": trial["trial_index"],
        "shown": trial["shown"],
        "chosen_position": position,
        "rt_ms": 1500.0,
        "client_onset_ms": time.time() * 1000,
        "input_modality": "keyboard",
        "timed_out": False,
    }


def test_a_row_stored_before_consent_was_asked_at_entry_is_asked_now(study_db):
    """Older versions created the participant on the first page load; such a row gets the consent page."""
    with study_db.write() as session:
        from db.models import Study, TripletList

        study = session.scalars(select(Study)).one()
        list_id = session.scalars(select(TripletList.id).where(TripletList.study_id == study.id)).first()
        session.add(Participant(study_id=study.id, external_id="old1", list_id=list_id))
    at = open_link(study="test-study", PROLIFIC_PID="old1")
    assert component_data(at, "alignlab_session_monitor")["token"] == ""  # no token before consent
    at.button(key="consent_yes").click().run()
    assert "About you" in texts(at) and participant(study_db).consent is True
    assert component_data(at, "alignlab_session_monitor")["token"] != ""
