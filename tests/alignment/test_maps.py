"""2-D maps in a common frame: identity shows no movement, planted movement shows, UMAP is warmed once."""

from __future__ import annotations

import numpy as np
import pytest

import alignment.maps
from alignment.maps import (
    MapConfig,
    embed_2d,
    paired_maps,
    procrustes_align,
    start_umap_warmup,
    unit_frame,
    warm_umap,
)
from tests.support.planted import lizard_moves, random_similarity_transform, relocate_rows


def test_procrustes_undoes_a_known_rotation_reflection_scale_and_shift():
    reference = np.random.default_rng(0).normal(size=(30, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([1, -1])
    moving = 4.0 * reference @ rotation + [5.0, -2.0]
    fit = procrustes_align(reference, moving)
    np.testing.assert_allclose(fit.aligned, reference, atol=1e-10)
    assert fit.scale == pytest.approx(0.25) and fit.disparity == pytest.approx(0.0, abs=1e-20)


def test_unit_frame_is_centred_with_unit_rms_radius():
    xy = unit_frame(np.random.default_rng(1).normal(3.0, 5.0, size=(50, 2)))
    np.testing.assert_allclose(xy.mean(axis=0), 0, atol=1e-12)
    assert np.sqrt((xy**2).sum(axis=1).mean()) == pytest.approx(1.0)


@pytest.mark.parametrize("transform", ["identical", "rotated_and_scaled"])
def test_pca_maps_of_an_unchanged_representation_show_no_movement(transform):
    before = lizard_moves().before
    after = before.copy() if transform == "identical" else random_similarity_transform(before)
    maps = paired_maps(before, after, MapConfig(method="pca"))
    assert maps.displacement.max() < 1e-9 and maps.disparity < 1e-18


def test_pca_map_shows_the_moved_lizards_moving_most():
    planted = lizard_moves()
    maps = paired_maps(planted.before, planted.after, MapConfig(method="pca"))
    by_category = {c: maps.displacement[planted.category == c].mean() for c in set(planted.category)}
    assert max(by_category, key=by_category.get) == "lizard"
    assert by_category["lizard"] > 1.5 * max(v for c, v in by_category.items() if c != "lizard")


def test_individually_relocated_images_move_furthest_on_the_pca_map():
    planted = lizard_moves()
    rows = [2, 30]  # a dog next to a fern; a cactus next to a dog
    maps = paired_maps(planted.before, relocate_rows(planted.before, rows, [26, 1]), MapConfig(method="pca"))
    assert set(np.argsort(maps.displacement)[-2:].tolist()) == set(rows)


def test_maps_are_deterministic():
    before = lizard_moves().before
    np.testing.assert_array_equal(
        embed_2d(before, MapConfig(method="pca")), embed_2d(before, MapConfig(method="pca"))
    )


def test_bad_inputs_are_refused_clearly():
    before = lizard_moves().before
    with pytest.raises(ValueError, match="same images"):
        paired_maps(before, before[:-2], MapConfig(method="pca"))
    with pytest.raises(ValueError, match="2-D array"):
        embed_2d(before[0], MapConfig(method="pca"))
    with pytest.raises(ValueError, match="at least 5 images"):
        embed_2d(before[:3], MapConfig(method="pca"))
    with pytest.raises(ValueError, match="map method must be one of"):
        MapConfig(method="tsne")


@pytest.mark.slow
def test_umap_is_warmed_once_per_process_then_seeded_fits_repeat_exactly(monkeypatch):
    monkeypatch.setattr(alignment.maps, "_umap_warm_seconds", [])  # as in a fresh process
    fits = []
    real_fit = alignment.maps._umap_2d
    monkeypatch.setattr(
        alignment.maps,
        "_umap_2d",
        lambda x, config, neighbours=None: fits.append(len(x)) or real_fit(x, config, neighbours),
    )
    start_umap_warmup().join()
    first = warm_umap()
    assert warm_umap() == first and fits == [64]  # one warm-up fit; later calls reuse it
    planted = lizard_moves()
    config = MapConfig(method="umap", n_neighbors=10)
    np.testing.assert_array_equal(embed_2d(planted.before, config), embed_2d(planted.before, config))
    same = paired_maps(planted.before, planted.before, config)
    assert same.displacement.max() < 1e-9
    rows = [2, 30]  # each image moved into another category's cluster
    moved = paired_maps(planted.before, relocate_rows(planted.before, rows, [26, 1]), config)
    assert set(np.argsort(moved.displacement)[-2:].tolist()) == set(rows)


def test_a_map_that_changed_completely_keeps_its_size():
    rng = np.random.default_rng(4)
    maps = paired_maps(rng.normal(size=(60, 10)), rng.normal(size=(60, 10)), MapConfig(method="pca"))
    radius = np.sqrt((maps.after**2).sum(axis=1).mean())
    assert radius == pytest.approx(1.0)  # not shrunk towards the centre by a fitted scale
