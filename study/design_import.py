"""Import an existing triplet design (what participants will see, not their answers) as a draft study.

Two formats:
- Levels server-input CSV: `id, image1, image2, image3, trial, triplet_class` (optional `block`). `id` is the
  participant/list id (one list per id, in order of first appearance), `trial` orders the list, images are
  stimulus names or unique file names of the set, `triplet_class` is a level, `catch` or `practice`.
- THINGS-style index file: rows of three indices (comma, tab or space separated) into the set's stimuli
  in the order an `IndexRule` states (image list, natural or text order; see `study.stimulus_names`),
  odd one out last; split into lists of `triplets_per_list`.
Every row is checked first; any problem rejects the file and the database is left unchanged.

Either format can be given the structure a generated design has (`study.design.ImportStructure`): blocks
with breaks, catch and practice trials drawn from the set, and the file's image order kept on screen.
The list ids of a Levels file name its lists: a link may ask for one (`list=`), and a participant whose
Prolific id is a list id gets that list (`study.participation.assign_list`).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from db.engine import Database
from db.models import TrialKind, TripletLevel
from study.config import StudyConfig
from study.design import ImportStructure, structure_lists
from study.input_errors import InputRejected, RowProblem, read_text_file
from study.stimuli import StimulusInfo, load_stimulus_table
from study.stimulus_names import AmbiguousIndexOrder, IndexRule, StimulusNames
from study.studies import PRACTICE_BLOCK, TrialSpec, as_triplet, create_study, triplet_key, validate_slug

LEVELS_COLUMNS = ("id", "image1", "image2", "image3", "trial", "triplet_class")
MAX_BLOCK = 999  # blocks are numbered -1 (practice), 0, 1, ...
IMAGE_COLUMNS = ("image1", "image2", "image3")
TRIPLET_CLASSES: dict[str, tuple[TrialKind, TripletLevel | None]] = {
    "between_class": (TrialKind.EXPERIMENTAL, TripletLevel.BETWEEN_CLASS),
    "between": (TrialKind.EXPERIMENTAL, TripletLevel.BETWEEN_CLASS),
    "within_class": (TrialKind.EXPERIMENTAL, TripletLevel.WITHIN_CLASS),
    "within": (TrialKind.EXPERIMENTAL, TripletLevel.WITHIN_CLASS),
    "class_border": (TrialKind.EXPERIMENTAL, TripletLevel.CLASS_BORDER),
    "class_boundary": (TrialKind.EXPERIMENTAL, TripletLevel.CLASS_BORDER),
    "border": (TrialKind.EXPERIMENTAL, TripletLevel.CLASS_BORDER),
    "catch": (TrialKind.CATCH, None),
    "catch_trial": (TrialKind.CATCH, None),
    "experimental": (TrialKind.EXPERIMENTAL, None),  # level not stated
    "repeat": (TrialKind.EXPERIMENTAL, None),  # becomes a repeat if the triplet came earlier in the list
    "practice": (TrialKind.PRACTICE, None),
    "training": (TrialKind.PRACTICE, None),
    "training_trial": (TrialKind.PRACTICE, None),
}


@dataclass(frozen=True)
class ImportedDesign:
    study_id: int
    list_ids: tuple[str, ...]  # the file's participant/list ids, in list order
    trials_per_kind: dict[str, int]

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.trials_per_kind.items()))
        n_trials = sum(self.trials_per_kind.values())
        return f"study {self.study_id}: {len(self.list_ids)} list(s), {n_trials} trials ({kinds})"


# ---------------------------------------------------------------- Levels server-input CSV


def read_levels_design(
    path: str | Path, stimuli: Sequence[StimulusInfo], *, keep_image_order: bool = False
) -> tuple[list[list[TrialSpec]], list[str]]:
    """Lists of trials (one per `id`, ordered by `trial`) and the ids; raises InputRejected listing every
    bad row. With `keep_image_order` each trial shows its images in the file's order."""
    path = Path(path)
    rows = _read_csv(path)
    names, problems = StimulusNames(stimuli), []
    by_id: dict[str, list[tuple[int, TrialSpec]]] = defaultdict(list)
    for line, row in rows:
        where = f"{path.name} line {line}"
        try:
            list_id, trial, spec = _levels_row(row, names)
        except _RowError as error:
            problems += [RowProblem(where, problem, expected) for problem, expected in error.problems]
            continue
        if any(t == trial for t, _ in by_id[list_id]):
            problems.append(
                RowProblem(
                    where, f"trial {trial} appears twice for id {list_id!r}", "unique trial numbers per id"
                )
            )
        by_id[list_id].append((trial, spec))
    if not rows:
        problems.append(RowProblem(path.name, "has no rows", "one row per trial"))
    if problems:
        raise InputRejected(path.name, problems)
    lists = [
        _mark_repeats([spec for _, spec in sorted(trials, key=lambda t: t[0])]) for trials in by_id.values()
    ]
    return _image_order(lists, keep_image_order), list(by_id)


def _image_order(lists: list[list[TrialSpec]], keep: bool) -> list[list[TrialSpec]]:
    """The file's left-to-right order kept on screen, or left to the per-participant shuffle."""
    return lists if keep else [[replace(spec, display=None) for spec in specs] for specs in lists]


def _read_csv(path: Path) -> list[tuple[int, dict[str | None, Any]]]:
    """(line number, row) of every row; a row's fields beyond the header are under None, missing ones are
    None (both refused by `_levels_row`)."""
    if not path.is_file():
        raise FileNotFoundError(f"design file {path} does not exist")
    text = read_text_file(path, f"a CSV file with columns {', '.join(LEVELS_COLUMNS)}")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames or []]
        missing = [c for c in LEVELS_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise InputRejected(
                path.name,
                [
                    RowProblem(
                        f"{path.name} header",
                        f"missing column(s) {', '.join(missing)}",
                        f"columns {', '.join(LEVELS_COLUMNS)} (optional: block)",
                    )
                ],
            )
        return [(reader.line_num, dict(row)) for row in reader]
    except csv.Error as error:
        raise InputRejected(
            path.name,
            [RowProblem(f"{path.name} line {reader.line_num}", f"is not CSV text ({error})", "a CSV file")],
        ) from None


def _levels_row(raw: dict[str | None, Any], names: StimulusNames) -> tuple[str, int, TrialSpec]:
    extra, absent = raw.get(None), [name for name, value in raw.items() if name is not None and value is None]
    if extra or absent:
        problem = (
            f"has {len(extra)} more field(s) than the header"
            if extra
            else f"has no field for {', '.join(absent)}"
        )
        raise _RowError([(problem, "one field per column of the header")])
    row = {str(name): str(value).strip() for name, value in raw.items()}
    problems = []
    if not row["id"]:
        problems.append(("empty id", "a participant/list id"))
    if not re.fullmatch(r"-?\d+", row["trial"]):
        problems.append((f"trial {row['trial']!r} is not a whole number", "the trial's position in the list"))
    label = row["triplet_class"].lower()
    if label not in TRIPLET_CLASSES:
        problems.append(
            (f"triplet_class {row['triplet_class']!r} is not known", f"one of {', '.join(TRIPLET_CLASSES)}")
        )
    images = []
    for column in IMAGE_COLUMNS:
        try:
            images.append(names.find(row[column]))
        except ValueError as error:
            problems.append((f"{column}: {error.args[0]}", error.args[1]))
    block = row.get("block", "")
    if block and not (re.fullmatch(r"-?\d{1,4}", block) and PRACTICE_BLOCK <= int(block) <= MAX_BLOCK):
        problems.append((f"block {block!r} is not a block number", f"-1 (practice) or 0 to {MAX_BLOCK}"))
    elif block and label in TRIPLET_CLASSES:
        problems += _block_fits_kind(int(block), label)
    if problems:
        raise _RowError(problems)
    kind, level = TRIPLET_CLASSES[label]
    spec = _designed_spec(images, kind, level)
    return row["id"], int(row["trial"]), replace(spec, block=int(block) if block else spec.block)


def _block_fits_kind(block: int, label: str) -> list[tuple[str, str]]:
    """Practice trials belong to the practice block (-1), every other trial to a block from 0."""
    practice = TRIPLET_CLASSES[label][0] == TrialKind.PRACTICE
    if practice and block != PRACTICE_BLOCK:
        return [(f"block {block} holds a {label} trial", "block -1 (or empty) for practice trials")]
    if not practice and block == PRACTICE_BLOCK:
        return [(f"block -1 (practice) holds a {label} trial", "a block from 0 for all but practice trials")]
    return []


def _designed_spec(images: list[StimulusInfo], kind: TrialKind, level: TripletLevel | None) -> TrialSpec:
    """The odd one out last where categories say which it is; catch triplets must have one."""
    if len({s.id for s in images}) != 3:
        raise _RowError(
            [
                (
                    f"the images {[s.name for s in images]} are not three different stimuli",
                    "three different images",
                )
            ]
        )
    in_file = [s.id for s in images]
    outsider = _category_outsider(images)
    if outsider is not None:
        images = [s for s in images if s is not outsider] + [outsider]
    if kind == TrialKind.CATCH and outsider is None:
        categories = ", ".join(f"{s.name}: {s.category}" for s in images)
        raise _RowError(
            [
                (
                    f"catch triplet has no unambiguous odd one out ({categories})",
                    "two images of one category and one of another",
                )
            ]
        )
    block = PRACTICE_BLOCK if kind == TrialKind.PRACTICE else 0
    catch_like = outsider is not None and outsider.superordinate != images[0].superordinate
    odd_known = kind == TrialKind.CATCH or (kind == TrialKind.PRACTICE and catch_like)
    stored = (images[0].id, images[1].id, images[2].id)
    file_order = as_triplet(stored.index(i) for i in in_file)  # the file's order, as positions in `stored`
    return TrialSpec(stored, kind, level, block=block, odd_known=odd_known, display=file_order)


def _category_outsider(images: Sequence[StimulusInfo]) -> StimulusInfo | None:
    """The one image whose category differs from the other two (which share one), if there is one."""
    counts = Counter((s.superordinate, s.category) for s in images)
    if sorted(counts.values()) != [1, 2]:
        return None
    return next(s for s in images if counts[(s.superordinate, s.category)] == 1)


class _RowError(Exception):
    """Everything wrong with one row, as (problem, expected) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__(problems)
        self.problems = problems


def _mark_repeats(specs: list[TrialSpec]) -> list[TrialSpec]:
    """A triplet shown earlier in the same list (as an experimental trial) is a designed repeat."""
    seen: set[str] = set()
    marked = []
    for spec in specs:
        key = triplet_key(spec.stimuli)
        if spec.kind == TrialKind.EXPERIMENTAL:
            if key in seen:
                spec = replace(spec, kind=TrialKind.REPEAT)
            seen.add(key)
        marked.append(spec)
    return marked


def write_levels_design(
    path: str | Path,
    lists: Sequence[Sequence[TrialSpec]],
    stimuli: Sequence[StimulusInfo],
    list_ids: Sequence[str] | None = None,
) -> None:
    """The inverse of `read_levels_design` (with a `block` column): share a generated design or check it."""
    name_of = {s.id: s.name for s in stimuli}
    list_ids = list_ids or [f"participant_{i + 1}" for i in range(len(lists))]
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow([*LEVELS_COLUMNS, "block"])
        for list_id, specs in zip(list_ids, lists, strict=True):
            for trial, spec in enumerate(specs):
                label = spec.level.value if spec.level is not None else spec.kind.value
                writer.writerow([list_id, *(name_of[i] for i in spec.stimuli), trial, label, spec.block])


# ---------------------------------------------------------------- THINGS-style index files


def read_things_design(
    path: str | Path,
    stimuli: Sequence[StimulusInfo],
    *,
    index: IndexRule | None = None,
    triplets_per_list: int | None = None,
    keep_image_order: bool = False,
) -> list[list[TrialSpec]]:
    """Experimental triplets (level unknown) from rows of three indices, odd one out last, split into
    lists; with `keep_image_order` shown in the file's order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"design file {path} does not exist")
    if triplets_per_list is not None and triplets_per_list < 1:
        raise ValueError(f"triplets_per_list must be at least 1, got {triplets_per_list}")
    names, specs, problems = StimulusNames(stimuli, index or IndexRule()), [], []
    content = read_text_file(path, "rows of three indices (odd one out last)")
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            specs.append(_things_row(text, names))
        except AmbiguousIndexOrder as error:
            raise InputRejected(path.name, [RowProblem(f"{path.name} indices", *error.args)]) from None
        except ValueError as error:
            problems.append(RowProblem(f"{path.name} line {line}", *error.args))
    if not specs and not problems:
        problems.append(RowProblem(path.name, "has no triplets", "rows of three indices"))
    if problems:
        raise InputRejected(path.name, problems)
    size = triplets_per_list or len(specs)
    return _image_order(
        [_mark_repeats(specs[i : i + size]) for i in range(0, len(specs), size)], keep_image_order
    )


def _things_row(text: str, names: StimulusNames) -> TrialSpec:
    fields = [f for f in re.split(r"[,\s]+", text.strip()) if f]
    if len(fields) != 3:
        raise ValueError(f"has {len(fields)} fields", "three indices (odd one out last)")
    found = []
    for position, field in enumerate(fields, start=1):
        try:
            found.append(names.at(field))
        except AmbiguousIndexOrder:
            raise
        except ValueError as error:
            raise ValueError(f"column {position}: {error.args[0]}", error.args[1]) from error
    if len({s.id for s in found}) != 3:
        raise ValueError(f"indices {fields} do not name three different stimuli", "three different indices")
    return TrialSpec((found[0].id, found[1].id, found[2].id), TrialKind.EXPERIMENTAL, None, display=(0, 1, 2))


# ---------------------------------------------------------------- storing as a study


def import_levels_design(
    db: Database,
    slug: str,
    stimulus_set_id: int,
    path: str | Path,
    study_config: StudyConfig | None = None,
    *,
    title: str = "",
    target_participants: int | None = None,
    structure: ImportStructure | None = None,
) -> ImportedDesign:
    """A draft study whose lists are the Levels CSV's lists, with `structure` added; nothing is stored if
    any row is bad."""
    validate_slug(slug)
    stimuli = load_stimulus_table(db, stimulus_set_id)
    structure = structure or ImportStructure()
    lists, list_ids = read_levels_design(path, stimuli, keep_image_order=structure.keep_image_order)
    return _store(
        db,
        slug,
        stimulus_set_id,
        structure_lists(lists, stimuli, structure),
        list_ids,
        study_config,
        "levels",
        Path(path).name,
        title,
        target_participants,
        structure,
    )


def import_things_design(
    db: Database,
    slug: str,
    stimulus_set_id: int,
    path: str | Path,
    study_config: StudyConfig | None = None,
    *,
    index: IndexRule | None = None,
    triplets_per_list: int | None = None,
    title: str = "",
    target_participants: int | None = None,
    structure: ImportStructure | None = None,
) -> ImportedDesign:
    """A draft study from a THINGS-style index file (indices into the set ordered by stimulus name), with
    `structure` added."""
    validate_slug(slug)
    stimuli = load_stimulus_table(db, stimulus_set_id)
    structure = structure or ImportStructure()
    lists = read_things_design(
        path,
        stimuli,
        index=index,
        triplets_per_list=triplets_per_list,
        keep_image_order=structure.keep_image_order,
    )
    list_ids = [str(i) for i in range(len(lists))]
    return _store(
        db,
        slug,
        stimulus_set_id,
        structure_lists(lists, stimuli, structure),
        list_ids,
        study_config,
        "things",
        Path(path).name,
        title,
        target_participants,
        structure,
    )


def _store(
    db: Database,
    slug: str,
    stimulus_set_id: int,
    lists: list[list[TrialSpec]],
    list_ids: list[str],
    study_config: StudyConfig | None,
    file_format: str,
    file_name: str,
    title: str,
    target_participants: int | None,
    structure: ImportStructure,
) -> ImportedDesign:
    config = study_config or StudyConfig()
    note: dict[str, Any] = {"imported_from": file_name, "format": file_format, "list_ids": list_ids}
    if structure != ImportStructure():
        note["structure"] = structure.to_dict()
    config = replace(config, extra={**config.extra, "design": note})
    study_id = create_study(
        db, slug, stimulus_set_id, lists, config, title=title, target_participants=target_participants
    )
    kinds = Counter(spec.kind.value for specs in lists for spec in specs)
    return ImportedDesign(study_id, tuple(list_ids), dict(kinds))
