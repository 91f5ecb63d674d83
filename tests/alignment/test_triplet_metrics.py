"""Evaluation suite: accuracy with ties wrong, per-level rows, normalisation, correlations, ECE, CIs."""

import numpy as np
import pytest

from alignment.triplet_metrics import (
    evaluate_triplets,
    expected_calibration_error,
    normalised_accuracy,
    spearman,
)


def test_accuracy_per_level_counts_ties_wrong_and_uses_pair_01():
    z = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [0.0, 0.0]])
    triplets = np.array(
        [
            [0, 1, 2],  # 0 & 1 most similar, odd one out last: correct
            [2, 3, 0],  # correct
            [4, 0, 2],  # item 4 is zero and 0, 2 are orthogonal: s01 = s02 = s12 = 0, a tie: wrong
            [0, 2, 1],  # the model's odd one out is item 2, the human's is item 1: wrong
        ]
    )
    table = evaluate_triplets(z, triplets, levels=["a", "a", "b", "b"], n_boot=50).table()
    assert list(table["level"]) == ["a", "b", "overall"]
    assert list(table["n"]) == [2, 2, 4]
    assert list(table["accuracy"]) == [1.0, 0.0, 0.5]
    assert (table["similarity"] == "dot").all()


def test_hand_computed_accuracy_with_explicit_similarities():
    # embeddings chosen so each triplet's pair similarities are known exactly
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    triplets = np.array([[0, 1, 2], [0, 2, 1], [3, 0, 1]])  # correct, wrong, tie (all zeros)
    report = evaluate_triplets(z, triplets, n_boot=100)
    assert report.overall["accuracy"] == pytest.approx(1 / 3)
    assert report.overall["accuracy_low"] <= 1 / 3 <= report.overall["accuracy_high"]


def test_cosine_and_dot_can_disagree_and_the_report_says_which():
    z = np.array([[1.0, 0.0], [10.0, 10.0], [2.0, 0.0]])
    triplets = np.array([[0, 2, 1]])  # humans: 0 and 2 belong together (same direction; 1 is long)
    assert evaluate_triplets(z, triplets, similarity="cosine", n_boot=10).overall["accuracy"] == 1.0
    dot = evaluate_triplets(z, triplets, similarity="dot", n_boot=10)
    assert dot.overall["accuracy"] == 0.0 and "dot similarity" in dot.describe()


def test_normalised_accuracy_and_bad_ceiling():
    assert normalised_accuracy(2 / 3, 2 / 3) == pytest.approx(1.0)
    assert normalised_accuracy(0.5, 2 / 3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="chance"):
        normalised_accuracy(0.5, 0.3)


def test_entropy_correlations_and_noise_ceiling_per_level():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 4))
    triplets = np.array([rng.choice(60, 3, replace=False) for _ in range(400)])
    base = evaluate_triplets(z, triplets, n_boot=0)
    from alignment.conventions import entropy, pair_similarities, triplet_probabilities

    model_entropy = entropy(triplet_probabilities(pair_similarities(z, triplets), 1.0))
    rt = 500 + 1000 * model_entropy + rng.normal(scale=1.0, size=400)
    rt[::10] = np.nan  # unknown RTs are skipped
    report = evaluate_triplets(
        z,
        triplets,
        levels=["x"] * 200 + ["y"] * 200,
        human_rt=rt,
        human_entropy=-model_entropy,
        noise_ceiling={"x": 0.6, "overall": 0.7},
        n_boot=200,
    )
    table = report.table().set_index("level")
    assert table.loc["overall", "rho_entropy_rt"] > 0.99
    assert table.loc["overall", "rho_entropy_human_entropy"] == pytest.approx(-1.0)
    assert table.loc["overall", "rho_entropy_rt_low"] <= table.loc["overall", "rho_entropy_rt"]
    assert table.loc["x", "noise_ceiling"] == 0.6 and np.isnan(table.loc["y", "noise_ceiling"])
    expected = (table.loc["overall", "accuracy"] - 1 / 3) / (0.7 - 1 / 3)
    assert table.loc["overall", "normalised"] == pytest.approx(expected)
    assert table.loc["overall", "accuracy"] == base.overall["accuracy"]


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.6, 0.2, 0.2]])
    # bin 0.9: 3 triplets, 2 correct -> |2/3 - 0.9|; bin 0.6: 1 triplet, correct -> |1 - 0.6|
    assert expected_calibration_error(probs) == pytest.approx(0.75 * abs(2 / 3 - 0.9) + 0.25 * 0.4)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    x[:5] = 0.0  # ties
    assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0])


def test_inputs_with_the_wrong_length_are_named():
    z = np.eye(3)
    with pytest.raises(ValueError, match="human_rt"):
        evaluate_triplets(z, np.array([[0, 1, 2]]), human_rt=[1.0, 2.0])
    with pytest.raises(ValueError, match="levels"):
        evaluate_triplets(z, np.array([[0, 1, 2]]), levels=["a", "b"])


def test_with_groups_each_distinct_triplet_counts_once():
    # one triplet answered (correctly) by 100 people, ten triplets answered (wrongly) by one person each
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    triplets = np.array([[0, 1, 2]] * 100 + [[0, 2, 1]] * 10)
    keys = ["shared"] * 100 + [f"single-{i}" for i in range(10)]
    rt = np.array([1000.0] * 100 + [2000.0] * 10)
    by_judgment = evaluate_triplets(z, triplets, n_boot=500).overall
    by_triplet = evaluate_triplets(z, triplets, groups=keys, human_rt=rt, n_boot=500)
    assert by_judgment["accuracy"] == pytest.approx(100 / 110) and by_judgment["n_groups"] == 110
    assert by_triplet.overall["accuracy"] == pytest.approx(1 / 11)
    assert (by_triplet.overall["n"], by_triplet.overall["n_groups"]) == (110, 11)
    assert by_triplet.overall["accuracy_low"] == 0.0  # resamples without the shared triplet exist (p ~ 0.35)
    assert (
        "each weighted once" in by_triplet.describe()
        and "over judgments" in evaluate_triplets(z, triplets, n_boot=1).describe()
    )
    with pytest.raises(ValueError, match="groups must have one value per triplet"):
        evaluate_triplets(z, triplets, groups=keys[:5])


def test_with_groups_a_triplet_scores_the_share_of_judgments_the_model_agrees_with():
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # the same triplet judged three times: twice as the model would (item 2 odd), once not
    triplets = np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1], [0, 1, 2]])
    report = evaluate_triplets(
        z, triplets, groups=["t", "t", "t", "u"], levels=["a", "a", "a", "b"], n_boot=10
    )
    rows = {row["level"]: row for row in report.rows}
    assert rows["a"]["accuracy"] == pytest.approx(2 / 3) and rows["b"]["accuracy"] == 1.0
    assert rows["overall"]["accuracy"] == pytest.approx((2 / 3 + 1) / 2)
