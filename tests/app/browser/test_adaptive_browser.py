"""An adaptive study in a real browser (`streamlit run app/server.py`, Debian's chromium via Playwright).

Simulated participants answer first; the first browser participant's answers then make a teacher refit due
while they are still answering: the participant API queues an `adaptive` run after the reply, a separate
`alignlab jobs run` process fits the teacher (the real teacher stage, default backbone) and chooses a new
list with it. The second browser participant is handed that list. Neither waits longer than the fixation
between a response and the next trial (measured on the page), and every trial of the second list says,
in trials.selection, that the refitted teacher chose it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.models import (
    Participant,
    Response,
    Run,
    RunStatus,
    StudyStatus,
    Trial,
    TrialKind,
    TripletList,
    as_utc,
)
from study.adaptive import answer_count
from study.config import StudyConfig
from study.design import DesignConfig, create_study_from_design
from study.simulate import simulate_participants
from study.stimuli import import_stimulus_set
from study.studies import set_study_status
from tests.support.browser_harness import AppServer, new_participant_page, play, prepare_home, study_url
from tests.support.participant_study import straight_to_trials
from tests.support.stimulus_files import make_layout

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SLUG = "ada-live"
ITI_MS = 400
FRAME_SLACK_MS = 100  # the reveal waits for the first frame at or after the fixation's end (6 frames here)
LAYOUT = {sup: {f"{sup}{c}": 4 for c in range(3)} for sup in ("animal", "tool", "food")}  # 36 images
N_SIMULATED = 7  # x 12 experimental answers: enough for a teacher (>= 50 training judgments)
REFIT_EVERY = 90  # due during the first browser participant's 12 answers
DESIGN = DesignConfig(
    n_lists=1,
    n_between_class=4,
    n_within_class=4,
    n_class_border=4,
    n_blocks=1,
    catch_per_block=1,
    n_practice=0,
    seed=5,
    mode="adaptive",
    strategy="uncertainty",
    random_share=0.25,
    refit_every=REFIT_EVERY,
    lists_ahead=1,
    pool_per_level=60,
)


def make_adaptive_study(db, home, monkeypatch) -> int:
    monkeypatch.setenv("ALIGNLAB_HOME", str(home))
    report = import_stimulus_set(db, make_layout(home / "src", LAYOUT), "shapes", data_dir=home)
    config = StudyConfig.from_dict(straight_to_trials(ITI_MS).to_dict() | {"participants_per_list": 1})
    study_id, _ = create_study_from_design(db, SLUG, report.stimulus_set_id, DESIGN, config)
    set_study_status(db, SLUG, StudyStatus.OPEN)
    simulate_participants(db, SLUG, N_SIMULATED, careless_share=0.0)
    return study_id


def take_part(browser, server: AppServer, external_id: str) -> dict:
    """One participant through the whole list; the page's onset and response log."""
    page = new_participant_page(browser, server.url)
    page.goto(study_url(SLUG, external_id))
    page.get_by_role("button", name="I agree and want to take part").click()
    played = play(page, via="keyboard", choose=lambda index: index % 3)
    assert played.ended, f"{external_id} did not reach the end page"
    log = page.evaluate("() => window.__al")
    page.context.close()
    return log


def waits_beyond_fixation(log: dict) -> list[float]:
    """Next trial onset minus response minus the fixation, for every response followed by a trial."""
    onsets = sorted(onset["t"] for onset in log["onsets"])
    later = ([t for t in onsets if t > response["t"]] for response in log["responses"])
    return [
        after[0] - response["t"] - ITI_MS
        for response, after in zip(log["responses"], later, strict=True)
        if after
    ]


def wait_for_refit(db, study_id: int, timeout_s: float = 420) -> Run:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with db.read() as session:
            runs = session.scalars(select(Run).where(Run.study_id == study_id, Run.kind == "adaptive")).all()
        if runs and all(run.status not in (RunStatus.QUEUED, RunStatus.RUNNING) for run in runs):
            assert [run.status for run in runs] == [RunStatus.SUCCEEDED], [run.error for run in runs]
            return runs[0]
        time.sleep(1)
    raise TimeoutError(f"no adaptive refit finished within {timeout_s} s")


def participant_list(db, external_id: str) -> tuple[int, list[Trial]]:
    with db.read() as session:
        participant = session.scalars(select(Participant).where(Participant.external_id == external_id)).one()
        index = session.get(TripletList, participant.list_id).list_index
        trials = session.scalars(select(Trial).where(Trial.list_id == participant.list_id)).all()
        return index, list(trials)


def answer_times(db, external_id: str) -> list:
    """When the participant's answers a refit counts (experimental trials) arrived, in order."""
    with db.read() as session:
        moments = session.scalars(
            select(Response.server_received_at)
            .join(Participant)
            .join(Trial, Trial.id == Response.trial_id)
            .where(Participant.external_id == external_id, Trial.kind == TrialKind.EXPERIMENTAL)
            .order_by(Response.server_received_at)
        ).all()
    return [as_utc(moment) for moment in moments]


def test_a_refitted_teacher_chooses_the_next_list_while_people_answer(browser, tmp_path, monkeypatch):
    home = tmp_path / "home"
    db = prepare_home(home)
    study_id = make_adaptive_study(db, home, monkeypatch)
    with db.read() as session:
        simulated = answer_count(session, study_id)
    assert REFIT_EVERY - 12 < simulated < REFIT_EVERY  # the refit falls due during the first person's list
    server = AppServer(home).start()
    try:
        first = take_part(browser, server, "first")
        refit = wait_for_refit(db, study_id)
        second = take_part(browser, server, "second")
    finally:
        server.stop()

    # the refit was queued after the first person's answers made it due, and fitted on them
    due_at = answer_times(db, "first")[REFIT_EVERY - simulated - 1]
    assert as_utc(refit.created_at) >= due_at
    assert refit.metrics["n_answers"] >= REFIT_EVERY and refit.metrics["lists_created"]
    held_out = refit.metrics["held_out_by_selection"]  # every answer so far was to a blindly drawn list
    assert set(held_out) == {"random share"} and held_out["random share"]["n"] > 0
    fitting = (as_utc(refit.finished_at) - as_utc(refit.created_at)).total_seconds()
    print(f"refit {refit.id}: queued to done {fitting:.1f} s, fitted on {refit.metrics['n_answers']} answers")

    # the second person was handed the list the refitted teacher chose (the first one a list drawn blind)
    first_index, first_trials = participant_list(db, "first")
    second_index, second_trials = participant_list(db, "second")
    assert first_index == 0 and second_index in refit.metrics["lists_created"]
    chosen = [t.selection for t in second_trials if t.kind == TrialKind.EXPERIMENTAL]
    assert len(chosen) == DESIGN.n_experimental
    assert {s["teacher_run"] for s in chosen} == {str(refit.id)}
    assert sorted(s["strategy"] for s in chosen) == ["random"] * 3 + ["uncertainty"] * 9
    assert all(s["strategy"] == "random" for t in first_trials if (s := t.selection))

    # nobody waited longer than the fixation (plus the frame it is revealed on), refit or not
    waits = waits_beyond_fixation(first) + waits_beyond_fixation(second)
    print(f"waits beyond the {ITI_MS} ms fixation (ms): {sorted(round(w, 1) for w in waits)}")
    assert len(waits) == 2 * (DESIGN.n_experimental + 1 - 1)
    assert max(waits) <= FRAME_SLACK_MS, waits
    db.dispose()
