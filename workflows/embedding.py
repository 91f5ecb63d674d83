"""Apply a fitted run to any images: ``load_run(RUN).embed(images)`` in Python, ``alignlab embed`` on the
command line.

A teacher run embeds with its backbone(s) -- several sources standardised with the scales of the images it
was fitted on -- and its affine map; a student run with its network (trunk activations cached like the
training pool's); a features run gives the raw backbone features. Images are a folder (every image file
below it, by relative path), a text file listing image paths (one a line, relative to the file), or the
name of an imported stimulus set (its originals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from db.engine import Database
from db.models import Run
from db.settings import data_home
from workflows.jobs import Progress
from workflows.pipeline.data import (
    FEATURE_CACHE_DIR,
    WEIGHTS_DIR,
    backbone_features,
    feature_files,
    finished_run,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EMBEDDABLE_KINDS = ("teacher", "student", "features")


def _quiet(_fraction: float, _message: str) -> None:
    """No progress report."""


@dataclass(frozen=True)
class FittedRun:
    """A succeeded teacher, student or features run, ready to embed image files."""

    run: Run

    def embed(self, paths: Sequence[str | Path], progress: Progress = _quiet) -> np.ndarray:
        """float32 [n, D]: one row per image file, in the given order (features cached by content)."""
        files = [Path(p) for p in paths]
        if not files:
            raise ValueError("no images to embed")
        run, home = self.run, data_home()
        if run.kind == "student":
            from alignment.student import load_student, pool_activations, student_embeddings

            student, _ = load_student(home / run.artifacts["student"], cache_dir=home / WEIGHTS_DIR)
            activations = pool_activations(
                student,
                files,
                cache_dir=home / FEATURE_CACHE_DIR,
                progress=lambda done, total: progress(done / max(total, 1), f"activations {done}/{total}"),
            )
            return student_embeddings(student, activations.activations)
        recorded = run.metrics.get("feature_scales") or []
        scales = [(float(mean), float(sd)) for mean, sd in recorded] or None
        features, _ = backbone_features(run.config["backbone"], files, progress, 1.0, scales)
        if run.kind == "features":
            return features
        from alignment.teacher import Teacher

        return Teacher.load(home / run.artifacts["teacher"]).transform(features)


def load_run(run_id: int, db: Database | None = None) -> FittedRun:
    """The succeeded run ``run_id`` (teacher, student or features), or a clear error naming what it is."""
    run = finished_run(db or Database.from_url(), run_id)
    if run.kind not in EMBEDDABLE_KINDS:
        raise ValueError(f"run {run_id} is a {run.kind!r} run; only {', '.join(EMBEDDABLE_KINDS)} runs embed")
    return FittedRun(run)


def image_files(source: str | Path, db: Database | None = None) -> tuple[list[Path], list[str]]:
    """(files, names) of a folder, a text file listing images, or an imported stimulus set's originals."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files, [str(p.relative_to(path)) for p in files]
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        files = [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
        missing = [str(p) for p in files if not p.is_file()]
        if not lines or missing:
            raise ValueError(
                f"{path}: expected one image path a line; "
                + (f"{len(missing)} missing, e.g. {missing[0]}" if missing else "it is empty")
            )
        return files, lines
    return _stimulus_set_files(str(source), db or Database.from_url())


def _stimulus_set_files(name: str, db: Database) -> tuple[list[Path], list[str]]:
    from sqlalchemy import select

    from db.models import Stimulus, StimulusSet

    with db.read() as session:
        rows = session.execute(
            select(Stimulus.name, Stimulus.path, Stimulus.content_hash)
            .join(StimulusSet, StimulusSet.id == Stimulus.stimulus_set_id)
            .where(StimulusSet.name == name)
            .order_by(Stimulus.id)
        ).all()
    if not rows:
        raise ValueError(f"{name!r} is neither a folder, a file listing images, nor an imported stimulus set")
    table = pd.DataFrame(rows, columns=["name", "path", "content_hash"])
    return feature_files(table), table["name"].tolist()


def write_embedding_file(path: str | Path, embeddings: np.ndarray, names: Sequence[str]) -> Path:
    """``.npz`` (``embeddings`` [n, D], ``names`` [n]) or ``.parquet`` (a ``name`` column, then d0 ...)."""
    from common.atomic import atomic_path

    path = Path(path)
    if path.suffix not in (".npz", ".parquet"):
        raise ValueError(f"--out must end in .npz or .parquet; got {path.name}")
    with atomic_path(path) as partial:
        if path.suffix == ".npz":
            np.savez(partial, embeddings=embeddings.astype(np.float32), names=np.asarray(names, dtype=str))
        else:
            table = pd.DataFrame(
                embeddings.astype(np.float32), columns=[f"d{i}" for i in range(embeddings.shape[1])]
            )
            table.insert(0, "name", list(names))
            table.to_parquet(partial, index=False)
    return path
