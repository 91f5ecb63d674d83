"""The participant-level table and the interaction events (CSV and Parquet), formula cells neutralised in
every CSV, and jsPsych-style time_elapsed counted from the participant's start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from db.models import Participant, Response, Stimulus
from study import participation as P
from study.export import FORMATS, export_study, neutralise_formulas, trial_table
from study.judgments import pseudonymise
from study.payments import set_bonus, set_payment
from study.qc import set_exclusion
from tests.support.analysis_helpers import catch, experimental, make_stimuli, make_study, run_participant

SLUG = "table-study"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def study_db(db):
    ids = make_stimuli(db)
    trials = [catch(ids[3], ids[4], ids[9]), experimental(ids[0], ids[3], ids[6])]
    make_study(db, SLUG, [trials], participants_per_list=10)
    return db, ids


def _enter(db, external_id: str, **facts) -> int:
    return P.enter_study(
        db,
        SLUG,
        external_id,
        external_study_id="STUDY-9",
        external_session_id=f"SESSION-{external_id}",
        source="prolific",
        **facts,
    ).participant_id


def test_the_participant_table_has_ids_facts_qc_exclusion_payment_and_version(study_db, tmp_path):
    db, ids = study_db
    pid = _enter(
        db, "PID-1", browser={"user_agent": "Firefox/130", "screen": {"width": 1920, "height": 1080}}
    )
    P.update_participant(
        db, pid, demographics={"age": 34, "gender": "female"}, strategy="went with the shape"
    )
    P.record_event(db, pid, "refresh_rate", client_event_id="r1", detail={"frame_ms": 16.667, "samples": 60})
    run_participant(db, SLUG, "PID-1", [ids[9], ids[6]], [1200.0, 1500.0])
    with db.write() as session:
        session.execute(
            update(Participant)
            .where(Participant.id == pid)
            .values(started_at=T0, finished_at=T0 + timedelta(minutes=7))
        )
    set_exclusion(db, pid, True, "said they guessed")
    set_payment(db, pid, "approved")
    set_bonus(db, pid, "0.75")

    raw = pd.read_csv(
        export_study(db, SLUG, "participants", tmp_path / "p.csv", raw_ids=True, include_excluded=True).path
    )
    row = raw.iloc[0]
    assert (row.subject_id, row.STUDY_ID, row.SESSION_ID) == ("PID-1", "STUDY-9", "SESSION-PID-1")
    assert (row.status, row.config_version, row.list_index, row.duration_s) == ("completed", 1, 0, 420.0)
    assert (row.excluded, row.exclusion_reason, row.payment_status, row.bonus) == (
        True,
        "said they guessed",
        "approved",
        0.75,
    )
    assert (row.demographics_age, row.demographics_gender, row.strategy) == (
        34,
        "female",
        "went with the shape",
    )
    assert (row.browser_user_agent, row.browser_screen_width, row.refresh_interval_ms) == (
        "Firefox/130",
        1920,
        16.667,
    )
    assert (row.n_answered, row.catch_accuracy, row.median_rt_ms) == (2, 1.0, 1350.0)

    parquet = export_study(db, SLUG, "participants", tmp_path / "p.parquet", include_excluded=True).path
    pseudonymised = pd.read_parquet(parquet)
    assert "STUDY_ID" not in pseudonymised and "PID-1" not in pseudonymised.to_csv()
    assert pseudonymised["subject_id"].str.len().eq(len(pseudonymise("s", "x"))).all()
    assert export_study(db, SLUG, "participants", tmp_path / "none.csv").n_rows == 0  # excluded left out


def test_the_events_table_lists_each_event_with_its_participant(study_db, tmp_path):
    db, _ = study_db
    pid = _enter(db, "PID-2")
    P.record_event(db, pid, "blur", client_event_id="e1", trial_index=3, client_time_ms=5.0, detail={"ms": 2})
    P.record_event(db, pid, "fullscreen_exit", client_event_id="e2", trial_index=4)
    events = pd.read_parquet(export_study(db, SLUG, "events", tmp_path / "e.parquet").path)
    assert events["kind"].tolist() == ["blur", "fullscreen_exit"]
    assert events["trial_index"].tolist() == [3, 4] and events["detail"].iloc[0] == '{"ms": 2}'
    assert (events["server_elapsed_ms"] >= 0).all()
    raw = pd.read_csv(export_study(db, SLUG, "events", tmp_path / "e.csv", raw_ids=True).path)
    assert raw["subject_id"].tolist() == ["PID-2", "PID-2"]


def test_time_elapsed_counts_from_the_participants_start(study_db):
    """The browser's clock is 5 minutes fast and each answer reaches the server 40-90 ms after it ends;
    time_elapsed is the time since consent (started_at) on the server's clock, give or take the fastest
    delivery (40 ms), not the time since the first trial's onset."""
    db, ids = study_db
    pid = _enter(db, "PID-3")
    skew_ms, start_ms = 300_000.0, T0.timestamp() * 1000
    plan = P.trial_plan(db, pid)
    ends = []
    for trial, onset_after_start, rt in zip(plan, (20_000.0, 26_000.0), (1200.0, 1500.0), strict=True):
        onset = start_ms + skew_ms + onset_after_start
        chosen = trial.shown[0]
        P.record_response(
            db, pid, P.ResponsePayload(trial.trial_index, trial.shown, 0, rt, client_onset_ms=onset)
        )
        ends.append(onset_after_start + rt)
        assert chosen
    with db.write() as session:
        session.execute(update(Participant).where(Participant.id == pid).values(started_at=T0))
        for trial_index, (end, latency) in enumerate(zip(ends, (40, 90), strict=True)):
            session.execute(
                update(Response)
                .where(Response.participant_id == pid, Response.trial_index == trial_index)
                .values(server_received_at=T0 + timedelta(milliseconds=end + latency))
            )
    table = trial_table(db, SLUG)
    assert table["time_elapsed"].tolist() == [21_240.0, 27_540.0]


def test_every_csv_export_neutralises_formula_cells(study_db, tmp_path):
    db, ids = study_db
    with db.write() as session:
        session.execute(
            update(Stimulus).where(Stimulus.id == ids[6]).values(name='=HYPERLINK("http://x","y")')
        )
        session.execute(update(Stimulus).where(Stimulus.id == ids[9]).values(name="@SUM(A1:A9)"))
    pid = _enter(db, "-cmd_calc_A0")
    P.record_event(db, pid, "blur", client_event_id="b1")
    run_participant(db, SLUG, "-cmd_calc_A0", [ids[9], ids[6]], [1200.0, 1500.0])
    for fmt in ("things", "jspsych", "participants", "events"):
        text = (export_study(db, SLUG, fmt, tmp_path / f"{fmt}.csv", raw_ids=True).path).read_text()
        cells = [cell.strip('"') for line in text.splitlines() for cell in line.split(",")]
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "@") or cell.startswith("-c")], fmt
        assert "'-cmd_calc_A0" in text, fmt
    things = pd.read_csv(tmp_path / "things.csv")
    assert '\'=HYPERLINK("http://x"' in things["image3_name"].iloc[1]
    assert things["image3_name"].iloc[0] == "'@SUM(A1:A9)"
    assert set(FORMATS) >= {"participants", "events"}


def test_neutralising_leaves_numbers_and_plain_text_alone():
    table = pd.DataFrame({"rt": [-5.0, 3.0], "name": ["a-b", "\tx"], "reason": ["+1", None]})
    safe = neutralise_formulas(table)
    assert safe["rt"].tolist() == [-5.0, 3.0]
    assert safe["name"].tolist() == ["a-b", "'\tx"] and safe["reason"].tolist()[0] == "'+1"
    assert table["reason"].tolist()[0] == "+1"  # the caller's table is not changed


def test_column_csv_writes_the_cells_pandas_writes():
    """The streamed exports' column-at-a-time writer gives pandas' `to_csv` bytes (of the neutralised
    table): floats as repr (whole, tiny, huge, negative zero, missing, infinite), quoted and neutralised
    text, nullable integers and booleans."""
    from study.export import csv_text

    table = pd.DataFrame(
        {
            "rt": [1269.089721141653, 1700000000000.0, -0.0, 1e-05, 1e16, 2.5e15, np.nan, np.inf, -5.0],
            "name": ["a,b", 'say "x"', "", None, "=HYPERLINK(1)", "two\nlines", "\r", "-cmd", "plain"],
            "n": pd.array([1, None, -3, 4, 5, 6, 7, 8, 9], dtype="Int64"),
            "ok": pd.array([True, None, False] * 3, dtype="boolean"),
            "flag": [True, False, True] * 3,
            "+x": list(range(9)),
        }
    )
    assert csv_text(table) == neutralise_formulas(table).to_csv(index=False).encode()
    assert (
        csv_text(table, header=False) == neutralise_formulas(table).to_csv(index=False, header=False).encode()
    )
    assert csv_text(table.iloc[:0]) == b"rt,name,n,ok,flag,'+x\n"


def test_column_csv_writes_timestamps_in_one_defined_format():
    """Timestamps always with microseconds (pandas varies the digits with the values of a chunk); UTC, with
    +00:00 for a time-zone aware column; missing ones empty."""
    from study.export import csv_text

    stamps = pd.to_datetime(["2026-01-02 03:04:05", "2026-01-02 03:04:05.25", None], format="ISO8601")
    table = pd.DataFrame({"naive": stamps, "aware": stamps.tz_localize("Europe/Berlin")})
    assert csv_text(table).decode().splitlines() == [
        "naive,aware",
        "2026-01-02 03:04:05.000000,2026-01-02 02:04:05.000000+00:00",
        "2026-01-02 03:04:05.250000,2026-01-02 02:04:05.250000+00:00",
        ",",
    ]
