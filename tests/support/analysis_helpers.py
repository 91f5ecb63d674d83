"""Small hand-built studies for the QC, reliability, export, import and simulation tests."""

from __future__ import annotations

from collections.abc import Sequence

from db.models import ParticipantStatus, Stimulus, StimulusSet, StudyStatus, TrialKind, TripletLevel
from study import participation as P
from study.config import StudyConfig
from study.studies import TrialSpec, create_study

# 2 superordinates x 2 categories x 3 images: animal/dog, animal/cat, vehicle/car, vehicle/bus
LAYOUT = [("animal", "dog"), ("animal", "cat"), ("vehicle", "car"), ("vehicle", "bus")]


def insert_stimuli(db, set_name: str, rows: Sequence[dict]) -> list[int]:
    """A new stimulus set with one stimulus per dict of column values; returns their ids, in order."""
    with db.write() as session:
        stimulus_set = StimulusSet(name=set_name)
        session.add(stimulus_set)
        session.flush()
        stimuli = [Stimulus(stimulus_set_id=stimulus_set.id, **row) for row in rows]
        session.add_all(stimuli)
        session.flush()
        return [stimulus.id for stimulus in stimuli]


def make_stimuli(db, name: str = "set", per_category: int = 3) -> list[int]:
    """Insert a stimulus set; returns ids in order dog0..2, cat0..2, car0..2, bus0..2."""
    rows = [
        dict(
            name=f"{sup}/{cat}/{i}.png",
            path=f"s/{cat}{i}.png",
            content_hash=f"{name}-{cat}-{i}",
            category=cat,
            superordinate=sup,
            width=8,
            height=8,
            n_bytes=10,
        )
        for sup, cat in LAYOUT
        for i in range(per_category)
    ]
    return insert_stimuli(db, name, rows)


def placeholder_stimuli(db, set_name: str, n: int, suffix: str, categories: int | None = None) -> list[int]:
    """A stimulus set of `n` rows that point at no file, for benches that never show an image: names
    `0{suffix}`, `1{suffix}`, ... inserted in that order, category `c{i}` (`c{i % categories}` when
    given). Returns their ids, in order."""
    rows = [
        dict(
            category=f"c{i if categories is None else i % categories}",
            name=f"{i}{suffix}",
            path=f"{i}{suffix}",
            content_hash=f"{i:064d}",
            width=1,
            height=1,
            n_bytes=1,
        )
        for i in range(n)
    ]
    return insert_stimuli(db, set_name, rows)


def stimulus_set_id(db, name: str = "set") -> int:
    from sqlalchemy import select

    with db.read() as session:
        return session.scalar(select(StimulusSet.id).where(StimulusSet.name == name))


def make_study(db, slug: str, lists: Sequence[Sequence[TrialSpec]], set_name: str = "set", **config) -> int:
    """An open study; no minimum valid RT unless given, so analysis tests can store any RT they need."""
    config = {"min_valid_rt_ms": 0} | config
    return create_study(
        db, slug, stimulus_set_id(db, set_name), lists, StudyConfig(**config), status=StudyStatus.OPEN
    )


def experimental(a: int, b: int, c: int, level=TripletLevel.BETWEEN_CLASS) -> TrialSpec:
    return TrialSpec((a, b, c), TrialKind.EXPERIMENTAL, level)


def catch(a: int, b: int, odd: int) -> TrialSpec:
    return TrialSpec((a, b, odd), TrialKind.CATCH, None, odd_known=True)


def run_participant(
    db,
    slug: str,
    external_id: str,
    chosen: Sequence[int | None],
    rts: Sequence[float] | None = None,
    *,
    finish: bool = True,
    simulated: bool = False,
) -> int:
    """Enter and answer every trial in order: `chosen[i]` is the stimulus id picked, None = timeout."""
    entry = P.enter_study(db, slug, external_id, simulated=simulated)
    plan = P.trial_plan(db, entry.participant_id)
    rts = rts if rts is not None else [1500.0] * len(plan)
    for trial, stimulus, rt in zip(plan, chosen, rts, strict=False):
        if stimulus is None:
            payload = P.ResponsePayload(trial.trial_index, trial.shown, None, None, timed_out=True)
        else:
            payload = P.ResponsePayload(
                trial.trial_index,
                trial.shown,
                trial.shown.index(stimulus),
                rt,
                client_onset_ms=1_000_000.0 + 3000.0 * trial.trial_index,
            )
        P.record_response(db, entry.participant_id, payload)
    if finish and len(chosen) >= len(plan):
        P.finish_participant(db, entry.participant_id, ParticipantStatus.COMPLETED)
    return entry.participant_id


def answer_positions(db, slug: str, external_id: str, positions: Sequence[int], rts: Sequence[float]) -> int:
    """Enter and answer by display position (0 left, 1 middle, 2 right)."""
    entry = P.enter_study(db, slug, external_id)
    plan = P.trial_plan(db, entry.participant_id)
    for trial, position, rt in zip(plan, positions, rts, strict=False):
        P.record_response(
            db, entry.participant_id, P.ResponsePayload(trial.trial_index, trial.shown, position, rt)
        )
    return entry.participant_id


def levels_list(ids) -> list[TrialSpec]:
    """16 images (dog, cat, car, bus x 4): 8 catch, 12 within-class, 12 class-border, 12 between-class
    trials."""
    dog, cat, car, bus = (ids[i : i + 4] for i in range(0, 16, 4))
    specs = [catch(dog[i % 4], dog[(i + 1) % 4], car[i % 4]) for i in range(8)]
    for i in range(12):
        group = (dog, cat, car, bus)[i % 4]
        specs.append(
            TrialSpec(
                (group[i % 4], group[(i + 1) % 4], group[(i + 2) % 4]),
                TrialKind.EXPERIMENTAL,
                TripletLevel.WITHIN_CLASS,
            )
        )
        specs.append(
            TrialSpec(
                (dog[i % 4], dog[(i + 2) % 4], cat[i % 4]), TrialKind.EXPERIMENTAL, TripletLevel.CLASS_BORDER
            )
        )
        specs.append(
            TrialSpec(
                (dog[i % 4], cat[(i + 1) % 4], bus[i % 4]), TrialKind.EXPERIMENTAL, TripletLevel.BETWEEN_CLASS
            )
        )
    return specs
