"""2-D maps of the same images under two representations, put into one frame so movement is visible.

``paired_maps(before, after, MapConfig())`` embeds each representation in 2-D (UMAP by default, PCA as
the fast option), scales both maps to unit RMS radius around the origin, and rotates/reflects the
*after* map onto the *before* map (orthogonal Procrustes on the 2-D coordinates). The scale is not
fitted: a least-squares scale shrinks a map that changed a lot towards its centre.
Then the displacement of an image between the two maps is movement, not an arbitrary rotation or
sign flip of the layout. PCA maps are linear, so displacements are faithful; UMAP keeps neighbourhoods
but not global positions, so on UMAP maps trust who sits next to whom, and read the amount of
reorganisation from ``alignment.reorganisation`` (computed in the full-dimensional space).

UMAP's first fit in a process costs a numba JIT compilation (~17 CPU-s); ``warm_umap()`` pays it once
per process (idempotent, thread-safe), after which fits cost seconds; ``start_umap_warmup()`` pays it
in a background thread. ``umap`` is imported lazily.

At scale: ``paired_maps(..., neighbours=...)`` hands UMAP the neighbour lists already searched for the
reorganisation measures (alignment.neighbours), so each representation is searched once, and
``cache_dir`` keeps every 2-D layout on disk per (representation, settings): a representation is
fitted once, whichever pair and whichever process asks for it (alignment.disk_cache). Above
``FEWER_EPOCHS_ABOVE`` images UMAP runs fewer optimisation epochs (``umap_epochs``): the epochs were
four fifths of a 50,000-image fit.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from alignment.disk_cache import array_digest, cached_arrays

if TYPE_CHECKING:
    from alignment.neighbours import Neighbours

Method = Literal["umap", "pca"]
METHODS: tuple[str, ...] = ("umap", "pca")
MIN_IMAGES = 5
FEWER_EPOCHS_ABOVE = 10_000  # up to here UMAP's own default: 500 epochs (200 above 10,000 images)
EPOCH_BUDGET = 4_000_000  # images x epochs above FEWER_EPOCHS_ABOVE ...
MIN_EPOCHS = 50  # ... but never fewer epochs than this


@dataclass(frozen=True)
class MapConfig:
    """How to draw a map. Rows are L2-normalised first by default, matching cosine neighbourhoods."""

    method: Method = "umap"
    seed: int = 0
    normalise_rows: bool = True
    n_neighbors: int = 15  # UMAP
    min_dist: float = 0.1  # UMAP
    metric: str = "cosine"  # UMAP; PCA is Euclidean on the (normalised) rows

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"map method must be one of {METHODS}; got {self.method!r}")
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be >= 2; got {self.n_neighbors}")


@dataclass(frozen=True)
class Procrustes:
    """``aligned = scale * (moving - mean_moving) @ rotation + translation``; disparity in [0, 1]."""

    aligned: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    disparity: float  # residual sum of squares / sum of squares of the centred reference


@dataclass(frozen=True)
class PairedMaps:
    """Two maps of the same n images in one frame; ``displacement[i]`` = how far image i moved."""

    before: np.ndarray  # [n, 2], centred, unit RMS radius
    after: np.ndarray  # [n, 2], centred, unit RMS radius, rotated/reflected onto ``before``
    config: MapConfig
    disparity: float
    seconds: float
    displacement: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "displacement", np.linalg.norm(self.after - self.before, axis=1))


def check_embeddings(embeddings, name: str = "embeddings") -> np.ndarray:
    """Return a float [n, D] array (float32 stays float32: half the memory at scale; anything else becomes
    float64), or raise ValueError saying what was wrong."""
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_images, n_features]; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if arr.shape[0] < MIN_IMAGES or arr.shape[1] < 2:
        raise ValueError(f"{name} needs at least {MIN_IMAGES} images and 2 features; got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} row {bad[0]} contains NaN or infinity")
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_2d(embeddings, config: MapConfig = MapConfig(), neighbours: Neighbours | None = None) -> np.ndarray:
    """[n, 2] coordinates of ``embeddings`` [n, D] (seeded: the same input gives the same map).

    ``neighbours`` (cosine, of these rows) spare UMAP its own neighbour search; PCA ignores them.
    """
    x = check_embeddings(embeddings)
    if config.normalise_rows:
        x = normalise_rows(x)
    if config.method == "pca":
        return _pca_2d(x)
    return _umap_2d(x, config, neighbours)


def cached_embed_2d(
    embeddings, config: MapConfig, neighbours: Neighbours | None = None, cache_dir: Path | None = None
) -> np.ndarray:
    """``embed_2d``, read back from ``cache_dir`` when this representation was mapped with these settings
    before (no caching when ``cache_dir`` is None)."""
    x = check_embeddings(embeddings)
    return cached_arrays(cache_dir, _layout_name(x, config), lambda: {"xy": embed_2d(x, config, neighbours)})[
        "xy"
    ]


def layout_cached(embeddings, config: MapConfig, cache_dir: Path) -> bool:
    """Whether ``cached_embed_2d`` would read this layout from ``cache_dir`` (nothing to fit or compile)."""
    return (Path(cache_dir) / f"{_layout_name(check_embeddings(embeddings), config)}.npz").is_file()


def _layout_name(x: np.ndarray, config: MapConfig) -> str:
    settings = repr(sorted(asdict(config).items())) + f" epochs={umap_epochs(x.shape[0])}"
    return f"map-{config.method}-{array_digest(x, settings)}"


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Top-2 principal component scores from the smaller of the covariance and Gram matrices (exact,
    and much cheaper than a full SVD); each axis's sign makes its largest-magnitude score positive."""
    from scipy.linalg import eigh

    centred = x - x.mean(axis=0)
    n, d = centred.shape
    if d <= n:
        _, axes = eigh(centred.T @ centred, subset_by_index=[d - 2, d - 1])
        scores = centred @ axes[:, ::-1]
    else:
        values, vectors = eigh(centred @ centred.T, subset_by_index=[n - 2, n - 1])
        scores = vectors[:, ::-1] * np.sqrt(np.maximum(values[::-1], 0.0))
    largest = scores[np.abs(scores).argmax(axis=0), np.arange(2)]
    return scores * np.where(largest < 0, -1.0, 1.0)


def umap_epochs(n_images: int) -> int | None:
    """UMAP's optimisation epochs for a map of ``n_images``: None (UMAP's default) up to
    ``FEWER_EPOCHS_ABOVE``, then ``EPOCH_BUDGET / n_images`` within [MIN_EPOCHS, 200] (80 at 50,000).

    Each epoch costs time linear in images (about 0.2 CPU-s at 50,000), so a fixed budget keeps a large
    map's fit bounded; at 50,000 images (bench.maps' data) 200 -> 100 -> 50 epochs kept 15.3% -> 15.0%
    -> 14.6% of each image's 15 map neighbours among its 15 nearest in the representation, and every
    category's images together (neighbour purity 1.0).
    """
    if n_images <= FEWER_EPOCHS_ABOVE:
        return None
    return int(min(200, max(MIN_EPOCHS, EPOCH_BUDGET // n_images)))


def _umap_2d(x: np.ndarray, config: MapConfig, neighbours: Neighbours | None = None) -> np.ndarray:
    import umap

    n_neighbors = min(config.n_neighbors, x.shape[0] - 1)
    usable = (
        neighbours is not None and config.metric == "cosine" and neighbours.indices.shape[1] >= n_neighbors
    )
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=config.min_dist,
        metric=config.metric,
        random_state=config.seed,
        n_jobs=1,
        n_epochs=umap_epochs(x.shape[0]),
        precomputed_knn=_umap_knn(neighbours, n_neighbors)
        if neighbours is not None and usable
        else (None, None, None),
    )
    with warnings.catch_warnings():  # "no search index: transform unavailable" (a map never transforms)
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def _umap_knn(neighbours: Neighbours, n_neighbors: int) -> tuple[np.ndarray, np.ndarray, None]:
    """UMAP's layout of a neighbour graph: each row itself first (distance 0), then its nearest others."""
    n = len(neighbours.indices)
    indices = np.hstack([np.arange(n)[:, None], neighbours.indices[:, : n_neighbors - 1]])
    distances = np.hstack([np.zeros((n, 1)), neighbours.distances[:, : n_neighbors - 1]])
    return indices.astype(np.int32), np.maximum(distances, 0.0).astype(np.float32), None


_umap_warm_lock = threading.Lock()
_umap_warm_seconds: list[float] = []  # filled once per process by warm_umap


def warm_umap() -> float:
    """Compile UMAP's numba code once per process with a tiny fit; returns the seconds that took (the
    neighbour index is plain numpy: nothing to compile).

    Thread-safe: a caller arriving while another thread compiles waits for it instead of compiling again.
    """
    with _umap_warm_lock:
        if not _umap_warm_seconds:
            start = time.perf_counter()
            _umap_2d(np.random.default_rng(0).normal(size=(64, 8)), MapConfig(n_neighbors=10))
            _umap_warm_seconds.append(time.perf_counter() - start)
        return _umap_warm_seconds[0]


def start_umap_warmup() -> threading.Thread:
    """Compile UMAP in a background thread (e.g. at server start) so the first UMAP map does not wait."""
    thread = threading.Thread(target=warm_umap, name="umap-warmup", daemon=True)
    thread.start()
    return thread


def unit_frame(xy: np.ndarray) -> np.ndarray:
    """Centre a map and scale it to unit RMS radius, so displacements are comparable across maps."""
    centred = xy - xy.mean(axis=0)
    rms = np.sqrt((centred**2).sum(axis=1).mean())
    return centred / max(rms, 1e-12)


def procrustes_align(reference: np.ndarray, moving: np.ndarray, *, fit_scale: bool = True) -> Procrustes:
    """Best rotation/reflection, translation and (if ``fit_scale``) uniform scale taking ``moving`` onto
    ``reference``."""
    reference, moving = np.asarray(reference, float), np.asarray(moving, float)
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError(
            f"Procrustes needs two maps of the same shape [n, d]; got {reference.shape}, {moving.shape}"
        )
    ref_mean, mov_mean = reference.mean(axis=0), moving.mean(axis=0)
    ref_c, mov_c = reference - ref_mean, moving - mov_mean
    u, s, vt = np.linalg.svd(mov_c.T @ ref_c)
    rotation = u @ vt
    scale = float(s.sum() / max((mov_c**2).sum(), 1e-12)) if fit_scale else 1.0
    aligned = scale * mov_c @ rotation + ref_mean
    disparity = float(((aligned - reference) ** 2).sum() / max((ref_c**2).sum(), 1e-12))
    return Procrustes(aligned, rotation, scale, ref_mean, disparity)


def paired_maps(
    before,
    after,
    config: MapConfig = MapConfig(),
    *,
    neighbours: tuple[Neighbours, Neighbours] | None = None,
    cache_dir: Path | None = None,
) -> PairedMaps:
    """Maps of the same images before and after, in the before map's frame (see module docstring)."""
    before_x = check_embeddings(before, "embeddings_before")
    after_x = check_embeddings(after, "embeddings_after")
    if before_x.shape[0] != after_x.shape[0]:
        raise ValueError(
            f"before and after must hold the same images (rows); got {before_x.shape[0]} and "
            f"{after_x.shape[0]} rows"
        )
    start = time.perf_counter()
    nb_before, nb_after = neighbours or (None, None)
    before_xy = unit_frame(cached_embed_2d(before_x, config, nb_before, cache_dir))
    after_xy = unit_frame(cached_embed_2d(after_x, config, nb_after, cache_dir))
    fit = procrustes_align(before_xy, after_xy, fit_scale=False)
    return PairedMaps(before_xy, fit.aligned, config, fit.disparity, time.perf_counter() - start)
