"""Judgment containers and train/validation splits: random, object-disjoint, and k image folds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _no_rows() -> np.ndarray:
    return np.empty((0, 3), dtype=np.int64)


@dataclass(frozen=True)
class TripletData:
    """The judgments one teacher is fitted or checked on, as row indices into one feature matrix:
    odd-one-out ``triplets`` [m, 3] (odd one out last) with optional human choice distributions
    ``choice_probs`` [m, 3], and ``anchors`` [m_a, 3] (head, close, far); either kind may be empty."""

    triplets: np.ndarray = field(default_factory=_no_rows)
    choice_probs: np.ndarray | None = None
    anchors: np.ndarray = field(default_factory=_no_rows)

    def subset(self, rows: np.ndarray, anchor_rows: np.ndarray | None = None) -> TripletData:
        """Some triplets (and some anchor rows: none when not given)."""
        probs = None if self.choice_probs is None else self.choice_probs[rows]
        anchors = self.anchors[anchor_rows] if anchor_rows is not None else _no_rows()
        return TripletData(self.triplets[rows], probs, anchors)

    def within(self, images: np.ndarray) -> TripletData:
        """The judgments made only of images where the boolean mask ``images`` [n_images] is True."""
        return self.subset(
            np.flatnonzero(images[self.triplets].all(axis=1)),
            np.flatnonzero(images[self.anchors].all(axis=1)),
        )

    def images(self) -> np.ndarray:
        """The distinct image rows either kind uses (sorted)."""
        return np.unique(np.concatenate([self.triplets.ravel(), self.anchors.ravel()]))

    def __len__(self) -> int:
        return len(self.triplets) + len(self.anchors)


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


def random_data_split(data: TripletData, val_fraction: float, seed: int) -> tuple[TripletData, TripletData]:
    """(train, val) with ``val_fraction`` of each kind's rows in val (seen images on both sides)."""
    parts = [
        random_split(len(rows), val_fraction, seed + kind) if len(rows) else (np.arange(0), np.arange(0))
        for kind, rows in enumerate((data.triplets, data.anchors))
    ]
    (train_t, val_t), (train_a, val_a) = parts
    return data.subset(train_t, train_a), data.subset(val_t, val_a)


def object_disjoint_split(
    data: TripletData, n_images: int, val_fraction: float, seed: int
) -> tuple[TripletData, TripletData]:
    """(train, val) such that no val image appears in any train judgment.

    ``val_fraction`` is the fraction of *images* held out; judgments mixing held-out and training images
    are dropped, so val keeps about ``val_fraction**3`` and train ``(1 - val_fraction)**3`` of them.
    """
    used = data.images()
    held_out = np.zeros(n_images, dtype=bool)
    held_out[
        np.random.default_rng(seed).choice(used, size=int(round(val_fraction * used.size)), replace=False)
    ] = True
    train, val = data.within(~held_out), data.within(held_out)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"object-disjoint split with val_fraction={val_fraction} of {used.size} images leaves "
            f"{len(train)} train and {len(val)} val judgments; use a larger/smaller fraction or more "
            "judgments"
        )
    return train, val


def image_folds(
    data: TripletData, n_images: int, k: int, seed: int
) -> list[tuple[TripletData, TripletData, np.ndarray]]:
    """k object-disjoint folds: the used images are dealt into k groups at random; fold f validates on the
    judgments made only of group f and trains on those with no image of group f (mixed ones are dropped in
    that fold). Returns (train, val, val image rows) per fold; no image is ever on both sides of a fold."""
    used = data.images()
    if k < 2 or used.size < 3 * k:
        raise ValueError(
            f"{k} image folds need k >= 2 and at least {3 * k} images; the judgments use {used.size}"
        )
    group = np.full(n_images, -1)
    group[np.random.default_rng(seed).permutation(used)] = np.arange(used.size) % k
    return [
        (data.within((group != f) & (group >= 0)), data.within(group == f), np.flatnonzero(group == f))
        for f in range(k)
    ]
