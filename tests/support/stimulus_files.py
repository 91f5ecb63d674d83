"""Small generated image folders for stimulus and design tests (Pillow, in tmp dirs)."""

from __future__ import annotations

import itertools
from pathlib import Path

from PIL import Image
from sqlalchemy import func, select

from db.models import Stimulus, StimulusSet

_colours = itertools.count(1)


def make_image(
    path: Path, size: tuple[int, int] = (40, 30), mode: str = "RGB", fmt: str | None = None
) -> Path:
    """A distinct solid-colour image (every call a new colour, so no accidental duplicates)."""
    n = next(_colours)
    colour = (n * 37 % 256, n * 91 % 256, (n * 13 + n // 256) % 256)
    if mode == "RGBA":
        colour = (*colour, 128)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, fmt)
    return path


def make_layout(root: Path, layout: dict[str, dict[str, int]], suffix: str = ".jpg") -> Path:
    """`root/superordinate/category/<i>.jpg` for {superordinate: {category: n_images}}; '' = no
    superordinate."""
    for superordinate, categories in layout.items():
        for category, n_images in categories.items():
            folder = root / superordinate / category if superordinate else root / category
            for i in range(n_images):
                make_image(folder / f"{category}{i}{suffix}")
    return root


def snapshot(db, home: Path) -> tuple[int, int, list[str]]:
    """Rows in the stimulus tables and every file under the data dir: equal before/after = unchanged."""
    with db.read() as session:
        n_sets = session.scalar(select(func.count()).select_from(StimulusSet))
        n_stimuli = session.scalar(select(func.count()).select_from(Stimulus))
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    return n_sets, n_stimuli, files
