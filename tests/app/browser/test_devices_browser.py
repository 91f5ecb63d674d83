"""The device policy and the full-screen step in Debian's chromium: a phone is turned away before consent
when the study needs a computer, a small window until it is enlarged; a full-screen study enters full screen
at the block start and the exit is counted by QC."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from db.models import Participant
from study.config import StudyConfig
from study.qc import participant_qc
from tests.app.browser.test_participant_browser import event_kinds, participant_row
from tests.support.browser_harness import (
    continue_when_loaded,
    go_through_intro_pages,
    new_participant_page,
    study_url,
)
from tests.support.participant_study import FAST_CONFIG, make_study

pytestmark = pytest.mark.browser
CONSENT = "I agree and want to take part"


def _study(served, slug: str, **policy) -> None:
    server, db, ids = served
    config = StudyConfig.from_dict(FAST_CONFIG.to_dict() | policy)
    make_study(db, server.home, slug, config=config, stimulus_ids=ids, n_practice=0, n_blocks=1, per_block=2)


def _participants(db, slug_prefix: str) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).where(Participant.external_id.startswith(slug_prefix)))


def test_a_phone_is_told_to_use_a_computer_before_consent_and_nothing_is_stored(browser, served):
    server, db, _ = served
    _study(served, "desk-study", allow_phones=False)
    context = browser.new_context(
        base_url=server.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.goto(study_url("desk-study", "on-a-phone"))
    page.get_by_text("This study cannot be done on a phone").wait_for()
    assert page.get_by_role("button", name=CONSENT).count() == 0
    assert _participants(db, "on-a-phone") == 0
    context.close()

    computer = new_participant_page(browser, server.url)
    computer.goto(study_url("desk-study", "on-a-computer"))
    computer.get_by_role("button", name=CONSENT).wait_for()
    computer.context.close()


def test_a_small_window_waits_until_it_is_enlarged(browser, served):
    server, _, _ = served
    _study(served, "wide-study", min_window_width_px=1200, min_window_height_px=700)
    context = browser.new_context(base_url=server.url, viewport={"width": 900, "height": 600})
    page = context.new_page()
    page.goto(study_url("wide-study", "small-window"))
    page.get_by_text("at least 1200 × 700 pixels; yours is 900 × 600").wait_for()
    assert page.get_by_role("button", name=CONSENT).count() == 0
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("button", name=CONSENT).wait_for()  # the resize is reported; the study goes on
    context.close()


def test_a_full_screen_study_enters_full_screen_and_qc_counts_the_exit(browser, served):
    server, db, _ = served
    _study(served, "fullscreen-study", fullscreen=True)
    page = new_participant_page(browser, server.url)
    page.goto(study_url("fullscreen-study", "fullscreen"))
    go_through_intro_pages(page)
    assert "switches to full screen" in page.get_by_test_id("al-intro").inner_text()
    continue_when_loaded(page)
    page.get_by_test_id("al-continue").click()
    page.wait_for_function("() => document.fullscreenElement !== null")
    page.evaluate("() => document.exitFullscreen()")
    pid = participant_row(db, "fullscreen").id
    deadline = time.time() + 20
    while time.time() < deadline and "fullscreen_exit" not in event_kinds(db, pid):
        time.sleep(0.2)
    kinds = event_kinds(db, pid)
    assert "fullscreen_enter" in kinds and "fullscreen_exit" in kinds
    qc = participant_qc(db, "fullscreen-study").set_index("participant_id")
    assert qc.loc[pid, "fullscreen_exits"] == 1
    page.context.close()
