"""Create studies from designed triplet lists; look them up; open, pause and close them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import (
    Stimulus,
    Study,
    StudyConfigVersion,
    StudyStatus,
    Trial,
    TrialKind,
    TripletLevel,
    TripletList,
)
from study.config import StudyConfig

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
PRACTICE_BLOCK = -1
STUDY_STATUSES = tuple(status.value for status in StudyStatus)  # draft, open, paused, closed


class StudyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class TrialSpec:
    """One designed trial. `stimuli` lists the odd one out last when `odd_known`; `display`, when set, is
    the fixed left/middle/right order as positions into `stimuli` (else random per participant)."""

    stimuli: tuple[int, int, int]
    kind: TrialKind
    level: TripletLevel | None = None
    block: int = 0
    odd_known: bool = False
    display: tuple[int, int, int] | None = None
    selection: dict | None = None  # adaptive designs: why it was asked (strategy, score, teacher run)


def as_triplet(stimulus_ids: Iterable[int]) -> tuple[int, int, int]:
    """Exactly three ids as the fixed-size tuple a stored triplet is (ValueError for any other count)."""
    first, second, third = stimulus_ids
    return first, second, third


def triplet_key(stimulus_ids: Sequence[int]) -> str:
    """Order-free identity of a triplet: the same three images give the same key."""
    return "-".join(str(i) for i in sorted(stimulus_ids))


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug or ""):
        raise ValueError(
            f"study slug {slug!r} is not valid: use 3-64 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return slug


def create_study(
    db: Database,
    slug: str,
    stimulus_set_id: int | None,
    lists: Sequence[Sequence[TrialSpec]],
    config: StudyConfig | None = None,
    *,
    title: str = "",
    target_participants: int | None = None,
    status: StudyStatus = StudyStatus.DRAFT,
    imported: bool = False,
    seeds: Sequence[int] | None = None,
) -> int:
    """Store a study and its triplet lists in one transaction; a duplicate slug changes nothing."""
    validate_slug(slug)
    config = config or StudyConfig()
    with db.write() as session:
        refuse_taken_slug(session, slug)
        _check_stimuli_exist(session, stimulus_set_id, lists)
        study = add_study(
            session,
            slug,
            title=title or config.title,
            stimulus_set_id=stimulus_set_id,
            config=config.to_dict(),
            status=status,
            target_participants=target_participants,
            imported=imported,
        )
        for index, specs in enumerate(lists):
            seed = seeds[index] if seeds is not None else None
            session.add(_build_list(study.id, index, specs, seed))
        return study.id


def refuse_taken_slug(session: Session, slug: str) -> None:
    """ValueError naming the slug if a study already has it (checked before anything is added)."""
    if session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
        raise ValueError(f"a study with slug {slug!r} already exists; choose another slug")


def add_study(session: Session, slug: str, **columns: Any) -> Study:
    """A new study row, with its own pseudonym salt and its config version 1, in the caller's transaction
    (after `refuse_taken_slug`). `columns` are the other Study columns (title, config, status...)."""
    study = Study(slug=slug, salt=secrets.token_hex(16), **columns)
    session.add(study)
    session.flush()
    record_first_version(session, study)
    return study


def append_lists(
    db: Database, study_id: int, lists: Sequence[Sequence[TrialSpec]], seed: int | None
) -> list[int]:
    """Add lists after a study's last one (adaptive designs generate lists while the study runs); returns
    their list indices. One transaction: all or none."""
    with db.write() as session:
        study = session.get(Study, study_id)
        if study is None:
            raise StudyNotFound(f"no study with id {study_id}")
        _check_stimuli_exist(session, study.stimulus_set_id, lists)
        last = session.scalar(
            select(func.max(TripletList.list_index)).where(TripletList.study_id == study_id)
        )
        first = -1 if last is None else last
        indices = [first + 1 + k for k in range(len(lists))]
        for index, specs in zip(indices, lists, strict=True):
            session.add(_build_list(study_id, index, specs, seed))
        return indices


def record_first_version(session: Session, study: Study) -> None:
    """Version 1 of a new study (called in the transaction that creates it)."""
    study.config_version = 1
    session.add(
        StudyConfigVersion(
            study_id=study.id,
            version=1,
            config=study.config,
            target_participants=study.target_participants,
            note="as created",
        )
    )


def _build_list(study_id: int, list_index: int, specs: Sequence[TrialSpec], seed: int | None) -> TripletList:
    triplet_list = TripletList(study_id=study_id, list_index=list_index, seed=seed)
    for trial_index, spec in enumerate(specs):
        a, b, c = spec.stimuli
        triplet_list.trials.append(
            Trial(
                trial_index=trial_index,
                block=spec.block,
                stim0_id=a,
                stim1_id=b,
                stim2_id=c,
                odd_known=spec.odd_known,
                kind=spec.kind,
                level=spec.level,
                triplet_key=triplet_key(spec.stimuli),
                display_order="".join(str(i) for i in spec.display) if spec.display else None,
                selection=spec.selection,
            )
        )
    return triplet_list


def _check_stimuli_exist(
    session: Session, stimulus_set_id: int | None, lists: Sequence[Sequence[TrialSpec]]
) -> None:
    wanted = {i for specs in lists for spec in specs for i in spec.stimuli}
    query = select(Stimulus.id).where(Stimulus.id.in_(wanted))
    if stimulus_set_id is not None:
        query = query.where(Stimulus.stimulus_set_id == stimulus_set_id)
    missing = wanted - set(session.scalars(query))
    if missing:
        raise ValueError(
            f"the design references {len(missing)} stimulus ids not in the stimulus set, "
            f"e.g. {sorted(missing)[:5]}"
        )
    for list_index, specs in enumerate(lists):
        for trial_index, spec in enumerate(specs):
            if len(set(spec.stimuli)) != 3:
                raise ValueError(
                    f"list {list_index}, trial {trial_index}: a triplet needs three different "
                    f"images, got {spec.stimuli}"
                )


def study_slugs(db: Database) -> list[str]:
    """Every study's slug, oldest first: what a study picker needs, without counting anyone's answers."""
    with db.read() as session:
        return list(session.scalars(select(Study.slug).order_by(Study.created_at)))


def get_study(session: Session, slug: str) -> Study:
    study = session.scalar(select(Study).where(Study.slug == slug))
    if study is None:
        raise StudyNotFound(f"no study with slug {slug!r}")
    return study


def study_config(study: Study) -> StudyConfig:
    return StudyConfig.from_dict(study.config)


def set_study_status(db: Database, slug: str, status: StudyStatus | str) -> None:
    """Open, pause, close (or back to draft); `status` as the enum or its value (one of STUDY_STATUSES)."""
    with db.write() as session:
        get_study(session, slug).status = StudyStatus(status)


def load_study(db: Database, slug: str) -> Study:
    """The study named `slug` (StudyNotFound if none), read in its own session: its columns stay readable
    after the session closes (the pages show its status and config)."""
    with db.read() as session:
        return get_study(session, slug)


def study_rows(
    db: Database, slug: str, query: Callable[[Study], Select[*tuple[Any, ...]]]
) -> tuple[Study, list[Row[*tuple[Any, ...]]]]:
    """The study named `slug` (StudyNotFound if none) and the rows of `query(study)`, read in one session:
    the read side's one way to look a study up and read its rows."""
    with db.read() as session:
        study = get_study(session, slug)
        return study, list(session.execute(query(study)).all())


def select_labelled(columns: dict[str, Any]) -> Select[*tuple[Any, ...]]:
    """SELECT each column under its key, so that the rows become a DataFrame with those column names."""
    return select(*[column.label(name) for name, column in columns.items()])
