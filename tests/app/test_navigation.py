"""The app's routing: researcher pages need the login; a participant link shows only the study."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import MAIN, RESEARCHER_PASSWORD


def test_home_page_says_how_to_start_without_showing_the_data_directory(app_home):
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    assert not at.exception
    assert not any(str(app_home) in caption.value for caption in at.caption)  # public: no server paths
    assert any("No demo study yet" in info.value for info in at.info)


def test_wrong_password_is_refused_and_right_password_logs_in(app_home):
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    at.switch_page("views/login.py").run()
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in at.error[0].value
    with pytest.raises(ValueError, match="not a registered page|Could not find"):
        at.run().switch_page("views/studies.py").run()  # the researcher pages are still out of reach
    at.text_input[0].input(RESEARCHER_PASSWORD)
    at.button[0].click().run()
    assert at.session_state["researcher_logged_in"] is True


def test_a_participant_link_offers_no_researcher_page(app_home):
    at = AppTest.from_file(MAIN, default_timeout=30)
    at.query_params["study"] = "anything"
    at.run()
    for page in ("views/participants.py", "views/studies.py", "views/login.py", "views/maps.py"):
        with pytest.raises(ValueError, match="not a registered page|Could not find"):
            at.switch_page(page).run()
