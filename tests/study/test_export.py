"""Exports: THINGS triplets, jsPsych-like long CSV, Parquet; pseudonyms, exclusions, simulated labels,
round trips."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select

from db.models import Study, TrialKind, TripletLevel
from study.export import export_study, things_table, trial_table
from study.judgments import load_judgments, pseudonymise
from study.judgments_import import import_judgments_csv
from study.qc import set_exclusion
from study.studies import TrialSpec
from tests.support.analysis_helpers import catch, experimental, make_stimuli, make_study, run_participant

JUDGMENT_COLUMNS = ["stim0", "stim1", "stim2", "level", "kind", "rt_ms", "is_simulated"]


@pytest.fixture
def exported_study(any_db):
    """Practice, catch, 3 experimental trials; a human, a simulated and an excluded participant (SQLite,
    PostgreSQL)."""
    db = any_db
    ids = make_stimuli(db)
    specs = [
        TrialSpec((ids[0], ids[1], ids[6]), TrialKind.PRACTICE, block=-1),
        catch(ids[3], ids[4], ids[9]),
        experimental(ids[0], ids[3], ids[6]),
        experimental(ids[1], ids[2], ids[5], TripletLevel.CLASS_BORDER),
        experimental(ids[6], ids[7], ids[8], TripletLevel.WITHIN_CLASS),
    ]
    make_study(db, "export-study", [specs], participants_per_list=10)
    human = run_participant(
        db,
        "export-study",
        "HUMAN-1",
        [ids[6], ids[9], ids[6], ids[5], ids[7]],
        [900.0, 1100.0, 1200.0, 1300.0, 1400.0],
    )
    sim = run_participant(
        db,
        "export-study",
        "sim-1",
        [ids[0], ids[3], ids[0], None, ids[8]],
        [800.0, 1000.0, 2000.0, 0.0, 1600.0],
        simulated=True,
    )
    gone = run_participant(db, "export-study", "GONE-1", [ids[6], ids[9], ids[3], ids[1], ids[6]])
    set_exclusion(db, gone, True, "test exclusion")
    return db, ids, {"human": human, "sim": sim, "gone": gone}


def _salt(db, slug):
    with db.read() as session:
        return session.scalar(select(Study.salt).where(Study.slug == slug))


def test_things_rows_are_odd_last_indices_with_pseudonyms_and_labels(exported_study):
    db, ids, _ = exported_study
    table = things_table(db, "export-study")
    salt = _salt(db, "export-study")
    assert table["subject_id"].unique().tolist() == [
        pseudonymise(salt, "HUMAN-1"),
        pseudonymise(salt, "sim-1"),
    ]
    assert "HUMAN-1" not in table.to_csv()
    human = table[table["subject_id"] == pseudonymise(salt, "HUMAN-1")]
    # by name: cat0-2 -> 0-2, dog0-2 -> 3-5, bus0-2 -> 6-8, car0-2 -> 9-11
    # (ids: dog 0-2, cat 3-5, car 6-8, bus 9-11)
    assert human[["image1", "image2", "image3"]].values.tolist() == [
        [0, 1, 6],
        [3, 0, 9],
        [4, 5, 2],
        [9, 11, 10],
    ]
    assert human["image3_name"].tolist() == [
        "vehicle/bus/0.png",
        "vehicle/car/0.png",
        "animal/cat/2.png",
        "vehicle/car/1.png",
    ]
    assert human["RT"].tolist() == [1100.0, 1200.0, 1300.0, 1400.0]
    assert human["trial_nr"].tolist() == [1, 2, 3, 4]
    assert human["kind"].tolist() == ["catch", "experimental", "experimental", "experimental"]
    assert table.groupby("subject_id", sort=False)["is_simulated"].first().tolist() == [False, True]
    assert len(table) == 4 + 3  # practice and the timeout are not judgments
    raw = things_table(db, "export-study", raw_ids=True, include_excluded=True)
    assert raw["subject_id"].unique().tolist() == ["HUMAN-1", "sim-1", "GONE-1"]


def _import(db, path, slug):
    import_judgments_csv(db, path, stimulus_set_name="set", slug=slug)
    return load_judgments(db, slug)


def test_things_export_round_trips_through_the_importer(exported_study, tmp_path):
    db, _, _ = exported_study
    summary = export_study(db, "export-study", "things", tmp_path / "out" / "things.csv")
    assert (summary.n_rows, summary.n_participants) == (7, 2)
    original = load_judgments(db, "export-study")
    again = _import(db, summary.path, "things-again")
    assert again[JUDGMENT_COLUMNS].equals(original[JUDGMENT_COLUMNS])
    assert again["external_id"].tolist() == original["subject"].tolist()  # the pseudonym travels, not the id


def test_jspsych_csv_has_one_row_per_trial_and_round_trips(exported_study, tmp_path):
    db, ids, who = exported_study
    path = export_study(db, "export-study", "jspsych", tmp_path / "long.csv", include_excluded=True).path
    table = pd.read_csv(path)
    assert len(table) == 15  # 3 participants x 5 trials, practice and timeouts included
    assert table["excluded"].tolist() == [False] * 10 + [True] * 5
    human = table.iloc[:5]
    assert human["config_version"].tolist() == [1] * 5  # time_elapsed: tests/study/test_export_tables.py
    assert human["kind"].tolist() == ["practice", "catch", "experimental", "experimental", "experimental"]
    assert human["catch_correct"].tolist()[1] == True  # noqa: E712
    assert table["catch_correct"].iloc[6] == False  # noqa: E712  (the simulated participant missed it)
    sim = table.iloc[5:10]
    assert sim["timed_out"].tolist() == [False, False, False, True, False] and pd.isna(
        sim["response"].iloc[3]
    )
    shown = human[["shown_left", "shown_middle", "shown_right"]].values.tolist()
    assert all(
        row["odd_one_out"] == shown[i][int(row["response"])] for i, row in human.reset_index().iterrows()
    )
    again = _import(db, path, "jspsych-again")
    original = load_judgments(db, "export-study", include_excluded=True)
    assert again[JUDGMENT_COLUMNS].equals(original[JUDGMENT_COLUMNS])


def test_parquet_holds_the_same_long_table(exported_study, tmp_path):
    db, _, _ = exported_study
    path = export_study(db, "export-study", "parquet", tmp_path / "trials.parquet").path
    table = pd.read_parquet(path)
    expected = trial_table(db, "export-study")
    assert len(table) == 10 and table.columns.tolist() == expected.columns.tolist()
    assert table["subject_id"].tolist() == expected["subject_id"].tolist()
    assert table["is_simulated"].tolist() == [False] * 5 + [True] * 5
    answered = table[~table["timed_out"] & (table["kind"] != "practice")]
    odd = answered["chosen_stimulus_id"].astype(int).tolist()
    assert odd == load_judgments(db, "export-study")["stim2"].tolist()


def test_export_refuses_unknown_formats_and_leaves_no_partial_file(exported_study, tmp_path, monkeypatch):
    db, _, _ = exported_study
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="export format 'xlsx' is unknown"):
        export_study(db, "export-study", "xlsx", out / "x.xlsx")
    with pytest.raises(LookupError, match="no study"):
        export_study(db, "nope-study", "things", out / "x.csv")

    def fail_after_the_header(columns):  # the header is written; the rows fail
        raise OSError("disk full")

    monkeypatch.setattr("study.export.csv_lines", fail_after_the_header)
    for fmt in ("jspsych", "things"):
        with pytest.raises(OSError, match="disk full"):
            export_study(db, "export-study", fmt, out / f"{fmt}.csv")
    assert list(out.iterdir()) == []

    import study.export

    real = study.export.answer_batches

    def one_batch_then_fail(*args):
        yield next(real(*args))
        raise OSError("disk full")

    monkeypatch.setattr(study.export, "answer_batches", one_batch_then_fail)  # the streamed THINGS file
    with pytest.raises(OSError, match="disk full"):
        export_study(db, "export-study", "things", out / "things.csv")
    assert list(out.iterdir()) == []


TRIAL_COLUMNS_BEFORE_SELECTION = [  # the trial table as it was before the selection columns
    "subject_id",
    "is_simulated",
    "excluded",
    "status",
    "config_version",
    "trial_index",
    "trial_type",
    "kind",
    "level",
    "block",
    "rt",
    "response",
    "timed_out",
    "unavailable",
    "outcome",
    "time_elapsed",
    "image1",
    "image2",
    "image3",
    "odd_known",
    "shown_left",
    "shown_middle",
    "shown_right",
    "odd_one_out",
    "catch_correct",
    "input_modality",
    "client_onset_ms",
    "server_received_at",
    "stim0_id",
    "stim1_id",
    "stim2_id",
    "chosen_stimulus_id",
]
SELECTION_COLUMNS = [
    "selection_strategy",
    "selection_score",
    "selection_teacher_run",
    "selection_random_share",
]


def test_trial_exports_end_with_why_each_triplet_was_asked(any_db, tmp_path):
    """Adaptive designs: strategy, score, teacher run and the random-share flag per trial, appended after
    the existing columns (which stay as they were); catch and practice trials have none."""
    from dataclasses import replace

    db = any_db
    ids = make_stimuli(db)
    chosen = {"strategy": "uncertainty", "score": 1.0871, "teacher_run": "7"}
    drawn = {"strategy": "random", "score": 0.0, "teacher_run": "7"}
    before = {"strategy": "random", "score": 0.0, "teacher_run": "", "note": "no teacher run yet"}
    specs = [
        TrialSpec((ids[0], ids[1], ids[6]), TrialKind.PRACTICE, block=-1),
        catch(ids[3], ids[4], ids[9]),
        replace(experimental(ids[0], ids[3], ids[6]), selection=chosen),
        replace(experimental(ids[1], ids[2], ids[5]), selection=drawn),
        replace(experimental(ids[6], ids[7], ids[8]), selection=before),
    ]
    make_study(db, "ada-export", [specs], participants_per_list=10)
    run_participant(db, "ada-export", "HUMAN-1", [ids[6], ids[9], ids[6], ids[5], ids[7]])
    path = export_study(db, "ada-export", "jspsych", tmp_path / "long.csv").path
    table = pd.read_csv(path, dtype={"selection_teacher_run": "string"})
    assert table.columns.tolist()[-4:] == SELECTION_COLUMNS
    assert table.columns.tolist()[:-4] == TRIAL_COLUMNS_BEFORE_SELECTION
    by_kind = table.set_index("trial_index")
    assert by_kind["selection_strategy"].tolist()[2:] == ["uncertainty", "random", "random"]
    assert by_kind["selection_score"].tolist()[2:] == [1.0871, 0.0, 0.0]
    assert by_kind["selection_teacher_run"].tolist()[2:4] == ["7", "7"]
    assert pd.isna(by_kind["selection_teacher_run"].iloc[4])  # drawn before any teacher
    assert by_kind["selection_random_share"].tolist()[2:] == [False, True, True]
    assert table.iloc[:2][SELECTION_COLUMNS].isna().all().all()  # practice and catch: not chosen


def test_parquet_selection_columns_are_typed_even_when_empty(exported_study, tmp_path):
    """A fixed design has no selections: the columns are still text / number / flag, so a later streamed
    batch that has them fits the first batch's schema."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    db, _, _ = exported_study
    path = export_study(db, "export-study", "parquet", tmp_path / "trials.parquet").path
    schema = pq.read_schema(path)
    text = (pa.types.is_string, pa.types.is_large_string)
    strategy, score, run, random_share = (schema.field(name).type for name in SELECTION_COLUMNS)
    assert any(is_text(strategy) for is_text in text) and any(is_text(run) for is_text in text)
    assert (score, random_share) == (pa.float64(), pa.bool_())
    assert pd.read_parquet(path)[SELECTION_COLUMNS].isna().all().all()


@pytest.mark.parametrize(
    "selection",
    [{}, {"raw_ids": True, "include_excluded": True}, {"include_simulated": False}],
    ids=["default", "raw-ids-and-excluded", "no-simulated"],
)
def test_the_streamed_things_file_is_the_things_table_written_as_csv(exported_study, tmp_path, selection):
    """The THINGS export streams numbers from the driver's cursor; its bytes are exactly `write_csv` of
    `things_table` (the definition of the table), formula names and a missing RT included."""
    from sqlalchemy import update

    from db.models import Response, Stimulus
    from study.export import write_csv

    db, ids, people = exported_study
    with db.write() as session:
        session.execute(update(Stimulus).where(Stimulus.id == ids[6]).values(name="=HYPERLINK(1)"))
        session.execute(
            update(Response)
            .where(Response.participant_id == people["human"], Response.trial_index == 2)
            .values(rt_ms=None)
        )
    streamed = export_study(db, "export-study", "things", tmp_path / "streamed.csv", **selection)
    expected = write_csv(things_table(db, "export-study", **selection), tmp_path / "table.csv")
    assert streamed.path.read_bytes() == expected.read_bytes()
    assert b"'=HYPERLINK(1)" in expected.read_bytes() and b",," in expected.read_bytes()
