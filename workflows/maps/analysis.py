"""One before/after analysis of two runs, shared by the maps page and `alignlab map`: the 2-D maps,
neighbourhood change, cluster quality, RSA against human judgments and model entropy vs human RT.

The 2-D maps (the slow part: UMAP) and the rest are computed by separate functions, so the page can
cache them separately and a change of k never recomputes a map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alignment.maps import PairedMaps
from alignment.neighbours import NEIGHBOUR_POOL, Neighbours, nearest_neighbours
from alignment.reorganisation import (
    EntropyVsRt,
    Reorganisation,
    RsaResult,
    category_mean_similarity,
    entropy_vs_rt,
    judged_pairs,
    pair_cosine,
    pair_group_means,
    reorganisation,
    spearman_rsa,
)
from workflows.maps.data import HumanJudgments, MapInputs

N_NEIGHBOURS_SHOWN = 5


@dataclass(frozen=True)
class RsaComparison:
    """RSA of both representations against the human-derived similarity, on the judged images."""

    n_images: int
    before: RsaResult
    after: RsaResult
    categories: list[str]
    category_before: np.ndarray  # [c, c] mean cosine similarity between categories
    category_after: np.ndarray
    category_human: np.ndarray  # [c, c] mean human "kept together" rate


@dataclass(frozen=True)
class HumanComparison:
    study_slug: str
    n_judgments: int
    rsa: RsaComparison
    entropy_before: EntropyVsRt
    entropy_after: EntropyVsRt


def representation_neighbours(
    inputs: MapInputs, k: int = NEIGHBOUR_POOL, cache_dir: Path | None = None
) -> tuple[Neighbours, Neighbours]:
    """Each image's nearest neighbours before and after (at least `NEIGHBOUR_POOL`, so every k up to it and
    UMAP reuse them; exact or approximate by size, see alignment.neighbours), kept on disk in `cache_dir`."""
    pool = min(max(k, NEIGHBOUR_POOL), len(inputs.stimuli) - 1)
    return (
        nearest_neighbours(inputs.before.embeddings, pool, cache_dir=cache_dir),
        nearest_neighbours(inputs.after.embeddings, pool, cache_dir=cache_dir),
    )


def analyse_reorganisation(
    inputs: MapInputs, k: int = 10, neighbours: tuple[Neighbours, Neighbours] | None = None
) -> Reorganisation:
    levels = {level: inputs.stimuli[level].to_numpy() for level in ("category", "superordinate")}
    return reorganisation(
        inputs.before.embeddings, inputs.after.embeddings, levels, k=k, neighbours=neighbours
    )


def compare_with_humans(inputs: MapInputs, judgments: HumanJudgments) -> HumanComparison:
    """RSA over the judged pairs and category means on the judged images, and entropy vs RT per judgment,
    before and after (linear in images and judgments: see alignment.reorganisation)."""
    judged = np.unique(judgments.triplets)
    local = np.searchsorted(judged, judgments.triplets)  # triplets as rows of the judged subset
    pairs = judged_pairs(local, len(judged))
    before, after = inputs.before.embeddings[judged], inputs.after.embeddings[judged]
    categories = inputs.stimuli["category"].to_numpy()[judged]
    names, category_before = category_mean_similarity(before, categories)
    human = pairs.similarity
    rsa = RsaComparison(
        len(judged),
        spearman_rsa(pair_cosine(before, pairs.first, pairs.second), human),
        spearman_rsa(pair_cosine(after, pairs.first, pairs.second), human),
        names,
        category_before,
        category_mean_similarity(after, categories)[1],
        pair_group_means(pairs, human, categories)[1],
    )
    return HumanComparison(
        judgments.study_slug,
        len(judgments.triplets),
        rsa,
        entropy_vs_rt(inputs.before.embeddings, judgments.triplets, judgments.rt_ms),
        entropy_vs_rt(inputs.after.embeddings, judgments.triplets, judgments.rt_ms),
    )


def points_table(inputs: MapInputs, maps: PairedMaps, reorg: Reorganisation) -> pd.DataFrame:
    """One row per image: labels, both map positions, movement, and its nearest neighbours' names."""
    names = inputs.stimuli["name"].to_numpy()
    shown = min(N_NEIGHBOURS_SHOWN, reorg.k)
    table = inputs.stimuli[["id", "name", "category", "superordinate"]].copy()
    table["x_before"], table["y_before"] = maps.before[:, 0], maps.before[:, 1]
    table["x_after"], table["y_after"] = maps.after[:, 0], maps.after[:, 1]
    table["map_displacement"] = maps.displacement
    table["knn_overlap"] = reorg.overlap
    table["neighbours_before"] = [", ".join(names[row[:shown]]) for row in reorg.neighbours_before]
    table["neighbours_after"] = [", ".join(names[row[:shown]]) for row in reorg.neighbours_after]
    return table


def moved_most_table(points: pd.DataFrame, reorg: Reorganisation, n: int = 20) -> pd.DataFrame:
    """The n images whose neighbourhoods changed most (lowest kNN overlap), most changed first."""
    return points.iloc[reorg.moved_most(n)]


def summary_rows(reorg: Reorganisation, humans: HumanComparison | None) -> list[dict[str, object]]:
    """The numbers a report leads with, as (measure, before, after, after 95% CI) rows. Silhouettes and
    category means are exact; kNN measures carry a CI over images, RSA a Fisher-z CI over pairs."""
    rows: list[dict[str, object]] = []
    for r in reorg.quality_table():
        level, metric = str(r["level"]), str(r["metric"])
        ci = getattr(reorg.quality_after[level], f"{metric}_ci", None)
        rows.append(
            {
                "measure": f"{level} {metric.replace('_', ' ')}",
                "before": r["before"],
                "after": r["after"],
                "after 95% CI": _ci_text(ci) if ci else "exact",
            }
        )
    rows.append(
        {
            "measure": f"mean kNN overlap (k={reorg.k})",
            "before": 1.0,
            "after": reorg.mean_overlap,
            "after 95% CI": _ci_text(reorg.mean_overlap_ci),
        }
    )
    if min(reorg.recall) < 1.0:
        rows.append(
            {
                "measure": "neighbour recall (approximate index, sampled)",
                "before": reorg.recall[0],
                "after": reorg.recall[1],
                "after 95% CI": "",
            }
        )
    if humans:
        rows.append(
            {
                "measure": f"Spearman RSA vs humans ({humans.rsa.before.n_pairs} pairs)",
                "before": humans.rsa.before.rho,
                "after": humans.rsa.after.rho,
                "after 95% CI": _ci_text(humans.rsa.after.ci),
            }
        )
        rows.append(
            {
                "measure": f"Spearman ρ entropy vs RT ({humans.n_judgments} judgments)",
                "before": humans.entropy_before.rho,
                "after": humans.entropy_after.rho,
                "after 95% CI": "",
            }
        )
    return rows


def _ci_text(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
