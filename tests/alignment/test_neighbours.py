"""Neighbour search at scale: exact blockwise search matches the dense answer, the approximate index finds
almost all true neighbours and says so, and both neighbours and 2-D layouts are computed once per input
(counted, not timed)."""

from __future__ import annotations

import numpy as np
import pytest

import alignment.maps
import alignment.neighbours
from alignment.maps import MapConfig, paired_maps, umap_epochs
from alignment.neighbours import nearest_neighbours
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


def test_approximate_index_recall_against_exact_and_its_estimate_covers_the_truth():
    x = _clustered(3000, dim=64)
    approx = nearest_neighbours(x, 10, exact=False)
    truth = _true_neighbours(x, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(approx.indices, truth, strict=True)])
    assert not approx.exact and recall > 0.9
    assert approx.recall_ci[0] <= recall <= approx.recall_ci[1]
    assert (approx.indices != np.arange(3000)[:, None]).all()  # never itself


def test_a_recall_below_target_is_searched_again_probing_twice_as_many_lists(monkeypatch):
    probed = []
    real = alignment.neighbours._approximate
    monkeypatch.setattr(
        alignment.neighbours,
        "_approximate",
        lambda x, k, seed, lists: probed.append(lists) or real(x, k, seed, lists),
    )
    clustered = nearest_neighbours(_clustered(2000), 10, exact=False)
    assert probed == [alignment.neighbours.PROBED_LISTS] and clustered.recall > 0.95  # found at once
    probed.clear()
    structureless = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32)
    found = nearest_neighbours(structureless, 10, exact=False)
    assert len(probed) > 1 and probed == [min(12 * 2**i, 45) for i in range(len(probed))]  # 45 lists in all
    truth = _true_neighbours(structureless, 10)
    true_recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found.indices, truth, strict=True)])
    assert true_recall >= alignment.neighbours.RECALL_TARGET


def test_umap_runs_fewer_epochs_above_the_size_threshold(monkeypatch):
    assert [umap_epochs(n) for n in (1000, 10_000, 20_000, 50_000, 1_000_000)] == [None, None, 200, 80, 50]
    asked = []

    class FakeUmap:  # records the settings the map asks for
        def __init__(self, **settings):
            asked.append(settings["n_epochs"])

        def fit_transform(self, x):
            return np.zeros((len(x), 2))

    import umap

    monkeypatch.setattr(umap, "UMAP", FakeUmap)
    for n in (10_000, 50_000):
        alignment.maps.embed_2d(np.random.default_rng(0).normal(size=(n, 3)), MapConfig())
    assert asked == [None, 80]


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


@pytest.mark.slow  # a 5,000-image UMAP fit
def test_umap_uses_the_neighbours_it_is_given():
    x = _clustered(5000, dim=16)
    neighbours = nearest_neighbours(x, 15, exact=False)
    xy = alignment.maps.embed_2d(x, MapConfig(n_neighbors=15), neighbours)
    assert xy.shape == (5000, 2) and np.isfinite(xy).all()
