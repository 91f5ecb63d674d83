"""GPU checks for the alignment engine (run by ``bench/gpu_check.sh``; ``--device cpu`` is a smoke run).

Subcommands:
- ``features``: ``extract_features`` img/s (JPEG decode in workers, cold cache) vs a bare forward of the same
  network on pre-decoded batches already on the device;
- ``finetune``: ``train_finetune`` triplets/s (bf16 autocast + channels-last on CUDA) vs a bare step of the
  same network on pre-decoded device batches with the same precision and memory format;
- ``prepare-ddp DIR``: images, labels and a fine-tune config for the torchrun equality check;
- ``compare-ddp DIR``: the 1-process and the 2-process students' weights and embeddings, compared.

Images are generated (random textures, a little larger than the model input), so it runs offline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _write_images(folder: Path, n: int, size: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        side = int(size * rng.uniform(1.1, 1.5))
        pixels = (rng.random((side, side, 3)) * 255 * rng.random(3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.jpg", quality=90)
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(name: str, ours: float, bare: float, unit: str) -> None:
    print(f"{name:<34}{ours:>12.1f}{bare:>12.1f}  {unit:<10}{ours / bare:>8.1%}", flush=True)


def features(args) -> None:
    """extract_features (its own device choice: CUDA when present) vs a bare forward."""
    from alignment.backbones import create_backbone
    from alignment.features import _ImageFiles, extract_features

    device = torch.device(args.device)
    backbone = create_backbone(args.backbone, "random" if args.random else None)
    with tempfile.TemporaryDirectory() as work:
        paths = sorted(_write_images(Path(work) / "images", args.images, 256).iterdir())
        start = time.perf_counter()
        extract_features(
            backbone, paths, cache_dir=Path(work) / "cache", batch_size=args.batch, num_workers=args.workers
        )
        ours = len(paths) / (time.perf_counter() - start)
        data = _ImageFiles(paths, backbone.preprocess)
        batches = [
            torch.stack([data[j] for j in range(i, min(i + args.batch, len(paths)))])
            for i in range(0, len(paths), args.batch)
        ]
    network = backbone.module.to(device, memory_format=torch.channels_last)
    batches = [b.to(device).contiguous(memory_format=torch.channels_last) for b in batches]
    with torch.inference_mode():
        network(batches[0])  # warm-up (cudnn autotuning), as extract_features' first batch pays it too
        _sync(device)
        start = time.perf_counter()
        for batch in batches:
            network(batch).float().cpu()
        _sync(device)
    bare = len(paths) / (time.perf_counter() - start)
    _row(f"features {args.backbone} 224px", ours, bare, "img/s")


def _finetune_inputs(folder: Path, config, n_images: int, steps: int):
    from alignment.finetune import ImagePool, build_finetune_student, image_embeddings
    from alignment.pseudolabels import LabelProvenance, PseudoLabelConfig, make_pseudolabels

    _write_images(folder, n_images, config.image_size)
    pool = ImagePool.from_source(folder)
    student = build_finetune_student(config)
    z = image_embeddings(student, pool.paths, output="prelogits")
    z = (z - z.mean(0)) / np.linalg.norm(z - z.mean(0), axis=1, keepdims=True)

    class Identity:
        temperature = 0.1

        def transform(self, x):
            return x

    ids = student.identity
    provenance = LabelProvenance(ids["backbone"], ids["weights_id"], pool.ids, "gpu-check")
    n_triplets = config.batch_triplets * steps
    label_config = PseudoLabelConfig(n_triplets=n_triplets, n_clusters=8, triplets_per_group=64)
    return pool, make_pseudolabels(z, Identity(), provenance, label_config)["aligned"]


def finetune(args) -> None:
    """train_finetune vs a bare step (same network, precision and memory format, pre-decoded batches)."""
    from alignment.distributed import DistContext
    from alignment.finetune import (
        FinetuneConfig,
        FinetuneTrainer,
        build_finetune_student,
        plan_finetune,
        train_finetune,
    )

    device = torch.device(args.device)
    config = FinetuneConfig(
        backbone=args.backbone,
        weights="random" if args.random else None,
        image_size=args.size,
        batch_triplets=args.batch,
        num_workers=args.workers,
        min_triplets=1,
        log_every=1,
        checkpoint_every=10**6,
        epochs=1.0,
    )
    ctx = DistContext(device=device)
    with tempfile.TemporaryDirectory() as work:
        pool, labels = _finetune_inputs(Path(work) / "images", config, args.images, args.steps)
        seen = []
        train_finetune(
            build_finetune_student(config),
            pool,
            labels,
            config,
            Path(work) / "a",
            progress=seen.append,
            ctx=ctx,
        )
        first, last = seen[0], seen[-1]  # the first step pays worker start-up and cudnn autotuning
        ours = (last.step - first.step) * config.batch_triplets / (last.elapsed_s - first.elapsed_s)
        student = build_finetune_student(config)
        trainer = FinetuneTrainer(
            student, pool.paths_for(labels), labels, config, plan_finetune(len(labels), config, 1), ctx
        )
        batches = [images.to(device) for images, _ in trainer.loader(0)]
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5, foreach=True)
    dtype, channels_last = trainer.dtype, trainer.channels_last

    def bare_step(images):
        flat = images.flatten(0, 1)
        if channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = student(flat).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    bare_step(batches[0])
    _sync(device)
    start = time.perf_counter()
    for images in batches[1:]:
        bare_step(images)
    _sync(device)
    bare = (len(batches) - 1) * config.batch_triplets / (time.perf_counter() - start)
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    _row(f"fine-tune {args.size}px {precision}", ours, bare, "triplets/s")


def prepare_ddp(args) -> None:
    from alignment.finetune import FinetuneConfig, build_finetune_student

    out = Path(args.dir)
    config = FinetuneConfig(
        backbone=args.backbone,
        weights="random" if args.random else None,
        image_size=args.size,
        batch_triplets=args.batch,
        num_workers=args.workers,
        precision="fp32",  # equality check: bf16 rounding differs with the per-process batch composition
        min_triplets=1,
        lr=1e-4,
        log_every=1,
        checkpoint_every=10**6,
    )
    pool, labels = _finetune_inputs(out / "images", config, args.images, args.steps)
    labels.save(out / "labels.npz")
    config.save(out / "config.json")
    torch.save(build_finetune_student(config).state_dict(), out / "initial.pt")


def compare_ddp(args) -> None:
    from alignment.finetune import ImagePool, image_embeddings, load_finetuned

    out = Path(args.dir)
    initial = torch.load(out / "initial.pt", weights_only=True)
    single, ddp = (load_finetuned(out / run / "student.pt")[0] for run in ("single", "ddp"))
    a, b = single.state_dict(), ddp.state_dict()
    worst, moved = 0.0, 0.0
    for key, value in a.items():
        if not value.is_floating_point():
            continue
        change = float((value - initial[key]).norm())
        if change > 1e-6:
            worst = max(worst, float((b[key] - value).norm()) / change)
        moved = max(moved, change)
    paths = ImagePool.from_source(out / "images").paths[:64]
    za, zb = image_embeddings(single, paths), image_embeddings(ddp, paths)
    gap = float(np.abs(za - zb).max() / max(np.abs(za).max(), 1e-12))
    ok = worst < 0.02 and moved > 1e-4 and gap < 0.01
    print(
        f"torchrun 2 processes vs 1: worst tensor difference {worst:.2%} of its training change "
        f"(largest change {moved:.3g}); embeddings max |diff| / max |z| = {gap:.2e} -> "
        f"{'EQUAL within tolerance' if ok else 'DIFFERENT'}",
        flush=True,
    )
    if not ok:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("features", "finetune", "prepare-ddp", "compare-ddp"))
    parser.add_argument("dir", nargs="?", help="work folder (prepare-ddp, compare-ddp)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--random", action="store_true", help="random-init weights (offline anywhere)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64, help="images (features) or triplets per step")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if args.command == "features":
        features(args)
    elif args.command == "finetune":
        finetune(args)
    elif args.command == "prepare-ddp":
        prepare_ddp(args)
    else:
        compare_ddp(args)
    print(json.dumps({"command": args.command, "device": args.device}), flush=True)


if __name__ == "__main__":
    main()
