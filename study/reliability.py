"""How much humans agree: the Levels leave-one-out majority noise ceiling, THINGS modal consistency, and
per-triplet human choice distributions, entropy and RT (inputs for the alignment evaluation).

All functions take a judgments table as returned by `study.judgments.load_judgments`: one row per
answered trial with `stim0, stim1, stim2` (the chosen odd one out last), `participant_id`,
`trial_index`, `triplet_key`, `level`, `kind` and `rt_ms`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from db.models import TrialKind

CEILING_KINDS = (TrialKind.EXPERIMENTAL.value, TrialKind.REPEAT.value)  # catch trials have a known answer
OVERALL = "overall"
Scope = Literal["between", "within"]


def loo_majority_agreement(choices: Sequence) -> float:
    """Levels rule: predict each response from the majority of the others and average the credit.

    Credit is 1 if the held-out choice is the sole majority, 1/k if it is one of k tied majority
    choices (a two-way tie gives the Levels ½), and 0 otherwise.
    """
    if len(choices) < 2:
        raise ValueError(f"leave-one-out agreement needs at least 2 responses, got {len(choices)}")
    counts = Counter(choices)
    credits = []
    for held_out in choices:
        counts[held_out] -= 1
        top = max(counts.values())
        majority = [choice for choice, count in counts.items() if count == top]
        credits.append(1 / len(majority) if held_out in majority else 0.0)
        counts[held_out] += 1
    return float(np.mean(credits))


def modal_consistency(choices: Sequence) -> float:
    """THINGS rule: the share of responses that agree with the most frequent choice."""
    if len(choices) == 0:
        raise ValueError("modal consistency needs at least one response")
    return max(Counter(choices).values()) / len(choices)


def bootstrap_mean_ci(
    values: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the values, e.g. triplets)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(n_boot, array.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _first_per_participant(judgments: pd.DataFrame) -> pd.DataFrame:
    """Each participant's first answer to each triplet (within-participant repeats are not other humans)."""
    ordered = judgments.sort_values(["participant_id", "trial_index"])
    return ordered.drop_duplicates(["participant_id", "triplet_key"], keep="first")


def _analysed(judgments: pd.DataFrame, kinds: Sequence[str]) -> pd.DataFrame:
    return judgments[judgments["kind"].isin(kinds)]


def _repeated(judgments: pd.DataFrame, unit: str | list[str], min_responses: int) -> pd.DataFrame:
    """Only the rows of units with at least `min_responses` rows: the per-unit Python that follows then
    visits the few repeated triplets, not the millions answered once (THINGS)."""
    sizes = judgments.groupby(unit, sort=False)["stim2"].transform("size")
    return judgments[sizes >= min_responses]


def levels_noise_ceiling(
    judgments: pd.DataFrame,
    *,
    min_responses: int = 4,
    max_responses: int = 5,
    kinds: Sequence[str] = CEILING_KINDS,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Leave-one-out majority agreement per level and overall, with bootstrap CIs over triplets.

    One response per participant and triplet; triplets with fewer than `min_responses` are dropped and
    those with more than `max_responses` subsampled to it (seeded), as in the Levels analysis.
    """
    rng = np.random.default_rng(seed)
    rows = []
    answers = _repeated(_first_per_participant(_analysed(judgments, kinds)), "triplet_key", min_responses)
    for key, group in answers.groupby("triplet_key", sort=True):
        choices = group["stim2"].to_numpy()
        if len(choices) > max_responses:
            choices = rng.choice(choices, size=max_responses, replace=False)
        rows.append(
            {
                "triplet_key": key,
                "level": group["level"].iloc[0],
                "n": len(choices),
                "score": loo_majority_agreement(choices.tolist()),
            }
        )
    return summarise_levels_ceiling(
        pd.DataFrame(rows, columns=["triplet_key", "level", "n", "score"]), n_boot, seed
    )


def summarise_levels_ceiling(per_triplet: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`levels_noise_ceiling`'s table from its per-triplet scores (`level`, `n`, `score`, in triplet-key
    order: the bootstrap resamples them in that order)."""
    return _summarise(
        per_triplet, "ceiling", lambda scores: bootstrap_mean_ci(scores, n_boot=n_boot, seed=seed)
    )


def things_modal_consistency(
    judgments: pd.DataFrame,
    *,
    scope: Scope = "between",
    min_responses: int = 2,
    kinds: Sequence[str] = CEILING_KINDS,
) -> pd.DataFrame:
    """Mean share of responses agreeing with each repeated triplet's modal choice, 95% CI = 1.96 SD/sqrt(n).

    `between`: one response per participant, units are triplets answered by >= `min_responses` people;
    `within`: units are (participant, triplet) pairs the same participant answered >= `min_responses` times.
    """
    if scope not in ("between", "within"):
        raise ValueError(f"scope must be 'between' or 'within', got {scope!r}")
    analysed = _analysed(judgments, kinds)
    if scope == "between":
        unit: str | list[str] = "triplet_key"
        analysed = _first_per_participant(analysed)
    else:
        unit = ["participant_id", "triplet_key"]
    units = _repeated(analysed, unit, min_responses).groupby(unit, sort=True)
    rows = [
        {
            "level": group["level"].iloc[0],
            "n": len(group),
            "score": modal_consistency(group["stim2"].tolist()),
        }
        for _, group in units
    ]
    return summarise_modal_consistency(pd.DataFrame(rows, columns=["level", "n", "score"]))


def summarise_modal_consistency(per_unit: pd.DataFrame) -> pd.DataFrame:
    """`things_modal_consistency`'s table from its per-unit scores (`level`, `n`, `score`)."""
    return _summarise(per_unit, "consistency", _normal_ci)


def _normal_ci(scores: np.ndarray) -> tuple[float, float]:
    if len(scores) < 2:
        return float("nan"), float("nan")
    half = 1.96 * np.std(scores, ddof=1) / np.sqrt(len(scores))
    return float(np.mean(scores) - half), float(np.mean(scores) + half)


def _summarise(per_unit: pd.DataFrame, name: str, interval) -> pd.DataFrame:
    """One row per level present (sorted) plus `overall`: n_triplets, n_responses, mean score and CI."""
    groups = [
        (str(level), part) for level, part in per_unit.dropna(subset=["level"]).groupby("level", sort=True)
    ]
    rows = []
    for level, part in [*groups, (OVERALL, per_unit)]:
        scores = part["score"].to_numpy(dtype=float)
        low, high = interval(scores)
        rows.append(
            {
                "level": level,
                "n_triplets": len(part),
                "n_responses": int(part["n"].sum()),
                name: float(scores.mean()) if len(scores) else float("nan"),
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(rows)


STATS_COLUMNS = [
    "triplet_key",
    "stim0",
    "stim1",
    "stim2",
    "level",
    "kind",
    "n_responses",
    "p01",
    "p02",
    "p12",
    "entropy",
    "median_rt_ms",
]
# for the odd one out at sorted position k (0, 1, 2): the other two positions, in ascending order
_OTHER_POSITIONS = np.array([[1, 2], [0, 2], [0, 1]])


_ID_BITS = 21  # three ids below 2**21 pack into one non-negative int64


def _id_order(items: np.ndarray) -> np.ndarray:
    """The stable order of rows [m, 3] by their ids, first column first: one int64 sort of the packed ids
    (several times faster than a three-key lexsort on millions of judgments) when they fit, else lexsort."""
    if len(items) and items.min() >= 0 and items.max() < 2**_ID_BITS:
        packed = (items[:, 0] << (2 * _ID_BITS)) | (items[:, 1] << _ID_BITS) | items[:, 2]
        return np.argsort(packed, kind="stable")
    return np.lexsort((items[:, 2], items[:, 1], items[:, 0]))


def _triplet_groups(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each judgment's triplet number, each triplet's first judgment), triplets numbered in the order of
    their ascending ids; `items` [m, 3] holds each judgment's ids sorted."""
    order = _id_order(items)  # stable: a group's first row comes first
    ordered_items = items[order]
    starts_group = np.ones(len(order), dtype=bool)
    starts_group[1:] = (ordered_items[1:] != ordered_items[:-1]).any(axis=1)
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.cumsum(starts_group) - 1
    return group, order[starts_group]


def _first_rows(column: pd.Series, rows: np.ndarray) -> pd.Series:
    """The column at the given positions, in its own dtype (string columns are not turned into millions of
    Python objects and back)."""
    return column.iloc[rows].reset_index(drop=True)


def triplet_human_stats(judgments: pd.DataFrame, *, min_responses: int = 1) -> pd.DataFrame:
    """Per triplet: the three ids with the modal odd one out last (ties: the lower id), the human choice
    distribution over the pairs `[p01, p02, p12]` in that order, choice entropy (nats), median RT;
    `level` and `kind` of the triplet's first row. Rows ordered by the triplet's sorted stimulus ids.

    Vectorised group-by on integer arrays (THINGS has millions of judgments): a triplet is its three ids
    in ascending order, each judgment says which of those three positions was the odd one out.
    """
    stims = judgments[["stim0", "stim1", "stim2"]].to_numpy(np.int64)
    items = np.sort(stims, axis=1)
    odd_position = (items == stims[:, 2:3]).argmax(axis=1)
    group, first_row = _triplet_groups(items)
    n_groups = len(first_row)
    counts = np.bincount(group * 3 + odd_position, minlength=3 * n_groups).reshape(n_groups, 3)
    n = counts.sum(axis=1)
    modal = counts.argmax(axis=1)  # the first maximum: ties go to the lower id (positions are id-sorted)
    others = _OTHER_POSITIONS[modal]
    rows = np.arange(n_groups)
    triplet_items = items[first_row]
    probs = (
        np.stack([counts[rows, modal], counts[rows, others[:, 1]], counts[rows, others[:, 0]]], axis=1)
        / n[:, None]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    median_rt = judgments["rt_ms"].astype(float).groupby(group).median().to_numpy()
    table = pd.DataFrame(
        {
            "triplet_key": _first_rows(judgments["triplet_key"], first_row),
            "stim0": triplet_items[rows, others[:, 0]],
            "stim1": triplet_items[rows, others[:, 1]],
            "stim2": triplet_items[rows, modal],
            "level": _first_rows(judgments["level"], first_row),
            "kind": _first_rows(judgments["kind"], first_row),
            "n_responses": n,
            "p01": probs[:, 0],
            "p02": probs[:, 1],
            "p12": probs[:, 2],
            "entropy": entropy + 0.0,  # -0.0 -> 0.0
            "median_rt_ms": median_rt,
        },
        columns=STATS_COLUMNS,
    )
    return table[n >= min_responses].reset_index(drop=True)
