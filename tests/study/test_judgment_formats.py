"""Every triplet format with a known answer: index files mapped by natural order or an image list (and
refused when ambiguous), anchor (head, close, far) triplets, AligNet npz triplets, anchor round trip."""

from __future__ import annotations

import numpy as np
import pytest

from db.models import Stimulus, StimulusSet
from study.export import export_study
from study.input_errors import InputRejected
from study.judgments import load_anchor_judgments, load_judgments
from study.judgments_import import import_judgments_csv
from study.stimulus_names import IndexRule, natural_key


@pytest.fixture
def numbered(db):
    """Twelve images named 0.jpg .. 11.jpg (text order puts 10.jpg and 11.jpg before 2.jpg)."""
    with db.write() as session:
        stimulus_set = StimulusSet(name="shoes")
        session.add(stimulus_set)
        session.flush()
        rows = [
            Stimulus(
                stimulus_set_id=stimulus_set.id,
                name=f"{i}.jpg",
                path=f"s/{i}.jpg",
                content_hash=f"h{i}",
                category="shoe",
                width=8,
                height=8,
                n_bytes=10,
            )
            for i in range(12)
        ]
        session.add_all(rows)
        session.flush()
        return db, {i: row.id for i, row in enumerate(rows)}


def _write(tmp_path, text, name="triplets.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_natural_key_sorts_numbers_as_numbers():
    assert sorted(["10.jpg", "2.jpg", "1.jpg", "b/3.jpg", "a/12.jpg"], key=natural_key) == [
        "1.jpg",
        "2.jpg",
        "10.jpg",
        "a/12.jpg",
        "b/3.jpg",
    ]


def test_ambiguous_index_file_is_refused_with_the_reason(numbered, tmp_path):
    db, _ = numbered
    path = _write(tmp_path, "2 10 11\n")
    with pytest.raises(InputRejected) as caught:
        import_judgments_csv(db, path, stimulus_set_name="shoes", slug="amb", file_format="odd-one-out")
    message = str(caught.value)
    assert "indices are ambiguous: index 2 is '10.jpg' in text order but '2.jpg' in natural order" in message
    assert "--image-list" in message and "--index-order" in message
    assert load_judgments_count(db) == 0


def load_judgments_count(db) -> int:
    from sqlalchemy import func, select

    from db.models import Response

    with db.read() as session:
        return session.scalar(select(func.count()).select_from(Response))


def test_natural_order_maps_index_n_to_n_jpg_and_text_order_when_stated(numbered, tmp_path):
    db, ids = numbered
    path = _write(tmp_path, "2 10 11\n")
    natural = IndexRule(order="natural")
    import_judgments_csv(
        db, path, stimulus_set_name="shoes", slug="nat", file_format="odd-one-out", index=natural
    )
    assert load_judgments(db, "nat")[["stim0", "stim1", "stim2"]].values.tolist() == [
        [ids[2], ids[10], ids[11]]
    ]
    text = IndexRule(order="text")  # 0,1,10,11,2,3,...: index 2 is 10.jpg, 10 is 8.jpg, 11 is 9.jpg
    import_judgments_csv(
        db, path, stimulus_set_name="shoes", slug="txt", file_format="odd-one-out", index=text
    )
    assert load_judgments(db, "txt")[["stim0", "stim1", "stim2"]].values.tolist() == [
        [ids[8], ids[10], ids[9]]
    ]


def test_an_image_list_states_the_mapping(numbered, tmp_path):
    db, ids = numbered
    listing = _write(
        tmp_path, "# index -> image\n" + "\n".join(f"{11 - i}.jpg" for i in range(12)), "list.txt"
    )
    rule = IndexRule.from_options(image_list=listing, base=1)
    path = _write(tmp_path, "1 2 12\n")  # 1-based: 11.jpg, 10.jpg, 0.jpg
    import_judgments_csv(
        db, path, stimulus_set_name="shoes", slug="lst", file_format="odd-one-out", index=rule
    )
    assert load_judgments(db, "lst")[["stim0", "stim1", "stim2"]].values.tolist() == [
        [ids[10], ids[11], ids[0]]
    ]
    bad = IndexRule.from_options(image_list=_write(tmp_path, "1.jpg\nnope.jpg\n", "bad.txt"))
    with pytest.raises(InputRejected, match="image list bad.txt: entry 2: unknown image 'nope.jpg'"):
        import_judgments_csv(
            db, path, stimulus_set_name="shoes", slug="bad", file_format="odd-one-out", index=bad
        )


def test_anchor_triplets_import_as_their_own_kind(numbered, tmp_path):
    db, ids = numbered
    salmon = _write(tmp_path, "head,winner,loser,rt\n0.jpg,1.jpg,5.jpg,900\n3.jpg,4.jpg,0.jpg,\n", "s.csv")
    summary = import_judgments_csv(db, salmon, stimulus_set_name="shoes", slug="anchor-a")
    assert (summary.task, summary.n_judgments) == ("anchor", 2)
    anchors = load_anchor_judgments(db, "anchor-a")
    assert anchors[["head", "close", "far"]].values.tolist() == [
        [ids[0], ids[1], ids[5]],
        [ids[3], ids[4], ids[0]],
    ]
    assert anchors["rt_ms"].iloc[0] == 900.0
    assert load_judgments(db, "anchor-a").empty  # never read as odd-one-out judgments
    headerless = _write(tmp_path, "0 1 5\n", "h.txt")
    with pytest.raises(InputRejected, match="headerless file does not say what its columns are"):
        import_judgments_csv(db, headerless, stimulus_set_name="shoes", slug="anchor-b")
    import_judgments_csv(
        db,
        headerless,
        stimulus_set_name="shoes",
        slug="anchor-b",
        file_format="anchor",
        index=IndexRule("natural"),
    )
    assert load_anchor_judgments(db, "anchor-b")[["head", "close", "far"]].values.tolist() == [
        [ids[0], ids[1], ids[5]]
    ]


def test_anchor_export_reads_back_as_the_same_judgments(numbered, tmp_path):
    db, _ = numbered
    source = _write(
        tmp_path, "head,close,far,subject_id\n0.jpg,1.jpg,5.jpg,a\n3.jpg,4.jpg,0.jpg,b\n", "s.csv"
    )
    import_judgments_csv(db, source, stimulus_set_name="shoes", slug="anchor-src")
    summary = export_study(db, "anchor-src", "anchor", tmp_path / "out.csv", raw_ids=True)
    assert (summary.n_rows, summary.n_participants) == (2, 2)
    import_judgments_csv(db, tmp_path / "out.csv", stimulus_set_name="shoes", slug="anchor-back")
    columns = ["head", "close", "far", "external_id"]
    assert load_anchor_judgments(db, "anchor-back")[columns].values.tolist() == (
        load_anchor_judgments(db, "anchor-src")[columns].values.tolist()
    )


def test_alignet_npz_odd_one_out_is_outside_the_most_similar_pair(numbered, tmp_path):
    db, ids = numbered
    path = tmp_path / "alignet_train.npz"
    filenames = np.array(
        [["0.jpg", "1.jpg", "2.jpg"], ["3.jpg", "4.jpg", "5.jpg"], ["6.jpg", "7.jpg", "8.jpg"]]
    )
    similarities = np.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.0, 0.1, 0.7]])  # pairs 01, 02, 12
    np.savez(path, filenames=filenames, similarities=similarities)
    summary = import_judgments_csv(db, path, stimulus_set_name="shoes", slug="alignet")
    assert summary.n_judgments == 3
    odd = load_judgments(db, "alignet")["stim2"].tolist()
    assert odd == [ids[2], ids[4], ids[6]]
    np.savez(path, filenames=filenames[:, :2], similarities=similarities)
    with pytest.raises(InputRejected, match=r"filenames \[n, 3\]"):
        import_judgments_csv(db, path, stimulus_set_name="shoes", slug="alignet-bad")
