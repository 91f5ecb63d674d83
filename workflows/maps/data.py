"""Turn two runs into the plain arrays the maps and the reorganisation analysis need.

Artifact convention (workflows/artifacts.py, written by the pipeline stages; any run kind): a representation
is a run artifact named ``embeddings`` or ``<something>_embeddings`` (e.g. a teacher run's ``raw_embeddings``)
whose value is the path of an ``.npz`` file, relative to the data directory (or absolute), holding
``embeddings`` (float, [n, D]) and ``stimulus_ids`` (int, [n], ids in the ``stimuli`` table).
A representation is named ``RUN`` (its ``embeddings``) or ``RUN:ARTIFACT``, RUN being an id or a
unique run name. Two representations are joined on their common stimulus ids; labels and
thumbnails come from the ``stimuli`` table; human judgments from the run's study.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select

from db.engine import Database
from db.models import Run, Stimulus, Study
from db.settings import data_home
from workflows.artifacts import EMBEDDINGS_KEYS, ArtifactError, read_embeddings

EMBEDDINGS_ARTIFACT = "embeddings"
THUMBNAIL_PX = 64
EMBED_THUMBNAILS_MAX = 2000  # maps of more images fetch each thumbnail on hover instead of embedding all


class MapDataError(ValueError):
    """A run cannot be mapped (no embeddings artifact, unreadable file, no shared images)."""


@dataclass(frozen=True)
class RunEmbeddings:
    run_id: int
    label: str  # "#3 teacher: lite0 teacher", "#3 teacher: lite0 teacher [raw_embeddings]"
    study_id: int | None
    embeddings: np.ndarray  # [n, D]
    stimulus_ids: np.ndarray  # [n]


@dataclass(frozen=True)
class MapInputs:
    """The same images under two representations, row for row, with their stimulus facts."""

    before: RunEmbeddings
    after: RunEmbeddings
    stimuli: pd.DataFrame  # one row per image in map order: id, name, category, superordinate, thumbnail_path


@dataclass(frozen=True)
class HumanJudgments:
    """Judged triplets as row indices into the map (odd one out last) and their response times."""

    study_slug: str
    triplets: np.ndarray  # [m, 3]
    rt_ms: np.ndarray  # [m]


def run_label(run: Run, artifact: str = EMBEDDINGS_ARTIFACT) -> str:
    label = f"#{run.id} {run.kind}" + (f": {run.name}" if run.name else "")
    return label if artifact == EMBEDDINGS_ARTIFACT else f"{label} [{artifact}]"


def is_representation(artifact: str) -> bool:
    return artifact == EMBEDDINGS_ARTIFACT or artifact.endswith("_" + EMBEDDINGS_ARTIFACT)


def mappable_representations(db: Database) -> list[tuple[str, str]]:
    """(reference "RUN:ARTIFACT", label) of every embeddings artifact of every run, newest run first."""
    with db.read() as session:
        runs = session.scalars(select(Run).order_by(Run.id.desc())).all()
        return [
            (f"{run.id}:{name}", run_label(run, name))
            for run in runs
            for name in sorted(run.artifacts or {}, key=lambda n: (n != EMBEDDINGS_ARTIFACT, n))
            if is_representation(name)
        ]


def resolve_representation(db: Database, reference: str) -> tuple[int, str]:
    """(run id, artifact name) from "RUN" or "RUN:ARTIFACT", RUN an id or a unique run name."""
    run_ref, _, artifact = str(reference).partition(":")
    artifact = artifact or EMBEDDINGS_ARTIFACT
    with db.read() as session:
        if run_ref.isdigit() and session.get(Run, int(run_ref)) is not None:
            return int(run_ref), artifact
        ids = session.scalars(select(Run.id).where(Run.name == run_ref)).all()
    if len(ids) == 1:
        return ids[0], artifact
    problem = "several runs are" if ids else "no run is"
    raise LookupError(
        f"{problem} called {run_ref!r}: give a run id or a unique run name (optionally "
        f"followed by :ARTIFACT, e.g. 7:raw_embeddings)"
    )


def load_run_embeddings(db: Database, run_id: int, artifact: str = EMBEDDINGS_ARTIFACT) -> RunEmbeddings:
    with db.read() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id}")
        label, study_id, artifacts = run_label(run, artifact), run.study_id, dict(run.artifacts or {})
    if artifact not in artifacts:
        found = [name for name in artifacts if is_representation(name)]
        raise MapDataError(
            f"run {label} has no {artifact!r} artifact (an .npz with {EMBEDDINGS_KEYS}); "
            f"its embeddings artifacts: {found or 'none'}"
        )
    try:
        embeddings, stimulus_ids = read_embeddings(data_home() / artifacts[artifact], f"run {label}")
    except ArtifactError as error:
        raise MapDataError(str(error)) from None
    return RunEmbeddings(run_id, label, study_id, embeddings, stimulus_ids)


def load_map_inputs(db: Database, before_key: tuple[int, str], after_key: tuple[int, str]) -> MapInputs:
    """Two representations (run id, artifact) restricted to their common images, in the before order."""
    before, after = load_run_embeddings(db, *before_key), load_run_embeddings(db, *after_key)
    common = before.stimulus_ids[np.isin(before.stimulus_ids, after.stimulus_ids)]
    if len(common) < 5:
        raise MapDataError(
            f"runs {before.label} and {after.label} share {len(common)} images; a map needs >= 5"
        )
    stimuli = _stimulus_table(db, common)
    return MapInputs(_subset(before, common), _subset(after, common), stimuli)


def _subset(run: RunEmbeddings, ids: np.ndarray) -> RunEmbeddings:
    position = {int(stimulus_id): row for row, stimulus_id in enumerate(run.stimulus_ids)}
    rows = [position[int(stimulus_id)] for stimulus_id in ids]
    return RunEmbeddings(run.run_id, run.label, run.study_id, run.embeddings[rows], ids)


def _stimulus_table(db: Database, ids: np.ndarray) -> pd.DataFrame:
    columns = (Stimulus.id, Stimulus.name, Stimulus.category, Stimulus.superordinate, Stimulus.thumbnail_path)
    with db.read() as session:
        rows = session.execute(select(*columns).where(Stimulus.id.in_(ids.tolist()))).all()
    table = pd.DataFrame(
        rows, columns=["id", "name", "category", "superordinate", "thumbnail_path"]
    ).set_index("id")
    missing = np.setdiff1d(ids, table.index.to_numpy())
    if missing.size:
        raise MapDataError(
            f"stimulus ids {missing[:5].tolist()} in the embeddings are not in the stimuli table"
        )
    table = table.loc[ids].reset_index()
    table["superordinate"] = table["superordinate"].replace("", "(none)")
    return table


def load_human_judgments(
    db: Database, study_id: int | None, stimulus_ids: np.ndarray
) -> HumanJudgments | None:
    """The study's non-excluded judgments among the mapped images, or None if there is no study or none."""
    if study_id is None:
        return None
    from study.judgments import load_judgments

    with db.read() as session:
        slug = session.scalar(select(Study.slug).where(Study.id == study_id))
    if slug is None:
        return None
    judgments = load_judgments(db, slug)
    row_of = pd.Series(np.arange(len(stimulus_ids)), index=stimulus_ids)
    stims = judgments[["stim0", "stim1", "stim2"]]
    mapped = stims.isin(row_of.index).all(axis=1).to_numpy()
    if not mapped.any():
        return None
    triplets = np.stack([row_of.loc[stims[c][mapped]].to_numpy() for c in stims.columns], axis=1)
    return HumanJudgments(slug, triplets, judgments["rt_ms"][mapped].to_numpy(dtype=float))


def map_cache_dir() -> Path:
    """Where neighbour searches and 2-D layouts are kept per representation (alignment.disk_cache)."""
    return data_home() / "cache" / "maps"


def thumbnail_file(path: str | None) -> Path | None:
    """The stored thumbnail file of a stimulus (paths are relative to the data directory), if it exists."""
    file = data_home() / path if path else None
    return file if file is not None and file.is_file() else None


def thumbnail_data_uris(paths: list[str | None], px: int = THUMBNAIL_PX) -> list[str]:
    """Small JPEG data URIs (about 2 KB each) for hover thumbnails; '' where an image is missing."""
    from PIL import Image

    uris = []
    for path in paths:
        file = thumbnail_file(path)
        if file is None:
            uris.append("")
            continue
        with Image.open(file) as opened:
            image = opened.convert("RGB")
            image.thumbnail((px, px))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return uris
