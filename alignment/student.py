"""The AligNet student (§4): a backbone plus a new linear triplet head, distilled from pseudo-labels.

Only the last ``trainable_stages`` stages of the backbone (plus its conv head) and the triplet head are
trained. The frozen trunk in front of them runs once per pool image (``compute_trunk_activations``) and its
activations are cached, so a training step only runs the trainable part. A step takes a few triplet groups
(images drawn cluster by cluster, see ``alignment.pseudolabels``), embeds each group image once and scores
all the group's triplets, i.e. several triplets per image pass.

Training (``train_student``) uses Adam with decay toward the initial weights, a warm-up + cosine schedule,
frozen BatchNorm statistics (small batches; N processes then equal one), checkpoints that resume exactly,
and a progress callback with an ETA. The same function runs under ``torchrun`` (see ``main``).

Artifacts in ``out_dir``: ``student_config.json``, ``checkpoint.pt`` (resumable), ``student.pt`` (final
weights, loadable with ``load_student``), ``history.json`` (loss, lr, validation accuracy per logged step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from alignment import DEFAULT_BACKBONE
from alignment.backbones import Backbone, create_backbone, split_at_stage
from alignment.conventions import correct_choices, pair_similarities
from alignment.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown_distributed,
    unit_sampler,
    wrap_for_training,
)
from alignment.pseudolabels import PseudoLabels, TooFewLabelsError
from alignment.student_losses import get_student_loss
from alignment.student_optimiser import DecayToInitAdam, warmup_cosine_schedule
from common.atomic import atomic_path
from common.config import LoadableConfig


@dataclass(frozen=True)
class StudentConfig(LoadableConfig):
    """Student architecture and training settings; defaults are the laptop-scale (2 CPU cores) run."""

    SECTION = "student"

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None  # None = the backbone's packaged/offline weights
    image_size: int = 160  # square bicubic resize, no crop, backbone mean/std
    trainable_stages: int = 1  # last backbone stages trained (+ conv head); earlier ones frozen and cached
    head_dim: int = 1024
    loss: str = "jsd"  # jsd | kl | hard
    tau: float = 100.0  # student temperature on raw head dot products
    lr: float = 1e-4  # 1e-3 let the head dot products outgrow tau and JSD saturate (val agreement fell)
    decay_to_init: float = 1.0
    warmup_fraction: float = 0.1
    epochs: float = (
        12.0  # passes over the triplet groups (on the demo 4 left the student well short of its teacher)
    )
    groups_per_step: int = 2  # triplet groups per global step (divisible by the number of processes)
    min_triplets: int = 256
    checkpoint_every: int = 100  # steps
    log_every: int = 10  # steps
    seed: int = 0

    def __post_init__(self):
        get_student_loss(self.loss)
        positive = ("image_size", "head_dim", "groups_per_step", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"StudentConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.tau <= 0 or self.lr <= 0 or self.epochs <= 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError("StudentConfig needs tau > 0, lr > 0, epochs > 0 and 0 <= warmup_fraction < 1")

    def save(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(asdict(self), indent=2))
        return Path(path)


class StudentIdentity(TypedDict):
    """Which pretrained backbone a student was split from, and where: cached activations, pseudo-labels and
    saved weights must all match it. A plain dict at runtime, so it saves and compares as one."""

    backbone: str
    weights_id: str
    stage: int
    image_size: int


class Student(nn.Module):
    """``head(rest(trunk(images)))``; ``forward`` starts from cached trunk activations."""

    def __init__(
        self,
        trunk: nn.Module,
        rest: nn.Module,
        head: nn.Linear,
        *,
        backbone: str,
        weights_id: str,
        stage: int,
        image_size: int,
        mean_std: tuple = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        source: Backbone | None = None,
    ):
        super().__init__()
        self.mean_std = mean_std
        # the registry entry the trunk came from, for cached extraction (a plain attribute, not a submodule)
        self.source: Backbone | None = source
        self.trunk, self.rest, self.head = trunk.requires_grad_(False), rest.requires_grad_(True), head
        self.identity: StudentIdentity = {
            "backbone": backbone,
            "weights_id": weights_id,
            "stage": stage,
            "image_size": image_size,
        }
        self.eval()  # BatchNorm statistics stay frozen during fine-tuning

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.rest(activations))

    def prelogits(self, activations: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (before the triplet head)."""
        return self.rest(activations)

    def trainable_state(self) -> dict[str, dict]:
        return {"rest": self.rest.state_dict(), "head": self.head.state_dict()}

    def load_trainable_state(self, state: dict[str, dict]) -> None:
        self.rest.load_state_dict(state["rest"])
        self.head.load_state_dict(state["head"])


def new_triplet_head(in_dim: int, out_dim: int, seed: int) -> nn.Linear:
    """Linear head with LeCun-normal weights and zero bias (flax default, as in AligNet), seeded."""
    head = nn.Linear(in_dim, out_dim)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(out_dim, in_dim, generator=generator) / math.sqrt(in_dim))
        head.bias.zero_()
    return head


def build_student(config: StudentConfig, *, cache_dir: str | os.PathLike | None = None) -> Student:
    """The student for ``config``: pretrained backbone split before its last trainable stages, new head."""
    backbone = create_backbone(config.backbone, config.weights, cache_dir=cache_dir)
    n_stages = len(getattr(backbone.module, "blocks", ()))
    if not 1 <= config.trainable_stages <= n_stages:
        raise ValueError(
            f"trainable_stages must be in [1, {n_stages}] for {config.backbone}; "
            f"got {config.trainable_stages}"
        )
    stage = n_stages - config.trainable_stages
    trunk, rest = split_at_stage(backbone, stage)
    head = new_triplet_head(backbone.feature_dim, config.head_dim, config.seed)
    cfg = getattr(backbone.module, "pretrained_cfg", None) or {}
    mean_std = (tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3)))
    return Student(
        trunk,
        rest,
        head,
        backbone=backbone.name,
        weights_id=backbone.weights_id,
        stage=stage,
        image_size=config.image_size,
        mean_std=mean_std,
        source=backbone,
    )


def student_transform(student: Student) -> Callable:
    """PIL image -> tensor: bicubic resize to ``image_size`` (no crop), the backbone's mean/std."""
    from torchvision import transforms

    mean, std = student.mean_std
    size = (student.identity["image_size"],) * 2
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


@dataclass(frozen=True, eq=False)
class TrunkActivations:
    """Cached frozen-trunk outputs for an image pool, with what is needed to check they fit a student."""

    activations: torch.Tensor
    pool_ids: tuple[str, ...]
    identity: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as partial:
            torch.save(
                {"activations": self.activations, "pool_ids": list(self.pool_ids), "identity": self.identity},
                partial,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrunkActivations:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls(data["activations"], tuple(data["pool_ids"]), data["identity"])


@torch.no_grad()  # not inference_mode: the cached tensors feed autograd-tracked training later
def compute_trunk_activations(
    student: Student, images: torch.Tensor, pool_ids: Sequence[str], *, batch_size: int = 64
) -> TrunkActivations:
    """Run the frozen trunk once over pre-decoded image tensors [N, 3, s, s] (tests, benchmarks)."""
    if len(images) != len(pool_ids):
        raise ValueError(f"{len(images)} images but {len(pool_ids)} pool ids")
    chunks = [student.trunk(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)]
    return TrunkActivations(torch.cat(chunks).contiguous(), tuple(pool_ids), dict(student.identity))


def pool_activations(
    student: Student,
    image_paths: Sequence[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike,
    pool_ids: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 32,
) -> TrunkActivations:
    """Trunk activations of image files at the student's resolution, through the disk feature cache
    (``alignment.features``): a re-run or a grown pool only computes new images. ``pool_ids`` default to
    the images' content hashes, which is what pseudo-label provenance should use too."""
    from dataclasses import replace

    from alignment.features import extract_activations, image_content_hash

    source = student.source
    if source is None:
        raise ValueError("pool_activations needs a student from build_student (it knows its backbone)")
    at_student_size = replace(source, preprocess=student_transform(student))
    values = extract_activations(
        at_student_size,
        image_paths,
        stage=student.identity["stage"],
        cache_dir=cache_dir,
        batch_size=batch_size,
        progress=progress,
    )
    ids = tuple(pool_ids) if pool_ids is not None else tuple(image_content_hash(p) for p in image_paths)
    return TrunkActivations(torch.from_numpy(np.ascontiguousarray(values)), ids, dict(student.identity))


def check_training_inputs(
    student: Student, acts: TrunkActivations, labels: PseudoLabels, min_triplets: int
) -> None:
    """Refuse mismatched or too-small inputs before any training starts."""
    labels.require_at_least(min_triplets)
    if acts.identity != student.identity:
        raise ValueError(
            f"cached trunk activations were made for {acts.identity}, not this student {student.identity}"
        )
    labels.check_compatible(
        backbone=student.identity["backbone"],
        weights_id=student.identity["weights_id"],
        pool_ids=acts.pool_ids,
    )
    if labels.triplets.max(initial=-1) >= len(acts.activations):
        raise ValueError(
            f"labels index image {labels.triplets.max()} but the pool has {len(acts.activations)}"
        )


@dataclass(frozen=True)
class Progress:
    """One progress report (main process only)."""

    step: int
    total_steps: int
    loss: float
    lr: float
    elapsed_s: float
    eta_s: float
    triplets_per_s: float
    images_per_s: float


def print_progress(p: Progress) -> None:
    """Default progress callback: one line per logged step."""
    print(
        f"step {p.step}/{p.total_steps} loss {p.loss:.4f} lr {p.lr:.2e} {p.triplets_per_s:.0f} triplets/s "
        f"{p.images_per_s:.0f} images/s elapsed {p.elapsed_s:.0f}s eta {p.eta_s:.0f}s",
        flush=True,
    )


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    steps: int
    final_loss: float
    seconds: float
    triplets_seen: int
    images_seen: int
    student_path: Path
    history: list[dict]


@dataclass
class RunState:
    """Where a training run stands: the global step, the logged history and the last loss, and what it has
    seen since this process started or resumed it (for the rates, the ETA and the result)."""

    step: int
    history: list[dict]
    loss: float = float("nan")
    triplets: int = 0
    images: int = 0
    first_step: int = field(init=False)
    started: float = field(init=False, default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.first_step = self.step

    def advance(self, loss: float, triplets: int, images: int) -> None:
        """One global step done: its loss, and the triplets and images it took over all processes."""
        self.step += 1
        self.loss = loss
        self.triplets += triplets
        self.images += images

    def due(self, every: int, end: int) -> bool:
        """Whether the step just done is one to log or checkpoint at: every `every` steps, and the last."""
        return self.step % every == 0 or self.step == end

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def progress(self, total_steps: int, lr: float, elapsed: float) -> Progress:
        """A progress report; the ETA extrapolates the pace of the steps run since `first_step`."""
        eta = elapsed / max(self.step - self.first_step, 1) * (total_steps - self.step)
        seconds = max(elapsed, 1e-9)
        return Progress(
            self.step,
            total_steps,
            self.loss,
            lr,
            elapsed,
            eta,
            self.triplets / seconds,
            self.images / seconds,
        )

    def result(self, student_path: Path) -> TrainResult:
        return TrainResult(
            self.step, self.loss, self.elapsed(), self.triplets, self.images, student_path, self.history
        )


@dataclass
class _Plan:
    """Which triplet rows each global step uses, shared by every process."""

    group_rows: list[np.ndarray]
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    local_groups: int


def plan_steps(labels: PseudoLabels, config: StudentConfig, world_size: int) -> _Plan:
    """Steps per epoch and in total; each step takes ``groups_per_step`` whole triplet groups."""
    if config.groups_per_step % world_size:
        raise ValueError(
            f"groups_per_step={config.groups_per_step} must be divisible by the {world_size} processes"
        )
    order = np.argsort(labels.groups, kind="stable")
    bounds = np.flatnonzero(np.diff(labels.groups[order])) + 1
    group_rows = np.split(order, bounds)
    steps_per_epoch = len(group_rows) // config.groups_per_step
    if steps_per_epoch < 1:
        raise TooFewLabelsError(
            f"pseudo-labels have {len(group_rows)} triplet groups; one step needs "
            f"groups_per_step={config.groups_per_step} (generate more triplets)"
        )
    total = max(1, round(config.epochs * steps_per_epoch))
    warmup = min(int(config.warmup_fraction * total), total - 1)
    return _Plan(group_rows, steps_per_epoch, total, warmup, config.groups_per_step // world_size)


def _step_rows(plan: _Plan, sampler, step: int, cache: dict[str, Any]) -> np.ndarray:
    """This process's triplet rows for global ``step`` (the sampler's order is computed once per epoch)."""
    epoch, offset = divmod(step, plan.steps_per_epoch)
    if cache.get("epoch") != epoch:
        sampler.set_epoch(epoch)
        cache.update(epoch=epoch, order=list(sampler))
    units = cache["order"][offset * plan.local_groups : (offset + 1) * plan.local_groups]
    return np.concatenate([plan.group_rows[u] for u in units])


def triplet_batch(triplets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """``(unique images, triplets re-indexed into them)``: each image is embedded once per step."""
    images, local = np.unique(triplets[rows], return_inverse=True)
    return images, torch.from_numpy(local.reshape(-1, 3))


class CheckpointedRun(ABC):
    """Checkpoint and exact resume, shared by the cached-trunk and the fine-tuning trainers: a subclass says
    which weights it trains (`weights`, `load_weights`); optimiser, schedule, step and history are saved
    alike, and a resume is refused when the checkpoint was made with another config or label set."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: Any
    labels: PseudoLabels
    ctx: DistContext

    @abstractmethod
    def weights(self) -> dict[str, Any]:
        """The trained weights, as named state dicts (the checkpoint's first entries)."""

    @abstractmethod
    def load_weights(self, state: dict[str, Any]) -> None:
        """Restore what `weights` saved, from a loaded checkpoint."""

    def checkpoint(self, path: Path, step: int, history: list[dict]) -> None:
        state = {
            **self.weights(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "config": asdict(self.config),
            "labels_meta": self.labels.meta,
            "history": history,
        }
        with atomic_path(path) as partial:
            torch.save(state, partial)

    def resume(self, path: Path) -> tuple[int, list[dict]]:
        """Load ``path`` if it exists (same config and labels required); return (step, history)."""
        if not path.is_file():
            return 0, []
        state = torch.load(path, map_location=self.ctx.device, weights_only=True)
        if state["config"] != asdict(self.config) or state["labels_meta"] != self.labels.meta:
            raise ValueError(
                f"{path} is a checkpoint of a different config or label set; "
                "use a new output directory or delete it to start over"
            )
        self.load_weights(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return int(state["step"]), list(state["history"])


@dataclass
class _Trainer(CheckpointedRun):
    """Model, optimiser, schedule and data of one run (kept together for checkpointing)."""

    student: Student
    model: nn.Module
    optimizer: DecayToInitAdam
    scheduler: Any
    acts: torch.Tensor
    targets: torch.Tensor
    labels: PseudoLabels
    config: StudentConfig
    ctx: DistContext
    plan: _Plan

    def step(self, rows: np.ndarray) -> tuple[float, int]:
        """One optimiser step on ``rows``; returns (global mean loss, images embedded here)."""
        images, local = triplet_batch(self.labels.triplets, rows)
        local = local.to(self.ctx.device)
        count = all_reduce_sum(torch.tensor(float(len(rows)), device=self.ctx.device), self.ctx)
        sims = pair_similarities(self.model(self.acts[torch.from_numpy(images).to(self.ctx.device)]), local)
        per_triplet = get_student_loss(self.config.loss)(
            self.targets[torch.from_numpy(rows).to(self.ctx.device)], sims, self.config.tau
        )
        loss = per_triplet.sum() * self.ctx.world_size / count  # DDP averages: global mean over triplets
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        total = all_reduce_sum(per_triplet.detach().sum(), self.ctx)
        return float(total / count), len(images)

    def weights(self) -> dict[str, Any]:
        return {"student": self.student.trainable_state()}

    def load_weights(self, state: dict[str, Any]) -> None:
        self.student.load_trainable_state(state["student"])


def _make_trainer(
    student: Student,
    acts: TrunkActivations,
    labels: PseudoLabels,
    config: StudentConfig,
    plan: _Plan,
    ctx: DistContext,
) -> _Trainer:
    model = wrap_for_training(student, ctx)
    optimizer = DecayToInitAdam(
        [p for p in student.parameters() if p.requires_grad], lr=config.lr, decay_to_init=config.decay_to_init
    )
    scheduler = warmup_cosine_schedule(optimizer, plan.total_steps, plan.warmup_steps)
    targets = torch.from_numpy(labels.similarities).to(ctx.device)
    return _Trainer(
        student,
        model,
        optimizer,
        scheduler,
        acts.activations.to(ctx.device),
        targets,
        labels,
        config,
        ctx,
        plan,
    )


def label_accuracy(
    student: Student, activations: torch.Tensor, labels: PseudoLabels, *, batch: int = 4096
) -> float:
    """Fraction of label triplets whose pair (0, 1) is the student's strict most-similar pair."""
    with torch.inference_mode():
        z = torch.cat([student(activations[i : i + batch]) for i in range(0, len(activations), batch)]).cpu()
    sims = pair_similarities(z.double().numpy(), labels.triplets)
    return float(correct_choices(sims).mean())


def _report(
    trainer: _Trainer, run: RunState, progress: Callable[[Progress], None] | None, val: PseudoLabels | None
) -> None:
    elapsed = run.elapsed()
    entry = {
        "step": run.step,
        "loss": run.loss,
        "lr": trainer.scheduler.get_last_lr()[0],
        "elapsed_s": elapsed,
    }
    if val is not None and trainer.ctx.is_main:
        entry["val_accuracy"] = label_accuracy(trainer.student, trainer.acts, val)
    run.history.append(entry)
    if progress is not None and trainer.ctx.is_main:
        progress(run.progress(trainer.plan.total_steps, entry["lr"], elapsed))


def train_student(
    student: Student,
    acts: TrunkActivations,
    labels: PseudoLabels,
    config: StudentConfig,
    out_dir: str | Path,
    *,
    val: PseudoLabels | None = None,
    progress: Callable[[Progress], None] | None = print_progress,
    ctx: DistContext | None = None,
) -> TrainResult:
    """Distil ``labels`` into ``student`` (in place), resuming from ``out_dir/checkpoint.pt`` if present."""
    ctx = ctx or DistContext()
    check_training_inputs(student, acts, labels, config.min_triplets)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = _make_trainer(student, acts, labels, config, plan_steps(labels, config, ctx.world_size), ctx)
    step, history = trainer.resume(out_dir / "checkpoint.pt")
    if ctx.is_main:
        config.save(out_dir / "student_config.json")
    run = RunState(step, history)
    _train_steps(trainer, run, out_dir, progress, val)
    barrier(ctx)
    student_path = out_dir / "student.pt"
    if ctx.is_main:
        save_student(student, config, student_path)
        (out_dir / "history.json").write_text(json.dumps(run.history, indent=1))
    return run.result(student_path)


def _train_steps(
    trainer: _Trainer,
    run: RunState,
    out_dir: Path,
    progress: Callable[[Progress], None] | None,
    val: PseudoLabels | None,
) -> None:
    """The steps from `run.step` to the end of the plan, logged and checkpointed as the config says."""
    plan, config, ctx = trainer.plan, trainer.config, trainer.ctx
    sampler = unit_sampler(len(plan.group_rows), ctx, config.seed)
    cache: dict[str, Any] = {}  # the sampler's order for the current epoch (see _step_rows)
    while run.step < plan.total_steps:
        rows = _step_rows(plan, sampler, run.step, cache)
        loss, n_images = trainer.step(rows)
        run.advance(loss, len(rows) * ctx.world_size, n_images * ctx.world_size)
        if run.due(config.log_every, plan.total_steps):
            _report(trainer, run, progress, val)
        if ctx.is_main and run.due(config.checkpoint_every, plan.total_steps):
            trainer.checkpoint(out_dir / "checkpoint.pt", run.step, run.history)


def save_student(student: Student, config: StudentConfig, path: str | Path) -> Path:
    """Final weights of the trainable part plus the config that rebuilds the rest."""
    path = Path(path)
    with atomic_path(path) as partial:
        torch.save(
            {"config": asdict(config), "identity": student.identity, **student.trainable_state()}, partial
        )
    return path


def load_student(
    path: str | Path, *, cache_dir: str | os.PathLike | None = None
) -> tuple[Student, StudentConfig]:
    """Rebuild a trained student from ``save_student`` output (backbone weights from the registry)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    config = StudentConfig.from_dict(state["config"])
    student = build_student(config, cache_dir=cache_dir)
    if student.identity != state["identity"]:
        raise ValueError(
            f"{path} was trained from {state['identity']}, but the registry now gives {student.identity}"
        )
    student.load_trainable_state(state)
    return student, config


@torch.inference_mode()
def student_embeddings(
    student: Student, activations: torch.Tensor, *, output: str = "head", batch_size: int = 1024
) -> np.ndarray:
    """Embeddings for evaluation: ``"head"`` (triplet head, what training shapes) or ``"prelogits"``."""
    if output not in ("head", "prelogits"):
        raise ValueError(f"output must be 'head' or 'prelogits'; got {output!r}")
    embed = student if output == "head" else student.prelogits
    return torch.cat(
        [embed(activations[i : i + batch_size]) for i in range(0, len(activations), batch_size)]
    ).numpy()


def main(argv: list[str] | None = None) -> int:
    """Distributed training entry point:
    ``torchrun --nproc_per_node=N -m alignment.student --config C --labels L --activations A --out DIR``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--activations", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--val-labels", type=Path)
    args = parser.parse_args(argv)
    ctx = init_distributed()
    try:
        config = StudentConfig.from_file(args.config)
        student = build_student(config)
        val = PseudoLabels.load(args.val_labels) if args.val_labels else None
        train_student(
            student,
            TrunkActivations.load(args.activations),
            PseudoLabels.load(args.labels),
            config,
            args.out,
            val=val,
            ctx=ctx,
        )
    finally:
        shutdown_distributed(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
