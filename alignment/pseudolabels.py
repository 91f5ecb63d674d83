"""Pseudo-labelled triplets (AligNet §3): cluster the teacher space, sample triplets, store the teacher's
similarities.

Format of a label set (``PseudoLabels``, saved as one compressed ``.npz``):
- ``triplets`` int64 [m, 3]: row indices into the image pool, the teacher's odd one out LAST;
- ``similarities`` float32 [m, 3]: ``[s01, s02, s12]`` = pair dot products divided by the temperature,
  each row reordered so pair (0, 1) is the most similar (then s02 >= s12), so ``softmax(similarities)``
  is the intended choice distribution and "pair (0, 1)" the hard label;
- ``groups`` int64 [m]: the image group each triplet was sampled in. A group is a set of images drawn
  cluster by cluster; its triplets only use its images, so one training step embeds a group's images once
  and scores many triplets among them;
- ``pool_ids``: one id (content hash) per pool image, and ``meta`` (backbone, weights id, pool digest,
  teacher id, temperature, space, strategy, clusters, seed), checked before training.

Two label spaces share the same clusters and triplets: ``aligned`` (the teacher's transformed features and
its fitted temperature) and ``untransformed`` (raw backbone features: the UnAligNet control). The control's
temperature is chosen so the mean entropy of its labels over the sampled triplets equals that of the
aligned labels over the same triplets (which the teacher calibrated to human choice entropy): the two label
sets then differ in which pair is most similar, not in how sharp the targets are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from math import comb
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from alignment.conventions import entropy, pair_similarities, triplet_probabilities
from common.atomic import atomic_path
from common.config import LoadableConfig

Strategy = Literal["cluster_border", "within_cluster", "between_cluster", "random"]
STRATEGIES: tuple[str, ...] = ("cluster_border", "within_cluster", "between_cluster", "random")
FORMAT_VERSION = 1


class LabelsMismatchError(ValueError):
    """A labels file was made for another backbone, weights or image pool than the one being trained."""


class TooFewLabelsError(ValueError):
    """A label set is empty or too small to train on."""


class TeacherLike(Protocol):
    """What pseudo-labelling needs from ``alignment.teacher.Teacher``."""

    @property
    def temperature(self) -> float: ...

    def transform(self, features: np.ndarray) -> np.ndarray: ...


# The rule that fits the pseudo-label settings to a pool (``PseudoLabelConfig.for_pool``)
IMAGES_PER_CLUSTER_TARGET = 6
MIN_CLUSTERS = 3  # between_cluster needs 3; cluster_border 2
MAX_CLUSTERS = 20  # the laptop-scale default (the demo's); a large pool on a GPU sets n_clusters
MAX_GROUP_CLUSTERS = 8
MAX_GROUP_IMAGES_PER_CLUSTER = 8
DEFAULT_TRIPLETS = 10_000  # the laptop-scale budget (a GPU user raises n_triplets)
MAX_TRIPLETS_PER_GROUP = 256
MIN_TRIPLETS_PER_GROUP = 16


@dataclass(frozen=True)
class PseudoLabelConfig(LoadableConfig):
    """How many triplets to sample and how (AligNet default: ``cluster_border`` over k-means clusters).

    A setting left unset (None) is derived from the pool by ``for_pool``, so the defaults fit a 30-image
    study as well as a large pool. The rule, for a pool of n images:

    - ``n_clusters`` = n // 6, at least 3 and at most 20 (about 6 images per cluster; from 126 images on,
      the fixed laptop-scale default of 20, which a large pool on a GPU raises);
    - ``clusters_per_group`` = min(8, n_clusters); ``images_per_cluster`` = 8 (a group takes up to 8
      images of each of its clusters);
    - ``n_triplets`` = min(10,000, capacity / 4), where capacity is the number of distinct triplets the
      strategy allows among n images in equal clusters (``valid_triplet_count``); once the pool is
      clustered, also at most half the capacity of the actual clusters, so sampling never runs dry;
    - ``triplets_per_group`` = n_triplets / 8 within [16, 256] (about 8 or more groups, so a student
      takes several steps per epoch), and at most a quarter of what one group's images allow.
    """

    SECTION = "pseudo"

    n_triplets: int | None = None
    n_clusters: int | None = None
    strategy: Strategy = "cluster_border"
    clusters_per_group: int | None = None
    images_per_cluster: int | None = None
    triplets_per_group: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}; got {self.strategy!r}")
        for name in SIZED_SETTINGS:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"PseudoLabelConfig.{name} must be >= 1; got {value}")

    def for_pool(self, n_images: int, cluster_sizes: Sequence[int] | None = None) -> PseudoLabelConfig:
        """This config with every unset setting derived from a pool of ``n_images`` (the rule in the class
        docstring); ``cluster_sizes``, once the pool is clustered, bound ``n_triplets`` by the real clusters.
        Raises a ValueError naming what to change when the pool cannot give what was asked."""
        if n_images < 3:
            raise ValueError(f"the image pool has {n_images} images; pseudo-labelling needs at least 3")
        k = self.n_clusters or int(np.clip(n_images // IMAGES_PER_CLUSTER_TARGET, MIN_CLUSTERS, MAX_CLUSTERS))
        if k > n_images:
            raise ValueError(f"n_clusters={k} exceeds the {n_images} images in the pool")
        per_cluster = self.images_per_cluster or MAX_GROUP_IMAGES_PER_CLUSTER
        per_group = self.clusters_per_group or min(MAX_GROUP_CLUSTERS, k)
        expected = valid_triplet_count(equal_cluster_sizes(n_images, k), self.strategy)
        capacity = expected if cluster_sizes is None else valid_triplet_count(cluster_sizes, self.strategy)
        n_triplets = self.n_triplets or min(DEFAULT_TRIPLETS, expected // 4, capacity // 2)
        where = f"{n_images} images in {k} clusters allow {capacity} distinct {self.strategy} triplets"
        if n_triplets > capacity:
            raise ValueError(
                f"{where}; n_triplets={n_triplets} is more (ask for fewer, add images, or leave n_triplets "
                "unset to derive it from the pool)"
            )
        if n_triplets < 1:
            raise ValueError(f"{where}: too few to pseudo-label (add images)")
        group_capacity = valid_triplet_count([per_cluster] * min(per_group, k), self.strategy)
        per_group_triplets = self.triplets_per_group or max(
            1,
            min(
                int(np.clip(n_triplets // 8, MIN_TRIPLETS_PER_GROUP, MAX_TRIPLETS_PER_GROUP)),
                group_capacity // 4,
            ),
        )
        return replace(
            self,
            n_triplets=n_triplets,
            n_clusters=k,
            clusters_per_group=per_group,
            images_per_cluster=per_cluster,
            triplets_per_group=per_group_triplets,
        )

    def setting(self, name: str) -> int:
        """A sized setting as an int, once derived (``for_pool``) or given."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"PseudoLabelConfig.{name} is unset; derive it with for_pool(n_images)")
        return int(value)


SIZED_SETTINGS = (
    "n_triplets",
    "n_clusters",
    "clusters_per_group",
    "images_per_cluster",
    "triplets_per_group",
)


def equal_cluster_sizes(n_images: int, n_clusters: int) -> list[int]:
    """``n_images`` split into ``n_clusters`` sizes that differ by at most one."""
    return [n_images // n_clusters + (i < n_images % n_clusters) for i in range(n_clusters)]


def valid_triplet_count(cluster_sizes: Sequence[int], strategy: str) -> int:
    """How many distinct (unordered) triplets ``strategy`` can draw from clusters of these sizes:
    cluster_border two images of one cluster and one of another, within_cluster three of one,
    between_cluster one from each of three clusters, random any three."""
    sizes = [int(s) for s in cluster_sizes]
    n = sum(sizes)
    if strategy == "cluster_border":
        return sum(comb(s, 2) * (n - s) for s in sizes)
    if strategy == "within_cluster":
        return sum(comb(s, 3) for s in sizes)
    if strategy == "between_cluster":  # elementary symmetric polynomial e3 of the sizes
        p1, p2, p3 = n, sum(s * s for s in sizes), sum(s**3 for s in sizes)
        return (p1**3 - 3 * p1 * p2 + 2 * p3) // 6
    return comb(n, 3)


@dataclass(frozen=True)
class LabelProvenance:
    """Where the features came from; stored with the labels and checked before training."""

    backbone: str
    weights_id: str
    pool_ids: tuple[str, ...]
    teacher_id: str


def pool_digest(pool_ids) -> str:
    """Order-sensitive sha256 (16 hex digits) of the pool's image ids."""
    return hashlib.sha256("\n".join(map(str, pool_ids)).encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class PseudoLabels:
    """One label set; see the module docstring for the meaning of each array."""

    triplets: np.ndarray
    similarities: np.ndarray
    groups: np.ndarray
    pool_ids: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.triplets)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (.npz), so a reader never sees a half-written file."""
        path = Path(path)
        with atomic_path(path) as partial:
            np.savez_compressed(
                partial,
                triplets=self.triplets,
                similarities=self.similarities,
                groups=self.groups,
                pool_ids=np.asarray(self.pool_ids, dtype=str),
                meta_json=np.asarray(json.dumps(self.meta)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> PseudoLabels:
        """Read a file written by :meth:`save`, checking its format version and array shapes."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pseudo-label file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = {"triplets", "similarities", "groups", "pool_ids", "meta_json"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not an AlignLab pseudo-label file (missing {sorted(missing)})")
            labels = cls(
                data["triplets"].astype(np.int64),
                data["similarities"].astype(np.float32),
                data["groups"].astype(np.int64),
                tuple(data["pool_ids"].tolist()),
                json.loads(str(data["meta_json"])),
            )
        if labels.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {labels.meta.get('format_version')} is not {FORMAT_VERSION}"
            )
        return labels

    def check_compatible(self, *, backbone: str, weights_id: str, pool_ids) -> None:
        """Raise LabelsMismatchError unless the labels were made for this backbone, weights and pool."""
        expected = {"backbone": backbone, "weights_id": weights_id, "pool_digest": pool_digest(pool_ids)}
        for key, value in expected.items():
            if self.meta.get(key) != value:
                raise LabelsMismatchError(
                    f"pseudo-labels were made for {key} {self.meta.get(key)!r} but training uses {value!r}; "
                    "regenerate the labels for this backbone and image pool"
                )

    def require_at_least(self, n_triplets: int) -> None:
        """Raise TooFewLabelsError if there are fewer than ``n_triplets`` triplets."""
        if len(self) < max(1, n_triplets):
            raise TooFewLabelsError(
                f"pseudo-label set has {len(self)} triplets; training needs at least {max(1, n_triplets)} "
                "(generate more with a larger n_triplets or a larger image pool)"
            )


def cluster_pool(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster id per pool image (MiniBatchKMeans, deterministic for a seed)."""
    from sklearn.cluster import MiniBatchKMeans

    if n_clusters > len(embeddings):
        raise ValueError(f"n_clusters={n_clusters} exceeds the {len(embeddings)} images in the pool")
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=1024)
    return kmeans.fit_predict(np.asarray(embeddings, dtype=np.float32)).astype(np.int64)


def _pick_group(clusters: np.ndarray, config: PseudoLabelConfig, rng: np.random.Generator) -> np.ndarray:
    """Images of one group: up to ``images_per_cluster`` images from each of a few random clusters."""
    ids = np.unique(clusters)
    chosen = rng.choice(ids, size=min(config.setting("clusters_per_group"), len(ids)), replace=False)
    per_cluster = config.setting("images_per_cluster")
    members = [rng.permutation(np.flatnonzero(clusters == c))[:per_cluster] for c in chosen]
    return np.concatenate(members)


def _draw(members: list[np.ndarray], weights: np.ndarray, n: int, rng) -> np.ndarray:
    """n draws of a cluster (by weight) and one of its members, as [n] image ids."""
    picks = rng.choice(len(members), size=n, p=weights / weights.sum())
    return np.array([members[c][rng.integers(len(members[c]))] for c in picks], dtype=np.int64)


def _candidates(group: np.ndarray, clusters: np.ndarray, strategy: str, n: int, rng) -> np.ndarray:
    """[<=n, 3] candidate triplets among ``group`` (may contain repeats, filtered by the caller)."""
    ids = np.unique(clusters[group])
    members = [group[clusters[group] == c] for c in ids]
    sizes = np.array([len(m) for m in members], dtype=float)
    if strategy == "random":
        return (
            np.stack([rng.choice(group, size=3, replace=False) for _ in range(n)])
            if len(group) >= 3
            else np.empty((0, 3), np.int64)
        )
    if strategy == "between_cluster":
        if len(ids) < 3:
            return np.empty((0, 3), np.int64)
        picks = np.stack([rng.choice(len(ids), size=3, replace=False) for _ in range(n)])
        return np.array([[members[c][rng.integers(len(members[c]))] for c in row] for row in picks])
    need = 3 if strategy == "within_cluster" else 2
    eligible = np.flatnonzero(sizes >= need)
    if not eligible.size or (strategy == "cluster_border" and len(ids) < 2):
        return np.empty((0, 3), np.int64)
    anchors = rng.choice(eligible, size=n)
    rows = []
    for a in anchors:
        inside = rng.choice(members[a], size=need, replace=False)
        if strategy == "within_cluster":
            rows.append(inside)
            continue
        others = np.delete(np.arange(len(ids)), a)
        rows.append(np.append(inside, _draw([members[o] for o in others], sizes[others], 1, rng)))
    return np.asarray(rows, dtype=np.int64)


def _new_rows(rows: np.ndarray, seen: set[tuple[int, ...]], limit: int) -> np.ndarray:
    """First ``limit`` rows whose unordered image sets were not sampled before (``seen`` is updated)."""
    keep: list[int] = []
    for index, key in enumerate(map(tuple, np.sort(rows, axis=1).tolist())):
        if key not in seen and len(keep) < limit:
            seen.add(key)
            keep.append(index)
    return rows[keep] if keep else np.empty((0, 3), np.int64)


def sample_grouped_triplets(clusters: np.ndarray, config: PseudoLabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(triplets [m, 3], groups [m])`` sampled group by group with ``config.strategy``; deterministic.
    Unset settings are derived from the clustered pool (``PseudoLabelConfig.for_pool``)."""
    sizes = np.bincount(clusters)
    config = replace(config, n_clusters=config.n_clusters or int((sizes > 0).sum()))
    config = config.for_pool(len(clusters), sizes[sizes > 0].tolist())
    n_triplets, per_group = config.setting("n_triplets"), config.setting("triplets_per_group")
    rng = np.random.default_rng(config.seed)
    triplets: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    seen: set[tuple[int, ...]] = set()
    failures = 0
    total = 0
    while total < n_triplets:
        group = _pick_group(clusters, config, rng)
        want = min(per_group, n_triplets - total)
        rows = _new_rows(_candidates(group, clusters, config.strategy, 2 * want, rng), seen, want)
        if not len(rows):
            failures += 1
            if failures > 50:
                raise ValueError(
                    f"cannot sample {config.strategy} triplets (or no new ones): groups of "
                    f"{config.clusters_per_group} clusters x {config.images_per_cluster} images from "
                    f"{len(np.unique(clusters))} clusters have no "
                    "unused valid triplet (cluster_border needs >= 2 clusters and one with >= 2 images, "
                    "within_cluster a cluster with >= 3 images, between_cluster >= 3 clusters; "
                    "or ask for fewer triplets than the pool allows)"
                )
            continue
        triplets.append(rows)
        groups.append(np.full(len(rows), len(groups), dtype=np.int64))
        total += len(rows)
    return np.concatenate(triplets), np.concatenate(groups)


def label_triplets(
    embeddings: np.ndarray, triplets: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each triplet so its most similar pair is (0, 1), odd one out last and s02 >= s12; return
    ``(triplets, similarities / temperature)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    z = np.asarray(embeddings, dtype=np.float64)
    sims = pair_similarities(z, triplets)
    order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[sims.argmax(axis=1)]  # pair first, odd one last
    ordered = np.take_along_axis(triplets, order, axis=1)
    resorted = pair_similarities(z, ordered)
    swap = resorted[:, 1] < resorted[:, 2]
    ordered[swap] = ordered[swap][:, [1, 0, 2]]
    return ordered, (pair_similarities(z, ordered) / temperature).astype(np.float32)


def mean_entropy(similarities: np.ndarray, temperature: float = 1.0) -> float:
    """Mean Shannon entropy (nats) of ``softmax(similarities / temperature)`` over rows."""
    return float(entropy(triplet_probabilities(np.asarray(similarities, np.float64), temperature)).mean())


def temperature_for_entropy(similarities: np.ndarray, target: float, iterations: int = 100) -> float:
    """The temperature T at which mean entropy of softmax(similarities / T) equals ``target`` (bisection on
    log T; mean entropy rises monotonically with T)."""
    if not 0 < target < np.log(3):
        raise ValueError(f"target mean entropy must lie in (0, ln 3); got {target}")
    scale = float(np.abs(similarities).max()) or 1.0
    low, high = np.log(scale * 1e-8), np.log(scale * 1e8)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if mean_entropy(similarities, np.exp(mid)) < target else (low, mid)
    return float(np.exp(0.5 * (low + high)))


def _label_set(
    space: str, embeddings, triplets, groups, temperature, provenance, config, clusters
) -> PseudoLabels:
    ordered, sims = label_triplets(embeddings, triplets, temperature)
    meta = {
        "format_version": FORMAT_VERSION,
        "space": space,
        "temperature": float(temperature),
        "backbone": provenance.backbone,
        "weights_id": provenance.weights_id,
        "pool_digest": pool_digest(provenance.pool_ids),
        "teacher_id": provenance.teacher_id,
        "config": asdict(config),
        "cluster_sizes": np.bincount(clusters).tolist(),
    }
    return PseudoLabels(ordered, sims, groups, tuple(provenance.pool_ids), meta)


def make_pseudolabels(
    features: np.ndarray,
    teacher: TeacherLike,
    provenance: LabelProvenance,
    config: PseudoLabelConfig = PseudoLabelConfig(),
) -> dict[str, PseudoLabels]:
    """``{"aligned": ..., "untransformed": ...}``: label sets over the same teacher-space clusters and
    triplets; their ``meta["config"]`` holds the settings used (unset ones derived from the pool).

    ``features`` [n, D] are the raw backbone features of the pool, in ``provenance.pool_ids`` order.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(provenance.pool_ids):
        raise ValueError(
            f"features must be [n_pool, D] with n_pool = {len(provenance.pool_ids)} pool ids; "
            f"got shape {features.shape}"
        )
    if len(features) < 3 or not np.isfinite(features).all():
        raise ValueError("the image pool needs at least 3 images with finite features")
    aligned_space = np.asarray(teacher.transform(features), dtype=np.float32)
    clusters = cluster_pool(aligned_space, config.for_pool(len(features)).setting("n_clusters"), config.seed)
    config = config.for_pool(len(features), np.bincount(clusters).tolist())  # the settings used, stored
    triplets, groups = sample_grouped_triplets(clusters, config)
    aligned = _label_set(
        "aligned", aligned_space, triplets, groups, teacher.temperature, provenance, config, clusters
    )
    raw_sims = pair_similarities(features.astype(np.float64), triplets)
    raw_temperature = temperature_for_entropy(raw_sims, mean_entropy(aligned.similarities))
    untransformed = _label_set(
        "untransformed", features, triplets, groups, raw_temperature, provenance, config, clusters
    )
    return {"aligned": aligned, "untransformed": untransformed}
