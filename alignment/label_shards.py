"""Pseudo-labels in shards, for image pools whose features or triplets do not fit in memory at once.

A shard directory holds the ``alignment.pseudolabels`` format split across files:
- ``pool_ids.txt``: one pool image id per line (written once, not per shard);
- ``shard-00000.npz`` ...: ``triplets``, ``similarities``, ``groups`` of one shard (group ids are global,
  so a training step never mixes two shards' groups by accident);
- ``manifest.json``: the label meta (as ``PseudoLabels.meta``), the shard files and their triplet counts.
  It is written last, atomically, so a directory without it is an unfinished (or crashed) write, never read.

``make_pseudolabel_shards`` produces both label spaces (aligned and untransformed) from pool features that
may be a ``np.memmap``: the teacher space is clustered with mini-batch k-means fitted chunk by chunk, and each
shard only gathers the features of the images its triplets use. ``LabelShards.load_all`` concatenates the
shards into one ``PseudoLabels`` for training (triplets are small: 10M triplets are ~360 MB; it is the pool's
features that do not fit).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from alignment.conventions import pair_similarities
from alignment.pseudolabels import (
    FORMAT_VERSION,
    LabelProvenance,
    PseudoLabelConfig,
    PseudoLabels,
    TeacherLike,
    label_triplets,
    mean_entropy,
    pool_digest,
    sample_grouped_triplets,
    temperature_for_entropy,
)
from common.atomic import atomic_path, atomic_write

MANIFEST = "manifest.json"
POOL_IDS = "pool_ids.txt"


def is_shard_directory(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


class LabelShardWriter:
    """Writes shards one by one; ``close`` writes the manifest that makes the directory readable."""

    def __init__(self, directory: str | Path, pool_ids, meta: dict):
        self.directory = Path(directory)
        if (self.directory / MANIFEST).exists():
            raise FileExistsError(f"{self.directory} already holds a finished label shard set")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pool_ids = tuple(map(str, pool_ids))
        if any("\n" in i for i in self.pool_ids):
            raise ValueError("pool ids must not contain line breaks")
        self.meta = {**meta, "format_version": FORMAT_VERSION, "pool_digest": pool_digest(self.pool_ids)}
        self.shards: list[dict] = []
        self.next_group = 0
        atomic_write(self.directory / POOL_IDS, "\n".join(self.pool_ids).encode())

    def add(self, triplets: np.ndarray, similarities: np.ndarray, groups: np.ndarray) -> Path:
        """Write one shard; ``groups`` are renumbered after the previous shards' groups."""
        triplets, similarities = np.asarray(triplets, np.int64), np.asarray(similarities, np.float32)
        groups = np.asarray(groups, np.int64)
        if triplets.ndim != 2 or triplets.shape[1] != 3 or similarities.shape != triplets.shape:
            raise ValueError(f"a shard needs triplets and similarities [m, 3]; got {triplets.shape}")
        if len(groups) != len(triplets):
            raise ValueError(f"{len(groups)} group ids for {len(triplets)} triplets")
        if len(triplets) and (triplets.min() < 0 or triplets.max() >= len(self.pool_ids)):
            raise ValueError(f"shard triplets index images outside the pool of {len(self.pool_ids)}")
        _, renumbered = np.unique(groups, return_inverse=True)
        renumbered = renumbered.astype(np.int64) + self.next_group
        self.next_group = int(renumbered.max(initial=self.next_group - 1)) + 1
        path = self.directory / f"shard-{len(self.shards):05d}.npz"
        with atomic_path(path) as partial:
            np.savez_compressed(partial, triplets=triplets, similarities=similarities, groups=renumbered)
        self.shards.append({"file": path.name, "n_triplets": len(triplets)})
        return path

    def close(self) -> Path:
        manifest = {"meta": self.meta, "shards": self.shards, "n_pool": len(self.pool_ids)}
        return atomic_write(self.directory / MANIFEST, json.dumps(manifest, indent=1).encode())


@dataclass(frozen=True)
class LabelShards:
    """A finished shard directory (see the module docstring)."""

    directory: Path
    meta: dict
    shards: tuple[dict, ...]

    @classmethod
    def open(cls, directory: str | Path) -> LabelShards:
        directory = Path(directory)
        if not is_shard_directory(directory):
            raise FileNotFoundError(
                f"{directory} is not a finished label shard directory (no {MANIFEST}; "
                "an interrupted write leaves none)"
            )
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest["meta"].get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: format_version {manifest['meta'].get('format_version')}")
        return cls(directory, manifest["meta"], tuple(manifest["shards"]))

    def __len__(self) -> int:
        return sum(s["n_triplets"] for s in self.shards)

    def pool_ids(self) -> tuple[str, ...]:
        text = (self.directory / POOL_IDS).read_text()
        return tuple(text.split("\n")) if text else ()

    def iter_shards(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(triplets, similarities, groups)`` of each shard in order, one shard in memory at a time."""
        for shard in self.shards:
            with np.load(self.directory / shard["file"], allow_pickle=False) as data:
                yield data["triplets"], data["similarities"], data["groups"]

    def load_all(self) -> PseudoLabels:
        parts = list(self.iter_shards())
        if not parts:
            empty = np.empty((0, 3))
            parts = [(empty.astype(np.int64), empty.astype(np.float32), np.empty(0, np.int64))]
        triplets, sims, groups = (np.concatenate(column) for column in zip(*parts, strict=True))
        return PseudoLabels(triplets, sims, groups, self.pool_ids(), dict(self.meta))


def load_labels(path: str | Path) -> PseudoLabels:
    """A label set from a ``.npz`` file or a shard directory."""
    return LabelShards.open(path).load_all() if Path(path).is_dir() else PseudoLabels.load(path)


def _fit_clusters(features, teacher: TeacherLike, n_clusters: int, seed: int, chunk: int) -> np.ndarray:
    """k-means cluster per pool image in the teacher space, transforming and fitting chunk by chunk."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(features)
    if n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} exceeds the {n} images in the pool")
    chunk = max(chunk, n_clusters)
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=1024)
    spans = [(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < n_clusters:  # partial_fit needs >= k rows per call
        spans[-2:] = [(spans[-2][0], n)]

    def space(a, b):
        return np.asarray(teacher.transform(np.asarray(features[a:b], np.float32)), np.float32)

    for _ in range(3):  # a few passes over the pool
        for a, b in spans:
            kmeans.partial_fit(space(a, b))
    return np.concatenate([kmeans.predict(space(a, b)) for a, b in spans]).astype(np.int64)


def _shard_writers(
    out_dir: Path, provenance: LabelProvenance, config: PseudoLabelConfig, clusters: np.ndarray
) -> dict[str, LabelShardWriter]:
    """One writer per label space (`aligned`, `untransformed`), with the provenance both share."""
    base = {
        "backbone": provenance.backbone,
        "weights_id": provenance.weights_id,
        "teacher_id": provenance.teacher_id,
        "config": asdict(config),
        "cluster_sizes": np.bincount(clusters).tolist(),
    }
    return {
        space: LabelShardWriter(out_dir / space, provenance.pool_ids, {**base, "space": space})
        for space in ("aligned", "untransformed")
    }


def _label_shard(
    features,
    teacher: TeacherLike,
    clusters: np.ndarray,
    config: PseudoLabelConfig,
    writers: dict[str, LabelShardWriter],
    raw_temperature: float | None,
) -> float:
    """Sample one shard's triplets (`config` carries its size and seed), label them in both spaces and add
    them to the writers. Returns the untransformed space's temperature: matched to the aligned labels' mean
    entropy on the first shard (`raw_temperature` None), then reused."""
    triplets, groups = sample_grouped_triplets(clusters, config)
    images, local = np.unique(triplets, return_inverse=True)
    local = local.reshape(-1, 3)
    raw = np.asarray(features[images], np.float32)
    ordered, sims = label_triplets(teacher.transform(raw), local, teacher.temperature)
    writers["aligned"].add(images[ordered], sims, groups)
    if raw_temperature is None:
        raw_sims = pair_similarities(raw.astype(np.float64), local)
        raw_temperature = temperature_for_entropy(raw_sims, mean_entropy(sims))
    ordered, sims = label_triplets(raw, local, raw_temperature)
    writers["untransformed"].add(images[ordered], sims, groups)
    return raw_temperature


def make_pseudolabel_shards(
    features,
    teacher: TeacherLike,
    provenance: LabelProvenance,
    out_dir: str | Path,
    config: PseudoLabelConfig | None = None,
    *,
    shard_triplets: int = 1_000_000,
    chunk_images: int = 65_536,
) -> dict[str, LabelShards]:
    """``{"aligned", "untransformed"}`` shard sets under ``out_dir/<space>``, as ``make_pseudolabels`` would
    make them, but never holding more than one shard's images' features in memory.

    Shard ``s`` samples its triplets with seed ``config.seed + s``, so triplets are distinct within a shard
    (across shards a repeat is possible but rare in a large pool). The untransformed control's temperature
    is matched to the aligned labels' mean entropy on the first shard and reused for the others.
    """
    config = (config or PseudoLabelConfig()).for_pool(len(features))  # unset settings derived from the pool
    if len(features) != len(provenance.pool_ids):
        raise ValueError(f"{len(features)} feature rows for {len(provenance.pool_ids)} pool ids")
    if shard_triplets < 1:
        raise ValueError(f"shard_triplets must be >= 1; got {shard_triplets}")
    clusters = _fit_clusters(features, teacher, config.setting("n_clusters"), config.seed, chunk_images)
    writers = _shard_writers(Path(out_dir), provenance, config, clusters)
    raw_temperature = None
    n_triplets = config.setting("n_triplets")
    for shard, start in enumerate(range(0, n_triplets, shard_triplets)):
        want = min(shard_triplets, n_triplets - start)
        shard_config = replace(config, n_triplets=want, seed=config.seed + shard)
        raw_temperature = _label_shard(features, teacher, clusters, shard_config, writers, raw_temperature)
    writers["aligned"].meta["temperature"] = float(teacher.temperature)
    writers["untransformed"].meta["temperature"] = float(raw_temperature or 1.0)
    for writer in writers.values():
        writer.close()
    return {space: LabelShards.open(Path(out_dir) / space) for space in writers}
