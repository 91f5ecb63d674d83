"""Behind a proxy that serves AlignLab under a path (`server.baseUrlPath`), the participant's responses,
events and images go to that path too: a whole session is stored and no request leaves the base path."""

from __future__ import annotations

import pytest

from tests.app.browser.test_participant_browser import assert_stored_as_played
from tests.support.browser_harness import (
    AppServer,
    go_through_intro_pages,
    new_participant_page,
    play,
    prepare_home,
    study_url,
)
from tests.support.participant_study import make_stimuli, make_study

pytestmark = pytest.mark.browser


def test_a_study_under_a_base_path_stores_every_response_through_that_path(browser, tmp_path):
    db = prepare_home(tmp_path)
    make_study(db, tmp_path, "test-study", stimulus_ids=make_stimuli(db, tmp_path))
    server = AppServer(tmp_path, base_path="/lab").start()
    try:
        page = new_participant_page(browser, server.url)
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(server.url + study_url("test-study", "proxied"))
        go_through_intro_pages(page)
        played = play(page)
        assert played.ended
        assert_stored_as_played(db, "proxied", played)
        port_root = f"http://127.0.0.1:{server.port}/"
        api_calls = [url for url in requests if "/api/" in url]
        assert any("/api/responses" in url for url in api_calls) and any(
            "/api/stimuli/" in url for url in api_calls
        )
        assert [url for url in api_calls if not url.startswith(port_root + "lab/api/")] == []
        page.context.close()
    finally:
        server.stop()
        db.dispose()
