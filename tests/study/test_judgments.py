"""The judgments read side (odd one out last), held-out splits, and importing judgments from CSV files."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select

from db.models import Participant, Response, Study, TrialKind
from study.input_errors import InputRejected
from study.judgments import load_judgments, load_stimuli, odd_last, pseudonymise, split_judgments
from study.judgments_import import import_judgments_csv
from study.qc import set_exclusion
from study.stimulus_names import IndexRule
from study.studies import TrialSpec
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant


def test_pseudonym_is_hmac_sha256_of_the_id_keyed_by_the_salt():
    assert pseudonymise("salt", "P1") == "2bb70d860b6a2744"  # openssl dgst -sha256 -hmac salt <<< P1
    assert pseudonymise("other", "P1") != pseudonymise("salt", "P1")


def test_odd_last_puts_the_chosen_image_last_and_the_others_ascending():
    assert odd_last((9, 4, 7), 9) == (4, 7, 9)
    assert odd_last((9, 4, 7), 4) == (7, 9, 4)
    with pytest.raises(ValueError, match="not one of"):
        odd_last((9, 4, 7), 5)


@pytest.fixture
def small_study(db):
    ids = make_stimuli(db)
    specs = [
        TrialSpec((ids[0], ids[1], ids[6]), TrialKind.PRACTICE, block=-1),
        experimental(ids[6], ids[0], ids[3]),
        experimental(ids[1], ids[4], ids[7]),
    ]
    make_study(db, "judge-study", [specs], participants_per_list=10)
    return db, ids


def test_load_judgments_orders_odd_last_and_drops_practice_and_timeouts(small_study):
    db, ids = small_study
    a = run_participant(db, "judge-study", "a", [ids[0], ids[6], None], [900.0, 1234.0, 0.0])
    b = run_participant(db, "judge-study", "b", [ids[0], ids[0], ids[1]], [900.0, 2000.0, 3000.0])
    frame = load_judgments(db, "judge-study")
    assert frame[["participant_id", "stim0", "stim1", "stim2", "rt_ms"]].values.tolist() == [
        [a, ids[0], ids[3], ids[6], 1234.0],
        [b, ids[3], ids[6], ids[0], 2000.0],
        [b, ids[4], ids[7], ids[1], 3000.0],
    ]
    assert set(frame["kind"]) == {"experimental"} and set(frame["level"]) == {"between_class"}
    assert frame["triplet_key"].iloc[0] == "-".join(map(str, sorted((ids[0], ids[3], ids[6]))))
    set_exclusion(db, a, True, "test")
    assert set(load_judgments(db, "judge-study")["participant_id"]) == {b}
    assert set(load_judgments(db, "judge-study", include_excluded=True)["participant_id"]) == {a, b}
    assert len(load_judgments(db, "judge-study", include_simulated=False)) == 2  # nobody is simulated


def test_load_stimuli_lists_the_study_images(small_study):
    db, ids = small_study
    table = load_stimuli(db, "judge-study")
    assert table["id"].tolist() == ids
    assert table.iloc[3][["name", "category", "superordinate"]].tolist() == [
        "animal/cat/0.png",
        "cat",
        "animal",
    ]


def _frame(triplets, participants):
    rows = [
        {
            "participant_id": p,
            "stim0": a,
            "stim1": b,
            "stim2": c,
            "triplet_key": "-".join(map(str, sorted((a, b, c)))),
        }
        for (a, b, c), p in zip(triplets, participants, strict=True)
    ]
    return pd.DataFrame(rows)


def test_split_by_subject_and_triplet_are_disjoint_and_seeded():
    triplets = [(i, i + 1, i + 2) for i in range(20)]
    frame = _frame(triplets, [i % 5 for i in range(20)])
    train, test = split_judgments(frame, "subject", 0.4, seed=1)
    assert test["participant_id"].nunique() == 2 and train["participant_id"].nunique() == 3
    assert not set(train["participant_id"]) & set(test["participant_id"])
    assert len(train) + len(test) == 20
    assert split_judgments(frame, "subject", 0.4, seed=1)[1].equals(test)
    train, test = split_judgments(frame, "triplet", 0.25, seed=0)
    assert len(test) == 5 and not set(train["triplet_key"]) & set(test["triplet_key"])


def test_split_by_image_is_object_disjoint():
    triplets = [(a, b, c) for a in range(8) for b in range(a + 1, 8) for c in range(b + 1, 8)]  # 56
    train, test = split_judgments(_frame(triplets, [0] * 56), "image", 0.5, seed=2)
    test_images = set(test[["stim0", "stim1", "stim2"]].to_numpy().ravel())
    train_images = set(train[["stim0", "stim1", "stim2"]].to_numpy().ravel())
    assert len(test_images) == 4 and len(train_images) == 4 and not test_images & train_images
    assert len(test) == 4 and len(train) == 4  # C(4,3) each; the 48 mixed triplets are dropped
    with pytest.raises(ValueError, match="by must be"):
        split_judgments(_frame(triplets, [0] * 56), "pixel", 0.5)


def _write(tmp_path, text, name="judgments.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_import_named_csv_with_odd_one_out_subject_rt_and_level(db, tmp_path):
    ids = make_stimuli(db)
    path = _write(
        tmp_path,
        "image1,image2,image3,odd_one_out,subject_id,rt,level\n"
        "animal/dog/0.png,animal/dog/1.png,vehicle/car/0.png,vehicle/car/0.png,S1,1500,between_class\n"
        "animal/cat/0.png,animal/cat/1.png,animal/cat/2.png,animal/cat/0.png,S2,,within_class\n"
        "animal/dog/2.png,animal/cat/2.png,animal/dog/0.png,animal/cat/2.png,S1,980.5,class_boundary\n",
    )
    summary = import_judgments_csv(db, path, stimulus_set_name="set", slug="imported-one")
    assert (summary.n_participants, summary.n_judgments) == (2, 3)
    frame = load_judgments(db, "imported-one")
    assert frame[["stim0", "stim1", "stim2"]].values.tolist() == [
        [ids[0], ids[1], ids[6]],
        [ids[0], ids[2], ids[5]],
        [ids[4], ids[5], ids[3]],
    ]
    assert frame["level"].tolist() == ["between_class", "class_border", "within_class"]
    assert frame["rt_ms"].tolist()[:2] == [1500.0, 980.5] and pd.isna(frame["rt_ms"].iloc[2])
    with db.read() as session:
        study = session.scalar(select(Study).where(Study.slug == "imported-one"))
        assert study.imported and study.stimulus_set_id is not None
        sources = set(session.scalars(select(Participant.source).where(Participant.study_id == study.id)))
        assert sources == {"imported"}


def test_import_headerless_things_indices_with_odd_last(db, tmp_path):
    ids = make_stimuli(
        db
    )  # by name: animal/cat (0-2), animal/dog (3-5), vehicle/bus (6-8), vehicle/car (9-11)
    path = _write(tmp_path, "3 4 0\n9 10 6\n", name="testset.txt")
    with pytest.raises(InputRejected, match="headerless file does not say what its columns are"):
        import_judgments_csv(db, path, stimulus_set_name="set", slug="things-import")
    import_judgments_csv(db, path, stimulus_set_name="set", slug="things-import", file_format="odd-one-out")
    frame = load_judgments(db, "things-import")
    # dog0, dog1 | cat0 and car0, car1 | bus0
    assert frame[["stim0", "stim1", "stim2"]].values.tolist() == [
        [ids[0], ids[1], ids[3]],
        [ids[6], ids[7], ids[9]],
    ]
    assert set(frame["subject"]) == {pseudonymise_for(db, "things-import", "imported")}


def pseudonymise_for(db, slug, external):
    with db.read() as session:
        salt = session.scalar(select(Study.salt).where(Study.slug == slug))
    return pseudonymise(salt, external)


def test_import_choice_positions_base_names_and_one_based_indices(db, tmp_path):
    ids = make_stimuli(db, per_category=3)
    path = _write(tmp_path, "image1\timage2\timage3\tchoice\n1\t2\t7\t1\n4\t5\t6\t3\n")
    import_judgments_csv(db, path, stimulus_set_name="set", slug="one-based", index=IndexRule(base=1))
    frame = load_judgments(db, "one-based")
    # 1-based by name: 1-3 cat, 4-6 dog, 7-9 bus; row 1: cat0, cat1, bus0, odd cat0; row 2: dogs, odd dog2
    assert frame[["stim0", "stim1", "stim2"]].values.tolist() == [
        [ids[4], ids[9], ids[3]],
        [ids[0], ids[1], ids[2]],
    ]


def _counts(db):
    with db.read() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model))
            for model in (Study, Participant, Response)
        )


def test_import_rejects_bad_rows_all_at_once_and_stores_nothing(db, tmp_path):
    make_stimuli(db)
    path = _write(
        tmp_path,
        "image1,image2,image3,choice,rt,level\n"
        "animal/dog/0.png,animal/dog/1.png,vehicle/car/0.png,3,1000,between_class\n"
        "animal/dog/0.png,animal/dog/9.png,vehicle/car/0.png,3,1000,between_class\n"
        "animal/dog/0.png,animal/dog/1.png,vehicle/car/0.png,4,1000,between_class\n"
        "animal/dog/0.png,animal/dog/0.png,vehicle/car/0.png,1,fast,between_class\n"
        "animal/dog/0.png,animal/dog/1.png,vehicle/car/0.png,1,1000,sideways\n"
        "animal/dog/0.png,animal/dog/1.png,99,1,1000,\n",
    )
    with pytest.raises(InputRejected) as caught:
        import_judgments_csv(db, path, stimulus_set_name="set", slug="bad-import")
    message = str(caught.value)
    assert "5 problem(s)" in message and "nothing was imported" in message
    assert "line 3: image2: unknown image 'animal/dog/9.png': not in the stimulus set" in message
    assert "line 4: choice = '4' is not a position" in message
    assert "line 5: the three images" in message
    assert "line 6: level 'sideways' is unknown" in message
    assert "line 7: image3: index 99 is out of range; expected 0..11" in message
    assert _counts(db) == (0, 0, 0)


def test_import_refuses_missing_columns_unknown_sets_and_taken_slugs(db, tmp_path):
    make_stimuli(db)
    with pytest.raises(InputRejected, match="missing column"):
        import_judgments_csv(db, _write(tmp_path, "a,b,c\nx,y,z\n"), stimulus_set_name="set", slug="cols-x")
    good = _write(tmp_path, "0 1 6\n", name="good.txt")
    with pytest.raises(LookupError, match="no stimulus set named 'nope'"):
        import_judgments_csv(db, good, stimulus_set_name="nope", slug="cols-y", file_format="odd-one-out")
    import_judgments_csv(db, good, stimulus_set_name="set", slug="taken", file_format="odd-one-out")
    before = _counts(db)
    with pytest.raises(ValueError, match="already exists"):
        import_judgments_csv(db, good, stimulus_set_name="set", slug="taken", file_format="odd-one-out")
    assert _counts(db) == before
    with pytest.raises(FileNotFoundError):
        import_judgments_csv(db, tmp_path / "missing.csv", stimulus_set_name="set", slug="cols-z")


def test_import_a_study_export_keeps_simulated_labels(db, tmp_path):
    ids = make_stimuli(db)
    path = _write(
        tmp_path,
        "image1,image2,image3,subject_id,is_simulated,kind\n0,1,6,sim-a,True,repeat\n3,4,9,hum,False,\n",
    )
    import_judgments_csv(db, path, stimulus_set_name="set", slug="sim-import")
    frame = load_judgments(db, "sim-import")
    assert frame["is_simulated"].tolist() == [True, False]
    assert frame["kind"].tolist() == ["repeat", "experimental"]
    assert load_judgments(db, "sim-import", include_simulated=False)["stim2"].tolist() == [ids[6]]  # car0


def test_compact_judgments_hold_the_same_answers_and_give_the_same_ceiling(small_study, monkeypatch):
    import study.judgments
    from study.reliability import levels_noise_ceiling, things_modal_consistency

    db, ids = small_study
    monkeypatch.setattr(study.judgments, "COMPACT_BATCH_ROWS", 2)  # several batches of answers
    for i in range(5):
        chosen = [ids[0], ids[6] if i % 2 else ids[0], ids[1]]
        run_participant(db, "judge-study", f"p{i}", chosen, [900.0, 1500.0 + i, 1600.0])
    set_exclusion(db, run_participant(db, "judge-study", "gone", [ids[0], ids[0], ids[1]]), True, "test")
    full = load_judgments(db, "judge-study")
    compact = study.judgments.load_judgments_compact(db, "judge-study")
    columns = list(compact.columns)
    assert compact.values.tolist() == full[columns].values.tolist()
    for measure in (levels_noise_ceiling, things_modal_consistency):
        pd.testing.assert_frame_equal(measure(compact), measure(full[columns]))


def test_selection_json_is_parsed_once_per_distinct_text(monkeypatch):
    """A trial's selection repeats on every answer to it: each distinct text is parsed once; parsed values
    (PostgreSQL's driver) and missing ones pass through."""
    import json

    import study.judgments as judgments

    calls: list[str] = []
    monkeypatch.setattr(
        judgments.json, "loads", lambda text: calls.append(text) or json.JSONDecoder().decode(text)
    )
    values = pd.Series(['{"score": 1}', None, '{"score": 1}', {"score": 2}, '{"score": 3}'] * 100)
    parsed = judgments._json_values(values)
    assert parsed.tolist()[:5] == [{"score": 1}, None, {"score": 1}, {"score": 2}, {"score": 3}]
    assert sorted(calls) == ['{"score": 1}', '{"score": 3}']


def test_loaded_string_columns_share_equal_values_and_keep_missing_ones():
    """Judgments are typed column by column: a missing value (an untyped trial's level) stays None, and
    equal strings become one object (a few distinct kinds/levels cost no memory per judgment)."""
    from study.judgments import _shared_strings

    column = _shared_strings(("easy", None, "hard", "easy", None))
    assert column.tolist() == ["easy", None, "hard", "easy", None]
    assert column[0] is column[3]
    assert _shared_strings((None, None)).tolist() == [None, None]
