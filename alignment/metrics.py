"""Evaluation of embeddings on human odd-one-out triplets (raw features, teacher, student alike)."""

from __future__ import annotations

import numpy as np

from alignment.conventions import HUMAN_PAIR, predicted_pair


def expected_calibration_error(probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE over max-probability bins: sum_b (n_b / n) |accuracy_b - confidence_b|.

    A triplet is correct when pair (0, 1) is the unique most probable pair (ties are wrong).
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = predicted_pair(probs) == HUMAN_PAIR
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)
