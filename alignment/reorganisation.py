"""How a representation reorganised: neighbourhoods, cluster quality at two label levels, RSA, entropy vs RT.

All functions take plain arrays: embeddings [n, D] (rows = images, same order before and after),
label arrays [n], triplets [m, 3] of row indices with the human odd one out LAST (alignment.conventions),
and response times [m]. Similarity is cosine throughout, so a global rotation or rescaling of an
embedding changes nothing here (an identity reorganisation reads as zero change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

from alignment.conventions import check_triplets, entropy, pair_similarities, triplet_probabilities
from alignment.maps import check_embeddings, normalise_rows

LEVELS: tuple[str, ...] = ("category", "superordinate")


@dataclass(frozen=True)
class ClusterQuality:
    """Silhouette (cosine, in [-1, 1]) and kNN purity (share of k neighbours with the same label)."""

    silhouette: float
    knn_purity: float


@dataclass(frozen=True)
class Reorganisation:
    """Before/after comparison of the same n images."""

    k: int
    overlap: np.ndarray  # [n] share of each image's k nearest neighbours kept after alignment
    neighbours_before: np.ndarray  # [n, k] row indices, nearest first
    neighbours_after: np.ndarray  # [n, k]
    quality_before: dict[str, ClusterQuality]  # level -> quality
    quality_after: dict[str, ClusterQuality]

    @property
    def mean_overlap(self) -> float:
        return float(self.overlap.mean())

    def moved_most(self, n: int = 20) -> np.ndarray:
        """Row indices of the n images whose neighbourhoods changed most (lowest overlap; stable order)."""
        return np.argsort(self.overlap, kind="stable")[:n]

    def quality_table(self) -> list[dict[str, float | str]]:
        """Rows (level, metric, before, after, change) for printing or a DataFrame."""
        rows = []
        for level in self.quality_before:
            for metric in ("silhouette", "knn_purity"):
                before = getattr(self.quality_before[level], metric)
                after = getattr(self.quality_after[level], metric)
                rows.append(
                    {
                        "level": level,
                        "metric": metric,
                        "before": before,
                        "after": after,
                        "change": after - before,
                    }
                )
        return rows


@dataclass(frozen=True)
class RsaResult:
    rho: float  # Spearman correlation of the model and human similarities over the pairs both define
    n_pairs: int


@dataclass(frozen=True)
class EntropyVsRt:
    """Per judgment: the model's odd-one-out entropy (nats) and the human response time."""

    entropy: np.ndarray
    rt_ms: np.ndarray
    rho: float  # Spearman; positive = the model is unsure where humans are slow


def knn_indices(embeddings, k: int) -> np.ndarray:
    """[n, k] indices of each row's k nearest other rows by cosine similarity (self excluded)."""
    x = normalise_rows(check_embeddings(embeddings))
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be between 1 and n_images - 1 = {x.shape[0] - 1}; got {k}")
    finder = NearestNeighbors(n_neighbors=k + 1, metric="euclidean", algorithm="brute").fit(x)
    neighbours = finder.kneighbors(x, return_distance=False)
    return _drop_self(neighbours, k)


def _drop_self(neighbours: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index (usually first; anywhere if duplicates tie) and keep k columns."""
    rows = np.arange(len(neighbours))[:, None]
    not_self = neighbours != rows
    keep = np.where(not_self.all(axis=1, keepdims=True), np.arange(k + 1) < k, not_self)
    return neighbours[keep].reshape(len(neighbours), k)


def neighbourhood_overlap(neighbours_before: np.ndarray, neighbours_after: np.ndarray) -> np.ndarray:
    """[n] |N_before(i) ∩ N_after(i)| / k: 1 = same neighbours, 0 = all new."""
    k = neighbours_before.shape[1]
    return np.array(
        [len(np.intersect1d(b, a)) / k for b, a in zip(neighbours_before, neighbours_after, strict=True)]
    )


def knn_purity_per_image(neighbours: np.ndarray, labels) -> np.ndarray:
    """[n] share of each image's neighbours that carry its own label."""
    labels = np.asarray(labels)
    return (labels[neighbours] == labels[:, None]).mean(axis=1)


def knn_purity(neighbours: np.ndarray, labels) -> float:
    """Mean over images of the share of neighbours that carry the image's own label."""
    return float(knn_purity_per_image(neighbours, labels).mean())


def cosine_distances(embeddings) -> np.ndarray:
    """[n, n] float32 cosine distances (zero diagonal), computed once and shared by every label level."""
    x = normalise_rows(check_embeddings(embeddings)).astype(np.float32)
    distances = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def cosine_silhouette(distances: np.ndarray, labels) -> float:
    """Silhouette from cosine distances; NaN when there are fewer than 2 labels or no label repeats."""
    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(labels) - 1:
        return float("nan")
    return float(silhouette_score(distances, labels, metric="precomputed"))


def cluster_quality(
    embeddings, neighbours: np.ndarray, labels_by_level: dict[str, np.ndarray]
) -> dict[str, ClusterQuality]:
    distances = cosine_distances(embeddings)
    return {
        level: ClusterQuality(cosine_silhouette(distances, labels), knn_purity(neighbours, labels))
        for level, labels in labels_by_level.items()
    }


def reorganisation(before, after, labels_by_level: dict[str, np.ndarray], k: int = 10) -> Reorganisation:
    """Neighbourhood overlap per image and cluster quality at each label level, before vs after."""
    before, after = check_embeddings(before, "embeddings_before"), check_embeddings(after, "embeddings_after")
    n = before.shape[0]
    if after.shape[0] != n:
        raise ValueError(f"before and after must hold the same images; got {n} and {after.shape[0]} rows")
    for level, labels in labels_by_level.items():
        if len(labels) != n:
            raise ValueError(f"{level} labels: expected {n} (one per image); got {len(labels)}")
    k = min(k, n - 1)
    nb_before, nb_after = knn_indices(before, k), knn_indices(after, k)
    return Reorganisation(
        k,
        neighbourhood_overlap(nb_before, nb_after),
        nb_before,
        nb_after,
        cluster_quality(before, nb_before, labels_by_level),
        cluster_quality(after, nb_after, labels_by_level),
    )


def similarity_matrix(embeddings) -> np.ndarray:
    """[n, n] cosine similarity matrix (the model's representational similarity matrix)."""
    x = normalise_rows(check_embeddings(embeddings))
    return x @ x.T


def human_similarity_from_triplets(triplets, n_items: int) -> np.ndarray:
    """[n, n] share of the triplets containing pair (i, j) in which the third item was the odd one out.

    Pairs never shown together are NaN (unknown, not dissimilar); the diagonal is NaN.
    """
    triplets = check_triplets(triplets, n_items)
    chosen, shown = np.zeros((n_items, n_items)), np.zeros((n_items, n_items))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        np.add.at(shown, (triplets[:, a], triplets[:, b]), 1)
    np.add.at(chosen, (triplets[:, 0], triplets[:, 1]), 1)  # odd one out last: (0, 1) was kept together
    shown, chosen = shown + shown.T, chosen + chosen.T
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = chosen / shown
    similarity[shown == 0] = np.nan
    np.fill_diagonal(similarity, np.nan)
    return similarity


def spearman_rsa(model_similarity: np.ndarray, human_similarity: np.ndarray) -> RsaResult:
    """Spearman ρ between the upper triangles, over the pairs where the human matrix is defined."""
    model_similarity, human_similarity = np.asarray(model_similarity), np.asarray(human_similarity)
    if (
        model_similarity.shape != human_similarity.shape
        or model_similarity.shape[0] != model_similarity.shape[1]
    ):
        raise ValueError(
            f"RSA needs two square matrices of the same shape; got {model_similarity.shape} and "
            f"{human_similarity.shape}"
        )
    upper = np.triu_indices(model_similarity.shape[0], k=1)
    model, human = model_similarity[upper], human_similarity[upper]
    known = np.isfinite(model) & np.isfinite(human)
    if known.sum() < 3:
        return RsaResult(float("nan"), int(known.sum()))
    return RsaResult(float(spearmanr(model[known], human[known]).statistic), int(known.sum()))


def group_mean_matrix(matrix: np.ndarray, labels) -> tuple[list[str], np.ndarray]:
    """Average an [n, n] matrix over label blocks (NaN-aware; diagonal entries of the matrix ignored)."""
    labels = np.asarray(labels)
    names = sorted(set(labels.tolist()))
    masked = np.array(matrix, dtype=float)
    np.fill_diagonal(masked, np.nan)
    groups = [labels == name for name in names]
    out = np.full((len(names), len(names)), np.nan)
    for i, rows in enumerate(groups):
        for j, cols in enumerate(groups):
            block = masked[np.ix_(rows, cols)]
            if np.isfinite(block).any():
                out[i, j] = np.nanmean(block)
    return names, out


def entropy_vs_rt(embeddings, triplets, rt_ms, temperature: float = 0.1) -> EntropyVsRt:
    """Model entropy of each judged triplet (softmax of cosine pair similarities / T) against its RT."""
    x = check_embeddings(embeddings)
    triplets = check_triplets(triplets, x.shape[0])
    rt_ms = np.asarray(rt_ms, dtype=float)
    if rt_ms.shape != (len(triplets),):
        raise ValueError(
            f"rt_ms must hold one response time per triplet ({len(triplets)}); got shape {rt_ms.shape}"
        )
    keep = np.isfinite(rt_ms)
    model_entropy = entropy(
        triplet_probabilities(pair_similarities(x, triplets[keep], "cosine"), temperature)
    )
    rho = float(spearmanr(model_entropy, rt_ms[keep]).statistic) if keep.sum() >= 3 else float("nan")
    return EntropyVsRt(model_entropy, rt_ms[keep], rho)
