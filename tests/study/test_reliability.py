"""Noise ceilings and per-triplet human statistics on hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study.judgments import load_judgments
from study.reliability import (
    bootstrap_mean_ci,
    levels_noise_ceiling,
    loo_majority_agreement,
    modal_consistency,
    things_modal_consistency,
    triplet_human_stats,
)
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant


@pytest.mark.parametrize(
    ("choices", "expected"),
    [
        ("aaab", 3 / 4),  # each a: others a,a,b -> a (1); b: others a,a,a -> a (0)
        ("aabb", 0.0),  # each held-out choice is outvoted 2:1 by the other choice
        ("aabc", 1 / 6),  # a: others a,b,c -> 3-way tie incl. a (1/3) twice; b, c: outvoted
        ("aaabb", 3 / 10),  # a: others a,a,b,b -> 2-way tie incl. a (1/2) x3; b: others a,a,a,b -> a (0)
        ("aabbc", 0.0),  # c: others a,a,b,b -> tie without c
        ("aaaa", 1.0),
    ],
)
def test_leave_one_out_majority(choices, expected):
    assert loo_majority_agreement(list(choices)) == pytest.approx(expected)


def test_modal_consistency():
    assert modal_consistency(list("aaab")) == 0.75
    assert modal_consistency(list("ab")) == 0.5
    assert modal_consistency(list("abc")) == pytest.approx(1 / 3)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [0.0, 1.0, 0.5, 0.25, 1.0, 0.75]
    low, high = bootstrap_mean_ci(values, seed=3)
    assert low < np.mean(values) < high
    assert (low, high) == bootstrap_mean_ci(values, seed=3)
    assert bootstrap_mean_ci([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4))


def _judgments(rows) -> pd.DataFrame:
    """rows: (participant, trial_index, (a, b, c), odd, level); builds the load_judgments layout."""
    records = []
    for participant, trial_index, items, odd, level in rows:
        first, second = sorted(set(items) - {odd})
        records.append(
            {
                "participant_id": participant,
                "subject": f"s{participant}",
                "stim0": first,
                "stim1": second,
                "stim2": odd,
                "trial_index": trial_index,
                "kind": "experimental",
                "level": level,
                "triplet_key": "-".join(map(str, sorted(items))),
                "rt_ms": 1000.0 + odd,
            }
        )
    return pd.DataFrame(records)


T1, T2, T3 = (1, 2, 3), (4, 5, 6), (7, 8, 9)


def _levels_case() -> pd.DataFrame:
    rows = [(p, 0, T1, odd, "between_class") for p, odd in enumerate([3, 3, 3, 1])]  # LOO 3/4
    rows += [(p, 0, T2, odd, "within_class") for p, odd in enumerate([4, 4, 4, 5, 5])]  # LOO 3/10
    rows += [(p, 0, T3, 9, "within_class") for p in range(3)]  # 3 responses: dropped
    rows += [(0, 1, T1, 1, "between_class")]  # participant 0 again: a within-participant repeat, ignored
    return _judgments(rows)


def test_levels_noise_ceiling_per_level_and_overall():
    table = levels_noise_ceiling(_levels_case()).set_index("level")
    assert table.loc["between_class", "ceiling"] == pytest.approx(0.75)
    assert table.loc["within_class", "ceiling"] == pytest.approx(0.3)
    assert table.loc["within_class", "n_triplets"] == 1  # T3 had fewer than 4 responses
    assert table.loc["overall", "ceiling"] == pytest.approx((0.75 + 0.3) / 2)
    assert table.loc["overall", "n_responses"] == 9
    assert (
        table.loc["overall", "ci_low"] <= table.loc["overall", "ceiling"] <= table.loc["overall", "ci_high"]
    )


def test_levels_noise_ceiling_subsamples_to_five_reproducibly():
    rows = [(p, 0, T1, odd, "between_class") for p, odd in enumerate([1, 1, 1, 1, 2, 2, 3, 3, 3])]
    judgments = _judgments(rows)
    table = levels_noise_ceiling(judgments, seed=7)
    assert table["n_responses"].tolist() == [5, 5]
    assert table.equals(levels_noise_ceiling(judgments, seed=7))
    seeds = {round(levels_noise_ceiling(judgments, seed=s)["ceiling"].iloc[-1], 6) for s in range(20)}
    assert len(seeds) > 1  # the subsample really depends on the seed
    assert levels_noise_ceiling(judgments, max_responses=9)["ceiling"].iloc[-1] == pytest.approx(
        loo_majority_agreement([1, 1, 1, 1, 2, 2, 3, 3, 3])
    )


def test_things_modal_consistency_between_and_within():
    rows = [(p, 0, T1, odd, "between_class") for p, odd in enumerate([3, 3, 3, 1])]  # 3/4
    rows += [(p, 0, T2, odd, "within_class") for p, odd in enumerate([4, 5])]  # 1/2
    rows += [(9, 0, T3, 9, "within_class"), (9, 5, T3, 9, "within_class"), (9, 9, T3, 8, "within_class")]
    judgments = _judgments(rows)
    between = things_modal_consistency(judgments).set_index("level")
    assert between.loc["overall", "consistency"] == pytest.approx((0.75 + 0.5) / 2)  # T3 has one person
    half = 1.96 * np.std([0.75, 0.5], ddof=1) / math.sqrt(2)
    assert between.loc["overall", "ci_low"] == pytest.approx(0.625 - half)
    assert between.loc["overall", "ci_high"] == pytest.approx(0.625 + half)
    within = things_modal_consistency(judgments, scope="within").set_index("level")
    assert within.loc["overall", "consistency"] == pytest.approx(2 / 3)
    assert within.loc["overall", "n_triplets"] == 1 and math.isnan(within.loc["overall", "ci_low"])


def test_triplet_human_stats_orders_the_modal_odd_one_out_last():
    rows = [(p, 0, (3, 1, 2), odd, "between_class") for p, odd in enumerate([2, 2, 3, 1])]
    rows += [(p, 0, T2, odd, "within_class") for p, odd in enumerate([6, 4])]  # tie: the lower id is modal
    stats = triplet_human_stats(_judgments(rows)).set_index("triplet_key")
    first = stats.loc["1-2-3"]
    assert (first["stim0"], first["stim1"], first["stim2"]) == (1, 3, 2)
    assert (first["p01"], first["p02"], first["p12"]) == (0.5, 0.25, 0.25)  # odd=2, odd=3, odd=1
    assert first["entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert first["median_rt_ms"] == 1002.0  # rts 1002, 1002, 1003, 1001
    tie = stats.loc["4-5-6"]
    assert (tie["stim0"], tie["stim1"], tie["stim2"]) == (5, 6, 4)
    assert (tie["p01"], tie["p02"], tie["p12"]) == (0.5, 0.5, 0.0)
    assert tie["entropy"] == pytest.approx(math.log(2))
    assert len(triplet_human_stats(_judgments(rows), min_responses=3)) == 1


def test_ceiling_from_a_recorded_study(db):
    ids = make_stimuli(db)
    specs = [experimental(ids[0], ids[1], ids[6]), experimental(ids[3], ids[4], ids[9])]
    make_study(db, "rel-study", [specs], participants_per_list=10)
    for p, (odd_a, odd_b) in enumerate([(6, 9), (6, 9), (6, 9), (0, 3)]):
        run_participant(db, "rel-study", f"p{p}", [ids[odd_a], ids[odd_b]])
    table = levels_noise_ceiling(load_judgments(db, "rel-study")).set_index("level")
    assert table.loc["between_class", "ceiling"] == pytest.approx(0.75)
    assert table.loc["between_class", "n_triplets"] == 2


def _slow_triplet_human_stats(judgments: pd.DataFrame, min_responses: int = 1) -> pd.DataFrame:
    """The former per-triplet pandas loop, kept as the reference the vectorised version must match."""
    from collections import Counter

    rows = []
    for key, group in judgments.groupby("triplet_key", sort=True):
        if len(group) < min_responses:
            continue
        counts = Counter(group["stim2"].tolist())
        items = {int(i) for i in group[["stim0", "stim1", "stim2"]].iloc[0]}
        modal = min(counts, key=lambda item: (-counts[item], item))
        first, second = sorted(items - {modal})
        probs = np.array([counts[modal], counts[second], counts[first]], dtype=float) / len(group)
        nonzero = probs[probs > 0]
        rows.append(
            {
                "triplet_key": key,
                "stim0": first,
                "stim1": second,
                "stim2": int(modal),
                "level": group["level"].iloc[0],
                "kind": group["kind"].iloc[0],
                "n_responses": len(group),
                "p01": probs[0],
                "p02": probs[1],
                "p12": probs[2],
                "entropy": float(-(nonzero * np.log(nonzero)).sum()),
                "median_rt_ms": float(group["rt_ms"].median()),
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("id_offset", [0, 2**22], ids=["packed-id-sort", "lexsort-beyond-2**21"])
@pytest.mark.parametrize("min_responses", [1, 3])
def test_triplet_human_stats_matches_the_per_triplet_reference_on_random_judgments(min_responses, id_offset):
    rng = np.random.default_rng(5)
    pool = [tuple(int(i) for i in rng.choice(12, 3, replace=False)) for _ in range(60)]
    rows = []
    for trial in range(1500):
        items = pool[rng.integers(len(pool)) if trial % 3 else rng.integers(5)]  # 5 triplets repeat a lot
        rows.append((int(rng.integers(40)), trial, items, int(rng.choice(items)), ["a", "b"][trial % 2]))
    judgments = _judgments(rows)
    judgments.loc[rng.random(len(judgments)) < 0.1, "rt_ms"] = np.nan  # timeouts-like missing RTs
    judgments[["stim0", "stim1", "stim2"]] += id_offset  # ids too large to pack take the lexsort path
    fast = triplet_human_stats(judgments, min_responses=min_responses)
    slow = _slow_triplet_human_stats(judgments, min_responses)
    assert len(fast) == len(slow) > 5
    ids = [tuple(row) for row in np.sort(fast[["stim0", "stim1", "stim2"]].to_numpy(), axis=1).tolist()]
    assert ids == sorted(ids)  # rows ordered by the triplet's sorted stimulus ids
    pd.testing.assert_frame_equal(
        fast.sort_values("triplet_key").reset_index(drop=True),
        slow.reset_index(drop=True),
        check_dtype=False,
    )
