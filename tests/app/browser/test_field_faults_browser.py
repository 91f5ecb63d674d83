"""Field conditions that once cost answers, each followed by a check of the database.

A participant keeps answering through: the browser offline for 20 s, the server down for 30 s, 30 % of every
API request (images, responses, events) failing at random for the whole study, and a server restarted with
another secret key; and a phone in portrait completes the study by touch with all three images on screen.
After each: exactly one row per trial, none missing, none timed out or unavailable that was answered."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from db.engine import Database
from db.models import Participant, ParticipantStatus
from study.participation import trial_plan
from tests.app.browser.test_participant_browser import participant_row, stored_responses
from tests.support.browser_harness import (
    EVENT_LOG_SCRIPT,
    AppServer,
    Played,
    go_through_intro_pages,
    new_participant_page,
    play,
    prepare_home,
    study_url,
)
from tests.support.participant_study import make_stimuli, make_study

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def assert_every_trial_answered_once(db: Database, external_id: str, played: Played) -> None:
    """One row per planned trial, each the answer the participant gave: no gaps, no spurious timeouts."""
    participant = participant_row(db, external_id)
    plan = {trial.trial_index: trial for trial in trial_plan(db, participant.id)}
    rows = stored_responses(db, participant.id)
    summary = [(r.trial_index, r.chosen_position, r.timed_out, r.input_modality) for r in rows]
    assert [row.trial_index for row in rows] == sorted(plan), summary
    assert sorted(played.chosen) == sorted(plan), (summary, played)
    for row in rows:
        assert not row.timed_out, f"trial {row.trial_index} stored as a timeout"
        assert row.chosen_position == played.chosen[row.trial_index]
        assert [row.shown_left_id, row.shown_middle_id, row.shown_right_id] == played.shown[row.trial_index]
    assert participant.status == ParticipantStatus.COMPLETED


@pytest.fixture
def lab(tmp_path):
    """A fresh data home with a 2-practice + 2 x 4 study; the server is started by the test."""
    db = prepare_home(tmp_path)
    ids = make_stimuli(db, tmp_path)
    make_study(db, tmp_path, "field-study", stimulus_ids=ids)
    servers: list[AppServer] = []
    yield tmp_path, db, servers
    for server in servers:
        server.stop()
    db.dispose()


def _start(lab, **kwargs) -> AppServer:
    home, _, servers = lab
    server = AppServer(home, **kwargs).start()
    servers.append(server)
    return server


@dataclass(frozen=True)
class Interruption:
    """A fault that begins after the first trial of block 1, while the participant keeps answering
    `answered_during` trials from images already loaded, and ends `lasting_s` seconds after it began."""

    begin: Callable[[Page, AppServer], None]
    end: Callable[[Page, AppServer], None]
    lasting_s: float
    answered_during: int
    server_env: dict[str, str] = field(default_factory=dict)
    # The participant keeps answering while `end` runs (a server restart takes seconds, more under load;
    # a participant does not stop answering meanwhile, and a trial left on screen would rightly time out).
    answer_while_ending: bool = False


def _go_offline(page: Page, _server: AppServer) -> None:
    page.context.set_offline(True)


def _back_online(page: Page, _server: AppServer) -> None:
    page.context.set_offline(False)


def _crash(_page: Page, server: AppServer) -> None:
    server.kill()


def _restart(_page: Page, server: AppServer) -> None:
    server.start()


def _restart_with_another_key(_page: Page, server: AppServer) -> None:
    server.extra_env["ALIGNLAB_SECRET_KEY"] = "second-key-" + "b" * 32
    server.start()


INTERRUPTIONS = {  # the participant's external id -> what happens to them mid-block
    "offline": Interruption(_go_offline, _back_online, lasting_s=20, answered_during=3),
    "outage": Interruption(_crash, _restart, lasting_s=30, answered_during=3),
    "rekeyed": Interruption(  # answers queued while down are signed with the old key
        _crash,
        _restart_with_another_key,
        lasting_s=0,
        answered_during=2,
        server_env={"ALIGNLAB_SECRET_KEY": "first-key-" + "a" * 32},
        answer_while_ending=True,
    ),
}


@pytest.mark.parametrize("external_id", list(INTERRUPTIONS))
def test_answering_through_an_interruption_mid_block_loses_nothing(browser, lab, external_id):
    """The browser offline for 20 s, the server down for 30 s, or the server restarted with another secret
    key, mid-block while the participant answers: nothing is stored while cut off, everything once after."""
    fault = INTERRUPTIONS[external_id]
    _, db, _ = lab
    server = _start(lab, extra_env=dict(fault.server_env))
    page = new_participant_page(browser, server.url)
    page.goto(study_url("field-study", external_id))
    go_through_intro_pages(page)
    played = play(page, max_trials=3)  # practice + the first trial of block 1
    fault.begin(page, server)
    began = time.time()
    played = play(page, max_trials=fault.answered_during, played=played)
    assert len(stored_responses(db, participant_row(db, external_id).id)) <= 3
    time.sleep(max(0.0, fault.lasting_s - (time.time() - began)))
    if fault.answer_while_ending:  # `end` touches only the server here, never the page (not thread-safe)
        ending = threading.Thread(target=fault.end, args=(page, server))
        ending.start()
        played = play(page, played=played)
        ending.join()
    else:
        fault.end(page, server)
        played = play(page, played=played)
    assert played.ended
    assert_every_trial_answered_once(db, external_id, played)
    page.context.close()


def test_thirty_percent_of_api_requests_failing_for_the_whole_study(browser, lab):
    _, db, _ = lab
    server = _start(lab)
    page = new_participant_page(browser, server.url)
    chance = random.Random(7)
    failed = []

    def flaky(route):
        if chance.random() < 0.3:
            failed.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/**", flaky)
    page.goto(study_url("field-study", "flaky"))
    go_through_intro_pages(page)
    played = play(page)
    assert played.ended
    assert any("/stimuli/" in url for url in failed) and any("/responses" in url for url in failed)
    assert_every_trial_answered_once(db, "flaky", played)
    page.context.close()


def test_a_phone_in_portrait_completes_the_study_by_touch_with_every_image_on_screen(browser, lab):
    _, db, _ = lab
    server = _start(lab)
    context = browser.new_context(
        base_url=server.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    context.add_init_script(EVENT_LOG_SCRIPT)
    page = context.new_page()
    page.goto(study_url("field-study", "phone"))
    go_through_intro_pages(page)
    boxes = []

    def tap_checking_layout(page, position, via):
        images = [page.get_by_test_id(f"al-slot-{p}").locator("img").bounding_box() for p in range(3)]
        boxes.append(images)
        page.get_by_test_id(f"al-slot-{position}").tap()

    played = play(page, via="touch", respond_with=tap_checking_layout)
    assert played.ended
    assert_every_trial_answered_once(db, "phone", played)
    for images in boxes:
        for box in images:
            assert box is not None and box["width"] >= 80
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"image off screen: {box}"
    modalities = {row.input_modality for row in stored_responses(db, participant_row(db, "phone").id)}
    assert modalities == {"touch"}
    context.close()


def test_page_loads_without_consent_reserve_nothing_and_a_decline_stores_nothing(browser, lab):
    """Three anonymous loads of a one-list study, and a participant who declines, leave the list free; the
    next Prolific participant gets in. Nobody who did not consent has a row that analyses could read."""
    home, db, _ = lab
    make_study(
        db,
        home,
        "one-list",
        stimulus_ids=make_stimuli(db, home, name="one-list-shapes"),
        participants_per_list=1,
    )
    server = _start(lab)
    for _ in range(3):
        page = new_participant_page(browser, server.url)
        page.goto(study_url("one-list"))
        page.get_by_role("button", name="I agree and want to take part").wait_for()
        page.context.close()
    decliner = new_participant_page(browser, server.url)
    decliner.goto(study_url("one-list", "decliner"))
    decliner.get_by_role("button", name="I do not agree").click()
    decliner.get_by_text("ALIGNLAB-NOCONSENT").wait_for()
    decliner.context.close()
    with db.read() as session:
        rows = session.execute(select(Participant.external_id, Participant.consent)).all()
    assert [(external_id, consent) for external_id, consent in rows if external_id == "decliner"] == [
        ("decliner", False)
    ]
    assert len(rows) == 1  # the anonymous loads created nobody
    page = new_participant_page(browser, server.url)
    page.goto(study_url("one-list", "real-participant"))
    go_through_intro_pages(page)  # admitted: the list was still free
    page.context.close()
