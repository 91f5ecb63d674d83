"""Levels response files (per-participant CSVs of ImageNet paths, the chosen odd one out, RTs): imported
with known answers, read back from our own export, and refused row by row with nothing stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Participant, Response, Study
from study.export import export_study
from study.input_errors import InputRejected
from study.judgments import load_judgments
from study.judgments_import import import_judgments_csv
from tests.support.analysis_helpers import insert_stimuli

NAMES = [f"n0144076{c}_{i}.JPEG" for c in range(3) for i in range(3)]  # 3 "classes" of 3 images
HEADER = "trial_index,exp_trial_type,image1Path,image2Path,image3Path,selected_image,triplet_type,rt\n"


@pytest.fixture
def imagenet(db):
    """Nine ImageNet-named images stored under a folder, as a Levels study would import them."""
    rows = [
        dict(name=f"train/{name}", path=f"s/{name}", content_hash=name, category=name[:9], width=8, height=8)
        for name in NAMES
    ]
    ids = insert_stimuli(db, "levels-images", [{**row, "n_bytes": 10} for row in rows])
    return db, dict(zip(NAMES, ids, strict=True))


def _participant(folder, stem: str, rows: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{stem}.csv").write_text(HEADER + "".join(f"{row}\n" for row in rows))


def _p(name: str) -> str:
    return f"images/{name}"  # Levels paths carry a folder; the file name is unique in the set


def _levels_folder(tmp_path):
    folder = tmp_path / "levels"
    a, b, c, d = NAMES[0], NAMES[1], NAMES[3], NAMES[6]
    _participant(
        folder,
        "p01",
        [
            "0,instructions,,,,,,",
            f"1,practice,{_p(a)},{_p(b)},{_p(c)},{_p(c)},between_class,700",
            f"2,exp_trial,{_p(a)},{_p(b)},{_p(c)},{_p(c)},between_class,1200",
            f"3,exp_trial,{_p(d)},{_p(a)},{_p(c)},{_p(a)},class_border,830.5",
        ],
    )
    _participant(folder, "p02", [f"0,exp_trial,{_p(c)},{_p(a)},{_p(b)},{_p(b)},within_class,"])
    return folder


def test_levels_folder_imports_one_participant_per_file_with_choices_levels_and_rts(imagenet, tmp_path):
    db, ids = imagenet
    summary = import_judgments_csv(
        db, _levels_folder(tmp_path), stimulus_set_name="levels-images", slug="levels"
    )
    assert (summary.task, summary.n_participants, summary.n_judgments) == ("odd_one_out", 2, 3)
    frame = load_judgments(db, "levels")
    a, b, c, d = (ids[NAMES[i]] for i in (0, 1, 3, 6))
    got = frame[["external_id", "stim0", "stim1", "stim2", "level", "rt_ms"]].values.tolist()
    assert got[:2] == [  # odd one out last, the other two ascending
        ["p01", a, b, c, "between_class", 1200.0],
        ["p01", c, d, a, "class_border", 830.5],
    ]
    assert got[2][:5] == ["p02", a, c, b, "within_class"] and got[2][5] != got[2][5]  # no RT: NaN


def test_one_levels_file_is_recognised_by_its_columns_and_reads_back_from_an_export(imagenet, tmp_path):
    db, _ = imagenet
    single = _levels_folder(tmp_path) / "p01.csv"
    import_judgments_csv(db, single, stimulus_set_name="levels-images", slug="one")
    export_study(db, "one", "jspsych", tmp_path / "out.csv", raw_ids=True)
    import_judgments_csv(db, tmp_path / "out.csv", stimulus_set_name="levels-images", slug="back")
    columns = ["stim0", "stim1", "stim2", "level", "rt_ms"]
    assert load_judgments(db, "back")[columns].values.tolist() == (
        load_judgments(db, "one")[columns].values.tolist()
    )
    assert len(load_judgments(db, "one")) == 2


def _counts(db) -> tuple[int, int, int]:
    with db.read() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model))
            for model in (Study, Participant, Response)
        )


def test_bad_levels_rows_are_refused_naming_file_and_line_and_nothing_is_stored(imagenet, tmp_path):
    db, _ = imagenet
    folder = _levels_folder(tmp_path)
    a, b, c = (_p(NAMES[i]) for i in (0, 1, 3))
    _participant(
        folder,
        "p03",
        [
            f"0,exp_trial,{a},{b},{c},{_p(NAMES[8])},between_class,900",
            f"1,exp_trial,{a},{b},images/nope.JPEG,{a},between_class,900",
            f"2,exp_trial,{a},{b},{c},{a},between_class,slow",
            f"3,practice,{a},{b},images/nope.JPEG,{a},between_class,900",  # not a judgment: not checked
        ],
    )
    with pytest.raises(InputRejected) as caught:
        import_judgments_csv(db, folder, stimulus_set_name="levels-images", slug="bad")
    message = str(caught.value)
    assert "3 problem(s) in " in message and "levels; nothing was imported" in message
    assert "p03.csv line 2: selected_image 'images/n01440762_2.JPEG' is not one of the row's three" in message
    assert "p03.csv line 3: image3: unknown image 'images/nope.JPEG'" in message
    assert "p03.csv line 4: response time 'slow' is not a number of milliseconds" in message
    assert _counts(db) == (0, 0, 0)


def test_levels_files_without_their_columns_or_csvs_are_refused(imagenet, tmp_path):
    db, _ = imagenet
    folder = tmp_path / "lv"
    folder.mkdir()
    with pytest.raises(
        InputRejected, match="lv: holds no .csv files; expected one Levels CSV per participant"
    ):
        import_judgments_csv(db, folder, stimulus_set_name="levels-images", slug="none")
    (folder / "p01.csv").write_text("image1Path,image2Path,image3Path,rt\na,b,c,1\n")
    with pytest.raises(
        InputRejected, match=r"p01.csv header: missing Levels column\(s\) \['selected_image'\]"
    ):
        import_judgments_csv(db, folder, stimulus_set_name="levels-images", slug="none")
    assert _counts(db) == (0, 0, 0)
