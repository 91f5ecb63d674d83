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
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _first_per_participant(judgments: pd.DataFrame) -> pd.DataFrame:
    """Each participant's first answer to each triplet (within-participant repeats are not other humans)."""
    ordered = judgments.sort_values(["participant_id", "trial_index"])
    return ordered.drop_duplicates(["participant_id", "triplet_key"], keep="first")


def _analysed(judgments: pd.DataFrame, kinds: Sequence[str]) -> pd.DataFrame:
    return judgments[judgments["kind"].isin(kinds)]


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
    answers = _first_per_participant(_analysed(judgments, kinds))
    for key, group in answers.groupby("triplet_key", sort=True):
        if len(group) < min_responses:
            continue
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
    return _summarise(
        pd.DataFrame(rows, columns=["triplet_key", "level", "n", "score"]),
        "ceiling",
        lambda scores: bootstrap_mean_ci(scores, n_boot=n_boot, seed=seed),
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
        units = _first_per_participant(analysed).groupby("triplet_key", sort=True)
    else:
        units = analysed.groupby(["participant_id", "triplet_key"], sort=True)
    rows = [
        {
            "level": group["level"].iloc[0],
            "n": len(group),
            "score": modal_consistency(group["stim2"].tolist()),
        }
        for _, group in units
        if len(group) >= min_responses
    ]
    return _summarise(pd.DataFrame(rows, columns=["level", "n", "score"]), "consistency", _normal_ci)


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


def triplet_human_stats(judgments: pd.DataFrame, *, min_responses: int = 1) -> pd.DataFrame:
    """Per triplet: the three ids with the modal odd one out last (ties: the lower id), the human choice
    distribution over the pairs `[p01, p02, p12]` in that order, choice entropy (nats), median RT."""
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
    columns = [
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
    return pd.DataFrame(rows, columns=columns)
