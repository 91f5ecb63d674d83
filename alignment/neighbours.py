"""Each image's nearest other images by cosine similarity, without an n x n array.

At or below ``EXACT_MAX_IMAGES`` images the neighbours are exact (float32 similarities computed a block
of rows at a time, so memory stays ``BLOCK_ROWS x n``). Above it an approximate index (pynndescent, the
one UMAP uses) finds them in roughly n log n time; ``estimated_recall`` then measures, on a seeded sample
of images checked exactly, the share of true neighbours the index found, with a 95% CI, so a result
built on approximate neighbours says how approximate they are.

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
        indices, distances = _approximate(x, k, seed)
        recall, (low, high) = estimated_recall(x, indices, seed)
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
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        similarities[start : start + len(block)] = np.take_along_axis(top_sims, order, axis=1)
    return indices, similarities


def _approximate(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """pynndescent's k+1 neighbour graph (it lists each row itself first) with the row itself removed."""
    from pynndescent import NNDescent

    index = NNDescent(x, metric="cosine", n_neighbors=k + 1, random_state=seed, n_jobs=1, low_memory=True)
    found, distances = index.neighbor_graph
    return drop_self(found, distances, k)


def warm_index() -> None:
    """Compile pynndescent's numba code (about a minute on a busy 2-core machine, once per process) with a
    tiny search, so the first large map does not pay it (called by alignment.maps.warm_umap)."""
    x = unit_rows_float32(np.random.default_rng(0).normal(size=(200, 8)))
    _approximate(x, 5, seed=0)


def drop_self(indices: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (usually first; anywhere, or nowhere, among duplicates); keep k columns."""
    rows = np.arange(len(indices))[:, None]
    not_self = indices != rows
    keep = np.where(not_self.all(axis=1, keepdims=True), np.arange(indices.shape[1]) < k, not_self)
    keep &= np.cumsum(keep, axis=1) <= k
    return (
        indices[keep].reshape(len(indices), k).astype(np.int64),
        distances[keep].reshape(len(indices), k).astype(np.float32),
    )


def estimated_recall(x: np.ndarray, indices: np.ndarray, seed: int) -> tuple[float, tuple[float, float]]:
    """Share of the true k neighbours that ``indices`` lists, over a seeded sample of rows checked exactly;
    95% CI from the spread between sampled rows."""
    n, k = indices.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(RECALL_SAMPLE, n), replace=False))
    truth, _ = exact_neighbours(x, sample, k)
    found = np.array([len(np.intersect1d(a, b)) / k for a, b in zip(indices[sample], truth, strict=True)])
    return mean_ci(found)


def mean_ci(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean and its normal-approximation 95% CI (1.96 standard errors)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, (mean - half, mean + half)
