"""Who sees what: the Maps page (human results, file names, downloads) only after the researcher login, the
public gallery only when the researcher turns it on and without human results, downloads or server paths;
no page anyone can open shows a server path; the researcher gets in despite many guesses from elsewhere."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import map_cache
from db.engine import Database
from study.access import attempt_login
from tests.app.conftest import MAIN, RESEARCHER_PASSWORD
from tests.support.map_fixtures import make_fake_runs

NOT_REGISTERED = "not a registered page|Could not find"


@pytest.fixture
def runs(app_home):
    for name in ("representations", "map_inputs", "paired_maps", "reorganisation", "thumbnails"):
        getattr(map_cache, name).clear()
    db = Database.from_url()
    make_fake_runs(db, app_home)
    db.dispose()
    return app_home


def _log_in(at: AppTest) -> AppTest:
    at.switch_page("views/login.py").run()
    at.text_input[0].input(RESEARCHER_PASSWORD)
    at.button[0].click().run()
    assert at.session_state["researcher_logged_in"] is True
    return at


def _texts(at: AppTest) -> str:
    """Every text element's value on the page, joined (where a path would show)."""
    kinds = ("markdown", "caption", "info", "warning", "error", "title", "code", "text")
    return "\n".join(str(element.value) for kind in kinds for element in at.get(kind))


def test_maps_page_and_its_download_are_refused_without_login(runs):
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    assert not at.exception
    with pytest.raises(ValueError, match=NOT_REGISTERED):
        at.switch_page("views/maps.py").run()
    assert not at.get("download_button")
    _log_in(at)
    at.session_state["map_method"] = "pca"
    at.switch_page("views/maps.py").run()
    assert not at.exception, at.exception
    assert [button.proto.label for button in at.get("download_button")] == [
        "Download the maps (interactive HTML)"
    ]


def test_public_gallery_only_when_turned_on_and_without_human_results_downloads_or_paths(runs, monkeypatch):
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    with pytest.raises(ValueError, match=NOT_REGISTERED):
        at.switch_page("views/gallery.py").run()
    monkeypatch.setenv("ALIGNLAB_PUBLIC_GALLERY", "1")
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/gallery.py").run()
    assert not at.exception, at.exception
    html = at.get("iframe")[0].proto.srcdoc
    assert "alignlab-hover-thumb" in html and html.count("data:image/jpeg;base64,") == 80
    assert not at.get("download_button") and not at.get("plotly_chart") and not at.dataframe
    assert str(runs) not in html + _texts(at)
    assert "RSA" not in html and "response time" not in html.lower()


def test_public_pages_show_no_server_path_and_the_researcher_sees_the_data_directory(app_home, monkeypatch):
    from app.auth import GENERATED_PASSWORD_FILE, researcher_password_hash

    monkeypatch.delenv("ALIGNLAB_RESEARCHER_PASSWORD")  # a fresh install: the login page names the file
    researcher_password_hash.clear()
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    assert not at.exception
    assert str(app_home) not in _texts(at)
    at.switch_page("views/login.py").run()
    assert str(app_home) not in _texts(at) and GENERATED_PASSWORD_FILE in _texts(at)
    at.text_input[0].input((app_home / GENERATED_PASSWORD_FILE).read_text().strip())
    at.button[0].click().run()
    at.switch_page("views/home.py").run()
    assert any(str(app_home) in caption.value for caption in at.caption)


def test_the_right_password_logs_in_after_200_wrong_attempts_from_other_addresses(app_home):
    from app.auth import researcher_password_hash
    from app.resources import get_db

    refused = [
        attempt_login(get_db(), f"198.51.100.{i % 60}", "guess", researcher_password_hash()).ok
        for i in range(200)
    ]
    assert refused == [False] * 200
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    _log_in(at)
    assert not at.error
