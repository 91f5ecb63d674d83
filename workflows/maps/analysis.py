"""One before/after analysis of two runs, shared by the maps page and `alignlab map`: the 2-D maps,
neighbourhood change, cluster quality, RSA against human judgments and model entropy vs human RT.

The 2-D maps (the slow part: UMAP) and the rest are computed by separate functions, so the page can
cache them separately and a change of k never recomputes a map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from alignment.maps import PairedMaps
from alignment.reorganisation import (
    EntropyVsRt,
    Reorganisation,
    RsaResult,
    entropy_vs_rt,
    group_mean_matrix,
    human_similarity_from_triplets,
    reorganisation,
    similarity_matrix,
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


def analyse_reorganisation(inputs: MapInputs, k: int = 10) -> Reorganisation:
    levels = {level: inputs.stimuli[level].to_numpy() for level in ("category", "superordinate")}
    return reorganisation(inputs.before.embeddings, inputs.after.embeddings, levels, k=k)


def compare_with_humans(inputs: MapInputs, judgments: HumanJudgments) -> HumanComparison:
    """RSA on the images that occur in judgments, and entropy vs RT per judgment, before and after."""
    judged = np.unique(judgments.triplets)
    local = np.searchsorted(judged, judgments.triplets)  # triplets as rows of the judged subset
    human = human_similarity_from_triplets(local, len(judged))
    before, after = inputs.before.embeddings[judged], inputs.after.embeddings[judged]
    categories = inputs.stimuli["category"].to_numpy()[judged]
    sim_before, sim_after = similarity_matrix(before), similarity_matrix(after)
    names, category_before = group_mean_matrix(sim_before, categories)
    rsa = RsaComparison(
        len(judged),
        spearman_rsa(sim_before, human),
        spearman_rsa(sim_after, human),
        names,
        category_before,
        group_mean_matrix(sim_after, categories)[1],
        group_mean_matrix(human, categories)[1],
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
    """The numbers a report leads with, as (measure, before, after) rows."""
    rows: list[dict[str, object]] = [
        {
            "measure": f"{r['level']} {str(r['metric']).replace('_', ' ')}",
            "before": r["before"],
            "after": r["after"],
        }
        for r in reorg.quality_table()
    ]
    rows.append({"measure": f"mean kNN overlap (k={reorg.k})", "before": 1.0, "after": reorg.mean_overlap})
    if humans:
        rows.append(
            {
                "measure": f"Spearman RSA vs humans ({humans.rsa.before.n_pairs} pairs)",
                "before": humans.rsa.before.rho,
                "after": humans.rsa.after.rho,
            }
        )
        rows.append(
            {
                "measure": f"Spearman ρ entropy vs RT ({humans.n_judgments} judgments)",
                "before": humans.entropy_before.rho,
                "after": humans.entropy_after.rho,
            }
        )
    return rows
