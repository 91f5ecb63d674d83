"""Browser-test fixtures: Debian's chromium through Playwright, and an app server with a small study."""

from __future__ import annotations

import pytest

from tests.support.browser_harness import AppServer, launch_chromium, prepare_home
from tests.support.participant_study import make_stimuli, make_study


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One app process for a test module, serving the study `test-study` (2 practice + 2 blocks of 4)."""
    home = tmp_path_factory.mktemp("alignlab-home")
    db = prepare_home(home)
    ids = make_stimuli(db, home)
    make_study(db, home, "test-study", stimulus_ids=ids)
    server = AppServer(home).start()
    yield server, db, ids
    server.stop()
    db.dispose()
