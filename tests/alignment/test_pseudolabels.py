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
        make_pseudolabels(_pool(10), PlantedTeacher(), _provenance(10), PseudoLabelConfig(n_clusters=20))
    with pytest.raises(ValueError, match="strategy must be one of"):
        PseudoLabelConfig(strategy="class_border")


@pytest.mark.parametrize(
    "n_images,expected",
    [
        # n: (n_clusters, clusters_per_group, images_per_cluster, n_triplets, triplets_per_group)
        (18, (3, 3, 8, 135, 16)),  # 3 clusters of 6: 3 * C(6,2) * 12 = 540 border triplets, a quarter
        (30, (5, 5, 8, 450, 56)),  # 5 of 6: 5 * 15 * 24 = 1800 / 4
        (36, (6, 6, 8, 675, 84)),  # 6 of 6: 2700 / 4
        (129, (20, 8, 8, 10_000, 256)),  # the demo's size: the laptop defaults
        (1_000_000, (20, 8, 8, 10_000, 256)),  # clusters capped at 20 (a GPU run sets more)
    ],
)
def test_unset_settings_follow_the_pool_rule(n_images, expected):
    settings = PseudoLabelConfig().for_pool(n_images)
    names = ("n_clusters", "clusters_per_group", "images_per_cluster", "n_triplets", "triplets_per_group")
    assert tuple(getattr(settings, name) for name in names) == expected


def test_given_settings_are_kept_and_impossible_ones_refused_with_what_to_change():
    given = PseudoLabelConfig(n_triplets=2000, n_clusters=6, triplets_per_group=50)
    settings = given.for_pool(36)
    assert (settings.n_triplets, settings.n_clusters, settings.triplets_per_group) == (2000, 6, 50)
    assert settings.images_per_cluster == 8 and settings.clusters_per_group == 6
    with pytest.raises(
        ValueError, match="allow 2700 distinct cluster_border triplets; n_triplets=5000 is more"
    ):
        PseudoLabelConfig(n_triplets=5000, n_clusters=6).for_pool(36)
    with pytest.raises(ValueError, match="n_clusters=20 exceeds the 10 images"):
        PseudoLabelConfig(n_clusters=20).for_pool(10)
    with pytest.raises(ValueError, match="has 2 images; pseudo-labelling needs at least 3"):
        PseudoLabelConfig().for_pool(2)


def test_uneven_clusters_bound_the_derived_number_of_triplets():
    assert PseudoLabelConfig().for_pool(36, [12, 12, 12]).n_triplets == 675  # a quarter of the estimate
    # one cluster of 34: C(34,2) * 2 = 1122 border triplets; half of them
    assert PseudoLabelConfig().for_pool(36, [34, 1, 1]).n_triplets == 561
    assert PseudoLabelConfig(n_triplets=900).for_pool(36, [34, 1, 1]).n_triplets == 900  # given: kept


@pytest.mark.parametrize("strategy", ["cluster_border", "within_cluster", "between_cluster", "random"])
def test_valid_triplet_count_matches_enumeration(strategy):
    from itertools import combinations

    from alignment.pseudolabels import valid_triplet_count

    sizes = [5, 3, 1, 4]
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    counted = 0
    for triplet in combinations(range(len(clusters)), 3):
        shared = np.bincount(clusters[list(triplet)]).max()
        counted += {"cluster_border": 2, "within_cluster": 3, "between_cluster": 1}.get(
            strategy, shared
        ) == shared
    assert valid_triplet_count(sizes, strategy) == counted


@pytest.mark.parametrize("n_images", [30, 36, 120])
def test_default_settings_label_small_pools(n_images):
    """The 36-image study of issue 14 failed with the fixed defaults (20 clusters, 10,000 triplets)."""
    pool = _pool(n_images, seed=n_images)
    sets = make_pseudolabels(pool, PlantedTeacher(), _provenance(n_images))
    used = sets["aligned"].meta["config"]
    assert len(sets["aligned"]) == used["n_triplets"] >= 256
    assert used["n_clusters"] == PseudoLabelConfig().for_pool(n_images).n_clusters
    assert len(np.unique(np.sort(sets["aligned"].triplets, 1), axis=0)) == len(sets["aligned"])
