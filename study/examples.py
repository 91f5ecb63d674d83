"""Example triplets for the instructions, from the study's own images: an obvious one (two images of one
category, the odd one from a different superordinate) and an ambiguous one (three images of one category),
so participants see the range from easy to hard before the practice (as the Levels instructions did).

Instruction pages place them with the tokens `[[example: obvious]]` and `[[example: ambiguous]]`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from db.engine import Database
from db.models import Stimulus, Study, Trial, TripletList

EXAMPLE_KINDS = ("obvious", "ambiguous")
EXAMPLE_TOKEN = re.compile(r"\[\[\s*example:\s*([a-z_]+)\s*\]\]")


@dataclass(frozen=True)
class ExampleImage:
    stimulus_id: int
    path: str  # serving copy, relative to the data directory
    category: str
    superordinate: str = ""


def example_tokens(text: str) -> list[str]:
    """The example kinds a page's text asks for, in order."""
    return EXAMPLE_TOKEN.findall(text)


def split_on_examples(text: str) -> list[str]:
    """Text pieces and example kinds alternating: [text, kind, text, kind, text, ...]."""
    return EXAMPLE_TOKEN.split(text)


MISSING_REASONS = {
    "obvious": "this study's images do not include two images of one category and one image of another",
    "ambiguous": "no category of this study's images has three images",
}


def example_triplets(db: Database, study_id: int) -> dict[str, tuple[ExampleImage, ...]]:
    """Per kind, three of the study's images (the odd one out last for `obvious`); a kind that no three
    images of the study's set can fill is left out (`MISSING_REASONS` says why). Deterministic per study.

    Images of the practice trials are avoided when the others can fill the kind, but used when they cannot:
    practice that uses nearly every image must not leave the instructions without their examples."""
    images, in_practice = _example_pool(db, study_id)
    fresh = [image for image in images if image.stimulus_id not in in_practice]
    found = {}
    for number, (kind, pick) in enumerate({"obvious": _obvious, "ambiguous": _ambiguous}.items()):
        for pool in (fresh, images):
            chosen = pick(_by_category(pool), np.random.default_rng([study_id, number]))
            if chosen:
                found[kind] = chosen
                break
    return found


def _example_pool(db: Database, study_id: int) -> tuple[list[ExampleImage], set[int]]:
    """Every image of the study's stimulus set (those of its trials when it has no set), and the ids of
    the images its practice trials show."""
    trials = (
        select(Trial.block, Trial.stim0_id, Trial.stim1_id, Trial.stim2_id)
        .join(TripletList)
        .where(TripletList.study_id == study_id)
    )
    with db.read() as session:
        used = session.execute(trials).all()
        set_id = session.scalar(select(Study.stimulus_set_id).where(Study.id == study_id))
        wanted = (
            Stimulus.stimulus_set_id == set_id
            if set_id is not None
            else Stimulus.id.in_({sid for row in used for sid in row[1:]})
        )
        rows = session.execute(
            select(Stimulus.id, Stimulus.path, Stimulus.category, Stimulus.superordinate)
            .where(wanted)
            .order_by(Stimulus.id)
        ).all()
    in_practice = {sid for row in used if row.block < 0 for sid in row[1:]}
    images = [ExampleImage(row.id, row.path, row.category, row.superordinate or "") for row in rows]
    return images, in_practice


def _by_category(images: list[ExampleImage]) -> dict[tuple[str, str], list[ExampleImage]]:
    grouped = defaultdict(list)
    for image in images:
        grouped[(image.superordinate, image.category)].append(image)
    return dict(sorted(grouped.items()))


def _pick(rng, items: list, k: int) -> list:
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))]


def _obvious(by_category, rng) -> tuple[ExampleImage, ...] | None:
    pairs = [key for key, images in by_category.items() if len(images) >= 2]
    if not pairs:
        return None
    pair_key = pairs[rng.integers(len(pairs))]
    others = [key for key in by_category if key[0] != pair_key[0]] or [
        key for key in by_category if key != pair_key
    ]
    if not others:
        return None
    odd_key = others[rng.integers(len(others))]
    return (*_pick(rng, by_category[pair_key], 2), _pick(rng, by_category[odd_key], 1)[0])


def _ambiguous(by_category, rng) -> tuple[ExampleImage, ...] | None:
    full = [key for key, images in by_category.items() if len(images) >= 3]
    if not full:
        return None
    return tuple(_pick(rng, by_category[full[rng.integers(len(full))]], 3))
