"""Each image's nearest other images by cosine similarity, without an n x n array.

At or below ``EXACT_MAX_IMAGES`` images the neighbours are exact (float32 similarities computed a block
of rows at a time, so memory stays ``BLOCK_ROWS x n``). Above it an inverted-file index in plain numpy
(``_approximate``: k-means lists, each compared with its nearest lists) finds them in about n^1.5 dot
products; ``estimated_recall`` then measures, on a seeded sample of images checked exactly, the share of
true neighbours the index found, with a 95% CI, so a result built on approximate neighbours says how
approximate they are. (pynndescent, which UMAP ships, searched about as fast but compiled its numba code
for about 50 CPU-seconds in every new process: more than both searches of 50,000 images cost here.)

The same neighbour lists serve the reorganisation measures (k up to ``NEIGHBOUR_POOL``) and UMAP (its
``n_neighbors`` first columns), so a large map searches each representation once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignment.disk_cache import array_digest, cached_arrays

EXACT_MAX_IMAGES = 5000
NEIGHBOUR_POOL = 30  # columns kept: the maps page's k slider goes to 30, UMAP uses 15
BLOCK_ROWS = 512
RECALL_SAMPLE = 300  # images checked exactly to estimate an approximate index's recall
PROBED_LISTS = 12  # inverted-file lists (of about sqrt(n)) each row is first compared with
RECALL_TARGET = 0.95  # below it (sampled), the search is repeated probing twice as many lists
KMEANS_SAMPLE_PER_CENTRE = 64
KMEANS_ITERATIONS = 8


@dataclass(frozen=True)
class Neighbours:
    """``indices[i]``: the nearest other rows of row i, nearest first (self excluded)."""

    indices: np.ndarray  # [n, K] int64
    distances: np.ndarray  # [n, K] float32 cosine distance (1 - cosine similarity)
    exact: bool
    recall: float = 1.0  # estimated share of the true K neighbours found (1.0 when exact)
    recall_ci: tuple[float, float] = (1.0, 1.0)

    def first(self, k: int) -> np.ndarray:
        """[n, k] the k nearest (k at most the K computed)."""
        if k > self.indices.shape[1]:
            raise ValueError(f"asked for {k} neighbours; only {self.indices.shape[1]} were computed")
        return self.indices[:, :k]


def unit_rows_float32(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (half the memory of float64; cosine needs no more)."""
    x = np.asarray(embeddings, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(
    embeddings: np.ndarray,
    k: int,
    *,
    exact: bool | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Neighbours:
    """The k nearest other rows of every row by cosine similarity.

    ``exact=None`` chooses: exact up to ``EXACT_MAX_IMAGES`` rows, the approximate index above.
    With ``cache_dir`` the result is kept on disk per (embeddings, k, method, seed) (alignment.disk_cache).
    """
    x = unit_rows_float32(embeddings)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and n_images - 1 = {n - 1}; got {k}")
    exact = exact if exact is not None else n <= EXACT_MAX_IMAGES

    def search() -> dict[str, np.ndarray]:
        if exact:
            indices, similarities = exact_neighbours(x, np.arange(n), k)
            return {"indices": indices, "distances": 1.0 - similarities, "recall": np.array([1.0, 1.0, 1.0])}
        indices, distances = approximate_to_target(x, k, seed)
        recall, (low, high) = estimated_recall(x, indices, seed + 1)  # rows other than the stopping rule's
        return {"indices": indices, "distances": distances, "recall": np.array([recall, low, high])}

    name = f"neighbours-{array_digest(x, f'k={k} exact={exact} seed={seed}')}"
    found = cached_arrays(cache_dir, name, search)
    recall = found["recall"].astype(float)
    return Neighbours(
        found["indices"],
        found["distances"].astype(np.float32),
        exact=exact,
        recall=float(recall[0]),
        recall_ci=(float(recall[1]), float(recall[2])),
    )


def exact_neighbours(x: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """([len(rows), k] indices, their cosine similarities) of the given rows of unit-length ``x``,
    a block of rows at a time. Each row's own index is never its neighbour, even among duplicates."""
    indices = np.empty((len(rows), k), dtype=np.int64)
    similarities = np.empty((len(rows), k), dtype=np.float32)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = rows[start : start + BLOCK_ROWS]
        sims = x[block] @ x.T
        sims[np.arange(len(block)), block] = -np.inf
        indices[start : start + len(block)], similarities[start : start + len(block)] = _top_k(sims, k)
    return indices, similarities


def approximate_to_target(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``_approximate`` probing ``PROBED_LISTS`` lists, then twice as many each time the recall sampled on
    ``RECALL_SAMPLE`` seeded rows stays below ``RECALL_TARGET`` (at most every list: an exact search).

    Clustered embeddings stop at the first round; structureless ones, whose neighbours lie in many lists,
    pay for more rounds rather than getting a map built on wrong neighbours.
    """
    n_lists = max(1, round(np.sqrt(len(x))))
    probed = min(PROBED_LISTS, n_lists)
    while True:
        indices, distances = _approximate(x, k, seed, probed)
        if probed >= n_lists or estimated_recall(x, indices, seed)[0] >= RECALL_TARGET:
            return indices, distances
        probed = min(2 * probed, n_lists)


def _approximate(x: np.ndarray, k: int, seed: int, probed_lists: int) -> tuple[np.ndarray, np.ndarray]:
    """An inverted-file search in plain numpy (no compilation to pay, unlike a numba index): the rows are
    split into about sqrt(n) lists by spherical k-means, and each row is compared exactly with every row of
    the ``probed_lists`` lists whose centres are most similar to it, a list at a time.

    Cost: about n x probed_lists x sqrt(n) dot products (n^1.5). A true neighbour is missed only when it
    sits in a list whose centre is not among the row's nearest; ``estimated_recall`` measures how often.
    """
    n = len(x)
    centres = spherical_kmeans(x, max(1, round(np.sqrt(n))), seed)
    probes = nearest_centre(x, centres, min(probed_lists, len(centres)))  # [n, P]
    home = probes[:, 0]
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(len(centres) + 1))
    found = np.full((n, probes.shape[1], k), -1, dtype=np.int64)  # per row and probe: best k of that list
    found_sims = np.full((n, probes.shape[1], k), -np.inf, dtype=np.float32)
    asking, slot = np.divmod(np.argsort(probes, axis=None, kind="stable"), probes.shape[1])
    asked = np.searchsorted(probes.ravel()[asking * probes.shape[1] + slot], np.arange(len(centres) + 1))
    for centre in range(len(centres)):
        members = order[bounds[centre] : bounds[centre + 1]]
        rows, slots = asking[asked[centre] : asked[centre + 1]], slot[asked[centre] : asked[centre + 1]]
        kk = min(k, len(members))
        for start in range(0, len(rows), BLOCK_ROWS):
            block, block_slots = rows[start : start + BLOCK_ROWS], slots[start : start + BLOCK_ROWS]
            sims = x[block] @ x[members].T
            sims[members[None, :] == block[:, None]] = -np.inf  # a row is never its own neighbour
            top, top_sims = _top_k(sims, kk)
            found[block, block_slots, :kk], found_sims[block, block_slots, :kk] = members[top], top_sims
    best, similarities = _top_k(found_sims.reshape(n, -1), k)
    indices = np.take_along_axis(found.reshape(n, -1), best, axis=1)
    short = np.flatnonzero(~np.isfinite(similarities).all(axis=1))  # fewer than k others in its lists
    indices[short], similarities[short] = exact_neighbours(x, short, k)
    return indices, 1.0 - similarities


def _top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of each row's k largest similarities, largest first, and those similarities."""
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.argsort(-sims, axis=1)
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def spherical_kmeans(x: np.ndarray, n_centres: int, seed: int) -> np.ndarray:
    """[n_centres, D] unit centres fitted on a seeded sample of unit rows (``KMEANS_SAMPLE_PER_CENTRE`` rows
    per centre, ``KMEANS_ITERATIONS`` rounds); a centre left empty restarts at a random sampled row."""
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(len(x), min(len(x), KMEANS_SAMPLE_PER_CENTRE * n_centres), replace=False))]
    centres = sample[rng.choice(len(sample), n_centres, replace=False)]
    for _ in range(KMEANS_ITERATIONS):
        nearest = nearest_centre(sample, centres)[:, 0]
        sums = np.zeros_like(centres)
        np.add.at(sums, nearest, sample)
        empty = np.bincount(nearest, minlength=n_centres) == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()), replace=False)]
        centres = unit_rows_float32(sums)
    return centres


def nearest_centre(x: np.ndarray, centres: np.ndarray, m: int = 1) -> np.ndarray:
    """[n, m] the m centres most similar to each row, nearest first (a block of rows at a time)."""
    out = np.empty((len(x), m), dtype=np.int64)
    for start in range(0, len(x), 4096):
        sims = x[start : start + 4096] @ centres.T
        out[start : start + 4096] = _top_k(sims, m)[0]
    return out


def estimated_recall(x: np.ndarray, indices: np.ndarray, seed: int) -> tuple[float, tuple[float, float]]:
    """Share of the true k neighbours that ``indices`` lists, over a seeded sample of rows checked exactly;
    95% CI: the wider of the one from the spread between sampled rows and the Wilson interval of all the
    neighbours checked (which stays open below 1 when every sampled neighbour was found)."""
    n, k = indices.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(RECALL_SAMPLE, n), replace=False))
    truth, _ = exact_neighbours(x, sample, k)
    found = np.array([len(np.intersect1d(a, b)) / k for a, b in zip(indices[sample], truth, strict=True)])
    mean, (low, high) = mean_ci(found)
    wilson_low, wilson_high = wilson_ci(mean, found.size * k)
    return mean, (min(low, wilson_low), max(high, wilson_high))


def wilson_ci(share: float, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a share observed over ``trials`` independent trials."""
    centre = (share + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * np.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return float(centre - half), float(centre + half)


def mean_ci(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean and its normal-approximation 95% CI (1.96 standard errors)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, (mean - half, mean + half)
