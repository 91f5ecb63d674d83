"""Student distillation benchmark: loop overhead vs a bare train step, and the default loop on the demo.

Part 1 (overhead), for each ``--sizes`` resolution and each ``--modes`` student mode, in the same run:
- ``cached``: our ``train_student`` loop vs the bare trainable-backbone step (cached trunk activations ->
  last stage + head -> trivial loss -> torch Adam) on the same image batches;
- ``full``: our ``train_finetune`` loop (images decoded and augmented from disk in a DataLoader worker, whole
  network trained, per-triplet loss, decay-to-init Adam) vs the bare step of the same network (pre-decoded
  tensors -> forward over the 3B images -> trivial loss -> torch Adam);
same threads, same process, alternating rounds; reports triplets/s and the ratio (target >= 90%).

Part 2 (demo loop): the default laptop-scale run on the built-in demo with simulated participants, stage by
stage: features -> teacher -> pseudo-labels -> trunk activations -> AligNet and UnAligNet students -> the
before/after table on held-out judgments (target: whole loop <= 5 minutes on 2 cores).

Usage: ``ALIGNLAB_HOME=/tmp/bench_home .venv/bin/python -m bench.student [--threads N] [--skip-demo]
[--sizes 96 128 160] [--modes cached full]``
(builds the demo there first if missing; the machine may be shared, so the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from alignment.distributed import DistContext
from alignment.finetune import loader_workers, plan_finetune
from alignment.pseudolabels import LabelProvenance, PseudoLabelConfig, make_pseudolabels
from alignment.student import (
    StudentConfig,
    TrunkActivations,
    build_student,
    compute_trunk_activations,
    label_accuracy,
    plan_steps,
    pool_activations,
    student_embeddings,
    train_student,
)


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _synthetic_pool(student, config: StudentConfig, n_images: int) -> tuple[TrunkActivations, object]:
    images = torch.randn(
        n_images, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)
    )
    ids = tuple(f"img{i}" for i in range(n_images))
    acts = compute_trunk_activations(student, images, ids)

    class Identity:
        temperature = 1.0

        def transform(self, x):
            return x

    features = student_embeddings(student, acts.activations, output="prelogits")
    provenance = LabelProvenance(config.backbone, student.identity["weights_id"], ids, "bench")
    labels = make_pseudolabels(
        features, Identity(), provenance, PseudoLabelConfig(n_triplets=16384, n_clusters=16)
    )
    return acts, labels["aligned"]


def _bare_loop(student, acts: torch.Tensor, batches: list[np.ndarray]) -> float:
    """The floor: forward the trainable part on each step's images, trivial loss, torch Adam (the fused
    kernel our optimiser also runs)."""
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5, fused=True)
    start = time.perf_counter()
    for images in batches:
        loss = student(acts[torch.from_numpy(images)]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def overhead(config: StudentConfig, rounds: int) -> dict:
    student = build_student(config)
    acts, labels = _synthetic_pool(student, config, 256)
    plan = plan_steps(labels, config, 1)
    batches = [
        np.unique(labels.triplets[np.concatenate(plan.group_rows[i : i + config.groups_per_step])])
        for i in range(0, plan.steps_per_epoch * config.groups_per_step, config.groups_per_step)
    ]
    n_triplets, n_images = (
        len(labels) // len(plan.group_rows) * config.groups_per_step,
        np.mean([len(b) for b in batches]),
    )
    ours, bare = [], []
    for _ in range(rounds):  # alternate, so both loops see the same (shared-machine) load on average
        seen = []  # the last progress report comes before the final checkpoint/artifact writes
        with tempfile.TemporaryDirectory() as out:
            train_student(
                build_student(config), acts, labels, replace(config, epochs=1.0), out, progress=seen.append
            )
        ours.append(seen[-1].elapsed_s / seen[-1].step)
        bare.append(_bare_loop(build_student(config), acts.activations, batches) / len(batches))
    best_ours, best_bare = min(ours), min(bare)
    print(
        f"\n## loop overhead ({config.image_size}px, last {config.trainable_stages} stage(s), "
        f"{config.groups_per_step} groups/step: {n_triplets} triplets over {n_images:.0f} images per step; "
        f"best of {rounds} rounds; {_load()})"
    )
    print(f"{'loop':<28}{'ms/step':>10}{'triplets/s':>12}{'images/s':>10}")
    for name, seconds in (("ours (train_student)", best_ours), ("bare step (torch Adam)", best_bare)):
        print(f"{name:<28}{1000 * seconds:>10.1f}{n_triplets / seconds:>12.0f}{n_images / seconds:>10.0f}")
    ratios = sorted(b / o for o, b in zip(ours, bare, strict=True))
    print(
        f"ours / bare throughput: best-vs-best {best_bare / best_ours:.1%}, median of per-round ratios "
        f"{ratios[len(ratios) // 2]:.1%} (target >= 90%)"
    )
    print(
        f"all rounds ms/step: ours {[round(1000 * s) for s in ours]}, bare {[round(1000 * s) for s in bare]}"
    )
    return _summary("cached", config.image_size, n_triplets, best_ours, best_bare, ratios)


def _summary(mode, size, n_triplets, best_ours, best_bare, ratios) -> dict:
    return {
        "mode": mode,
        "px": size,
        "ours": n_triplets / best_ours,
        "bare": n_triplets / best_bare,
        "best": best_bare / best_ours,
        "median": ratios[len(ratios) // 2],
    }


def _write_images(folder: Path, n: int, size: int) -> None:
    """``n`` JPEGs a little larger than the training size (so the crop has pixels to choose from)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        side = int(size * rng.uniform(1.1, 1.6))
        pixels = (rng.random((side, side, 3)) * 255 * rng.random(3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.jpg", quality=90)


# steps per timed fine-tuning run: a real run's epoch has thousands, so the loader's start (worker fork and
# the first batch, not overlapped with compute) is negligible there; 6 steps made it a tenth of the run.
FINETUNE_STEPS = 20


def _finetune_setup(config, folder: Path):
    from alignment.finetune import ImagePool, build_finetune_student, image_embeddings

    pool = ImagePool.from_source(folder)
    student = build_finetune_student(config)
    features = image_embeddings(student, pool.paths, output="prelogits")

    class Identity:
        temperature = float(np.abs(features @ features.T).mean()) / 5

        def transform(self, x):
            return x

    ids = student.identity
    provenance = LabelProvenance(ids["backbone"], ids["weights_id"], pool.ids, "bench")
    n_triplets = config.batch_triplets * FINETUNE_STEPS
    labels = make_pseudolabels(
        features, Identity(), provenance, PseudoLabelConfig(n_triplets=n_triplets, n_clusters=4)
    )["aligned"]
    return pool, labels


def _bare_finetune(student, batches: list[torch.Tensor]) -> float:
    """The floor: forward the whole network on each step's 3B pre-decoded images, trivial loss, torch Adam."""
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5, fused=True)  # the kernel our optimiser also runs
    start = time.perf_counter()
    for images in batches:
        loss = student(images.flatten(0, 1)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def finetune_overhead(size: int, rounds: int, weights: str | None = None, batch_triplets: int = 8) -> dict:
    """Full fine-tuning: ``train_finetune`` vs the bare step, same network and triplet batches."""
    from alignment.finetune import FinetuneConfig, FinetuneTrainer, build_finetune_student, train_finetune

    config = FinetuneConfig(
        weights=weights,
        image_size=size,
        batch_triplets=batch_triplets,
        num_workers=1,
        min_triplets=batch_triplets,
        log_every=1,
        checkpoint_every=10_000,
    )
    with tempfile.TemporaryDirectory() as images:
        _write_images(Path(images), 48, size)
        pool, labels = _finetune_setup(config, Path(images))
        probe = FinetuneTrainer(
            build_finetune_student(config),
            pool.paths_for(labels),
            labels,
            config,
            plan_finetune(len(labels), config, 1),
            DistContext(),
        )
        batches = [images for images, _ in probe.loader(0)]  # the epoch the loop trains on
        ours, bare = [], []
        for _ in range(rounds):
            seen = []
            with tempfile.TemporaryDirectory() as out:
                train_finetune(
                    build_finetune_student(config), pool, labels, config, out, progress=seen.append
                )
            ours.append(seen[-1].elapsed_s / seen[-1].step)
            bare.append(_bare_finetune(build_finetune_student(config), batches) / len(batches))
    best_ours, best_bare = min(ours), min(bare)
    ratios = sorted(b / o for o, b in zip(ours, bare, strict=True))
    print(
        f"\n## full fine-tune overhead ({size}px, whole {config.backbone}, {batch_triplets} triplets = "
        f"{3 * batch_triplets} images per step, {loader_workers(1, torch.device('cpu'))} loader worker(s) "
        f"(loader_workers); best of {rounds} rounds; {_load()})"
    )
    print(
        f"all rounds ms/step: ours {[round(1000 * s) for s in ours]}, bare {[round(1000 * s) for s in bare]}"
    )
    return _summary("full", size, batch_triplets, best_ours, best_bare, ratios)


def print_overhead_table(rows: list[dict]) -> None:
    print(f"\n## loop vs bare step ({_load()})")
    print(f"{'mode':<8}{'px':>5}{'ours triplets/s':>17}{'bare triplets/s':>17}{'best/best':>11}{'median':>9}")
    for r in rows:
        print(
            f"{r['mode']:<8}{r['px']:>5}{r['ours']:>17.1f}{r['bare']:>17.1f}{r['best']:>11.1%}{r['median']:>9.1%}"
        )
    print("target: ours / bare >= 90% in every row")


def _demo_inputs():
    from db.engine import Database
    from db.migrate import upgrade
    from workflows.demo import DEMO_SLUG, ensure_demo
    from workflows.pipeline.data import SplitConfig, split_study, study_images

    upgrade()  # a fresh ALIGNLAB_HOME has no schema yet
    db = Database.from_url()
    ensure_demo(db, report=lambda message: None)
    images = study_images(db, DEMO_SLUG)
    split = split_study(db, DEMO_SLUG, SplitConfig(unseen_fraction=0))  # the demo: seen-image test only
    return db, images, split.train, split.seen


def _eval_inputs(db, images, test):
    from study.judgments import load_judgments
    from workflows.demo import DEMO_SLUG
    from workflows.pipeline.evaluation import human_uncertainty, noise_ceilings

    all_judgments = load_judgments(db, DEMO_SLUG)
    ceilings = noise_ceilings(all_judgments)
    test = test[test["level"].notna()]
    rows = images.rows(test[["stim0", "stim1", "stim2"]].to_numpy())
    return rows, {
        "levels": test["level"].tolist(),
        "groups": test["triplet_key"].tolist(),
        "human_rt": test["rt_ms"].to_numpy(np.float64),
        "human_entropy": human_uncertainty(all_judgments, test),
        "noise_ceiling": ceilings.value or None,
        "ceiling_triplets": ceilings.triplets,
        "ceiling_intervals": ceilings.interval,
    }


def demo_loop(config: StudentConfig, label_config: PseudoLabelConfig, work: Path) -> None:
    from alignment.backbones import create_backbone
    from alignment.features import extract_features, image_content_hash
    from alignment.model_comparison import compare_models
    from alignment.teacher import fit_teacher
    from workflows.pipeline.teacher_stage import training_triplets

    times, start = {}, time.perf_counter()

    def lap(name):
        nonlocal start
        times[name] = time.perf_counter() - start
        start = time.perf_counter()

    db, images, train, test = _demo_inputs()
    lap("demo inputs (db read, split)")
    backbone = create_backbone(config.backbone, cache_dir=work / "weights")
    features = extract_features(backbone, images.paths, cache_dir=work / "cache")
    lap(f"features ({len(images.paths)} images, 224px, cold cache)")
    triplets, probs = training_triplets(train, images)
    teacher = fit_teacher(features, triplets, choice_probs=probs)
    lap(f"teacher fit ({len(triplets)} triplets)")
    pool_ids = tuple(image_content_hash(p) for p in images.paths)
    provenance = LabelProvenance(backbone.name, backbone.weights_id, pool_ids, "bench-teacher")
    label_sets = make_pseudolabels(features, teacher, provenance, label_config)
    lap(f"pseudo-labels ({len(label_sets['aligned'])} x 2 spaces)")
    student = build_student(config, cache_dir=work / "weights")
    acts = pool_activations(student, images.paths, cache_dir=work / "cache", pool_ids=pool_ids)
    lap(f"trunk activations ({config.image_size}px)")
    embeddings = {"base": features, "teacher": teacher.transform(features)}
    val_sets = make_pseudolabels(
        features, teacher, provenance, replace(label_config, n_triplets=2000, seed=label_config.seed + 1)
    )
    fidelity = {}
    for space, name in (("aligned", "AligNet"), ("untransformed", "UnAligNet")):
        student = build_student(config, cache_dir=work / "weights")
        if name == "AligNet":
            embeddings["base+head"] = student_embeddings(student, acts.activations)
        before = label_accuracy(student, acts.activations, val_sets[space])
        result = train_student(student, acts, label_sets[space], config, work / name, progress=None)
        embeddings[name] = student_embeddings(student, acts.activations)
        fidelity[name] = (before, label_accuracy(student, acts.activations, val_sets[space]))
        lap(
            f"{name} student ({result.steps} steps, {result.triplets_seen} triplets, "
            f"{result.images_seen} images)"
        )
    rows, human = _eval_inputs(db, images, test)
    table = compare_models(embeddings, rows, **human, n_boot=1000)
    lap("before/after table")
    print(f"\n## default loop on the demo ({_load()})")
    for name, seconds in times.items():
        print(f"{name:<60}{seconds:>8.1f} s")
    print(f"{'total':<60}{sum(times.values()):>8.1f} s   (target <= 300 s)")
    print(f"\nStudentConfig: {config}\nPseudoLabelConfig used: {label_sets['aligned'].meta['config']}")
    import pandas as pd

    shown = ["level", "model", "n_triplets", "accuracy", "ci_low", "ci_high", "gain", "gain_ci_low"]
    shown += ["gain_ci_high", "normalised", "rho_rt", "flags"]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.precision", 3):
        print(table.results_table()[shown].to_string(index=False))
    for name, (before, after) in fidelity.items():
        print(
            f"{name}: agreement with its teacher on 2000 new pseudo-labelled pool triplets "
            f"{before:.3f} -> {after:.3f}"
        )
    print(
        "gains over base:",
        {m: {k: round(v, 3) for k, v in g.items()} for m, g in table.gains("base").items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--student", default="{}", help="StudentConfig overrides as JSON")
    parser.add_argument("--labels", default="{}", help="PseudoLabelConfig overrides as JSON")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="overhead resolutions (px)")
    parser.add_argument("--modes", nargs="+", choices=("cached", "full"), default=["cached", "full"])
    parser.add_argument("--finetune-rounds", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; {_load()}")
    config = StudentConfig.from_text(args.student)
    if not args.skip_overhead:
        rows = []
        for size in args.sizes or [config.image_size]:
            if "cached" in args.modes:
                rows.append(overhead(replace(config, image_size=size), args.rounds))
            if "full" in args.modes:
                rows.append(finetune_overhead(size, args.finetune_rounds, config.weights))
        print_overhead_table(rows)
    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as work:
            demo_loop(config, PseudoLabelConfig.from_text(args.labels), Path(work))


if __name__ == "__main__":
    main()
