"""Study progress counts what the researcher needs to see: in progress, completed, abandoned."""

from __future__ import annotations

from datetime import timedelta

from db.models import Participant, ParticipantStatus, utcnow
from study import participation as P
from study.monitoring import participant_overview, participant_state, study_progress
from tests.study.test_participation import _answer, _study


def test_participant_state_uses_the_session_timeout():
    now = utcnow()
    assert participant_state(ParticipantStatus.STARTED, now - timedelta(minutes=10), 30, now) == "in_progress"
    assert participant_state(ParticipantStatus.STARTED, now - timedelta(minutes=31), 30, now) == "abandoned"
    assert participant_state(ParticipantStatus.COMPLETED, now - timedelta(days=3), 30, now) == "completed"


def test_progress_counts_participants_by_state(db):
    _study(db, n_lists=4, session_timeout_minutes=30)
    done = P.enter_study(db, "study-one", "DONE").participant_id
    for trial in P.trial_plan(db, done):
        _answer(db, done, trial)
    P.finish_participant(db, done, ParticipantStatus.COMPLETED)
    P.enter_study(db, "study-one", "BUSY")
    gone = P.enter_study(db, "study-one", "GONE").participant_id
    P.enter_study(db, "study-one", "SIM", simulated=True)
    with db.write() as session:
        session.get(Participant, gone).last_seen_at = utcnow() - timedelta(hours=1)
    row = study_progress(db).iloc[0]
    assert (row.completed, row.in_progress, row.abandoned, row.simulated, row.responses) == (1, 2, 1, 1, 3)
    overview = participant_overview(db, "study-one").set_index("external_id")
    assert overview.loc["DONE", "answered"] == 3 and overview.loc["GONE", "state"] == "abandoned"
