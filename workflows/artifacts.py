"""Run artifacts on disk: one writer and one validating reader per file format the stages share.

Paths in ``Run.artifacts`` are relative to the data directory. Formats:
- embeddings (artifact ``embeddings`` or ``<something>_embeddings``): an .npz with ``embeddings`` float32
  [n, D] and ``stimulus_ids`` int64 [n] (rows in the order of the ids); written by the feature, teacher
  and student stages, read by the evaluation, the distillation and the maps;
- split (artifact ``split``): an .npz with ``test_keys`` int64 [m, 2], the held-out judgments'
  (participant id, trial index; odd-one-out and anchor judgments alike), and ``unseen`` bool [m]: whether a
  held-out judgment is made only of images the fit never saw (else a seen-image one), and ``subject`` bool
  [m]: whether it is a seen-image judgment of a subject the fit never learnt from (absent in splits written
  before subjects were held out: all False), so every stage evaluates on the same test sets.
Pseudo-labels, teachers and student checkpoints have their own reader/writer pair in alignment/
(``PseudoLabels.save/load``, ``Teacher.save/load``, ``save_student/load_student``).

Every write is atomic (a reader never sees half a file); every read checks the arrays and says what is
wrong with which file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_path

EMBEDDINGS_KEYS = ("embeddings", "stimulus_ids")
SPLIT_KEYS = ("test_keys", "unseen")
SPLIT_OPTIONAL_KEYS = ("subject",)


class ArtifactError(ValueError):
    """An artifact file that cannot be used: unreadable, missing arrays, wrong shapes."""


def write_embeddings(path: str | Path, embeddings: np.ndarray, stimulus_ids: np.ndarray) -> Path:
    """Write embeddings [n, D] with their stimulus ids [n] (checked first, so nothing wrong is stored)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    stimulus_ids = np.asarray(stimulus_ids, dtype=np.int64)
    _check_embeddings(embeddings, stimulus_ids, "need")
    with atomic_path(path) as partial:
        np.savez(partial, embeddings=embeddings, stimulus_ids=stimulus_ids)
    return Path(path)


def read_embeddings(path: str | Path, owner: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [n, D], stimulus_ids int64 [n]); ``owner`` (e.g. "run #3 teacher") starts each message."""
    arrays = _read_npz(Path(path), EMBEDDINGS_KEYS, owner, "embeddings")
    embeddings, stimulus_ids = arrays["embeddings"], arrays["stimulus_ids"]
    _check_embeddings(embeddings, stimulus_ids, f"{_prefix(owner)}{path} must hold")
    return embeddings, stimulus_ids.astype(np.int64)


def write_split(path: str | Path, test_keys: np.ndarray, unseen: np.ndarray, subject: np.ndarray) -> Path:
    """Write the held-out judgments' (participant id, trial index) pairs [m, 2], their unseen-image flags [m]
    and their unseen-subject flags [m]."""
    test_keys = np.asarray(test_keys, dtype=np.int64).reshape(-1, 2)
    unseen, subject = np.asarray(unseen, dtype=bool), np.asarray(subject, dtype=bool)
    if unseen.shape != (len(test_keys),) or subject.shape != (len(test_keys),):
        raise ValueError(
            f"unseen and subject must have one flag per test key ({len(test_keys)}); got {unseen.shape}, "
            f"{subject.shape}"
        )
    with atomic_path(path) as partial:
        np.savez(partial, test_keys=test_keys, unseen=unseen, subject=subject)
    return Path(path)


def read_split(path: str | Path, owner: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The held-out (participant id, trial index) pairs, int64 [m, 2] (kept as an array: millions of rows),
    whether each is an unseen-image judgment, bool [m], and whether it is an unseen-subject one, bool [m]
    (all False in a split written before subjects were held out)."""
    arrays = _read_npz(Path(path), SPLIT_KEYS, owner, "split", SPLIT_OPTIONAL_KEYS)
    keys, unseen = arrays["test_keys"], arrays["unseen"]
    subject = arrays.get("subject", np.zeros(len(keys), bool))
    if keys.ndim != 2 or keys.shape[1] != 2 or unseen.shape != (len(keys),) or subject.shape != unseen.shape:
        raise ArtifactError(
            f"{_prefix(owner)}{path} must hold test_keys [m, 2], unseen [m] and subject [m]; got "
            f"{keys.shape}, {unseen.shape}, {subject.shape}"
        )
    return keys.astype(np.int64), unseen.astype(bool), subject.astype(bool)


def _read_npz(
    path: Path, keys: tuple[str, ...], owner: str, what: str, optional: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """The arrays `keys` (all required) and those of `optional` the file holds."""
    if not path.is_file():
        raise FileNotFoundError(f"{_prefix(owner)}{what} file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in keys if key not in npz.files]
            if missing:
                raise ArtifactError(f"{_prefix(owner)}{path} lacks {missing}; expected arrays {keys}")
            return {key: npz[key] for key in (*keys, *optional) if key in npz.files}
    except ArtifactError:
        raise
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{_prefix(owner)}{path} is not a readable .npz file ({error})") from None


def _check_embeddings(embeddings: np.ndarray, stimulus_ids: np.ndarray, lead: str) -> None:
    if embeddings.ndim != 2 or stimulus_ids.shape != (len(embeddings),):
        raise ArtifactError(
            f"{lead} embeddings [n, D] and stimulus_ids [n]; got {embeddings.shape} and {stimulus_ids.shape}"
        )


def _prefix(owner: str) -> str:
    return f"{owner}: " if owner else ""
