"""What every image source hands to the builder: labelled images that can write themselves to disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image


class ImageSourceUnavailable(FileNotFoundError):
    """The files a source reads are not on this machine; the message names the install step."""


class UnknownImageSource(LookupError):
    """A source name that is not registered."""


@dataclass(frozen=True)
class SourceImage:
    """One labelled image. `write(path)` creates the file (`path` ends with `suffix`)."""

    superordinate: str
    category: str
    stem: str
    suffix: str
    write: Callable[[Path], None]
    source: str
    licence: str
    attributes: Mapping[str, str] = field(default_factory=dict)


class ImageSource(Protocol):
    """A named collection of labelled images; `list_images` raises ImageSourceUnavailable when missing."""

    name: str

    def list_images(self) -> list[SourceImage]: ...


def fit_on_square(
    image: Image.Image, size: int, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Flatten transparency onto `background`, centre the object on a square canvas, resize to `size`.

    Keeps the aspect ratio so objects are not distorted; Lanczos keeps small stamps as sharp as they can be.
    """
    rgba = image.convert("RGBA")
    box = rgba.getchannel("A").getbbox() or (0, 0, *rgba.size)
    rgba = rgba.crop(box)
    side = round(max(rgba.size) * 1.08)
    canvas = Image.new("RGBA", (side, side), (*background, 255))
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
