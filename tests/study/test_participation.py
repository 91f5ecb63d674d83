"""Server side of a participant session: entry, assignment, idempotent responses, rejections, finishing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.models import (
    InteractionEvent,
    Participant,
    ParticipantStatus,
    Response,
    Stimulus,
    StimulusSet,
    StudyStatus,
    Trial,
    TrialKind,
    TripletLevel,
    utcnow,
)
from study import participation as P
from study.config import StudyConfig
from study.studies import StudyNotFound, TrialSpec, create_study


def _stimuli(db, n=9) -> list[int]:
    with db.write() as session:
        stimulus_set = StimulusSet(name="set")
        session.add(stimulus_set)
        session.flush()
        rows = [
            Stimulus(
                stimulus_set_id=stimulus_set.id,
                name=f"{i}.png",
                path=f"{i}.png",
                content_hash=f"h{i}",
                category=f"c{i // 3}",
                width=8,
                height=8,
                n_bytes=10,
            )
            for i in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _study(db, n_lists=2, slug="study-one", per_list=1, **config) -> list[int]:
    ids = _stimuli(db)
    specs = [
        TrialSpec((ids[0], ids[1], ids[2]), TrialKind.EXPERIMENTAL, TripletLevel.WITHIN_CLASS),
        TrialSpec((ids[3], ids[4], ids[6]), TrialKind.CATCH, odd_known=True),
        TrialSpec((ids[0], ids[3], ids[6]), TrialKind.EXPERIMENTAL, TripletLevel.BETWEEN_CLASS),
    ]
    create_study(
        db,
        slug,
        None,
        [specs] * n_lists,
        StudyConfig(participants_per_list=per_list, **config),
        status=StudyStatus.OPEN,
    )
    return ids


def _answer(db, pid, trial, position=0, rt=1500.0):
    return P.record_response(db, pid, P.ResponsePayload(trial.trial_index, trial.shown, position, rt))


def _count(db, model) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_returning_participant_gets_the_same_row_and_list(any_db):
    _study(any_db)
    first = P.enter_study(any_db, "study-one", "PID_1", external_study_id="S", external_session_id="X")
    again = P.enter_study(any_db, "study-one", "PID_1")
    assert first.is_new and not again.is_new
    assert again.participant_id == first.participant_id
    assert _count(any_db, Participant) == 1


def test_unknown_study_and_malformed_ids_are_refused(db):
    _study(db)
    with pytest.raises(StudyNotFound, match="no-such-study"):
        P.enter_study(db, "no-such-study", "PID")
    for bad in ["x" * 65, "a b", "<script>", "pid;drop"]:
        with pytest.raises(P.InvalidParticipantId, match="expected 1-64 letters"):
            P.enter_study(db, "study-one", bad)
    assert _count(db, Participant) == 0


def test_anonymous_entry_generates_an_id(db):
    _study(db)
    entry = P.enter_study(db, "study-one")
    assert entry.external_id.startswith("anon-")


def test_paused_study_admits_nobody_new_but_lets_participants_return(db):
    from study.studies import set_study_status

    _study(db)
    entry = P.enter_study(db, "study-one", "EARLY")
    set_study_status(db, "study-one", StudyStatus.PAUSED)
    with pytest.raises(P.StudyUnavailable, match="paused"):
        P.enter_study(db, "study-one", "LATE")
    assert P.enter_study(db, "study-one", "EARLY").participant_id == entry.participant_id


def test_display_order_is_a_stable_permutation_stored_with_the_response(db):
    _study(db)
    pid = P.enter_study(db, "study-one", "P").participant_id
    plan = P.trial_plan(db, pid)
    assert plan == P.trial_plan(db, pid)
    with db.read() as session:
        stored = {t.id: (t.stim0_id, t.stim1_id, t.stim2_id) for t in session.scalars(select(Trial))}
    assert all(sorted(t.shown) == sorted(stored[t.trial_id]) for t in plan)  # a permutation of its triplet
    assert _answer(db, pid, plan[0], position=2)
    with db.read() as session:
        row = session.scalar(select(Response))
    assert (row.shown_left_id, row.shown_middle_id, row.shown_right_id) == plan[0].shown
    assert row.chosen_position == 2 and row.chosen_stimulus_id == plan[0].shown[2]


def test_display_orders_vary_across_trials():
    orders = {P.display_order(7, i) for i in range(60)}
    assert len(orders) == 6  # all six permutations occur


def test_duplicate_response_is_stored_once_and_reported_as_duplicate(any_db):
    _study(any_db)
    pid = P.enter_study(any_db, "study-one", "P").participant_id
    trial = P.trial_plan(any_db, pid)[0]
    assert _answer(any_db, pid, trial, position=1) is True
    assert _answer(any_db, pid, trial, position=2) is False  # a replay: first answer stands
    with any_db.read() as session:
        assert session.scalar(select(Response.chosen_position)) == 1
    assert _count(any_db, Response) == 1


@pytest.mark.parametrize(
    "payload, message",
    [
        (dict(trial_index=99), "not part of"),
        (dict(shown=(1, 2, 9)), "not the images assigned"),
        (dict(chosen_position=3), "chosen_position must be 0, 1 or 2"),
        (dict(rt_ms=float("nan")), "rt_ms must be a finite number"),
        (dict(rt_ms=-5.0), "rt_ms -5 is under the study's minimum valid response time of 1000 ms"),
        (dict(rt_ms=999.0), "rt_ms 999 is under the study's minimum valid response time"),
        (dict(rt_ms=20_001.0), r"rt_ms 20001 is over the study's response window plus slack \(20000 ms\)"),
        (dict(input_modality="telepathy"), "input_modality 'telepathy' is not one of"),
        (dict(timed_out=True), "chosen_position must be null for a timed-out trial"),
        (dict(timed_out=True, chosen_position=None), "rt_ms must be null for a timed-out trial"),
        (dict(unavailable=True, chosen_position=None, rt_ms=None), "input_modality must be 'none'"),
    ],
)
def test_responses_that_do_not_fit_are_rejected_logged_and_not_stored(db, payload, message):
    _study(db)
    pid = P.enter_study(db, "study-one", "P").participant_id
    trial = P.trial_plan(db, pid)[0]
    values = dict(trial_index=trial.trial_index, shown=trial.shown, chosen_position=0, rt_ms=1200.0) | payload
    with pytest.raises(P.ResponseRejected, match=message):
        P.record_response(db, pid, P.ResponsePayload(**values))
    assert _count(db, Response) == 0
    with db.read() as session:
        assert session.scalar(select(InteractionEvent.kind)) == "rejected_response"


def test_timeout_is_recorded_without_a_choice(db):
    _study(db)
    pid = P.enter_study(db, "study-one", "P").participant_id
    trial = P.trial_plan(db, pid)[0]
    assert P.record_response(
        db,
        pid,
        P.ResponsePayload(trial.trial_index, trial.shown, None, None, input_modality="none", timed_out=True),
    )
    with db.read() as session:
        row = session.scalar(select(Response))
    assert row.timed_out and row.chosen_stimulus_id is None


def test_completion_requires_every_trial_then_refuses_new_responses(db):
    _study(db)
    pid = P.enter_study(db, "study-one", "P").participant_id
    plan = P.trial_plan(db, pid)
    _answer(db, pid, plan[0])
    with pytest.raises(P.IncompleteSession) as incomplete:
        P.finish_participant(db, pid, ParticipantStatus.COMPLETED)
    assert incomplete.value.missing == [1, 2]
    for trial in plan[1:]:
        _answer(db, pid, trial)
    assert P.finish_participant(db, pid, ParticipantStatus.COMPLETED) == "ALIGNLAB-DONE"
    assert P.finish_participant(db, pid, ParticipantStatus.EARLY_EXIT) == "ALIGNLAB-DONE"  # already final
    assert _answer(db, pid, plan[0]) is False  # an outbox re-send after completion: acknowledged
    assert P.enter_study(db, "study-one", "P").status == ParticipantStatus.COMPLETED


def test_response_after_early_exit_is_refused(db):
    _study(db)
    pid = P.enter_study(db, "study-one", "P").participant_id
    plan = P.trial_plan(db, pid)
    assert P.finish_participant(db, pid, ParticipantStatus.EARLY_EXIT) == "ALIGNLAB-EARLY"
    with pytest.raises(P.ResponseRejected, match="already finished"):
        _answer(db, pid, plan[0])
    assert _count(db, Response) == 0


def test_unknown_participant_gets_a_clear_error(db):
    _study(db)
    with pytest.raises(P.ParticipantNotFound, match="no participant with id 404"):
        P.record_response(db, 404, P.ResponsePayload(0, (1, 2, 3), 0, 1000.0))


def test_events_are_deduplicated_by_client_event_id(db):
    _study(db)
    pid = P.enter_study(db, "study-one", "P").participant_id
    assert P.record_event(db, pid, "blur", client_event_id="e1", client_time_ms=10.0)
    assert not P.record_event(db, pid, "blur", client_event_id="e1", client_time_ms=10.0)
    assert _count(db, InteractionEvent) == 1


def test_least_filled_list_counts_completed_and_recent_but_not_timed_out(db):
    _study(db, n_lists=3, session_timeout_minutes=30, per_list=5)
    first = P.enter_study(db, "study-one", "A")
    second = P.enter_study(db, "study-one", "B")
    with db.write() as session:  # A went silent long ago: its list is free again
        session.get(Participant, first.participant_id).last_seen_at = utcnow() - timedelta(hours=2)
    third = P.enter_study(db, "study-one", "C")
    with db.read() as session:
        lists = {p.external_id: p.list_id for p in session.scalars(select(Participant))}
    assert lists["A"] != lists["B"]
    assert lists["C"] == lists["A"]  # the lowest-index list with zero active holders
    assert second.is_new and third.is_new


@pytest.mark.parametrize("n_lists, per_list", [(20, 1), (10, 2)])
def test_twenty_concurrent_arrivals_never_share_a_slot(any_db, n_lists, per_list):
    _study(any_db, n_lists=n_lists, per_list=per_list)
    with ThreadPoolExecutor(20) as pool:
        entries = list(pool.map(lambda i: P.enter_study(any_db, "study-one", f"P{i}"), range(20)))
    assert len({e.participant_id for e in entries}) == 20
    with any_db.read() as session:
        per_list_counts = session.execute(
            select(Participant.list_id, func.count()).group_by(Participant.list_id)
        ).all()
    assert len(per_list_counts) == n_lists
    assert all(count == per_list for _, count in per_list_counts)


def test_full_study_turns_newcomers_away(db):
    _study(db, n_lists=1)
    P.enter_study(db, "study-one", "FIRST")
    with pytest.raises(P.StudyUnavailable, match="full"):
        P.enter_study(db, "study-one", "SECOND")


def test_a_reservation_without_any_answer_expires_but_an_answering_participant_keeps_the_slot(db):
    _study(db, n_lists=2, session_timeout_minutes=90, reservation_timeout_minutes=30)
    idle = P.enter_study(db, "study-one", "IDLE").participant_id
    busy = P.enter_study(db, "study-one", "BUSY").participant_id
    _answer(db, busy, P.trial_plan(db, busy)[0])
    with pytest.raises(P.StudyUnavailable, match="full"):
        P.enter_study(db, "study-one", "EARLY")
    with db.write() as session:  # both consented 31 minutes ago; only BUSY has answered since
        for pid in (idle, busy):
            session.get(Participant, pid).started_at = utcnow() - timedelta(minutes=31)
    late = P.enter_study(db, "study-one", "LATE")
    with db.read() as session:
        lists = {p.external_id: p.list_id for p in session.scalars(select(Participant))}
    assert lists["LATE"] == lists["IDLE"] != lists["BUSY"]
    assert late.is_new


def test_consent_creates_the_row_and_a_refusal_takes_no_list_slot(db):
    _study(db, n_lists=1)
    assert P.returning_entry(db, "study-one", "NEW") is None  # a page load stores nothing
    assert P.check_admission(db, "study-one").participants_per_list == 1
    declined = P.enter_study(db, "study-one", "NO", consent=False)
    assert declined.status == ParticipantStatus.NO_CONSENT
    with db.read() as session:
        row = session.get(Participant, declined.participant_id)
        assert (row.consent, row.list_id, row.finished_at is not None) == (False, None, True)
    assert P.enter_study(db, "study-one", "YES").status == ParticipantStatus.STARTED  # the slot was free
    assert P.returning_entry(db, "study-one", "YES").participant_id is not None
    with pytest.raises(P.StudyUnavailable, match="full"):
        P.check_admission(db, "study-one")
    assert P.enter_study(db, "study-one", "NO", consent=True).status == ParticipantStatus.NO_CONSENT  # final
