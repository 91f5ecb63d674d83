"""Stimulus sets: import a labelled image folder (or a zip, or a folder plus a CSV manifest) all-or-nothing.

Every file is validated (decodable, size limits, decompression-bomb guard, duplicate content) before
anything is stored; problems are reported row by row. Serving copies and thumbnails are written to a
staging directory, which becomes `<data dir>/stimuli/<set>/` only as the database transaction commits.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.models import Stimulus, StimulusSet
from db.settings import data_home
from study.input_errors import InputRejected, RowProblem

STIMULI_DIR = "stimuli"
ORIGINALS_DIR = "originals"
MANIFEST_FILENAME = "manifest.csv"
REQUIRED_MANIFEST_COLUMNS = ("path", "category")
OPTIONAL_MANIFEST_COLUMNS = ("superordinate",)
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MPO")  # MPO: multi-picture JPEG (phones)
JPEG_FORMATS = ("JPEG", "MPO")
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}
SET_NAME_PATTERN = re.compile(r"^[^\x00-\x1f/\\]{1,200}$")


class StimulusSetNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ImportLimits:
    """Size limits and output sizes for an import; defaults suit photos and line drawings alike."""

    max_file_bytes: int = 50 * 2**20
    max_pixels: int = 40_000_000  # width x height of one image (also guards decompression bombs)
    min_side_px: int = 16
    max_archive_bytes: int = 2 * 2**30  # total uncompressed size of a zip, declared and actually written
    max_archive_members: int = 100_000
    max_compression_ratio: float = 100.0  # images barely compress; a zip bomb compresses ~1000:1
    ratio_checked_from_bytes: int = 2**20  # small entries (text, tiny icons) may compress well
    serving_px: int = 512  # longest side of the copy participants see
    thumbnail_px: int = 128
    jpeg_quality: int = 90


@dataclass(frozen=True)
class StimulusInfo:
    """What the design generator needs to know about one stimulus."""

    id: int
    name: str
    category: str
    superordinate: str


@dataclass(frozen=True)
class ImportReport:
    stimulus_set_id: int
    name: str
    directory: str  # relative to the data directory
    images_per_category: dict[tuple[str, str], int]  # (superordinate, category) -> n images
    n_ignored_files: int = 0  # files in the folder that the manifest does not list

    @property
    def n_images(self) -> int:
        return sum(self.images_per_category.values())

    @property
    def superordinates(self) -> list[str]:
        return sorted({sup for sup, _ in self.images_per_category})

    def summary(self) -> str:
        lines = [
            f"imported {self.n_images} images into stimulus set {self.name!r} (id {self.stimulus_set_id}): "
            f"{len(self.images_per_category)} categories in {len(self.superordinates)} superordinate(s)"
        ]
        for sup in self.superordinates:
            counts = {cat: n for (s, cat), n in sorted(self.images_per_category.items()) if s == sup}
            listed = ", ".join(f"{cat} {n}" for cat, n in counts.items())
            lines.append(
                f"  {sup or '(no superordinate)'}: {len(counts)} categories, "
                f"{sum(counts.values())} images ({listed})"
            )
        if self.n_ignored_files:
            lines.append(f"  ignored {self.n_ignored_files} file(s) not listed in the manifest")
        lines.append(f"  files under <data dir>/{self.directory}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Candidate:
    name: str  # path relative to the imported folder, e.g. "animal/dog/1.jpg"
    file: Path
    category: str
    superordinate: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Checked:
    candidate: _Candidate
    sha256: str
    n_bytes: int
    width: int
    height: int
    serving_file: str  # relative to the set directory
    thumbnail_file: str


def import_stimulus_set(
    db: Database,
    source: str | Path,
    name: str,
    *,
    manifest: str | Path | None = None,
    data_dir: str | Path | None = None,
    limits: ImportLimits = ImportLimits(),
    source_name: str | None = None,
) -> ImportReport:
    """Import a folder, zip, or folder + manifest as stimulus set `name`: all of it, or (on any problem)
    none. Messages name the source as `source_name` (e.g. an uploaded file's own name), else the zip's file
    name or the folder's path; never a temporary folder."""
    name = validate_set_name(name)
    source = Path(source)
    label = source_name or (str(source) if source.is_dir() else source.name)
    root = Path(data_dir) if data_dir is not None else data_home()
    _require_unused_name(db, name)
    with _opened_source(source, limits, label) as folder:
        candidates, n_ignored = _collect_candidates(folder, manifest, label)
        staging = root / STIMULI_DIR / f".staging-{secrets.token_hex(6)}"
        try:
            checked = _check_and_render(candidates, staging, limits, label)
            stimulus_set_id, directory = _store(db, name, source, checked, staging, root)
        finally:
            _remove_staging(staging)
    per_category = Counter((c.candidate.superordinate, c.candidate.category) for c in checked)
    return ImportReport(stimulus_set_id, name, directory, dict(per_category), n_ignored)


def validate_set_name(name: str) -> str:
    name = (name or "").strip()
    if not SET_NAME_PATTERN.match(name):
        raise ValueError(
            f"stimulus set name {name!r} is not valid: expected 1-200 characters without "
            "slashes or control characters"
        )
    return name


def _require_unused_name(db: Database, name: str) -> None:
    with db.read() as session:
        if session.scalar(select(StimulusSet.id).where(StimulusSet.name == name)) is not None:
            raise ValueError(f"a stimulus set named {name!r} already exists; choose another name")


# ---------------------------------------------------------------- sources: folder or zip


@contextmanager
def _opened_source(source: Path, limits: ImportLimits, label: str) -> Iterator[Path]:
    """Yield a folder to read: the source itself, or a zip safely extracted to a temporary folder."""
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise FileNotFoundError(f"{label}: no such folder or zip file")
    with tempfile.TemporaryDirectory(prefix="alignlab-zip-") as tmp:
        _extract_zip(source, Path(tmp), limits, label)
        yield Path(tmp)


def _extract_zip(archive: Path, target: Path, limits: ImportLimits, label: str) -> None:
    """Extract after checking every member (no absolute paths, no '..', no links, bounded declared sizes and
    compression), then stream entry by entry, refusing at once an entry larger than it said or than a file
    may be, or a running total over `max_archive_bytes`: a zip bomb is stopped before it fills the disk."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InputRejected(
            label, [RowProblem(label, f"is not a readable zip archive ({error})", "a complete .zip file")]
        ) from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        problems = _archive_problems(members, limits)
        if problems:
            raise InputRejected(label, problems)
        budget = _WriteBudget(limits.max_archive_bytes)
        for member in members:
            parts = _member_parts(member.filename)
            assert parts is not None, "_archive_problems refuses every unsafe member name"
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(member) as src, open(destination, "wb") as out:
                    _copy_entry(src, out, member, limits, budget)
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, ValueError) as error:
                raise InputRejected(
                    label,
                    [
                        RowProblem(
                            member.filename,
                            f"cannot be extracted: {error}",
                            "an unencrypted, undamaged zip entry",
                        )
                    ],
                ) from None
            except _EntryTooLarge as error:
                raise InputRejected(label, [RowProblem(member.filename, *error.args)]) from None


class _EntryTooLarge(Exception):
    """An entry that unpacks to more than it declared, than a file may be, or past the archive's total."""


@dataclass
class _WriteBudget:
    left: int


def _copy_entry(
    src: IO[bytes], out: IO[bytes], member: zipfile.ZipInfo, limits: ImportLimits, budget: _WriteBudget
) -> None:
    allowed = min(member.file_size, limits.max_file_bytes)
    written = 0
    while chunk := src.read(1 << 20):
        written += len(chunk)
        if written > allowed:
            raise _EntryTooLarge(
                f"unpacks to more than {allowed:,} bytes (it declares {member.file_size:,})",
                f"files of at most {limits.max_file_bytes:,} bytes that unpack to their declared size",
            )
        if written > budget.left:
            raise _EntryTooLarge(
                "takes the archive past its total size limit while unpacking",
                f"at most {limits.max_archive_bytes:,} bytes in all (max_archive_bytes)",
            )
        out.write(chunk)
    budget.left -= written


def _archive_problems(members: Sequence[zipfile.ZipInfo], limits: ImportLimits) -> list[RowProblem]:
    if len(members) > limits.max_archive_members:
        return [
            RowProblem(
                "archive",
                f"has {len(members)} files",
                f"at most {limits.max_archive_members} (max_archive_members)",
            )
        ]
    total = sum(m.file_size for m in members)
    if total > limits.max_archive_bytes:
        return [
            RowProblem(
                "archive",
                f"unpacks to {total:,} bytes",
                f"at most {limits.max_archive_bytes:,} bytes (max_archive_bytes)",
            )
        ]
    return [problem for member in members if (problem := _member_problem(member, limits)) is not None]


def _member_problem(member: zipfile.ZipInfo, limits: ImportLimits) -> RowProblem | None:
    """What is wrong with one entry, from its header alone (nothing unpacked yet), or None."""
    if (member.external_attr >> 16) & 0o170000 == 0o120000:
        return RowProblem(member.filename, "is a symbolic link", "regular files only")
    if _member_parts(member.filename) is None:
        return RowProblem(
            member.filename,
            "path points outside the archive folder",
            "relative paths without '..' or a leading '/'",
        )
    if member.file_size > limits.max_file_bytes:
        return RowProblem(
            member.filename,
            f"unpacks to {member.file_size:,} bytes",
            f"files of at most {limits.max_file_bytes:,} bytes (max_file_bytes)",
        )
    ratio = member.file_size / max(member.compress_size, 1)
    if member.file_size >= limits.ratio_checked_from_bytes and ratio > limits.max_compression_ratio:
        return RowProblem(
            member.filename,
            f"is compressed {ratio:,.0f}:1 (a zip bomb?)",
            f"images, which compress at most {limits.max_compression_ratio:,.0f}:1",
        )
    return None


def _member_parts(filename: str) -> tuple[str, ...] | None:
    """The safe relative parts of a zip member name, or None if it could escape the target folder."""
    normalised = filename.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        return None
    parts = tuple(p for p in PurePosixPath(normalised).parts if p not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


# ---------------------------------------------------------------- which files, with which labels


def _collect_candidates(
    folder: Path, manifest: str | Path | None, label: str
) -> tuple[list[_Candidate], int]:
    """Candidates from the manifest (given, or `manifest.csv` in the folder) or from the folder layout.
    A symbolic link anywhere in the folder refuses the import: it could point at any file on the server."""
    links = _symbolic_links(folder)
    if links:
        raise InputRejected(
            label,
            [
                RowProblem(
                    link, "is a symbolic link", "regular files and folders only (links are not followed)"
                )
                for link in links
            ],
        )
    manifest_file = _find_manifest(folder, manifest)
    if manifest_file is None:
        return _candidates_from_layout(folder, label), 0
    candidates = _candidates_from_manifest(manifest_file, folder)
    listed = {c.file.resolve() for c in candidates} | {manifest_file.resolve()}
    n_ignored = sum(1 for f in _visible_files(folder) if f.resolve() not in listed)
    return candidates, n_ignored


def _symbolic_links(folder: Path) -> list[str]:
    """Paths (relative to `folder`) of the symbolic links under it, without following any."""
    links = []
    for directory, subdirectories, files in os.walk(folder):  # os.walk does not descend into linked folders
        for name in subdirectories + files:
            path = Path(directory) / name
            if path.is_symlink():
                links.append(path.relative_to(folder).as_posix())
    return sorted(links)


def _find_manifest(folder: Path, manifest: str | Path | None) -> Path | None:
    if manifest is None:
        default = folder / MANIFEST_FILENAME
        return default if default.is_file() else None
    for candidate in (Path(manifest), folder / manifest):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"manifest {manifest}: no such file (looked in the current directory and in the image folder)"
    )


def _visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, skipping hidden files and OS clutter (.DS_Store, __MACOSX, Thumbs.db)."""
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and not any(p.startswith(".") or p in IGNORED_NAMES for p in parts):
            files.append(path)
    return files


def _candidates_from_layout(folder: Path, label: str) -> list[_Candidate]:
    """`superordinate/category/image.ext` or `category/image.ext` (one wrapping folder is allowed)."""
    files = _visible_files(folder)
    if not files:
        raise InputRejected(
            label,
            [
                RowProblem(
                    label, "contains no files", "superordinate/category/image.ext or category/image.ext"
                )
            ],
        )
    relative = [f.relative_to(folder).parts for f in files]
    if all(len(p) == 4 for p in relative) and len({p[0] for p in relative}) == 1:
        relative = [p[1:] for p in relative]  # a zip of the folder itself: strip the wrapper
    depth = Counter(len(p) for p in relative if len(p) in (2, 3)).most_common(1)
    expected_depth = depth[0][0] if depth else 3
    layout = "superordinate/category/image.ext" if expected_depth == 3 else "category/image.ext"
    candidates, problems = [], []
    for file, parts in zip(files, relative, strict=True):
        name = "/".join(parts)
        if len(parts) != expected_depth:
            where = (
                "is not inside a category folder"
                if len(parts) == 1
                else "is nested differently from the images"
            )
            problems.append(RowProblem(name, where, f"{layout} (or a CSV manifest for any other layout)"))
            continue
        superordinate = parts[0] if expected_depth == 3 else ""
        candidates.append(_Candidate(name, file, category=parts[-2], superordinate=superordinate))
    if problems:
        raise InputRejected(label, problems)
    return candidates


def _candidates_from_manifest(manifest: Path, folder: Path) -> list[_Candidate]:
    rows, columns = _read_manifest_rows(manifest)
    extra_columns = [
        c for c in columns if c.strip().lower() not in REQUIRED_MANIFEST_COLUMNS + OPTIONAL_MANIFEST_COLUMNS
    ]
    candidates: list[_Candidate] = []
    problems: list[RowProblem] = []
    seen: set[str] = set()
    for line, row in rows:
        where = f"{manifest.name} line {line}"
        candidate = _manifest_candidate(row, extra_columns, folder, where, problems)
        if candidate is None:
            continue
        if candidate.name in seen:
            problems.append(RowProblem(where, f"path {candidate.name!r} is listed twice", "each image once"))
            continue
        seen.add(candidate.name)
        candidates.append(candidate)
    if not candidates and not problems:
        problems.append(RowProblem(manifest.name, "lists no images", "one row per image"))
    if problems:
        raise InputRejected(manifest.name, problems)
    return candidates


def _read_manifest_rows(manifest: Path) -> tuple[list[tuple[int, dict[str | None, Any]]], list[str]]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputRejected(
            manifest.name,
            [RowProblem(manifest.name, f"is not UTF-8 text ({error.reason})", "a UTF-8 CSV file")],
        ) from error
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return _manifest_rows(manifest, reader)
    except csv.Error as error:
        raise InputRejected(
            manifest.name,
            [
                RowProblem(
                    f"{manifest.name} line {reader.line_num}", f"is not CSV text ({error})", "a CSV file"
                )
            ],
        ) from None


def _manifest_rows(
    manifest: Path, reader: csv.DictReader
) -> tuple[list[tuple[int, dict[str | None, Any]]], list[str]]:
    columns = [c for c in (reader.fieldnames or []) if c is not None]
    present = {c.strip().lower() for c in columns}
    missing = [c for c in REQUIRED_MANIFEST_COLUMNS if c not in present]
    if missing:
        raise InputRejected(
            manifest.name,
            [
                RowProblem(
                    f"{manifest.name} header",
                    f"missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})",
                    "a header row with path, category and optionally superordinate "
                    "(other columns are kept as attributes)",
                )
            ],
        )
    rows = [
        (
            reader.line_num,
            {(k.strip().lower() if k and k.strip().lower() in present else k): v for k, v in row.items()},
        )
        for row in reader
    ]
    return rows, columns


def _manifest_candidate(
    row: dict[str | None, Any],  # csv.DictReader files fields beyond the header under None
    extra_columns: list[str],
    folder: Path,
    where: str,
    problems: list[RowProblem],
) -> _Candidate | None:
    if row.get(None):
        problems.append(
            RowProblem(where, f"has {len(row[None])} more field(s) than the header", "one field per column")
        )
        return None
    path, category = (row.get("path") or "").strip(), (row.get("category") or "").strip()
    superordinate = (row.get("superordinate") or "").strip()
    if not path or not category:
        problems.append(
            RowProblem(
                where,
                "empty " + ("path" if not path else "category"),
                "an image path and a category on every row",
            )
        )
        return None
    parts = _member_parts(path)
    if parts is None:
        problems.append(
            RowProblem(
                where,
                f"path {path!r} points outside the image folder",
                "a path relative to the image folder, without '..'",
            )
        )
        return None
    file = folder.joinpath(*parts)
    if not file.is_file():
        problems.append(
            RowProblem(
                where,
                f"unknown path {path!r}: no such file in the image folder",
                "a path relative to the image folder",
            )
        )
        return None
    attributes = {c: (row.get(c) or "").strip() for c in extra_columns}
    return _Candidate("/".join(parts), file, category, superordinate, attributes)


# ---------------------------------------------------------------- validation and rendering


def _check_and_render(
    candidates: Sequence[_Candidate], staging: Path, limits: ImportLimits, source: str
) -> list[_Checked]:
    """Decode and check every file (writing serving copies to staging); refuse all if any row is bad."""
    (staging / "images").mkdir(parents=True)
    (staging / "thumbs").mkdir()
    (staging / ORIGINALS_DIR).mkdir()
    checked: list[_Checked] = []
    problems: list[RowProblem] = []
    first_with_hash: dict[str, str] = {}
    for candidate in candidates:
        result = _check_one(candidate, staging, limits)
        if isinstance(result, RowProblem):
            problems.append(result)
        elif result.sha256 in first_with_hash:
            problems.append(
                RowProblem(
                    candidate.name,
                    f"has the same content (sha256) as {first_with_hash[result.sha256]}",
                    "each image only once",
                )
            )
        else:
            first_with_hash[result.sha256] = candidate.name
            checked.append(result)
    if problems:
        raise InputRejected(source, problems)
    return checked


def _check_one(candidate: _Candidate, staging: Path, limits: ImportLimits) -> _Checked | RowProblem:
    n_bytes = candidate.file.stat().st_size
    if n_bytes > limits.max_file_bytes:
        return RowProblem(
            candidate.name,
            f"file is larger than {limits.max_file_bytes:,} bytes",
            "smaller files (max_file_bytes)",
        )
    data = candidate.file.read_bytes()
    try:
        image = _decode(data, candidate.name, limits)
    except _BadImage as bad:
        return bad.problem
    sha256 = hashlib.sha256(data).hexdigest()
    suffix = "jpg" if image.format in JPEG_FORMATS else "png"
    serving, thumbnail = f"images/{sha256[:20]}.{suffix}", f"thumbs/{sha256[:20]}.{suffix}"
    (staging / ORIGINALS_DIR / sha256[:20]).write_bytes(data)  # the alignment stages' input, byte for byte
    _render(image, staging / serving, limits.serving_px, limits)
    _render(image, staging / thumbnail, limits.thumbnail_px, limits)
    return _Checked(candidate, sha256, n_bytes, image.width, image.height, serving, thumbnail)


class _BadImage(Exception):
    def __init__(self, problem: RowProblem):
        self.problem = problem


def _decode(data: bytes, name: str, limits: ImportLimits):
    """Open, verify and fully load an image, upright and RGB; raise _BadImage with the row's problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    expected = f"a {'/'.join(SUPPORTED_FORMATS[:6])} image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                image_format, (width, height) = probe.format, probe.size
                _check_header(name, image_format, width, height, limits)
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                upright.format = image_format
                return upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _BadImage(
            RowProblem(
                name,
                f"refused as a possible decompression bomb ({error})",
                f"at most {limits.max_pixels:,} pixels",
            )
        ) from error
    except UnidentifiedImageError as error:
        raise _BadImage(RowProblem(name, "is not an image file Pillow can read", expected)) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _BadImage(RowProblem(name, f"is a damaged image ({error})", expected)) from error


def _check_header(name: str, image_format: str | None, width: int, height: int, limits: ImportLimits) -> None:
    if image_format not in SUPPORTED_FORMATS:
        raise _BadImage(
            RowProblem(
                name, f"has unsupported format {image_format}", f"one of {', '.join(SUPPORTED_FORMATS)}"
            )
        )
    if width * height > limits.max_pixels:
        raise _BadImage(
            RowProblem(
                name,
                f"is {width}x{height} = {width * height:,} pixels",
                f"at most {limits.max_pixels:,} pixels (max_pixels)",
            )
        )
    if min(width, height) < limits.min_side_px:
        raise _BadImage(
            RowProblem(
                name,
                f"is only {width}x{height} pixels",
                f"at least {limits.min_side_px} pixels on each side (min_side_px)",
            )
        )


def _render(image, destination: Path, longest_side: int, limits: ImportLimits) -> None:
    """An RGB copy no larger than `longest_side` (transparent areas on white); JPEG stays JPEG, else PNG."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, "white")
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = image.convert("RGB")
    rgb.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    if destination.suffix == ".jpg":
        rgb.save(destination, "JPEG", quality=limits.jpeg_quality, optimize=True)
    else:
        rgb.save(destination, "PNG", optimize=True)


# ---------------------------------------------------------------- storing


def _store(
    db: Database, name: str, source: Path, checked: Sequence[_Checked], staging: Path, root: Path
) -> tuple[int, str]:
    """One transaction for the set and its rows; the staged files move into place just before commit."""
    directory = _free_directory(root, name)
    final = root / directory
    moved = False
    try:
        with db.write() as session:
            if session.scalar(select(StimulusSet.id).where(StimulusSet.name == name)) is not None:
                raise ValueError(f"a stimulus set named {name!r} already exists; choose another name")
            stimulus_set = StimulusSet(name=name, source=str(source), attributes={"directory": directory})
            session.add(stimulus_set)
            session.flush()
            session.add_all(_stimulus_row(stimulus_set.id, item, directory) for item in checked)
            session.flush()
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
            moved = True
    except BaseException:
        if moved:
            shutil.rmtree(final, ignore_errors=True)
        raise
    return stimulus_set.id, directory


def _remove_staging(staging: Path) -> None:
    """Delete the staging folder, and `stimuli/` too if the import created it and it is empty."""
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: other sets live there
        staging.parent.rmdir()


def _free_directory(root: Path, name: str) -> str:
    """`stimuli/<safe name>`, with a numeric suffix if a folder of that name is already there."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "set"
    directory, n = f"{STIMULI_DIR}/{safe}", 2
    while (root / directory).exists():
        directory, n = f"{STIMULI_DIR}/{safe}-{n}", n + 1
    return directory


def _stimulus_row(stimulus_set_id: int, item: _Checked, directory: str) -> Stimulus:
    candidate = item.candidate
    return Stimulus(
        stimulus_set_id=stimulus_set_id,
        name=candidate.name,
        path=f"{directory}/{item.serving_file}",
        thumbnail_path=f"{directory}/{item.thumbnail_file}",
        content_hash=item.sha256,
        category=candidate.category,
        superordinate=candidate.superordinate,
        width=item.width,
        height=item.height,
        n_bytes=item.n_bytes,
        attributes=candidate.attributes,
    )


# ---------------------------------------------------------------- reading sets back


def original_path(serving_path: str, content_hash: str) -> str:
    """Where the import kept a stimulus's original file (a byte copy named by its sha256, next to the serving
    copies), relative to the data directory. Features for alignment come from it: the serving copy is
    re-encoded (JPEG q90, resized) for participants, and features of it differ from the original's."""
    return str(PurePosixPath(serving_path).parent.parent / ORIGINALS_DIR / content_hash[:20])


def stimulus_set_id_by_name(db: Database, name: str) -> int:
    with db.read() as session:
        return _set_id(session, name)


def _set_id(session: Session, name: str) -> int:
    set_id = session.scalar(select(StimulusSet.id).where(StimulusSet.name == name))
    if set_id is None:
        known = session.scalars(select(StimulusSet.name).order_by(StimulusSet.name)).all()
        raise StimulusSetNotFound(f"no stimulus set named {name!r}; known sets: {', '.join(known) or 'none'}")
    return set_id


def load_stimulus_table(db: Database, stimulus_set_id: int) -> list[StimulusInfo]:
    """The set's stimuli in import order (by id), as plain records for design generation and import."""
    with db.read() as session:
        rows = session.execute(
            select(Stimulus.id, Stimulus.name, Stimulus.category, Stimulus.superordinate)
            .where(Stimulus.stimulus_set_id == stimulus_set_id)
            .order_by(Stimulus.id)
        ).all()
    if not rows:
        raise StimulusSetNotFound(f"stimulus set {stimulus_set_id} does not exist or has no stimuli")
    return [StimulusInfo(*row) for row in rows]


@dataclass(frozen=True)
class StimulusSetSummary:
    id: int
    name: str
    n_images: int
    n_categories: int
    n_superordinates: int


def list_stimulus_sets(db: Database) -> list[StimulusSetSummary]:
    with db.read() as session:
        rows = session.execute(
            select(
                StimulusSet.id,
                StimulusSet.name,
                func.count(Stimulus.id),
                func.count(func.distinct(Stimulus.superordinate + "/" + Stimulus.category)),
                func.count(func.distinct(Stimulus.superordinate)),
            )
            .outerjoin(Stimulus, Stimulus.stimulus_set_id == StimulusSet.id)
            .group_by(StimulusSet.id, StimulusSet.name)
            .order_by(StimulusSet.name)
        ).all()
    return [StimulusSetSummary(*row) for row in rows]
