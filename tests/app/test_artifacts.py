"""The one embeddings/split file format: what is written reads back, and bad files are named, not guessed."""

from __future__ import annotations

import numpy as np
import pytest

from workflows.artifacts import ArtifactError, read_embeddings, read_split, write_embeddings, write_split


def test_embeddings_round_trip_as_float32_and_int64(tmp_path):
    path = write_embeddings(tmp_path / "runs" / "e.npz", np.arange(6.0).reshape(3, 2), [7, 8, 9])
    embeddings, ids = read_embeddings(path)
    assert embeddings.dtype == np.float32 and ids.dtype == np.int64
    assert embeddings.tolist() == [[0, 1], [2, 3], [4, 5]] and ids.tolist() == [7, 8, 9]
    assert [p.name for p in path.parent.iterdir()] == ["e.npz"]


def test_mismatched_shapes_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(
        ArtifactError, match=r"need embeddings \[n, D\] and stimulus_ids \[n\]; got \(3, 2\) and \(2,\)"
    ):
        write_embeddings(tmp_path / "e.npz", np.zeros((3, 2)), [1, 2])
    assert list(tmp_path.iterdir()) == []


def test_bad_files_name_the_owner_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="run #3: embeddings file .*gone.npz does not exist"):
        read_embeddings(tmp_path / "gone.npz", "run #3")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="run #3: .*junk.npz is not a readable .npz file"):
        read_embeddings(tmp_path / "junk.npz", "run #3")
    np.savez(tmp_path / "other.npz", embeddings=np.zeros((2, 2)))
    with pytest.raises(ArtifactError, match=r"other.npz lacks \['stimulus_ids'\]"):
        read_embeddings(tmp_path / "other.npz")
    np.savez(tmp_path / "flat.npz", embeddings=np.zeros(4), stimulus_ids=np.arange(4))
    with pytest.raises(ArtifactError, match=r"flat.npz must hold embeddings \[n, D\]"):
        read_embeddings(tmp_path / "flat.npz")


def test_split_round_trip(tmp_path):
    keys = np.array([[1, 4], [2, 0], [3, 1]])
    path = write_split(
        tmp_path / "split.npz", keys, np.array([False, True, False]), np.array([0, 0, 1], bool)
    )
    read = read_split(path)
    assert [(tuple(k), u, s) for k, u, s in zip(*(a.tolist() for a in read), strict=True)] == [
        ((1, 4), False, False),
        ((2, 0), True, False),
        ((3, 1), False, True),
    ]
    np.savez(tmp_path / "old.npz", test_keys=keys, unseen=np.zeros(3, bool))  # before subjects were held out
    assert read_split(tmp_path / "old.npz")[2].tolist() == [False, False, False]
    np.savez(tmp_path / "bad.npz", test_keys=np.arange(3), unseen=np.zeros(3, bool))
    with pytest.raises(
        ArtifactError, match=r"must hold test_keys \[m, 2\], unseen \[m\] and subject \[m\]; got \(3,\)"
    ):
        read_split(tmp_path / "bad.npz")
