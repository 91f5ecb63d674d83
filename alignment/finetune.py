"""Full fine-tuning of the student on images streamed from disk (AligNet §4 at scale; GPU path).

The cached-trunk student (``alignment.student``) stays the CPU default: it trains the last stage on frozen
activations computed once, which is what a 2-core machine can afford. This mode trains the whole network
(or everything from ``train_from_stage`` on) on decoded images, so it can augment and can use any pool:
a folder of any size (ImageNet-like ``class/image.JPEG`` layout or flat) or a text file listing images.

Per global step it takes ``batch_triplets`` pseudo-labelled triplets (3 images each, flattened to one
forward pass, as in AligNet), split over the processes and over ``accumulation_steps`` micro-batches; the loss
is the same per-triplet student loss (``alignment.student_losses``), averaged over the global batch, with Adam
decaying toward the initial weights and the warm-up + cosine schedule of the cached mode.

Augmentation, and why "per triplet": AligNet's released config uses none (bicubic resize to 224, [0, 1]);
``augmentation="none"`` reproduces that. ``"triplet"`` (default) draws one random resized crop (area fraction
in ``crop_scale``, aspect ratio in [3/4, 4/3], position) and one horizontal flip per triplet, in coordinates
relative to each image, and applies the same parameters to its three images. The teacher labelled the
three un-augmented images; transforming them alike keeps the comparison symmetric (no image is zoomed or
mirrored differently from the other two, so the crop cannot become a cue for the odd one out), while
different triplets, and the same triplet in different epochs, still see different views. The crop scale
starts at 0.35, not torchvision's 0.08: a tiny crop can cut away the object the label is about.
The parameters are a function of (seed, epoch, triplet row), so data-loading workers, resumes and several
processes all see the same views.

Data path: each image is decoded once into a uint8 tensor (downscaled first only if its short side exceeds
``kept_side``, at which the smallest crop still spans ``image_size`` pixels) and kept in memory within
``image_cache_mb`` per process (``DecodedImages``; past the budget, images are decoded again at each read).
A view is then cropped from that tensor, resized bicubic with antialiasing (PIL's filter) in float, flipped
and normalised, written straight into the micro-batch tensor. Per step the loop thus does what a bare step
on pre-decoded images does plus crops and resizes, instead of decoding 3 JPEGs per triplet.

Speed on a GPU: images decode and augment in DataLoader worker processes (pinned memory when CUDA), the
forward runs under bf16 autocast (``precision="auto"``; none on CPU) in channels-last memory format, and
DDP runs under ``torchrun`` (nccl on GPUs, gloo on CPU processes; ``alignment.distributed``). BatchNorm
statistics stay frozen, as in the cached mode, so N processes compute what one does.

Artifacts in ``out_dir``: ``finetune_config.json``, ``checkpoint.pt`` (resumable, written atomically),
``student.pt`` (final weights: ``load_finetuned``), ``history.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from alignment import DEFAULT_BACKBONE
from alignment.backbones import create_backbone
from alignment.conventions import pair_similarities
from alignment.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown_distributed,
    unit_sampler,
    wrap_for_training,
)
from alignment.pseudolabels import LabelsMismatchError, PseudoLabels, TooFewLabelsError
from alignment.student import (
    CheckpointedRun,
    Progress,
    RunState,
    TrainResult,
    new_triplet_head,
    print_progress,
)
from alignment.student_losses import get_student_loss
from alignment.student_optimiser import DecayToInitAdam, warmup_cosine_schedule
from common.atomic import atomic_path, atomic_write
from common.config import LoadableConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class FinetuneConfig(LoadableConfig):
    """Full fine-tuning settings; defaults follow AligNet's student where a GPU makes them affordable."""

    SECTION = "finetune"

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    image_size: int = 224
    train_from_stage: int = 0  # 0: the whole network (stem included); k: stem and stages < k frozen
    head_dim: int = 1024
    loss: str = "jsd"
    tau: float = 100.0
    lr: float = 3e-5  # AligNet's peak lr for a fully fine-tuned network
    decay_to_init: float = 1.0
    warmup_fraction: float = 0.05
    epochs: float = 1.0  # passes over the pseudo-labelled triplets
    batch_triplets: int = 64  # global batch (all processes, all micro-batches)
    accumulation_steps: int = 1  # micro-batches per optimiser step (per process)
    augmentation: Literal["triplet", "none"] = "triplet"
    crop_scale: tuple[float, float] = (0.35, 1.0)
    flip: bool = True
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA
    num_workers: int = 2  # on the CPU only as many as torch's threads leave cores for (loader_workers)
    image_cache_mb: int = 1024  # decoded images kept per process, split among its workers (DecodedImages)
    min_triplets: int = 64
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        get_student_loss(self.loss)
        for name in ("image_size", "head_dim", "batch_triplets", "accumulation_steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.log_every < 1 or min(self.num_workers, self.train_from_stage, self.image_cache_mb) < 0:
            raise ValueError(
                "FinetuneConfig needs log_every >= 1 and num_workers, train_from_stage, image_cache_mb >= 0"
            )
        if self.tau <= 0 or self.lr <= 0 or self.epochs <= 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError("FinetuneConfig needs tau > 0, lr > 0, epochs > 0 and 0 <= warmup_fraction < 1")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"FinetuneConfig.crop_scale must satisfy 0 < low <= high <= 1; got {self.crop_scale}"
            )

    def save(self, path: str | Path) -> Path:
        return atomic_write(path, json.dumps(asdict(self), indent=2).encode())


# ---------------------------------------------------------------- image pools


@dataclass(frozen=True)
class ImagePool:
    """Image files of a pool; ``ids`` are paths relative to ``root`` (cheap for any pool size)."""

    root: Path
    paths: tuple[Path, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.relative_to(self.root).as_posix() for p in self.paths)

    @classmethod
    def from_source(cls, source: str | os.PathLike) -> ImagePool:
        """A folder (searched recursively for image files, sorted) or a text file of image paths, one per
        line, relative to the file's folder (blank lines and ``#`` comments skipped)."""
        source = Path(source)
        if source.is_dir():
            paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            root = source
        elif source.is_file():
            root = source.parent
            lines = [line.strip() for line in source.read_text().splitlines()]
            paths = [root / line for line in lines if line and not line.startswith("#")]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) listed in {source} do not exist, e.g. {missing[0]}"
                )
        else:
            raise FileNotFoundError(f"image pool {source} is neither a folder nor a file listing images")
        if not paths:
            raise ValueError(f"image pool {source} has no image files ({', '.join(IMAGE_SUFFIXES)})")
        return cls(root.resolve(), tuple(p.resolve() for p in paths))

    def paths_for(self, labels: PseudoLabels) -> list[Path]:
        """The file of each label pool image, matched by id: relative path first, else content hash (the
        ids the study pipeline uses). Raises LabelsMismatchError if some labelled image is not in the pool."""
        by_path = dict(zip(self.ids, self.paths, strict=True))
        missing = [i for i in labels.pool_ids if i not in by_path]
        if not missing:
            return [by_path[i] for i in labels.pool_ids]
        from alignment.features import image_content_hash

        by_hash = {image_content_hash(p): p for p in self.paths}
        missing = min(missing, [i for i in labels.pool_ids if i not in by_hash], key=len)
        if missing:
            raise LabelsMismatchError(
                f"{len(missing)} of the {len(labels.pool_ids)} labelled images are not in the pool at "
                f"{self.root} (by relative path or content hash), e.g. {missing[0]!r}; "
                "point --pool at the folder or list the labels were made for"
            )
        return [by_hash[i] for i in labels.pool_ids]


# ---------------------------------------------------------------- augmentation and data


@dataclass(frozen=True)
class CropParams:
    """One triplet's view, relative to each image: area fraction, aspect ratio (w/h), position, flip."""

    area: float
    aspect: float
    x: float
    y: float
    flip: bool


def kept_side(image_size: int, mode: str, crop_scale: tuple[float, float]) -> int:
    """Short side (px) above which a decoded image is downscaled before it is kept or cropped.

    The smallest view the augmentation can take is a crop of area ``crop_scale[0]`` at aspect 3/4 or 4/3,
    whose sides are at least ``sqrt(crop_scale[0] * 3/4)`` of the image's short side (the whole image
    without augmentation). At this side that view still spans ``image_size`` pixels, so the downscale
    drops only detail the final resize to ``image_size`` would drop anyway, and a camera-sized photo
    costs under 1 MB of memory at 224 px instead of tens of MB."""
    smallest = 1.0 if mode == "none" else math.sqrt(crop_scale[0] * 3 / 4)
    return math.ceil(image_size / smallest)


class DecodedImages:
    """The pool's images decoded into uint8 tensors [3, h, w] (short side at most ``side``), each kept in
    memory the first time it is read while the kept bytes stay within ``budget_bytes``.

    Decoding a JPEG costs more CPU than cropping and resizing it, and a pool's images recur in many
    triplets per epoch, so each image is decoded once. Memory is bounded by the budget: once it is
    full, further images are decoded from disk at every read (the same tensors, just not kept), so a pool
    of any size trains, with the first images read kept. A read is the same whether kept or not."""

    def __init__(self, paths: Sequence[Path], side: int, budget_bytes: int):
        self.paths, self.side, self.budget_bytes = list(paths), side, budget_bytes
        self.kept: dict[int, torch.Tensor] = {}
        self.kept_bytes = 0

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.kept.get(index)
        if image is None:
            image = decode_image(self.paths[index], self.side)
            if self.kept_bytes + image.numel() <= self.budget_bytes:
                self.kept[index] = image
                self.kept_bytes += image.numel()
        return image


def decode_image(path: Path, side: int) -> torch.Tensor:
    """RGB uint8 tensor [3, h, w] of an image file, downscaled (bicubic, antialiased) if its short side is
    over ``side``."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from None
    tensor = torch.from_numpy(pixels.copy())  # [3, h, w], contiguous and writable
    height, width = tensor.shape[1:]
    if min(height, width) <= side:
        return tensor
    scale = side / min(height, width)
    size = (max(side, round(height * scale)), max(side, round(width * scale)))
    return _resample(tensor, size).round_().to(torch.uint8)


def _resample(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of [3, h, w] pixels to float [3, *size] in [0, 255] (PIL's filter)."""
    out = nn.functional.interpolate(
        pixels.unsqueeze(0).float(), size=size, mode="bicubic", antialias=True, align_corners=False
    )
    return out[0].clamp_(0, 255)


@dataclass(frozen=True)
class TripletAugmentation:
    """Seeded per-triplet random resized crop + flip (see the module docstring), then resize and normalise.

    Works on decoded uint8 tensors (``DecodedImages``): crop box from the relative parameters, bicubic
    antialiased resize to ``image_size`` in float (no rounding back to uint8), flip, normalise."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "triplet"
    crop_scale: tuple[float, float] = (0.35, 1.0)
    flip: bool = True

    @property
    def kept_side(self) -> int:
        return kept_side(self.image_size, self.mode, self.crop_scale)

    def draw(self, seed: int, epoch: int, row: int) -> CropParams | None:
        if self.mode == "none":
            return None
        rng = np.random.default_rng([seed, epoch, row])
        area = rng.uniform(*self.crop_scale)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        x, y, flip = rng.uniform(), rng.uniform(), bool(rng.uniform() < 0.5) and self.flip
        return CropParams(float(area), aspect, float(x), float(y), flip)

    def pixels(self, image: torch.Tensor, params: CropParams | None) -> torch.Tensor:
        """The view of uint8 ``image`` [3, h, w] as float pixels [3, s, s] in [0, 255], not normalised."""
        size = (self.image_size, self.image_size)
        if params is None:
            return _resample(image, size)
        height, width = image.shape[1:]
        area = params.area * width * height
        w = max(1, min(width, round((area * params.aspect) ** 0.5)))
        h = max(1, min(height, round((area / params.aspect) ** 0.5)))
        left, top = round(params.x * (width - w)), round(params.y * (height - h))
        out = _resample(image[:, top : top + h, left : left + w], size)
        return out.flip(-1) if params.flip else out

    def normalise_(self, pixels: torch.Tensor) -> torch.Tensor:
        """In place: [..., 3, s, s] pixels in [0, 255] -> (pixels / 255 - mean) / std."""
        mean = torch.tensor(self.mean).view(3, 1, 1) * 255
        std = torch.tensor(self.std).view(3, 1, 1) * 255
        return pixels.sub_(mean).div_(std)


class TripletImages(Dataset):
    """Item ``(epoch, row)`` -> (the triplet's 3 augmented images [3, C, s, s], teacher similarities [3]).

    ``__getitems__`` builds a whole micro-batch ([B, 3, C, s, s], [B, 3]) in one tensor, which the
    DataLoader passes on as is (``collate_fn=as_batch``): no per-item tensors to stack, one normalisation."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: PseudoLabels,
        augment: TripletAugmentation,
        seed: int,
        cache_bytes: int = 0,
    ):
        self.triplets, self.similarities = labels.triplets, labels.similarities
        self.images = DecodedImages(paths, augment.kept_side, cache_bytes)
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, similarities = self.__getitems__([key])
        return images[0], similarities[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.augment.image_size
        batch = torch.empty(len(keys), 3, 3, size, size)
        for slot, (epoch, row) in enumerate(keys):
            params = self.augment.draw(self.seed, epoch, row)
            for k, index in enumerate(self.triplets[row]):
                batch[slot, k] = self.augment.pixels(self.images[int(index)], params)
        rows = [row for _, row in keys]
        return self.augment.normalise_(batch), torch.from_numpy(self.similarities[rows])


def as_batch(batch: Any) -> Any:
    """DataLoader ``collate_fn`` for a dataset whose ``__getitems__`` already returns the batch."""
    return batch


# ---------------------------------------------------------------- model


class FinetuneStudent(nn.Module):
    """``head(network(images))`` with ``network`` a timm feature model (``num_classes=0``)."""

    def __init__(self, network: nn.Module, head: nn.Linear, *, identity: dict, mean_std: tuple):
        super().__init__()
        self.network, self.head = network, head
        self.identity, self.mean_std = identity, mean_std
        self.eval()  # BatchNorm statistics and dropout stay frozen (deterministic, N processes = one)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.network(images))

    def prelogits(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def augmentation(self, config: FinetuneConfig) -> TripletAugmentation:
        mean, std = self.mean_std
        return TripletAugmentation(
            self.identity["image_size"], mean, std, config.augmentation, config.crop_scale, config.flip
        )


def _frozen_parts(network: nn.Module, from_stage: int) -> list[nn.Module]:
    blocks = getattr(network, "blocks", None)
    if blocks is None or not hasattr(network, "conv_stem"):
        if from_stage:
            raise ValueError(
                "train_from_stage > 0 needs a backbone with a stem and stages (timm EfficientNet)"
            )
        return []
    if from_stage > len(blocks):
        raise ValueError(f"train_from_stage must be in [0, {len(blocks)}]; got {from_stage}")
    stem = [network.get_submodule("conv_stem"), network.get_submodule("bn1")]
    return [*stem, *blocks[:from_stage]] if from_stage else []


def build_finetune_student(
    config: FinetuneConfig, *, cache_dir: str | os.PathLike | None = None
) -> FinetuneStudent:
    """The pretrained backbone (all of it trainable, or from ``train_from_stage``) plus a new triplet head."""
    backbone = create_backbone(config.backbone, config.weights, cache_dir=cache_dir)
    network = backbone.module.requires_grad_(True)
    for part in _frozen_parts(network, config.train_from_stage):
        part.requires_grad_(False)
    cfg = getattr(network, "pretrained_cfg", None) or {}
    mean_std = (tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3)))
    identity = {
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "mode": "full",
        "train_from_stage": config.train_from_stage,
        "image_size": config.image_size,
    }
    head = new_triplet_head(backbone.feature_dim, config.head_dim, config.seed)
    return FinetuneStudent(network, head, identity=identity, mean_std=mean_std)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    micro_batch: int  # triplets per micro-batch per process


def plan_finetune(n_triplets: int, config: FinetuneConfig, world_size: int) -> _Plan:
    per_process, remainder = divmod(config.batch_triplets, world_size * config.accumulation_steps)
    if remainder or not per_process:
        raise ValueError(
            f"batch_triplets={config.batch_triplets} must be divisible by processes x accumulation_steps "
            f"= {world_size} x {config.accumulation_steps}"
        )
    steps_per_epoch = n_triplets // config.batch_triplets
    if steps_per_epoch < 1:
        raise TooFewLabelsError(
            f"pseudo-labels have {n_triplets} triplets; one step needs batch_triplets={config.batch_triplets}"
        )
    total = max(1, round(config.epochs * steps_per_epoch))
    return _Plan(steps_per_epoch, total, min(int(config.warmup_fraction * total), total - 1), per_process)


def _resolved(config: FinetuneConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, channels-last) for this device."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if config.precision == "bf16" or (config.precision == "auto" and cuda) else None
    return dtype, config.channels_last == "on" or (config.channels_last == "auto" and cuda)


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader workers to start. On a GPU, as many as asked (decoding must keep up with the device). On the
    CPU, only cores torch's own threads leave free: a worker on a core a compute thread needs stalls its
    parallel ops, so there images are prepared in the training process between steps (bench/student on 2
    cores, loop / bare step at 96/128/160 px before the decoded-image cache: 84/81/88 % with one worker,
    88/82/90 % with none; decoding and PIL cropping were then ~5 % of a step's CPU, now each image is
    decoded once and a step's crops and resizes take 7-17 ms of one core at 96-160 px)."""
    if device.type != "cpu":
        return requested
    spare_cores = (os.cpu_count() or 1) - torch.get_num_threads()
    return max(0, min(requested, spare_cores))


class FinetuneTrainer(CheckpointedRun):
    """Model, optimiser, schedule and data of one run; ``step`` is one optimiser step (all micro-batches)."""

    def __init__(self, student, paths, labels, config: FinetuneConfig, plan: _Plan, ctx: DistContext):
        self.student, self.labels, self.config, self.plan, self.ctx = student, labels, config, plan, ctx
        self.dtype, self.channels_last = _resolved(config, ctx.device)
        if self.channels_last:
            student.to(memory_format=torch.channels_last)
        self.model = wrap_for_training(student, ctx)
        params = [p for p in student.parameters() if p.requires_grad]
        self.optimizer = DecayToInitAdam(params, lr=config.lr, decay_to_init=config.decay_to_init)
        self.scheduler = warmup_cosine_schedule(self.optimizer, plan.total_steps, plan.warmup_steps)
        self.workers = loader_workers(config.num_workers, ctx.device)
        cache_bytes = config.image_cache_mb * 2**20 // max(1, self.workers)  # each worker keeps its own
        self.dataset = TripletImages(paths, labels, student.augmentation(config), config.seed, cache_bytes)
        self.loss_fn = get_student_loss(config.loss)
        self.sampler = unit_sampler(len(labels), ctx, config.seed)

    def micro_batches(self, first_step: int) -> list[list[tuple[int, int]]]:
        """This process's micro-batches (lists of dataset keys) from ``first_step`` to the end of its epoch.

        The sampler gives the same global batches for any number of processes (see ``unit_sampler``)."""
        epoch, offset = divmod(first_step, self.plan.steps_per_epoch)
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        size, per_step = self.plan.micro_batch, self.plan.micro_batch * self.config.accumulation_steps
        rows = order[offset * per_step : self.plan.steps_per_epoch * per_step]
        return [[(epoch, r) for r in rows[i : i + size]] for i in range(0, len(rows), size)]

    def loader(self, first_step: int) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_sampler=self.micro_batches(first_step),
            collate_fn=as_batch,
            num_workers=self.workers,
            pin_memory=self.ctx.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
        )

    def step(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One optimiser step over ``accumulation_steps`` micro-batches; returns the global mean loss."""
        scale = self.ctx.world_size / self.config.batch_triplets  # DDP averages: global mean over triplets
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.ctx.device)
        for index, (images, targets) in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            ddp = self.model if isinstance(self.model, nn.parallel.DistributedDataParallel) else None
            sync = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
            with sync:
                per_triplet = self.triplet_losses(images, targets)
                (per_triplet.sum() * scale).backward()
            total += per_triplet.detach().sum()
        self.optimizer.step()
        self.scheduler.step()
        return float(all_reduce_sum(total, self.ctx) / self.config.batch_triplets)

    def triplet_losses(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-triplet loss of a batch [B, 3, C, s, s] (one forward pass over the 3B images)."""
        device = self.ctx.device
        flat = images.to(device, non_blocking=True).flatten(0, 1)
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with autocast:
            z = self.model(flat)
        local = torch.arange(len(flat), device=device).view(-1, 3)
        sims = pair_similarities(z.float(), local)
        return self.loss_fn(targets.to(device, non_blocking=True), sims, self.config.tau)

    def weights(self) -> dict[str, Any]:
        return {"network": self.student.network.state_dict(), "head": self.student.head.state_dict()}

    def load_weights(self, state: dict[str, Any]) -> None:
        self.student.network.load_state_dict(state["network"])
        self.student.head.load_state_dict(state["head"])


def check_finetune_inputs(student: FinetuneStudent, labels: PseudoLabels, min_triplets: int) -> None:
    labels.require_at_least(min_triplets)
    for key in ("backbone", "weights_id"):
        if labels.meta.get(key) != student.identity[key]:
            raise LabelsMismatchError(
                f"pseudo-labels were made with {key} {labels.meta.get(key)!r} but the student is "
                f"{student.identity[key]!r}; fine-tune the backbone the labels were made for (same weights)"
            )


def train_finetune(
    student: FinetuneStudent,
    pool: ImagePool,
    labels: PseudoLabels,
    config: FinetuneConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[Progress], None] | None = print_progress,
    ctx: DistContext | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Distil ``labels`` into the whole ``student`` on ``pool`` images, resuming from
    ``out_dir/checkpoint.pt``.

    ``stop_after`` ends the run (checkpointed) after that many global steps in total, e.g. to fit a time
    slot; calling again resumes exactly where it stopped."""
    ctx = ctx or DistContext()
    check_finetune_inputs(student, labels, config.min_triplets)
    paths = pool.paths_for(labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_finetune(len(labels), config, ctx.world_size)
    trainer = FinetuneTrainer(student, paths, labels, config, plan, ctx)
    step, history = trainer.resume(out_dir / "checkpoint.pt")
    if ctx.is_main:
        config.save(out_dir / "finetune_config.json")
    end = plan.total_steps if stop_after is None else min(plan.total_steps, stop_after)
    run = RunState(step, history)
    while run.step < end:
        _train_epoch(trainer, run, end, out_dir, progress)
    barrier(ctx)
    student_path = out_dir / "student.pt"
    if ctx.is_main and run.step == plan.total_steps:
        save_finetuned(student, config, student_path)
        atomic_write(out_dir / "history.json", json.dumps(run.history, indent=1).encode())
    return run.result(student_path)


def _train_epoch(
    trainer: FinetuneTrainer,
    run: RunState,
    end: int,
    out_dir: Path,
    progress: Callable[[Progress], None] | None,
) -> None:
    """The steps left in the current epoch (up to `end`), from one data loader."""
    config, plan = trainer.config, trainer.plan
    batches = iter(trainer.loader(run.step))
    steps_left_in_epoch = plan.steps_per_epoch - run.step % plan.steps_per_epoch
    for _ in range(min(steps_left_in_epoch, end - run.step)):
        loss = trainer.step([next(batches) for _ in range(config.accumulation_steps)])
        run.advance(loss, config.batch_triplets, 3 * config.batch_triplets)
        if run.due(config.log_every, end):
            run.history.append(_report(trainer, run, progress))
        if trainer.ctx.is_main and run.due(config.checkpoint_every, end):
            trainer.checkpoint(out_dir / "checkpoint.pt", run.step, run.history)
    del batches  # shut the epoch's workers down before the next loader starts


def _report(trainer: FinetuneTrainer, run: RunState, progress: Callable[[Progress], None] | None) -> dict:
    elapsed = run.elapsed()
    lr = float(trainer.scheduler.get_last_lr()[0])
    if progress is not None and trainer.ctx.is_main:
        progress(run.progress(trainer.plan.total_steps, lr, elapsed))
    return {"step": run.step, "loss": run.loss, "lr": lr, "elapsed_s": elapsed}


def save_finetuned(student: FinetuneStudent, config: FinetuneConfig, path: str | Path) -> Path:
    """Final weights (whole network + head) and the config that rebuilds the architecture."""
    path = Path(path)
    state = {
        "format": "alignlab-finetuned-student",
        "config": asdict(config),
        "identity": student.identity,
        "network": student.network.state_dict(),
        "head": student.head.state_dict(),
    }
    with atomic_path(path) as partial:
        torch.save(state, partial)
    return path


def load_finetuned(
    path: str | Path, *, cache_dir: str | os.PathLike | None = None
) -> tuple[FinetuneStudent, FinetuneConfig]:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("format") != "alignlab-finetuned-student":
        raise ValueError(f"{path} is not a fine-tuned student (save_finetuned output)")
    config = FinetuneConfig.from_dict(state["config"])
    student = build_finetune_student(config, cache_dir=cache_dir)
    student.network.load_state_dict(state["network"])
    student.head.load_state_dict(state["head"])
    student.identity = dict(state["identity"])
    return student, config


@torch.inference_mode()
def image_embeddings(
    student: FinetuneStudent,
    paths: Sequence[str | os.PathLike],
    *,
    output: str = "head",
    batch_size: int = 64,
) -> np.ndarray:
    """Embeddings of image files without augmentation (bicubic resize), for evaluation and export checks."""
    if output not in ("head", "prelogits"):
        raise ValueError(f"output must be 'head' or 'prelogits'; got {output!r}")
    mean, std = student.mean_std
    view = TripletAugmentation(student.identity["image_size"], mean, std, "none")
    embed = student if output == "head" else student.prelogits
    device = next(student.parameters()).device
    chunks = []
    for i in range(0, len(paths), batch_size):
        images = [decode_image(Path(p), view.kept_side) for p in paths[i : i + batch_size]]
        batch = view.normalise_(torch.stack([view.pixels(image, None) for image in images]))
        chunks.append(embed(batch.to(device)).float().cpu())
    return torch.cat(chunks).numpy()


def main(argv: list[str] | None = None) -> int:
    """``torchrun --nproc_per_node=N -m alignment.finetune --config C --labels L --pool DIR|LIST --out DIR``.

    ``--labels`` is a ``.npz`` label file or a shard directory (``alignment.label_shards``)."""
    from alignment.label_shards import load_labels

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", type=Path, help="FinetuneConfig as a .json/.toml file (default settings)")
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--pool", required=True, type=Path, help="image folder or a file listing images")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--stop-after", type=int, help="stop (checkpointed) after this many steps in total")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    args = parser.parse_args(argv)
    ctx = init_distributed()
    try:
        config = FinetuneConfig.from_file(args.config) if args.config else FinetuneConfig()
        train_finetune(
            build_finetune_student(config),
            ImagePool.from_source(args.pool),
            load_labels(args.labels),
            config,
            args.out,
            progress=None if args.quiet else print_progress,
            ctx=ctx,
            stop_after=args.stop_after,
        )
    finally:
        shutdown_distributed(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
