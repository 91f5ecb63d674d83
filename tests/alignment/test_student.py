"""Student distillation: a planted-teacher known answer, refusals before training, exact resume, a real
backbone."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from alignment.conventions import correct_choices, pair_similarities
from alignment.pseudolabels import (
    LabelProvenance,
    LabelsMismatchError,
    PseudoLabelConfig,
    PseudoLabels,
    TooFewLabelsError,
    make_pseudolabels,
)
from alignment.student import (
    Student,
    StudentConfig,
    TrunkActivations,
    build_student,
    compute_trunk_activations,
    load_student,
    new_triplet_head,
    student_embeddings,
    train_student,
)

D = 16
SCALES = np.r_[np.full(8, 3.0), np.full(8, 1.0)]
PLANT = np.zeros((8, D))
PLANT[:, 8:] = 2 * np.eye(8)  # humans judge by the low-variance half; raw dot products mostly by the other


class PlantedTeacher:
    temperature = 1.0

    def transform(self, features):
        return features @ PLANT.T


def _items(n, rng):
    return (rng.standard_normal((n, D)) * SCALES).astype(np.float32)


def _held_out_truth(items, rng, n=2000):
    """Random triplets over new items, reordered so the planted model's choice is pair (0, 1)."""
    triplets = np.array([rng.choice(len(items), 3, replace=False) for _ in range(n)])
    sims = pair_similarities(items.astype(np.float64) @ PLANT.T, triplets)
    return np.take_along_axis(triplets, np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[sims.argmax(1)], axis=1)


def _synthetic_student(seed=0):
    torch.manual_seed(seed)
    rest = nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 32))
    return Student(
        nn.Identity(),
        rest,
        new_triplet_head(32, 16, seed),
        backbone="synthetic",
        weights_id="w0",
        stage=0,
        image_size=0,
    )


def _config(**overrides):
    base = {
        "backbone": "synthetic",
        "head_dim": 16,
        "tau": 1.0,
        "lr": 3e-2,
        "epochs": 10,
        "groups_per_step": 2,
        "min_triplets": 100,
        "log_every": 10,
        "checkpoint_every": 10,
    }
    return StudentConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    pool, held = _items(400, rng), _items(300, rng)
    ids = tuple(f"img{i}" for i in range(len(pool)))
    sets = make_pseudolabels(
        pool,
        PlantedTeacher(),
        LabelProvenance("synthetic", "w0", ids, "planted"),
        PseudoLabelConfig(n_triplets=4096, n_clusters=10, seed=0),
    )
    return pool, ids, held, _held_out_truth(held, rng), sets


def _held_out_accuracy(student, held, truth):
    z = student_embeddings(student, torch.from_numpy(held)).astype(np.float64)
    return float(correct_choices(pair_similarities(z, truth)).mean())


def _train(labels, pool, ids, tmp_path, name, **overrides):
    student = _synthetic_student()
    acts = TrunkActivations(torch.from_numpy(pool), ids, dict(student.identity))
    result = train_student(student, acts, labels, _config(**overrides), tmp_path / name, progress=None)
    return student, result


def test_planted_teacher_labels_raise_held_out_accuracy_well_above_chance(planted, tmp_path):
    pool, ids, held, truth, sets = planted
    before = _held_out_accuracy(_synthetic_student(), held, truth)
    aligned, _ = _train(sets["aligned"], pool, ids, tmp_path, "aligned")
    control, _ = _train(sets["untransformed"], pool, ids, tmp_path, "control")
    after, after_control = _held_out_accuracy(aligned, held, truth), _held_out_accuracy(control, held, truth)
    assert before < 0.45
    assert after > 0.65 and after > before + 0.25  # chance is 1/3
    assert after_control < after - 0.2  # raw-feature labels (UnAligNet) do not teach the planted structure


def test_a_broken_triplet_convention_cannot_pass_silently(planted, tmp_path):
    """Triplets read with the odd one out FIRST but similarities kept (an issue #10-style mistake): the
    student learns the wrong pairs and stays near chance, far below the > 0.65 the correct labels reach."""
    pool, ids, held, truth, sets = planted
    good = sets["aligned"]
    flipped = PseudoLabels(
        good.triplets[:, ::-1].copy(), good.similarities, good.groups, good.pool_ids, good.meta
    )
    student, _ = _train(flipped, pool, ids, tmp_path, "flipped")
    assert _held_out_accuracy(student, held, truth) < 0.42


@pytest.mark.parametrize("loss", ["kl", "hard"])
def test_other_losses_also_learn_the_planted_structure(planted, tmp_path, loss):
    pool, ids, held, truth, sets = planted
    student, _ = _train(sets["aligned"], pool, ids, tmp_path, loss, loss=loss)
    assert _held_out_accuracy(student, held, truth) > 0.6


def test_labels_for_another_pool_are_refused_before_training(planted, tmp_path):
    pool, ids, _, _, sets = planted
    student = _synthetic_student()
    other_pool = TrunkActivations(torch.from_numpy(pool), ids[1:] + ids[:1], dict(student.identity))
    with pytest.raises(LabelsMismatchError, match="pool_digest"):
        train_student(student, other_pool, sets["aligned"], _config(), tmp_path / "run", progress=None)
    other_backbone = Student(
        nn.Identity(),
        nn.Linear(D, 32),
        new_triplet_head(32, 16, 0),
        backbone="timm:x",
        weights_id="w0",
        stage=0,
        image_size=0,
    )
    acts = TrunkActivations(torch.from_numpy(pool), ids, dict(other_backbone.identity))
    with pytest.raises(LabelsMismatchError, match="backbone 'synthetic'"):
        train_student(other_backbone, acts, sets["aligned"], _config(), tmp_path / "run", progress=None)
    assert not (tmp_path / "run").exists()  # nothing written


def test_tiny_or_empty_labels_give_a_clear_error(planted, tmp_path):
    pool, ids, _, _, sets = planted
    good = sets["aligned"]
    tiny = PseudoLabels(
        good.triplets[:50], good.similarities[:50], good.groups[:50], good.pool_ids, good.meta
    )
    with pytest.raises(TooFewLabelsError, match="has 50 triplets; training needs at least 100"):
        _train(tiny, pool, ids, tmp_path, "tiny")
    with pytest.raises(TooFewLabelsError, match="1 triplet groups; one step needs groups_per_step=2"):
        _train(tiny, pool, ids, tmp_path, "tiny", min_triplets=10)


def test_interrupted_training_resumes_to_the_same_weights(planted, tmp_path):
    pool, ids, _, _, sets = planted
    straight, _ = _train(sets["aligned"], pool, ids, tmp_path, "straight", epochs=2)

    def crash_at_step_15(progress):
        if progress.step == 15:
            raise KeyboardInterrupt

    student = _synthetic_student()
    acts = TrunkActivations(torch.from_numpy(pool), ids, dict(student.identity))
    config = _config(epochs=2, log_every=5)
    with pytest.raises(KeyboardInterrupt):
        train_student(student, acts, sets["aligned"], config, tmp_path / "resumed", progress=crash_at_step_15)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 10
    resumed = _synthetic_student()
    seen = []
    result = train_student(resumed, acts, sets["aligned"], config, tmp_path / "resumed", progress=seen.append)
    assert (
        seen[0].step == 15 and seen[-1].step == result.steps == seen[-1].total_steps and seen[-1].eta_s == 0
    )
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert result.steps == 16 and [h["step"] for h in history] == [
        5,
        10,
        15,
        16,
    ]  # every 5 steps and the last
    with pytest.raises(ValueError, match="checkpoint of a different config"):
        train_student(
            _synthetic_student(),
            acts,
            sets["aligned"],
            _config(epochs=2, lr=1e-3),
            tmp_path / "resumed",
            progress=None,
        )


def test_real_backbone_student_trains_saves_and_reloads(tmp_path):
    config = StudentConfig(
        weights="random", image_size=32, head_dim=8, epochs=1, groups_per_step=2, min_triplets=10, log_every=1
    )
    student = build_student(config, cache_dir=tmp_path)
    assert student.identity["stage"] == 6 and sum(p.requires_grad for p in student.trunk.parameters()) == 0
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = tuple(f"img{i}" for i in range(24))
    acts = compute_trunk_activations(student, images, ids, batch_size=10)
    assert acts.activations.shape == (24, 192, 1, 1)
    features = student_embeddings(student, acts.activations, output="prelogits")
    with torch.inference_mode():
        np.testing.assert_allclose(
            features,
            student.trunk.__class__(*student.trunk, *student.rest)(images).numpy(),
            rtol=1e-4,
            atol=1e-5,
        )

    class Identity:
        temperature = 1.0

        def transform(self, x):
            return x

    provenance = LabelProvenance(config.backbone, student.identity["weights_id"], ids, "identity")
    labels = make_pseudolabels(
        features,
        Identity(),
        provenance,
        PseudoLabelConfig(n_triplets=60, n_clusters=4, triplets_per_group=20),
    )["aligned"]
    result = train_student(student, acts, labels, config, tmp_path / "run", progress=None)
    assert result.steps == 1 and np.isfinite(result.final_loss)
    reloaded, reloaded_config = load_student(result.student_path, cache_dir=tmp_path)
    assert reloaded_config == config
    np.testing.assert_allclose(
        student_embeddings(reloaded, acts.activations), student_embeddings(student, acts.activations)
    )
    with pytest.raises(ValueError, match="were made for"):
        other = TrunkActivations(acts.activations, ids, {**acts.identity, "image_size": 64})
        train_student(student, other, labels, config, tmp_path / "run2", progress=None)


def test_pool_activations_from_files_match_the_trunk_and_use_content_hashes(tmp_path):
    from PIL import Image

    from alignment.features import image_content_hash
    from alignment.student import pool_activations, student_transform

    config = StudentConfig(weights="random", image_size=32)
    student = build_student(config, cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(paths[-1])
    acts = pool_activations(student, paths, cache_dir=tmp_path / "cache", batch_size=2)
    assert acts.pool_ids == tuple(image_content_hash(p) for p in paths) and acts.identity == student.identity
    transform = student_transform(student)
    direct = compute_trunk_activations(
        student, torch.stack([transform(Image.open(p).convert("RGB")) for p in paths]), acts.pool_ids
    )
    torch.testing.assert_close(acts.activations, direct.activations, rtol=1e-4, atol=1e-5)
    again = pool_activations(student, paths[::-1], cache_dir=tmp_path / "cache")  # served from the disk cache
    torch.testing.assert_close(again.activations, acts.activations.flip(0))
