"""Simulated participants for demos and tests, recorded through the same path as real ones
(`enter_study` -> `trial_plan` -> `record_response` -> `finish_participant`) and labelled simulated.

Choice model (stated): the similarity of two images is `same_category` if they share a category, else
`same_superordinate` if they share a superordinate, else `same_domain` if their superordinates share a domain
(optional `domains`, e.g. animals and plants are living things), else `different`; plus `item_weight` times
the dot product of fixed unit vectors per image (random but seeded by the image's content hash, or given
features, e.g. `perceptual_item_vectors`), which gives within-category structure that every simulated person
shares. Per trial, Gaussian noise (`noise_sd`) is added to the three pair similarities and the most similar
pair is drawn from a softmax with `temperature`; the odd one out is the image outside that pair.
RT model: lognormal around `rt_floor_ms + rt_scale_ms * exp(-margin / rt_margin_scale)`, where the margin
is the gap between the two most similar pairs (small margin = hard decision = slow), times a per-person
speed factor; never earlier than the study's minimum valid RT; beyond the response window, or with
probability `lapse_rate`, the trial times out. Careless participants choose uniformly at random and fast
and leave the window more often (blur and fullscreen-exit events, Poisson).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from sqlalchemy import func, select

from db.engine import Database
from db.models import Participant, ParticipantStatus, Stimulus, Trial, TripletList
from study.config import StudyConfig
from study.participation import (
    PlannedTrial,
    ResponsePayload,
    StudyUnavailable,
    enter_study,
    finish_participant,
    record_event,
    record_response,
    trial_plan,
)
from study.studies import get_study, study_config

PAIRS = ((0, 1), (0, 2), (1, 2))  # pair similarities [s01, s02, s12]; the odd one out of pair c is 2, 1, 0
ODD_ITEM_OF_PAIR = (2, 1, 0)
SESSION_START_MS = 1.7e12  # client clock of the first onset (epoch ms); only differences matter


@dataclass(frozen=True)
class SimilarityModel:
    same_category: float = 0.8
    same_superordinate: float = 0.45
    same_domain: float = 0.1  # different superordinates in one domain (e.g. living things); see `domains`
    different: float = 0.1
    domains: tuple[tuple[str, str], ...] = ()  # (superordinate, domain) pairs; empty = no domain level
    item_weight: float = 0.15
    item_dim: int = 8
    noise_sd: float = 0.05
    temperature: float = 0.05
    rt_floor_ms: float = 900.0
    rt_scale_ms: float = 2000.0
    rt_margin_scale: float = 0.15
    rt_sigma: float = 0.3
    speed_sigma: float = 0.2  # per-person multiplicative spread of RTs
    careless_rt_ms: float = 450.0
    lapse_rate: float = 0.01
    blur_rate: float = 0.2  # expected blur events per careful session (Poisson); careless: x20
    careless_event_factor: float = 20.0


@dataclass(frozen=True)
class SimulatedStimulus:
    category: str
    superordinate: str
    vector: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SimulationSummary:
    participant_ids: tuple[int, ...]
    careless_ids: tuple[int, ...]
    n_responses: int
    n_timeouts: int


def item_vector(content_hash: str, dim: int) -> np.ndarray:
    """A fixed unit vector per image, the same in every study and run (seeded by the content hash)."""
    seed = int(hashlib.sha256(content_hash.encode()).hexdigest()[:16], 16)
    vector = np.random.default_rng(seed).normal(size=dim)
    return vector / np.linalg.norm(vector)


def perceptual_item_vectors(
    features: Mapping[int, ArrayLike], *, attribute_share: float, n_attributes: int, seed: int = 0
) -> dict[int, np.ndarray]:
    """Unit item vectors (for `features=`) whose dot product is
    `(1 - attribute_share) * cos(f_i, f_j) + attribute_share * cos(a_i, a_j)`: a broad perceptual
    similarity in a (centred) feature space plus `n_attributes` attributes people weigh heavily, seeded
    random directions of that space, each standardised over the images. Human similarity is low-dimensional
    (THINGS/SPoSE) and weighs a few visual attributes more than a network's overall similarity does: what a
    teacher must learn."""
    if not features or not 0 <= attribute_share <= 1 or n_attributes < 1:
        raise ValueError(
            f"perceptual_item_vectors needs features, 0 <= attribute_share <= 1 (got {attribute_share}) "
            f"and n_attributes >= 1 (got {n_attributes})"
        )
    ids = list(features)
    matrix = np.stack([np.asarray(features[i], dtype=float) for i in ids])
    matrix = matrix - matrix.mean(axis=0)
    attributes = matrix @ np.random.default_rng(seed).normal(size=(matrix.shape[1], n_attributes))
    attributes = (attributes - attributes.mean(axis=0)) / np.maximum(attributes.std(axis=0), 1e-12)
    combined = np.hstack(
        [np.sqrt(1 - attribute_share) * _unit_rows(matrix), np.sqrt(attribute_share) * _unit_rows(attributes)]
    )
    return dict(zip(ids, combined, strict=True))


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def pair_similarities(model: SimilarityModel, items: Sequence[SimulatedStimulus]) -> np.ndarray:
    """Noise-free [s01, s02, s12] of a triplet under the model."""
    domain = dict(model.domains)

    def similarity(a: SimulatedStimulus, b: SimulatedStimulus) -> float:
        if a.category == b.category:
            base = model.same_category
        elif a.superordinate and a.superordinate == b.superordinate:
            base = model.same_superordinate
        elif domain.get(a.superordinate, a.superordinate) == domain.get(b.superordinate, b.superordinate):
            base = model.same_domain
        else:
            base = model.different
        return base + model.item_weight * float(a.vector @ b.vector)

    return np.array([similarity(items[i], items[j]) for i, j in PAIRS])


def choice_probabilities(sims: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax over pairs: p(pair c judged most similar), i.e. p(item ODD_ITEM_OF_PAIR[c] is the odd one
    out)."""
    logits = np.asarray(sims, dtype=float) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def median_rt_ms(model: SimilarityModel, sims: np.ndarray) -> float:
    """Typical RT for a decision: slower as the gap between the two most similar pairs shrinks."""
    top, second = np.sort(sims)[::-1][:2]
    return model.rt_floor_ms + model.rt_scale_ms * math.exp(-(top - second) / model.rt_margin_scale)


@dataclass(frozen=True)
class _Person:
    careless: bool
    speed: float
    rng: np.random.Generator


def simulate_participants(
    db: Database,
    slug: str,
    n: int,
    *,
    model: SimilarityModel | None = None,
    careless_share: float = 0.1,
    seed: int = 0,
    features: Mapping[int, ArrayLike] | None = None,
) -> SimulationSummary:
    """Run `n` simulated participants through the study (which must be open); deterministic for a seed
    and database state. `round(careless_share * n)` of them are careless."""
    model = model or SimilarityModel()
    if n < 1:
        raise ValueError(f"number of simulated participants must be at least 1, got {n}")
    if not 0 <= careless_share <= 1:
        raise ValueError(f"careless share must be between 0 and 1, got {careless_share}")
    stimuli, config, start = _study_facts(db, slug, model, features)
    careless = set(np.random.default_rng(seed).permutation(n)[: round(careless_share * n)].tolist())
    ids, careless_ids, n_responses, n_timeouts = [], [], 0, 0
    for k in range(n):
        rng = np.random.default_rng([seed, start + k])
        person = _Person(k in careless, float(np.exp(rng.normal(0, model.speed_sigma))), rng)
        try:
            entry = enter_study(
                db,
                slug,
                f"sim-{seed}-{start + k}",
                source="simulated",
                simulated=True,
                browser={"user_agent": "alignlab simulator", "careless": person.careless},
            )
        except StudyUnavailable as error:
            raise StudyUnavailable(f"{error}; {k} of {n} simulated participants were recorded") from error
        answered, timeouts = _run_session(db, entry.participant_id, person, stimuli, model, config)
        ids.append(entry.participant_id)
        careless_ids += [entry.participant_id] if person.careless else []
        n_responses, n_timeouts = n_responses + answered, n_timeouts + timeouts
    return SimulationSummary(tuple(ids), tuple(careless_ids), n_responses, n_timeouts)


def _study_facts(db: Database, slug: str, model: SimilarityModel, features: Mapping[int, ArrayLike] | None):
    """(stimulus id -> SimulatedStimulus for the study's images, StudyConfig, simulated participants so
    far)."""
    with db.read() as session:
        study = get_study(session, slug)
        used = (
            select(Trial.stim0_id, Trial.stim1_id, Trial.stim2_id)
            .join(TripletList)
            .where(TripletList.study_id == study.id)
        )
        ids = {sid for row in session.execute(used) for sid in row}
        rows = session.execute(
            select(Stimulus.id, Stimulus.category, Stimulus.superordinate, Stimulus.content_hash).where(
                Stimulus.id.in_(ids)
            )
        ).all()
        start = (
            session.scalar(
                select(func.count()).where(
                    Participant.study_id == study.id, Participant.is_simulated.is_(True)
                )
            )
            or 0
        )
        config = study_config(study)
    return (
        {
            sid: SimulatedStimulus(category, superordinate, _vector(sid, content_hash, model, features))
            for sid, category, superordinate, content_hash in rows
        },
        config,
        start,
    )


def _vector(
    stimulus_id: int,
    content_hash: str,
    model: SimilarityModel,
    features: Mapping[int, ArrayLike] | None,
) -> np.ndarray:
    if features is None:
        return item_vector(content_hash, model.item_dim)
    if stimulus_id not in features:
        raise ValueError(f"features were given but not for stimulus id {stimulus_id}")
    vector = np.asarray(features[stimulus_id], dtype=float)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _run_session(
    db: Database,
    participant_id: int,
    person: _Person,
    stimuli: dict[int, SimulatedStimulus],
    model: SimilarityModel,
    config: StudyConfig,
) -> tuple[int, int]:
    """Answer every planned trial in order, add interaction events, finish; returns (answered, timeouts)."""
    clock, timeouts = SESSION_START_MS, 0
    plan = trial_plan(db, participant_id)
    for trial in plan:
        position, rt = _answer(trial, person, stimuli, model, config)
        record_response(
            db,
            participant_id,
            ResponsePayload(
                trial.trial_index,
                trial.shown,
                position,
                rt,
                client_onset_ms=clock,
                input_modality="simulated",
                timed_out=position is None,
            ),
        )
        timeouts += position is None
        clock += (rt if rt is not None else config.response_window_ms) + config.iti_ms
    _record_events(db, participant_id, person, model, len(plan))
    finish_participant(db, participant_id, ParticipantStatus.COMPLETED)
    return len(plan) - timeouts, timeouts


def _answer(
    trial: PlannedTrial,
    person: _Person,
    stimuli: dict[int, SimulatedStimulus],
    model: SimilarityModel,
    config: StudyConfig,
) -> tuple[int | None, float | None]:
    """(chosen display position, RT ms), or (None, None) for a timeout."""
    rng = person.rng
    sims = pair_similarities(model, [stimuli[sid] for sid in trial.shown])
    if person.careless:
        position, median = int(rng.integers(3)), model.careless_rt_ms
    else:
        noisy = sims + rng.normal(0.0, model.noise_sd, size=3)
        position = ODD_ITEM_OF_PAIR[int(rng.choice(3, p=choice_probabilities(noisy, model.temperature)))]
        median = median_rt_ms(model, sims)
    rt = median * person.speed * math.exp(rng.normal(0.0, model.rt_sigma))
    if rt < config.min_valid_rt_ms:  # the page ignores earlier key presses: the next one counts
        rt = config.min_valid_rt_ms + float(rng.exponential(100.0))
    if rng.random() < model.lapse_rate or 0 < config.response_window_ms < rt:
        return None, None
    return position, round(rt, 1)


def _record_events(
    db: Database, participant_id: int, person: _Person, model: SimilarityModel, n_trials: int
) -> None:
    factor = model.careless_event_factor if person.careless else 1.0
    counts = {
        "blur": person.rng.poisson(model.blur_rate * factor),
        "fullscreen_exit": person.rng.poisson(model.blur_rate * factor / 4),
    }
    for kind, count in counts.items():
        for j in range(int(count)):
            record_event(
                db,
                participant_id,
                kind,
                client_event_id=f"sim-{kind}-{j}",
                trial_index=int(person.rng.integers(max(n_trials, 1))),
                detail={"simulated": True},
            )
