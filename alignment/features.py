"""Batched feature extraction with a content-addressed disk cache.

``extract_features(backbone, image_paths, cache_dir=...) -> float32 [n, D]`` (pooled pre-logits) and
``extract_activations(backbone, image_paths, stage=k, cache_dir=...) -> float32 [n, C, H, W]`` (the
trunk's output before ``blocks[k]``, what the student trains its last stages on);
``extract_pooled_activations(backbone, image_paths, stage=k, grid=G, ...)`` such a map (or the last one)
averaged over space or over each cell of a G x G grid, and ``extract_source(name, ...)`` any source of a
feature spec (``alignment.backbones.parse_source``).

Every vector is cached under a key made of (backbone name, weights hash, preprocessing, output) and the
sha256 of the image file's bytes, so re-runs load from disk and new images compute only what is
missing; renaming or moving a file does not invalidate it, editing its pixels does. Images decode in a
DataLoader's worker processes while the main process runs the network under ``torch.inference_mode``
(channels-last memory format, which is faster for convolutional backbones on CPU; on the GPU when CUDA is
present).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from alignment.backbones import Backbone, create_backbone, feature_map, parse_source, split_at_stage
from alignment.distributed import select_device
from common.atomic import atomic_write

Progress = Callable[[int, int], None]  # (images computed so far, images to compute)
MAX_SHARDS = 32  # merge the cache's shard files once there are more than this


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded."""


def default_num_workers() -> int:
    """Decoding is ~10% of a CPU forward pass, so a quarter of the cores is enough (at least one)."""
    return max(1, (os.cpu_count() or 1) // 4)


def image_content_hash(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (hex, 32 digits): the image's identity in every cache."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise ImageDecodeError(f"cannot read image {path}: {error.strerror or error}") from None
    return digest.hexdigest()[:32]


class _ImageFiles(Dataset):
    """Decodes and preprocesses image files (runs inside DataLoader workers)."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable):
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return self.preprocess(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise ImageDecodeError(f"cannot decode image {path}: {error}") from None


class FeatureCache:
    """Append-only store of vectors keyed by image content hash, one directory per extraction key."""

    def __init__(self, root: str | os.PathLike, key: dict):
        text = json.dumps(key, sort_keys=True)
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["backbone"])
        self.directory = Path(root) / f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        self.key = key

    def _shards(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.npz"))

    def load(self, wanted: set[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the wanted hashes (all shards are scanned; only wanted rows are kept)."""
        found: dict[str, np.ndarray] = {}
        for shard in self._shards():
            with np.load(shard) as data:
                hashes, values = data["hashes"], data["values"]
                for row in np.flatnonzero(np.isin(hashes, list(wanted))):
                    found[str(hashes[row])] = values[row]
        return found

    def add(self, hashes: list[str], values: np.ndarray) -> None:
        """Write one new shard atomically, then merge shards if there are too many."""
        if not hashes:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / "key.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.key, indent=2, sort_keys=True))
        self._write(self.directory / f"shard-{uuid.uuid4().hex}.npz", np.asarray(hashes), values)
        shards = self._shards()
        if len(shards) > MAX_SHARDS:
            self._merge(shards)

    @staticmethod
    def _write(target: Path, hashes: np.ndarray, values: np.ndarray) -> None:
        atomic_write(target, lambda handle: np.savez(handle, hashes=hashes, values=values))

    def _merge(self, shards: list[Path]) -> None:
        hashes, values = [], []
        for shard in shards:
            with np.load(shard) as data:
                hashes.append(data["hashes"])
                values.append(data["values"])
        self._write(
            self.directory / f"shard-{uuid.uuid4().hex}.npz", np.concatenate(hashes), np.concatenate(values)
        )
        for shard in shards:
            shard.unlink(missing_ok=True)


def _run_network(
    network: nn.Module,
    paths: list[Path],
    preprocess: Callable,
    batch_size: int,
    num_workers: int,
    progress: Progress | None,
) -> np.ndarray:
    """Forward all images through ``network`` in batches; images decode in worker processes.

    On a machine with CUDA the network runs on the GPU (fp32, pinned host memory for the batches) and is
    moved back to the CPU afterwards, since the backbone it belongs to is shared with the caller."""
    device = select_device()
    loader = DataLoader(
        _ImageFiles(paths, preprocess),
        batch_size=batch_size,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
    # Module.to accepts a device and a memory format together at runtime, but no typed overload has both
    network = network.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    outputs, done = [], 0
    try:
        with torch.inference_mode():
            for batch in loader:
                batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                outputs.append(network(batch).float().cpu().numpy())
                done += len(batch)
                if progress is not None:
                    progress(done, len(paths))
    finally:
        network.to("cpu")
    return np.concatenate(outputs)


def _extract_cached(
    backbone: Backbone,
    network: nn.Module,
    output: str,
    image_paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    batch_size: int,
    num_workers: int | None,
    progress: Progress | None,
) -> np.ndarray:
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("image_paths is empty; expected at least one image file")
    hashes = [image_content_hash(p) for p in paths]
    key = {
        "backbone": backbone.name,
        "weights": backbone.weights_id,
        "preprocessing": backbone.preprocessing_id,
        "output": output,
    }
    cache = FeatureCache(cache_dir, key)
    known = cache.load(set(hashes))
    missing = list(dict.fromkeys(h for h in hashes if h not in known))  # each distinct content once
    if progress is not None:
        progress(0, len(missing))
    if missing:
        first_path = {h: p for h, p in zip(reversed(hashes), reversed(paths), strict=True)}
        workers = default_num_workers() if num_workers is None else num_workers
        computed = _run_network(
            network, [first_path[h] for h in missing], backbone.preprocess, batch_size, workers, progress
        )
        cache.add(missing, computed)
        known.update(zip(missing, computed, strict=True))
    return np.stack([known[h] for h in hashes]).astype(np.float32, copy=False)


def extract_features(
    backbone: Backbone,
    image_paths: Sequence[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Pooled pre-logit features, float32 [n, feature_dim], one row per path (cached on disk)."""
    return _extract_cached(
        backbone, backbone.module, "features", image_paths, cache_dir, batch_size, num_workers, progress
    )


def extract_activations(
    backbone: Backbone,
    image_paths: Sequence[str | os.PathLike],
    *,
    stage: int,
    cache_dir: str | os.PathLike,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Trunk activations before ``blocks[stage]`` (see ``split_at_stage``), float32 [n, C, H, W], cached."""
    trunk, _ = split_at_stage(backbone, stage)
    return _extract_cached(
        backbone,
        trunk,
        f"activations_before_stage_{stage}",
        image_paths,
        cache_dir,
        batch_size,
        num_workers,
        progress,
    )


def extract_pooled_activations(
    backbone: Backbone,
    image_paths: Sequence[str | os.PathLike],
    *,
    stage: int | None,
    grid: int = 1,
    cache_dir: str | os.PathLike,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Trunk activations before ``blocks[stage]`` (or, for stage None, the last map before global pooling)
    averaged over each cell of a ``grid`` x ``grid`` grid (torch's adaptive average pooling: cell i spans
    rows floor(i H / G) to ceil((i + 1) H / G)), float32 [n, C * grid * grid] channel-major, cached (only
    the pooled vectors are stored, not the maps). grid 1: averaged over all of space, [n, C]."""
    if grid < 1:
        raise ValueError(f"grid must be 1 or more cells per side; got {grid}")
    network = nn.Sequential(feature_map(backbone, stage), nn.AdaptiveAvgPool2d(grid), nn.Flatten())
    layer = "final_map" if stage is None else f"before_stage_{stage}"
    return _extract_cached(
        backbone,
        network,
        f"pooled_{layer}" if grid == 1 else f"grid{grid}_{layer}",
        image_paths,
        cache_dir,
        batch_size,
        num_workers,
        progress,
    )


def extract_source(
    name: str,
    image_paths: Sequence[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike,
    weights_dir: str | os.PathLike,
    progress: Progress | None = None,
) -> np.ndarray:
    """Features of one source (``alignment.backbones.parse_source``): a backbone's pooled pre-logits, or one
    of its maps (an intermediate layer, or the last map on a grid) averaged over space or over the cells of
    a grid; float32 [n, D], cached."""
    source = parse_source(name)
    backbone = create_backbone(source.backbone, cache_dir=weights_dir)
    if source.stage is None and source.grid is None:
        return extract_features(backbone, image_paths, cache_dir=cache_dir, progress=progress)
    return extract_pooled_activations(
        backbone,
        image_paths,
        stage=source.stage,
        grid=source.grid or 1,
        cache_dir=cache_dir,
        progress=progress,
    )


SourceScale = tuple[float, float]  # (mean, SD) a feature source is standardised with


def combine_sources(
    parts: Sequence[np.ndarray], scales: Sequence[SourceScale] | None = None
) -> tuple[np.ndarray, list[SourceScale]]:
    """Several backbones' features of the same images side by side, each standardised by a scalar mean and SD
    first: the teacher standardises with one scalar, so without this the source with the largest
    activations would dominate every similarity. ``scales``: the (mean, SD) per source to use -- those of
    the images a teacher was fitted on when it is applied to other images; default: the parts' own.
    Returns the features and the scales used; one source passes through unchanged (no scales)."""
    if not parts or any(len(part) != len(parts[0]) for part in parts):
        raise ValueError("combine_sources needs one or more feature arrays with the same number of rows")
    if len(parts) == 1:
        return parts[0], []
    if scales is None:
        scales = [(float(part.mean()), float(part.std())) for part in parts]
    if len(scales) != len(parts):
        raise ValueError(
            f"{len(parts)} feature sources need {len(parts)} (mean, SD) scales; got {len(scales)}"
        )
    if not all(np.isfinite(sd) and sd > 0 for _, sd in scales):
        raise ValueError("a feature source has zero or non-finite spread; cannot standardise it")
    combined = np.hstack([(part - mean) / sd for part, (mean, sd) in zip(parts, scales, strict=True)])
    return combined.astype(np.float32), [(float(mean), float(sd)) for mean, sd in scales]
