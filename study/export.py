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
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import pandas as pd
from sqlalchemy import Select, select

from common.atomic import atomic_path
from db.engine import Database
from db.models import InteractionEvent, Participant, Study
from study.judgments import (
    analysed_participant,
    answer_batches,
    answered_query,
    load_anchor_judgments,
    load_judgments,
    load_responses,
    load_stimuli,
    odd_last_array,
    pseudonymise,
    pseudonymised,
    trial_facts,
)
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


def things_table(
    db: Database,
    slug: str,
    *,
    participant_ids: list[int] | None = None,
    stimuli: pd.DataFrame | None = None,
    **selection: Unpack[Selection],
) -> pd.DataFrame:
    """Answered trials as THINGS triplets: image1..3 are 0-based indices into the stimulus set ordered by
    name, the odd one out last; plus names, RT (ms), subject_id, trial_nr, level, kind, is_simulated."""
    chosen = Chosen(**selection)
    judgments = load_judgments(
        db,
        slug,
        include_excluded=chosen.include_excluded,
        include_simulated=chosen.include_simulated,
        participant_ids=participant_ids,
    )
    stimuli = load_stimuli(db, slug) if stimuli is None else stimuli
    index = {sid: i for i, sid in enumerate(stimuli.sort_values("name")["id"])}
    names = stimuli.set_index("id")["name"]
    table = pd.DataFrame({f"image{k + 1}": judgments[f"stim{k}"].map(index) for k in range(3)})
    for k in range(3):
        table[f"image{k + 1}_name"] = judgments[f"stim{k}"].map(names)
    table["RT"] = judgments["rt_ms"]
    return _with_subject_and_trial(table, judgments, chosen, ("level", "kind", "is_simulated"))


def anchor_table(
    db: Database,
    slug: str,
    *,
    participant_ids: list[int] | None = None,
    stimuli: pd.DataFrame | None = None,
    **selection: Unpack[Selection],
) -> pd.DataFrame:
    """Answered anchor trials (salmon-like): `head, close, far` stimulus names (the head was judged more
    similar to `close`), RT, subject_id, trial_nr, kind, is_simulated; reads back with the importer."""
    chosen = Chosen(**selection)
    judgments = load_anchor_judgments(
        db,
        slug,
        include_excluded=chosen.include_excluded,
        include_simulated=chosen.include_simulated,
        participant_ids=participant_ids,
    )
    names = _stimulus_names(db, slug, stimuli)
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


def _stimulus_names(db: Database, slug: str, stimuli: pd.DataFrame | None = None) -> pd.Series:
    """Stimulus name by stimulus id, for the study's set (from `stimuli` when the caller has read them)."""
    return (load_stimuli(db, slug) if stimuli is None else stimuli).set_index("id")["name"]


def trial_table(
    db: Database,
    slug: str,
    *,
    participant_ids: list[int] | None = None,
    stimuli: pd.DataFrame | None = None,
    **selection: Unpack[Selection],
) -> pd.DataFrame:
    """One row per stored trial response (timeouts and practice included), jsPsych style: rt, response
    (chosen display position), trial_index, time_elapsed, images in stored order and as shown."""
    chosen = Chosen(**selection)
    responses = load_responses(db, slug, participant_ids)
    responses = responses[chosen.keeps(responses)].reset_index(drop=True)
    images = _trial_images(responses, _stimulus_names(db, slug, stimuli))
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


def csv_lines(columns: list[pd.Series | np.ndarray]) -> bytes:
    """The CSV rows (no header) of equally long columns: Series, or numpy arrays (an object array holds
    text; a streamed export need not build a DataFrame)."""
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    if not columns or not len(columns[0]):
        return b""
    cells = [_column_cells(column) for column in columns]
    rows = cells[0] if len(cells) == 1 else pc.binary_join_element_wise(*cells, _large(","))
    return _characters(pc.binary_join_element_wise(rows, _large("\n"), _large("")))


def _characters(strings) -> bytes:
    """The characters of a pyarrow large_string array without nulls, end to end."""
    start = strings.offset
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[start : start + len(strings) + 1]
    return strings.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def _column_cells(column: pd.Series | np.ndarray):
    """One column's CSV cells as a pyarrow large_string array without nulls (a missing value is "")."""
    import pyarrow as pa
    import pyarrow.compute as pc

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
    texts = [_neutralised(value) if isinstance(value, str) else str(value) for value in uniques]
    return _looked_up([*_quoted(texts), ""], codes)


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


def _timestamp_cells(column: pd.Series):
    """`YYYY-MM-DD HH:MM:SS.ffffff` in UTC (+ `+00:00` when the column is time-zone aware), missing as ""."""
    import pyarrow as pa
    import pyarrow.compute as pc

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
    formats are streamed: read and written `EXPORT_BATCH` participants at a time, so memory stays flat at
    any study size."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is unknown; expected one of {list(FORMATS)}")
    out_path = Path(out_path)
    if fmt == "things":
        return _write_things_csv(db, slug, out_path, Chosen(**selection))
    if fmt in STREAMED:
        return _stream(db, slug, fmt, out_path, selection)
    table = TABLE_BUILDERS[fmt](db, slug, **selection)
    if out_path.suffix == ".parquet":
        with atomic_path(out_path) as temporary:
            table.to_parquet(temporary, index=False)
    else:
        write_csv(table, out_path)
    return ExportSummary(out_path, fmt, len(table), int(table["subject_id"].nunique()))


STREAMED = {"anchor": anchor_table, "jspsych": trial_table, "parquet": trial_table}
EXPORT_BATCH = 500  # participants read and written together


def _stream(db: Database, slug: str, fmt: str, out_path: Path, selection: Selection) -> ExportSummary:
    """The table of `fmt` built and appended batch by batch (CSV: header once, formula cells neutralised;
    Parquet: one row group per batch, every batch in the first batch's schema)."""
    build, stimuli = STREAMED[fmt], load_stimuli(db, slug)
    n_rows, subjects, writer, header_written = 0, set(), None, False
    with atomic_path(out_path) as temporary:
        for batch in [*_participant_batches(db, slug), []]:  # the last, empty batch: the header of no rows
            table = build(db, slug, participant_ids=batch, stimuli=stimuli, **selection)
            if fmt == "parquet":
                writer = _append_parquet(writer, temporary, table, last=not batch)
            elif len(table) or not header_written:
                with open(temporary, "ab" if header_written else "wb") as out:
                    out.write(csv_text(table, header=not header_written))
                header_written = True
            n_rows += len(table)
            subjects.update(table["subject_id"].unique())
        if writer is not None:
            writer.close()
    return ExportSummary(out_path, fmt, n_rows, len(subjects))


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
THINGS_BATCH_ROWS = 100_000


def _write_things_csv(db: Database, slug: str, out_path: Path, chosen: Chosen) -> ExportSummary:
    """`things_table` for the whole study, streamed from the driver's cursor (`db.raw`) and written with
    `csv_text`: each answer is five numbers; names, pseudonyms and trial facts are looked up in numpy (a
    pseudonym is computed once per participant, a trial's facts read once). The bytes equal `write_csv` of
    `things_table`."""
    stimuli = load_stimuli(db, slug)
    order = {sid: i for i, sid in enumerate(stimuli.sort_values("name")["id"])}
    size = int(stimuli["id"].max()) + 1 if len(stimuli) else 1
    index_of, name_of = np.full(size, -1, dtype=np.int64), np.full(size, None, dtype=object)
    index_of[list(order)] = list(order.values())
    name_of[stimuli["id"].to_numpy()] = stimuli["name"].to_numpy(object)
    n_rows, people = 0, set()
    with db.read() as session, atomic_path(out_path) as temporary, open(temporary, "wb") as out:
        study = get_study(session, slug)
        subjects, simulated = _people_lookup(session, study, chosen)
        trials = trial_facts(session, study.id)
        stored = trials[["stim0", "stim1", "stim2"]].to_numpy(np.int64)
        level, kind = trials["level"].to_numpy(object), trials["kind"].to_numpy(object)
        out.write(csv_text(pd.DataFrame(columns=list(THINGS_HEADER))))
        query = answered_query(
            study.id, include_excluded=chosen.include_excluded, include_simulated=chosen.include_simulated
        )
        for answers in answer_batches(session, query, THINGS_BATCH_ROWS):
            ids = answers[:, :4].astype(np.int64)
            row, person = trials.index.get_indexer(ids[:, 2]), subjects.index.get_indexer(ids[:, 0])
            triplet = odd_last_array(stored[row], ids[:, 3])
            columns = [
                *(index_of[triplet[:, k]] for k in range(3)),
                *(name_of[triplet[:, k]] for k in range(3)),
                answers[:, 4],
                subjects.to_numpy(object)[person],
                ids[:, 1],
                level[row],
                kind[row],
                simulated[person],
            ]
            out.write(csv_lines(columns))
            n_rows += len(ids)
            people.update(np.unique(ids[:, 0]).tolist())
    return ExportSummary(out_path, "things", n_rows, len(people))


def _people_lookup(session, study: Study, chosen: Chosen) -> tuple[pd.Series, np.ndarray]:
    """The study's analysed participants: their subject id (pseudonym, computed once per participant, or raw
    id) by participant id, and their `is_simulated`, in the same order."""
    rows = session.execute(
        select(Participant.id, Participant.external_id, Participant.is_simulated).where(
            Participant.study_id == study.id, analysed_participant()
        )
    ).all()
    names = [external if chosen.raw_ids else pseudonymise(study.salt, external) for _, external, _ in rows]
    subjects = pd.Series(names, index=pd.Index([pid for pid, _, _ in rows], dtype=np.int64), dtype=object)
    return subjects, np.array([bool(flag) for _, _, flag in rows], dtype=bool)


def _participant_batches(db: Database, slug: str) -> Iterator[list[int]]:
    with db.read() as session:
        study = get_study(session, slug)
        ids = session.scalars(
            select(Participant.id)
            .where(Participant.study_id == study.id, analysed_participant())
            .order_by(Participant.id)
        ).all()
    for start in range(0, len(ids), EXPORT_BATCH):
        yield list(ids[start : start + EXPORT_BATCH])


def _append_parquet(writer, path: Path, table: pd.DataFrame, *, last: bool):
    """Open the writer with the first non-empty batch's schema (or the empty table's, when the last batch
    comes and nothing was written), then append each batch cast to it."""
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    if table.empty and not (last and writer is None):
        return writer
    if writer is None:
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        writer = pq.ParquetWriter(path, arrow.schema)
    else:
        arrow = pa.Table.from_pandas(table, schema=writer.schema, preserve_index=False)
    writer.write_table(arrow)
    return writer
