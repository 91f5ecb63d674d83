"""A user's own images, laid out `ROOT/superordinate/category/image.ext`; copied byte for byte."""

from __future__ import annotations

import csv
import shutil
from functools import partial
from pathlib import Path

from study.image_sources.base import SourceImage

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST = "manifest.csv"
UNKNOWN_LICENCE = "unknown (user-supplied)"
CORE_COLUMNS = ("path", "category", "superordinate", "source", "licence")


class FolderLayoutError(ValueError):
    """An image sits where `superordinate/category/image` was expected but is not."""


def _manifest_rows(root: Path) -> dict[str, dict[str, str]]:
    """Rows of an existing manifest.csv (e.g. one we wrote), keyed by path, so licences survive a copy."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle) if row.get("path")}


class ImageFolder:
    """Every image file two folders below `root`; labels come from the folder names."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.name = f"folder:{self.root}"

    def list_images(self) -> list[SourceImage]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Image folder {self.root} does not exist (expected ROOT/superordinate/category/image)."
            )
        known = _manifest_rows(self.root)
        images = [self._image(path, known) for path in sorted(self.root.rglob("*")) if self._is_image(path)]
        if not images:
            raise FolderLayoutError(
                f"No images found in {self.root}; expected files like {self.root}/animal/bird/robin.jpg"
            )
        return images

    def _is_image(self, path: Path) -> bool:
        relative = path.relative_to(self.root)
        if path.is_symlink():  # it could point at any file on the machine
            raise FolderLayoutError(
                f"{relative} in {self.root} is a symbolic link; "
                "expected regular files (links are not followed)"
            )
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            return False
        if len(relative.parts) != 3:
            raise FolderLayoutError(
                f"{path}: images must sit at superordinate/category/image, found {relative}"
            )
        return path.is_file()

    def _image(self, path: Path, known: dict[str, dict[str, str]]) -> SourceImage:
        relative = path.relative_to(self.root)
        row = known.get(relative.as_posix(), {})
        return SourceImage(
            superordinate=relative.parts[0],
            category=relative.parts[1],
            stem=path.stem,
            suffix=path.suffix.lower(),
            write=partial(shutil.copyfile, path),
            source=row.get("source") or str(self.root),
            licence=row.get("licence") or UNKNOWN_LICENCE,
            attributes={key: value for key, value in row.items() if key not in CORE_COLUMNS and value},
        )
