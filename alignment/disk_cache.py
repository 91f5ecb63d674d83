"""Arrays computed once per input and kept on disk: a UMAP layout or a neighbour search of 50,000 images
costs minutes, so a restarted server or a second `alignlab map` of the same representation reads it back.

Entries are named by what they were computed from (a digest of the input array's bytes, shape and dtype,
plus the settings), so a changed representation can never be served a stale result. Writes go to a
temporary file renamed into place, so a crash leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def array_digest(x: np.ndarray, settings: str) -> str:
    """A short hex name for (array contents, shape, dtype, settings)."""
    digest = hashlib.blake2b(digest_size=16)
    x = np.ascontiguousarray(x)
    digest.update(f"{x.shape}|{x.dtype.str}|{settings}".encode())
    digest.update(memoryview(x).cast("B"))  # type: ignore[arg-type]  # ndarray is a buffer
    return digest.hexdigest()


def cached_arrays(
    cache_dir: Path | None, name: str, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``compute()`` once per ``name`` in ``cache_dir`` (no caching when it is None)."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return {key: stored[key] for key in stored.files}
        except (OSError, ValueError):  # unreadable entry (disk trouble): recompute and replace it
            pass
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwds
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return arrays
