"""Design import: Levels server-input CSV and THINGS index files round-trip; bad rows change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Study, Trial, TrialKind, TripletLevel, TripletList
from study.design import DesignConfig, generate_design
from study.design_import import (
    import_levels_design,
    import_things_design,
    read_levels_design,
    read_things_design,
    write_levels_design,
)
from study.input_errors import InputRejected
from study.stimuli import StimulusInfo
from study.stimulus_names import IndexRule
from tests.study.test_design import table_for

LAYOUT = {sup: {f"{sup}{c}": 4 for c in range(3)} for sup in ("animal", "tool", "food")}
HEADER = "id,image1,image2,image3,trial,triplet_class\n"


@pytest.fixture
def table() -> list[StimulusInfo]:
    return table_for(LAYOUT)  # names like "animal/animal0/0.jpg"


def counts(db) -> tuple[int, int, int]:
    with db.read() as session:
        return tuple(session.scalar(select(func.count()).select_from(m)) for m in (Study, TripletList, Trial))


def test_levels_csv_round_trips_a_generated_design(table, tmp_path):
    config = DesignConfig(
        n_lists=3,
        n_between_class=5,
        n_within_class=4,
        n_class_border=5,
        n_blocks=2,
        catch_per_block=2,
        n_practice=2,
        within_repeats=2,
        n_shared=3,
        seed=2,
    )
    design = generate_design(table, config)
    path = tmp_path / "inputs.csv"
    write_levels_design(path, design.lists, table)
    lists, ids = read_levels_design(path, table)
    assert ids == ["participant_1", "participant_2", "participant_3"]
    assert [tuple(trials) for trials in lists] == list(design.lists)


def test_levels_csv_without_block_column(table, tmp_path):
    path = tmp_path / "inputs.csv"
    path.write_text(
        HEADER
        + "p2,animal/animal0/0.jpg,tool/tool0/0.jpg,animal/animal0/1.jpg,2,catch\n"
        + "p2,animal/animal0/1.jpg,animal/animal0/2.jpg,animal/animal0/3.jpg,1,within_class\n"
        + "p1,food/food0/0.jpg,animal/animal2/1.jpg,tool/tool1/1.jpg,1,between_class\n"
        + "p2,tool/tool0/1.jpg,food/food1/1.jpg,tool/tool0/2.jpg,0,class_boundary\n"
        + "p2,animal/animal0/3.jpg,animal/animal0/1.jpg,animal/animal0/2.jpg,3,within_class\n"
        + "p1,food/food0/1.jpg,food/food0/2.jpg,animal/animal1/1.jpg,0,practice\n"
    )
    ids_of = {s.name: s.id for s in table}
    lists, ids = read_levels_design(path, table)
    assert ids == ["p2", "p1"]
    p2 = lists[0]
    assert [(t.kind, t.level) for t in p2] == [
        (TrialKind.EXPERIMENTAL, TripletLevel.CLASS_BORDER),
        (TrialKind.EXPERIMENTAL, TripletLevel.WITHIN_CLASS),
        (TrialKind.CATCH, None),
        (TrialKind.REPEAT, TripletLevel.WITHIN_CLASS),
    ]
    border = p2[0]  # file order tool, food, tool -> the food image (other category) moves last
    assert border.stimuli == (
        ids_of["tool/tool0/1.jpg"],
        ids_of["tool/tool0/2.jpg"],
        ids_of["food/food1/1.jpg"],
    )
    assert not border.odd_known and p2[2].odd_known and p2[2].stimuli[2] == ids_of["tool/tool0/0.jpg"]
    practice = lists[1][0]
    assert (practice.kind, practice.block, practice.odd_known) == (TrialKind.PRACTICE, -1, True)


def test_images_match_by_unique_file_name(tmp_path):
    table = [
        StimulusInfo(1, "imgs/n01_1.JPEG", "n01", ""),
        StimulusInfo(2, "imgs/n01_2.JPEG", "n01", ""),
        StimulusInfo(3, "imgs/n02_1.JPEG", "n02", ""),
    ]
    path = tmp_path / "inputs.csv"
    path.write_text(HEADER + "participant_1,n01_1.JPEG,/srv/images/n01_2.JPEG,n02_1.JPEG,0,class_border\n")
    [[spec]], _ = read_levels_design(path, table)
    assert spec.stimuli == (1, 2, 3) and spec.level == TripletLevel.CLASS_BORDER


def test_bad_levels_rows_are_all_reported_and_nothing_is_stored(db, stored_set, tmp_path):
    set_id, _ = stored_set
    path = tmp_path / "inputs.csv"
    path.write_text(
        HEADER
        + "p1,animal/animal0/0.jpg,animal/animal0/1.jpg,tool/tool0/0.jpg,0,class_border\n"
        + "p1,animal/animal0/0.jpg,missing.jpg,tool/tool0/0.jpg,1,between_class\n"
        + "p1,animal/animal0/0.jpg,animal/animal0/1.jpg,tool/tool0/1.jpg,2,easy\n"
        + "p1,0.jpg,animal/animal1/1.jpg,tool/tool0/1.jpg,3,between_class\n"
        + "p1,animal/animal0/2.jpg,animal/animal1/1.jpg,tool/tool0/1.jpg,4,catch\n"
        + "p1,animal/animal0/2.jpg,animal/animal1/2.jpg,tool/tool0/2.jpg,0,between_class\n"
    )
    before = counts(db)
    with pytest.raises(InputRejected) as caught:
        import_levels_design(db, "levels", set_id, path)
    assert [str(p) for p in caught.value.problems] == [
        "inputs.csv line 3: image2: unknown image 'missing.jpg': not in the stimulus set; "
        "expected a stimulus name or a file name of the set",
        "inputs.csv line 4: triplet_class 'easy' is not known; expected one of between_class, between, "
        "within_class, within, class_border, class_boundary, border, catch, catch_trial, experimental, "
        "repeat, practice, training, training_trial",
        "inputs.csv line 5: image1: image '0.jpg' matches 9 stimuli (animal/animal0/0.jpg, "
        "animal/animal1/0.jpg, animal/animal2/0.jpg); "
        "expected a full stimulus name such as 'animal/dog/1.jpg'",
        "inputs.csv line 6: catch triplet has no unambiguous odd one out (animal/animal0/2.jpg: animal0, "
        "animal/animal1/1.jpg: animal1, tool/tool0/1.jpg: tool0); expected two images of one category "
        "and one of another",
        "inputs.csv line 7: trial 0 appears twice for id 'p1'; expected unique trial numbers per id",
    ]
    assert counts(db) == before


def test_levels_csv_missing_columns(table, tmp_path):
    path = tmp_path / "inputs.csv"
    path.write_text("id,image1,image2,image3,trial\np1,a,b,c,0\n")
    with pytest.raises(InputRejected, match="inputs.csv header: missing column\\(s\\) triplet_class"):
        read_levels_design(path, table)


def test_import_levels_design_creates_a_draft_study(db, stored_set, tmp_path):
    set_id, table = stored_set
    design = generate_design(
        table,
        DesignConfig(
            n_lists=2,
            n_between_class=3,
            n_within_class=3,
            n_class_border=3,
            n_blocks=1,
            catch_per_block=1,
            seed=4,
        ),
    )
    path = tmp_path / "inputs.csv"
    write_levels_design(path, design.lists, table, list_ids=["a", "b"])
    imported = import_levels_design(db, "levels", set_id, path, target_participants=2)
    assert imported.list_ids == ("a", "b")
    assert imported.trials_per_kind == {"experimental": 18, "catch": 2, "practice": 6}
    assert "2 list(s), 26 trials" in imported.summary()
    with db.read() as session:
        study = session.get(Study, imported.study_id)
        assert (study.status.value, study.target_participants, study.imported) == ("draft", 2, False)
        assert study.config["extra"]["design"] == {
            "imported_from": "inputs.csv",
            "format": "levels",
            "list_ids": ["a", "b"],
        }
        trials = session.scalars(
            select(Trial).join(TripletList).where(TripletList.list_index == 1).order_by(Trial.trial_index)
        ).all()
        assert [(t.stim0_id, t.stim1_id, t.stim2_id) for t in trials] == [t.stimuli for t in design.lists[1]]
    before = counts(db)
    with pytest.raises(ValueError, match="slug 'levels' already exists"):
        import_levels_design(db, "levels", set_id, path)
    assert counts(db) == before


def test_things_index_file_uses_name_order_and_splits_lists(table, tmp_path):
    by_name = sorted(table, key=lambda s: s.name)
    path = tmp_path / "trainset.txt"
    path.write_text("# odd one out last\n0 1 12\n3,4,5\n\n0\t12\t1\n30 31 32\n")
    lists = read_things_design(path, table, triplets_per_list=3)
    assert [len(specs) for specs in lists] == [3, 1]
    first = lists[0]
    assert first[0].stimuli == (by_name[0].id, by_name[1].id, by_name[12].id)
    assert [t.kind for t in first] == [TrialKind.EXPERIMENTAL, TrialKind.EXPERIMENTAL, TrialKind.REPEAT]
    assert all(t.level is None and not t.odd_known for t in first)


def test_things_index_base_one(table, tmp_path):
    by_name = sorted(table, key=lambda s: s.name)
    path = tmp_path / "triplets.txt"
    path.write_text("1 2 36\n")
    [[spec]] = read_things_design(path, table, index=IndexRule(base=1))
    assert spec.stimuli == (by_name[0].id, by_name[1].id, by_name[35].id)


def test_bad_things_rows_name_line_and_column(db, stored_set, tmp_path):
    set_id, _ = stored_set
    path = tmp_path / "triplets.txt"
    path.write_text("0 1 2\n0 1 36\n0 1\n4 x 5\n7 7 8\n")
    before = counts(db)
    with pytest.raises(InputRejected) as caught:
        import_things_design(db, "things", set_id, path)
    assert [str(p) for p in caught.value.problems] == [
        "triplets.txt line 2: column 3: index 36 is out of range; expected 0..35 (the set has 36 stimuli)",
        "triplets.txt line 3: has 2 fields; expected three indices (odd one out last)",
        "triplets.txt line 4: column 2: 'x' is not an index; expected whole numbers",
        "triplets.txt line 5: indices ['7', '7', '8'] do not name three different stimuli; "
        "expected three different indices",
    ]
    assert counts(db) == before
    path.write_text("0 1 2\n3 4 5\n")
    imported = import_things_design(db, "things", set_id, path, triplets_per_list=1)
    assert imported.list_ids == ("0", "1") and imported.trials_per_kind == {"experimental": 2}
