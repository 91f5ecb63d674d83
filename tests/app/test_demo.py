"""The built-in demo builds from installed packages, labels simulated participants, and is idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.models import Participant, Stimulus, StudyStatus
from study.studies import get_study
from workflows.demo import DEMO_SLUG, ensure_demo


@pytest.mark.slow
def test_demo_builds_once_and_second_call_changes_nothing(app_home):
    db = Database.from_url()
    messages = []
    first = ensure_demo(db, participants=4, report=messages.append)
    assert any("12 categories in 4 superordinate" in m for m in messages)
    with db.read() as session:
        assert get_study(session, DEMO_SLUG).status == StudyStatus.OPEN
        people = session.scalars(select(Participant)).all()
        n_stimuli = session.scalar(select(func.count()).select_from(Stimulus))
    assert len(people) == 4 and all(p.is_simulated and p.source == "simulated" for p in people)
    messages.clear()
    assert ensure_demo(db, participants=4, report=messages.append) == first
    assert messages == []
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Stimulus)) == n_stimuli
