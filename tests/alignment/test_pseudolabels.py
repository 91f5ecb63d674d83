"""Pseudo-labels: sampling strategies, the stored convention, the UnAligNet control, provenance checks."""

import numpy as np
import pytest

from alignment.conventions import correct_choices, pair_similarities, triplet_probabilities
from alignment.pseudolabels import (
    LabelProvenance,
    LabelsMismatchError,
    PseudoLabelConfig,
    PseudoLabels,
    TooFewLabelsError,
    label_triplets,
    make_pseudolabels,
    mean_entropy,
    sample_grouped_triplets,
    temperature_for_entropy,
)

D = 12
PLANT = np.zeros((6, D))
PLANT[:, 6:] = 2 * np.eye(6)  # the "human" space keeps the low-variance half of the features


class PlantedTeacher:
    temperature = 0.7

    def transform(self, features):
        return features @ PLANT.T


def _pool(n=240, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, D)) * np.r_[np.full(6, 3.0), np.full(6, 1.0)]).astype(np.float32)


def _provenance(n, backbone="timm:tf_efficientnet_lite0", weights="abc"):
    return LabelProvenance(backbone, weights, tuple(f"sha-{i}" for i in range(n)), "teacher-1")


@pytest.fixture(scope="module")
def label_sets():
    pool = _pool()
    config = PseudoLabelConfig(n_triplets=1000, n_clusters=8, triplets_per_group=100, seed=3)
    return pool, make_pseudolabels(pool, PlantedTeacher(), _provenance(len(pool)), config)


def test_label_triplets_orders_most_similar_pair_first_and_divides_by_temperature():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.0, 0.8]])
    ordered, sims = label_triplets(z, np.array([[0, 1, 2], [3, 0, 1]]), temperature=0.5)
    assert ordered.tolist() == [
        [2, 0, 1],
        [3, 1, 0],
    ]  # pair (0,1) most similar, then s02 >= s12, odd one last
    np.testing.assert_allclose(sims, [[0.9 / 0.5, 0.1 / 0.5, 0.0], [0.8 / 0.5, 0.0, 0.0]], rtol=1e-6)


def test_aligned_labels_follow_the_planted_teacher_and_control_follows_raw_features(label_sets):
    pool, sets = label_sets
    aligned, raw = sets["aligned"], sets["untransformed"]
    teacher_sims = pair_similarities(PlantedTeacher().transform(pool.astype(np.float64)), aligned.triplets)
    assert correct_choices(teacher_sims).all()  # every stored row: pair (0,1) is the teacher's choice
    np.testing.assert_allclose(aligned.similarities, teacher_sims / 0.7, rtol=1e-5)
    probs = triplet_probabilities(aligned.similarities.astype(np.float64))
    assert (probs[:, 0] >= probs[:, 1]).all() and (probs[:, 1] >= probs[:, 2]).all()
    assert correct_choices(pair_similarities(pool.astype(np.float64), raw.triplets)).all()
    # same triplets (as sets), same groups, different choices: the control differs only in its teacher
    assert (np.sort(aligned.triplets, 1) == np.sort(raw.triplets, 1)).all()
    assert (aligned.groups == raw.groups).all()
    assert (aligned.triplets[:, 2] != raw.triplets[:, 2]).mean() > 0.3


def test_control_temperature_matches_the_aligned_label_entropy(label_sets):
    _, sets = label_sets
    aligned, raw = sets["aligned"], sets["untransformed"]
    assert mean_entropy(raw.similarities) == pytest.approx(mean_entropy(aligned.similarities), abs=1e-4)
    assert raw.meta["temperature"] != aligned.meta["temperature"] == 0.7
    assert (aligned.meta["space"], raw.meta["space"]) == ("aligned", "untransformed")


def test_temperature_for_entropy_recovers_a_known_temperature():
    sims = np.random.default_rng(1).standard_normal((500, 3)) * 4
    target = mean_entropy(sims, 0.37)
    assert temperature_for_entropy(sims, target) == pytest.approx(0.37, rel=1e-6)


def test_generation_is_deterministic_for_a_seed(label_sets):
    pool, sets = label_sets
    config = PseudoLabelConfig(n_triplets=1000, n_clusters=8, triplets_per_group=100, seed=3)
    again = make_pseudolabels(pool, PlantedTeacher(), _provenance(len(pool)), config)["aligned"]
    assert (again.triplets == sets["aligned"].triplets).all()
    other = make_pseudolabels(
        pool,
        PlantedTeacher(),
        _provenance(len(pool)),
        PseudoLabelConfig(n_triplets=1000, n_clusters=8, triplets_per_group=100, seed=4),
    )
    assert not np.array_equal(other["aligned"].triplets, sets["aligned"].triplets)


@pytest.mark.parametrize(
    "strategy,n_same_cluster", [("cluster_border", 2), ("within_cluster", 3), ("between_cluster", 1)]
)
def test_strategies_draw_from_the_right_clusters(strategy, n_same_cluster):
    clusters = np.repeat(np.arange(10), 12)
    config = PseudoLabelConfig(
        n_triplets=600, strategy=strategy, clusters_per_group=4, images_per_cluster=6, triplets_per_group=50
    )
    triplets, groups = sample_grouped_triplets(clusters, config)
    assert triplets.shape == (600, 3) and len(np.unique(groups)) >= 12  # a group may fall short
    labels = clusters[triplets]
    largest_shared = np.array([np.bincount(row).max() for row in labels])
    assert (largest_shared == n_same_cluster).all()
    if strategy == "cluster_border":
        assert (labels[:, 0] == labels[:, 1]).all() and (labels[:, 2] != labels[:, 0]).all()
    for g in np.unique(groups):  # a group uses at most 4 clusters x 6 images
        images = np.unique(triplets[groups == g])
        assert len(images) <= 24 and len(np.unique(clusters[images])) <= 4
    assert len(np.unique(np.sort(triplets, 1), axis=0)) == 600  # no duplicate triplets


def test_impossible_strategy_says_why():
    clusters = np.repeat(np.arange(10), 12)
    config = PseudoLabelConfig(n_triplets=10, strategy="within_cluster", images_per_cluster=2)
    with pytest.raises(ValueError, match="cannot sample within_cluster triplets"):
        sample_grouped_triplets(clusters, config)


def test_save_load_roundtrip(tmp_path, label_sets):
    _, sets = label_sets
    path = sets["aligned"].save(tmp_path / "labels" / "aligned.npz")
    loaded = PseudoLabels.load(path)
    assert (loaded.triplets == sets["aligned"].triplets).all() and loaded.meta == sets["aligned"].meta
    np.testing.assert_array_equal(loaded.similarities, sets["aligned"].similarities)
    assert loaded.pool_ids == sets["aligned"].pool_ids and list(tmp_path.glob("labels/*partial*")) == []
    assert path.stat().st_size < 40_000  # compact: 1000 triplets


def test_labels_for_another_backbone_weights_or_pool_are_refused(label_sets):
    pool, sets = label_sets
    labels = sets["aligned"]
    ids = _provenance(len(pool)).pool_ids
    labels.check_compatible(backbone="timm:tf_efficientnet_lite0", weights_id="abc", pool_ids=ids)
    with pytest.raises(
        LabelsMismatchError, match="backbone 'timm:tf_efficientnet_lite0'.*'open_clip:ViT-B-32'"
    ):
        labels.check_compatible(backbone="open_clip:ViT-B-32", weights_id="abc", pool_ids=ids)
    with pytest.raises(LabelsMismatchError, match="weights_id"):
        labels.check_compatible(backbone="timm:tf_efficientnet_lite0", weights_id="other", pool_ids=ids)
    with pytest.raises(LabelsMismatchError, match="pool_digest"):
        labels.check_compatible(backbone="timm:tf_efficientnet_lite0", weights_id="abc", pool_ids=ids[::-1])


def test_empty_or_tiny_label_sets_give_a_clear_error(label_sets):
    _, sets = label_sets
    empty = PseudoLabels(np.empty((0, 3), np.int64), np.empty((0, 3), np.float32), np.empty(0, np.int64), ())
    with pytest.raises(TooFewLabelsError, match="has 0 triplets; training needs at least 1"):
        empty.require_at_least(0)
    with pytest.raises(TooFewLabelsError, match="has 1000 triplets; training needs at least 5000"):
        sets["aligned"].require_at_least(5000)


def test_bad_pools_are_refused_up_front():
    with pytest.raises(ValueError, match="n_pool = 5"):
        make_pseudolabels(_pool(4), PlantedTeacher(), _provenance(5))
    with pytest.raises(ValueError, match="n_clusters=20 exceeds the 10 images"):
        make_pseudolabels(_pool(10), PlantedTeacher(), _provenance(10))
    with pytest.raises(ValueError, match="strategy must be one of"):
        PseudoLabelConfig(strategy="class_border")
