"""Sharded pseudo-labels: written shard by shard from memory-mapped features, readable only when finished,
and the same format (ordering, temperatures, provenance) as a single label file."""

import numpy as np
import pytest

from alignment.conventions import pair_similarities
from alignment.label_shards import (
    LabelShards,
    LabelShardWriter,
    is_shard_directory,
    load_labels,
    make_pseudolabel_shards,
)
from alignment.pseudolabels import LabelProvenance, PseudoLabelConfig, mean_entropy, pool_digest


class Scaled:
    temperature = 0.5

    def transform(self, x):
        return x[:, :4] * 2.0


def _features(tmp_path, n=300, d=8):
    rng = np.random.default_rng(0)
    memmap = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float32, shape=(n, d))
    memmap[:] = rng.standard_normal((n, d))
    memmap.flush()
    return np.load(tmp_path / "features.npy", mmap_mode="r")


def test_shards_from_memory_mapped_features(tmp_path):
    features = _features(tmp_path)
    ids = tuple(f"c{i % 5}/img{i}.jpg" for i in range(len(features)))
    config = PseudoLabelConfig(n_triplets=2500, n_clusters=6, triplets_per_group=100)
    sets = make_pseudolabel_shards(
        features,
        Scaled(),
        LabelProvenance("timm:x", "w", ids, "t"),
        tmp_path / "labels",
        config,
        shard_triplets=1000,
        chunk_images=64,
    )
    aligned, control = sets["aligned"], sets["untransformed"]
    assert [s["n_triplets"] for s in aligned.shards] == [1000, 1000, 500]
    labels = load_labels(tmp_path / "labels" / "aligned")
    assert len(labels) == 2500 and labels.pool_ids == ids
    assert labels.meta["pool_digest"] == pool_digest(ids) and labels.meta["space"] == "aligned"
    space = np.asarray(features, np.float64)[:, :4] * 2.0
    sims = pair_similarities(space, labels.triplets)
    assert np.allclose(sims / 0.5, labels.similarities, atol=1e-4)
    assert (sims[:, 0] >= sims[:, 1]).all() and (sims[:, 1] >= sims[:, 2]).all()  # odd one out last
    per_shard = [set(g.tolist()) for _, _, g in aligned.iter_shards()]
    assert not per_shard[0] & per_shard[1] and not per_shard[1] & per_shard[2]  # global group ids
    same = load_labels(tmp_path / "labels" / "untransformed")
    assert sorted(map(tuple, np.sort(same.triplets, 1))) == sorted(map(tuple, np.sort(labels.triplets, 1)))
    assert abs(mean_entropy(same.similarities) - mean_entropy(labels.similarities)) < 0.05
    assert control.meta["temperature"] != aligned.meta["temperature"]


def test_an_unfinished_shard_set_is_not_readable(tmp_path):
    writer = LabelShardWriter(tmp_path / "s", ("a", "b", "c", "d"), {"backbone": "timm:x"})
    writer.add(np.array([[0, 1, 2]]), np.zeros((1, 3)), np.array([7]))
    assert not is_shard_directory(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="not a finished label shard directory"):
        LabelShards.open(tmp_path / "s")
    with pytest.raises(ValueError, match="outside the pool of 4"):
        writer.add(np.array([[0, 1, 4]]), np.zeros((1, 3)), np.array([0]))
    writer.add(np.array([[3, 1, 2], [0, 1, 3]]), np.ones((2, 3)), np.array([0, 0]))
    writer.close()
    labels = LabelShards.open(tmp_path / "s").load_all()
    assert labels.groups.tolist() == [0, 1, 1] and labels.pool_ids == ("a", "b", "c", "d")
    with pytest.raises(FileExistsError):
        LabelShardWriter(tmp_path / "s", ("a",), {})
