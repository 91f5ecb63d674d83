"""Create studies from designed triplet lists; look them up; open, pause and close them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
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


class StudyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class TrialSpec:
    """One designed trial. `stimuli` lists the odd one out last when `odd_known`."""

    stimuli: tuple[int, int, int]
    kind: TrialKind
    level: TripletLevel | None = None
    block: int = 0
    odd_known: bool = False


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
        if session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
            raise ValueError(f"a study with slug {slug!r} already exists; choose another slug")
        _check_stimuli_exist(session, stimulus_set_id, lists)
        study = Study(
            slug=slug,
            title=title or config.title,
            stimulus_set_id=stimulus_set_id,
            config=config.to_dict(),
            salt=secrets.token_hex(16),
            status=status,
            target_participants=target_participants,
            imported=imported,
        )
        session.add(study)
        session.flush()
        record_first_version(session, study)
        for index, specs in enumerate(lists):
            seed = seeds[index] if seeds is not None else None
            session.add(_build_list(study.id, index, specs, seed))
        return study.id


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


def set_study_status(db: Database, slug: str, status: StudyStatus) -> None:
    with db.write() as session:
        get_study(session, slug).status = status
