"""Fixtures shared by the study tests."""

from __future__ import annotations

import pytest

from db.models import Stimulus, StimulusSet
from study.stimuli import StimulusInfo
from tests.study.test_design import table_for

DESIGN_LAYOUT = {sup: {f"{sup}{c}": 4 for c in range(3)} for sup in ("animal", "tool", "food")}


@pytest.fixture
def stored_set(db) -> tuple[int, list[StimulusInfo]]:
    """The DESIGN_LAYOUT set stored directly as rows (the import path is tested in test_stimuli)."""
    table = table_for(DESIGN_LAYOUT)
    with db.write() as session:
        stimulus_set = StimulusSet(name="set")
        session.add(stimulus_set)
        session.flush()
        for s in table:
            session.add(
                Stimulus(
                    id=s.id,
                    stimulus_set_id=stimulus_set.id,
                    name=s.name,
                    path=s.name,
                    content_hash=f"{s.id:064d}",
                    category=s.category,
                    superordinate=s.superordinate,
                    width=10,
                    height=10,
                    n_bytes=1,
                )
            )
        set_id = stimulus_set.id
    return set_id, table
