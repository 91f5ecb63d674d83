"""Atomic writes: complete or not at all, and never a temporary file left behind."""

from __future__ import annotations

import numpy as np
import pytest

from common.atomic import atomic_directory, atomic_path, atomic_write


def test_bytes_and_writer_callbacks_replace_the_target(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write(target, b"first")
    atomic_write(target, lambda handle: handle.write(b"second"))
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_a_failing_writer_leaves_the_old_file_intact_and_no_temporary_file(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def half_then_fail(handle):
        handle.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_the_temporary_path_keeps_the_suffix_writers_by_name_need(tmp_path):
    target = tmp_path / "arrays.npz"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".npz"
        np.savez(temporary, x=np.arange(3))
    assert np.load(target)["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz"]


def test_a_failing_directory_build_keeps_the_old_folder(tmp_path):
    target = tmp_path / "images"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("a")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "b.txt").write_text("b")
        raise RuntimeError("source unreadable")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
