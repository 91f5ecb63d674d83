"""Source names -> source objects. Add a source by adding one entry to SOURCES."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from study.image_sources.base import ImageSource, UnknownImageSource
from study.image_sources.fashion_mnist import FashionMnist
from study.image_sources.folder import ImageFolder
from study.image_sources.tuxpaint import TuxPaintPhotos

DEFAULT_SOURCE = "tuxpaint-photos"
FOLDER_PREFIX = "folder:"

SOURCES: dict[str, Callable[[], ImageSource]] = {
    TuxPaintPhotos.name: TuxPaintPhotos,
    FashionMnist.name: FashionMnist,
}


def available_sources() -> list[str]:
    return [*SOURCES, f"{FOLDER_PREFIX}PATH"]


def get_image_source(name: str) -> ImageSource:
    """`tuxpaint-photos`, `fashion-mnist`, or `folder:PATH` for a folder laid out
    superordinate/category/image."""
    if name.startswith(FOLDER_PREFIX):
        return ImageFolder(Path(name.removeprefix(FOLDER_PREFIX)).expanduser())
    try:
        return SOURCES[name]()
    except KeyError:
        raise UnknownImageSource(
            f"Unknown image source {name!r}; expected one of: {', '.join(available_sources())}"
        ) from None
