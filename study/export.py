"""Study exports: THINGS-compatible triplets, a jsPsych-like long CSV (one row per trial), Parquet, the
participant-level table and the interaction events (CSV, or Parquet for a `.parquet` file).

Only consenting participants are exported (see `load_responses`). Each trial row has an `outcome`: answered,
timed_out, or unavailable (an image the server could not serve; such rows are no judgments and are not in the
THINGS table). Participant ids are pseudonymised with the study's salt (HMAC-SHA256, see
`study.judgments.pseudonymise`) unless raw ids are asked for; excluded participants are left out unless asked
for; simulated participants are labelled (`is_simulated`) in every format. Both CSV formats read back with
`study.judgments_import.import_judgments_csv` as the same judgments.

Every CSV cell that a spreadsheet would run as a formula (text starting with `=`, `+`, `-`, `@`, a tab or a
carriage return) is written with a leading single quote (OWASP's CSV-injection rule): an image named
`=HYPERLINK(...)` or a subject id `+cmd|...` arrives as text. Numbers (a negative RT) are left as they are.
"""

from __future__ import annotations

import csv
import gc
import io
import itertools
import json
import logging
import operator
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, TypedDict, Unpack

import numpy as np
import pandas as pd
from sqlalchemy import Select, String, and_, case, func, or_, select, type_coerce

from common.atomic import atomic_path
from db.engine import Database
from db.models import InteractionEvent, JudgmentTask, Participant, Response, Study, Trial, TripletList
from db.raw import ArrowReader, ArrowReadFailed, driver_batches, sqlite_arrow_reader
from study.judgments import (
    analysed_participant,
    answer_batches,
    answered_query,
    consenting_responses,
    load_anchor_judgments,
    load_judgments,
    load_responses,
    load_stimuli,
    odd_last_array,
    pseudonymised,
)
from study.participation import INPUT_MODALITIES
from study.qc import QC_COLUMNS, participant_qc
from study.studies import get_study, select_labelled, study_rows

ExportFormat = Literal["things", "jspsych", "parquet", "anchor", "participants", "events"]
FORMATS: tuple[str, ...] = ("things", "jspsych", "parquet", "anchor", "participants", "events")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
REFRESH_EVENT = "refresh_rate"  # logged once per trial block with the measured frame interval


class Selection(TypedDict, total=False):
    """Who an export includes and how it names them: the keyword options every table builder takes (each
    optional; the defaults are `Chosen`'s)."""

    include_excluded: bool
    include_simulated: bool
    raw_ids: bool


@dataclass(frozen=True)
class Chosen:
    """A `Selection` with its defaults filled in: excluded participants left out, simulated ones kept (and
    labelled), ids pseudonymised."""

    include_excluded: bool = False
    include_simulated: bool = True
    raw_ids: bool = False

    @property
    def subject_column(self) -> str:
        """The column that names a participant in an export: the raw external id, or its pseudonym."""
        return "external_id" if self.raw_ids else "subject"

    def keeps(self, frame: pd.DataFrame) -> pd.Series:
        """Which rows of a table with `excluded` and `is_simulated` columns the selection keeps."""
        keep = pd.Series(True, index=frame.index)
        if not self.include_excluded:
            keep &= ~frame["excluded"].astype(bool)
        if not self.include_simulated:
            keep &= ~frame["is_simulated"].astype(bool)
        return keep


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    format: str
    n_rows: int
    n_participants: int


def things_table(db: Database, slug: str, **selection: Unpack[Selection]) -> pd.DataFrame:
    """Answered trials as THINGS triplets: image1..3 are 0-based indices into the stimulus set ordered by
    name, the odd one out last; plus names, RT (ms), subject_id, trial_nr, level, kind, is_simulated."""
    chosen = Chosen(**selection)
    judgments = load_judgments(
        db, slug, include_excluded=chosen.include_excluded, include_simulated=chosen.include_simulated
    )
    stimuli = load_stimuli(db, slug)
    index = {sid: i for i, sid in enumerate(stimuli.sort_values("name")["id"])}
    names = stimuli.set_index("id")["name"]
    table = pd.DataFrame({f"image{k + 1}": judgments[f"stim{k}"].map(index) for k in range(3)})
    for k in range(3):
        table[f"image{k + 1}_name"] = judgments[f"stim{k}"].map(names)
    table["RT"] = judgments["rt_ms"]
    return _with_subject_and_trial(table, judgments, chosen, ("level", "kind", "is_simulated"))


def anchor_table(db: Database, slug: str, **selection: Unpack[Selection]) -> pd.DataFrame:
    """Answered anchor trials (salmon-like): `head, close, far` stimulus names (the head was judged more
    similar to `close`), RT, subject_id, trial_nr, kind, is_simulated; reads back with the importer."""
    chosen = Chosen(**selection)
    judgments = load_anchor_judgments(
        db, slug, include_excluded=chosen.include_excluded, include_simulated=chosen.include_simulated
    )
    names = _stimulus_names(db, slug)
    table = pd.DataFrame({role: judgments[role].map(names) for role in ("head", "close", "far")})
    table["rt"] = judgments["rt_ms"]
    return _with_subject_and_trial(table, judgments, chosen, ("kind", "is_simulated"))


def _with_subject_and_trial(
    table: pd.DataFrame, judgments: pd.DataFrame, chosen: Chosen, facts: tuple[str, ...]
) -> pd.DataFrame:
    """The columns both judgment exports end with: subject_id, trial_nr, then the trial `facts`."""
    table["subject_id"] = judgments[chosen.subject_column]
    table["trial_nr"] = judgments["trial_index"]
    for column in facts:
        table[column] = judgments[column]
    return table


def _stimulus_names(db: Database, slug: str) -> pd.Series:
    """Stimulus name by stimulus id, for the study's set."""
    return load_stimuli(db, slug).set_index("id")["name"]


def trial_table(db: Database, slug: str, **selection: Unpack[Selection]) -> pd.DataFrame:
    """One row per stored trial response (timeouts and practice included), jsPsych style: rt, response
    (chosen display position), trial_index, time_elapsed, images in stored order and as shown."""
    chosen = Chosen(**selection)
    responses = load_responses(db, slug)
    responses = responses[chosen.keeps(responses)].reset_index(drop=True)
    images = _trial_images(responses, _stimulus_names(db, slug))
    return pd.DataFrame(
        {
            **_trial_facts(responses, chosen),
            **images,
            **_trial_delivery(responses),
            **_trial_selection(responses["selection"]),
        }
    )


def _trial_facts(responses: pd.DataFrame, chosen: Chosen) -> dict[str, Any]:
    """Who answered which trial, and how: the trial table's first columns."""
    return {
        "subject_id": responses[chosen.subject_column],
        "is_simulated": responses["is_simulated"],
        "excluded": responses["excluded"],
        "status": responses["status"],
        "config_version": responses["config_version"].astype("Int64"),
        "trial_index": responses["trial_index"],
        "trial_type": "odd-one-out",
        "kind": responses["kind"],
        "level": responses["level"],
        "block": responses["block"],
        "rt": responses["rt_ms"],
        "response": responses["chosen_position"].astype("Int64"),
        "timed_out": responses["timed_out"],
        "unavailable": responses["unavailable"],
        "outcome": _outcome(responses),
        "time_elapsed": _time_elapsed(responses),
    }


def _trial_images(responses: pd.DataFrame, names: pd.Series) -> dict[str, pd.Series]:
    """The images by name: in stored order, as shown (left to right), and the one chosen."""

    def name(column: str) -> pd.Series:
        return responses[column].map(names)

    return {
        "image1": name("stim0"),
        "image2": name("stim1"),
        "image3": name("stim2"),
        "odd_known": responses["odd_known"],
        "shown_left": name("shown_left"),
        "shown_middle": name("shown_middle"),
        "shown_right": name("shown_right"),
        "odd_one_out": name("chosen_stimulus_id"),
    }


def _trial_delivery(responses: pd.DataFrame) -> dict[str, pd.Series]:
    """Catch accuracy, how and when the answer arrived, and the stored stimulus ids."""
    return {
        "catch_correct": _catch_correct(responses),
        "input_modality": responses["input_modality"],
        "client_onset_ms": responses["client_onset_ms"],
        "server_received_at": responses["server_received_at"],
        "stim0_id": responses["stim0"],
        "stim1_id": responses["stim1"],
        "stim2_id": responses["stim2"],
        "chosen_stimulus_id": responses["chosen_stimulus_id"].astype("Int64"),
    }


def _trial_selection(selections: pd.Series) -> dict[str, pd.Series]:
    """Why an adaptive design asked each trial (empty in fixed designs, and for catch and practice trials):
    the strategy that chose it, its score, the teacher run that scored it, and whether it belongs to the
    random share (drawn uniformly, blind to any teacher: the unbiased evaluation set). Typed columns, so a
    batch without any selection keeps the Parquet schema."""

    def field(name: str) -> pd.Series:  # "" (no teacher run) is missing too
        return selections.map(lambda s: s.get(name) if isinstance(s, dict) and s.get(name) != "" else None)

    strategy = field("strategy").astype("string")
    return {
        "selection_strategy": strategy,
        "selection_score": field("score").astype("Float64"),
        "selection_teacher_run": field("teacher_run").astype("string"),
        "selection_random_share": (strategy == "random").astype("boolean"),
    }


def _outcome(responses: pd.DataFrame) -> pd.Series:
    outcome = np.where(responses["timed_out"], "timed_out", "answered")
    return pd.Series(np.where(responses["unavailable"], "unavailable", outcome), index=responses.index)


def _time_elapsed(responses: pd.DataFrame) -> pd.Series:
    """ms from the participant's start (`started_at`, when they consented) to the end of this trial, as
    jsPsych counts from the start of the experiment.

    The trial's end is client time (onset + RT, in the browser's epoch ms), the start server time; the
    browser's clock offset is estimated per participant as the smallest (server receipt - client end) over
    their trials (the true offset plus the fastest delivery, a few tens of ms), so a browser clock that is
    minutes off does not shift the values. Rows without a client onset use server receipt - start."""
    received_ms = _epoch_ms(responses["server_received_at"])
    started_ms = _epoch_ms(responses["started_at"])
    client_end = responses["client_onset_ms"] + responses["rt_ms"].fillna(0)
    offset = (received_ms - client_end).groupby(responses["participant_id"]).transform("min")
    return (client_end + offset - started_ms).fillna(received_ms - started_ms).round(1)


def _epoch_ms(moments: pd.Series) -> pd.Series:
    """UTC epoch milliseconds of stored timestamps (naive ones from SQLite are UTC)."""
    stamps = pd.to_datetime(moments, utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds() * 1000


def _catch_correct(responses: pd.DataFrame) -> pd.Series:
    known = (responses["kind"] == "catch") & responses["odd_known"]
    correct = (responses["chosen_stimulus_id"] == responses["stim2"]).fillna(False)
    return pd.Series(np.where(known, correct, None), dtype="boolean")


def participant_table(db: Database, slug: str, **selection: Unpack[Selection]) -> pd.DataFrame:
    """One row per consenting participant: id (pseudonym unless `raw_ids`, which adds STUDY_ID and
    SESSION_ID), source, status, config version, list, start, finish, duration, exclusion, payment, the
    strategy answer, demographics and browser facts (flattened, `demographics_*`, `browser_*`), the
    measured refresh interval, and every QC value and flag."""
    chosen = Chosen(**selection)
    qc = participant_qc(db, slug)
    qc = qc[chosen.keeps(qc)].reset_index(drop=True)
    table = _participant_facts(qc, chosen)
    refresh = _refresh_intervals(db, qc["participant_id"].tolist())
    table["refresh_interval_ms"] = qc["participant_id"].map(refresh).astype("Float64")
    parts = [table, _flattened(qc["demographics"], "demographics"), _flattened(qc["browser"], "browser")]
    return pd.concat([*parts, qc[QC_COLUMNS]], axis=1)


def _participant_facts(qc: pd.DataFrame, chosen: Chosen) -> pd.DataFrame:
    """The participant table's own columns (before demographics, browser and QC): ids, source, status,
    version, list, start, finish, duration, exclusion, payment, bonus, strategy."""
    table = pd.DataFrame({"subject_id": qc[chosen.subject_column]})
    if chosen.raw_ids:
        table["STUDY_ID"] = qc["external_study_id"]
        table["SESSION_ID"] = qc["external_session_id"]
    for column in ("source", "is_simulated", "status", "config_version", "list_index"):
        table[column] = qc[column]
    table["started_at"] = pd.to_datetime(qc["started_at"], utc=True)
    table["finished_at"] = pd.to_datetime(qc["finished_at"], utc=True)
    table["duration_s"] = (table["finished_at"] - table["started_at"]).dt.total_seconds().round(1)
    for column in ("excluded", "exclusion_reason", "payment_status", "payment_reason"):
        table[column] = qc[column]
    table["bonus"] = qc["bonus_cents"].astype("Float64") / 100
    table["strategy"] = qc["strategy"]
    return table


def _flattened(records: pd.Series, prefix: str) -> pd.DataFrame:
    """Nested dicts as `prefix_key_subkey` columns; a column mixing numbers and text, or holding lists,
    becomes text so that Parquet can store it."""
    flat = pd.json_normalize([value if isinstance(value, dict) else {} for value in records], sep="_")
    flat.index = records.index
    flat.columns = [f"{prefix}_{column}" for column in flat.columns]
    for column in flat.columns:
        present = flat[column].dropna()
        if not all(isinstance(v, int | float | bool) for v in present) and not all(
            isinstance(v, str) for v in present
        ):
            flat[column] = flat[column].map(_as_text, na_action="ignore")
    return flat


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _refresh_intervals(db: Database, participant_ids: list[int]) -> dict[int, float]:
    """Median measured frame interval (ms) per participant, from the `refresh_rate` events."""
    with db.read() as session:
        rows = session.execute(
            select(InteractionEvent.participant_id, InteractionEvent.detail).where(
                InteractionEvent.participant_id.in_(participant_ids), InteractionEvent.kind == REFRESH_EVENT
            )
        ).all()
    frames: dict[int, list[float]] = {}
    for participant_id, detail in rows:
        value = (detail or {}).get("frame_ms")
        if isinstance(value, int | float) and not isinstance(value, bool):
            frames.setdefault(participant_id, []).append(float(value))
    return {pid: float(np.median(values)) for pid, values in frames.items()}


EVENT_COLUMNS = {
    "participant_id": Participant.id,
    "external_id": Participant.external_id,
    "is_simulated": Participant.is_simulated,
    "excluded": Participant.excluded,
    "started_at": Participant.started_at,
    "kind": InteractionEvent.kind,
    "trial_index": InteractionEvent.trial_index,
    "client_time_ms": InteractionEvent.client_time_ms,
    "server_received_at": InteractionEvent.server_received_at,
    "detail": InteractionEvent.detail,
}


def event_table(db: Database, slug: str, **selection: Unpack[Selection]) -> pd.DataFrame:
    """The interaction events (blur, fullscreen exit, resize, refresh rate, early responses, rejected
    answers...) of consenting participants, oldest first per participant; `detail` as JSON text and
    `server_elapsed_ms` counted from the participant's start."""
    chosen = Chosen(**selection)
    events, salt = _consenting_events(db, slug)
    events = events[chosen.keeps(events)].reset_index(drop=True)
    return pd.DataFrame(
        {
            "subject_id": events["external_id"]
            if chosen.raw_ids
            else pseudonymised(salt, events["external_id"]),
            "is_simulated": events["is_simulated"].astype(bool),
            "excluded": events["excluded"].astype(bool),
            "kind": events["kind"],
            "trial_index": events["trial_index"].astype("Int64"),
            "client_time_ms": events["client_time_ms"].astype(float),
            "server_received_at": pd.to_datetime(events["server_received_at"], utc=True),
            "server_elapsed_ms": (
                _epoch_ms(events["server_received_at"]) - _epoch_ms(events["started_at"])
            ).round(1),
            "detail": events["detail"].map(lambda detail: json.dumps(detail or {}, sort_keys=True)),
        }
    )


def _consenting_events(db: Database, slug: str) -> tuple[pd.DataFrame, str]:
    """Every interaction event of the study's consenting, non-pilot participants (`EVENT_COLUMNS`), and
    the study's pseudonym salt."""
    study, rows = study_rows(db, slug, _events_query)
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS)), study.salt


def _events_query(study: Study) -> Select[*tuple[Any, ...]]:
    return (
        select_labelled(EVENT_COLUMNS)
        .join(Participant, Participant.id == InteractionEvent.participant_id)
        .where(Participant.study_id == study.id, analysed_participant())
        .order_by(Participant.id, InteractionEvent.server_received_at, InteractionEvent.id)
    )


def neutralise_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy in which every text cell that a spreadsheet would run as a formula starts with `'` (OWASP
    CSV injection: cells beginning with =, +, -, @, tab or carriage return). Numbers are left alone."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(_neutralised, na_action="ignore")
    safe.columns = [_neutralised(str(column)) for column in safe.columns]
    return safe


def _neutralised(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(table: pd.DataFrame, path: str | Path, *, header: bool = True) -> Path:
    """The one way AlignLab writes a CSV file: formula cells neutralised, the file complete or not at all."""
    path = Path(path)
    with atomic_path(path) as temporary:
        neutralise_formulas(table).to_csv(temporary, index=False, header=header)
    return path


def csv_bytes(table: pd.DataFrame, *, header: bool = True) -> bytes:
    """The same CSV as `write_csv`, in memory (downloads)."""
    return neutralise_formulas(table).to_csv(index=False, header=header).encode("utf-8")


# --- CSV a column at a time -------------------------------------------------------------------------------
# The streamed exports format whole columns with pyarrow instead of pandas' per-row loop; the cells are those
# of `neutralise_formulas(table).to_csv(index=False)`: text neutralised and quoted as the csv module quotes
# (QUOTE_MINIMAL), each distinct text once; missing values empty; booleans True / False; integers as digits;
# floats as Python's repr (`1269.0897`, `1700000000000.0`, `1e-05`). One deliberate difference, defined here:
# timestamps are always `YYYY-MM-DD HH:MM:SS.ffffff` (UTC, microseconds; `+00:00` added for a time-zone aware
# column), where pandas shows as many fraction digits as some value of each 100k-cell chunk needs.


def csv_text(table: pd.DataFrame, *, header: bool = True) -> bytes:
    """`table` as CSV bytes, formula cells neutralised, built a column at a time (see above)."""
    head = (",".join(_quoted([_neutralised(str(name)) for name in table.columns])) + "\n").encode()
    body = csv_lines([table[name] for name in table.columns]) if len(table) else b""
    return (head if header else b"") + body


def csv_lines(columns: list[Any]) -> bytes:
    """The CSV rows (no header) of equally long columns: Series, numpy arrays (an object array holds
    text), `Coded` text, or `KeyedRows` (several columns known per key; a streamed export need not build a
    DataFrame)."""
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    if not columns or not len(columns[0]):
        return b""
    *cells, last = [_column_cells(column) for column in columns]
    ended = pc.binary_join_element_wise(last, _large("\n"), _large(""))  # the line break on the last cell
    return _characters(pc.binary_join_element_wise(*cells, ended, _large(",")) if cells else ended)


def _row_cells(columns: list[Any]):
    """Each row's cells joined by commas, as a pyarrow large_string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(columns[0]):
        return pa.array([], type=pa.large_string())
    cells = [_column_cells(column) for column in columns]
    return cells[0] if len(cells) == 1 else pc.binary_join_element_wise(*cells, _large(","))


class Keyed:
    """Adjacent columns known per key (a trial's facts, a participant's): one value per key. The streamed
    exports write each key's cells once and look them up for every row (`at`), instead of formatting and
    joining each column for each row."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns
        self._cells = None
        self._arrow: dict[str, Any] = {}

    def at(self, rows: np.ndarray) -> KeyedRows:
        return KeyedRows(self, rows)

    def cells(self):
        """The CSV cells of each key, joined by commas (computed once)."""
        if self._cells is None:
            self._cells = _row_cells(list(self.columns.values()))
        return self._cells

    def arrow(self, name: str):
        """One column as Arrow, per key (computed once)."""
        if name not in self._arrow:
            self._arrow[name] = _arrow(self.columns[name])
        return self._arrow[name]


@dataclass(frozen=True)
class KeyedRows:
    """The columns of a `Keyed` for rows given by their key positions."""

    keyed: Keyed
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def _characters(strings) -> bytes:
    """The characters of a pyarrow large_string array without nulls, end to end."""
    start = strings.offset
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[start : start + len(strings) + 1]
    return strings.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_pybytes()


@dataclass(frozen=True)
class Coded:
    """A text column as codes into its distinct values (`labels[code]`; -1 is missing), with the pandas
    dtype the table builders give it: the streamed exports hold names, pseudonyms and trial facts so, and
    each distinct text is neutralised, quoted or converted once per batch, not once per row."""

    codes: np.ndarray
    labels: np.ndarray  # object: the texts
    dtype: str = "str"

    def __len__(self) -> int:
        return len(self.codes)

    def at(self, rows: np.ndarray | slice) -> Coded:
        """The column's values at `rows` (a per-trial column looked up for each answer)."""
        return Coded(self.codes[rows], self.labels, self.dtype)

    def to_pandas(self) -> Any:
        with_missing = np.concatenate([self.labels, np.array([None], dtype=object)])  # code -1: None
        return pd.array(with_missing[self.codes], dtype=self.dtype)

    def to_arrow(self):
        """As `pa.array` of `to_pandas()`: large_string, missing as null."""
        import pyarrow as pa

        labels = pa.array([str(label) for label in self.labels], type=pa.large_string())
        return labels.take(pa.array(self.codes, mask=self.codes < 0))


def _column_cells(column: pd.Series | np.ndarray | Coded):
    """One column's CSV cells as a pyarrow large_string array without nulls (a missing value is "")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, Coded):
        return _coded_cells(column)
    if isinstance(column, KeyedRows):
        return column.keyed.cells().take(pa.array(column.rows))
    if isinstance(column, pa.Array):  # the streamed exports' timestamps
        return _timestamp_cells(column)
    dtype = column.dtype
    if dtype == np.dtype(object):
        return _text_cells(column)
    column = pd.Series(column, copy=False)
    if pd.api.types.is_bool_dtype(dtype):
        codes = column.to_numpy(dtype="float64", na_value=2.0).astype(np.int64)
        return _looked_up(["False", "True", ""], codes)
    if pd.api.types.is_integer_dtype(dtype):
        integers = pa.array(column.astype("Int64"), type=pa.int64())
        return pc.fill_null(pc.cast(integers, pa.large_string()), _large(""))
    if pd.api.types.is_float_dtype(dtype):
        return _float_cells(column.to_numpy(dtype="float64", na_value=np.nan))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return _timestamp_cells(column)
    return _text_cells(column)


def _text_cells(column: pd.Series | np.ndarray):
    """Text (and any other object) cells: each distinct value neutralised and quoted once."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return _coded_cells(Coded(codes, np.asarray(uniques, dtype=object)))


def _coded_cells(column: Coded):
    """A coded text column's cells: each label neutralised and quoted once."""
    texts = [_neutralised(value) if isinstance(value, str) else str(value) for value in column.labels]
    return _looked_up([*_quoted(texts), ""], column.codes)


def _looked_up(cells: list[str], codes: np.ndarray):
    """`cells[code]` for each code; -1 (missing) is the last cell."""
    import pyarrow as pa

    return pa.array(cells, type=pa.large_string()).take(pa.array(np.where(codes < 0, len(cells) - 1, codes)))


def _quoted(texts: list[str]) -> list[str]:
    """Each text as the csv module writes it inside a row: quoted when it holds a comma, quote or line
    break."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cells = []
    for text in texts:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([text, "."])  # not alone in its row: a lone empty cell would be written as ""
        cells.append(buffer.getvalue()[:-3])
    return cells


def _float_cells(values: np.ndarray):
    """Floats as Python's repr, NaN as "": pyarrow's shortest round-trip digits, whole numbers as their
    integer digits + ".0", and the few values pyarrow writes otherwise (exponents, below 1e-4, -0.0, inf) by
    repr."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = np.isnan(values)
    whole = np.isfinite(values) & (np.trunc(values) == values) & (np.abs(values) < 2.0**53)
    whole &= ~((values == 0) & np.signbit(values))
    text = pc.cast(pa.array(np.where(whole | missing, 0.5, values)), pa.large_string())
    digits = pc.cast(pa.array(np.where(whole, values, 0).astype(np.int64)), pa.large_string())
    text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(digits, _large(".0"), _large("")), text)
    text = pc.if_else(pa.array(missing), _large(""), text)
    has_exponent = pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    tiny = np.abs(values) < 1e-4  # repr writes an exponent below 1e-4, pyarrow the digits
    odd = ~whole & ~missing & (has_exponent | np.isinf(values) | tiny)
    if odd.any():
        python = pa.array([repr(float(value)) for value in values[odd]], type=pa.large_string())
        text = pc.replace_with_mask(text, pa.array(odd), python)
    return text


def _timestamp_cells(column):
    """`YYYY-MM-DD HH:MM:SS.ffffff` in UTC (+ `+00:00` when the column is time-zone aware), missing as "";
    of a pandas column or a pyarrow timestamp array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.Array):
        aware = column.type.tz is not None
        stamps = column.cast(pa.timestamp("us"))  # the UTC wall time (Arrow stores UTC)
    else:
        aware = column.dt.tz is not None
        naive = column.dt.tz_convert("UTC").dt.tz_localize(None) if aware else column
        stamps = pa.array(naive.to_numpy(dtype="datetime64[us]"), type=pa.timestamp("us"))
    text = pc.cast(stamps, pa.large_string())
    if aware:
        text = pc.binary_join_element_wise(text, _large("+00:00"), _large(""))
    return pc.fill_null(text, _large(""))


def _large(text: str):
    """A pyarrow large_string scalar (the cells' type: pyarrow joins only strings of one type)."""
    import pyarrow as pa

    return pa.scalar(text, pa.large_string())


TABLE_BUILDERS = {
    "things": things_table,
    "anchor": anchor_table,
    "participants": participant_table,
    "events": event_table,
    "jspsych": trial_table,
    "parquet": trial_table,
}


def export_study(
    db: Database, slug: str, fmt: ExportFormat, out_path: str | Path, **selection: Unpack[Selection]
) -> ExportSummary:
    """Write one export file; it appears complete or not at all (written to a temporary file, then renamed).
    `participants` and `events` are Parquet when `out_path` ends in `.parquet`, CSV otherwise. The trial-level
    formats (things, anchor, jspsych, parquet) are streamed from the driver's cursor a batch of rows at a
    time, so memory stays flat at any study size; their content is that of the table builders above."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is unknown; expected one of {list(FORMATS)}")
    out_path = Path(out_path)
    if fmt in ("things", "anchor"):
        return _write_judgments_csv(db, slug, out_path, Chosen(**selection), fmt)
    if fmt in ("jspsych", "parquet"):
        return _write_trials(db, slug, out_path, Chosen(**selection), fmt)
    table = TABLE_BUILDERS[fmt](db, slug, **selection)
    if out_path.suffix == ".parquet":
        with atomic_path(out_path) as temporary:
            table.to_parquet(temporary, index=False)
    else:
        write_csv(table, out_path)
    return ExportSummary(out_path, fmt, len(table), int(table["subject_id"].nunique()))


# --- The trial-level exports, streamed ------------------------------------------------------------------
# A million rows through pandas (a frame per batch, a Python object per cell) take minutes; here each answer
# is read from the driver's cursor as a few numbers and texts, everything known per participant or per trial
# (pseudonym, status, kind, level, images, selection) is read once and looked up with numpy index arrays,
# text columns stay codes into their distinct values (`Coded`), and each batch is written as CSV
# (`csv_lines`) or as Arrow arrays into one Parquet schema. Reading the driver's rows holds the interpreter
# lock, formatting with numpy and pyarrow mostly does not: a worker thread writes one batch while the next
# is read (`_overlapped`). The trial table of a SQLite study is read as Arrow batches (`db.raw.ArrowReader`,
# no Python object per value: about twice the rows per second), everything else, and any read that fails
# there, through the driver's cursor. The bytes equal those of the table builders
# (tests/study/test_export_stream.py).

STREAM_BATCH_ROWS = 50_000
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _People:
    """The exported participants by position (`index.get_indexer(participant ids)`): the trial table's
    participant columns (subject id: pseudonym, computed once per participant, or raw id), and their start
    in epoch ms."""

    index: pd.Index
    facts: Keyed  # subject_id, is_simulated, excluded, status, config_version
    started_ms: np.ndarray

    @property
    def subject(self) -> Keyed:
        return Keyed({"subject_id": self.facts.columns["subject_id"]})

    @property
    def is_simulated(self) -> np.ndarray:
        return self.facts.columns["is_simulated"]


def _people(source: _RowSource, study: Study, chosen: Chosen) -> _People:
    columns = {
        "id": Participant.id,
        "external_id": Participant.external_id,
        "is_simulated": Participant.is_simulated,
        "excluded": Participant.excluded,
        "status": type_coerce(Participant.status, String),
        "config_version": Participant.config_version,
        "started_at": Participant.started_at,
    }
    query = _chosen_people(
        select_labelled(columns).where(Participant.study_id == study.id, analysed_participant()), chosen
    )
    frame = source.frame(query)
    names = frame["external_id"] if chosen.raw_ids else pseudonymised(study.salt, frame["external_id"])
    started = frame["started_at"]
    if len(frame) and not pd.api.types.is_datetime64_any_dtype(started):  # SQLite's text, as load_responses
        started = pd.to_datetime(started, format="ISO8601")
    facts = {
        "subject_id": Coded(np.arange(len(frame)), names.to_numpy(object)),
        "is_simulated": frame["is_simulated"].to_numpy(bool),
        "excluded": frame["excluded"].to_numpy(bool),
        "status": _coded(frame["status"]),
        "config_version": frame["config_version"].astype("Int64").array,
    }
    return _People(pd.Index(frame["id"].to_numpy(np.int64)), Keyed(facts), _epoch_ms(started).to_numpy(float))


def _chosen_people(query: Select, chosen: Chosen) -> Select:
    """`query` without the participants the selection leaves out (excluded, simulated), in SQL."""
    if not chosen.include_excluded:
        query = query.where(Participant.excluded.is_(False))
    if not chosen.include_simulated:
        query = query.where(Participant.is_simulated.is_(False))
    return query


@dataclass(frozen=True)
class _Stimuli:
    """Stimulus names by position (`position[stimulus id]`, -1 for an id outside the study's set) and each
    stimulus's 0-based index in name order (the THINGS image number)."""

    names: np.ndarray  # object
    position: np.ndarray
    things_index: np.ndarray

    @classmethod
    def of(cls, stimuli: pd.DataFrame) -> _Stimuli:
        ids = stimuli["id"].to_numpy(np.int64)
        position = np.full(int(ids.max()) + 1 if len(ids) else 1, -1, dtype=np.int64)
        position[ids] = np.arange(len(ids))
        things_index = np.empty(len(ids), dtype=np.int64)
        things_index[np.argsort(stimuli["name"].to_numpy(object), kind="stable")] = np.arange(len(ids))
        return cls(stimuli["name"].to_numpy(object), position, things_index)

    def at(self, ids: np.ndarray) -> np.ndarray:
        """Positions of stimulus ids (float ids from the driver; NaN and unknown ids give -1)."""
        known = ~np.isnan(ids) & (ids >= 0) & (ids < len(self.position))
        return np.where(known, self.position[np.where(known, ids, 0).astype(np.int64)], -1)

    def named(self, ids: np.ndarray) -> Coded:
        return Coded(self.at(ids), self.names)


def _coded(values: pd.Series | np.ndarray | list, dtype: str = "str") -> Coded:
    """A column of few distinct texts as codes into them (each distinct value once)."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    return Coded(codes, np.asarray(uniques, dtype=object), dtype)


def _overlapped(items: Iterator[Any], work: Any) -> None:
    """`work(item)` for each item in order, in one worker thread, while this thread produces the next items
    (reading the driver's rows holds the interpreter lock; numpy and pyarrow mostly release it, so the two
    overlap on two cores). At most two items wait, so memory stays at a few batches; the first failure is
    raised here and the items not yet worked on are dropped."""
    pending: deque[Future] = deque()
    with _collector_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="alignlab-export") as pool:
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) > 2:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a study streams through: every row arrives as a new tuple, and the
    collector would walk each of them (a twentieth of the reader's time, with the interpreter lock held)
    although the rows hold only numbers and text, never a cycle. Turned back on after, unless it was off
    before (another export still streaming, or the caller's choice)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@dataclass
class _Tally:
    """What a streamed export wrote: rows, and the distinct participants they belong to."""

    rows: int = 0
    people: set[int] = field(default_factory=set)

    def add(self, participant_ids: np.ndarray) -> None:
        self.rows += len(participant_ids)
        self.people.update(np.unique(participant_ids).tolist())


# THINGS and anchor files: the answered trials, five numbers per answer (`answer_batches`)

THINGS_HEADER = (
    *(f"image{k}" for k in (1, 2, 3)),
    *(f"image{k}_name" for k in (1, 2, 3)),
    "RT",
    "subject_id",
    "trial_nr",
    "level",
    "kind",
    "is_simulated",
)
ANCHOR_HEADER = ("head", "close", "far", "rt", "subject_id", "trial_nr", "kind", "is_simulated")


@dataclass(frozen=True)
class _TrialDetails:
    """What the exports say about each of the study's trials, by position (`index.get_indexer(trial ids)`):
    stored images, and the trial table's per-trial columns (`_trial_facts`', `_trial_images`' and
    `_trial_selection`'s; the selection computed with the table builder's own code) in the runs of
    adjacent columns it writes them."""

    index: pd.Index
    stored: np.ndarray  # [n, 3] stimulus ids
    catch_known: np.ndarray  # a catch trial with a known odd one out: its accuracy is reported
    design: Keyed  # trial_type, kind, level, block
    images: Keyed  # image1, image2, image3, odd_known
    stimulus_ids: Keyed  # stim0_id, stim1_id, stim2_id
    selection: Keyed  # selection_strategy, selection_score, selection_teacher_run, selection_random_share

    @property
    def kind(self) -> Coded:
        return self.design.columns["kind"]

    @property
    def level(self) -> Coded:
        return self.design.columns["level"]

    @classmethod
    def read(cls, source: _RowSource, study_id: int, stimuli: _Stimuli) -> _TrialDetails:
        columns = {
            "id": Trial.id,
            "kind": type_coerce(Trial.kind, String),
            "level": type_coerce(Trial.level, String),
            "block": Trial.block,
            "odd_known": Trial.odd_known,
            "stim0": Trial.stim0_id,
            "stim1": Trial.stim1_id,
            "stim2": Trial.stim2_id,
            "selection": Trial.selection,
        }
        query = (
            select_labelled(columns)
            .join(TripletList, TripletList.id == Trial.list_id)
            .where(TripletList.study_id == study_id)
        )
        trials = source.frame(query)
        stored = trials[["stim0", "stim1", "stim2"]].to_numpy(np.int64)
        odd_known = trials["odd_known"].to_numpy(bool)
        selections = trials["selection"].map(lambda s: json.loads(s) if isinstance(s, str) else s)
        return cls(
            index=pd.Index(trials["id"].to_numpy(np.int64)),
            stored=stored,
            catch_known=(trials["kind"] == "catch").to_numpy(bool) & odd_known,
            design=Keyed(
                {
                    "trial_type": Coded(np.zeros(len(trials), np.int64), np.array(["odd-one-out"], object)),
                    "kind": _coded(trials["kind"]),
                    "level": _coded(trials["level"]),
                    "block": trials["block"].to_numpy(np.int64),
                }
            ),
            images=Keyed(
                {
                    **{f"image{k + 1}": stimuli.named(stored[:, k].astype(float)) for k in range(3)},
                    "odd_known": odd_known,
                }
            ),
            stimulus_ids=Keyed({f"stim{k}_id": stored[:, k] for k in range(3)}),
            selection=Keyed(
                {
                    name: _coded(column, column.dtype.name)
                    if pd.api.types.is_string_dtype(column)
                    else column.array
                    for name, column in _trial_selection(selections).items()
                }
            ),
        )


def _things_columns(answers: np.ndarray, stimuli: _Stimuli, trials: _TrialDetails, people: _People) -> list:
    """THINGS rows (`things_table`) of [m, 5] answers: the triplet odd one out last, as indices and names."""
    ids = answers[:, :4].astype(np.int64)
    row, person = trials.index.get_indexer(ids[:, 2]), people.index.get_indexer(ids[:, 0])
    triplet = stimuli.at(odd_last_array(trials.stored[row], ids[:, 3]).astype(np.float64))
    return [
        *(stimuli.things_index[triplet[:, k]] for k in range(3)),
        *(Coded(triplet[:, k], stimuli.names) for k in range(3)),
        answers[:, 4],
        people.subject.at(person),
        ids[:, 1],
        trials.level.at(row),
        trials.kind.at(row),
        people.is_simulated[person],
    ]


def _anchor_columns(answers: np.ndarray, stimuli: _Stimuli, trials: _TrialDetails, people: _People) -> list:
    """Anchor rows (`anchor_table`): head (stim0), close (the chosen image), far (the other one)."""
    ids = answers[:, :4].astype(np.int64)
    row, person = trials.index.get_indexer(ids[:, 2]), people.index.get_indexer(ids[:, 0])
    stored, chosen = trials.stored[row], ids[:, 3]
    far = np.where(chosen == stored[:, 1], stored[:, 2], stored[:, 1])
    return [
        *(stimuli.named(part.astype(np.float64)) for part in (stored[:, 0], chosen, far)),
        answers[:, 4],
        people.subject.at(person),
        ids[:, 1],
        trials.kind.at(row),
        people.is_simulated[person],
    ]


def _write_judgments_csv(db: Database, slug: str, out_path: Path, chosen: Chosen, fmt: str) -> ExportSummary:
    """The THINGS or anchor file for the whole study: its bytes equal `write_csv` of `things_table` or
    `anchor_table`."""
    task, header, build = {
        "things": (JudgmentTask.ODD_ONE_OUT, THINGS_HEADER, _things_columns),
        "anchor": (JudgmentTask.ANCHOR, ANCHOR_HEADER, _anchor_columns),
    }[fmt]
    stimuli = _Stimuli.of(load_stimuli(db, slug))
    tally = _Tally()
    with db.read() as session, atomic_path(out_path) as temporary, open(temporary, "wb") as out:
        study = get_study(session, slug)
        source = _SessionRows(session)
        people, trials = _people(source, study, chosen), _TrialDetails.read(source, study.id, stimuli)
        out.write(csv_text(pd.DataFrame(columns=list(header))))
        query = answered_query(
            study.id,
            include_excluded=chosen.include_excluded,
            include_simulated=chosen.include_simulated,
            task=task,
        )

        def write(answers: np.ndarray) -> None:
            out.write(csv_lines(build(answers, stimuli, trials, people)))
            tally.add(answers[:, 0])

        _overlapped(answer_batches(session, query, STREAM_BATCH_ROWS), write)
    return ExportSummary(out_path, fmt, tally.rows, len(tally.people))


# The trial table (jsPsych CSV, Parquet): every stored response, nine values per row

# The driver spends about as long on each value as on the row around it, so the answer's small facts travel
# as one exact integer, the answer code: timed_out + 2 * unavailable + 4 * modality (its place in
# INPUT_MODALITIES) + 32 (a position, absent: 0) + 64 * position (0-2) + 256 * trial index. The chosen image
# is not read at all: every write path stores it as the image shown at the chosen position. A row where that
# does not hold, or whose modality, position or trial index is out of that code's range, is irregular: its
# code is -1 and its participant's stored answers are read apart (`_irregular_answers`): the file is exact
# whatever the database holds.
_POSITIONS = (0, 1, 2)
_MAX_TRIAL_INDEX = 2**44  # 256 * 2**44 = 2**52: every code is an exact float64
_SHOWN_AT_POSITION = case(
    {0: Response.shown_left_id, 1: Response.shown_middle_id, 2: Response.shown_right_id},
    value=Response.chosen_position,
)
_REGULAR = and_(
    Response.input_modality.in_(INPUT_MODALITIES),
    or_(Response.chosen_position.is_(None), Response.chosen_position.in_(_POSITIONS)),
    or_(  # NULL-safe equality (SQLite's IS would not render its literals here)
        Response.chosen_stimulus_id == _SHOWN_AT_POSITION,
        and_(Response.chosen_stimulus_id.is_(None), _SHOWN_AT_POSITION.is_(None)),
    ),
    Response.trial_index >= 0,
    Response.trial_index < _MAX_TRIAL_INDEX,
)
ANSWER_CODE = case(
    (
        _REGULAR,
        case((Response.timed_out.is_(True), 1), else_=0)
        + case((Response.unavailable.is_(True), 2), else_=0)
        + 4 * case({name: code for code, name in enumerate(INPUT_MODALITIES)}, value=Response.input_modality)
        + case((Response.chosen_position.is_(None), 0), else_=32 + 64 * Response.chosen_position)
        + 256 * Response.trial_index,
    ),
    else_=-1,
)
TRIAL_ROW_NUMBERS = {  # read as float64 columns
    "participant_id": Participant.id,
    "trial_id": Response.trial_id,
    "shown_left": Response.shown_left_id,
    "shown_middle": Response.shown_middle_id,
    "shown_right": Response.shown_right_id,
    "rt_ms": Response.rt_ms,
    "client_onset_ms": Response.client_onset_ms,
    "answer_code": ANSWER_CODE,
}
STORED_ANSWER = {  # what the answer code stands for, read apart for a participant with an irregular row
    "trial_index": Response.trial_index,
    "chosen_position": Response.chosen_position,
    "chosen_stimulus_id": Response.chosen_stimulus_id,
    "input_modality": Response.input_modality,
    "timed_out": Response.timed_out,
    "unavailable": Response.unavailable,
}
TRIAL_ROW_TEXTS = {"server_received_at": Response.server_received_at}
# The Arrow reader types each column from its first batch, where a nullable REAL column NULL throughout would
# become int64 and a later value fail: it reads those two as ifnull(x, 0.0) and their NULLs as flags.
_NULLABLE_REALS = ("rt_ms", "client_onset_ms")
ARROW_TRIAL_ROW = {
    **TRIAL_ROW_NUMBERS,
    **{name: func.ifnull(TRIAL_ROW_NUMBERS[name], 0.0) for name in _NULLABLE_REALS},
    "missing": case((Response.rt_ms.is_(None), 1), else_=0)
    + case((Response.client_onset_ms.is_(None), 2), else_=0),
    **TRIAL_ROW_TEXTS,
}
_NUMBER_AT = {name: position for position, name in enumerate(TRIAL_ROW_NUMBERS)}
_MODALITIES = np.array(INPUT_MODALITIES, dtype=object)

# timed_out, unavailable and outcome of each combination of the two flags (timed_out + 2 * unavailable)
_OUTCOMES = Keyed(
    {
        "timed_out": np.array([False, True, False, True]),
        "unavailable": np.array([False, False, True, True]),
        "outcome": Coded(np.array([0, 1, 2, 2]), np.array(["answered", "timed_out", "unavailable"], object)),
    }
)


def _whole_participants(batches: Iterator[Sequence[Any]]) -> Iterator[list[Any]]:
    """Driver batches (rows by participant) regrouped so that no participant's rows are split between two:
    `time_elapsed` needs all of a participant's trials. Each batch's last participant waits for the next."""
    waiting: list[Any] = []
    for rows in batches:
        rows = waiting + list(rows)
        cut, last = len(rows), rows[-1][0]
        while cut and rows[cut - 1][0] == last:
            cut -= 1
        waiting = rows[cut:]
        if cut:
            yield rows[:cut]
    if waiting:
        yield waiting


@dataclass(frozen=True)
class _TrialRows:
    """One batch of response rows as columns: the numbers [len(TRIAL_ROW_NUMBERS), m], the receipt times,
    and what the answer code holds: trial index, flags, position, the chosen image, the input modality."""

    numbers: np.ndarray
    received: Any  # a pyarrow timestamp array
    trial_index: np.ndarray
    flags: np.ndarray  # timed_out + 2 * unavailable
    chosen_position: np.ndarray  # NaN: none
    chosen: np.ndarray  # the chosen stimulus id, NaN: none
    modality: Coded
    irregular: np.ndarray  # rows whose answer is read apart (`_irregular_answers`)

    @classmethod
    def of(cls, rows: list[tuple]) -> _TrialRows:
        """A batch of driver rows as columns (itemgetter slices and picks in C: a Python generator over
        the rows would cost a fifth of reading them)."""
        width = len(TRIAL_ROW_NUMBERS)
        values = itertools.chain.from_iterable(map(operator.itemgetter(slice(0, width)), rows))
        numbers = np.fromiter(values, np.float64, count=len(rows) * width).reshape(len(rows), width).T
        return cls.of_columns(numbers, _timestamps(list(map(operator.itemgetter(width), rows))))

    @classmethod
    def of_arrow(cls, batch: Any) -> _TrialRows:
        """A RecordBatch of `ARROW_TRIAL_ROW` columns as the same columns: integers as float64 (NULL: NaN),
        the two nullable reals NaN where `missing` flags them."""
        import pyarrow as pa

        numbers = np.stack(
            [
                batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                for name in TRIAL_ROW_NUMBERS
            ]
        )
        missing = batch.column("missing").to_numpy(zero_copy_only=False)
        for flag, name in enumerate(_NULLABLE_REALS):
            numbers[_NUMBER_AT[name], (missing >> flag) & 1 == 1] = np.nan
        return cls.of_columns(numbers, batch.column("server_received_at").cast(pa.timestamp("us")))

    @classmethod
    def of_columns(cls, numbers: np.ndarray, received: Any) -> _TrialRows:
        """[len(TRIAL_ROW_NUMBERS), m] float64 numbers and a pyarrow timestamp array, the answer code
        unpacked."""
        code = numbers[_NUMBER_AT["answer_code"]]
        irregular = code < 0
        answer = np.mod(code, 256)
        position = np.where(answer >= 32, np.floor_divide(answer, 64), np.nan)
        shown = numbers[[_NUMBER_AT["shown_left"], _NUMBER_AT["shown_middle"], _NUMBER_AT["shown_right"]]]
        return cls(
            numbers,
            received,
            np.floor_divide(code, 256).astype(np.int64),
            np.mod(answer, 4).astype(np.int64),
            position,
            _shown_at(shown, position),
            Coded(
                np.where(irregular, -1, np.floor_divide(np.mod(answer, 32), 4)).astype(np.int64), _MODALITIES
            ),
            irregular,
        )

    def __getitem__(self, name: str) -> np.ndarray:
        return self.numbers[_NUMBER_AT[name]]


def _shown_at(shown: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The stimulus id shown at each position ([3, m] shown ids; NaN for no position or one outside 0-2)."""
    valid = np.isin(position, _POSITIONS)
    picked = np.take_along_axis(shown, np.where(valid, position, 0).astype(np.int64)[None, :], axis=0)[0]
    return np.where(valid, picked, np.nan)


def _irregular_answers(
    source: _RowSource, batch: _TrialRows, stored: Callable[[list[int]], Select]
) -> _TrialRows:
    """The batch with the answers of its participants who have an irregular row as stored: `stored(ids)`
    reads their `STORED_ANSWER`s in the main query's order, so they line up with those participants' rows
    of the batch (whole participants). Such rows exist only in a database edited by hand."""
    participants = batch["participant_id"]
    rows = np.flatnonzero(np.isin(participants, participants[batch.irregular]))
    ids = sorted({int(participant) for participant in participants[batch.irregular]})
    answers = source.frame(stored(ids))
    if len(answers) != len(rows):
        raise RuntimeError("the study's answers changed while they were exported")

    def put(column: np.ndarray, values: np.ndarray) -> np.ndarray:
        column = column.copy()
        column[rows] = values
        return column

    flags = answers["timed_out"].astype(bool) + 2 * answers["unavailable"].astype(bool)
    modality = batch.modality.labels[batch.modality.codes]  # an irregular row's -1: set just below
    modality[rows] = answers["input_modality"].to_numpy(object)
    return replace(
        batch,
        trial_index=put(batch.trial_index, answers["trial_index"].to_numpy(np.int64)),
        flags=put(batch.flags, flags.to_numpy(np.int64)),
        chosen_position=put(
            batch.chosen_position, answers["chosen_position"].to_numpy(float, na_value=np.nan)
        ),
        chosen=put(batch.chosen, answers["chosen_stimulus_id"].to_numpy(float, na_value=np.nan)),
        modality=_coded(modality),
    )


def _timestamps(values: list):
    """Stored timestamps as a pyarrow timestamp[us] array, as `load_responses` gives them to pandas: SQLite's
    ISO text as naive UTC, PostgreSQL's aware datetimes in the time zone the driver gives them."""
    import pyarrow as pa

    if values and not isinstance(values[0], str):
        aware = pa.array(values)
        return aware.cast(pa.timestamp("us", tz=aware.type.tz))
    return pa.array(values, type=pa.string()).cast(pa.timestamp("us"))


def _nullable_integers(values: np.ndarray):
    """Float values with NaN for missing as pandas Int64."""
    missing = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)


def _trial_columns(batch: _TrialRows, stimuli: _Stimuli, trials: _TrialDetails, people: _People) -> list:
    """The trial table's columns (`trial_table`) for one batch of whole participants: single columns as
    (name, column) and runs of per-trial or per-participant columns as `KeyedRows`."""
    person = people.index.get_indexer(batch["participant_id"].astype(np.int64))
    row = trials.index.get_indexer(batch["trial_id"].astype(np.int64))
    chosen = batch.chosen
    correct = chosen == trials.stored[row, 2]  # NaN (no answer) is not correct
    return [
        people.facts.at(person),
        ("trial_index", batch.trial_index),
        trials.design.at(row),
        ("rt", batch["rt_ms"]),
        ("response", _nullable_integers(batch.chosen_position)),
        _OUTCOMES.at(batch.flags),
        ("time_elapsed", _elapsed_ms(batch, people.started_ms[person])),
        trials.images.at(row),
        ("shown_left", stimuli.named(batch["shown_left"])),
        ("shown_middle", stimuli.named(batch["shown_middle"])),
        ("shown_right", stimuli.named(batch["shown_right"])),
        ("odd_one_out", stimuli.named(chosen)),
        ("catch_correct", pd.arrays.BooleanArray(correct, ~trials.catch_known[row])),
        ("input_modality", batch.modality),
        ("client_onset_ms", batch["client_onset_ms"]),
        ("server_received_at", batch.received),
        trials.stimulus_ids.at(row),
        ("chosen_stimulus_id", _nullable_integers(chosen)),
        trials.selection.at(row),
    ]


def _named_columns(parts: list) -> Iterator[tuple[str, Any]]:
    """Every column of `_trial_columns`' parts by name, the keyed runs taken for their rows (Arrow)."""
    import pyarrow as pa

    for part in parts:
        if isinstance(part, KeyedRows):
            rows = pa.array(part.rows)
            for name in part.keyed.columns:
                yield name, part.keyed.arrow(name).take(rows)
        else:
            yield part


def _elapsed_ms(batch: _TrialRows, started_ms: np.ndarray) -> np.ndarray:
    """`_time_elapsed` over a batch of whole participants (rows grouped by participant): the same
    arithmetic, the per-participant minimum taken with `np.fmin.reduceat` (NaN ignored, as groupby's)."""
    import pyarrow as pa

    received_us = batch.received.cast(pa.int64()).to_numpy(zero_copy_only=False)
    received_ms = received_us / 1e6 * 1000  # as _epoch_ms: total seconds, then ms
    rt = batch["rt_ms"]
    client_end = batch["client_onset_ms"] + np.where(np.isnan(rt), 0, rt)
    pid = batch["participant_id"]
    if not len(pid):
        return received_ms
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    offset = np.repeat(np.fmin.reduceat(received_ms - client_end, starts), np.diff(np.r_[starts, len(pid)]))
    elapsed = client_end + offset - started_ms
    return np.where(np.isnan(elapsed), received_ms - started_ms, elapsed).round(1)


def _write_trials(db: Database, slug: str, out_path: Path, chosen: Chosen, fmt: str) -> ExportSummary:
    """The trial table of the whole study as a jsPsych-style CSV or as Parquet; equal to `write_csv` /
    `to_parquet` of `trial_table` (timestamps as `csv_text` writes them). Read as Arrow batches where the
    database allows (SQLite with the ADBC driver: `_ArrowRows`), else, or when that read fails, through the
    driver's cursor on the session (`_SessionRows`); a failed attempt leaves nothing behind."""
    stimuli = _Stimuli.of(load_stimuli(db, slug))
    with db.read() as session:
        study = get_study(session, slug)
        with sqlite_arrow_reader(session) as reader:
            if reader is not None:
                try:
                    return _write_trial_file(_ArrowRows(reader), study, stimuli, out_path, chosen, fmt)
                except ArrowReadFailed as error:
                    _log.warning(
                        "trial export of %s: the Arrow read failed (%s); reading it again", slug, error
                    )
        return _write_trial_file(_SessionRows(session), study, stimuli, out_path, chosen, fmt)


def _write_trial_file(
    source: _RowSource, study: Study, stimuli: _Stimuli, out_path: Path, chosen: Chosen, fmt: str
) -> ExportSummary:
    tally = _Tally()
    with atomic_path(out_path) as temporary:
        people, trials = _people(source, study, chosen), _TrialDetails.read(source, study.id, stimuli)

        def stored(participant_ids: list[int]) -> Select:
            answers = _chosen_people(consenting_responses(STORED_ANSWER, study.id), chosen)
            return answers.where(Participant.id.in_(participant_ids))

        batches = source.trial_batches(
            lambda columns: _chosen_people(consenting_responses(columns, study.id), chosen), stored
        )
        with _trial_sink(fmt, temporary) as sink:

            def write(batch: _TrialRows) -> None:
                sink.write(_trial_columns(batch, stimuli, trials, people))
                tally.add(batch["participant_id"])

            _overlapped(batches, write)
            if not tally.rows:  # the header (CSV) or schema (Parquet) of no rows
                sink.write(_trial_columns(_TrialRows.of([]), stimuli, trials, people))
    return ExportSummary(out_path, fmt, tally.rows, len(tally.people))


class _RowSource(Protocol):
    """Where a streamed export reads: small results as DataFrames (named by the query's labels), the
    trial rows as `_TrialRows` of whole participants (`query(columns)`: the response rows, those columns
    selected), irregular answers read apart (`stored(participant ids)`)."""

    def frame(self, query: Select) -> pd.DataFrame: ...

    def trial_batches(
        self, query: Callable[[dict[str, Any]], Select], stored: Callable[[list[int]], Select]
    ) -> Iterator[_TrialRows]: ...


@dataclass(frozen=True)
class _SessionRows:
    """Reads on the session (any database): DataFrames through SQLAlchemy, trial rows from the driver's
    cursor (`driver_batches`, a Python object per value)."""

    session: Any

    def frame(self, query: Select) -> pd.DataFrame:
        return pd.DataFrame(self.session.execute(query).all(), columns=list(query.selected_columns.keys()))

    def trial_batches(
        self, query: Callable[[dict[str, Any]], Select], stored: Callable[[list[int]], Select]
    ) -> Iterator[_TrialRows]:
        rows = driver_batches(
            self.session, query({**TRIAL_ROW_NUMBERS, **TRIAL_ROW_TEXTS}), STREAM_BATCH_ROWS
        )
        for whole in _whole_participants(rows):
            batch = _TrialRows.of(whole)
            yield _irregular_answers(self, batch, stored) if batch.irregular.any() else batch


@dataclass(frozen=True)
class _ArrowRows:
    """Reads on an `ArrowReader` (SQLite through ADBC), every one in its one read transaction: people,
    trials and answers from one state of the database. Any driver failure raises `ArrowReadFailed`."""

    reader: ArrowReader

    def frame(self, query: Select) -> pd.DataFrame:
        """The rows as pandas makes them of Arrow columns; no rows as the session's (untyped) frame."""
        table = self.reader.table(query)
        return table.to_pandas() if table.num_rows else pd.DataFrame(columns=table.column_names)

    def trial_batches(
        self, query: Callable[[dict[str, Any]], Select], stored: Callable[[list[int]], Select]
    ) -> Iterator[_TrialRows]:
        for whole in _whole_participant_batches(
            self.reader.batches(query(ARROW_TRIAL_ROW), STREAM_BATCH_ROWS)
        ):
            batch = _TrialRows.of_arrow(whole)
            yield _irregular_answers(self, batch, stored) if batch.irregular.any() else batch


def _whole_participant_batches(batches: Iterator[Any]) -> Iterator[Any]:
    """`_whole_participants` for Arrow RecordBatches: each batch's last participant waits for the next."""
    import pyarrow as pa

    waiting = None
    for batch in batches:
        if not batch.num_rows:
            continue
        if waiting is not None:
            batch = pa.concat_batches([waiting, batch])
        participants = batch.column("participant_id").to_numpy(zero_copy_only=False)
        others = np.flatnonzero(participants != participants[-1])
        cut = int(others[-1]) + 1 if len(others) else 0
        waiting = batch.slice(cut)
        if cut:
            yield batch.slice(0, cut)
    if waiting is not None and waiting.num_rows:
        yield waiting


@contextmanager
def _trial_sink(fmt: str, path: Path) -> Iterator[_CsvSink | _ParquetSink]:
    if fmt == "parquet":
        sink = _ParquetSink(path)
        try:
            yield sink
        finally:
            sink.close()
    else:
        with open(path, "wb") as out:
            yield _CsvSink(out)


class _CsvSink:
    """Trial columns appended to a CSV file: the header once, then each batch's rows."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.header_written = False

    def write(self, parts: list) -> None:
        if not self.header_written:
            names = [name for part in parts for name in _part_names(part)]
            self.out.write(csv_text(pd.DataFrame(columns=names)))
            self.header_written = True
        self.out.write(csv_lines([part if isinstance(part, KeyedRows) else part[1] for part in parts]))


def _part_names(part: Any) -> list[str]:
    return list(part.keyed.columns) if isinstance(part, KeyedRows) else [part[0]]


def _arrow(column: Any):
    """A trial column as the Arrow array `pa.Table.from_pandas` makes of it (NaN in a float column is
    null)."""
    import pyarrow as pa

    if isinstance(column, Coded):
        return column.to_arrow()
    if isinstance(column, pa.Array):
        return column
    return pa.array(column, from_pandas=True)


def _trial_schema(parts: list):
    """The Arrow schema `pa.Table.from_pandas` gives `trial_table` (pandas metadata included, so that pandas
    reads the nullable columns back as Int64, boolean and string), from no rows of each column as pandas
    holds it (its dtype alone fixes its type)."""
    import pyarrow as pa

    def head(column: Any) -> Any:
        if isinstance(column, Coded):
            return column.at(slice(0, 0)).to_pandas()
        if isinstance(column, pa.Array):
            return column.slice(0, 0).to_pandas()
        return column[:0]

    frame = {}
    for part in parts:
        columns = part.keyed.columns.items() if isinstance(part, KeyedRows) else [part]
        frame.update({name: head(column) for name, column in columns})
    return pa.Schema.from_pandas(pd.DataFrame(frame), preserve_index=False)


class _ParquetSink:
    """Trial columns appended to a Parquet file as row groups, all in one schema: the types each column
    has by construction, with the pandas metadata `to_parquet` of `trial_table` stores (so pandas reads
    the nullable columns back as Int64, boolean and string)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None

    def write(self, parts: list) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, _trial_schema(parts))
        schema = self.writer.schema
        arrays = [_arrow(column).cast(schema.field(name).type) for name, column in _named_columns(parts)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
