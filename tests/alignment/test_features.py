"""Feature extraction: right numbers, cache hits compute nothing, new images compute only themselves."""

import numpy as np
import pytest
import torch
from PIL import Image

from alignment.backbones import create_backbone, feature_map, split_at_stage
from alignment.features import (
    ImageDecodeError,
    combine_sources,
    extract_activations,
    extract_features,
    extract_pooled_activations,
    extract_source,
)


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("timm:tf_efficientnet_lite0", weights="random")


def _write_images(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(40 + 8 * i, 56, 3), dtype=np.uint8)
        path = folder / f"img{seed}_{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


class Calls:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))


def test_features_equal_a_direct_forward_pass(tmp_path, backbone):
    paths = _write_images(tmp_path, 3)
    features = extract_features(backbone, paths, cache_dir=tmp_path / "cache", batch_size=2, num_workers=0)
    batch = torch.stack([backbone.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        expected = backbone.module(batch).numpy()
    assert features.dtype == np.float32 and features.shape == (3, 1280)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_cache_hits_compute_nothing_and_new_images_compute_only_themselves(tmp_path, backbone):
    paths = _write_images(tmp_path, 4)
    first = Calls()
    a = extract_features(backbone, paths[:3], cache_dir=tmp_path / "c", num_workers=1, progress=first)
    assert first.calls[0] == (0, 3) and first.calls[-1] == (3, 3)
    again = Calls()
    b = extract_features(backbone, paths[:3], cache_dir=tmp_path / "c", progress=again)
    assert again.calls == [(0, 0)]
    np.testing.assert_array_equal(a, b)
    grown = Calls()
    c = extract_features(backbone, paths, cache_dir=tmp_path / "c", num_workers=0, progress=grown)
    assert grown.calls[-1] == (1, 1)
    np.testing.assert_array_equal(c[:3], a)


def test_same_content_under_two_names_is_computed_once(tmp_path, backbone):
    (path,) = _write_images(tmp_path, 1)
    copy = tmp_path / "copy.png"
    copy.write_bytes(path.read_bytes())
    calls = Calls()
    features = extract_features(
        backbone, [path, copy], cache_dir=tmp_path / "c", num_workers=0, progress=calls
    )
    assert calls.calls[-1] == (1, 1)
    np.testing.assert_array_equal(features[0], features[1])


def test_different_weights_never_share_cache_entries(tmp_path, backbone):
    paths = _write_images(tmp_path, 2)
    extract_features(backbone, paths, cache_dir=tmp_path / "c", num_workers=0)
    other = create_backbone("timm:mobilenetv2_100", weights="random")
    calls = Calls()
    extract_features(other, paths, cache_dir=tmp_path / "c", num_workers=0, progress=calls)
    assert calls.calls[-1] == (2, 2)
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_unreadable_images_are_named(tmp_path, backbone):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        extract_features(backbone, [bad], cache_dir=tmp_path / "c", num_workers=0)
    with pytest.raises(ImageDecodeError, match="absent.png"):
        extract_features(backbone, [tmp_path / "absent.png"], cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("shard-*"))


def test_activations_feed_the_rest_of_the_network(tmp_path, backbone):
    paths = _write_images(tmp_path, 2)
    acts = extract_activations(backbone, paths, stage=6, cache_dir=tmp_path / "c", num_workers=0)
    feats = extract_features(backbone, paths, cache_dir=tmp_path / "c", num_workers=0)
    assert acts.shape == (2, 192, 7, 7)
    _, rest = split_at_stage(backbone, 6)
    with torch.inference_mode():
        np.testing.assert_allclose(rest(torch.from_numpy(acts)).numpy(), feats, rtol=1e-4, atol=1e-4)


def test_combined_sources_are_standardised_each_on_its_own():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(10, 3)).astype(np.float32)
    large = (1000 + 50 * rng.normal(size=(10, 5))).astype(np.float32)
    combined, scales = combine_sources([small, large])
    assert combined.shape == (10, 8) and combined.dtype == np.float32
    for part in (combined[:, :3], combined[:, 3:]):  # neither source dominates by its scale
        assert abs(part.mean()) < 1e-4 and part.std() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(combined[:, :3], (small - small.mean()) / small.std(), rtol=1e-5)
    # other images (one here) are standardised with the fitted images' scales, not their own
    one, same = combine_sources([small[:1], large[:1]], scales)
    np.testing.assert_allclose(one, combined[:1], rtol=1e-5)
    assert same == scales
    passed, no_scales = combine_sources([small])
    assert passed is small and no_scales == []  # one source passes through unchanged
    with pytest.raises(ValueError, match="same number of rows"):
        combine_sources([small, large[:4]])
    with pytest.raises(ValueError, match="zero or non-finite spread"):
        combine_sources([small, np.ones((10, 2), np.float32)])


def test_an_intermediate_layer_source_is_its_activations_averaged_over_space(tmp_path, backbone, monkeypatch):
    import alignment.features

    paths = _write_images(tmp_path, 2)
    acts = extract_activations(backbone, paths, stage=5, cache_dir=tmp_path / "c", num_workers=0)
    pooled = extract_pooled_activations(backbone, paths, stage=5, cache_dir=tmp_path / "c", num_workers=0)
    np.testing.assert_allclose(pooled, acts.mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(alignment.features, "create_backbone", lambda name, cache_dir: backbone)
    layer = extract_source(
        "timm:tf_efficientnet_lite0@5", paths, cache_dir=tmp_path / "c", weights_dir=tmp_path
    )
    last = extract_source("timm:tf_efficientnet_lite0", paths, cache_dir=tmp_path / "c", weights_dir=tmp_path)
    np.testing.assert_array_equal(layer, pooled)
    assert last.shape == (2, 1280) and layer.shape == (2, 112)


def _hand_pooled(maps: np.ndarray, grid: int) -> np.ndarray:
    """Each cell of a grid x grid grid averaged (cell i spans floor(i H / G) to ceil((i + 1) H / G)),
    channel-major: what a grid source should hold."""
    n, channels, height, width = maps.shape

    def span(i: int, size: int) -> slice:
        return slice(i * size // grid, -(-(i + 1) * size // grid))

    cells = np.empty((n, channels, grid, grid))
    for i in range(grid):
        for j in range(grid):
            cells[:, :, i, j] = maps[:, :, span(i, height), span(j, width)].mean(axis=(2, 3))
    return cells.reshape(n, -1)


def test_a_grid_source_averages_each_cell_of_an_intermediate_map(tmp_path, backbone, monkeypatch):
    import alignment.features

    paths = _write_images(tmp_path, 2)
    acts = extract_activations(backbone, paths, stage=5, cache_dir=tmp_path / "c", num_workers=0)
    assert acts.shape[2:] == (14, 14)  # 3 cells of 14 rows overlap (0-5, 4-10, 9-14): the uneven case
    monkeypatch.setattr(alignment.features, "create_backbone", lambda name, cache_dir: backbone)
    cells = {
        grid: extract_source(
            f"timm:tf_efficientnet_lite0@5:grid{grid}", paths, cache_dir=tmp_path / "c", weights_dir=tmp_path
        )
        for grid in (2, 3)
    }
    plain = extract_source(
        "timm:tf_efficientnet_lite0@5", paths, cache_dir=tmp_path / "c", weights_dir=tmp_path
    )
    for grid, pooled in cells.items():
        assert pooled.shape == (2, 112 * grid * grid)
        np.testing.assert_allclose(pooled, _hand_pooled(acts, grid), rtol=1e-4, atol=1e-5)
    # four equal cells of an even map average to the map averaged over all of space: the plain source
    np.testing.assert_allclose(cells[2].reshape(2, 112, 4).mean(axis=2), plain, rtol=1e-4, atol=1e-5)


def test_a_grid_source_without_a_stage_pools_the_last_map_the_pre_logits_average(
    tmp_path, backbone, monkeypatch
):
    import alignment.features

    paths = _write_images(tmp_path, 2)
    images = torch.stack([backbone.preprocess(Image.open(path).convert("RGB")) for path in paths])
    with torch.inference_mode():
        last_map = feature_map(backbone, None)(images).numpy()
    assert last_map.shape[1:] == (1280, 7, 7)
    monkeypatch.setattr(alignment.features, "create_backbone", lambda name, cache_dir: backbone)
    pooled = extract_source(
        "timm:tf_efficientnet_lite0", paths, cache_dir=tmp_path / "c", weights_dir=tmp_path
    )
    grid = extract_source(
        "timm:tf_efficientnet_lite0:grid2", paths, cache_dir=tmp_path / "c", weights_dir=tmp_path
    )
    np.testing.assert_allclose(pooled, last_map.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grid, _hand_pooled(last_map, 2), rtol=1e-4, atol=1e-5)
