"""The README's multi-process set-up, for real: two `streamlit run` processes on one PostgreSQL database
with a shared key, behind Debian's nginx configured from deploy/nginx/alignlab.conf.template.

A participant's answers land on both processes; the process holding their page is killed mid-block; the
study goes on through the other one and the database holds exactly one row per trial."""

from __future__ import annotations

import pytest

from db.engine import Database
from tests.app.browser.test_field_faults_browser import assert_every_trial_answered_once
from tests.support.browser_harness import go_through_intro_pages, new_participant_page, play, study_url
from tests.support.deployment import TwoProcessDeployment, migrate
from tests.support.participant_study import make_stimuli, make_study
from tests.support.pg_temp import TemporaryPostgres

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


@pytest.fixture
def deployment(tmp_path):
    with TemporaryPostgres(database="deployed") as postgres:
        migrate(postgres.url, tmp_path)
        db = Database.from_url(postgres.url)
        make_study(db, tmp_path, "shared-study", stimulus_ids=make_stimuli(db, tmp_path))
        setup = TwoProcessDeployment(tmp_path, postgres).start()
        try:
            yield setup, db
        finally:
            setup.stop()
            db.dispose()


def test_a_participant_across_two_processes_and_a_killed_one_loses_nothing(browser, deployment):
    setup, db = deployment
    page = new_participant_page(browser, setup.url)
    page.goto(study_url("shared-study", "travelling"))
    go_through_intro_pages(page)
    played = play(page, max_trials=3)
    (page_upstream,) = setup.nginx.upstreams_used("/_stcore/host-config") or setup.nginx.upstreams_used("/")
    sticky = next(app for app in setup.apps if page_upstream.endswith(f":{app.port}"))
    sticky.kill()  # the process holding this participant's page dies mid-block
    played = play(page, played=played)
    assert played.ended
    assert_every_trial_answered_once(db, "travelling", played)
    answered_by = setup.nginx.upstreams_used("/api/responses")
    assert {address.rsplit(":", 1)[1] for address in answered_by} == {str(app.port) for app in setup.apps}
