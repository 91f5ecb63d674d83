"""Build a demo image folder `superordinate/category/image` plus manifest.csv from any registered source."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from common.atomic import atomic_directory
from study.image_sources.base import ImageSource, SourceImage
from study.image_sources.registry import DEFAULT_SOURCE, get_image_source

MANIFEST = "manifest.csv"
BUILD_INFO = "build.json"
CORE_COLUMNS = ("path", "category", "superordinate", "source", "licence")
LAYOUT_VERSION = 1


def build_demo_images(
    source_name: str | ImageSource = DEFAULT_SOURCE,
    out_dir: Path | str = "demo_images",
    *,
    per_category: int | None = 12,
    seed: int = 0,
) -> Path:
    """Write up to `per_category` seeded-chosen images per category into `out_dir`; returns `out_dir`.

    Re-running with the same arguments into a complete folder does nothing. The folder is built beside
    `out_dir` and moved into place at the end, so an interrupted build never leaves a half-written set.
    """
    if per_category is not None and per_category < 1:
        raise ValueError(f"per_category must be a positive number or None (all images), got {per_category}")
    source = get_image_source(source_name) if isinstance(source_name, str) else source_name
    out_dir = Path(out_dir)
    recipe = {
        "source": source.name,
        "image_size": getattr(source, "image_size", None),
        "per_category": per_category,
        "seed": seed,
        "layout_version": LAYOUT_VERSION,
    }
    if is_complete_build(out_dir, recipe):
        return out_dir
    _refuse_foreign_folder(out_dir)
    chosen = select_images(source.list_images(), per_category, seed)
    _write_atomically(out_dir, chosen, recipe)
    return out_dir


def select_images(images: Iterable[SourceImage], per_category: int | None, seed: int) -> list[SourceImage]:
    """Group by category, then draw a seeded sample per category (independent of the other categories)."""
    groups: dict[tuple[str, str], list[SourceImage]] = defaultdict(list)
    for image in images:
        groups[(image.superordinate, image.category)].append(image)
    _check_hierarchy(groups)
    chosen: list[SourceImage] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=_file_name)
        if per_category is not None and len(group) > per_category:
            rng = random.Random(f"{seed}:{key[0]}/{key[1]}")
            group = sorted(rng.sample(group, per_category), key=_file_name)
        chosen.extend(group)
    return chosen


def _file_name(image: SourceImage) -> str:
    return f"{image.stem}{image.suffix}"


def _check_hierarchy(groups: dict[tuple[str, str], list[SourceImage]]) -> None:
    """Each category belongs to one superordinate, and file names are unique within a category."""
    owners: dict[str, str] = {}
    for (superordinate, category), group in groups.items():
        if owners.setdefault(category, superordinate) != superordinate:
            raise ValueError(
                f"Category {category!r} appears under both {owners[category]!r} and {superordinate!r}; "
                "each category must belong to exactly one superordinate"
            )
        names = [_file_name(image) for image in group]
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate image names in {superordinate}/{category}")


def is_complete_build(out_dir: Path, recipe: dict) -> bool:
    """True when `out_dir` holds a build with this exact recipe and every manifest file is present."""
    info, manifest = out_dir / BUILD_INFO, out_dir / MANIFEST
    if not (info.is_file() and manifest.is_file()):
        return False
    try:
        if json.loads(info.read_text(encoding="utf-8")) != recipe:
            return False
    except json.JSONDecodeError:
        return False
    with manifest.open(newline="", encoding="utf-8") as handle:
        return all((out_dir / row["path"]).is_file() for row in csv.DictReader(handle))


def _refuse_foreign_folder(out_dir: Path) -> None:
    """Never replace a folder we did not build: it may be the user's own images."""
    if out_dir.exists() and not (out_dir / BUILD_INFO).is_file() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} already exists and was not made by build_demo_images; choose a new or empty folder"
        )


def _write_atomically(out_dir: Path, images: list[SourceImage], recipe: dict) -> None:
    with atomic_directory(out_dir) as staging:
        rows = [_write_image(staging, image) for image in images]
        write_manifest(staging / MANIFEST, rows)
        (staging / BUILD_INFO).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")


def _write_image(root: Path, image: SourceImage) -> dict[str, str]:
    relative = Path(image.superordinate, image.category, _file_name(image))
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    image.write(root / relative)
    core = (relative.as_posix(), image.category, image.superordinate, image.source, image.licence)
    return {**dict(zip(CORE_COLUMNS, core, strict=True)), **image.attributes}


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """`path,category,superordinate,source,licence` first, then any extra attributes (sorted)."""
    extras = sorted({key for row in rows for key in row} - set(CORE_COLUMNS))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*CORE_COLUMNS, *extras], restval="")
        writer.writeheader()
        writer.writerows(rows)
