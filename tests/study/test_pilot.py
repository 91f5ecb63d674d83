"""Pilot runs (the researcher's preview) and simulated participants stay apart from live data: neither holds
a list slot or counts toward a target, and pilots are left out of QC, ceilings, exports and alignment."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select

from db.models import Participant, ParticipantStatus, StudyStatus
from study import participation as P
from study.export import FORMATS, export_study
from study.judgments import load_judgments, load_responses
from study.payments import payment_tables
from study.pilot import PilotRefused, check_pilot_token, pilot_runs, pilot_token
from study.qc import participant_qc
from study.reliability import levels_noise_ceiling
from study.studies import set_study_status
from tests.support.analysis_helpers import catch, experimental, make_stimuli, make_study, run_participant

SLUG = "pilot-study"


def _choices(ids: list[int]) -> list[int]:
    """The odd one out each live participant picks, trial by trial."""
    return [ids[6], ids[6], ids[9]]


@pytest.fixture
def ids(db):
    ids = make_stimuli(db)  # dog 0-2, cat 3-5, car 6-8, bus 9-11
    trials = [
        experimental(ids[0], ids[3], ids[6]),
        catch(ids[0], ids[1], ids[6]),
        experimental(ids[1], ids[4], ids[9]),
    ]
    make_study(db, SLUG, [trials, trials])
    return ids


def _set_target(db, target: int) -> None:
    from db.models import Study

    with db.write() as session:
        session.scalars(select(Study).where(Study.slug == SLUG)).one().target_participants = target


def _run_pilot(db, external_id: str) -> int:
    """A pilot through the whole recording path: consent, every trial, an event, completion."""
    entry = P.enter_study(db, SLUG, external_id, pilot=True, source="prolific")
    for trial in P.trial_plan(db, entry.participant_id):
        P.record_response(
            db, entry.participant_id, P.ResponsePayload(trial.trial_index, trial.shown, 2, 1500.0)
        )
    P.record_event(db, entry.participant_id, "blur", client_event_id=f"{external_id}-blur")
    P.finish_participant(db, entry.participant_id, ParticipantStatus.COMPLETED)
    return entry.participant_id


def _everything(db, tmp_path, name: str) -> dict:
    """What targets, assignment, QC, exports and alignment see of the study."""
    exports = {}
    for fmt in FORMATS:
        if fmt == "anchor":
            continue  # no anchor trials in this study
        out = export_study(db, SLUG, fmt, tmp_path / f"{name}-{fmt}.csv")
        exports[fmt] = out.path.read_bytes()
    qc = participant_qc(db, SLUG)
    return {
        "admission": P.check_admission(db, SLUG).participants_per_list,
        "qc": qc.to_json(date_format="iso"),  # (NaN-safe comparison)
        "judgments": load_judgments(db, SLUG).to_dict("records"),
        "responses": len(load_responses(db, SLUG)),
        "ceiling": levels_noise_ceiling(load_judgments(db, SLUG), min_responses=2, n_boot=20).to_json(),
        "payments": {k: v.to_dict("records") for k, v in payment_tables(db, SLUG).items()},
        "exports": exports,
    }


def test_a_pilot_run_leaves_targets_assignment_qc_exports_and_alignment_unchanged(db, ids, tmp_path):
    run_participant(db, SLUG, "live-1", _choices(ids))  # one live participant on list 0
    _set_target(db, 2)
    before = _everything(db, tmp_path, "before")
    pilot_ids = [_run_pilot(db, f"pilot-{k}") for k in range(3)]  # more pilots than the free slots
    after = _everything(db, tmp_path, "after")
    assert after == before
    with db.read() as session:
        pilots = session.scalars(select(Participant).where(Participant.id.in_(pilot_ids))).all()
        assert {(p.is_pilot, p.source, p.status) for p in pilots} == {
            (True, "pilot", ParticipantStatus.COMPLETED)
        }
    assert len(load_responses(db, SLUG, include_pilot=True)) == before["responses"] + 3 * 3
    # the second live participant still gets the free list, and completes the target
    run_participant(db, SLUG, "live-2", _choices(ids))
    with db.read() as session:
        lists = {p.external_id: p.list_id for p in session.scalars(select(Participant))}
    assert lists["live-2"] != lists["live-1"]
    with pytest.raises(P.StudyUnavailable, match="target of 2"):
        P.check_admission(db, SLUG)
    assert set(pilot_runs(db, SLUG)["pilot_id"]) == {"pilot-0", "pilot-1", "pilot-2"}


def test_simulated_participants_hold_no_list_slot_and_count_toward_no_target(db, ids):
    _set_target(db, 2)
    for k in range(2):  # two simulated participants on a target-2 study with two one-person lists
        run_participant(db, SLUG, f"sim-{k}", _choices(ids), simulated=True)
    with db.read() as session:
        simulated_lists = [p.list_id for p in session.scalars(select(Participant))]
    assert len(set(simulated_lists)) == 2  # spread over the lists, among themselves
    first = run_participant(db, SLUG, "live-1", _choices(ids))
    second = run_participant(db, SLUG, "live-2", _choices(ids))
    assert first and second  # both real participants admitted, on lists of their own
    with pytest.raises(P.StudyUnavailable, match="target of 2"):
        P.check_admission(db, SLUG)


def test_a_pilot_runs_a_draft_study_and_needs_the_studys_token(db, ids):
    set_study_status(db, SLUG, StudyStatus.DRAFT)
    with pytest.raises(P.StudyUnavailable, match="draft"):
        P.check_admission(db, SLUG)
    token = pilot_token(db, SLUG)
    assert check_pilot_token(db, SLUG, token).participants_per_list == 1
    for forged in ("", token[:-1] + ("0" if token[-1] != "0" else "1"), "x" * 24):
        with pytest.raises(PilotRefused, match="not valid"):
            check_pilot_token(db, SLUG, forged)
    entry = P.enter_study(db, SLUG, "pilot-draft", pilot=True)
    assert P.participant_view(db, entry.participant_id).is_pilot
    assert isinstance(pilot_runs(db, SLUG), pd.DataFrame)
