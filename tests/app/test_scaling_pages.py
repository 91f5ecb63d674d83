"""Pages that scale: the Participants & data page runs only the open tab's section (no tab's data is read
for a tab nobody looks at), and the study pickers list slugs without counting anyone's answers."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import study.judgments
import study.monitoring
import study.qc
import workflows.summary_refresh
from db.engine import Database
from db.models import Stimulus
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
        (workflows.summary_refresh, "fresh_summary"),
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
        ("Agreement", ["fresh_summary"]),
        ("Response times", ["fresh_summary"]),
        ("Export", []),
    ],
)
def test_only_the_open_tab_reads_its_data(reads, tab, expected):
    at = _open(tab, reads)
    assert not at.exception, at.exception
    assert reads == expected


def test_many_new_answers_are_read_in_the_background_while_the_last_numbers_show(reads, monkeypatch):
    """A render reads a few participants' new answers itself; with many (here: more than 0) a background
    thread reads them while the panel shows its progress and the last finished tables, then the new ones."""
    at = _open("Agreement", reads)
    assert "Computing" not in " ".join(info.value for info in at.info)
    assert [frame.value["n_responses"].iloc[-1] for frame in at.dataframe] == [0, 2]
    db = Database.from_url()
    with db.read() as session:
        odd = sorted(session.scalars(select(Stimulus.id)))[6]  # the odd one out the others chose
    run_participant(db, SLUG, "third", [odd], [1700.0])
    db.dispose()
    release = threading.Event()
    real = workflows.summary_refresh.update_summary
    monkeypatch.setattr(workflows.summary_refresh, "READ_DURING_RENDER", 0)
    monkeypatch.setattr(
        workflows.summary_refresh, "update_summary", lambda *a, **k: release.wait(30) and real(*a, **k)
    )
    at.run()
    assert any("Computing… (0 of 1 participants read)" in info.value for info in at.info)
    assert [frame.value["n_responses"].iloc[-1] for frame in at.dataframe] == [0, 2]  # the last numbers
    release.set()
    for _ in range(50):
        if not any(thread.name.startswith("summary-") for thread in threading.enumerate()):
            break
        time.sleep(0.1)
    at.run()
    assert not any("Computing" in info.value for info in at.info)
    assert [frame.value["n_responses"].iloc[-1] for frame in at.dataframe] == [0, 3]


def test_the_response_time_histogram_is_counted_in_sql(reads):
    from study.monitoring import rt_histogram

    counts = rt_histogram(Database.from_url(), SLUG)
    assert counts.to_dict("records") == [{"group": "between_class", "rt_ms": 1500.0, "n": 2}]  # one bin


def test_the_participants_table_is_paged_in_sql(reads, monkeypatch):
    """205 participants: a page shows 100, counted in SQL, and QC measures only the page's participants."""
    from db.models import Participant, ParticipantStatus, Study

    db = Database.from_url()
    with db.write() as session:  # rows, not entries: the study's lists hold only 10 participants
        study_id = session.scalar(select(Study.id).where(Study.slug == SLUG))
        session.add_all(
            Participant(
                study_id=study_id,
                external_id=f"P{number:03d}",
                source="prolific",
                consent=True,
                status=ParticipantStatus.STARTED,
            )
            for number in range(203)
        )
    db.dispose()
    measured: list[int] = []
    real = study.qc.response_marks
    monkeypatch.setattr(
        study.qc, "response_marks", lambda d, s, ids=None: measured.append(len(ids)) or real(d, s, ids)
    )
    at = _open(None, reads)
    assert len(at.dataframe[0].value) == 100 and measured == [100]
    assert "Participants 1–100 of 205" in at.caption[0].value
    at.number_input(key="participants_page").set_value(3).run()
    assert at.dataframe[0].value["PROLIFIC_PID"].tolist() == ["P198", "P199", "P200", "P201", "P202"]
    assert "Participants 201–205 of 205" in at.caption[0].value
