"""Reorganisation metrics: a planted reorganisation is detected; an identity map shows zero change."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score
from sklearn.metrics.pairwise import cosine_distances

from alignment.conventions import entropy, pair_similarities, triplet_probabilities
from alignment.neighbours import nearest_neighbours
from alignment.reorganisation import (
    category_mean_similarity,
    cosine_silhouette,
    entropy_vs_rt,
    judged_pairs,
    knn_indices,
    knn_purity_per_image,
    pair_cosine,
    pair_group_means,
    reorganisation,
    spearman_rsa,
)
from tests.support.planted import (
    colour_to_category,
    cosine_similarity_matrix,
    lizard_moves,
    random_similarity_transform,
    relocate_rows,
)


def _levels(planted):
    return {"category": planted.category, "superordinate": planted.superordinate}


def test_colour_clusters_becoming_category_clusters_raise_purity_and_silhouette_at_both_levels():
    planted = colour_to_category()
    result = reorganisation(planted.before, planted.after, _levels(planted), k=10)
    table = {(row["level"], row["metric"]): row for row in result.quality_table()}
    assert table["category", "knn_purity"]["before"] < 0.4 < 0.95 < table["category", "knn_purity"]["after"]
    assert table["superordinate", "knn_purity"]["change"] > 0.4
    assert table["category", "silhouette"]["before"] < 0.1 < 0.8 < table["category", "silhouette"]["after"]
    assert table["superordinate", "silhouette"]["change"] > 0.5
    assert result.mean_overlap < 0.4  # most neighbours are new


def test_lizards_leave_the_green_plants_for_the_animals():
    planted = lizard_moves()
    result = reorganisation(planted.before, planted.after, _levels(planted), k=10)
    lizards = planted.category == "lizard"
    purity_before = knn_purity_per_image(result.neighbours_before, planted.superordinate)[lizards].mean()
    purity_after = knn_purity_per_image(result.neighbours_after, planted.superordinate)[lizards].mean()
    assert purity_before < 0.95 and purity_after == 1.0  # their non-lizard neighbours: plants, then animals
    assert (
        result.quality_after["superordinate"].silhouette
        > result.quality_before["superordinate"].silhouette + 0.2
    )


def test_the_images_that_moved_are_the_ones_reported_as_moved_most():
    planted = colour_to_category()
    moved_rows, targets = [3, 17, 44, 70], [60, 75, 5, 25]  # each into another category's cluster
    result = reorganisation(
        planted.before, relocate_rows(planted.before, moved_rows, targets), _levels(planted), k=8
    )
    assert set(result.moved_most(4).tolist()) == set(moved_rows)
    assert result.overlap[moved_rows].max() <= 0.25
    others = np.setdiff1d(np.arange(len(result.overlap)), moved_rows)
    assert result.overlap[others].mean() > 0.85


@pytest.mark.parametrize("transform", ["identical", "rotated_and_scaled"])
def test_an_identity_map_shows_zero_change(transform):
    planted = lizard_moves()
    after = planted.before.copy() if transform == "identical" else random_similarity_transform(planted.before)
    result = reorganisation(planted.before, after, _levels(planted), k=10)
    np.testing.assert_array_equal(result.overlap, 1.0)
    for row in result.quality_table():
        assert row["change"] == pytest.approx(0.0, abs=1e-6)  # distances in float32


def test_knn_excludes_the_image_itself_even_with_exact_duplicates():
    x = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0.1, 1.0], [1.0, 0.1]])
    neighbours = knn_indices(x, 2)
    assert all(i not in row for i, row in enumerate(neighbours))
    assert set(neighbours[0]) == {1, 4} and set(neighbours[1]) == {0, 4}


def test_mismatched_inputs_are_refused_with_a_message_naming_them():
    planted = lizard_moves()
    with pytest.raises(ValueError, match="same images"):
        reorganisation(planted.before, planted.after[:-1], _levels(planted))
    with pytest.raises(ValueError, match="superordinate labels: expected 40"):
        reorganisation(planted.before, planted.after, {"superordinate": planted.superordinate[:-1]})
    bad = planted.before.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="embeddings_before row 7"):
        reorganisation(bad, planted.after, _levels(planted))


def test_judged_pairs_count_how_often_a_pair_was_kept_together():
    triplets = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 1], [1, 3, 0]])  # odd one out last
    pairs = judged_pairs(triplets, 5)
    similarity = {
        (int(a), int(b)): s for a, b, s in zip(pairs.first, pairs.second, pairs.similarity, strict=True)
    }
    assert similarity[0, 1] == pytest.approx(2 / 4)  # together in all four, kept in the first two
    assert similarity[0, 2] == pytest.approx(1 / 2)  # together in triplets 0 and 2, kept in 2
    assert similarity[0, 3] == 0.0  # together in triplets 1 and 3, never kept
    assert set(similarity) == {(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)}  # never together: absent


def _triplets_judged_by(z: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Random triplets ordered odd-one-out-last according to cosine similarity in z."""
    rng = np.random.default_rng(seed)
    triplets = np.array([rng.choice(len(z), 3, replace=False) for _ in range(n)])
    sim = cosine_similarity_matrix(z)
    ordered = []
    for i, j, k in triplets:
        pairs = {(i, j, k): sim[i, j], (i, k, j): sim[i, k], (j, k, i): sim[j, k]}
        ordered.append(max(pairs, key=pairs.get))
    return np.array(ordered)


def _rsa(z, pairs):
    return spearman_rsa(pair_cosine(z, pairs.first, pairs.second), pairs.similarity)


def test_rsa_prefers_the_representation_the_humans_judged_with():
    planted = colour_to_category()
    pairs = judged_pairs(_triplets_judged_by(planted.after, 6000), len(planted.after))
    rsa_after, rsa_before = _rsa(planted.after, pairs), _rsa(planted.before, pairs)
    assert rsa_after.rho > 0.5 > rsa_before.rho
    assert rsa_after.ci[0] < rsa_after.rho < rsa_after.ci[1] and rsa_after.ci[0] > rsa_before.ci[1]
    assert rsa_after.n_pairs == len(pairs.first)
    model = pair_cosine(planted.after, pairs.first, pairs.second)
    assert spearman_rsa(model, model).rho == pytest.approx(1.0)


def test_rsa_ci_from_a_quarter_of_the_judgments_covers_the_rsa_from_all_of_them():
    planted = colour_to_category()
    triplets = _triplets_judged_by(planted.after, 8000, seed=4)
    everything = _rsa(planted.before, judged_pairs(triplets, len(planted.before)))
    for part in np.array_split(np.arange(len(triplets)), 4):
        sampled = _rsa(planted.before, judged_pairs(triplets[part], len(planted.before)))
        assert sampled.ci[0] <= everything.rho <= sampled.ci[1]
        assert sampled.ci[1] - sampled.ci[0] > everything.ci[1] - everything.ci[0]  # fewer pairs, wider


def test_rsa_over_judged_pairs_equals_rsa_over_the_defined_cells_of_the_dense_matrices():
    """Known answer: the n x n computation this replaced (upper triangles, NaN where never judged)."""
    planted = lizard_moves()
    triplets = _triplets_judged_by(planted.after, 300)
    n = len(planted.before)
    human = np.full((n, n), np.nan)
    pairs = judged_pairs(triplets, n)
    human[pairs.first, pairs.second] = pairs.similarity
    model = cosine_similarity_matrix(planted.before)
    upper = np.triu_indices(n, 1)
    known = np.isfinite(human[upper])
    from scipy.stats import spearmanr

    dense = spearmanr(model[upper][known], human[upper][known]).statistic
    assert _rsa(planted.before, pairs).rho == pytest.approx(dense, abs=1e-6)


def test_category_means_equal_block_means_of_the_dense_similarity_matrix_without_the_diagonal():
    planted = lizard_moves()
    names, means = category_mean_similarity(planted.before, planted.category)
    dense = cosine_similarity_matrix(planted.before)
    np.fill_diagonal(dense, np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            block = dense[np.ix_(planted.category == a, planted.category == b)]
            assert means[i, j] == pytest.approx(np.nanmean(block), abs=1e-6)
    single = category_mean_similarity(np.eye(6)[:, :5] + 0.1, ["a", "a", "b", "c", "c", "c"])[1]
    assert np.isnan(single[1, 1]) and np.isfinite(single[0, 1])  # one "b" image: no b-b pair


def test_human_category_means_average_the_judged_pairs_between_two_labels():
    triplets = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 1]])  # odd one out last
    pairs = judged_pairs(triplets, 4)
    names, means = pair_group_means(pairs, pairs.similarity, ["a", "a", "b", "b"])
    assert names == ["a", "b"]
    assert means[0, 0] == pytest.approx(2 / 3)  # a-a: only the pair (0, 1), kept in 2 of its 3 triplets
    # a-b pairs: (0,2) 1/2, (1,2) 0/2, (0,3) 0/1, (1,3) 0/1 -> mean 0.125
    assert means[0, 1] == means[1, 0] == pytest.approx(0.125)
    assert np.isnan(means[1, 1])  # images 2 and 3 never shown together


@pytest.mark.parametrize("planted", [colour_to_category(), lizard_moves()])
def test_linear_silhouette_equals_scikit_learns_on_the_full_distance_matrix(planted):
    for labels in (planted.category, planted.superordinate):
        dense = silhouette_score(cosine_distances(planted.before), labels, metric="precomputed")
        assert cosine_silhouette(planted.before, labels) == pytest.approx(dense, abs=1e-5)
    labels = planted.category.copy()
    labels[0] = "alone"  # a label with one image scores 0, as scikit-learn does
    dense = silhouette_score(cosine_distances(planted.after), labels, metric="precomputed")
    assert cosine_silhouette(planted.after, labels) == pytest.approx(dense, abs=1e-5)


def test_measures_from_approximate_neighbours_hold_the_exact_values_within_their_cis():
    rng = np.random.default_rng(3)
    n, labels = 1500, rng.integers(0, 12, 1500)
    centres = rng.normal(size=(2, 12, 48))
    before = centres[0][labels] + rng.normal(scale=1.2, size=(n, 48))
    after = centres[1][labels] + rng.normal(scale=0.6, size=(n, 48))
    levels = {"category": labels, "superordinate": labels % 3}
    exact = reorganisation(before, after, levels, k=10)
    approximate = [nearest_neighbours(x, 10, exact=False) for x in (before, after)]
    approx = reorganisation(before, after, levels, k=10, neighbours=tuple(approximate))
    assert not any(found.exact for found in approximate) and exact.recall == (1.0, 1.0)
    low, high = approx.mean_overlap_ci
    assert low <= exact.mean_overlap <= high
    for level in levels:
        for when in ("quality_before", "quality_after"):
            truth, estimate = getattr(exact, when)[level], getattr(approx, when)[level]
            assert estimate.knn_purity_ci[0] <= truth.knn_purity <= estimate.knn_purity_ci[1]
            assert estimate.silhouette == truth.silhouette  # exact either way


def test_model_entropy_tracks_planted_response_times():
    planted = colour_to_category()
    triplets = _triplets_judged_by(planted.after, 400)
    truth = entropy(triplet_probabilities(pair_similarities(planted.after, triplets, "cosine"), 0.1))
    rt = 600 + 800 * truth + np.random.default_rng(0).normal(0, 20, len(triplets))  # slower when unsure
    rt[5] = np.nan  # a timeout
    result = entropy_vs_rt(planted.after, triplets, rt)
    assert len(result.rt_ms) == len(triplets) - 1
    assert result.rho > 0.8
    with pytest.raises(ValueError, match="one response time per triplet"):
        entropy_vs_rt(planted.after, triplets, rt[:-1])
