"""Pages that scale: the Participants & data page runs only the open tab's section (no tab's data is read
for a tab nobody looks at), and the study pickers list slugs without counting anyone's answers."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import study.judgments
import study.monitoring
import study.qc
from db.engine import Database
from tests.app.conftest import MAIN
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant

SLUG = "scale-study"


@pytest.fixture
def reads(app_home, monkeypatch) -> list[str]:
    """A small study, and a log of which data each render read."""
    db = Database.from_url()
    ids = make_stimuli(db)
    make_study(db, SLUG, [[experimental(ids[0], ids[3], ids[6])]], participants_per_list=10)
    run_participant(db, SLUG, "someone", [ids[6]], [1510.0])
    run_participant(db, SLUG, "another", [ids[6]], [1590.0])
    db.dispose()
    log: list[str] = []
    for module, name in (
        (study.qc, "participant_qc"),
        (study.qc, "participant_facts"),
        (study.judgments, "load_judgments"),
        (study.judgments, "load_judgments_compact"),
        (study.monitoring, "rt_histogram"),
        (study.monitoring, "study_progress"),
    ):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _real=real, _name=name, **k: log.append(_name) or _real(*a, **k)
        )
    return log


def _open(tab: str | None, reads: list[str]) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.session_state["researcher_logged_in"] = True
    if tab:
        at.session_state["data_tab"] = tab
    at.run()
    reads.clear()  # what the home page read
    return at.switch_page("views/participants.py").run()


@pytest.mark.parametrize(
    ("tab", "expected"),
    [
        (None, ["participant_qc"]),
        ("Payments", ["participant_facts"]),
        ("Agreement", ["load_judgments_compact"]),
        ("Response times", ["rt_histogram"]),
        ("Export", []),
    ],
)
def test_only_the_open_tab_reads_its_data(reads, tab, expected):
    at = _open(tab, reads)
    assert not at.exception, at.exception
    assert reads == expected


def test_the_response_time_histogram_is_counted_in_sql(reads):
    from study.monitoring import rt_histogram

    counts = rt_histogram(Database.from_url(), SLUG)
    assert counts.to_dict("records") == [{"group": "between_class", "rt_ms": 1500.0, "n": 2}]  # one bin
