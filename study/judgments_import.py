"""Import odd-one-out judgments collected elsewhere (THINGS triplet files, other labs' CSVs, our own THINGS
export) as an `imported` study, so a teacher can be fitted and evaluated on existing data.

Accepted layout: comma-, tab- or whitespace-separated, with a header, or headerless with three integer
columns (a THINGS triplet file: odd one out last). Columns (case-insensitive):
- `image1, image2, image3`: stimulus names (full name or unique base name) or integer indices into the
  stimulus set ordered by name (0-based unless `index_base=1`);
- the odd one out: `odd_one_out` (a name or index like the image columns) or `choice` (position 1-3 of
  the image columns, THINGS style); with neither, `image3` is the odd one out;
- optional: `subject_id` (or `subject`, `participant`), `rt` / `rt_ms` (milliseconds), `level` (or
  `triplet_class`, `triplet_type`), `kind`, `is_simulated`, `timed_out` and `unavailable` (such rows are
  skipped).
Every row is checked first; any problem rejects the whole file and nothing is stored.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import (
    Participant,
    ParticipantStatus,
    Response,
    Stimulus,
    StimulusSet,
    Study,
    StudyStatus,
    Trial,
    TrialKind,
    TripletLevel,
    TripletList,
    utcnow,
)
from study.config import StudyConfig
from study.input_errors import InputRejected, RowProblem
from study.studies import triplet_key, validate_slug

IMAGE_COLUMNS = ("image1", "image2", "image3")
ALIASES = {
    "subject": ("subject_id", "subject", "participant", "participant_id"),
    "rt": ("rt_ms", "rt"),
    "level": ("level", "triplet_class", "triplet_type"),
    "kind": ("kind",),
    "odd": ("odd_one_out",),
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


@dataclass(frozen=True)
class _Row:
    subject: str
    stimuli: tuple[int, int, int]
    odd_position: int
    rt_ms: float | None
    level: str | None
    kind: str
    simulated: bool


def import_judgments_csv(
    db: Database,
    csv_path: str | Path,
    *,
    stimulus_set_name: str,
    slug: str,
    title: str = "",
    index_base: int = 0,
) -> ImportedJudgments:
    """Validate every row, then store study, one list and participant per subject, trials and responses."""
    validate_slug(slug)
    table = read_judgment_table(csv_path)
    with db.read() as session:
        set_id, names, by_index = _stimulus_lookup(session, stimulus_set_name, index_base)
        if session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
            raise ValueError(f"a study with slug {slug!r} already exists; choose another slug")
    rows, problems = _parse_rows(table, names, by_index, stimulus_set_name)
    if problems:
        raise InputRejected(str(csv_path), problems)
    if not rows:
        raise InputRejected(
            str(csv_path), [RowProblem("file", "no judgments found", "at least one data row")]
        )
    return _store(db, slug, title or f"Imported from {Path(csv_path).name}", set_id, rows)


def read_judgment_table(csv_path: str | Path) -> pd.DataFrame:
    """The file as strings with lower-case column names; a headerless file gets image1..3 (THINGS)."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"judgments file {path} does not exist")
    first = next((line for line in path.read_text().splitlines() if line.strip()), "")
    sep = "\t" if "\t" in first else "," if "," in first else r"\s+"
    fields = [f for f in re.split(sep, first.strip()) if f != ""]
    headerless = bool(fields) and all(re.fullmatch(r"-?\d+", f.strip()) for f in fields)
    table = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        header=None if headerless else 0,
        engine="python" if sep == r"\s+" else "c",
    )
    if headerless:
        if table.shape[1] != 3:
            raise InputRejected(
                str(path),
                [
                    RowProblem(
                        "line 1",
                        f"{table.shape[1]} columns without a header",
                        "3 integer columns (THINGS triplets) or a header row",
                    )
                ],
            )
        table.columns = list(IMAGE_COLUMNS)
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = [column for column in IMAGE_COLUMNS if column not in table.columns]
    if missing:
        raise InputRejected(
            str(path),
            [
                RowProblem(
                    "header",
                    f"missing column(s) {missing}",
                    f"columns {list(IMAGE_COLUMNS)}; found {list(table.columns)}",
                )
            ],
        )
    table.attrs["first_data_line"] = 1 if headerless else 2
    return table


def _stimulus_lookup(
    session: Session, set_name: str, index_base: int
) -> tuple[int, dict[str, int], list[int]]:
    """(set id, name -> id incl. unique base names, ids ordered by name)."""
    stimulus_set = session.scalar(select(StimulusSet).where(StimulusSet.name == set_name))
    if stimulus_set is None:
        raise LookupError(
            f"no stimulus set named {set_name!r}; import it first with `alignlab stimuli import`"
        )
    rows = session.execute(
        select(Stimulus.id, Stimulus.name)
        .where(Stimulus.stimulus_set_id == stimulus_set.id)
        .order_by(Stimulus.name)
    ).all()
    names = {name: sid for sid, name in rows}
    base_counts: dict[str, int] = {}
    for _, name in rows:
        base_counts[Path(name).name] = base_counts.get(Path(name).name, 0) + 1
    for sid, name in rows:
        if base_counts[Path(name).name] == 1:
            names.setdefault(Path(name).name, sid)
    by_index = [None] * index_base + [sid for sid, _ in rows]
    return stimulus_set.id, names, by_index


def _column(table: pd.DataFrame, role: str) -> str | None:
    return next((name for name in ALIASES[role] if name in table.columns), None)


def _parse_rows(
    table: pd.DataFrame, names: dict[str, int], by_index: list, set_name: str
) -> tuple[list[_Row], list[RowProblem]]:
    columns = {role: _column(table, role) for role in ALIASES}
    rows, problems = [], []
    for offset, record in enumerate(table.to_dict("records")):
        where = f"line {offset + table.attrs['first_data_line']}"
        if any(_field(record, columns, flag).lower() in TRUE_WORDS for flag in ("timed_out", "unavailable")):
            continue  # a timeout or an unavailable trial is no judgment (rows of our own jsPsych-like export)
        try:
            rows.append(_parse_row(record, columns, names, by_index, set_name))
        except ValueError as error:
            problems.append(RowProblem(where, *error.args))
    return rows, problems


def _parse_row(record: dict, columns: dict, names: dict[str, int], by_index: list, set_name: str) -> _Row:
    """One file row as a _Row; raises ValueError(problem, expected) naming the column."""
    stimuli = tuple(_resolve(record[c].strip(), c, names, by_index, set_name) for c in IMAGE_COLUMNS)
    if len(set(stimuli)) != 3:
        raise ValueError(
            f"the three images {[record[c] for c in IMAGE_COLUMNS]} are not all different",
            "three different images",
        )
    odd_position = _odd_position(record, columns, stimuli, names, by_index, set_name)
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
    )


def _field(record: dict, columns: dict, role: str) -> str:
    """The stripped value of an optional column ('' when the file has no such column)."""
    return record[columns[role]].strip() if columns[role] else ""


def _resolve(text: str, column: str, names: dict[str, int], by_index: list, set_name: str) -> int:
    if re.fullmatch(r"\d+", text):
        index = int(text)
        if index < len(by_index) and by_index[index] is not None:
            return by_index[index]
        raise ValueError(
            f"{column} = {text} is not an index into stimulus set {set_name!r}",
            f"an index from {by_index.count(None)} to {len(by_index) - 1}",
        )
    if text in names:
        return names[text]
    raise ValueError(
        f"{column} = {text!r} is not an image of stimulus set {set_name!r}",
        "a stimulus name (e.g. 'animal/dog/1.jpg' or its unique file name) or an index",
    )


def _odd_position(
    record: dict, columns: dict, stimuli: tuple, names: dict, by_index: list, set_name: str
) -> int:
    if columns["odd"]:
        odd = _resolve(record[columns["odd"]].strip(), columns["odd"], names, by_index, set_name)
        if odd not in stimuli:
            raise ValueError(
                f"odd_one_out {record[columns['odd']]!r} is not one of the row's three images",
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


def _store(db: Database, slug: str, title: str, set_id: int, rows: list[_Row]) -> ImportedJudgments:
    """One transaction: the study, then per subject a list, its trials, a participant and its responses."""
    by_subject: dict[str, list[_Row]] = {}
    for row in rows:
        by_subject.setdefault(row.subject, []).append(row)
    with db.write() as session:
        if session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
            raise ValueError(f"a study with slug {slug!r} already exists; choose another slug")
        study = Study(
            slug=slug,
            title=title,
            stimulus_set_id=set_id,
            status=StudyStatus.CLOSED,
            config=StudyConfig(title=title).to_dict(),
            salt=secrets.token_hex(16),
            imported=True,
        )
        session.add(study)
        session.flush()
        for list_index, (subject, subject_rows) in enumerate(by_subject.items()):
            _store_subject(session, study.id, list_index, subject, subject_rows)
        return ImportedJudgments(study.id, len(by_subject), len(rows))


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
    session.execute(
        insert(Trial),
        [
            dict(
                list_id=triplet_list.id,
                trial_index=i,
                block=0,
                stim0_id=row.stimuli[0],
                stim1_id=row.stimuli[1],
                stim2_id=row.stimuli[2],
                odd_known=False,
                kind=TrialKind(row.kind),
                level=TripletLevel(row.level) if row.level else None,
                triplet_key=triplet_key(row.stimuli),
            )
            for i, row in enumerate(rows)
        ],
    )
    trial_ids = dict(
        session.execute(select(Trial.trial_index, Trial.id).where(Trial.list_id == triplet_list.id)).all()
    )
    session.execute(
        insert(Response),
        [
            dict(
                participant_id=participant.id,
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
