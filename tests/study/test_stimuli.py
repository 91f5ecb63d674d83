"""Stimulus-set import: layouts, manifest, zip, serving copies, and all-or-nothing rejection of bad input."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from db.models import Stimulus, StimulusSet
from study.input_errors import InputRejected
from study.stimuli import (
    ImportLimits,
    StimulusSetNotFound,
    import_stimulus_set,
    list_stimulus_sets,
    load_stimulus_table,
    original_path,
    stimulus_set_id_by_name,
)
from tests.support.stimulus_files import make_image, make_layout, snapshot

LAYOUT = {"animal": {"dog": 3, "cat": 2}, "vehicle": {"car": 2}}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ALIGNLAB_HOME", str(home))
    return home


def stimuli_rows(db, set_name: str) -> list[Stimulus]:
    with db.read() as session:
        set_id = session.scalar(select(StimulusSet.id).where(StimulusSet.name == set_name))
        return session.scalars(
            select(Stimulus).where(Stimulus.stimulus_set_id == set_id).order_by(Stimulus.name)
        ).all()


def test_folder_layout_imports_labels_and_serving_copies(db, home, tmp_path):
    source = make_layout(tmp_path / "src", LAYOUT)
    report = import_stimulus_set(db, source, "pets")
    assert report.n_images == 7
    assert report.images_per_category == {("animal", "dog"): 3, ("animal", "cat"): 2, ("vehicle", "car"): 2}
    assert report.superordinates == ["animal", "vehicle"]
    assert "7 images" in report.summary() and "3 categories in 2 superordinate(s)" in report.summary()
    rows = stimuli_rows(db, "pets")
    assert [(r.name, r.superordinate, r.category) for r in rows][:2] == [
        ("animal/cat/cat0.jpg", "animal", "cat"),
        ("animal/cat/cat1.jpg", "animal", "cat"),
    ]
    for row in rows:
        assert (home / row.path).is_file() and (home / row.thumbnail_path).is_file()
        assert row.path.startswith("stimuli/pets/") and (row.width, row.height) == (40, 30)
    assert not any(p.name.startswith(".staging") for p in (home / "stimuli").iterdir())


def test_serving_copy_and_thumbnail_are_downsized_rgb(db, home, tmp_path):
    source = tmp_path / "src"
    make_image(source / "big" / "wide.jpg", size=(1000, 600))
    make_image(source / "big" / "clear.png", size=(300, 200), mode="RGBA")
    import_stimulus_set(db, source, "sizes")
    rows = {r.name: r for r in stimuli_rows(db, "sizes")}
    wide = rows["big/wide.jpg"]
    with Image.open(home / wide.path) as serving, Image.open(home / wide.thumbnail_path) as thumb:
        assert (serving.size, serving.mode, serving.format) == ((512, 307), "RGB", "JPEG")
        assert thumb.size == (128, 77)
    clear = rows["big/clear.png"]
    assert (clear.width, clear.height, clear.superordinate, clear.category) == (300, 200, "", "big")
    with Image.open(home / clear.path) as serving:
        assert (serving.size, serving.mode, serving.format) == ((300, 200), "RGB", "PNG")


def test_originals_are_kept_byte_for_byte_next_to_the_serving_copies(db, home, tmp_path):
    source = tmp_path / "src"
    make_image(source / "big" / "wide.jpg", size=(1000, 600))
    import_stimulus_set(db, source, "sizes")
    (row,) = stimuli_rows(db, "sizes")
    original = home / original_path(row.path, row.content_hash)
    assert original.read_bytes() == (source / "big" / "wide.jpg").read_bytes()
    assert (home / row.path).read_bytes() != original.read_bytes()  # the serving copy is re-encoded


def test_zip_of_the_folder_itself_is_unwrapped(db, home, tmp_path):
    source = make_layout(tmp_path / "src" / "myset", LAYOUT)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in source.rglob("*.jpg"):
            zf.write(file, f"myset/{file.relative_to(source).as_posix()}")
        zf.writestr("__MACOSX/._junk", b"apple double")
    report = import_stimulus_set(db, archive, "zipped")
    assert report.images_per_category[("animal", "dog")] == 3 and report.n_images == 7


def test_manifest_keeps_extra_columns_as_attributes(db, home, tmp_path):
    source = tmp_path / "flat"
    for name in ("a.png", "b.png", "c.png", "unlisted.png"):
        make_image(source / name)
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "path,category,superordinate,photographer\n"
        "a.png,dog,animal,Ann\nb.png,cat,animal,Bo\nc.png,car,vehicle,\n"
    )
    report = import_stimulus_set(db, source, "flat", manifest=manifest)
    assert report.n_images == 3 and report.n_ignored_files == 1
    rows = {r.name: r for r in stimuli_rows(db, "flat")}
    assert rows["a.png"].attributes == {"photographer": "Ann"}
    assert (rows["c.png"].category, rows["c.png"].superordinate) == ("car", "vehicle")


def test_manifest_inside_a_zip_is_found(db, home, tmp_path):
    archive = tmp_path / "upload.zip"
    image = make_image(tmp_path / "x.jpg")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(image, "img/x.jpg")
        zf.write(make_image(tmp_path / "y.jpg"), "img/y.jpg")
        zf.writestr("manifest.csv", "path,category\nimg/x.jpg,one\nimg/y.jpg,two\n")
    report = import_stimulus_set(db, archive, "upload")
    assert report.images_per_category == {("", "one"): 1, ("", "two"): 1}


def test_every_bad_file_is_reported_and_nothing_is_stored(db, home, tmp_path):
    source = make_layout(tmp_path / "src", LAYOUT)
    (source / "animal" / "dog" / "notes.jpg").write_text("this is not an image")
    good = make_image(tmp_path / "good.jpg", size=(200, 200))
    (source / "animal" / "cat" / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    make_image(source / "vehicle" / "car" / "huge.png", size=(300, 300))
    make_image(source / "vehicle" / "car" / "tiny.png", size=(8, 8))
    before = snapshot(db, home)
    limits = ImportLimits(max_pixels=80_000, min_side_px=10)
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "bad", limits=limits)
    problems = {p.where: str(p) for p in caught.value.problems}
    assert set(problems) == {
        "animal/dog/notes.jpg",
        "animal/cat/truncated.jpg",
        "vehicle/car/huge.png",
        "vehicle/car/tiny.png",
    }
    assert "not an image file" in problems["animal/dog/notes.jpg"]
    assert "damaged image" in problems["animal/cat/truncated.jpg"]
    assert "300x300 = 90,000 pixels; expected at most 80,000 pixels" in problems["vehicle/car/huge.png"]
    assert "at least 10 pixels" in problems["vehicle/car/tiny.png"]
    assert "nothing was imported" in str(caught.value)
    assert snapshot(db, home) == before


def test_oversized_file_and_decompression_bomb_are_row_errors(db, home, tmp_path, monkeypatch):
    source = make_layout(tmp_path / "src", {"": {"small": 2}})
    heavy = source / "big" / "heavy.png"
    heavy.parent.mkdir()
    Image.frombytes("RGB", (100, 100), os.urandom(30_000)).save(heavy)  # noise: ~30 kB
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "bytes", limits=ImportLimits(max_file_bytes=5000))
    assert [p.where for p in caught.value.problems] == ["big/heavy.png"]
    assert "larger than 5,000 bytes" in str(caught.value)

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own guard: 40x30 > 1000, 100x100 > 2000
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "bomb")
    assert len(caught.value.problems) == 3
    assert all("decompression bomb" in p.problem for p in caught.value.problems)
    assert snapshot(db, home)[:2] == (0, 0)


def test_duplicate_content_names_both_files(db, home, tmp_path):
    source = make_layout(tmp_path / "src", LAYOUT)
    copy = source / "vehicle" / "car" / "again.jpg"
    copy.write_bytes((source / "animal" / "dog" / "dog0.jpg").read_bytes())
    before = snapshot(db, home)
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "dups")
    [problem] = caught.value.problems
    assert str(problem) == (
        "vehicle/car/again.jpg: has the same content (sha256) as animal/dog/dog0.jpg; "
        "expected each image only once"
    )
    assert snapshot(db, home) == before


def test_manifest_missing_columns_is_refused(db, home, tmp_path):
    source = make_layout(tmp_path / "src", {"": {"dog": 2}})
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\ndog/dog0.jpg,dog\n")
    before = snapshot(db, home)
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "m", manifest=manifest)
    assert "missing column(s) category (found: path, label)" in str(caught.value)
    assert snapshot(db, home) == before


def test_manifest_unknown_paths_and_empty_fields_are_row_errors(db, home, tmp_path):
    source = make_layout(tmp_path / "src", {"": {"dog": 2}})
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,category\ndog/dog0.jpg,dog\ndog/missing.jpg,dog\ndog/dog1.jpg,\n"
        "../outside.jpg,dog\ndog/dog0.jpg,dog\n"
    )
    before = snapshot(db, home)
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "m", manifest=manifest)
    assert [str(p) for p in caught.value.problems] == [
        "m.csv line 3: unknown path 'dog/missing.jpg': no such file in the image folder; "
        "expected a path relative to the image folder",
        "m.csv line 4: empty category; expected an image path and a category on every row",
        "m.csv line 5: path '../outside.jpg' points outside the image folder; "
        "expected a path relative to the image folder, without '..'",
        "m.csv line 6: path 'dog/dog0.jpg' is listed twice; expected each image once",
    ]
    assert snapshot(db, home) == before


def test_zip_with_path_traversal_is_refused_before_extracting(db, home, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dog/a.jpg", make_image(tmp_path / "a.jpg").read_bytes())
        zf.writestr("../../escaped.jpg", make_image(tmp_path / "b.jpg").read_bytes())
        zf.writestr("/abs/c.jpg", b"x")
    before = snapshot(db, home)
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, archive, "evil")
    assert [p.where for p in caught.value.problems] == ["../../escaped.jpg", "/abs/c.jpg"]
    assert "points outside the archive folder" in str(caught.value)
    assert not list(tmp_path.parent.rglob("escaped.jpg"))
    assert snapshot(db, home) == before


def test_zip_size_cap_and_not_a_zip(db, home, tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dog/a.jpg", b"\0" * 100_000)
    with pytest.raises(InputRejected, match="unpacks to 100,000 bytes; expected at most 1,000 bytes"):
        import_stimulus_set(db, archive, "big", limits=ImportLimits(max_archive_bytes=1000))
    not_zip = tmp_path / "notes.txt"
    not_zip.write_text("hello")
    with pytest.raises(InputRejected, match="notes.txt: is not a readable zip archive"):
        import_stimulus_set(db, not_zip, "txt")
    with pytest.raises(FileNotFoundError):
        import_stimulus_set(db, tmp_path / "nowhere", "none")


def test_layout_problems_name_the_files(db, home, tmp_path):
    source = make_layout(tmp_path / "src", LAYOUT)
    make_image(source / "loose.jpg")
    with pytest.raises(InputRejected) as caught:
        import_stimulus_set(db, source, "loose")
    [problem] = caught.value.problems
    assert str(problem) == (
        "loose.jpg: is not inside a category folder; expected superordinate/category/"
        "image.ext (or a CSV manifest for any other layout)"
    )


def test_duplicate_set_name_changes_nothing(db, home, tmp_path):
    import_stimulus_set(db, make_layout(tmp_path / "one", LAYOUT), "pets")
    before = snapshot(db, home)
    with pytest.raises(ValueError, match="a stimulus set named 'pets' already exists"):
        import_stimulus_set(db, make_layout(tmp_path / "two", LAYOUT), "pets")
    assert snapshot(db, home) == before


def test_name_taken_during_import_rolls_back_and_cleans_staging(db, home, tmp_path, monkeypatch):
    import_stimulus_set(db, make_layout(tmp_path / "one", LAYOUT), "pets")
    before = snapshot(db, home)
    monkeypatch.setattr("study.stimuli._require_unused_name", lambda db, name: None)  # lose the race
    with pytest.raises(ValueError, match="already exists"):
        import_stimulus_set(db, make_layout(tmp_path / "two", LAYOUT), "pets")
    assert snapshot(db, home) == before


def test_reading_sets_back(db, home, tmp_path):
    import_stimulus_set(db, make_layout(tmp_path / "src", LAYOUT), "pets")
    set_id = stimulus_set_id_by_name(db, "pets")
    table = load_stimulus_table(db, set_id)
    assert len(table) == 7 and {t.category for t in table} == {"dog", "cat", "car"}
    [summary] = list_stimulus_sets(db)
    assert (summary.name, summary.n_images, summary.n_categories, summary.n_superordinates) == (
        "pets",
        7,
        3,
        2,
    )
    with pytest.raises(StimulusSetNotFound, match="known sets: pets"):
        stimulus_set_id_by_name(db, "nope")


def test_import_list_and_design_on_sqlite_and_postgresql(any_db, home, tmp_path):
    from study.design import DesignConfig, create_study_from_design

    report = import_stimulus_set(any_db, make_layout(tmp_path / "src", LAYOUT), "pets")
    [summary] = list_stimulus_sets(any_db)
    assert (summary.n_images, summary.n_categories, summary.n_superordinates) == (7, 3, 2)
    with pytest.raises(ValueError, match="already exists"):
        import_stimulus_set(any_db, make_layout(tmp_path / "again", LAYOUT), "pets")
    config = DesignConfig(
        n_between_class=0,
        n_within_class=1,
        n_class_border=3,
        n_blocks=1,
        catch_per_block=1,
        n_practice=1,
        within_class_scope="category",
    )
    _, design = create_study_from_design(any_db, "pets-study", report.stimulus_set_id, config)
    assert len(design.lists[0]) == 6
