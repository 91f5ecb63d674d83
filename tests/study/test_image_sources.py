"""Demo image sources: layout, manifest, labels, determinism, idempotence, clear errors, folder round trip."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.image_sources import (
    FolderLayoutError,
    ImageSourceUnavailable,
    SourceImage,
    UnknownImageSource,
    build_demo_images,
    get_image_source,
)
from study.image_sources.build import BUILD_INFO
from study.image_sources.fashion_mnist import DEFAULT_DATA_DIR, FashionMnist, read_idx
from study.image_sources.folder import ImageFolder
from study.image_sources.tuxpaint import DEFAULT_STAMPS_DIR, PHOTO_STAMPS, TuxPaintPhotos

needs_fashion_mnist = pytest.mark.skipif(
    not DEFAULT_DATA_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist"
)
needs_tuxpaint = pytest.mark.skipif(
    not DEFAULT_STAMPS_DIR.is_dir(), reason="apt-get install tuxpaint-stamps-default"
)


def read_manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def make_user_folder(root: Path, layout: dict[str, int]) -> Path:
    """A user's folder `superordinate/category/img_N.png` with small solid-colour test images."""
    for index, (label, count) in enumerate(layout.items()):
        for n in range(count):
            path = root / label / f"img_{n}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (index * 40, n * 20, 100)).save(path)
    return root


def fake_stamps(root: Path, stamps: list[str]) -> Path:
    """A stamps folder holding a few of the curated stamp paths, as small transparent PNGs with captions."""
    for stamp in stamps:
        png = root / f"{stamp}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
        image.paste((200, 30, 30, 255), (5, 5, 35, 15))
        image.save(png)
        png.with_suffix(".txt").write_text(f"A {Path(stamp).name}.\nfr.utf8=Un.\n", encoding="utf-8")
    return root


def test_manifest_and_layout_from_a_user_folder(tmp_path):
    source = make_user_folder(tmp_path / "mine", {"animal/bird": 5, "animal/fish": 2, "object/tool": 3})
    out = build_demo_images(f"folder:{source}", tmp_path / "out", per_category=4, seed=0)
    rows = read_manifest(out)
    assert list(rows[0])[:5] == ["path", "category", "superordinate", "source", "licence"]
    assert Counter((r["superordinate"], r["category"]) for r in rows) == {
        ("animal", "bird"): 4,
        ("animal", "fish"): 2,
        ("object", "tool"): 3,
    }
    for row in rows:
        assert Path(row["path"]).parts[:2] == (row["superordinate"], row["category"])
        assert (out / row["path"]).is_file()
        assert row["licence"] == "unknown (user-supplied)"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        r["path"] for r in rows
    )


def test_folder_round_trip_keeps_bytes_labels_licences_and_attributes(tmp_path):
    first = build_demo_images(
        TuxPaintPhotos(fake_stamps(tmp_path / "stamps", ["animals/birds/crow", "food/fruit/kiwi"])),
        tmp_path / "first",
    )
    second = build_demo_images(f"folder:{first}", tmp_path / "second", per_category=None)
    assert read_manifest(second) == read_manifest(first)
    for row in read_manifest(first):
        assert (second / row["path"]).read_bytes() == (first / row["path"]).read_bytes()
    assert {r["description"] for r in read_manifest(second)} == {"A crow.", "A kiwi."}


def test_selection_is_seeded_and_deterministic(tmp_path):
    source = make_user_folder(tmp_path / "mine", {"animal/bird": 20, "object/tool": 20})

    def build(name: str, seed: int) -> list[str]:
        out = build_demo_images(f"folder:{source}", tmp_path / name, per_category=5, seed=seed)
        return [row["path"] for row in read_manifest(out)]

    assert build("a", seed=0) == build("b", seed=0)
    assert build("c", seed=1) != build("a", seed=0)
    assert len(build("d", seed=2)) == 10


def test_rebuild_of_a_complete_folder_does_nothing(tmp_path, monkeypatch):
    source = make_user_folder(tmp_path / "mine", {"animal/bird": 3, "object/tool": 3})
    out = build_demo_images(f"folder:{source}", tmp_path / "out")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def must_not_read(self):
        raise AssertionError("a complete build was read again")

    monkeypatch.setattr(ImageFolder, "list_images", must_not_read)
    assert build_demo_images(f"folder:{source}", tmp_path / "out") == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_incomplete_or_different_build_is_rebuilt(tmp_path):
    source = make_user_folder(tmp_path / "mine", {"animal/bird": 6, "object/tool": 6})
    out = build_demo_images(f"folder:{source}", tmp_path / "out", per_category=2)
    missing = out / read_manifest(out)[0]["path"]
    missing.unlink()
    build_demo_images(f"folder:{source}", out, per_category=2)
    assert missing.is_file()
    build_demo_images(f"folder:{source}", out, per_category=3)
    assert len(read_manifest(out)) == 6 == len(list(out.rglob("*.png")))


def test_never_overwrites_a_folder_it_did_not_build(tmp_path):
    source = make_user_folder(tmp_path / "mine", {"animal/bird": 2})
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not made by build_demo_images"):
        build_demo_images(f"folder:{source}", precious)
    assert (precious / "thesis.txt").read_text() == "keep me"


class BreaksMidway:
    """A source whose third image cannot be written (e.g. a disk error)."""

    name = "breaks-midway"

    def __init__(self, folder: Path) -> None:
        self.images = ImageFolder(folder).list_images()

    def list_images(self) -> list[SourceImage]:
        def fail(path: Path) -> None:
            raise OSError(f"cannot write {path}")

        return [*self.images[:2], replace(self.images[2], write=fail)]


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    source = BreaksMidway(make_user_folder(tmp_path / "mine", {"animal/bird": 3}))
    with pytest.raises(OSError, match="cannot write"):
        build_demo_images(source, tmp_path / "out", per_category=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_folder_layout_errors_name_the_offending_file(tmp_path):
    stray = tmp_path / "mine" / "animal" / "stray.jpg"
    stray.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(stray)
    with pytest.raises(FolderLayoutError, match="stray.jpg"):
        get_image_source(f"folder:{tmp_path / 'mine'}").list_images()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_image_source(f"folder:{tmp_path / 'nowhere'}").list_images()


def test_a_category_under_two_superordinates_is_rejected(tmp_path):
    source = make_user_folder(tmp_path / "mine", {"animal/bat": 1, "sport/bat": 1})
    with pytest.raises(ValueError, match="'bat' appears under both"):
        build_demo_images(f"folder:{source}", tmp_path / "out")


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(UnknownImageSource, match="tuxpaint-photos, fashion-mnist, folder:PATH"):
        get_image_source("imagenet")


@pytest.mark.parametrize(
    ("source", "install_step"),
    [
        (FashionMnist(Path("/no/such/fashion-mnist")), "apt-get install dataset-fashion-mnist"),
        (
            TuxPaintPhotos(Path("/no/such/stamps")),
            "apt-get install --no-install-recommends tuxpaint-stamps-default",
        ),
    ],
)
def test_missing_package_names_its_install_step(tmp_path, source, install_step):
    with pytest.raises(ImageSourceUnavailable, match=install_step):
        build_demo_images(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tuxpaint_labels_come_from_the_curated_table_not_tux_paint_folders(tmp_path):
    stamps = fake_stamps(
        tmp_path / "stamps", ["animals/insects/Brown_slug", "animals/fish/lobster", "animals/fish/clownfish"]
    )
    out = build_demo_images(TuxPaintPhotos(stamps, image_size=32), tmp_path / "out")
    rows = {r["path"]: r for r in read_manifest(out)}
    assert set(rows) == {
        "animal/invertebrate/brown_slug.png",
        "animal/invertebrate/lobster.png",
        "animal/fish/clownfish.png",
    }
    assert rows["animal/fish/clownfish.png"]["origin"] == "animals/fish/clownfish.png"
    with Image.open(out / "animal/fish/clownfish.png") as image:
        assert (image.mode, image.size) == ("RGB", (32, 32))
        assert image.getpixel((0, 0)) == (255, 255, 255)  # transparency flattened onto white


def test_curated_table_has_at_least_ten_categories_in_three_superordinates():
    assert len(PHOTO_STAMPS) >= 10
    assert len({superordinate for superordinate, _ in PHOTO_STAMPS}) >= 3
    all_stamps = [stamp for stamps in PHOTO_STAMPS.values() for stamp in stamps]
    assert len(all_stamps) == len(set(all_stamps))


@needs_tuxpaint
def test_every_curated_stamp_exists_in_the_installed_package(tmp_path):
    missing = [
        s
        for stamps in PHOTO_STAMPS.values()
        for s in stamps
        if not (DEFAULT_STAMPS_DIR / f"{s}.png").is_file()
    ]
    assert missing == []
    rows = read_manifest(build_demo_images("tuxpaint-photos", tmp_path / "demo", per_category=12))
    counts = Counter((r["superordinate"], r["category"]) for r in rows)
    assert len(counts) == 12 and {s for s, _ in counts} == {"animal", "plant", "food", "artefact"}
    assert min(counts.values()) == 4 and sum(counts.values()) == 129
    assert {r["licence"] for r in rows} == {"GPL-2.0-or-later"}


def test_read_idx_known_answer(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "tiny-idx3-ubyte.gz"
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in pixels.shape)
    path.write_bytes(gzip.compress(header + pixels.tobytes()))
    np.testing.assert_array_equal(read_idx(path, 2051), pixels)
    with pytest.raises(ValueError, match="expected 2049"):
        read_idx(path, 2049)


@needs_fashion_mnist
def test_fashion_mnist_classes_and_upscaled_images(tmp_path):
    rows = read_manifest(build_demo_images("fashion-mnist", tmp_path / "fm", per_category=3, seed=0))
    counts = Counter((r["superordinate"], r["category"]) for r in rows)
    assert len(counts) == 10 and set(counts.values()) == {3}
    assert Counter(s for s, _ in counts) == {"clothing": 6, "footwear": 3, "accessory": 1}
    with Image.open(tmp_path / "fm" / rows[0]["path"]) as image:
        assert (image.mode, image.size) == ("L", (112, 112))
    index = int(rows[0]["origin"].split("#")[1])
    original = read_idx(DEFAULT_DATA_DIR / "t10k-images-idx3-ubyte.gz", 2051)[index]
    with Image.open(tmp_path / "fm" / rows[0]["path"]) as image:
        shrunk = np.asarray(image.resize((28, 28), Image.Resampling.BOX), dtype=float)
    assert np.abs(shrunk - original).mean() < 8  # the saved image is that test image, upscaled
    assert (tmp_path / "fm" / BUILD_INFO).is_file()
