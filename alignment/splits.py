"""Triplet data containers and train/validation splits (random or object-disjoint)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TripletData:
    """Triplets [m, 3] (row indices, odd one out last) and optional human choice distributions [m, 3]."""

    triplets: np.ndarray
    choice_probs: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> TripletData:
        probs = None if self.choice_probs is None else self.choice_probs[rows]
        return TripletData(self.triplets[rows], probs)


def check_choice_probs(choice_probs, n_triplets: int) -> np.ndarray:
    """float64 [m, 3] rows that are probability distributions over pairs [p01, p02, p12]."""
    probs = np.asarray(choice_probs, dtype=np.float64)
    if probs.shape != (n_triplets, 3):
        raise ValueError(
            f"choice_probs must have shape ({n_triplets}, 3) like the triplets; got {probs.shape}"
        )
    bad = np.flatnonzero((probs < 0).any(axis=1) | (np.abs(probs.sum(axis=1) - 1) > 1e-4))
    if bad.size:
        raise ValueError(
            f"choice_probs row {bad[0]} = {probs[bad[0]].tolist()} is not a distribution over 3 pairs"
        )
    return probs


def random_split(n_triplets: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val) with ``val_fraction`` of the triplets in val."""
    order = np.random.default_rng(seed).permutation(n_triplets)
    n_val = int(round(val_fraction * n_triplets))
    if not 0 < n_val < n_triplets:
        raise ValueError(
            f"val_fraction={val_fraction} of {n_triplets} triplets leaves an empty train or val set"
        )
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def object_disjoint_split(
    triplets: np.ndarray, n_images: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) rows such that no val image appears in any train triplet.

    ``val_fraction`` is the fraction of *images* held out; triplets mixing held-out and training images
    are dropped, so val keeps about ``val_fraction**3`` and train ``(1 - val_fraction)**3`` of the triplets.
    """
    used = np.unique(triplets)
    n_val_images = int(round(val_fraction * used.size))
    held_out = np.zeros(n_images, dtype=bool)
    held_out[np.random.default_rng(seed).choice(used, size=n_val_images, replace=False)] = True
    in_val = held_out[triplets]
    train, val = np.flatnonzero(~in_val.any(axis=1)), np.flatnonzero(in_val.all(axis=1))
    if train.size == 0 or val.size == 0:
        raise ValueError(
            f"object-disjoint split with val_fraction={val_fraction} of {used.size} images leaves "
            f"{train.size} train and {val.size} val triplets; use a larger/smaller fraction or more triplets"
        )
    return train, val
