"""Export an aligned student: a timm-loadable checkpoint, its triplet head and a model card.

Either student kind exports the same way: the cached-trunk student (``alignment.student``; its trunk and
trained last stages share the timm module they were split from) and the fully fine-tuned one
(``alignment.finetune``). The export folder holds:

- ``model.safetensors``: the whole timm feature model's state dict (``num_classes=0``: pooled pre-logits);
- ``config.json``: architecture and the timm ``pretrained_cfg`` (input size, mean/std, interpolation);
- ``triplet_head.safetensors``: ``weight`` [head_dim, D] and ``bias`` [head_dim] of the linear triplet head,
  whose dot products are what the student was trained to match to the teacher;
- ``alignlab_student.json``: the training config, the student's identity and the pseudo-labels' provenance;
- ``README.md``: the model card (data, config, evaluation table when one is given, how to load).

Loading with plain timm (no AlignLab)::

    model = timm.create_model(ARCH, pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file="DIR/model.safetensors", num_classes=0))

``num_classes=0`` in both places: the aligned model has no ImageNet classifier. The student saw images
resized (bicubic) to a square of ``image_size`` without a crop, hence ``crop_pct=1.0`` in the config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import atomic_directory

MODEL_FILE = "model.safetensors"
HEAD_FILE = "triplet_head.safetensors"
CARD_COLUMNS = ("model", "level", "n", "accuracy", "accuracy_low", "accuracy_high", "noise_ceiling", "ece")


@dataclass(frozen=True)
class StudentParts:
    """What an export needs from a trained student of either kind."""

    architecture: str  # the timm name, without the ``timm:`` prefix
    network: nn.Module
    head: nn.Linear
    mean_std: tuple
    image_size: int
    kind: str  # "cached-trunk" | "full"
    config: dict
    identity: dict


def load_student_parts(path: str | Path, *, cache_dir=None) -> StudentParts:
    """The timm network (trained weights) and head of a ``student.pt`` of either kind."""
    from dataclasses import asdict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") == "alignlab-finetuned-student":
        from alignment.finetune import load_finetuned

        finetuned, finetune_config = load_finetuned(path, cache_dir=cache_dir)
        network, kind, config = finetuned.network, "full", asdict(finetune_config)
        head, mean_std, identity = finetuned.head, finetuned.mean_std, dict(finetuned.identity)
    else:
        from alignment.student import load_student

        cached, student_config = load_student(path, cache_dir=cache_dir)
        if cached.source is None:
            raise ValueError(f"{path} rebuilt a student without its backbone; use load_student's output")
        network = cached.source.module  # trunk and rest share this module
        kind, config = "cached-trunk", asdict(student_config)
        head, mean_std, identity = cached.head, cached.mean_std, dict(cached.identity)
    library, _, architecture = identity["backbone"].partition(":")
    if library != "timm":
        raise ValueError(f"only timm backbones export as timm checkpoints; this student is {library}:")
    return StudentParts(architecture, network, head, mean_std, identity["image_size"], kind, config, identity)


def labels_provenance(student_path: str | Path) -> dict:
    """The pseudo-labels' meta recorded in the run's ``checkpoint.pt`` next to ``student.pt`` (or {})."""
    checkpoint = Path(student_path).with_name("checkpoint.pt")
    if not checkpoint.is_file():
        return {}
    return dict(torch.load(checkpoint, map_location="cpu", weights_only=True).get("labels_meta") or {})


def pretrained_cfg(parts: StudentParts) -> dict[str, Any]:
    """timm's pretrained config for the export: the base model's, with the student's preprocessing."""
    base = dict(getattr(parts.network, "pretrained_cfg", None) or {})
    for key in ("file", "url", "hf_hub_id", "hf_hub_filename", "state_dict", "source"):
        base.pop(key, None)
    size = parts.image_size
    mean, std = parts.mean_std
    return {
        **base,
        "architecture": parts.architecture,
        "num_classes": 0,
        "input_size": (3, size, size),
        "test_input_size": (3, size, size),
        "mean": tuple(mean),
        "std": tuple(std),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "test_crop_pct": 1.0,
        "crop_mode": "center",
    }


def export_student(
    student_path: str | Path,
    out_dir: str | Path,
    *,
    evaluation: Sequence[dict] | None = None,
    run_note: str = "",
    cache_dir=None,
) -> Path:
    """Write the export folder (atomically: it appears complete or not at all); return its path.

    ``evaluation`` is the evaluation table's rows (dicts with ``CARD_COLUMNS`` where known) for the card."""
    from safetensors.torch import save_file

    parts = load_student_parts(student_path, cache_dir=cache_dir)
    provenance = labels_provenance(student_path)
    cfg = pretrained_cfg(parts)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        save_file(_contiguous(parts.network.state_dict()), str(staging / MODEL_FILE))
        save_file(_contiguous(parts.head.state_dict()), str(staging / HEAD_FILE))
        config = {"architecture": parts.architecture, "num_classes": 0, "pretrained_cfg": cfg}
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        details = {
            "kind": parts.kind,
            "identity": parts.identity,
            "config": parts.config,
            "labels": provenance,
        }
        (staging / "alignlab_student.json").write_text(json.dumps(details, indent=2))
        (staging / "README.md").write_text(model_card(parts, provenance, evaluation, run_note))
    return out_dir


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in state.items()}


def model_card(
    parts: StudentParts, provenance: dict, evaluation: Sequence[dict] | None, run_note: str = ""
) -> str:
    """The model card (markdown): what the model is, its data, its training, its evaluation, how to use it."""
    no_table = ["No evaluation table was given for this export."]
    evaluated = _markdown_table(evaluation) if evaluation else no_table
    lines = [
        *_card_intro(parts, run_note),
        *_card_data(provenance or {}),
        *_card_training(parts),
        *["## Evaluation", "", *evaluated, ""],
        *_card_use(parts),
    ]
    return "\n".join(lines)


def _card_intro(parts: StudentParts, run_note: str) -> list[str]:
    arch = parts.architecture
    return [
        f"# {arch}, human-aligned (AlignLab student)",
        "",
        f"A `{arch}` fine-tuned AligNet-style on pseudo-labelled odd-one-out triplets from a teacher fitted "
        "to human judgments. The linear triplet head is what training shaped; the pooled features before "
        f"it are the backbone's, adapted {'as a whole' if parts.kind == 'full' else 'in its last stages'}.",
        *([f"\n{run_note}"] if run_note else []),
        "",
    ]


def _card_data(labels: dict) -> list[str]:
    label_config = labels.get("config", {})
    return [
        "## Data",
        "",
        f"- label space: `{labels.get('space', 'unknown')}` (aligned = human-aligned teacher; untransformed "
        "= the UnAligNet control)",
        f"- pseudo-labelled triplets: strategy `{label_config.get('strategy', '?')}`, "
        f"{label_config.get('n_triplets', '?')} requested over {len(labels.get('cluster_sizes', [])) or '?'} "
        f"clusters; teacher `{labels.get('teacher_id', '?')}`, temperature {labels.get('temperature', '?')}",
        f"- image pool digest `{labels.get('pool_digest', '?')}`; "
        f"features from `{labels.get('backbone', '?')}` "
        f"(weights `{labels.get('weights_id', '?')}`)",
        "",
    ]


def _card_training(parts: StudentParts) -> list[str]:
    size = parts.image_size
    return [
        "## Training",
        "",
        f"- mode: {parts.kind}; base `{parts.identity.get('backbone')}` "
        f"weights `{parts.identity.get('weights_id')}`",
        f"- input: {size}x{size} bicubic resize, no crop, mean {tuple(parts.mean_std[0])} std "
        f"{tuple(parts.mean_std[1])}",
        "",
        "```json",
        json.dumps(parts.config, indent=2),
        "```",
        "",
    ]


def _card_use(parts: StudentParts) -> list[str]:
    return [
        "## Use",
        "",
        "```python",
        "import timm, torch",
        "from safetensors.torch import load_file",
        f'model = timm.create_model("{parts.architecture}", pretrained=True, num_classes=0,',
        f'    pretrained_cfg_overlay=dict(file="{MODEL_FILE}", num_classes=0)).eval()',
        f'head = load_file("{HEAD_FILE}")  '
        f"# weight [{parts.head.out_features}, {parts.head.in_features}], bias",
        "features = model(images)  # images resized (bicubic) to the input size, normalised",
        'embedding = features @ head["weight"].T + head["bias"]  # dot products = triplet similarities',
        "```",
        "",
    ]


def _markdown_table(rows: Sequence[dict]) -> list[str]:
    columns = [c for c in CARD_COLUMNS if any(c in row for row in rows)]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |")
    return out


def _cell(column: str, value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: a table read back from CSV
            return ""
        return f"{value:.0f}" if column == "n" else f"{value:.3f}"
    return "" if value is None else str(value)
