"""Simulated participants: the stated choice and RT model, determinism, labels, and the real recording
path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import select

from db.engine import Database
from db.models import Base, Participant, Response, StudyStatus
from study.judgments import load_judgments, load_responses
from study.participation import StudyUnavailable
from study.qc import participant_qc
from study.reliability import levels_noise_ceiling
from study.simulate import (
    SimilarityModel,
    SimulatedStimulus,
    choice_probabilities,
    item_vector,
    median_rt_ms,
    pair_similarities,
    perceptual_item_vectors,
    simulate_participants,
)
from study.studies import set_study_status
from tests.support.analysis_helpers import levels_list, make_stimuli, make_study

FLAT = SimilarityModel(item_weight=0.0)


def _item(category, superordinate):
    return SimulatedStimulus(category, superordinate, np.zeros(8))


def test_pair_similarities_follow_category_then_superordinate():
    dog, cat, car = _item("dog", "animal"), _item("cat", "animal"), _item("car", "vehicle")
    assert pair_similarities(FLAT, [dog, dog, car]).tolist() == [0.8, 0.1, 0.1]
    assert pair_similarities(FLAT, [dog, cat, car]).tolist() == [0.45, 0.1, 0.1]
    assert pair_similarities(FLAT, [car, dog, cat]).tolist() == [0.1, 0.1, 0.45]


def test_domains_add_a_level_between_superordinates():
    model = SimilarityModel(
        item_weight=0.0, same_domain=0.25, domains=(("animal", "living"), ("plant", "living"))
    )
    dog, tree, car = _item("dog", "animal"), _item("tree", "plant"), _item("car", "vehicle")
    assert pair_similarities(model, [dog, tree, car]).tolist() == [
        0.25,
        0.1,
        0.1,
    ]  # the car is the odd one out
    assert pair_similarities(FLAT, [dog, tree, car]).tolist() == [0.1, 0.1, 0.1]  # no domains: no preference


def test_choice_probabilities_and_rt_grow_with_difficulty():
    p = choice_probabilities(np.array([0.8, 0.1, 0.1]), 0.05)
    assert p[0] == pytest.approx(1 / (1 + 2 * math.exp(-14)))
    assert choice_probabilities(np.array([0.3, 0.3, 0.3]), 0.05) == pytest.approx([1 / 3] * 3)
    model = SimilarityModel()
    assert median_rt_ms(model, np.array([0.5, 0.5, 0.1])) == 2900.0  # no margin: floor + scale
    assert median_rt_ms(model, np.array([0.65, 0.5, 0.1])) == pytest.approx(900 + 2000 / math.e)
    assert median_rt_ms(model, np.array([0.8, 0.1, 0.1])) < median_rt_ms(model, np.array([0.8, 0.7, 0.1]))


def test_item_vectors_are_fixed_unit_vectors():
    assert np.linalg.norm(item_vector("abc", 8)) == pytest.approx(1.0)
    assert item_vector("abc", 8).tolist() == item_vector("abc", 8).tolist()
    assert item_vector("abc", 8).tolist() != item_vector("abd", 8).tolist()


def _study(db, slug="sim-study"):
    ids = make_stimuli(db, per_category=4)
    make_study(db, slug, [levels_list(ids)], participants_per_list=50, min_valid_rt_ms=1000)
    return ids


def test_perceptual_item_vectors_mix_broad_similarity_and_attributes_as_stated():
    rng = np.random.default_rng(0)
    features = {i: rng.normal(size=16) for i in range(10, 30)}
    vectors = perceptual_item_vectors(features, attribute_share=0.25, n_attributes=3, seed=5)
    matrix = np.stack(list(features.values()))
    centred = matrix - matrix.mean(axis=0)
    attributes = centred @ np.random.default_rng(5).normal(size=(16, 3))
    attributes = (attributes - attributes.mean(axis=0)) / attributes.std(axis=0)

    def cosine(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    i, j = 3, 11  # rows of ids 13 and 21
    expected = 0.75 * cosine(centred[i], centred[j]) + 0.25 * cosine(attributes[i], attributes[j])
    assert vectors[13] @ vectors[21] == pytest.approx(expected)
    assert np.linalg.norm(vectors[13]) == pytest.approx(1.0)
    assert list(vectors) == list(features)
    with pytest.raises(ValueError, match="attribute_share"):
        perceptual_item_vectors(features, attribute_share=1.5, n_attributes=3)


def test_simulated_sessions_go_through_the_recording_path_and_are_labelled(db):
    _study(db)
    summary = simulate_participants(db, "sim-study", 6, careless_share=1 / 3, seed=0)
    assert len(summary.participant_ids) == 6 and len(summary.careless_ids) == 2
    assert summary.n_responses + summary.n_timeouts == 6 * 44
    with db.read() as session:
        people = session.scalars(select(Participant)).all()
        assert {(p.is_simulated, p.source, p.status.value) for p in people} == {
            (True, "simulated", "completed")
        }
        assert [p.external_id for p in people] == [f"sim-0-{k}" for k in range(6)]
        assert set(session.scalars(select(Response.input_modality))) == {"simulated"}
    responses = load_responses(db, "sim-study")
    answered = responses[~responses["timed_out"]]
    assert answered["rt_ms"].min() >= 1000.0  # the study ignores key presses before 1000 ms
    onsets = responses.groupby("participant_id")["client_onset_ms"].diff().dropna()
    assert (onsets >= 1000.0).all()  # each onset follows the previous response plus the 1000 ms ITI


def test_careless_participants_fail_the_catch_trials_and_careful_ones_pass(db):
    _study(db)
    summary = simulate_participants(db, "sim-study", 6, careless_share=1 / 3, seed=0)
    qc = participant_qc(db, "sim-study").set_index("participant_id")
    careless = list(summary.careless_ids)
    careful = [pid for pid in summary.participant_ids if pid not in careless]
    assert (qc.loc[careful, "catch_accuracy"] >= 0.9).all()
    assert qc.loc[careless, "suggest_exclude"].all() and not qc.loc[careful, "suggest_exclude"].any()
    assert qc.loc[careless, "median_rt_ms"].max() < qc.loc[careful, "median_rt_ms"].min()  # careless are fast


def test_rts_grow_with_difficulty_and_humans_agree_most_between_classes(db):
    _study(db)
    simulate_participants(db, "sim-study", 8, careless_share=0.0, seed=3)
    judgments = load_judgments(db, "sim-study")
    median_rt = judgments.groupby("level")["rt_ms"].median()
    assert median_rt["within_class"] > median_rt["class_border"] > median_rt["between_class"]
    ceiling = levels_noise_ceiling(judgments).set_index("level")["ceiling"]
    assert ceiling["between_class"] > 0.9 and ceiling["within_class"] > 1 / 3
    between = judgments[judgments["level"] == "between_class"]
    dog_cat_bus_odd_is_bus = between["stim2"].isin(between[["stim0", "stim1", "stim2"]].max(axis=1))
    assert dog_cat_bus_odd_is_bus.mean() > 0.9  # bus images have the highest ids and the other superordinate


def test_same_seed_same_responses(db, tmp_path):
    _study(db)
    other = Database.from_url(f"sqlite:///{tmp_path / 'other.db'}")
    Base.metadata.create_all(other.engine)
    _study(other)
    simulate_participants(db, "sim-study", 3, seed=11)
    simulate_participants(other, "sim-study", 3, seed=11)
    columns = ["external_id", "trial_index", "chosen_stimulus_id", "rt_ms", "timed_out"]
    first, second = load_responses(db, "sim-study")[columns], load_responses(other, "sim-study")[columns]
    assert first.equals(second)
    simulate_participants(other, "sim-study", 1, seed=12)
    assert (
        not load_responses(other, "sim-study")[columns]
        .iloc[-44:]
        .reset_index(drop=True)
        .equals(first.iloc[:44].reset_index(drop=True))
    )
    other.dispose()


def test_simulation_needs_an_open_study_and_sane_arguments(db):
    _study(db)
    set_study_status(db, "sim-study", StudyStatus.PAUSED)
    with pytest.raises(StudyUnavailable, match="paused.*0 of 2 simulated"):
        simulate_participants(db, "sim-study", 2)
    with pytest.raises(ValueError, match="at least 1"):
        simulate_participants(db, "sim-study", 0)
    with pytest.raises(ValueError, match="careless share"):
        simulate_participants(db, "sim-study", 2, careless_share=1.5)
    with db.read() as session:
        assert session.scalars(select(Participant)).all() == []
