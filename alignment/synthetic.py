"""Synthetic triplet data with a planted linear map: the known answer for teacher tests and benchmarks.

Humans judge similarity in a k-dimensional latent space ``H`` (each latent factor weighted by its own
importance). Backbone features ``X`` contain the same factors with *different* weights, plus nuisance
variance orthogonal to them (isotropic, or with a power-law spectrum like real network features when
``nuisance_decay`` > 0) and a global offset, so raw features are a poor model of the choices while
an affine map of ``X`` recovers ``H`` exactly. Choices are sampled from softmax(H-similarities / T):
the planted model's accuracy is the best any teacher can expect, its entropy the planted uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignment.conventions import PAIRS, anchor_similarities, pair_similarities, triplet_probabilities


@dataclass(frozen=True)
class PlantedTriplets:
    features: np.ndarray  # [n, D] float32, what a backbone would give
    human_embedding: np.ndarray  # [n, k], the planted space humans judge in
    triplets: np.ndarray  # [m, 3], the (majority) sampled odd one out last
    choice_probs: np.ndarray  # [m, 3] empirical human choice distribution over pairs (responses per triplet)
    planted_probs: np.ndarray  # [m, 3] the generating model's choice distribution
    temperature: float


def _features(latent: np.ndarray, dim: int, feature_weights: np.ndarray, nuisance: float, decay: float, rng):
    """Signal on k random orthonormal directions; nuisance on the rest with a power-law spectrum."""
    n, k = latent.shape
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    signal = (latent * feature_weights) @ basis[:, :k].T
    spectrum = nuisance * np.arange(1, dim - k + 1) ** (-decay / 2)  # std of each nuisance direction
    noise = (rng.normal(size=(n, dim - k)) * spectrum) @ basis[:, k:].T
    return (signal + noise + 3.0).astype(np.float32)


def _random_triplets(n_images: int, n_triplets: int, rng) -> np.ndarray:
    if n_images < 3:
        raise ValueError(f"need at least 3 images for a triplet; got {n_images}")
    triplets = rng.integers(0, n_images, size=(n_triplets, 3))
    while True:
        clash = (
            (triplets[:, 0] == triplets[:, 1])
            | (triplets[:, 0] == triplets[:, 2])
            | (triplets[:, 1] == triplets[:, 2])
        )
        if not clash.any():
            return triplets.astype(np.int64)
        triplets[clash] = rng.integers(0, n_images, size=(int(clash.sum()), 3))


def _put_chosen_pair_first(triplets: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Reorder each triplet so its chosen pair is (0, 1) and the odd one out is last."""
    orders = np.array([[a, b, 3 - a - b] for a, b in PAIRS])
    return np.take_along_axis(triplets, orders[chosen], axis=1)


def planted_triplets(
    n_images: int,
    dim: int,
    n_triplets: int,
    *,
    latent_dim: int = 8,
    temperature: float = 4.0,
    nuisance: float = 0.5,
    nuisance_decay: float = 0.0,
    responses: int = 1,
    seed: int = 0,
) -> PlantedTriplets:
    """Sample features, a planted human space and ``responses`` choices per triplet (majority stored last)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_images, latent_dim))
    human_weights = np.linspace(2.0, 0.3, latent_dim)
    human = latent * human_weights
    features = _features(latent, dim, np.sqrt(human_weights[::-1]), nuisance, nuisance_decay, rng)
    triplets = _random_triplets(n_images, n_triplets, rng)
    probs = triplet_probabilities(pair_similarities(human, triplets), temperature)
    counts = np.stack([rng.multinomial(responses, p) for p in probs])
    majority = np.argmax(counts + rng.uniform(0, 0.5, size=counts.shape), axis=1)  # random tie-break
    ordered = _put_chosen_pair_first(triplets, majority)
    planted = triplet_probabilities(pair_similarities(human, ordered), temperature)
    empirical = _reorder_pair_columns(counts / responses, majority)
    return PlantedTriplets(features, human, ordered, empirical, planted, temperature)


def _reorder_pair_columns(pair_values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Pair columns of the original triplet order, rearranged for the triplet reordered by ``chosen``."""
    # new pairs after moving chosen pair first: chosen 0 -> (01,02,12); 1 -> (02,01,12); 2 -> (12,01,02)
    columns = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    return np.take_along_axis(pair_values, columns[chosen], axis=1)


def planted_anchor_rows(
    human_embedding: np.ndarray, n_rows: int, temperature: float, seed: int = 0
) -> np.ndarray:
    """Anchor rows (head, close, far) [n, 3] judged in the planted space by the same choice rule as the
    odd-one-out triplets: p(close) = softmax([s_hc, s_hf] / T)[0] (``alignment.conventions``)."""
    rng = np.random.default_rng(seed)
    rows = _random_triplets(len(human_embedding), n_rows, rng)
    probs = triplet_probabilities(anchor_similarities(human_embedding, rows), temperature)
    far_chosen_close = rng.random(n_rows) >= probs[:, 0]  # the second candidate was judged closer
    rows[far_chosen_close] = rows[far_chosen_close][:, [0, 2, 1]]
    return rows
