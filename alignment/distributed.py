"""torchrun / DistributedDataParallel glue: one code path for 1 process, N CPU processes or N GPUs.

``torchrun --nproc_per_node=N`` sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`init_distributed` reads them,
picks the device (CUDA when present, one GPU per local rank) and the backend (nccl on GPU, gloo on CPU).
Without those variables everything degrades to a single process with no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes artifacts and reports progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def select_device(local_rank: int = 0) -> torch.device:
    """CUDA device ``local_rank`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed() -> DistContext:
    """Join the torchrun job described by the environment (or return a single-process context)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # ALIGNLAB_DIST_BACKEND=gloo lets several processes share one GPU (nccl refuses that), for checks
        backend = os.environ.get("ALIGNLAB_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, device)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group (no-op in a single process)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_for_training(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The model on ``ctx.device``, wrapped in DDP when there are several processes."""
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``value`` over all processes (``value`` itself in a single process)."""
    if ctx.is_distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(ctx: DistContext) -> None:
    """Wait for every process (e.g. before reading a checkpoint the main process wrote)."""
    if ctx.is_distributed:
        dist.barrier()


def unit_sampler(n_units: int, ctx: DistContext, seed: int) -> DistributedSampler:
    """Shuffled, seeded split of ``n_units`` (triplet groups) across processes, incomplete tail dropped.

    With the same seed, the union over ranks of each rank's k-th chunk of size K/world equals the k-th
    chunk of size K of a single-process run, so N processes see the same global batches as one.
    """
    units = cast(Dataset, range(n_units))  # the sampler only takes len(), so a range is enough
    return DistributedSampler(
        units, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=True
    )
