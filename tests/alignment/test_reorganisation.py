"""Reorganisation metrics: a planted reorganisation is detected; an identity map shows zero change."""

from __future__ import annotations

import numpy as np
import pytest

from alignment.conventions import entropy, pair_similarities, triplet_probabilities
from alignment.reorganisation import (
    entropy_vs_rt,
    group_mean_matrix,
    human_similarity_from_triplets,
    knn_indices,
    knn_purity_per_image,
    reorganisation,
    similarity_matrix,
    spearman_rsa,
)
from tests.support.planted import (
    colour_to_category,
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


def test_human_similarity_counts_how_often_a_pair_was_kept_together():
    triplets = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 1], [1, 3, 0]])  # odd one out last
    sim = human_similarity_from_triplets(triplets, 5)
    assert sim[0, 1] == sim[1, 0] == pytest.approx(2 / 4)  # together in all four, kept in the first two
    assert sim[0, 2] == pytest.approx(1 / 2)  # together in triplets 0 and 2, kept in 2
    assert sim[0, 3] == 0.0  # together in triplets 1 and 3, never kept
    assert np.isnan(sim[2, 3]) and np.isnan(sim[0, 4]) and np.isnan(sim[2, 2])  # never together / diagonal


def _triplets_judged_by(z: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Random triplets ordered odd-one-out-last according to cosine similarity in z."""
    rng = np.random.default_rng(seed)
    triplets = np.array([rng.choice(len(z), 3, replace=False) for _ in range(n)])
    sim = similarity_matrix(z)
    ordered = []
    for i, j, k in triplets:
        pairs = {(i, j, k): sim[i, j], (i, k, j): sim[i, k], (j, k, i): sim[j, k]}
        ordered.append(max(pairs, key=pairs.get))
    return np.array(ordered)


def test_rsa_prefers_the_representation_the_humans_judged_with():
    planted = colour_to_category()
    human = human_similarity_from_triplets(_triplets_judged_by(planted.after, 6000), len(planted.after))
    rsa_after = spearman_rsa(similarity_matrix(planted.after), human)
    rsa_before = spearman_rsa(similarity_matrix(planted.before), human)
    assert rsa_after.rho > 0.5 > rsa_before.rho
    assert rsa_after.n_pairs == int(np.isfinite(human[np.triu_indices(len(human), 1)]).sum())
    assert spearman_rsa(
        similarity_matrix(planted.after), similarity_matrix(planted.after)
    ).rho == pytest.approx(1.0)


def test_category_mean_matrix_averages_blocks_without_the_diagonal():
    matrix = np.array([[9.0, 1, 2], [1, 9, 4], [2, 4, 9]])
    names, means = group_mean_matrix(matrix, ["b", "a", "a"])
    assert names == ["a", "b"]
    np.testing.assert_allclose(means, [[4.0, 1.5], [1.5, np.nan]])  # a-a: the 4s; a-b: 1 and 2


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
