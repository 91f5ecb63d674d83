"""Atomic writes: a file (or a folder) appears complete or not at all.

The content goes to a temporary file in the target's own directory (same filesystem, so the final
``os.replace`` is atomic), is flushed to disk with fsync, and only then replaces the target. A writer that
fails leaves the old target untouched and no temporary file behind. Readers (the app, other processes
sharing a cache) therefore never see a half-written artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to (by name: ``torch.save``, ``np.savez``, ``DataFrame.to_parquet``);
    on a clean exit it replaces ``target``. The temporary name keeps the target's suffix, since some
    writers (``np.savez``) append one otherwise."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=f".partial{target.suffix}"
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
        _fsync_directory(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(target: str | os.PathLike, content: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` (bytes, or a callback writing to a binary handle) to ``target`` atomically."""
    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        if isinstance(content, bytes | bytearray):
            handle.write(content)
        else:
            content(handle)
    return Path(target)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder next to ``target``; on a clean exit it takes ``target``'s place (the old
    folder, if any, is removed only after the swap). On failure the staging folder is removed."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.partial")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
