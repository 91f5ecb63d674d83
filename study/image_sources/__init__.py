"""Image sources for demo and user stimulus sets: `build_demo_images(source, out_dir)`.

Each source yields labelled images; the builder writes `superordinate/category/image` plus manifest.csv.
"""

from study.image_sources.base import ImageSource, ImageSourceUnavailable, SourceImage, UnknownImageSource
from study.image_sources.build import MANIFEST, build_demo_images, select_images
from study.image_sources.folder import FolderLayoutError
from study.image_sources.registry import DEFAULT_SOURCE, available_sources, get_image_source

__all__ = [
    "DEFAULT_SOURCE",
    "MANIFEST",
    "FolderLayoutError",
    "ImageSource",
    "ImageSourceUnavailable",
    "SourceImage",
    "UnknownImageSource",
    "available_sources",
    "build_demo_images",
    "get_image_source",
    "select_images",
]
