"""Editing a study's config after creation: every change is a new numbered version.

The study row always holds the latest config (`Study.config`, `Study.config_version`); every version,
the first included, is kept in `study_config_versions`. A participant records the version that was current
when they consented (`Participant.config_version`), and exports carry it, so an edit (new consent text,
timing, codes) applies to new participants only and the data still say which text each person agreed to.

An edit gives only the settings it changes: they are laid over the current config and the result is
validated exactly as a new study's config (`StudyConfig.from_dict`), so a bad URL template or an unknown key
is refused with the same message as at `study create`, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import Study, StudyConfigVersion
from study.config import StudyConfig
from study.studies import get_study, study_rows

UNCHANGED: Any = object()  # `target_participants` not given: keep the study's target
VERSION_COLUMNS = {
    "version": StudyConfigVersion.version,
    "created_at": StudyConfigVersion.created_at,
    "target": StudyConfigVersion.target_participants,
    "note": StudyConfigVersion.note,
}


@dataclass(frozen=True)
class ConfigEdit:
    """The outcome of an edit: the version now current and the settings it changed (none: no new version)."""

    slug: str
    version: int
    changed: tuple[str, ...]


def edited_config(current: Mapping[str, Any], changes: Mapping[str, Any]) -> StudyConfig:
    """The current settings with `changes` laid over them, checked as at creation (ConfigError if bad)."""
    return StudyConfig.from_dict({**current, **changes})


def edit_study_config(
    db: Database,
    slug: str,
    changes: Mapping[str, Any],
    *,
    target_participants: int | None = UNCHANGED,
    note: str = "",
) -> ConfigEdit:
    """Apply `changes` (StudyConfig keys) and optionally a new target as one new version; an edit that
    changes nothing stores nothing and returns the current version."""
    if target_participants is not UNCHANGED and target_participants is not None and target_participants < 1:
        raise ValueError(
            f"target must be a positive number of participants or none, got {target_participants}"
        )
    with db.write() as session:
        study = get_study(session, slug)
        config = edited_config(study.config, changes).to_dict()
        target = study.target_participants if target_participants is UNCHANGED else target_participants
        changed = _changed_keys(study.config, config)
        if target != study.target_participants:
            changed.append("target_participants")
        if not changed:
            return ConfigEdit(slug, study.config_version, ())
        version = _store_new_version(session, study, config, target, changed, note)
        return ConfigEdit(slug, version, tuple(changed))


def _store_new_version(
    session: Session, study: Study, config: dict[str, Any], target: int | None, changed: list[str], note: str
) -> int:
    """Keep the edited settings as the study's next version and make them current; returns its number."""
    version = study.config_version + 1
    session.add(
        StudyConfigVersion(
            study_id=study.id,
            version=version,
            config=config,
            target_participants=target,
            note=note or "changed " + ", ".join(changed),
        )
    )
    study.config, study.config_version, study.target_participants = config, version, target
    if "title" in changed:
        study.title = config["title"]
    return version


def _changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ; the stored dict's lists and the new tuples compare as sequences."""
    normal = StudyConfig.from_dict(before).to_dict()  # same shapes on both sides
    return [key for key in after if normal.get(key) != after[key]]


def config_versions(db: Database, slug: str) -> pd.DataFrame:
    """One row per version, oldest first: version, created_at, target, note."""
    _, rows = study_rows(db, slug, _versions_query)
    return pd.DataFrame(rows, columns=list(VERSION_COLUMNS))


def _versions_query(study: Study) -> Select[*tuple[Any, ...]]:
    """The study's config versions, oldest first."""
    return (
        select(*VERSION_COLUMNS.values())
        .where(StudyConfigVersion.study_id == study.id)
        .order_by(StudyConfigVersion.version)
    )


def config_of_version(db: Database, slug: str, version: int) -> StudyConfig:
    """The settings a given version had (what a participant of that version was shown)."""
    with db.read() as session:
        study = get_study(session, slug)
        stored = session.scalar(
            select(StudyConfigVersion.config).where(
                StudyConfigVersion.study_id == study.id, StudyConfigVersion.version == version
            )
        )
    if stored is None:
        raise LookupError(f"study {slug!r} has no config version {version}")
    return StudyConfig.from_dict(stored)
