"""A real participant session: `streamlit run app/server.py` on loopback, Debian's chromium via Playwright.

Whole studies by keyboard and by mouse, reloads mid-block and before a response was acknowledged, a server
killed and restarted mid-study, broken images, timeouts and bad requests; then the database is checked:
one row per trial, none missing, positions and choices as pressed."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.engine import Database
from db.models import InteractionEvent, Participant, ParticipantStatus, Response
from study.config import StudyConfig
from study.participation import trial_plan
from tests.support.browser_harness import (
    AppServer,
    Played,
    continue_when_loaded,
    go_through_instructions,
    go_through_intro_pages,
    new_participant_page,
    onsets,
    play,
    prepare_home,
    study_url,
)
from tests.support.participant_study import FAST_CONFIG, make_stimuli, make_study

pytestmark = pytest.mark.browser
N_TRIALS = 10


def participant_row(db: Database, external_id: str) -> Participant:
    with db.read() as session:
        return session.scalars(select(Participant).where(Participant.external_id == external_id)).one()


def stored_responses(db: Database, participant_id: int) -> list[Response]:
    with db.read() as session:
        return list(
            session.scalars(
                select(Response)
                .where(Response.participant_id == participant_id)
                .order_by(Response.trial_index)
            )
        )


def event_kinds(db: Database, participant_id: int) -> list[str]:
    with db.read() as session:
        return list(
            session.scalars(
                select(InteractionEvent.kind).where(InteractionEvent.participant_id == participant_id)
            )
        )


def assert_stored_as_played(
    db: Database, external_id: str, played: Played, modality: str | None = None
) -> None:
    """Exactly one row per planned trial; positions as planned and shown; choices as pressed."""
    participant = participant_row(db, external_id)
    plan = {trial.trial_index: trial for trial in trial_plan(db, participant.id)}
    rows = stored_responses(db, participant.id)
    assert [row.trial_index for row in rows] == sorted(plan) == list(range(N_TRIALS))
    for row in rows:
        shown = [row.shown_left_id, row.shown_middle_id, row.shown_right_id]
        assert shown == list(plan[row.trial_index].shown) == played.shown[row.trial_index]
        assert row.chosen_position == played.chosen[row.trial_index]
        assert row.chosen_stimulus_id == shown[row.chosen_position]
        assert row.rt_ms >= FAST_CONFIG.min_valid_rt_ms and not row.timed_out
        if modality:
            assert row.input_modality == modality


@pytest.mark.parametrize("via", ["keyboard", "mouse"])
def test_whole_study_is_stored_one_row_per_trial(browser, served, via):
    server, db, _ = served
    page = new_participant_page(browser, server.url)
    page.goto(study_url("test-study", f"whole-{via}"))
    go_through_intro_pages(page)
    played = play(page, via=via, choose=lambda i: (i * 2 + 1) % 3)
    assert played.ended and "ALIGNLAB-DONE" in page.inner_text("body")
    assert_stored_as_played(db, f"whole-{via}", played, modality=via)
    participant = participant_row(db, f"whole-{via}")
    assert participant.status == ParticipantStatus.COMPLETED
    assert participant.browser["device_pixel_ratio"] == 1 and "Chrome" in participant.browser["user_agent"]
    assert participant.browser["window"] == {"width": 1280, "height": 800}
    page.context.close()


def test_reload_mid_block_and_before_the_ack_loses_and_duplicates_nothing(browser, served):
    server, db, _ = served
    page = new_participant_page(browser, server.url)
    page.goto(study_url("test-study", "reloader"))
    go_through_intro_pages(page)
    played = play(page, max_trials=4)  # practice and two trials of block 1
    page.reload()
    played = play(page, max_trials=1, played=played)  # resumes at the first unanswered trial
    assert onsets(page)[0]["trial_index"] == 4

    page.route("**/api/responses", lambda route: route.abort("connectionreset"))  # acks never arrive
    played = play(page, max_trials=1, played=played)
    unacknowledged = max(played.chosen)
    page.wait_for_timeout(300)
    page.reload()
    page.unroute("**/api/responses")
    played = play(page, played=played)
    assert unacknowledged not in [o["trial_index"] for o in onsets(page)]  # answered once, never shown again
    assert_stored_as_played(db, "reloader", played)
    kinds = event_kinds(db, participant_row(db, "reloader").id)
    assert kinds.count("reload") == 2 and kinds.count("session_resumed") == 2
    page.context.close()


def test_server_killed_and_restarted_mid_study(browser, tmp_path):
    db = prepare_home(tmp_path)
    make_study(db, tmp_path, "restart-study")
    server = AppServer(tmp_path).start()
    page = new_participant_page(browser, server.url)
    try:
        page.goto(study_url("restart-study", "survivor"))
        go_through_intro_pages(page)
        played = play(page, max_trials=4)
        server.kill()  # crash mid-block: the block goes on in the browser, answers wait in the outbox
        played = play(page, max_trials=2, played=played)
        pid = participant_row(db, "survivor").id
        assert len(stored_responses(db, pid)) < 6
        time.sleep(1.0)
        server.start()
        played = play(page, played=played)
        assert_stored_as_played(db, "survivor", played)
        assert participant_row(db, "survivor").status == ParticipantStatus.COMPLETED
    finally:
        page.context.close()
        server.stop()
        db.dispose()


def test_a_missing_image_is_recorded_as_unavailable_and_a_timeout_as_a_timeout(browser, tmp_path):
    """An image deleted on the server is retried, then its trial is stored as `unavailable` (never as a
    timeout) and the participant is told; a trial left unanswered times out; the study goes on."""
    db = prepare_home(tmp_path)
    ids = make_stimuli(db, tmp_path)
    config = StudyConfig.from_dict(FAST_CONFIG.to_dict() | {"response_window_ms": 1500})
    make_study(
        db, tmp_path, "fragile-study", config=config, stimulus_ids=ids, n_practice=0, n_blocks=1, per_block=3
    )
    server = AppServer(tmp_path).start()
    page = new_participant_page(browser, server.url)
    try:
        page.goto(study_url("fragile-study", "fragile"))
        page.get_by_role("button", name="I agree and want to take part").click()
        pid = participant_row_when_created(db, "fragile")
        broken = trial_plan(db, pid)[1].shown[0]
        (tmp_path / "stimuli" / "test-shapes" / _file_of(db, broken)).unlink()
        page.get_by_label("Age in years").fill("30")
        page.get_by_role("button", name="Continue").click()
        go_through_instructions(page)
        continue_when_loaded(page)
        page.keyboard.press("Space")
        page.wait_for_function("() => window.__al.onsets.length >= 1")
        page.get_by_text("Please try to answer a bit faster").wait_for()  # trial 0: no answer, window ends
        page.get_by_text("An image of this trial is missing").wait_for()  # trial 1: its image is gone
        page.wait_for_function("() => window.__al.onsets.length >= 2")
        time.sleep(0.15)
        page.keyboard.press("1")
        page.get_by_text("Almost done").wait_for()
        rows = stored_responses(db, pid)
        assert [
            (r.trial_index, r.timed_out, r.unavailable, r.chosen_position, r.input_modality) for r in rows
        ] == [
            (0, True, False, None, "none"),
            (1, False, True, None, "none"),
            (2, False, False, 0, "keyboard"),
        ]
        assert "image_unavailable" in event_kinds(db, pid)
    finally:
        page.context.close()
        server.stop()
        db.dispose()


def test_a_press_before_the_minimum_rt_is_ignored_and_logged_for_qc(browser, served):
    server, db, ids = served
    config = StudyConfig.from_dict(FAST_CONFIG.to_dict() | {"min_valid_rt_ms": 1000})  # Levels' minimum
    make_study(
        db, server.home, "early-study", config=config, stimulus_ids=ids, n_practice=0, n_blocks=1, per_block=2
    )
    page = new_participant_page(browser, server.url)
    page.goto(study_url("early-study", "early"))
    go_through_intro_pages(page)
    continue_when_loaded(page)
    page.keyboard.press("Space")
    page.wait_for_function("() => window.__al.onsets.length >= 1")
    page.keyboard.press("ArrowLeft")  # at once: ignored, the trial goes on
    page.keyboard.press("ArrowDown")  # a second early press on the same trial is not logged again
    time.sleep(1.2)
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => window.__al.onsets.length >= 2")
    pid = participant_row(db, "early").id
    deadline = time.time() + 10
    while time.time() < deadline and not (
        stored_responses(db, pid) and "early_response" in event_kinds(db, pid)
    ):
        time.sleep(0.1)
    (row,) = stored_responses(db, pid)
    assert (row.trial_index, row.chosen_position) == (0, 2) and row.rt_ms >= 1000
    with db.read() as session:
        early = session.scalars(
            select(InteractionEvent).where(
                InteractionEvent.participant_id == pid, InteractionEvent.kind == "early_response"
            )
        ).all()
    assert [(e.trial_index, e.detail["position"]) for e in early] == [(0, 0)] and early[0].detail[
        "rt_ms"
    ] < 1000
    page.context.close()


def participant_row_when_created(db: Database, external_id: str, timeout: float = 20) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return participant_row(db, external_id).id
        except Exception:
            time.sleep(0.1)
    raise TimeoutError(f"participant {external_id} was not created")


def _file_of(db: Database, stimulus_id: int) -> str:
    from db.models import Stimulus

    with db.read() as session:
        return session.get(Stimulus, stimulus_id).path.rsplit("/", 1)[1]
