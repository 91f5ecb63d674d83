"""Known-answer tests for the teacher: a planted linear map explains the human choices."""

import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from alignment import teacher as teacher_module
from alignment import teacher_problem
from alignment.conventions import (
    anchor_similarities,
    correct_choices,
    entropy,
    pair_similarities,
    triplet_probabilities,
)
from alignment.splits import TripletData, image_folds, object_disjoint_split
from alignment.synthetic import planted_anchor_rows, planted_triplets
from alignment.teacher import Teacher, TeacherConfig, fit_teacher
from alignment.teacher_losses import identity_regulariser
from alignment.teacher_problem import AffineTransform, ImageSet, PairIndex, pair_dots, principal_basis

N_TRAIN, N_TEST = 30000, 10000
FAST = TeacherConfig(reg_weight=1e-3, num_threads=1)


@pytest.fixture(scope="module")
def planted():
    return planted_triplets(300, 32, N_TRAIN + N_TEST, seed=0)


def _test_accuracy(teacher, data):
    return correct_choices(np.log(teacher.probabilities(data.features, data.triplets[N_TRAIN:]))).mean()


def _planted_accuracy(data):
    return correct_choices(np.log(data.planted_probs[N_TRAIN:])).mean()


@pytest.fixture(scope="module")
def teacher(planted):
    return fit_teacher(planted.features, planted.triplets[:N_TRAIN], config=FAST)


def test_teacher_recovers_the_planted_models_held_out_accuracy(planted, teacher):
    raw = correct_choices(
        pair_similarities(planted.features - planted.features.mean(), planted.triplets[N_TRAIN:])
    )
    assert raw.mean() < _planted_accuracy(planted) - 0.15  # the raw features are a poor model
    assert abs(_test_accuracy(teacher, planted) - _planted_accuracy(planted)) < 0.01


def test_teacher_entropy_tracks_the_planted_uncertainty(planted, teacher):
    probs = teacher.probabilities(planted.features, planted.triplets[N_TRAIN:])
    rho = spearmanr(entropy(probs), entropy(planted.planted_probs[N_TRAIN:]))[0]
    assert rho > 0.8
    assert teacher.summary["val_ece"] < 0.05


def _calibrated_differences(sims: np.ndarray, temperature: float) -> np.ndarray:
    """s01 - s02 and s01 - s12 over T: what the choice probabilities depend on (shift-invariant)."""
    return np.concatenate([sims[:, 0] - sims[:, 1], sims[:, 0] - sims[:, 2]]) / temperature


def test_anchor_and_odd_one_out_judgments_of_one_planted_model_give_consistent_fits(planted, teacher):
    anchors = planted_anchor_rows(planted.human_embedding, N_TRAIN, planted.temperature, seed=5)
    test_anchors = planted_anchor_rows(planted.human_embedding, N_TEST, planted.temperature, seed=6)
    test_triplets = planted.triplets[N_TRAIN:]
    by_anchor = fit_teacher(planted.features, None, anchors=anchors, config=FAST)
    both = fit_teacher(
        planted.features, planted.triplets[: N_TRAIN // 2], anchors=anchors[: N_TRAIN // 2], config=FAST
    )
    assert by_anchor.summary["n_train_triplets"] == 0 and "val_anchor_accuracy" in by_anchor.summary
    planted_anchor = correct_choices(anchor_similarities(planted.human_embedding, test_anchors)).mean()
    assert 0.55 < planted_anchor < 0.95  # the anchor rows carry the planted model's signal and its noise
    planted_sims = pair_similarities(planted.human_embedding, test_triplets)
    for fitted in (teacher, by_anchor, both):
        z = fitted.transform(planted.features)
        assert (
            abs(correct_choices(pair_similarities(z, test_triplets)).mean() - _planted_accuracy(planted))
            < 0.015
        )
        assert abs(correct_choices(anchor_similarities(z, test_anchors)).mean() - planted_anchor) < 0.015
        # one temperature convention: the calibrated similarities are the planted ones, whichever kind
        # was fitted
        mine = _calibrated_differences(pair_similarities(z, test_triplets), fitted.temperature)
        truth = _calibrated_differences(planted_sims, planted.temperature)
        assert np.corrcoef(mine, truth)[0, 1] > 0.95
        assert mine.std() == pytest.approx(truth.std(), rel=0.15)


@pytest.mark.parametrize("wrong_order", [[2, 0, 1], [0, 2, 1]], ids=["odd-first", "odd-middle"])
def test_fitting_with_a_permuted_triplet_convention_fails(planted, wrong_order):
    wrong = fit_teacher(planted.features, planted.triplets[:N_TRAIN][:, wrong_order], config=FAST)
    assert _test_accuracy(wrong, planted) < 0.34 < _planted_accuracy(planted) - 0.25


def test_soft_labels_distill_human_uncertainty_and_entropy_is_matched():
    data = planted_triplets(300, 32, 12000, responses=10, seed=1)
    config = TeacherConfig(reg_weight=1e-3, temperature_fit="entropy", num_threads=1)
    teacher = fit_teacher(data.features, data.triplets, choice_probs=data.choice_probs, config=config)
    summary = teacher.summary
    assert summary["loss"] == "soft" and summary["temperature_method"] == "entropy"
    assert summary["val_model_entropy"] == pytest.approx(summary["val_human_entropy"], abs=1e-3)
    probs = teacher.probabilities(data.features, data.triplets)
    assert spearmanr(entropy(probs), entropy(data.planted_probs))[0] > 0.8


def test_default_temperature_is_calibrated_even_with_one_response_per_triplet(planted):
    one_hot = np.tile([1.0, 0.0, 0.0], (N_TRAIN, 1))  # plug-in human entropy is 0 for every triplet
    teacher = fit_teacher(planted.features, planted.triplets[:N_TRAIN], choice_probs=one_hot, config=FAST)
    assert teacher.summary["temperature_method"] == "nll" and teacher.summary["val_ece"] < 0.05
    probs = teacher.probabilities(planted.features, planted.triplets[N_TRAIN:])
    planted_entropy = entropy(planted.planted_probs[N_TRAIN:]).mean()
    assert entropy(probs).mean() == pytest.approx(planted_entropy, rel=0.1)


def test_regulariser_weight_is_chosen_on_validation_when_data_are_scarce():
    # humans judge exactly in the backbone's space: with 400 triplets only a strong pull to identity
    # generalises
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 32)).astype(np.float32)
    triplets = np.array([rng.choice(200, 3, replace=False) for _ in range(6400)])
    probs = triplet_probabilities(pair_similarities(x, triplets), 8.0)
    chosen = np.array([rng.choice(3, p=p) for p in probs])
    orders = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])
    triplets = np.take_along_axis(triplets, orders[chosen], axis=1)
    train, test = triplets[:400], triplets[400:]
    auto = fit_teacher(x, train, config=TeacherConfig(num_threads=1))
    selection = auto.summary["selection"]  # 400 triplets over 200 images: too few for image folds, said so
    assert (
        selection["method"] == "holdout"
        and "validation judgments in the smallest fold" in selection["why_not_image_cv"]
    )
    losses = auto.summary["reg_weight_val_loss"]
    strongest_first = [str(w) for w in sorted(TeacherConfig().reg_weight_grid, reverse=True)]
    assert list(losses) == strongest_first[: len(losses)]  # the path stopped once val loss rose
    assert auto.summary["reg_weight"] >= 1.0 and losses[str(auto.summary["reg_weight"])] == min(
        losses.values()
    )
    identity = correct_choices(pair_similarities(x, test)).mean()
    assert correct_choices(pair_similarities(auto.transform(x), test)).mean() >= identity - 0.005


def test_adam_mini_batches_also_learn(planted):
    config = TeacherConfig(
        optimizer="adam", batch_size=2048, lr=0.05, max_steps=300, reg_weight=1e-3, num_threads=1
    )
    teacher = fit_teacher(planted.features, planted.triplets[:N_TRAIN], config=config)
    assert _test_accuracy(teacher, planted) > _planted_accuracy(planted) - 0.03


def test_local_term_keeps_working_fits(planted):
    config = TeacherConfig(local_weight=0.1, local_images=200, reg_weight=1e-3, num_threads=1)
    teacher = fit_teacher(planted.features, planted.triplets[:N_TRAIN], config=config)
    assert _test_accuracy(teacher, planted) > _planted_accuracy(planted) - 0.03


def test_save_and_load_round_trip(tmp_path, planted, teacher):
    teacher.save(tmp_path / "t")
    loaded = Teacher.load(tmp_path / "t")
    for name in ("basis", "core", "identity_scale", "bias"):
        np.testing.assert_array_equal(getattr(loaded.affine, name), getattr(teacher.affine, name))
    # equal up to float32 rounding only: BLAS may round differently for differently aligned copies
    expected = teacher.transform(planted.features)
    np.testing.assert_allclose(loaded.transform(planted.features), expected, rtol=1e-6, atol=1e-6)
    assert loaded.temperature == teacher.temperature and loaded.config == teacher.config
    assert json.loads((tmp_path / "t" / "config.json").read_text())["optimizer"] == "lbfgs"
    with pytest.raises(FileNotFoundError, match="teacher.npz"):
        Teacher.load(tmp_path / "missing")


def test_a_teacher_saved_with_an_explicit_weight_still_loads(tmp_path, planted, teacher):
    """Teachers saved before the factored form kept W [D, D] itself; they load and transform the same."""
    affine = teacher.affine
    weight = affine.identity_scale * np.eye(affine.dim) + affine.basis @ affine.core @ affine.basis.T
    teacher.save(tmp_path)
    np.savez(
        tmp_path / "teacher.npz",
        weight=weight.astype(np.float32),
        bias=affine.bias,
        mean=teacher.mean,
        std=teacher.std,
        temperature=teacher.temperature,
    )
    loaded = Teacher.load(tmp_path)
    expected = teacher.transform(planted.features[:50])
    np.testing.assert_allclose(loaded.transform(planted.features[:50]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gram", ["dense", "sparse"])
@pytest.mark.parametrize("rank", [5, None])
def test_subspace_parametrisation_equals_the_explicit_affine_map(rank, gram, monkeypatch):
    monkeypatch.setattr(teacher_problem, "DENSE_GRAM_RATIO", 10**9 if gram == "dense" else 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    triplets = np.array([[0, 1, 2], [3, 4, 5], [19, 7, 11]])
    basis = principal_basis(torch.from_numpy(x), rank)
    transform = AffineTransform(basis, 0.7, use_bias=True)
    with torch.no_grad():
        transform.m.copy_(torch.from_numpy(rng.normal(size=transform.m.shape).astype(np.float32)))
        transform.c.fill_(0.3)
        transform.beta.copy_(torch.from_numpy(rng.normal(size=transform.beta.shape).astype(np.float32)))
    anchors = np.array([[5, 0, 1], [11, 19, 2]])  # (head, close, far), sharing pairs with the triplets
    images = ImageSet.build(x, TripletData(triplets, anchors=anchors), basis, soft=False)
    factors = transform.factors()
    weight = factors.identity_scale * np.eye(8) + factors.basis @ factors.core @ factors.basis.T
    bias = factors.bias
    z = x @ weight.T + bias
    np.testing.assert_allclose(factors.apply(x), z, rtol=1e-5, atol=1e-5)
    triplet_sims, anchor_sims = (s.detach().numpy() for s in transform.sims(images))
    np.testing.assert_allclose(triplet_sims, pair_similarities(z, triplets), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(anchor_sims, anchor_similarities(z, anchors), rtol=1e-4, atol=1e-4)
    batch = images.batch(torch.tensor([2, 4]))  # the third triplet and the second anchor row
    triplet_sims, anchor_sims = (s.detach().numpy() for s in transform.sims(batch))
    np.testing.assert_allclose(triplet_sims, pair_similarities(z, triplets[2:]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(anchor_sims, anchor_similarities(z, anchors[1:]), rtol=1e-4, atol=1e-4)
    expected_reg = identity_regulariser(torch.from_numpy(weight)).item() + float((bias**2).sum())
    assert transform.regulariser().item() == pytest.approx(expected_reg, rel=1e-4)


def test_dense_pair_products_stay_right_when_their_buffers_are_reused(monkeypatch):
    """The dense path reuses its n x n buffers across steps: every call, in any dtype, gives that call's
    products and gradient, and an earlier result is not overwritten by a later call."""
    monkeypatch.setattr(teacher_problem, "DENSE_GRAM_RATIO", 10**9)
    rng = np.random.default_rng(2)
    a, b = (torch.from_numpy(rng.integers(0, 30, 200)) for _ in range(2))
    keep = a != b
    index, position = PairIndex.build(a[keep], b[keep], 30)
    earlier = []
    for dtype in (torch.float32, torch.float32, torch.float64, torch.float32):
        z = torch.from_numpy(rng.normal(size=(30, 5))).to(dtype)
        weights = torch.from_numpy(rng.normal(size=int(keep.sum()))).to(dtype)
        leaf = z.clone().requires_grad_(True)
        values = pair_dots(leaf, index)
        (values[position] * weights).sum().backward()
        reference = z.clone().requires_grad_(True)
        expected = (reference[a[keep]] * reference[b[keep]]).sum(1)
        (expected * weights).sum().backward()
        torch.testing.assert_close(values.detach()[position], expected.detach())
        torch.testing.assert_close(leaf.grad, reference.grad)
        earlier.append((values.detach(), values.detach().clone()))
    for kept, copy in earlier:
        torch.testing.assert_close(kept, copy)


def test_dense_and_sparse_pair_products_agree_with_their_gradients(monkeypatch):
    """The dense Gram path (pairs fill much of the matrix) and the sampled sparse path give the same pair
    products and the same gradient with respect to the embeddings."""
    rng = np.random.default_rng(1)
    z = torch.from_numpy(rng.normal(size=(40, 6)).astype(np.float32))
    a, b = (torch.from_numpy(rng.integers(0, 40, 300)) for _ in range(2))
    keep = a != b
    weights = torch.from_numpy(rng.normal(size=int(keep.sum())).astype(np.float32))
    results = {}
    for gram, ratio in (("dense", 10**9), ("sparse", 0)):
        monkeypatch.setattr(teacher_problem, "DENSE_GRAM_RATIO", ratio)
        index, position = PairIndex.build(a[keep], b[keep], 40)
        assert (index.sparse is None) == (index.scratch is not None) == (gram == "dense")
        leaf = z.clone().requires_grad_(True)
        values = pair_dots(leaf, index)
        (values[position] * weights).sum().backward()
        results[gram] = (values.detach(), leaf.grad)
    leaf = z.clone().requires_grad_(True)
    expected = (leaf[a[keep]] * leaf[b[keep]]).sum(1)
    (expected * weights).sum().backward()
    for gram in results:
        torch.testing.assert_close(results[gram][0][position], expected.detach(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(results[gram][1], leaf.grad, rtol=1e-4, atol=1e-4)
    for dense, sparse in zip(results["dense"], results["sparse"], strict=True):
        torch.testing.assert_close(dense, sparse, rtol=1e-4, atol=1e-4)


def test_object_disjoint_validation_never_shares_images(planted):
    anchors = planted_anchor_rows(planted.human_embedding, 5000, planted.temperature, seed=5)
    train, val = object_disjoint_split(TripletData(planted.triplets, anchors=anchors), 300, 0.3, seed=0)
    assert len(val.triplets) and len(val.anchors)
    assert not set(train.images()) & set(val.images())
    config = TeacherConfig(object_disjoint=True, val_fraction=0.3, reg_weight=1e-3, num_threads=1)
    teacher = fit_teacher(planted.features, planted.triplets[:N_TRAIN], config=config)
    assert teacher.summary["n_val_triplets"] == pytest.approx(0.3**3 * N_TRAIN, rel=0.25)


def test_image_folds_never_put_an_image_on_both_sides(planted):
    anchors = planted_anchor_rows(planted.human_embedding, 5000, planted.temperature, seed=5)
    data = TripletData(planted.triplets, anchors=anchors)
    folds = image_folds(data, 300, 5, seed=0)
    assert len(folds) == 5
    held_out = np.concatenate([images for _, _, images in folds])
    assert sorted(held_out) == sorted(data.images())  # every used image is validated on exactly once
    for train, val, images in folds:
        assert len(val.triplets) and len(val.anchors) and len(train.triplets) and len(train.anchors)
        assert not set(train.images()) & set(val.images())
        assert set(val.images()) <= set(images)


def test_regulariser_is_chosen_by_image_cross_validation_by_default(planted):
    config = TeacherConfig(num_threads=1)
    teacher = fit_teacher(planted.features, planted.triplets[:N_TRAIN], config=config)
    selection = teacher.summary["selection"]
    assert selection["method"] == "image_cv" and selection["folds"] == config.cv_folds == 5
    assert sum(selection["fold_images"]) == 300
    assert len(selection["fold_val_loss"]) == 5 and len(selection["fold_steps"]) == 5
    reached_by_all = set.intersection(*(set(losses) for losses in selection["fold_val_loss"]))
    assert set(teacher.summary["reg_weight_val_loss"]) == reached_by_all
    means = teacher.summary["reg_weight_val_loss"]
    assert means[str(teacher.summary["reg_weight"])] == min(means.values())
    assert teacher.summary["n_train_triplets"] == N_TRAIN  # the final fit uses every judgment
    assert teacher.summary["val_images"] == "unseen (out-of-fold)"
    assert abs(_test_accuracy(teacher, planted) - _planted_accuracy(planted)) < 0.01


def test_parallel_image_folds_give_the_serial_results(planted):
    serial = fit_teacher(
        planted.features, planted.triplets[:8000], config=TeacherConfig(num_threads=1, cv_workers=1)
    )
    parallel = fit_teacher(
        planted.features, planted.triplets[:8000], config=TeacherConfig(num_threads=1, cv_workers=3)
    )
    assert parallel.summary["selection"]["workers"] == 3 and serial.summary["selection"]["workers"] == 1
    for key in ("fold_val_loss", "fold_steps", "fold_images", "final_path_steps"):
        assert parallel.summary["selection"][key] == serial.summary["selection"][key]
    assert parallel.summary["reg_weight"] == serial.summary["reg_weight"]
    for name in ("basis", "core", "identity_scale", "bias"):
        np.testing.assert_array_equal(getattr(parallel.affine, name), getattr(serial.affine, name))
    assert parallel.temperature == serial.temperature


def test_fold_workers_follow_the_cores_unless_set(monkeypatch):
    monkeypatch.setattr(teacher_module.os, "cpu_count", lambda: 4)
    assert teacher_module.fold_workers(TeacherConfig(num_threads=1)) == 4
    assert teacher_module.fold_workers(TeacherConfig(num_threads=2)) == 2
    assert teacher_module.fold_workers(TeacherConfig(num_threads=None)) == 1  # torch uses every core itself
    assert teacher_module.fold_workers(TeacherConfig(cv_workers=9)) == 5  # never more than the folds
    with pytest.raises(ValueError, match="cv_workers"):
        TeacherConfig(cv_workers=0)


def test_a_cancelled_parallel_search_stops_its_folds(planted, monkeypatch):
    class Cancelled(Exception):
        pass

    def cancel(step, total):
        raise Cancelled

    fits = []
    fit = teacher_module._WarmPath.fit
    monkeypatch.setattr(teacher_module._WarmPath, "fit", lambda *a, **k: fits.append(1) or fit(*a, **k))
    before = threading.active_count()
    with pytest.raises(Cancelled):
        fit_teacher(
            planted.features,
            planted.triplets[:8000],
            config=TeacherConfig(num_threads=1, cv_workers=2),
            progress=cancel,
        )
    assert threading.active_count() == before  # no fold thread left running
    assert len(fits) <= 2  # each running fold stopped in its first fit; the queued folds never started


def test_principal_basis_ignores_torch_global_random_state():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 64)) * np.linspace(4, 1, 64)
    x = torch.from_numpy((signal + 0.1 * rng.normal(size=(200, 64))).astype(np.float32))
    torch.manual_seed(1)
    first = principal_basis(x, 16)
    torch.manual_seed(2)
    np.testing.assert_array_equal(principal_basis(x, 16).numpy(), first.numpy())
    exact = torch.linalg.svd(x, full_matrices=False).Vh[:16].T
    assert float((first.T @ exact).square().sum()) == pytest.approx(16, abs=1e-3)  # the top-16 subspace


def test_config_loads_from_toml_and_rejects_nonsense(tmp_path):
    (tmp_path / "t.toml").write_text('[teacher]\nreg_weight = 0.5\noptimizer = "adam"\nbatch_size = 64\n')
    config = TeacherConfig.from_file(tmp_path / "t.toml")
    assert (config.reg_weight, config.optimizer, config.batch_size) == (0.5, "adam", 64)
    with pytest.raises(ValueError, match="optimizer"):
        TeacherConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="unknown"):
        TeacherConfig.from_dict({"learning_rate": 1})


def test_bad_inputs_are_named(planted):
    with pytest.raises(ValueError, match="row 0"):
        fit_teacher(planted.features, np.array([[0, 1, 999]]))
    with pytest.raises(ValueError, match="choice_probs row 1"):
        fit_teacher(planted.features, planted.triplets[:2], choice_probs=[[1, 0, 0], [0.5, 0.6, 0]])
    with pytest.raises(ValueError, match="needs choice_probs"):
        fit_teacher(planted.features, planted.triplets[:100], config=TeacherConfig(loss="soft"))


# In a fresh process (its peak RSS is its own): fit once at a small D so torch's one-off allocations are
# behind the baseline, then fit, transform, save and load at D = 20,000 and print how far the peak rose
_PEAK_RSS_SCRIPT = """
import resource, sys, tempfile
import numpy as np
from alignment.teacher import Teacher, TeacherConfig, fit_teacher

def fit(dim):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, dim)).astype(np.float32)
    anchors = np.array([rng.choice(40, 3, replace=False) for _ in range(400)])
    config = TeacherConfig(reg_weight=0.1, max_steps=5, num_threads=1)
    teacher = fit_teacher(features, None, anchors=anchors, config=config)
    with tempfile.TemporaryDirectory() as directory:
        Teacher.load(teacher.save(directory)).transform(features)

fit(200)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fit(int(sys.argv[1]))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)  # ru_maxrss is in KiB on Linux
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux (bytes on macOS)")
def test_teacher_memory_grows_with_d_not_d_squared():
    """W is never formed: at D = 20,000 one W [D, D] float32 is 1.6 GB; the fit's own data is 3 MB."""
    dim = 20_000
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT, str(dim)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    peak_rise = int(run.stdout.split()[-1])
    assert peak_rise < dim * dim * 4 / 8, f"peak RSS rose {peak_rise / 2**20:.0f} MB at D = {dim}"


def test_a_fit_too_large_for_the_machine_is_refused_before_any_work(planted, monkeypatch):
    """W free on all 32 dims: about 100 copies of a 32 x 32 float32 array (400 KB) plus 8 of the ~290
    judged images' features (290 KB), refused on a machine of 500 KB with the estimate and what to change;
    W free on 4 directions (300 KB in all) is fitted."""
    monkeypatch.setattr(teacher_module, "_physical_memory_bytes", lambda: 500_000)
    config = TeacherConfig(reg_weight=1e-3, num_threads=1, subspace_dim=None)
    with pytest.raises(ValueError, match=r"would need about .* GB \(W free on 32 of 32 .*subspace_dim"):
        fit_teacher(planted.features, planted.triplets[:300], config=config)
    fit_teacher(planted.features, planted.triplets[:300], config=replace(config, subspace_dim=4))


def test_a_machine_that_does_not_say_its_memory_is_not_refused(planted, monkeypatch):
    """Where ``os.sysconf`` is missing (Windows) the fit goes ahead rather than failing on the check."""
    monkeypatch.delattr(teacher_module.os, "sysconf", raising=False)
    config = TeacherConfig(reg_weight=1e-3, num_threads=1, subspace_dim=None, max_steps=5)
    teacher = fit_teacher(planted.features, planted.triplets[:300], config=config)
    assert teacher.transform(planted.features).shape == planted.features.shape
