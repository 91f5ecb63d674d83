"""Full fine-tuning on images from disk: pools, per-triplet augmentation, a step that learns, exact resume,
gradient accumulation and torchrun (2 gloo processes = 1 process). Tiny random-init timm model, 32 px."""

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from alignment.finetune import (
    FinetuneConfig,
    FinetuneTrainer,
    ImagePool,
    TripletImages,
    build_finetune_student,
    decode_image,
    image_embeddings,
    kept_side,
    load_finetuned,
    loader_workers,
    main,
    plan_finetune,
    train_finetune,
)
from alignment.pseudolabels import (
    LabelProvenance,
    LabelsMismatchError,
    PseudoLabelConfig,
    PseudoLabels,
    make_pseudolabels,
)

CONFIG = FinetuneConfig(
    backbone="timm:mobilenetv3_small_050",
    weights="random",
    image_size=32,
    head_dim=8,
    tau=0.01,  # random-init head dot products are tiny
    lr=1e-3,
    epochs=1.5,
    batch_triplets=8,
    warmup_fraction=0.0,
    num_workers=0,
    min_triplets=8,
    log_every=1,
    checkpoint_every=100,  # the end of a run (or a stop) always checkpoints
)


def write_images(folder, n=20, seed=0):
    """``n`` small random-texture images of varied sizes in an ImageNet-like two-class layout."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(28, 56)), int(rng.integers(28, 56))
        pixels = (rng.random((h, w, 3)) * 255 * rng.random(3)).astype(np.uint8)
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"class{i % 2}" / f"img{i:02d}.png")
    return folder


class Identity:
    temperature = 0.05

    def transform(self, x):
        return x


def make_labels(student, pool, n_triplets=32):
    features = image_embeddings(student, pool.paths, output="prelogits")
    features = features - features.mean(0)  # centred unit rows: dot products in [-1, 1], sharp at T = 0.05
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    provenance = LabelProvenance(student.identity["backbone"], student.identity["weights_id"], pool.ids, "t")
    config = PseudoLabelConfig(n_triplets=n_triplets, n_clusters=3, triplets_per_group=8)
    return make_pseudolabels(features, Identity(), provenance, config)["aligned"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = write_images(tmp_path_factory.mktemp("pool"))
    pool = ImagePool.from_source(folder)
    student = build_finetune_student(CONFIG)
    return folder, pool, make_labels(student, pool)


def test_pool_from_a_folder_or_a_file_list(setup, tmp_path):
    folder, pool, _ = setup
    assert len(pool.paths) == 20 and pool.ids[:2] == ("class0/img00.png", "class0/img02.png")
    (folder / "list.txt").write_text("# two images\nclass1/img01.png\n\nclass0/img00.png\n")
    listed = ImagePool.from_source(folder / "list.txt")
    assert listed.ids == ("class1/img01.png", "class0/img00.png")
    (tmp_path / "bad.txt").write_text("nowhere.png\n")
    with pytest.raises(FileNotFoundError, match="1 image.*nowhere.png"):
        ImagePool.from_source(tmp_path / "bad.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImagePool.from_source(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a folder nor a file"):
        ImagePool.from_source(tmp_path / "missing")


def test_labels_find_their_images_by_relative_path_or_content_hash(setup, tmp_path):
    folder, pool, labels = setup
    assert pool.paths_for(labels) == list(pool.paths)
    from alignment.features import image_content_hash

    by_hash = replace(labels, pool_ids=tuple(image_content_hash(p) for p in reversed(pool.paths)))
    assert pool.paths_for(by_hash) == list(reversed(pool.paths))
    elsewhere = replace(labels, pool_ids=(*labels.pool_ids[:-1], "class9/gone.png"))
    with pytest.raises(LabelsMismatchError, match="1 of the 20 labelled images.*class9/gone.png"):
        pool.paths_for(elsewhere)


def test_the_three_images_of_a_triplet_get_the_same_augmentation(setup, tmp_path):
    folder, pool, labels = setup
    for name in ("a", "b", "c"):  # three copies of one image, so identical views mean identical parameters
        shutil.copy(pool.paths[0], tmp_path / f"{name}.png")
    paths = [tmp_path / f"{name}.png" for name in "abc"]
    triplets = np.tile([0, 1, 2], (6, 1))
    copies = PseudoLabels(triplets, np.zeros((6, 3), np.float32), np.zeros(6, np.int64), ("a", "b", "c"))
    student = build_finetune_student(CONFIG)
    data = TripletImages(paths, copies, student.augmentation(CONFIG), seed=0)
    plain = TripletImages(paths, copies, student.augmentation(replace(CONFIG, augmentation="none")), seed=0)
    views = [data[(0, row)][0] for row in range(6)]
    for view in views:
        assert torch.equal(view[0], view[1]) and torch.equal(view[0], view[2])
    assert all(not torch.equal(view[0], plain[(0, 0)][0][0]) for view in views)  # cropped, not resized
    assert len({v[0].sum().item() for v in views}) == 6  # rows differ
    assert not torch.equal(data[(1, 0)][0], data[(0, 0)][0])  # and epochs differ
    assert torch.equal(data[(1, 0)][0], data[(1, 0)][0])  # deterministic: workers and resumes agree
    flips = [student.augmentation(CONFIG).draw(0, 0, row).flip for row in range(200)]
    assert 60 < sum(flips) < 140
    assert not any(student.augmentation(replace(CONFIG, flip=False)).draw(0, 0, r).flip for r in range(50))


def _trainer(student, pool, labels, config=CONFIG):
    return FinetuneTrainer(
        student, pool.paths_for(labels), labels, config, plan_finetune(len(labels), config, 1), _ctx()
    )


def _ctx():
    from alignment.distributed import DistContext

    return DistContext()


def test_one_step_lowers_the_loss_on_a_fixed_batch(setup):
    _, pool, labels = setup
    trainer = _trainer(build_finetune_student(CONFIG), pool, labels)
    batch = default_collate([trainer.dataset[(0, row)] for row in range(8)])
    with torch.no_grad():
        before = float(trainer.triplet_losses(*batch).mean())
    trainer.step([batch])
    with torch.no_grad():
        assert float(trainer.triplet_losses(*batch).mean()) < before - 1e-4


def test_whole_network_trains_or_only_from_a_stage(setup):
    whole = build_finetune_student(CONFIG)
    assert all(p.requires_grad for p in whole.parameters())
    late = build_finetune_student(replace(CONFIG, train_from_stage=5))
    assert not late.network.conv_stem.weight.requires_grad
    assert not any(p.requires_grad for p in late.network.blocks[4].parameters())
    assert all(p.requires_grad for p in late.network.blocks[5].parameters())
    with pytest.raises(ValueError, match=r"train_from_stage must be in \[0, 6\]"):
        build_finetune_student(replace(CONFIG, train_from_stage=7))


def test_resume_continues_exactly(setup, tmp_path):
    _, pool, labels = setup
    config = replace(CONFIG, epochs=2.0)  # 4 steps per epoch: the stop falls inside the second epoch
    whole = train_finetune(
        build_finetune_student(config), pool, labels, config, tmp_path / "a", progress=None
    )
    first = train_finetune(
        build_finetune_student(config), pool, labels, config, tmp_path / "b", progress=None, stop_after=5
    )
    assert first.steps == 5 and not (tmp_path / "b" / "student.pt").exists()
    resumed = train_finetune(
        build_finetune_student(config), pool, labels, config, tmp_path / "b", progress=None
    )
    assert whole.steps == resumed.steps == 8
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]
    a, b = (load_finetuned(tmp_path / run / "student.pt")[0] for run in "ab")
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(value, other), key
    with pytest.raises(ValueError, match="different config or label set"):
        train_finetune(build_finetune_student(config), pool, labels, replace(config, lr=1e-2), tmp_path / "b")


def test_gradient_accumulation_equals_one_large_batch(setup, tmp_path):
    _, pool, labels = setup
    one = replace(CONFIG, epochs=0.5)
    two = replace(one, accumulation_steps=2, num_workers=1)  # also: a worker process decodes the same views
    a = train_finetune(build_finetune_student(one), pool, labels, one, tmp_path / "a", progress=None)
    b = train_finetune(build_finetune_student(two), pool, labels, two, tmp_path / "b", progress=None)
    np.testing.assert_allclose([h["loss"] for h in a.history], [h["loss"] for h in b.history], rtol=1e-4)
    with pytest.raises(ValueError, match="batch_triplets=8 must be divisible by processes x accumulation"):
        plan_finetune(len(labels), replace(CONFIG, accumulation_steps=3), 1)


def test_labels_of_another_backbone_are_refused_before_training(setup, tmp_path):
    _, pool, labels = setup
    other = replace(labels, meta={**labels.meta, "weights_id": "someone-else"})
    with pytest.raises(LabelsMismatchError, match="weights_id 'someone-else'"):
        train_finetune(build_finetune_student(CONFIG), pool, other, CONFIG, tmp_path)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_equal_one_process(setup, tmp_path, monkeypatch):
    folder, pool, labels = setup
    labels.save(tmp_path / "labels.npz")
    config = replace(CONFIG, epochs=1.0, num_workers=1)
    config.save(tmp_path / "config.json")
    initial = build_finetune_student(config).state_dict()
    args = ["--config", str(tmp_path / "config.json"), "--labels", str(tmp_path / "labels.npz")]
    args += ["--pool", str(folder), "--quiet"]
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "alignment.finetune", *args, "--out", str(tmp_path / "ddp")]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    single, ddp = (load_finetuned(tmp_path / r / "student.pt")[0].state_dict() for r in ("single", "ddp"))
    worst, moved = (
        0.0,
        0.0,
    )  # per tensor: difference relative to how far training moved it (see test_distributed)
    for key, value in single.items():
        if not value.is_floating_point():
            assert torch.equal(ddp[key], value)
            continue
        change = float((value - initial[key]).norm())
        if change > 1e-6:
            worst = max(worst, float((ddp[key] - value).norm()) / change)
        moved = max(moved, change)
    assert worst < 0.02, f"DDP differs from one process by {worst:.1%} of a tensor's training change"
    assert moved > 1e-3
    a, b = (load_finetuned(tmp_path / r / "student.pt")[0] for r in ("single", "ddp"))
    np.testing.assert_allclose(image_embeddings(a, pool.paths), image_embeddings(b, pool.paths), atol=1e-3)


def test_loader_workers_only_on_cores_the_compute_threads_leave_free(monkeypatch):
    """On the CPU a decoding worker competing with torch's threads slows every step; on a GPU workers are
    what keeps the device fed."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert loader_workers(2, torch.device("cpu")) == 0
    assert loader_workers(2, torch.device("cuda")) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert loader_workers(2, torch.device("cpu")) == 2 and loader_workers(12, torch.device("cpu")) == 8


def _keys(labels):
    return [(epoch, row) for epoch in (0, 1) for row in range(len(labels))]


def test_each_image_is_decoded_once_and_kept_images_feed_the_same_views(setup, tmp_path):
    folder, pool, labels = setup
    paths = [Path(shutil.copy(p, tmp_path / p.name)) for p in pool.paths]
    augment = build_finetune_student(CONFIG).augmentation(CONFIG)
    kept = TripletImages(paths, labels, augment, seed=0, cache_bytes=2**30)
    from_disk = TripletImages(paths, labels, augment, seed=0, cache_bytes=0)
    images, targets = kept.__getitems__(_keys(labels))
    assert len(kept.images.kept) == len(np.unique(labels.triplets)) and not from_disk.images.kept
    assert torch.equal(from_disk.__getitems__(_keys(labels))[0], images)
    assert torch.equal(targets, torch.from_numpy(np.tile(labels.similarities, (2, 1))))
    assert torch.equal(images[3], kept[(0, 3)][0])  # one item = the same row of a batch
    for path in paths:
        path.unlink()
    assert torch.equal(kept.__getitems__(_keys(labels))[0], images)  # served from memory now
    with pytest.raises(ValueError, match="cannot decode image"):
        from_disk.__getitems__(_keys(labels))


def test_the_image_cache_stays_within_its_budget_and_the_rest_is_read_from_disk(setup):
    _, pool, labels = setup
    augment = build_finetune_student(CONFIG).augmentation(CONFIG)
    unbounded = TripletImages(pool.paths, labels, augment, seed=0, cache_bytes=2**30)
    budget = (
        unbounded.images.kept_bytes
        or sum(  # the bytes of about a quarter of the pool
            decode_image(p, augment.kept_side).numel() for p in pool.paths[:5]
        )
    )
    bounded = TripletImages(pool.paths, labels, augment, seed=0, cache_bytes=budget)
    images = bounded.__getitems__(_keys(labels))[0]
    assert 0 < len(bounded.images.kept) < len(np.unique(labels.triplets))
    assert bounded.images.kept_bytes <= budget
    assert torch.equal(images, unbounded.__getitems__(_keys(labels))[0])


def test_views_are_the_crops_pil_made_before_the_cache(setup):
    """Same crop box and filter as the PIL pipeline this replaced; only rounding differs (PIL rounds and
    clips to uint8 between its horizontal and vertical passes, which on these noise images moves a few
    overshooting pixels by several levels, the mean by about 0.3)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    _, pool, _ = setup
    augment = build_finetune_student(CONFIG).augmentation(CONFIG)
    for row, path in enumerate(pool.paths):
        params = augment.draw(0, 0, row)
        with Image.open(path) as image:
            image = image.convert("RGB")
        width, height = image.size
        area = params.area * width * height
        w = max(1, min(width, round((area * params.aspect) ** 0.5)))
        h = max(1, min(height, round((area / params.aspect) ** 0.5)))
        left, top = round(params.x * (width - w)), round(params.y * (height - h))
        size, bicubic = [CONFIG.image_size] * 2, InterpolationMode.BICUBIC
        reference = F.resized_crop(image, top, left, h, w, size, interpolation=bicubic)
        reference = F.hflip(reference) if params.flip else reference
        expected = torch.from_numpy(np.array(reference)).permute(2, 0, 1).float()
        view = augment.pixels(decode_image(path, augment.kept_side), params)
        difference = (view - expected).abs()
        assert float(difference.mean()) <= 0.5 and float(difference.max()) <= 24, (row, params)


def test_large_images_are_kept_at_the_side_the_smallest_crop_needs(tmp_path):
    assert kept_side(32, "triplet", (0.35, 1.0)) == 63  # ceil(32 / sqrt(0.35 * 3/4))
    assert kept_side(32, "none", (0.35, 1.0)) == 32
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "big.png")
    assert decode_image(tmp_path / "big.png", 63).shape == (3, 63, 84)
    assert decode_image(tmp_path / "big.png", 400).shape == (3, 300, 400)
