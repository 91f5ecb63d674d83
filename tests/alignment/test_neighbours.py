"""Neighbour search at scale: exact blockwise search matches the dense answer, the approximate index finds
almost all true neighbours and says so, and both neighbours and 2-D layouts are computed once per input
(counted, not timed)."""

from __future__ import annotations

import numpy as np
import pytest

import alignment.maps
import alignment.neighbours
from alignment.maps import MapConfig, paired_maps
from alignment.neighbours import drop_self, nearest_neighbours
from tests.support.planted import cosine_similarity_matrix


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    return (centres[rng.integers(0, 20, n)] + rng.normal(scale=0.8, size=(n, dim))).astype(np.float32)


def _true_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    sims = cosine_similarity_matrix(x.astype(float))
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_exact_search_in_blocks_equals_the_dense_answer(monkeypatch):
    monkeypatch.setattr(alignment.neighbours, "BLOCK_ROWS", 37)  # several blocks, a ragged last one
    x = _clustered(300)
    found = nearest_neighbours(x, 8)
    assert found.exact and found.recall == 1.0
    truth = _true_neighbours(x, 8)
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(found.indices, truth, strict=True)]) > 7.99
    assert (found.distances[:, 1:] >= found.distances[:, :-1] - 1e-6).all()  # nearest first


@pytest.mark.slow  # compiles pynndescent (30 s idle, minutes on a loaded 2-core machine)
def test_approximate_index_recall_against_exact_and_its_estimate_covers_the_truth():
    x = _clustered(3000, dim=64)
    approx = nearest_neighbours(x, 10, exact=False)
    truth = _true_neighbours(x, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(approx.indices, truth, strict=True)])
    assert not approx.exact and recall > 0.9
    assert approx.recall_ci[0] <= recall <= approx.recall_ci[1]
    assert (approx.indices != np.arange(3000)[:, None]).all()  # never itself


def test_self_is_dropped_wherever_the_index_lists_it():
    indices = np.array([[0, 1, 2], [0, 1, 2], [3, 0, 1], [1, 0, 2]])  # row 1: itself second; rows 2, 3: never
    distances = np.arange(12, dtype=float).reshape(4, 3)
    kept, kept_distances = drop_self(indices, distances, 2)
    assert kept.tolist() == [[1, 2], [0, 2], [3, 0], [1, 0]]
    assert kept_distances.tolist() == [[1, 2], [3, 5], [6, 7], [9, 10]]


def test_neighbours_are_searched_once_per_representation_with_a_cache_dir(tmp_path, monkeypatch):
    searches = []
    real = alignment.neighbours.exact_neighbours
    monkeypatch.setattr(alignment.neighbours, "exact_neighbours", lambda *a: searches.append(1) or real(*a))
    x = _clustered(200)
    first = nearest_neighbours(x, 5, cache_dir=tmp_path)
    again = nearest_neighbours(x, 5, cache_dir=tmp_path)
    assert len(searches) == 1
    np.testing.assert_array_equal(first.indices, again.indices)
    nearest_neighbours(x + 1, 5, cache_dir=tmp_path)  # other embeddings: a new search, not a stale answer
    assert len(searches) == 2


def test_umap_is_fitted_once_per_representation_and_read_back_from_disk(tmp_path, monkeypatch):
    fits = []

    def fake_umap(x, config, neighbours=None):  # a counted stand-in: this test is about the cache
        fits.append(len(x))
        return x[:, :2] * (1 + len(fits))  # a different layout per fit would show a cache miss

    monkeypatch.setattr(alignment.maps, "_umap_2d", fake_umap)
    before, after = _clustered(120, seed=1), _clustered(120, seed=2)
    first = paired_maps(before, after, MapConfig(), cache_dir=tmp_path)
    assert fits == [120, 120]
    again = paired_maps(before, after, MapConfig(), cache_dir=tmp_path)  # e.g. a restarted server
    other_pair = paired_maps(before, _clustered(120, seed=3), MapConfig(), cache_dir=tmp_path)
    assert fits == [120, 120, 120]  # only the new representation was fitted
    np.testing.assert_array_equal(first.before, again.before)
    np.testing.assert_array_equal(first.after, again.after)
    np.testing.assert_array_equal(first.before, other_pair.before)
    paired_maps(before, after, MapConfig(seed=1), cache_dir=tmp_path)  # other settings: fitted again
    assert len(fits) == 5


@pytest.mark.slow
def test_umap_uses_the_neighbours_it_is_given():
    x = _clustered(5000, dim=16)
    neighbours = nearest_neighbours(x, 15, exact=False)
    xy = alignment.maps.embed_2d(x, MapConfig(n_neighbors=15), neighbours)
    assert xy.shape == (5000, 2) and np.isfinite(xy).all()
