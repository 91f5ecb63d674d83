"""Import judgments collected elsewhere as an `imported` study, so a teacher can be fitted and evaluated on
existing data. Two judgment tasks (`db.models.JudgmentTask`) and three layouts:

- odd one out, with a header (comma, tab or whitespace separated): `image1, image2, image3` and the odd one
  out as `odd_one_out` (a name or index like the image columns) or `choice` (position 1-3, THINGS style);
  with neither, `image3` is the odd one out (our THINGS export);
- anchor triplets (salmon / NEXT 2AFC): `head, close, far` (aliases `anchor|target`, `winner|near`,
  `loser`): the head was judged more similar to `close` than to `far`;
- AligNet `.npz` triplets: `filenames` [n, 3] and `similarities` [n, 3] = [s01, s02, s12]; the odd one out is
  the item not in the most similar pair.
- Levels response files (Muttenthaler et al. 2025): a folder of per-participant CSVs (or one such file),
  `image1Path, image2Path, image3Path, selected_image` (the chosen odd one out, a path like the image
  columns), optional `triplet_type` (the level), `rt` and `exp_trial_type` (rows of any other type than
  `exp_trial` -- instructions, practice -- are skipped). The participant is the file name without `.csv`
  unless the file has a subject column. Recognised by its columns or `file_format="levels"`.
Optional columns: `subject_id` (or `subject`, `participant`), `rt` / `rt_ms` (milliseconds), `level` (or
`triplet_class`, `triplet_type`), `kind`, `is_simulated`, `timed_out`, `unavailable` (such rows are skipped).
A headerless file says nothing about what its columns mean: it needs `file_format` ("odd-one-out": THINGS
indices, odd one out last; or "anchor": head, close, far) and is refused without it. Images are names
(full or unique file name) or integer indices mapped by an `IndexRule` (image list, natural or text order;
refused when ambiguous). Every row is checked first; any problem rejects the whole file, nothing is stored.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import (
    JudgmentTask,
    Participant,
    ParticipantStatus,
    Response,
    Study,
    StudyStatus,
    Trial,
    TrialKind,
    TripletLevel,
    TripletList,
    utcnow,
)
from study.config import StudyConfig
from study.input_errors import InputRejected, RowProblem, read_text_file
from study.stimuli import load_stimulus_table, stimulus_set_id_by_name
from study.stimulus_names import AmbiguousIndexOrder, IndexRule, StimulusNames
from study.studies import add_study, as_triplet, refuse_taken_slug, triplet_key, validate_slug

IMAGE_COLUMNS = ("image1", "image2", "image3")
ANCHOR_COLUMNS = ("head", "close", "far")
ANCHOR_ALIASES = {
    "head": ("head", "anchor", "target"),
    "close": ("close", "winner", "near"),
    "far": ("far", "loser"),
}
FILE_FORMATS = ("odd-one-out", "anchor", "levels")
LEVELS_COLUMNS = {"image1path": "image1", "image2path": "image2", "image3path": "image3"}
LEVELS_TRIAL_TYPE, LEVELS_JUDGMENT = "exp_trial_type", "exp_trial"  # other trial types are no judgments
ODD_ITEM_OF_PAIR = (2, 1, 0)  # similarities [s01, s02, s12]: the item outside pair k (alignment.conventions)
ALIASES = {
    "subject": ("subject_id", "subject", "participant", "participant_id"),
    "rt": ("rt_ms", "rt"),
    "level": ("level", "triplet_class", "triplet_type"),
    "kind": ("kind",),
    "odd": ("odd_one_out", "selected_image"),
    "choice": ("choice",),
    "simulated": ("is_simulated",),
    "timed_out": ("timed_out",),
    "unavailable": ("unavailable",),
}
LEVEL_ALIASES = {"class_boundary": TripletLevel.CLASS_BORDER.value}
DEFAULT_SUBJECT = "imported"
TRUE_WORDS = {"1", "true", "yes", "t"}


@dataclass(frozen=True)
class ImportedJudgments:
    study_id: int
    n_participants: int
    n_judgments: int
    task: str = JudgmentTask.ODD_ONE_OUT.value


@dataclass(frozen=True)
class _Row:
    subject: str
    stimuli: tuple[int, int, int]
    odd_position: int
    rt_ms: float | None
    level: str | None
    kind: str
    simulated: bool
    task: JudgmentTask = JudgmentTask.ODD_ONE_OUT


def import_judgments_csv(
    db: Database,
    csv_path: str | Path,
    *,
    stimulus_set_name: str,
    slug: str,
    title: str = "",
    file_format: str | None = None,
    index: IndexRule | None = None,
) -> ImportedJudgments:
    """Validate every row, then store study, one list and participant per subject, trials and responses."""
    validate_slug(slug)
    table = read_judgment_table(csv_path, file_format)
    set_id = stimulus_set_id_by_name(db, stimulus_set_name)
    names = StimulusNames(load_stimulus_table(db, set_id), index or IndexRule())
    with db.read() as session:
        if session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
            raise ValueError(f"a study with slug {slug!r} already exists; choose another slug")
    try:
        rows, problems = _parse_rows(table, names)
    except AmbiguousIndexOrder as error:
        raise InputRejected(str(csv_path), [RowProblem("indices", *error.args)]) from None
    if problems:
        raise InputRejected(str(csv_path), problems)
    if not rows:
        raise InputRejected(
            str(csv_path), [RowProblem("file", "no judgments found", "at least one data row")]
        )
    return _store(db, slug, title or f"Imported from {Path(csv_path).name}", set_id, rows)


def read_judgment_table(csv_path: str | Path, file_format: str | None = None) -> pd.DataFrame:
    """The file (or folder of Levels files) as strings with lower-case column names: image1..3 (+ odd one
    out) or head, close, far (`attrs["task"]` says which). A headerless file needs `file_format`."""
    path = Path(csv_path)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"judgments file {path} does not exist")
    if file_format not in (None, *FILE_FORMATS):
        raise ValueError(f"file format must be one of {FILE_FORMATS}, got {file_format!r}")
    if path.suffix == ".npz":
        return _alignet_npz_table(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise InputRejected(
                path.name, [RowProblem(path.name, "holds no .csv files", "one Levels CSV per participant")]
            )
        return _levels_table(path.name, [_levels_rows(file, _text_file_table(file, None)) for file in files])
    table = _text_file_table(path, file_format)
    if file_format == "levels" or set(LEVELS_COLUMNS) <= set(table.columns):
        return _levels_table(path.name, [_levels_rows(path, table)])
    table.attrs["task"] = _checked_task(path, table, file_format)
    return table


def _text_file_table(path: Path, file_format: str | None) -> pd.DataFrame:
    """One text file's cells as strings, lower-case column names, each row's file line in `attrs`."""
    text = read_text_file(path, "a CSV, TSV or whitespace-separated file of judgments")
    records = _records(text, _separator(text), path.name)
    if not records:
        raise InputRejected(
            path.name, [RowProblem(path.name, "is empty", "a header row and one row per judgment")]
        )
    table, lines = _text_table(path.name, records, file_format)
    table.columns = [str(column).strip().lower() for column in table.columns]
    table = _rename_anchor_aliases(table)
    table.attrs["lines"] = lines
    table.attrs["source"] = path.name
    return table


def _levels_table(source: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Participants' Levels rows as one odd-one-out table; `attrs["where"]` holds each row's "file line N"
    (the files of a folder may differ in their optional columns: missing cells are empty)."""
    table = pd.concat(parts, ignore_index=True).fillna("")
    table.attrs = {
        "task": "odd-one-out",
        "where": [where for part in parts for where in part.attrs["where"]],
        "source": source,
    }
    return table


def _levels_rows(path: Path, table: pd.DataFrame) -> pd.DataFrame:
    """One participant's Levels file: image columns renamed to image1..3, rows of other trial types than
    `exp_trial` (instructions, practice) dropped, the participant named after the file unless a column
    names it."""
    missing = [c for c in (*LEVELS_COLUMNS, "selected_image") if c not in table.columns]
    if missing:
        raise InputRejected(
            path.name,
            [
                RowProblem(
                    f"{path.name} header",
                    f"missing Levels column(s) {missing}",
                    "image1Path, image2Path, image3Path, selected_image (optional triplet_type, rt, "
                    f"exp_trial_type); found {list(table.columns)}",
                )
            ],
        )
    keep = np.ones(len(table), bool)
    if LEVELS_TRIAL_TYPE in table.columns:
        keep = (table[LEVELS_TRIAL_TYPE].str.strip() == LEVELS_JUDGMENT).to_numpy()
    lines = np.asarray(table.attrs["lines"])[keep]
    rows = table[keep].rename(columns=LEVELS_COLUMNS).reset_index(drop=True)
    if _column(rows, "subject") is None:
        rows["subject_id"] = path.stem
    rows.attrs = {"where": [f"{path.name} line {line}" for line in lines]}
    return rows


def _separator(text: str) -> str:
    """The column separator, from the first non-blank line: tabs, commas or white space."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return "\t" if "\t" in first else "," if "," in first else r"\s+"


def _text_table(
    name: str, records: list[tuple[int, list[str]]], file_format: str | None
) -> tuple[pd.DataFrame, list[int]]:
    """Every cell as a string, and the file line of each row. A file is headerless when every field of its
    first line is a whole number; it must then say its format, which names its three columns."""
    fields = [f.strip() for f in records[0][1] if f.strip() != ""]
    headerless = bool(fields) and all(re.fullmatch(r"-?\d+", f) for f in fields)
    if headerless and file_format is None:
        raise InputRejected(
            name,
            [
                RowProblem(
                    f"{name} line {records[0][0]}",
                    "a headerless file does not say what its columns are",
                    "a header row, or --format odd-one-out (THINGS: three indices, odd one out last) or "
                    "--format anchor (head, close, far: the head judged closer to the second)",
                )
            ],
        )
    named = [f.strip() for f in records[0][1]]
    header = list(IMAGE_COLUMNS if file_format != "anchor" else ANCHOR_COLUMNS) if headerless else named
    data = records if headerless else records[1:]
    _check_ragged(data, header, name, headerless)
    return pd.DataFrame([row for _, row in data], columns=header, dtype=str), [line for line, _ in data]


def _checked_task(path: Path, table: pd.DataFrame, file_format: str | None) -> str:
    """`anchor` or `odd-one-out`, from the columns; InputRejected when a required column is missing or
    the columns contradict `file_format`."""
    task = "anchor" if set(ANCHOR_COLUMNS) <= set(table.columns) else "odd-one-out"
    required = ANCHOR_COLUMNS if (file_format or task) == "anchor" else IMAGE_COLUMNS
    missing = [column for column in required if column not in table.columns]
    if missing or (file_format is not None and task != file_format):
        raise InputRejected(
            path.name,
            [
                RowProblem(
                    f"{path.name} header",
                    f"missing column(s) {missing or list(required)}",
                    f"columns {list(IMAGE_COLUMNS)} (odd one out) or {list(ANCHOR_COLUMNS)} (anchor); "
                    f"found {list(table.columns)}",
                )
            ],
        )
    return task


def _records(text: str, sep: str, name: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line; whitespace-separated or CSV with `sep`."""
    if sep == r"\s+":
        return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    records = []
    try:
        for row in reader:
            if any(field.strip() for field in row):
                records.append((reader.line_num, row))
    except csv.Error as error:
        raise InputRejected(
            name, [RowProblem(f"{name} line {reader.line_num}", f"is not CSV text ({error})", "a CSV file")]
        ) from None
    return records


def _check_ragged(data: list[tuple[int, list[str]]], header: list[str], name: str, headerless: bool) -> None:
    """Every row has one field per column; a row with more or fewer would shift its values into the wrong
    columns, so it is named with the header it does not fit."""
    described = (
        f"{len(header)} columns" if headerless else f"the header's {len(header)} ({', '.join(header)})"
    )
    problems = [
        RowProblem(f"{name} line {line}", f"has {len(row)} fields", f"one field for each of {described}")
        for line, row in data
        if len(row) != len(header)
    ]
    if problems:
        raise InputRejected(name, problems)


def _rename_anchor_aliases(table: pd.DataFrame) -> pd.DataFrame:
    """salmon / NEXT column names (winner, loser, ...) to head, close, far."""
    renames = {}
    for role, aliases in ANCHOR_ALIASES.items():
        found = next((a for a in aliases if a in table.columns), None)
        if found is not None and role not in table.columns:
            renames[found] = role
    return table.rename(columns=renames)


def _alignet_npz_table(path: Path) -> pd.DataFrame:
    """AligNet triplets as odd-one-out rows: the odd one out is the item not in the most similar pair."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names, sims = data["filenames"], data["similarities"]
    except (KeyError, ValueError, OSError) as error:
        raise InputRejected(
            str(path),
            [
                RowProblem(
                    "file", f"is not an AligNet triplet file ({error})", "arrays filenames, similarities"
                )
            ],
        ) from None
    if names.ndim != 2 or names.shape[1] != 3 or sims.shape != names.shape:
        raise InputRejected(
            str(path),
            [
                RowProblem(
                    "arrays",
                    f"filenames {names.shape} and similarities {sims.shape}",
                    "filenames [n, 3] and similarities [n, 3] = [s01, s02, s12]",
                )
            ],
        )
    names = names.astype(str)
    odd = names[np.arange(len(names)), np.array(ODD_ITEM_OF_PAIR)[np.argmax(sims, axis=1)]]
    table = pd.DataFrame({**{c: names[:, i] for i, c in enumerate(IMAGE_COLUMNS)}, "odd_one_out": odd})
    table.attrs["lines"] = list(range(len(table)))  # "line" = triplet row of the arrays
    table.attrs["source"] = path.name
    table.attrs["task"] = "odd-one-out"
    return table


def _column(table: pd.DataFrame, role: str) -> str | None:
    return next((name for name in ALIASES[role] if name in table.columns), None)


def _parse_rows(table: pd.DataFrame, names: StimulusNames) -> tuple[list[_Row], list[RowProblem]]:
    columns = {role: _column(table, role) for role in ALIASES}
    anchor = table.attrs["task"] == "anchor"
    rows, problems = [], []
    wheres = table.attrs.get("where") or [f"{table.attrs['source']} line {n}" for n in table.attrs["lines"]]
    for where, record in zip(wheres, table.to_dict("records"), strict=True):
        if any(_field(record, columns, flag).lower() in TRUE_WORDS for flag in ("timed_out", "unavailable")):
            continue  # a timeout or an unavailable trial is no judgment (rows of our own jsPsych-like export)
        try:
            rows.append(_parse_row(record, columns, names, anchor))
        except AmbiguousIndexOrder:
            raise
        except ValueError as error:
            problems.append(RowProblem(where, *error.args))
    return rows, problems


def _parse_row(record: dict, columns: dict, names: StimulusNames, anchor: bool) -> _Row:
    """One file row as a _Row; raises ValueError(problem, expected) naming the column."""
    image_columns = ANCHOR_COLUMNS if anchor else IMAGE_COLUMNS
    stimuli = as_triplet(_resolve(record[c].strip(), c, names) for c in image_columns)
    if len(set(stimuli)) != 3:
        raise ValueError(
            f"the three images {[record[c] for c in image_columns]} are not all different",
            "three different images",
        )
    odd_position = 1 if anchor else _odd_position(record, columns, stimuli, names)  # anchor: `close` chosen
    subject = _field(record, columns, "subject") or DEFAULT_SUBJECT
    if len(subject) > 128:
        raise ValueError(f"subject id {subject[:20]!r}... is longer than 128 characters", "a shorter id")
    return _Row(
        subject,
        stimuli,
        odd_position,
        _rt(_field(record, columns, "rt")),
        _level(_field(record, columns, "level")),
        _kind(_field(record, columns, "kind")),
        _field(record, columns, "simulated").lower() in TRUE_WORDS,
        JudgmentTask.ANCHOR if anchor else JudgmentTask.ODD_ONE_OUT,
    )


def _field(record: dict, columns: dict, role: str) -> str:
    """The stripped value of an optional column ('' when the file has no such column)."""
    return record[columns[role]].strip() if columns[role] else ""


def _resolve(text: str, column: str, names: StimulusNames) -> int:
    """A stimulus id from a name or an index; ValueError(problem, expected) names the column."""
    try:
        stimulus = names.at(text) if re.fullmatch(r"\d+", text) else names.find(text)
    except AmbiguousIndexOrder:
        raise
    except ValueError as error:
        raise ValueError(f"{column}: {error.args[0]}", error.args[1]) from None
    return stimulus.id


def _odd_position(record: dict, columns: dict, stimuli: tuple, names: StimulusNames) -> int:
    if columns["odd"]:
        odd = _resolve(record[columns["odd"]].strip(), columns["odd"], names)
        if odd not in stimuli:
            raise ValueError(
                f"{columns['odd']} {record[columns['odd']]!r} is not one of the row's three images",
                "one of image1, image2, image3",
            )
        return stimuli.index(odd)
    if columns["choice"]:
        choice = record[columns["choice"]].strip()
        if choice not in ("1", "2", "3"):
            raise ValueError(f"choice = {choice!r} is not a position", "1, 2 or 3 (image1, image2, image3)")
        return int(choice) - 1
    return 2


def _rt(text: str) -> float | None:
    if not text:
        return None
    try:
        rt = float(text)
    except ValueError:
        rt = -1.0
    if not 0 <= rt <= 3_600_000:
        raise ValueError(
            f"response time {text!r} is not a number of milliseconds", "0 to 3600000 ms, or empty"
        )
    return rt


def _level(text: str) -> str | None:
    if not text:
        return None
    level = LEVEL_ALIASES.get(text.lower(), text.lower())
    if level not in {member.value for member in TripletLevel}:
        raise ValueError(f"level {text!r} is unknown", f"one of {[m.value for m in TripletLevel]} or empty")
    return level


def _kind(text: str) -> str:
    kind = text.lower() or TrialKind.EXPERIMENTAL.value
    if kind not in {member.value for member in TrialKind}:
        raise ValueError(f"kind {text!r} is unknown", f"one of {[m.value for m in TrialKind]} or empty")
    return kind


def _key(row: _Row) -> str:
    """Odd one out: the three sorted ids. Anchor: the head, then the other two sorted ("h:a-b")."""
    if row.task == JudgmentTask.ANCHOR:
        return f"{row.stimuli[0]}:{triplet_key(row.stimuli[1:])}"
    return triplet_key(row.stimuli)


def _store(db: Database, slug: str, title: str, set_id: int, rows: list[_Row]) -> ImportedJudgments:
    """One transaction: the study, then per subject a list, its trials, a participant and its responses."""
    by_subject: dict[str, list[_Row]] = {}
    for row in rows:
        by_subject.setdefault(row.subject, []).append(row)
    with db.write() as session:
        refuse_taken_slug(session, slug)
        study = add_study(
            session,
            slug,
            title=title,
            stimulus_set_id=set_id,
            status=StudyStatus.CLOSED,
            config=StudyConfig(title=title).to_dict(),
            imported=True,
        )
        for list_index, (subject, subject_rows) in enumerate(by_subject.items()):
            _store_subject(session, study.id, list_index, subject, subject_rows)
        return ImportedJudgments(study.id, len(by_subject), len(rows), rows[0].task.value)


def _store_subject(session: Session, study_id: int, list_index: int, subject: str, rows: list[_Row]) -> None:
    triplet_list = TripletList(study_id=study_id, list_index=list_index)
    session.add(triplet_list)
    session.flush()
    participant = Participant(
        study_id=study_id,
        external_id=subject,
        source="imported",
        list_id=triplet_list.id,
        is_simulated=any(row.simulated for row in rows),
        status=ParticipantStatus.COMPLETED,
        consent=True,  # given to the study that collected the judgments
        finished_at=utcnow(),
    )
    session.add(participant)
    session.flush()
    trial_ids = _insert_trials(session, triplet_list.id, rows)
    _insert_responses(session, participant.id, trial_ids, rows)


def _insert_trials(session: Session, list_id: int, rows: list[_Row]) -> dict[int, int]:
    """One trial per judgment, in file order; returns trial id by trial index."""
    session.execute(
        insert(Trial),
        [
            dict(
                list_id=list_id,
                trial_index=i,
                block=0,
                stim0_id=row.stimuli[0],
                stim1_id=row.stimuli[1],
                stim2_id=row.stimuli[2],
                odd_known=False,
                kind=TrialKind(row.kind),
                level=TripletLevel(row.level) if row.level else None,
                triplet_key=_key(row),
                task=row.task,
            )
            for i, row in enumerate(rows)
        ],
    )
    return dict(session.execute(select(Trial.trial_index, Trial.id).where(Trial.list_id == list_id)).all())


def _insert_responses(
    session: Session, participant_id: int, trial_ids: dict[int, int], rows: list[_Row]
) -> None:
    """The participant's answer to each trial: shown in stored order, the chosen image at `odd_position`."""
    session.execute(
        insert(Response),
        [
            dict(
                participant_id=participant_id,
                trial_index=i,
                trial_id=trial_ids[i],
                shown_left_id=row.stimuli[0],
                shown_middle_id=row.stimuli[1],
                shown_right_id=row.stimuli[2],
                chosen_position=row.odd_position,
                chosen_stimulus_id=row.stimuli[row.odd_position],
                rt_ms=row.rt_ms,
                input_modality="none",
                timed_out=False,
            )
            for i, row in enumerate(rows)
        ],
    )
