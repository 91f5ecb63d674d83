"""How a representation reorganised: neighbourhoods, cluster quality at two label levels, RSA, entropy vs RT.

All functions take plain arrays: embeddings [n, D] (rows = images, same order before and after),
label arrays [n], triplets [m, 3] of row indices with the human odd one out LAST (alignment.conventions),
and response times [m]. Similarity is cosine throughout, so a global rotation or rescaling of an
embedding changes nothing here (an identity reorganisation reads as zero change).

Nothing here builds an n x n array, so 50,000 images fit in memory: neighbours come from
alignment.neighbours (exact for small sets, an approximate index with a stated recall above), the
silhouette and category means are computed exactly from per-label sums (cosine is linear in each
image), and RSA uses only the pairs people judged, which are all the pairs the human similarity defines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignment.conventions import check_triplets, entropy, pair_similarities, triplet_probabilities
from alignment.maps import check_embeddings
from alignment.neighbours import BLOCK_ROWS, Neighbours, mean_ci, nearest_neighbours, unit_rows_float32

LEVELS: tuple[str, ...] = ("category", "superordinate")


@dataclass(frozen=True)
class ClusterQuality:
    """Silhouette (cosine, in [-1, 1]) and kNN purity (share of k neighbours with the same label; 95% CI
    over images)."""

    silhouette: float
    knn_purity: float
    knn_purity_ci: tuple[float, float] = (float("nan"), float("nan"))


@dataclass(frozen=True)
class Reorganisation:
    """Before/after comparison of the same n images."""

    k: int
    overlap: np.ndarray  # [n] share of each image's k nearest neighbours kept after alignment
    neighbours_before: np.ndarray  # [n, k] row indices, nearest first
    neighbours_after: np.ndarray  # [n, k]
    quality_before: dict[str, ClusterQuality]  # level -> quality
    quality_after: dict[str, ClusterQuality]
    recall: tuple[float, float] = (1.0, 1.0)  # estimated neighbour recall before/after (1.0: exact search)
    neighbour_error: tuple[float, float] = (0.0, 0.0)  # most neighbours wrong, before/after (see below)

    @property
    def mean_overlap(self) -> float:
        return float(self.overlap.mean())

    @property
    def mean_overlap_ci(self) -> tuple[float, float]:
        """95% CI of the mean overlap: over images, widened by the neighbour error of both searches."""
        return widened(mean_ci(self.overlap)[1], sum(self.neighbour_error))

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
    ci: tuple[float, float] = (float("nan"), float("nan"))  # 95%, Fisher z


@dataclass(frozen=True)
class EntropyVsRt:
    """Per judgment: the model's odd-one-out entropy (nats) and the human response time."""

    entropy: np.ndarray
    rt_ms: np.ndarray
    rho: float  # Spearman; positive = the model is unsure where humans are slow


def knn_indices(embeddings, k: int, *, exact: bool | None = None) -> np.ndarray:
    """[n, k] indices of each row's k nearest other rows by cosine similarity (self excluded); exact up to
    ``alignment.neighbours.EXACT_MAX_IMAGES`` rows, approximate above (see that module)."""
    return nearest_neighbours(check_embeddings(embeddings), k, exact=exact).indices


def neighbourhood_overlap(neighbours_before: np.ndarray, neighbours_after: np.ndarray) -> np.ndarray:
    """[n] |N_before(i) ∩ N_after(i)| / k: 1 = same neighbours, 0 = all new (rows hold distinct indices)."""
    k = neighbours_before.shape[1]
    both = np.sort(np.concatenate([neighbours_before, neighbours_after], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / k


def knn_purity_per_image(neighbours: np.ndarray, labels) -> np.ndarray:
    """[n] share of each image's neighbours that carry its own label."""
    labels = np.asarray(labels)
    return (labels[neighbours] == labels[:, None]).mean(axis=1)


def knn_purity(neighbours: np.ndarray, labels) -> float:
    """Mean over images of the share of neighbours that carry the image's own label."""
    return float(knn_purity_per_image(neighbours, labels).mean())


def label_codes(labels) -> tuple[list[str], np.ndarray]:
    """(sorted distinct labels as strings, [n] index of each row's label in that list)."""
    labels = np.asarray(labels).astype(str)
    names, codes = np.unique(labels, return_inverse=True)
    return names.tolist(), codes


def cosine_silhouette(embeddings, labels) -> float:
    """Mean silhouette with cosine distance, exactly as from the n x n distance matrix (scikit-learn's
    convention: 0 for an image alone in its label) but in O(n x labels x D) time and memory.

    Cosine distance is 1 - x_i . x_j on unit rows, which is linear in x_j, so an image's mean distance
    to a label is 1 - x_i . (sum of that label's rows) / its count, less the image itself for its own
    label. NaN when there are fewer than 2 labels or no label repeats.
    """
    names, codes = label_codes(labels)
    n = len(codes)
    if not 2 <= len(names) <= n - 1:
        return float("nan")
    x = unit_rows_float32(embeddings)
    counts = np.bincount(codes, minlength=len(names)).astype(float)
    sums = np.zeros((len(names), x.shape[1]))
    np.add.at(sums, codes, x)
    scores = np.empty(n)
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        block, own = x[rows].astype(float), codes[rows]
        mean_distance = 1.0 - (block @ sums.T) / counts
        own_count = counts[own]
        self_sim = (block * block).sum(axis=1)
        own_sum = (block * sums[own]).sum(axis=1) - self_sim
        within = 1.0 - own_sum / np.maximum(own_count - 1, 1)
        mean_distance[np.arange(len(own)), own] = np.inf
        between = mean_distance.min(axis=1)
        score = (between - within) / np.maximum(np.maximum(within, between), 1e-12)
        scores[rows] = np.where(own_count > 1, score, 0.0)
    return float(scores.mean())


def neighbour_error(found: Neighbours) -> float:
    """The largest share of an approximate search's neighbours that may be wrong (1 - the lower 95% bound
    of its sampled recall; 0 for an exact search).

    A measure averaging a per-image share over an image's k neighbours (kNN purity) moves by at most the
    share of its neighbours that differ from the true ones, so its mean moves by at most this much; kNN
    overlap compares two searches and moves by at most the sum of theirs. Their CIs are widened by it: the
    sampling CI says how precisely the mean over these images is known, this bound what the index may add.
    """
    return 0.0 if found.exact else max(0.0, 1.0 - found.recall_ci[0])


def widened(ci: tuple[float, float], by: float) -> tuple[float, float]:
    """A CI of a share, widened on both sides and kept within [0, 1]."""
    return (max(ci[0] - by, 0.0), min(ci[1] + by, 1.0))


def cluster_quality(
    embeddings, neighbours: np.ndarray, labels_by_level: dict[str, np.ndarray], error: float = 0.0
) -> dict[str, ClusterQuality]:
    """Silhouette (exact) and kNN purity with its CI (over images, widened by the neighbour ``error``)."""
    quality = {}
    for level, labels in labels_by_level.items():
        purity, purity_ci = mean_ci(knn_purity_per_image(neighbours, labels))
        quality[level] = ClusterQuality(
            cosine_silhouette(embeddings, labels), purity, widened(purity_ci, error)
        )
    return quality


def reorganisation(
    before,
    after,
    labels_by_level: dict[str, np.ndarray],
    k: int = 10,
    *,
    neighbours: tuple[Neighbours, Neighbours] | None = None,
) -> Reorganisation:
    """Neighbourhood overlap per image and cluster quality at each label level, before vs after.

    ``neighbours`` (before, after), when given, are used instead of searching again (their first k
    columns; see alignment.neighbours).
    """
    before, after = check_embeddings(before, "embeddings_before"), check_embeddings(after, "embeddings_after")
    n = before.shape[0]
    if after.shape[0] != n:
        raise ValueError(f"before and after must hold the same images; got {n} and {after.shape[0]} rows")
    for level, labels in labels_by_level.items():
        if len(labels) != n:
            raise ValueError(f"{level} labels: expected {n} (one per image); got {len(labels)}")
    k = min(k, n - 1)
    found_before, found_after = neighbours or (nearest_neighbours(before, k), nearest_neighbours(after, k))
    nb_before, nb_after = found_before.first(k), found_after.first(k)
    error = (neighbour_error(found_before), neighbour_error(found_after))
    return Reorganisation(
        k,
        neighbourhood_overlap(nb_before, nb_after),
        nb_before,
        nb_after,
        cluster_quality(before, nb_before, labels_by_level, error[0]),
        cluster_quality(after, nb_after, labels_by_level, error[1]),
        (found_before.recall, found_after.recall),
        error,
    )


@dataclass(frozen=True)
class JudgedPairs:
    """Every pair of images shown together in some triplet (first < second), and how often it was kept
    together (the third image chosen as odd one out). Pairs never shown together are absent: unknown,
    not dissimilar."""

    first: np.ndarray  # [p]
    second: np.ndarray  # [p]
    kept: np.ndarray  # [p]
    shown: np.ndarray  # [p]

    @property
    def similarity(self) -> np.ndarray:
        """[p] share of the pair's triplets in which it was kept together (the human similarity)."""
        return self.kept / self.shown


def judged_pairs(triplets, n_items: int) -> JudgedPairs:
    """The human similarity of every judged pair, in O(m log m) for m triplets (odd one out last)."""
    triplets = check_triplets(triplets, n_items)
    firsts, seconds, kept = [], [], []
    for a, b in ((0, 1), (0, 2), (1, 2)):
        firsts.append(np.minimum(triplets[:, a], triplets[:, b]))
        seconds.append(np.maximum(triplets[:, a], triplets[:, b]))
        kept.append(np.full(len(triplets), (a, b) == (0, 1)))
    keys = np.concatenate(firsts) * n_items + np.concatenate(seconds)
    unique, inverse = np.unique(keys, return_inverse=True)
    return JudgedPairs(
        unique // n_items,
        unique % n_items,
        np.bincount(inverse, weights=np.concatenate(kept), minlength=len(unique)),
        np.bincount(inverse, minlength=len(unique)).astype(float),
    )


def pair_cosine(embeddings, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """[p] cosine similarity of each listed pair of rows (a block of pairs at a time)."""
    x = unit_rows_float32(check_embeddings(embeddings))
    out = np.empty(len(first))
    for start in range(0, len(first), 65536):
        part = slice(start, start + 65536)
        out[part] = (x[first[part]] * x[second[part]]).sum(axis=1)
    return out


def spearman_rsa(model_similarity, human_similarity) -> RsaResult:
    """Spearman ρ between model and human similarities of the same pairs (one value per pair), over the
    pairs both define, with a 95% CI (Fisher z, Bonett-Wright standard error)."""
    model, human = np.asarray(model_similarity, float), np.asarray(human_similarity, float)
    if model.ndim != 1 or model.shape != human.shape:
        raise ValueError(
            f"RSA needs one model and one human similarity per pair; got shapes {model.shape} and "
            f"{human.shape}"
        )
    known = np.isfinite(model) & np.isfinite(human)
    n = int(known.sum())
    if n < 4:
        return RsaResult(float("nan"), n)
    rho = _spearman(model[known], human[known])
    half = 1.96 * np.sqrt((1 + rho**2 / 2) / (n - 3))
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    return RsaResult(rho, n, (float(np.tanh(z - half)), float(np.tanh(z + half))))


def category_mean_similarity(embeddings, labels) -> tuple[list[str], np.ndarray]:
    """([c] labels, [c, c] mean cosine similarity between images of two labels, each image paired with
    every other, never itself), exactly, from per-label sums of unit rows: no n x n array."""
    names, codes = label_codes(labels)
    x = unit_rows_float32(check_embeddings(embeddings))
    sums = np.zeros((len(names), x.shape[1]))
    np.add.at(sums, codes, x)
    self_sims = np.bincount(codes, weights=(x.astype(float) ** 2).sum(axis=1), minlength=len(names))
    counts = np.bincount(codes, minlength=len(names)).astype(float)
    totals = sums @ sums.T
    pairs = np.outer(counts, counts)
    np.fill_diagonal(totals, totals.diagonal() - self_sims)
    np.fill_diagonal(pairs, counts * (counts - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return names, np.where(pairs > 0, totals / pairs, np.nan)


def pair_group_means(pairs: JudgedPairs, values: np.ndarray, labels) -> tuple[list[str], np.ndarray]:
    """([c] labels, [c, c] mean of a per-pair value over the judged pairs between two labels); NaN where
    no pair of those labels was judged."""
    names, codes = label_codes(labels)
    a, b, c = codes[pairs.first], codes[pairs.second], len(names)
    sums, counts = np.zeros((c, c)), np.zeros((c, c))
    for rows, cols in ((a, b), (b, a)):
        np.add.at(sums, (rows, cols), values)
        np.add.at(counts, (rows, cols), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return names, np.where(counts > 0, sums / counts, np.nan)


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
    rho = _spearman(model_entropy, rt_ms[keep]) if keep.sum() >= 3 else float("nan")
    return EntropyVsRt(model_entropy, rt_ms[keep], rho)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho. scipy.stats is imported here, not at module level: importing it takes about 2 s,
    and every first render of the Maps page imports this module, with or without a map to analyse."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)
