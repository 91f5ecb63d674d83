"""Fitting the softmax temperature of triplet choice probabilities on validation triplets."""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from alignment.conventions import HUMAN_PAIR, entropy, triplet_probabilities

LOG_T_RANGE = (np.log(1e-4), np.log(1e4))


def human_targets(n_triplets: int, choice_probs: np.ndarray | None) -> np.ndarray:
    """Choice distributions [m, 3]; one-hot on pair (0, 1) where only the stored choice is known."""
    if choice_probs is not None:
        return np.asarray(choice_probs, dtype=np.float64)
    targets = np.zeros((n_triplets, 3))
    targets[:, HUMAN_PAIR] = 1.0
    return targets


def cross_entropy(sims: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean -sum q log p(T) over rows of any number of candidate pairs: an unbiased estimate of calibration
    loss even with one response per triplet."""
    logits = sims / temperature
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return float(-(targets * log_p).sum(axis=1).mean())


def fit_temperature(
    sims: np.ndarray,
    choice_probs: np.ndarray | None,
    method: str = "nll",
    anchor_sims: np.ndarray | None = None,
) -> float:
    """Temperature T for ``softmax(sims / T)`` (odd-one-out sims [m, 3]; anchor sims [m_a, 2], same T).

    ``"nll"``: minimise the cross-entropy to the human choices (hard or soft) on these judgments, each
    triplet and each anchor row counted once.
    ``"entropy"``: make the mean model entropy equal the mean entropy of ``choice_probs`` (triplets only).
    """
    sims = np.asarray(sims, dtype=np.float64).reshape(-1, 3)
    targets = human_targets(len(sims), choice_probs)
    if method == "nll":
        return _nll_temperature(sims, targets, anchor_sims)
    if method == "entropy":
        if choice_probs is None:
            raise ValueError(
                "temperature_fit='entropy' needs human choice distributions (choice_probs) on val"
            )
        return _entropy_matched_temperature(sims, entropy(targets).mean())
    raise ValueError(f"temperature method must be 'nll' or 'entropy'; got {method!r}")


def _nll_temperature(sims: np.ndarray, targets: np.ndarray, anchor_sims: np.ndarray | None) -> float:
    """The temperature of least cross-entropy to the human choices, each triplet and anchor row once."""
    blocks = [(sims, targets)] if len(sims) else []
    if anchor_sims is not None and len(anchor_sims):
        anchor_targets = np.zeros((len(anchor_sims), 2))
        anchor_targets[:, HUMAN_PAIR] = 1.0
        blocks.append((np.asarray(anchor_sims, dtype=np.float64), anchor_targets))
    total = sum(len(b[0]) for b in blocks)

    def loss(log_t: float) -> float:
        t = float(np.exp(log_t))
        return sum(len(s) * cross_entropy(s, q, t) for s, q in blocks) / total

    return float(np.exp(minimize_scalar(loss, bounds=LOG_T_RANGE, method="bounded").x))


def _entropy_matched_temperature(sims: np.ndarray, goal: float) -> float:
    """The temperature at which the model's mean choice entropy equals `goal` (the nearer end of
    LOG_T_RANGE when no temperature reaches it)."""

    def gap(log_t: float) -> float:
        return float(entropy(triplet_probabilities(sims, float(np.exp(log_t)))).mean() - goal)

    low, high = LOG_T_RANGE
    if gap(low) >= 0 or gap(high) <= 0:  # the goal lies outside what any temperature can reach
        return float(np.exp(low if gap(low) >= 0 else high))
    return float(np.exp(brentq(gap, low, high, xtol=1e-6)))
