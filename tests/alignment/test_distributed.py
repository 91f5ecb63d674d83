"""torchrun/DDP: 2 CPU processes reproduce the single-process run on the same global batches."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from alignment.distributed import DistContext, init_distributed, select_device, unit_sampler
from alignment.pseudolabels import LabelProvenance, PseudoLabelConfig, make_pseudolabels
from alignment.student import (
    StudentConfig,
    TrunkActivations,
    build_student,
    compute_trunk_activations,
    load_student,
    main,
    plan_steps,
    student_embeddings,
)


def _chunk(ctx, seed, epoch, step, per_step):
    sampler = unit_sampler(23, ctx, seed)
    sampler.set_epoch(epoch)
    local = per_step // ctx.world_size
    return list(sampler)[step * local : (step + 1) * local]


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_exactly_the_single_process_global_batch(world_size):
    per_step = 4
    for epoch in range(3):
        for step in range(23 // per_step):
            single = _chunk(DistContext(), 7, epoch, step, per_step)
            ranks = [
                _chunk(DistContext(rank=r, world_size=world_size), 7, epoch, step, per_step)
                for r in range(world_size)
            ]
            assert sorted(single) == sorted(sum(ranks, []))


def test_single_process_defaults_to_cpu_without_torchrun(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_distributed()
    assert (ctx.world_size, ctx.rank, ctx.is_main, ctx.is_distributed) == (1, 0, True, False)
    assert ctx.device == select_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _job(tmp_path):
    config = StudentConfig(
        weights="random",
        image_size=32,
        head_dim=8,
        epochs=2,
        groups_per_step=4,
        lr=1e-2,
        min_triplets=10,
        log_every=1,
        checkpoint_every=2,
    )
    config.save(tmp_path / "config.json")
    student = build_student(config)
    images = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = tuple(f"img{i}" for i in range(40))
    acts = compute_trunk_activations(student, images, ids)
    acts.save(tmp_path / "acts.pt")

    class Identity:
        temperature = 0.05

        def transform(self, x):
            return x

    features = student.prelogits(acts.activations).detach().numpy()
    labels = make_pseudolabels(
        features,
        Identity(),
        LabelProvenance(config.backbone, student.identity["weights_id"], ids, "t"),
        PseudoLabelConfig(n_triplets=240, n_clusters=4, triplets_per_group=20),
    )["aligned"]
    labels.save(tmp_path / "labels.npz")
    assert plan_steps(labels, config, 2).total_steps == 6  # 12 groups, 4 per step, 2 epochs
    with pytest.raises(ValueError, match="groups_per_step=4 must be divisible by the 3 processes"):
        plan_steps(labels, config, 3)
    return student


def _args(tmp_path, out):
    return [
        "--config",
        str(tmp_path / "config.json"),
        "--labels",
        str(tmp_path / "labels.npz"),
        "--activations",
        str(tmp_path / "acts.pt"),
        "--out",
        str(tmp_path / out),
    ]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_equal_one_process(tmp_path, monkeypatch):
    initial = _job(tmp_path).trainable_state()
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert main(_args(tmp_path, "single")) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "alignment.student",
            *_args(tmp_path, "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    single = torch.load(tmp_path / "single" / "student.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp" / "student.pt", weights_only=True)
    # Adam normalises each coordinate by its gradient scale, so coordinates whose gradient is ~0 turn
    # floating-point summation-order noise into lr-sized steps; compare each tensor's change as a whole.
    worst, moved = 0.0, 0.0
    for part in ("rest", "head"):
        for key, value in single[part].items():
            if not value.is_floating_point():  # BatchNorm counters: frozen statistics, never change
                assert torch.equal(ddp[part][key], value)
                continue
            change = float((value - initial[part][key]).norm())
            worst = max(worst, float((ddp[part][key] - value).norm()) / max(change, 1e-12))
            moved = max(moved, change)
    assert worst < 0.02, f"DDP differs from one process by {worst:.1%} of a tensor's training change"
    assert moved > 1e-2  # training really changed the weights, so the comparison means something
    a, b = (load_student(tmp_path / run / "student.pt")[0] for run in ("single", "ddp"))
    acts = TrunkActivations.load(tmp_path / "acts.pt").activations
    np.testing.assert_allclose(student_embeddings(a, acts), student_embeddings(b, acts), rtol=1e-3, atol=1e-3)
    assert np.isclose(torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"], 6)
