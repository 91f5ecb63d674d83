"""Study progress counts what the researcher needs to see: in progress, completed, abandoned."""

from __future__ import annotations

from datetime import timedelta

from db.models import Participant, ParticipantStatus, utcnow
from study import participation as P
from study.config import StudyConfig
from study.monitoring import participant_overview, participant_state, study_progress
from tests.study.test_participation import _answer, _study


def test_participant_state_uses_the_session_and_reservation_timeouts():
    now = utcnow()
    config = StudyConfig(session_timeout_minutes=30, reservation_timeout_minutes=20)

    def state(status, seen_minutes_ago, started_minutes_ago, answered):
        ago = timedelta(minutes=1)
        return participant_state(
            status,
            now - seen_minutes_ago * ago,
            config,
            started=now - started_minutes_ago * ago,
            answered=answered,
            now=now,
        )

    assert state(ParticipantStatus.STARTED, 10, 60, answered=3) == "in_progress"
    assert state(ParticipantStatus.STARTED, 31, 60, answered=3) == "abandoned"
    assert state(ParticipantStatus.STARTED, 1, 19, answered=0) == "reserved"
    assert state(ParticipantStatus.STARTED, 1, 21, answered=0) == "expired"  # never answered in 20 min
    assert state(ParticipantStatus.STARTED, 31, 10, answered=0) == "expired"
    assert state(ParticipantStatus.COMPLETED, 3 * 24 * 60, 3 * 24 * 60, answered=3) == "completed"


def test_progress_counts_participants_by_state(db):
    _study(db, n_lists=6, session_timeout_minutes=30)
    done = P.enter_study(db, "study-one", "DONE").participant_id
    for trial in P.trial_plan(db, done):
        _answer(db, done, trial)
    P.finish_participant(db, done, ParticipantStatus.COMPLETED)
    busy = P.enter_study(db, "study-one", "BUSY").participant_id
    _answer(db, busy, P.trial_plan(db, busy)[0])
    gone = P.enter_study(db, "study-one", "GONE").participant_id
    _answer(db, gone, P.trial_plan(db, gone)[0])
    P.enter_study(db, "study-one", "SIM", simulated=True)  # consented, no answer yet: a reservation
    stale = P.enter_study(db, "study-one", "STALE").participant_id
    P.enter_study(db, "study-one", "NO", consent=False)
    with db.write() as session:
        session.get(Participant, gone).last_seen_at = utcnow() - timedelta(hours=1)
        session.get(Participant, stale).started_at = utcnow() - timedelta(minutes=31)
    row = study_progress(db).iloc[0]
    assert (row.completed, row.in_progress, row.abandoned) == (1, 1, 1)
    assert (row.reserved, row.expired, row.no_consent) == (1, 1, 1)
    assert (row.simulated, row.responses) == (1, 5)
    overview = participant_overview(db, "study-one").set_index("external_id")
    assert overview.loc["DONE", "answered"] == 3 and overview.loc["GONE", "state"] == "abandoned"
    assert overview.loc["SIM", "state"] == "reserved" and overview.loc["STALE", "state"] == "expired"
