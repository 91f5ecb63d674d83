"""On a freshly started server, typing a researcher page's address never shows its data: every request goes
through app/main.py and its login (a legacy `pages/` folder would be served before main.py ever ran)."""

from __future__ import annotations

import pytest

from tests.support.browser_harness import AppServer, prepare_home

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("path", ["/participants", "/studies", "/alignment", "/stimuli"])
def test_first_request_to_a_researcher_address_shows_no_researcher_page(browser, tmp_path, path):
    prepare_home(tmp_path).dispose()
    server = AppServer(tmp_path).start()
    try:
        page = browser.new_page()
        page.goto(server.url + path)
        page.get_by_text("Log in").first.wait_for(timeout=60_000)  # the app's own navigation has rendered
        for researcher_text in (
            "Quality control",
            "Participants & data",
            "New study",
            "Alignment runs",
            "Import a stimulus set",
        ):
            assert page.get_by_text(researcher_text).count() == 0, researcher_text
        page.close()
    finally:
        server.stop()
