"""Every import refuses bad input cleanly: one message naming the file, the row and the field and what was
expected; archives checked entry by entry with a cap on what is written; symbolic links refused; nothing
stored."""

from __future__ import annotations

import os
import zipfile

import pytest

from study.design_import import import_levels_design, import_things_design
from study.image_sources.folder import FolderLayoutError, ImageFolder
from study.input_errors import InputRejected
from study.judgments_import import import_judgments_csv
from study.stimuli import ImportLimits, import_stimulus_set
from tests.study.test_design_import import HEADER, counts
from tests.support.stimulus_files import make_image, make_layout, snapshot

LAYOUT = {"animal": {"dog": 2, "cat": 2}}
GOOD_ROW = "p1,animal/animal0/0.jpg,animal/animal0/1.jpg,tool/tool0/0.jpg,0,class_border"


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ALIGNLAB_HOME", str(home))
    return home


def _zip_of(tmp_path, name="set.zip", **entries: bytes):
    archive = tmp_path / name
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for entry, data in entries.items():
            zf.writestr(entry.replace("__", "/"), data)
    return archive


def _refused(db, home, call, *expected: str) -> InputRejected:
    """Run the import, expect a refusal whose message holds every `expected` text, and nothing stored."""
    before = snapshot(db, home)
    with pytest.raises(InputRejected) as caught:
        call()
    message = str(caught.value)
    for text in expected:
        assert text in message, message
    assert snapshot(db, home) == before
    return caught.value


# ---------------------------------------------------------------- stimulus archives and folders


def test_a_truncated_zip_is_refused_naming_the_file(db, home, tmp_path):
    image = make_image(tmp_path / "a.jpg").read_bytes()
    archive = _zip_of(tmp_path, "photos.zip", animal__dog__a_jpg=image)
    archive.write_bytes(archive.read_bytes()[: len(archive.read_bytes()) // 2])
    _refused(
        db,
        home,
        lambda: import_stimulus_set(db, archive, "cut"),
        "photos.zip: is not a readable zip archive",
        "expected a complete .zip file",
    )


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(db, home, tmp_path, monkeypatch):
    archive = _zip_of(tmp_path, "bomb.zip", **{f"animal__dog__{i}_png": b"\0" * 5_000_000 for i in range(3)})
    assert archive.stat().st_size < 100_000
    written = []
    monkeypatch.setattr("study.stimuli._copy_entry", lambda *args: written.append(args))
    error = _refused(
        db,
        home,
        lambda: import_stimulus_set(db, archive, "bomb"),
        "animal/dog/0_png: is compressed",
        "zip bomb",
    )
    assert len(error.problems) == 3 and written == []


@pytest.mark.parametrize("cap", ["total", "file"])
def test_streaming_stops_at_the_caps_even_when_the_headers_passed(db, home, tmp_path, monkeypatch, cap):
    images = {
        f"animal__dog__{i}_jpg": make_image(tmp_path / f"{i}.jpg", size=(200, 200)).read_bytes()
        for i in range(3)
    }
    archive = _zip_of(tmp_path, "many.zip", **images)
    monkeypatch.setattr("study.stimuli._archive_problems", lambda members, limits: [])  # headers that lie
    sizes = [len(data) for data in images.values()]
    if cap == "total":
        limits = ImportLimits(max_archive_bytes=sizes[0] + sizes[1] - 1)
        expected = "animal/dog/1_jpg: takes the archive past its total size limit while unpacking"
    else:
        limits = ImportLimits(max_file_bytes=100)
        expected = "animal/dog/0_jpg: unpacks to more than 100 bytes"
    _refused(db, home, lambda: import_stimulus_set(db, archive, "many", limits=limits), "many.zip", expected)


def test_messages_name_the_archive_never_a_temporary_folder(db, home, tmp_path):
    archive = _zip_of(tmp_path, "upload.zip", loose_jpg=make_image(tmp_path / "l.jpg").read_bytes())
    error = _refused(db, home, lambda: import_stimulus_set(db, archive, "loose"), "upload.zip")
    assert "alignlab-zip-" not in str(error) and str(tmp_path) not in str(error)


def test_a_symbolic_link_in_an_image_folder_is_refused(db, home, tmp_path):
    source = make_layout(tmp_path / "src", LAYOUT)
    secret = make_image(tmp_path / "outside" / "secret.jpg")
    os.symlink(secret, source / "animal" / "dog" / "linked.jpg")
    _refused(
        db,
        home,
        lambda: import_stimulus_set(db, source, "linked"),
        "animal/dog/linked.jpg: is a symbolic link",
        "links are not followed",
    )
    with pytest.raises(FolderLayoutError, match="linked.jpg in .* is a symbolic link"):
        ImageFolder(source).list_images()


# ---------------------------------------------------------------- design files


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (GOOD_ROW + ",0,extra", "inputs.csv line 2: has 1 more field(s) than the header"),
        (
            GOOD_ROW + ",99999999999999999999",
            "inputs.csv line 2: block '99999999999999999999' is not a block",
        ),
        (
            "p1,animal/animal0/0.jpg,animal/animal0/1.jpg,tool/tool0/0.jpg,0,practice,3",
            "inputs.csv line 2: block 3 holds a practice trial; expected block -1 (or empty) for practice",
        ),
        (GOOD_ROW + ",-1", "inputs.csv line 2: block -1 (practice) holds a class_border trial"),
        ("p1,animal/animal0/0.jpg,animal/animal0/1.jpg", "inputs.csv line 2: has no field for image3"),
    ],
)
def test_bad_design_rows_are_refused_naming_line_and_field(db, stored_set, tmp_path, row, expected):
    set_id, _ = stored_set
    path = tmp_path / "inputs.csv"
    path.write_text(HEADER.strip() + ",block\n" + row + "\n")
    before = counts(db)
    with pytest.raises(InputRejected, match=None) as caught:
        import_levels_design(db, "bad-design", set_id, path)
    assert expected in str(caught.value)
    assert counts(db) == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            (HEADER + GOOD_ROW.replace("p1", "caf\xe9") + "\n").encode("latin-1"),
            "is not UTF-8 text (byte 0xe9 on line 2",
        ),
        ((HEADER + GOOD_ROW + "\n").encode("utf-16"), "is UTF-16 text"),
        (b"PK\x03\x04\x00\x00binary", "is a binary file, not text"),
        (b"", "is empty"),
    ],
)
def test_design_files_in_other_encodings_are_refused_naming_the_file(
    db, stored_set, tmp_path, content, expected
):
    set_id, _ = stored_set
    for name, importer in (("inputs.csv", import_levels_design), ("triplets.txt", import_things_design)):
        path = tmp_path / name
        path.write_bytes(content)
        before = counts(db)
        with pytest.raises(InputRejected) as caught:
            importer(db, "bad-encoding", set_id, path)
        assert f"{name}: {expected}" in str(caught.value) and "saved as UTF-8" in str(caught.value)
        assert counts(db) == before


# ---------------------------------------------------------------- judgments files


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("image1,image2,image3\ncaf\xe9,b,c\n".encode("latin-1"), "judgments.csv: is not UTF-8 text"),
        ("image1,image2,image3\na,b,c\n".encode("utf-16"), "judgments.csv: is UTF-16 text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "judgments.csv: is a binary file, not text"),
        (b"", "judgments.csv: is empty"),
        (b"  \n\n", "judgments.csv: is empty"),
        (
            b"image1,image2,image3,rt\nanimal/dog/dog0.jpg,animal/dog/dog1.jpg,animal/cat/cat0.jpg,1200,7\n",
            "judgments.csv line 2: has 5 fields; expected one field for each of the header's 4 "
            "(image1, image2, image3, rt)",
        ),
    ],
)
def test_bad_judgment_files_are_refused_naming_file_row_and_what_was_expected(
    db, home, tmp_path, content, expected
):
    import_stimulus_set(db, make_layout(tmp_path / "src", LAYOUT), "pets")
    path = tmp_path / "judgments.csv"
    path.write_bytes(content)
    before = snapshot(db, home)
    with pytest.raises(InputRejected) as caught:
        import_judgments_csv(db, path, stimulus_set_name="pets", slug="judged")
    assert expected in str(caught.value)
    assert snapshot(db, home) == before
    from sqlalchemy import func, select

    from db.models import Study

    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 0
