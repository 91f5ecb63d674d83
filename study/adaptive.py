"""The study side of adaptive designs (``DesignConfig.mode == "adaptive"``): what a study's lists already
hold, how many lists wait for a participant, how many answers arrived, and a new list around chosen
experimental triplets. Choosing the triplets needs a teacher and lives in ``workflows.adaptive``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import Participant, Response, Study, Trial, TrialKind, TripletLevel, TripletList, as_utc
from study.design import DesignConfig, arrange_list, draw_candidates
from study.stimuli import load_stimulus_table
from study.studies import TrialSpec, append_lists, as_triplet, get_study

NO_TEACHER = "no teacher run yet"


def design_config(study: Study) -> DesignConfig:
    """The design config a study was generated with (ValueError for studies without one, e.g. imported)."""
    design = study.config.get("extra", {}).get("design")
    if not design or "config" not in design:
        raise ValueError(
            f"study {study.slug!r} has no generated design (imported designs cannot be extended); create it "
            "with `alignlab study create`"
        )
    return DesignConfig.from_dict(design["config"])


def adaptive_config(session: Session, slug: str) -> tuple[Study, DesignConfig]:
    study = get_study(session, slug)
    config = design_config(study)
    if config.mode != "adaptive":
        raise ValueError(f"study {slug!r} has a fixed design; adaptive lists need design mode 'adaptive'")
    return study, config


def shared_trials(study: Study) -> list[TrialSpec]:
    """The between-participant repeats every list of an adaptive study carries."""
    shared = study.config.get("extra", {}).get("design", {}).get("shared", [])
    return [
        TrialSpec(as_triplet(row[:3]), TrialKind.EXPERIMENTAL, TripletLevel(row[3]), selection=SHARED_REASON)
        for row in shared
    ]


SHARED_REASON = {"strategy": "shared", "score": 0.0, "teacher_run": ""}


def initial_reason() -> dict:
    """Why the lists made at creation were chosen: at random, no teacher existed."""
    return {"strategy": "random", "score": 0.0, "teacher_run": "", "note": NO_TEACHER}


def mark_initial_lists(lists: Sequence[Sequence[TrialSpec]], shared: Sequence[TrialSpec]):
    """The creation-time lists of an adaptive study with every experimental trial's reason."""
    shared_keys = {spec.stimuli for spec in shared}
    return tuple(
        tuple(
            replace(spec, selection=SHARED_REASON if spec.stimuli in shared_keys else initial_reason())
            if spec.kind in (TrialKind.EXPERIMENTAL, TrialKind.REPEAT)
            else spec
            for spec in specs
        )
        for specs in lists
    )


def asked_keys(session: Session, study_id: int) -> set[str]:
    """Triplet keys already in any of the study's lists (new lists ask other triplets)."""
    query = select(Trial.triplet_key).join(TripletList).where(TripletList.study_id == study_id)
    return set(session.scalars(query))


def list_count(session: Session, study_id: int) -> int:
    return session.scalar(select(func.count(TripletList.id)).where(TripletList.study_id == study_id)) or 0


def waiting_lists(session: Session, study_id: int) -> int:
    """Lists no participant has been given yet."""
    taken = select(Participant.list_id).where(Participant.list_id.is_not(None))
    query = select(func.count(TripletList.id)).where(
        TripletList.study_id == study_id, TripletList.id.not_in(taken)
    )
    return session.scalar(query) or 0


def waiting_lists_by(session: Session, study_id: int, teacher_run: str) -> int:
    """Lists no participant has been given yet whose own triplets teacher run ``teacher_run`` chose ("" =
    drawn before any teacher): a new teacher's lists are counted apart from an older one's."""
    taken = select(Participant.list_id).where(Participant.list_id.is_not(None))
    query = (
        select(Trial.list_id, Trial.selection)
        .join(TripletList)
        .where(
            TripletList.study_id == study_id,
            TripletList.id.not_in(taken),
            Trial.kind == TrialKind.EXPERIMENTAL,
        )
    )
    chosen_by = {
        list_id
        for list_id, selection in session.execute(query)
        if selection
        and selection.get("strategy") != SHARED_REASON["strategy"]
        and selection.get("teacher_run", "") == teacher_run
    }
    return len(chosen_by)


def answer_count(session: Session, study_id: int) -> int:
    """Answered experimental (and repeat) trials of the study: what a teacher refit can learn from."""
    return session.scalar(_answers(select(func.count(Response.id)), study_id)) or 0


def first_answer_at(session: Session, study_id: int) -> datetime | None:
    """When the study's first answer a refit can learn from arrived (None before any)."""
    moment = session.scalar(_answers(select(func.min(Response.server_received_at)), study_id))
    return None if moment is None else as_utc(moment)


def _answers(query: Select, study_id: int) -> Select:
    """``query`` over the study's answered experimental and repeat trials."""
    return (
        query.join(Participant, Participant.id == Response.participant_id)
        .join(Trial, Trial.id == Response.trial_id)
        .where(
            Participant.study_id == study_id,
            Response.chosen_position.is_not(None),
            Trial.kind.in_([TrialKind.EXPERIMENTAL, TrialKind.REPEAT]),
        )
    )


def candidate_pool(db: Database, slug: str, seed: int) -> dict[TripletLevel, list[tuple[int, int, int]]]:
    """Candidates per level for the study's next triplets: Levels definitions, none already asked (any study
    with a generated design: `alignlab design propose` works for fixed designs too)."""
    with db.read() as session:
        study = get_study(session, slug)
        config = design_config(study)
        exclude, set_id = asked_keys(session, study.id), study.stimulus_set_id
    if set_id is None:
        raise ValueError(f"study {slug!r} has no stimulus set to draw candidates from")
    return draw_candidates(load_stimulus_table(db, set_id), config, config.pool_per_level, exclude, seed)


def add_list(db: Database, slug: str, chosen: Sequence[TrialSpec], seed: int) -> int:
    """Store a new list around the chosen experimental trials plus the shared ones (Levels mix, repeats,
    catch and practice as in a fixed design); returns its list index."""
    with db.read() as session:
        study, config = adaptive_config(session, slug)
        shared, study_id, set_id = shared_trials(study), study.id, study.stimulus_set_id
    if set_id is None:
        raise ValueError(f"study {slug!r} has no stimulus set")
    trials = arrange_list(load_stimulus_table(db, set_id), config, [*shared, *chosen], seed)
    return append_lists(db, study_id, [trials], seed)[0]


def own_counts(study: Study, config: DesignConfig) -> dict[TripletLevel, int]:
    """Experimental triplets per level a new list chooses itself (the level counts minus the shared)."""
    shared = shared_trials(study)
    return {
        level: n - sum(spec.level == level for spec in shared) for level, n in config.level_counts().items()
    }
