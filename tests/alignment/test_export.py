"""Export: plain timm loads the checkpoint and, with the exported head, reproduces the student's
embeddings."""

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from alignment.export import export_student, load_student_parts
from alignment.finetune import FinetuneConfig, build_finetune_student, save_finetuned
from alignment.student import StudentConfig, build_student, save_student


def _as_if_trained(module, seed=1):
    """Move every float weight away from its init, so an export of the initial weights cannot pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _plain_timm(folder, arch):
    model = timm.create_model(
        arch,
        pretrained=True,
        num_classes=0,
        pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"), num_classes=0),
    ).eval()
    head = load_file(str(folder / "triplet_head.safetensors"))
    return model, head


def _images(size, n=6):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_cached_trunk_student_exports_to_plain_timm(tmp_path):
    config = StudentConfig(weights="random", image_size=48, head_dim=16, trainable_stages=2)
    student = build_student(config)
    _as_if_trained(student.rest)
    _as_if_trained(student.head)
    save_student(student, config, tmp_path / "run" / "student.pt")
    rows = [{"model": "AligNet", "level": "all", "n": 40, "accuracy": 0.61, "accuracy_low": 0.5}]
    out = export_student(tmp_path / "run" / "student.pt", tmp_path / "export", evaluation=rows)
    model, head = _plain_timm(out, "tf_efficientnet_lite0")
    x = _images(48)
    with torch.inference_mode():
        expected_features = student.prelogits(student.trunk(x))
        expected = student(student.trunk(x))
        features = model(x)
        embedding = features @ head["weight"].T + head["bias"]
    assert float((features - expected_features).abs().max()) <= 1e-5
    assert float((embedding - expected).abs().max()) <= 1e-5
    cfg = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert cfg["input_size"] == [3, 48, 48] and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 1.0
    card = (out / "README.md").read_text()
    assert "| AligNet | all | 40 | 0.610 | 0.500 |" in card
    assert '"trainable_stages": 2' in card and "cached-trunk" in card


def test_fully_fine_tuned_student_exports_to_plain_timm(tmp_path):
    config = FinetuneConfig(
        backbone="timm:mobilenetv3_small_050", weights="random", image_size=40, head_dim=8
    )
    student = build_finetune_student(config)
    _as_if_trained(student)
    save_finetuned(student, config, tmp_path / "student.pt")
    out = export_student(tmp_path / "student.pt", tmp_path / "export")
    model, head = _plain_timm(out, "mobilenetv3_small_050")
    x = _images(40)
    with torch.inference_mode():
        embedding = model(x) @ head["weight"].T + head["bias"]
        expected = student(x)
    assert float((embedding - expected).abs().max()) <= 1e-5
    assert "No evaluation table was given" in (out / "README.md").read_text()
    assert load_student_parts(tmp_path / "student.pt").kind == "full"


def test_a_failed_export_leaves_the_previous_export_whole(tmp_path, monkeypatch):
    config = FinetuneConfig(
        backbone="timm:mobilenetv3_small_050", weights="random", image_size=40, head_dim=8
    )
    save_finetuned(build_finetune_student(config), config, tmp_path / "student.pt")
    out = export_student(tmp_path / "student.pt", tmp_path / "export")
    before = sorted(p.name for p in out.iterdir())
    import alignment.export as export

    monkeypatch.setattr(export, "model_card", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_student(tmp_path / "student.pt", out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not any(p.name.startswith(".export") for p in tmp_path.iterdir())


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="student weights not found: .*nothing.pt"):
        export_student(tmp_path / "nothing.pt", tmp_path / "out")
    np.testing.assert_equal(list(tmp_path.iterdir()), [])
