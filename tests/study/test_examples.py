"""Instruction examples from the study's own images: obvious (two of a category + one from another
superordinate, odd one out last) and ambiguous (three of one category); practice images avoided."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Stimulus, TrialKind
from study.config import StudyConfig
from study.examples import example_triplets, split_on_examples
from study.studies import PRACTICE_BLOCK, TrialSpec
from tests.support.analysis_helpers import make_stimuli, make_study


def _trials_over(ids: list[int]) -> list[TrialSpec]:
    """Experimental trials that together use every given image (examples come from the study's images)."""
    return [
        TrialSpec((ids[i], ids[(i + 1) % len(ids)], ids[(i + 2) % len(ids)]), TrialKind.EXPERIMENTAL)
        for i in range(0, len(ids), 3)
    ]


def _categories(db) -> dict[int, tuple[str, str]]:
    with db.read() as session:
        rows = session.execute(select(Stimulus.id, Stimulus.superordinate, Stimulus.category)).all()
    return {row.id: (row.superordinate, row.category) for row in rows}


def test_obvious_and_ambiguous_examples_have_the_stated_structure_and_avoid_practice_images(db):
    ids = make_stimuli(db, per_category=4)  # dog, cat (animal), car, bus (vehicle): 4 images each
    practice = TrialSpec((ids[0], ids[4], ids[8]), TrialKind.PRACTICE, block=PRACTICE_BLOCK)
    study_id = make_study(db, "ex-study", [[practice, *_trials_over(ids[1:])]])
    labels = _categories(db)
    examples = example_triplets(db, study_id)
    first, second, odd = (labels[image.stimulus_id] for image in examples["obvious"])
    assert first == second and odd[0] != first[0]  # odd one out last, from the other superordinate
    assert len({labels[image.stimulus_id] for image in examples["ambiguous"]}) == 1
    shown = {image.stimulus_id for images in examples.values() for image in images}
    assert shown.isdisjoint({ids[0], ids[4], ids[8]})
    assert example_triplets(db, study_id) == examples  # deterministic per study


def test_a_set_too_small_for_an_example_leaves_that_example_out(db):
    ids = make_stimuli(db, per_category=2)  # no category has three images: no ambiguous example
    study_id = make_study(db, "ex-study", [_trials_over(ids)])
    assert set(example_triplets(db, study_id)) == {"obvious"}


def test_instruction_pages_name_known_examples_only():
    assert split_on_examples("See:\n[[example: obvious]]\nand [[ example:ambiguous ]].") == [
        "See:\n",
        "obvious",
        "\nand ",
        "ambiguous",
        ".",
    ]
    with pytest.raises(ValueError, match="page 2 asks for example 'easy'"):
        StudyConfig(instructions=("Intro", "Look: [[example: easy]]"))


def test_practice_that_uses_nearly_every_image_still_leaves_both_examples(db):
    ids = make_stimuli(db, per_category=3)  # dog, cat, car, bus: 3 images each
    in_practice = [i for k, i in enumerate(ids) if k % 3 != 2]  # all but one image of each category
    practice = [
        TrialSpec(tuple(in_practice[j : j + 3]), TrialKind.PRACTICE, block=PRACTICE_BLOCK) for j in (0, 3)
    ] + [
        TrialSpec((in_practice[6], in_practice[7], in_practice[0]), TrialKind.PRACTICE, block=PRACTICE_BLOCK)
    ]
    rest = [ids[2], ids[5], ids[8], ids[11]]  # one image per category: no example can come from these alone
    study_id = make_study(db, "ex-study", [[*practice, *_trials_over(rest)]])
    examples = example_triplets(db, study_id)
    assert set(examples) == {"obvious", "ambiguous"}
    labels = _categories(db)
    first, second, odd = (labels[image.stimulus_id] for image in examples["obvious"])
    assert first == second and odd[0] != first[0]
