"""Fashion-MNIST (Zalando, MIT/Expat) from Debian's `dataset-fashion-mnist`: real product photos, 28x28
grey."""

from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from study.image_sources.base import ImageSourceUnavailable, SourceImage

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_STEP = "apt-get install dataset-fashion-mnist"
LICENCE = "MIT (Expat), Copyright 2017 Zalando SE"
SOURCE_LABEL = "Fashion-MNIST test set (Debian package dataset-fashion-mnist)"
IMAGES_FILE, LABELS_FILE = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"

# Label index -> (superordinate, category). A dress is neither a top nor a bottom, so garments share
# one superordinate; the bag is an accessory.
CLASSES: tuple[tuple[str, str], ...] = (
    ("clothing", "t-shirt_top"),
    ("clothing", "trouser"),
    ("clothing", "pullover"),
    ("clothing", "dress"),
    ("clothing", "coat"),
    ("footwear", "sandal"),
    ("clothing", "shirt"),
    ("footwear", "sneaker"),
    ("accessory", "bag"),
    ("footwear", "ankle_boot"),
)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    raw = gzip.decompress(path.read_bytes())
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _write_upscaled(pixels: np.ndarray, size: int, destination: Path) -> None:
    """Bicubic upscaling: smooth edges without Lanczos ringing on the hard black background."""
    Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC).save(destination)


class FashionMnist:
    """The 10,000 test images, upscaled from 28 to `image_size` pixels (grey PNG, as in the original)."""

    name = "fashion-mnist"

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR, image_size: int = 112) -> None:
        self.data_dir = Path(data_dir)
        self.image_size = image_size

    def list_images(self) -> list[SourceImage]:
        images_path, labels_path = self.data_dir / IMAGES_FILE, self.data_dir / LABELS_FILE
        if not (images_path.is_file() and labels_path.is_file()):
            raise ImageSourceUnavailable(
                f"Fashion-MNIST not found at {self.data_dir} (expected {IMAGES_FILE} and {LABELS_FILE}); "
                f"install it with `{INSTALL_STEP}`."
            )
        pixels, labels = read_idx(images_path, 2051), read_idx(labels_path, 2049)
        return [self._image(index, pixels[index], int(label)) for index, label in enumerate(labels)]

    def _image(self, index: int, pixels: np.ndarray, label: int) -> SourceImage:
        superordinate, category = CLASSES[label]
        return SourceImage(
            superordinate=superordinate,
            category=category,
            stem=f"t10k-{index:05d}",
            suffix=".png",
            write=partial(_write_upscaled, pixels, self.image_size),
            source=SOURCE_LABEL,
            licence=LICENCE,
            attributes={"origin": f"{IMAGES_FILE}#{index}"},
        )
