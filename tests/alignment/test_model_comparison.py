"""Before/after table: known accuracies, gains, entropy-matched temperatures, clear errors."""

import numpy as np
import pytest

from alignment.conventions import entropy, pair_similarities, triplet_probabilities
from alignment.model_comparison import (
    CEILING_FROM_FEW_TRIPLETS,
    GAIN_CI_INCLUDES_ZERO,
    MIN_CEILING_TRIPLETS,
    NORMALISED_ABOVE_CEILING,
    compare_models,
)


def _case():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((60, 4))
    triplets = np.array([rng.choice(60, 3, replace=False) for _ in range(300)])
    sims = pair_similarities(truth, triplets)
    triplets = np.take_along_axis(
        triplets, np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[sims.argmax(1)], axis=1
    )
    levels = np.array(["between_class", "within_class", "class_border"])[np.arange(300) % 3]
    return truth, triplets, levels, rng


def test_perfect_model_beats_random_model_at_every_level():
    truth, triplets, levels, rng = _case()
    result = compare_models(
        {"base": rng.standard_normal((60, 4)), "aligned": truth * 5},
        triplets,
        levels=levels,
        noise_ceiling=0.9,
        human_entropy=np.full(300, 0.6),
        n_boot=200,
    )
    gains = result.gains()["aligned"]
    assert set(gains) == {"between_class", "within_class", "class_border", "overall"}
    aligned = {row["level"]: row for row in result.reports["aligned"].rows}
    assert all(row["accuracy"] == 1.0 for row in aligned.values())
    assert aligned["overall"]["normalised"] == pytest.approx((1 - 1 / 3) / (0.9 - 1 / 3))
    assert all(g > 0.3 for g in gains.values())
    for name, values in (("base", None), ("aligned", truth * 5)):
        if values is not None:  # the temperature puts mean entropy at the humans' 0.6 nats
            probs = triplet_probabilities(pair_similarities(values, triplets), result.temperatures[name])
            assert entropy(probs).mean() == pytest.approx(0.6, abs=1e-3)
    table = result.results_table()
    assert len(table) == 8 and list(table["model"][:2]) == ["base", "aligned"]
    assert list(table["level"].unique()) == ["between_class", "class_border", "within_class", "overall"]
    rows = table.set_index(["level", "model"])
    aligned_overall = rows.loc[("overall", "aligned")]
    assert (aligned_overall.accuracy, aligned_overall.ci_low, aligned_overall.ci_high) == (1.0, 1.0, 1.0)
    # a perfect model above a 0.9 ceiling: the ceiling is underestimated, and the row says so
    assert aligned_overall.gain == gains["overall"] and aligned_overall["flags"] == (
        NORMALISED_ABOVE_CEILING,
    )
    assert (aligned_overall.task, aligned_overall.held_out, aligned_overall.n_images) == (
        "odd_one_out",
        "all",
        60,
    )
    assert aligned_overall.normalised == pytest.approx((1 - 1 / 3) / (0.9 - 1 / 3))
    assert np.isnan(rows.loc[("overall", "base"), "gain"])  # the baseline has no gain over itself
    assert (rows["n_judgments"].loc["overall"] == 300).all() and (rows["similarity"] == "dot").all()


def test_anchor_rows_are_scored_as_agreement_with_close_over_far():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((40, 4))
    rows = np.array([rng.choice(40, 3, replace=False) for _ in range(400)])
    sims = truth[rows[:, 0]] @ truth.T
    closer_second = sims[np.arange(400), rows[:, 1]] < sims[np.arange(400), rows[:, 2]]
    rows[closer_second] = rows[closer_second][:, [0, 2, 1]]  # (head, close, far) of the truth
    result = compare_models(
        {"random": rng.standard_normal((40, 4)), "truth": truth},
        rows,
        task="anchor",
        held_out="unseen",
        n_boot=200,
    )
    table = result.results_table().set_index("model")
    assert list(table["level"]) == ["overall"] * 2 and (table["task"] == "anchor").all()
    assert table.loc["truth", "accuracy"] == 1.0
    swapped = compare_models({"truth": truth}, rows[:, [0, 2, 1]], task="anchor", n_boot=10)
    assert swapped.results()[0].accuracy == 0.0  # (head, far, close): the truth disagrees with every row
    assert 0.4 < table.loc["random", "accuracy"] < 0.6  # chance is 1/2 for two candidates
    assert (table["held_out"] == "unseen").all() and (table["n_images"] == 40).all()
    assert np.isnan(table.loc["truth", "noise_ceiling"])


def test_embeddings_over_different_images_are_refused():
    truth, triplets, _, _ = _case()
    with pytest.raises(ValueError, match="one row per image"):
        compare_models({"base": truth, "student": truth[:50]}, triplets)
    with pytest.raises(ValueError, match="at least one"):
        compare_models({}, triplets)


def test_gain_intervals_are_paired_over_the_same_resamples():
    truth, triplets, levels, rng = _case()
    base = rng.standard_normal((60, 4))
    keys = [str(i // 3) for i in range(len(triplets))]  # three judgments per "triplet"
    result = compare_models(
        {"base": base, "same": base.copy(), "aligned": truth},
        triplets,
        levels=levels,
        groups=keys,
        n_boot=300,
    )
    same = result.gain_intervals()["same"]
    assert all(values == (0.0, 0.0, 0.0) for values in same.values())  # unpaired CIs would straddle 0 widely
    gain, low, high = result.gain_intervals()["aligned"]["overall"]
    assert low <= gain <= high and low > 0.3
    assert result.gains()["aligned"]["overall"] == gain
    rows = result.results_table().set_index(["level", "model"])
    assert tuple(rows.loc[("overall", "aligned"), ["gain", "gain_ci_low", "gain_ci_high"]]) == (
        gain,
        low,
        high,
    )
    assert rows.loc[("overall", "aligned"), "n_triplets"] == 100  # 300 judgments of 100 distinct triplets


def test_a_gain_whose_ci_includes_zero_is_flagged_and_a_clear_one_is_not():
    truth, triplets, levels, rng = _case()
    base = rng.standard_normal((60, 4))
    result = compare_models({"base": base, "same": base.copy(), "aligned": truth}, triplets, n_boot=200)
    flags = result.results_table().set_index("model")["flags"]
    assert flags["same"] == (GAIN_CI_INCLUDES_ZERO,) and flags["aligned"] == () and flags["base"] == ()


def test_a_normalised_score_from_a_ceiling_over_too_few_triplets_is_flagged():
    truth, triplets, levels, _ = _case()
    result = compare_models(
        {"aligned": truth},
        triplets,
        levels=levels,
        noise_ceiling={"between_class": 1.0, "within_class": 1.0, "overall": 1.0},
        ceiling_triplets={"between_class": MIN_CEILING_TRIPLETS, "within_class": 3, "overall": 3},
        ceiling_intervals={"within_class": (0.6, 1.0)},
        n_boot=50,
    )
    rows = result.results_table().set_index("level")
    assert (rows.loc["within_class", "ceiling_ci_low"], rows.loc["within_class", "ceiling_ci_high"]) == (
        0.6,
        1.0,
    )
    assert rows.loc["within_class", "flags"] == (CEILING_FROM_FEW_TRIPLETS,)
    assert rows.loc["within_class", "ceiling_triplets"] == 3
    assert rows.loc["between_class", "flags"] == ()  # enough repeated triplets
    assert np.isnan(rows.loc["class_border", "normalised"]) and rows.loc["class_border", "flags"] == ()
