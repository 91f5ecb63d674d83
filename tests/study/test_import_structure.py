"""Imported designs get the structure options of generated ones (blocks with breaks, catch and practice
trials drawn from the set, the file's image order kept), and their lists can be asked for by link or by a
Prolific id column."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from db.models import Participant, Study, StudyStatus, Trial, TrialKind, TripletList
from study import participation as P
from study.config import StudyConfig
from study.design import ImportStructure
from study.design_import import import_levels_design
from study.studies import set_study_status, triplet_key
from tests.study.test_design_import import HEADER

ROWS = [  # (list id, image1, image2, image3, trial, class): the file's order of images matters below
    ("p1", "tool/tool0/0.jpg", "animal/animal0/1.jpg", "animal/animal0/0.jpg", 0, "class_border"),
    ("p1", "food/food0/0.jpg", "animal/animal2/1.jpg", "tool/tool1/1.jpg", 1, "between_class"),
    ("p1", "animal/animal0/1.jpg", "animal/animal0/2.jpg", "animal/animal0/3.jpg", 2, "within_class"),
    ("p1", "food/food1/0.jpg", "tool/tool2/1.jpg", "animal/animal1/2.jpg", 3, "between_class"),
    ("p2", "food/food0/1.jpg", "food/food0/2.jpg", "animal/animal1/1.jpg", 0, "class_border"),
    ("p2", "tool/tool0/1.jpg", "food/food1/1.jpg", "animal/animal2/2.jpg", 1, "between_class"),
    ("p3", "tool/tool1/0.jpg", "tool/tool1/2.jpg", "tool/tool1/3.jpg", 0, "within_class"),
]


@pytest.fixture
def design_file(tmp_path):
    path = tmp_path / "levels.csv"
    path.write_text(HEADER + "".join(",".join(str(v) for v in row) + "\n" for row in ROWS))
    return path


def _trials(db, list_index: int) -> list[Trial]:
    with db.read() as session:
        return list(
            session.scalars(
                select(Trial)
                .join(TripletList)
                .where(TripletList.list_index == list_index)
                .order_by(Trial.trial_index)
            )
        )


def test_blocks_catch_and_practice_are_added_to_an_imported_design(db, stored_set, design_file):
    set_id, table = stored_set
    structure = ImportStructure(n_blocks=2, catch_per_block=1, n_practice=2, seed=3)
    imported = import_levels_design(db, "structured", set_id, design_file, structure=structure)
    assert imported.trials_per_kind == {"experimental": 7, "catch": 5, "practice": 6}
    names = {s.id: s.name for s in table}
    category = {s.id: (s.superordinate, s.category) for s in table}
    trials = _trials(db, 0)  # p1: 2 practice, then 2 blocks of 2 file trials + 1 catch each
    assert [t.block for t in trials if t.kind == TrialKind.PRACTICE] == [-1, -1]
    assert trials[0].kind == TrialKind.PRACTICE and trials[1].kind == TrialKind.PRACTICE
    experimental = [t for t in trials if t.kind == TrialKind.EXPERIMENTAL]
    assert [t.block for t in experimental] == [0, 0, 1, 1]  # the file's order, split in two
    assert [sorted(names[i] for i in (t.stim0_id, t.stim1_id, t.stim2_id)) for t in experimental] == [
        sorted(row[1:4]) for row in ROWS[:4]
    ]
    catches = [t for t in trials if t.kind == TrialKind.CATCH]
    assert [t.block for t in catches] == [0, 1] and all(t.odd_known for t in catches)
    for t in catches:  # two of one category, the odd one (last) from another superordinate
        pair, odd = category[t.stim0_id], category[t.stim2_id]
        assert category[t.stim1_id] == pair and odd[0] != pair[0]
    keys = [triplet_key((t.stim0_id, t.stim1_id, t.stim2_id)) for t in trials]
    assert len(set(keys)) == len(keys)  # drawn triplets are new to the list
    with db.read() as session:
        stored = session.get(Study, imported.study_id).config
    assert stored["extra"]["design"]["structure"] == structure.to_dict()


def test_the_file_image_order_is_kept_on_screen_when_asked(db, stored_set, design_file):
    set_id, table = stored_set
    ids = {s.name: s.id for s in table}
    config = replace(StudyConfig(), participants_per_list=5)
    keep = ImportStructure(keep_image_order=True)
    import_levels_design(db, "kept", set_id, design_file, config, structure=keep)
    import_levels_design(db, "shuffled", set_id, design_file, config)
    file_order = [tuple(ids[name] for name in row[1:4]) for row in ROWS[:4]]
    shown = {}
    for slug in ("kept", "shuffled"):
        set_study_status(db, slug, StudyStatus.OPEN)
        for k in range(3):
            entry = P.enter_study(db, slug, f"{slug}-{k}", requested_list="p1")
            shown[slug, k] = [trial.shown for trial in P.trial_plan(db, entry.participant_id)]
    assert all(shown["kept", k] == file_order for k in range(3))  # every participant: the file's order
    assert any(shown["shuffled", k] != file_order for k in range(3))  # by default: shuffled per person
    assert all(sorted(a) == sorted(b) for a, b in zip(shown["shuffled", 0], file_order, strict=True))


def test_a_list_is_assigned_by_link_name_or_index_and_refused_when_taken(db, stored_set, design_file):
    set_id, _ = stored_set
    import_levels_design(db, "by-link", set_id, design_file)
    set_study_status(db, "by-link", StudyStatus.OPEN)

    def list_of(participant_id: int) -> int:
        with db.read() as session:
            participant = session.get(Participant, participant_id)
            return session.get(TripletList, participant.list_id).list_index

    first = P.enter_study(db, "by-link", "someone", requested_list="p3")
    assert list_of(first.participant_id) == 2  # the fourth arrival problem: p3 is reached at once
    with pytest.raises(P.ListUnavailable, match="list 'p3' of study 'by-link' is taken"):
        P.check_admission(db, "by-link", requested_list="p3")
    with pytest.raises(P.ListUnavailable, match="list 'p3' .* is taken"):
        P.enter_study(db, "by-link", "another", requested_list="p3")
    by_index = P.enter_study(db, "by-link", "third", requested_list="1")
    assert list_of(by_index.participant_id) == 1
    with pytest.raises(P.ListUnavailable, match="has no list 'p9'; expected a name of .*'p1'.* or an index"):
        P.enter_study(db, "by-link", "fourth", requested_list="p9")
    # a Prolific id that is a list id of the design gets its own list
    prolific = P.enter_study(db, "by-link", "p1", source="prolific")
    assert list_of(prolific.participant_id) == 0
    with db.read() as session:
        assert session.scalar(select(Participant).where(Participant.external_id == "another")) is None


def test_a_study_that_allows_shared_lists_admits_a_second_person_to_a_taken_list(db, stored_set, design_file):
    set_id, _ = stored_set
    config = replace(StudyConfig(), allow_shared_lists=True)
    import_levels_design(db, "shared", set_id, design_file, config)
    set_study_status(db, "shared", StudyStatus.OPEN)
    one = P.enter_study(db, "shared", "one", requested_list="p2")
    two = P.enter_study(db, "shared", "two", requested_list="p2")
    with db.read() as session:
        assert (
            session.get(Participant, one.participant_id).list_id
            == session.get(Participant, two.participant_id).list_id
        )
