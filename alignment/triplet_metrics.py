"""Evaluation of embeddings on human odd-one-out triplets (raw features, teacher, student alike).

``evaluate_triplets(embeddings, triplets, levels=..., human_rt=..., human_entropy=..., noise_ceiling=...,
similarity="dot"|"cosine", temperature=1.0, n_boot=1000, seed=0) -> EvalReport``; ``report.table()`` is a
pandas DataFrame with one row per Levels type and a final ``overall`` row: accuracy (ties count wrong),
noise-ceiling-normalised accuracy (acc - 1/3)/(ceiling - 1/3), ECE, and Spearman rho of the model's
choice entropy with human RT and with human choice entropy, each with a 95% bootstrap CI.

With ``groups`` (one key per judgment; the pipeline passes the triplet key) every distinct triplet counts
once: its score is the share of its judgments the model agrees with, its RT the median, and the bootstrap
resamples triplets. A triplet answered by 100 people is one observation, not 100 (and the noise ceiling is
per triplet too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from alignment.conventions import (
    HUMAN_PAIR,
    Similarity,
    anchor_similarities,
    check_triplets,
    correct_choices,
    entropy,
    pair_similarities,
    predicted_pair,
    triplet_probabilities,
)


def _ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    gaps = np.bincount(bins, weights=correct.astype(float), minlength=n_bins) - np.bincount(
        bins, weights=confidence, minlength=n_bins
    )
    return float(np.abs(gaps).sum() / len(confidence))


def expected_calibration_error(probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE over equal-width max-probability bins: sum_b (n_b / n) |accuracy_b - confidence_b|.

    A triplet is correct when pair (0, 1) is the unique most probable pair (ties are wrong).
    """
    probs = np.asarray(probs, dtype=np.float64)
    return _ece(probs.max(axis=1), predicted_pair(probs) == HUMAN_PAIR, n_bins)


CHANCE = 1.0 / 3.0


def normalised_accuracy(accuracy, noise_ceiling: float):
    """(acc - 1/3) / (ceiling - 1/3): 0 at chance, 1 at the human noise ceiling."""
    if not noise_ceiling > CHANCE:
        raise ValueError(f"noise ceiling must exceed chance (1/3); got {noise_ceiling}")
    return (np.asarray(accuracy) - CHANCE) / (noise_ceiling - CHANCE)


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    return float(_pearson_rows(_ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))))


def bootstrap_interval(samples: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the finite bootstrap samples."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def _spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int, rng) -> tuple[float, float, float]:
    """Spearman rho over the rows where both are finite, with a bootstrap CI (ranks redone per resample)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return float("nan"), float("nan"), float("nan")
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    chunks = np.array_split(idx, max(1, n_boot // 50))
    rhos = (
        np.concatenate([_pearson_rows(_ranks(x[c]), _ranks(y[c])) for c in chunks])
        if n_boot
        else np.array([])
    )
    return (spearman(x, y), *bootstrap_interval(rhos))


@dataclass(frozen=True)
class _Scores:
    """Per-triplet quantities every report row is computed from."""

    correct: np.ndarray
    confidence: np.ndarray
    model_entropy: np.ndarray
    human_rt: np.ndarray
    human_entropy: np.ndarray

    def subset(self, rows: np.ndarray) -> _Scores:
        return _Scores(*(getattr(self, f.name)[rows] for f in fields(self)))


def _collapse(scores: _Scores, groups: np.ndarray) -> _Scores:
    """One row per group: the share of its judgments the model agrees with, its mean confidence and entropy
    (the same for every ordering of one triplet), the median human RT and the human entropy."""
    _, codes = np.unique(groups.astype(str), return_inverse=True)
    frame = pd.DataFrame({f.name: getattr(scores, f.name) for f in fields(scores)}).astype(float)
    collapsed = frame.groupby(codes).agg(
        {
            "correct": "mean",
            "confidence": "mean",
            "model_entropy": "mean",
            "human_rt": "median",
            "human_entropy": "median",
        }
    )
    return _Scores(*(collapsed[f.name].to_numpy() for f in fields(scores)))


def _row(name: str, scores: _Scores, ceiling: float | None, n_boot: int, rng) -> tuple[dict, np.ndarray]:
    """The report row of one level (``scores`` one row per unit: judgment or group) and its bootstrap
    accuracy samples."""
    n = len(scores.correct)
    idx = rng.integers(0, n, size=(n_boot, n))
    acc_samples = scores.correct[idx].mean(axis=1)
    ece_samples = np.array([_ece(scores.confidence[i], scores.correct[i], 10) for i in idx])
    row = {"level": name, "n": n, "n_groups": n, "accuracy": float(scores.correct.mean())}
    row["accuracy_low"], row["accuracy_high"] = bootstrap_interval(acc_samples)
    row["noise_ceiling"] = float("nan") if ceiling is None else float(ceiling)
    if ceiling is None:
        row["normalised"] = row["normalised_low"] = row["normalised_high"] = float("nan")
    else:
        row["normalised"] = float(normalised_accuracy(row["accuracy"], ceiling))
        row["normalised_low"], row["normalised_high"] = bootstrap_interval(
            normalised_accuracy(acc_samples, ceiling)
        )
    row["ece"] = _ece(scores.confidence, scores.correct, 10)
    row["ece_low"], row["ece_high"] = bootstrap_interval(ece_samples)
    row["mean_model_entropy"] = float(scores.model_entropy.mean())
    for label, human in (("rt", scores.human_rt), ("human_entropy", scores.human_entropy)):
        rho, low, high = _spearman_ci(scores.model_entropy, human, n_boot, rng)
        row[f"rho_entropy_{label}"], row[f"rho_entropy_{label}_low"], row[f"rho_entropy_{label}_high"] = (
            rho,
            low,
            high,
        )
    return row, acc_samples


@dataclass(frozen=True)
class EvalReport:
    """Rows per Levels type plus ``overall``; accuracies count ties as wrong, CIs are 95% bootstrap.

    ``accuracy_samples`` (per level) are the bootstrap accuracies; reports made with the same triplets,
    levels, groups, n_boot and seed share their resamples, so differences between models are paired."""

    rows: tuple[dict, ...]
    similarity: str
    temperature: float
    n_boot: int
    clustered: bool = False
    accuracy_samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def table(self):
        """pandas DataFrame, one row per level and a final ``overall`` row; states the similarity used."""
        import pandas as pd

        frame = pd.DataFrame(list(self.rows))
        frame.insert(1, "similarity", self.similarity)
        return frame

    def describe(self) -> str:
        return (
            f"odd-one-out accuracy with {self.similarity} similarity (ties count wrong), model entropy at "
            f"temperature {self.temperature:g}, 95% bootstrap CIs over "
            f"{'distinct triplets, each weighted once' if self.clustered else 'judgments'} "
            f"(n_boot={self.n_boot})"
        )

    @property
    def overall(self) -> dict:
        return self.rows[-1]


def _per_triplet(values, m: int, name: str, dtype=np.float64) -> np.ndarray:
    """One value per judged triplet (NaN for all when not given)."""
    if values is None:
        return np.full(m, np.nan)
    array = np.asarray(values, dtype=dtype)
    if array.shape != (m,):
        raise ValueError(f"{name} must have one value per triplet ({m}); got shape {array.shape}")
    return array


def _ceiling_for(noise_ceiling, name: str) -> float | None:
    if noise_ceiling is None or isinstance(noise_ceiling, int | float):
        return noise_ceiling
    return noise_ceiling.get(name)


def _scores(
    sims: np.ndarray, temperature: float, human_rt: ArrayLike | None, human_entropy: ArrayLike | None
) -> _Scores:
    """Per triplet: whether the model agrees with the human, its confidence and choice entropy at
    `temperature`, and the human RT and entropy (NaN = unknown)."""
    probs = triplet_probabilities(sims, temperature)
    m = len(sims)
    return _Scores(
        correct_choices(sims),
        probs.max(axis=1),
        entropy(probs),
        _per_triplet(human_rt, m, "human_rt"),
        _per_triplet(human_entropy, m, "human_entropy"),
    )


def _level_subsets(levels: Sequence[str] | None, m: int) -> list[tuple[str, np.ndarray]]:
    """(name, mask) of each level in name order, then `overall` (every triplet). A triplet without a level
    (None or NaN, e.g. a catch trial) counts only in `overall`."""
    subsets = [("overall", np.ones(m, dtype=bool))]
    if levels is None:
        return subsets
    level_array = _per_triplet(levels, m, "levels", object)
    names = sorted({name for name in level_array.tolist() if isinstance(name, str)})
    return [(name, level_array == name) for name in names] + subsets


def evaluate_triplets(
    embeddings: np.ndarray,
    triplets: np.ndarray,
    *,
    levels: Sequence[str] | None = None,
    human_rt: ArrayLike | None = None,
    human_entropy: ArrayLike | None = None,
    noise_ceiling: float | Mapping[str, float] | None = None,
    similarity: Similarity = "dot",
    temperature: float = 1.0,
    groups: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    task: str = "odd_one_out",
) -> EvalReport:
    """Evaluate an embedding [n, D] on human triplets [m, 3] (row indices, the human's odd one out last), or
    with ``task="anchor"`` on anchor rows (head, close, far): agreement = share with s(head, close) >
    s(head, far), chance 1/2, no noise ceiling.

    Works for raw features, teacher-transformed features and student embeddings alike. ``levels`` names
    each triplet's type (Levels: between_class / within_class / class_border); ``human_rt`` and
    ``human_entropy`` (NaN = unknown) are correlated (Spearman) with the model's choice entropy;
    ``noise_ceiling`` (one value, or one per level name and ``"overall"``) gives (acc - 1/3)/(ceiling - 1/3);
    ``groups`` (one key per judgment, e.g. the triplet key): every group counts once (see the module
    docstring).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    anchor = task == "anchor"
    triplets = check_triplets(triplets, len(embeddings), "anchor" if anchor else "triplet")
    m = len(triplets)
    if m == 0:
        raise ValueError("no triplets to evaluate")
    sims = (anchor_similarities if anchor else pair_similarities)(embeddings, triplets, similarity)
    scores = _scores(sims, temperature, human_rt, human_entropy)
    group_array = None if groups is None else _per_triplet(groups, m, "groups", object)
    rng = np.random.default_rng(seed)
    rows, samples = [], {}
    for name, mask in _level_subsets(levels, m):
        subset = scores.subset(mask)
        units = subset if group_array is None else _collapse(subset, group_array[mask])
        row, samples[name] = _row(name, units, _ceiling_for(noise_ceiling, name), n_boot, rng)
        row["n"] = int(mask.sum())
        row["n_images"] = int(np.unique(triplets[mask]).size)
        rows.append(row)
    return EvalReport(tuple(rows), similarity, temperature, n_boot, group_array is not None, samples)
