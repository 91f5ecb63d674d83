"""The streamed trial-level exports (read from the driver's cursor, written a batch at a time) write exactly
what the table builders define: the jsPsych CSV is `csv_text(trial_table)`, the Parquet file is
`trial_table` as Arrow (schema and pandas metadata included), the THINGS and anchor files are `write_csv` of
`things_table` / `anchor_table`; with formula cells, a timeout, a missing RT, an adaptive selection, a
participant without answers, rows no write path stores, and batches that cut through participants."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select, update

import study.export as export
from db.models import Participant, Response, Stimulus, TrialKind
from study import participation as P
from study.export import anchor_table, csv_text, export_study, things_table, trial_table, write_csv
from study.judgments_import import import_judgments_csv
from study.qc import set_exclusion
from study.studies import TrialSpec
from tests.support.analysis_helpers import (
    catch,
    experimental,
    insert_stimuli,
    make_stimuli,
    make_study,
    run_participant,
)

SLUG = "stream-study"
SELECTIONS = [{}, {"raw_ids": True, "include_excluded": True}, {"include_simulated": False}]
SELECTION_IDS = ["default", "raw-ids-and-excluded", "no-simulated"]


@pytest.fixture
def streamed_study(any_db, monkeypatch):
    """Practice, catch and three experimental trials (two chosen by an adaptive strategy); images named
    like formulas; a human whose id looks like a formula, a simulated participant with a timeout, an
    excluded one (with an unavailable trial), and one who consented but answered nothing (SQLite,
    PostgreSQL)."""
    db = any_db
    ids = make_stimuli(db)
    specs = [
        TrialSpec((ids[0], ids[1], ids[6]), TrialKind.PRACTICE, block=-1),
        catch(ids[3], ids[4], ids[9]),
        replace(
            experimental(ids[0], ids[3], ids[6]),
            selection={"strategy": "uncertainty", "score": 1.0871, "teacher_run": "7"},
        ),
        replace(experimental(ids[1], ids[2], ids[5]), selection={"strategy": "random", "score": 0.0}),
        experimental(ids[6], ids[7], ids[8]),
    ]
    make_study(db, SLUG, [specs], participants_per_list=10)
    run_participant(db, SLUG, "-cmd_calc_A0", [ids[6], ids[9], ids[6], ids[5], ids[7]])
    run_participant(db, SLUG, "sim-1", [ids[0], ids[3], None, ids[2], ids[8]], simulated=True)
    gone = run_participant(db, SLUG, "GONE-1", [ids[6], ids[9], ids[3], ids[1], ids[6]])
    set_exclusion(db, gone, True, "test exclusion")
    P.enter_study(db, SLUG, "NO-ANSWERS")
    with db.write() as session:
        session.execute(update(Stimulus).where(Stimulus.id == ids[6]).values(name='=HYPERLINK("x","y")'))
        session.execute(update(Stimulus).where(Stimulus.id == ids[9]).values(name="@SUM(A1:A9)"))
        session.execute(update(Response).where(Response.trial_index == 3).values(rt_ms=None))
        session.execute(  # an image the server could not serve: not answered, not timed out
            update(Response)
            .where(Response.participant_id == gone, Response.trial_index == 4)
            .values(unavailable=True, chosen_position=None, chosen_stimulus_id=None, rt_ms=None)
        )
        session.execute(
            update(Participant).values(config_version=None).where(Participant.external_id == "sim-1")
        )
        _store_irregular_answers(session, ids)
    if db.dialect == "sqlite" and importlib.util.find_spec("adbc_driver_sqlite"):
        _no_driver_cursor(monkeypatch)  # SQLite: the trial exports come from the Arrow reader, no fallback
    return db


def _store_irregular_answers(session, ids: list[int]) -> None:
    """Rows no write path stores (a database edited by hand), which the streamed exports read apart: a
    chosen image that is not the one shown at the position, an unknown input modality, a position outside
    0-2 (with and without a chosen image), a chosen image without a position and a position without one, a
    negative trial index."""
    human, simulated = (
        select(Participant.id).where(Participant.external_id == name).scalar_subquery()
        for name in ("-cmd_calc_A0", "sim-1")
    )
    for participant, trial_index, values in [
        (human, 0, {"chosen_stimulus_id": ids[8]}),
        (human, 1, {"chosen_position": 5, "chosen_stimulus_id": None}),
        (human, 2, {"input_modality": "stylus"}),
        (human, 4, {"chosen_position": -1}),
        (simulated, 0, {"chosen_stimulus_id": None}),
        (simulated, 2, {"chosen_stimulus_id": ids[7]}),  # a timeout
        (simulated, 4, {"trial_index": -7}),
    ]:
        session.execute(
            update(Response)
            .where(Response.participant_id == participant, Response.trial_index == trial_index)
            .values(**values)
        )


@pytest.fixture(params=[50_000, 3], ids=["one-batch", "batches-of-3-rows"])
def batch_rows(request, monkeypatch):
    """The driver's batch size: one batch, or batches that end inside a participant's trials."""
    monkeypatch.setattr(export, "STREAM_BATCH_ROWS", request.param)
    return request.param


@pytest.mark.parametrize("selection", SELECTIONS, ids=SELECTION_IDS)
def test_the_streamed_jspsych_csv_is_the_trial_table_as_csv(streamed_study, batch_rows, tmp_path, selection):
    db = streamed_study
    summary = export_study(db, SLUG, "jspsych", tmp_path / "trials.csv", **selection)
    table = trial_table(db, SLUG, **selection)
    written = summary.path.read_bytes()
    assert written == csv_text(table)
    assert (summary.n_rows, summary.n_participants) == (len(table), table["subject_id"].nunique())
    assert (
        b"'=HYPERLINK" in written
        and b"'@SUM" in written
        and b"=HYPERLINK" not in written.replace(b"'=HYPERLINK", b"")
    )
    if selection.get("raw_ids"):
        assert b"'-cmd_calc_A0" in written


@pytest.mark.parametrize("selection", SELECTIONS, ids=SELECTION_IDS)
def test_the_streamed_parquet_is_the_trial_table_as_arrow(streamed_study, batch_rows, tmp_path, selection):
    db = streamed_study
    path = export_study(db, SLUG, "parquet", tmp_path / "trials.parquet", **selection).path
    expected = pa.Table.from_pandas(trial_table(db, SLUG, **selection), preserve_index=False)
    written = pq.read_table(path)
    assert written.schema.equals(expected.schema, check_metadata=True)
    assert written.equals(expected)


def test_a_study_without_answers_writes_the_header_and_schema(streamed_study, tmp_path):
    db = streamed_study
    selection = {"include_simulated": False}
    with db.write() as session:
        session.execute(update(Participant).values(is_simulated=True))
    text = export_study(db, SLUG, "jspsych", tmp_path / "none.csv", **selection).path.read_bytes()
    assert text == csv_text(trial_table(db, SLUG)[:0])
    schema = pq.read_schema(export_study(db, SLUG, "parquet", tmp_path / "none.parquet", **selection).path)
    expected = pa.Table.from_pandas(trial_table(db, SLUG), preserve_index=False).schema
    assert schema.names == expected.names
    for written, wanted in zip(schema, expected, strict=True):  # a time zone is known from a value only
        assert written.type == wanted.type or pa.types.is_timestamp(written.type), written.name


@pytest.mark.parametrize("selection", SELECTIONS, ids=SELECTION_IDS)
def test_the_streamed_things_file_is_the_things_table(streamed_study, batch_rows, tmp_path, selection):
    db = streamed_study
    streamed = export_study(db, SLUG, "things", tmp_path / "streamed.csv", **selection).path
    expected = write_csv(things_table(db, SLUG, **selection), tmp_path / "table.csv")
    assert streamed.read_bytes() == expected.read_bytes()


def test_the_streamed_anchor_file_is_the_anchor_table(db, batch_rows, tmp_path):
    names = ["=a.jpg", "b.jpg", "c.jpg"]
    insert_stimuli(
        db,
        "anchors",
        [
            dict(
                name=name,
                path=f"s/{i}.jpg",
                content_hash=f"h{i}",
                category="x",
                width=8,
                height=8,
                n_bytes=10,
            )
            for i, name in enumerate(names)
        ],
    )
    source = tmp_path / "anchors.csv"
    source.write_text("head,close,far,subject_id\n=a.jpg,b.jpg,c.jpg,+x\nb.jpg,c.jpg,=a.jpg,y\n")
    import_judgments_csv(db, source, stimulus_set_name="anchors", slug="anchor-study")
    for selection in ({}, {"raw_ids": True}):
        streamed = export_study(db, "anchor-study", "anchor", tmp_path / "streamed.csv", **selection).path
        expected = write_csv(anchor_table(db, "anchor-study", **selection), tmp_path / "table.csv")
        assert streamed.read_bytes() == expected.read_bytes()
        assert b"'=a.jpg" in expected.read_bytes()


# The Arrow reader (SQLite through ADBC) and its fallback to the driver's cursor


def _no_driver_cursor(monkeypatch) -> None:
    """Fail any read through the driver's cursor: the export must have come from the Arrow reader."""

    def refuse(*args, **kwargs):
        raise AssertionError("read through the driver's cursor, not the Arrow reader")

    monkeypatch.setattr(export, "driver_batches", refuse)


def _two_trial_study(db) -> list[int]:
    """A study of one list of two experimental triplets; the stimulus ids (the odd ones out: 2 and 5)."""
    ids = make_stimuli(db)
    make_study(
        db,
        SLUG,
        [[experimental(ids[0], ids[1], ids[2]), experimental(ids[3], ids[4], ids[5])]],
        participants_per_list=10,
    )
    return ids


@pytest.mark.parametrize("fmt", ["jspsych", "parquet"])
def test_sqlite_exports_are_read_as_arrow(db, batch_rows, tmp_path, monkeypatch, fmt):
    ids = _two_trial_study(db)
    for name in ("a", "b"):
        run_participant(db, SLUG, name, [ids[2], ids[5]])
    expected = trial_table(db, SLUG)
    _no_driver_cursor(monkeypatch)
    path = export_study(db, SLUG, fmt, tmp_path / f"trials.{fmt}").path
    if fmt == "jspsych":
        assert path.read_bytes() == csv_text(expected)
    else:
        assert pq.read_table(path).equals(pa.Table.from_pandas(expected, preserve_index=False))


def test_a_first_batch_without_any_rt_or_onset_is_read_as_arrow(db, tmp_path, monkeypatch):
    """The ADBC driver types a column from its first batch: rt_ms and client_onset_ms NULL throughout it
    must not fix them as integers (a later real would fail the read)."""
    ids = _two_trial_study(db)
    first = run_participant(db, SLUG, "a", [ids[2], ids[5]])
    run_participant(db, SLUG, "b", [ids[2], None])
    with db.write() as session:
        session.execute(
            update(Response).where(Response.participant_id == first).values(rt_ms=None, client_onset_ms=None)
        )
    monkeypatch.setattr(export, "STREAM_BATCH_ROWS", 2)  # the first batch: participant a's two rows
    expected = trial_table(db, SLUG)
    assert expected["rt"].isna().sum() >= 2 and expected["rt"].notna().any()
    _no_driver_cursor(monkeypatch)
    path = export_study(db, SLUG, "jspsych", tmp_path / "trials.csv").path
    assert path.read_bytes() == csv_text(expected)


def test_a_failed_arrow_read_is_read_again_through_the_driver(db, tmp_path, monkeypatch, caplog):
    """An Arrow read that fails after writing a batch leaves nothing of it: the file is read again from the
    driver's cursor, whole."""
    from db.raw import ArrowReader, ArrowReadFailed

    ids = _two_trial_study(db)
    for name in ("a", "b", "c"):
        run_participant(db, SLUG, name, [ids[2], ids[5]])
    monkeypatch.setattr(export, "STREAM_BATCH_ROWS", 2)
    batches = ArrowReader.batches

    def failing(self, statement, batch_rows=50_000):
        iterator = batches(self, statement, batch_rows)
        if batch_rows == export.STREAM_BATCH_ROWS:  # the trial rows: one batch, then a driver error
            yield next(iterator)
            yield next(iterator)
            raise ArrowReadFailed("Type mismatch in column 5: expected INT64 but got DOUBLE")
        yield from iterator

    monkeypatch.setattr(ArrowReader, "batches", failing)
    for fmt in ("jspsych", "parquet"):
        path = export_study(db, SLUG, fmt, tmp_path / f"trials.{fmt}").path
        expected = trial_table(db, SLUG)
        if fmt == "jspsych":
            assert path.read_bytes() == csv_text(expected)
        else:
            assert pq.read_table(path).equals(pa.Table.from_pandas(expected, preserve_index=False))
    assert "the Arrow read failed" in caplog.text
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("test.db"))
    assert left == ["trials.jspsych", "trials.parquet"]  # no partial file of the failed attempt


def test_without_the_adbc_driver_the_export_reads_through_the_driver(db, tmp_path, monkeypatch):
    import sys

    ids = make_stimuli(db)
    make_study(db, SLUG, [[experimental(ids[0], ids[1], ids[2])]], participants_per_list=10)
    run_participant(db, SLUG, "a", [ids[2]])
    monkeypatch.setitem(sys.modules, "adbc_driver_sqlite.dbapi", None)  # import fails
    read = []
    batches = export.driver_batches
    monkeypatch.setattr(export, "driver_batches", lambda *a, **k: read.append(1) or batches(*a, **k))
    path = export_study(db, SLUG, "jspsych", tmp_path / "trials.csv").path
    assert read and path.read_bytes() == csv_text(trial_table(db, SLUG))
