"""Active triplet selection: ask people the triplets the current teacher knows least about.

A *pool* of candidate triplets (odd-one-out rows ``(i, j, k)`` or anchor rows ``(head, close, far)``, the
conventions of ``alignment.conventions``) is scored by one or more *members*: aligned embeddings, each with
its temperature, whose choice distributions are the softmax of the candidates' dot similarities over the
temperature (the teacher's own likelihood). The strategies:

- ``uncertainty``: the predictive entropy of the members' mean choice distribution (one member: the
  teacher's entropy). High where the teacher cannot tell which pair people will pick.
- ``disagreement``: the mutual information between a triplet's answer and which member is right,
  ``H(mean p) - mean H(p)`` (BALD over bootstrap teachers; with two members, teacher vs raw backbone, it is
  their Jensen-Shannon divergence). High where the members disagree, zero where they agree -- even when they
  agree that the answer is a coin flip, which is noise in the people, not something a teacher can learn.
- ``information``: expected information gain proper -- BALD, the mutual information between a triplet's
  answer and the teacher's parameters, ``H[mean_k p_k] - mean_k H[p_k]`` over ``samples`` teachers drawn
  from an approximate posterior around the fitted one (``laplace_samples``). A triplet people answer as a
  coin flip (high aleatoric entropy) scores ~0 when every plausible teacher agrees it is a coin flip; one
  whose answer depends on what the answers so far leave undetermined scores high. The posterior is a
  Laplace approximation, chosen for cost (no refit: one r x r solve and ``samples`` passes over the pool):
  the fitted teacher's similarities get a symmetric metric perturbation on its top ``axes`` (8) principal
  axes, ``s_ij(D) = s_ij + y_i^T D y_j`` (``y``: the aligned images on those axes; D = 0 is the fitted
  teacher; 36 free entries), with a prior ``D_ab ~ N(0, prior_sd^2)`` and the Fisher (generalised
  Gauss-Newton) information of the asked triplets at the fit, ``sum_t J_t^T (diag p_t - p_t p_t^T) J_t /
  T^2`` (``J_t``: d s / d D for the triplet's pairs). It depends on which triplets were asked, not on how
  they were answered, so it needs no labels; the teacher's other directions are taken as known. (A
  diagonal re-weighting of 16 axes, and the metric on 16 or 32 axes, did no better on the planted replay;
  full bootstrap refits -- ``bench.active_design``'s ``bald`` -- cost a fit per teacher and did worse.)
- ``random``: every candidate scores 0; the batch is a uniform sample of the pool.

Scores do not depend on the order of a candidate's items (each pair's similarity and the softmax are
symmetric), so stored answers in a replayed pool leak nothing into the choice.

A batch (``select_batch``) keeps a fixed share of uniformly drawn candidates (default 20 %) for unbiased
evaluation, then takes the highest-scoring candidates under the *decorrelation rule*: a candidate is
skipped when it shares an image with a triplet already in the batch (each image at most ``max_image_uses``
times per batch, 1 unless the batch needs more images than the pool has), or when the plane its
differences span in the embedding (``z_j - z_i``, ``z_k - z_i``) overlaps a chosen triplet's plane by more
than ``max_direction_overlap`` (mean squared cosine of the principal angles, 1 = the same plane): two such
triplets ask the same question. Every chosen triplet carries why (score, strategy, teacher run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from alignment.conventions import (
    ANCHOR_PAIRS,
    PAIRS,
    anchor_similarities,
    check_triplets,
    entropy,
    pair_similarities,
    triplet_probabilities,
)

STRATEGIES = ("random", "uncertainty", "disagreement", "information")
RANDOM = "random"
Kind = Literal["triplet", "anchor"]


def compact(embedding: np.ndarray) -> np.ndarray:
    """An embedding with the same dot products (hence the same choice distributions and plane overlaps) in
    at most n dimensions: a pool of m candidates then gathers [m, n] rows instead of [m, D] when the images
    are fewer than the dimensions (85 shoes in 1,280 backbone dimensions)."""
    z = np.asarray(embedding, dtype=np.float64)
    if len(z) >= z.shape[1]:
        return z
    values, vectors = np.linalg.eigh(z @ z.T)
    return vectors * np.sqrt(np.maximum(values, 0.0))


@dataclass(frozen=True)
class Member:
    """One scorer: an aligned embedding [n, D] (rows = the pool's indices) and its temperature."""

    embedding: np.ndarray
    temperature: float

    def probabilities(self, pool: np.ndarray, kind: Kind) -> np.ndarray:
        """Choice distributions over the candidate pairs of each pool row: [m, 3] triplets, [m, 2] anchors."""
        similarities = anchor_similarities if kind == "anchor" else pair_similarities
        return triplet_probabilities(similarities(compact(self.embedding), pool, "dot"), self.temperature)


@dataclass(frozen=True)
class ChosenTriplet:
    """A triplet picked for asking, with the reason it was picked."""

    triplet: tuple[int, int, int]
    pool_index: int  # row of the candidate pool
    score: float  # the strategy's score (0 for the random share)
    strategy: str  # the strategy that picked it: "random" for the random share
    teacher_run: str  # which fitted teacher scored it ("" when none did)

    def reason(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("triplet", "pool_index")}


def backbone_member(teacher: Member, features: np.ndarray, pool, kind: Kind = "triplet") -> Member:
    """The raw backbone as a scorer beside the teacher: its dot similarities have no fitted temperature, so
    they are given the teacher's spread over the pool (temperature scaled by the ratio of the similarities'
    standard deviations); what remains is where the two *order* the pairs differently."""
    similarities = anchor_similarities if kind == "anchor" else pair_similarities
    rows = check_triplets(pool, len(features), kind)
    raw_spread = similarities(compact(features), rows, "dot").std()
    teacher_spread = similarities(compact(teacher.embedding), rows, "dot").std()
    return Member(features, teacher.temperature * max(float(raw_spread / max(teacher_spread, 1e-12)), 1e-12))


def predictive_entropy(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Entropy (nats) of the members' mean choice distribution per candidate."""
    return entropy(np.mean(np.stack(member_probs), axis=0))


def disagreement(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """BALD / generalised Jensen-Shannon divergence: entropy of the mean minus the mean entropy (>= 0)."""
    if len(member_probs) < 2:
        raise ValueError(
            f"disagreement needs at least 2 members (bootstrap teachers, or teacher and backbone); "
            f"got {len(member_probs)}"
        )
    mean_entropy = np.mean([entropy(p) for p in member_probs], axis=0)
    return np.maximum(predictive_entropy(member_probs) - mean_entropy, 0.0)


@dataclass(frozen=True)
class Posterior:
    """The Laplace posterior of ``information`` (see the module docstring): on how many principal axes of the
    teacher the metric is perturbed, the prior sd of each metric entry (1 = the size of the similarities
    themselves), and how many teachers are drawn from it (seeded, so a pool scores the same every time)."""

    axes: int = 8
    prior_sd: float = 1.0
    samples: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.axes < 1 or self.prior_sd <= 0 or self.samples < 2:
            raise ValueError(
                f"Posterior needs axes >= 1, prior_sd > 0 and samples >= 2; got {self.axes}, "
                f"{self.prior_sd}, {self.samples}"
            )


def _pair_products(axes: np.ndarray, rows: np.ndarray, kind: Kind) -> np.ndarray:
    """[m, C, r(r+1)/2]: d s_ij / d M_ab for each candidate pair and each entry a <= b of the symmetric
    metric perturbation, ``y_ia y_jb + y_ib y_ja`` (``y_ia y_ja`` on the diagonal)."""
    pairs = ANCHOR_PAIRS if kind == "anchor" else PAIRS
    r = axes.shape[1]
    upper = np.triu_indices(r)
    products = []
    for a, b in pairs:
        outer = np.einsum("mr,ms->mrs", axes[rows[:, a]], axes[rows[:, b]])
        symmetric = outer + outer.transpose(0, 2, 1)
        symmetric[:, np.arange(r), np.arange(r)] /= 2
        products.append(symmetric[:, upper[0], upper[1]])
    return np.stack(products, axis=1)


def laplace_samples(
    teacher: Member, pool: np.ndarray, asked: np.ndarray, kind: Kind = "triplet", posterior=Posterior()
) -> list[np.ndarray]:
    """Choice distributions over ``pool`` of ``posterior.samples`` teachers drawn from the Laplace posterior
    around ``teacher`` given the ``asked`` rows (module docstring): one [m, C] array per drawn teacher."""
    z = compact(teacher.embedding)
    u, singular, _ = np.linalg.svd(z, full_matrices=False)
    axes = u[:, : posterior.axes] * singular[: posterior.axes]
    similarities = anchor_similarities if kind == "anchor" else pair_similarities
    asked = check_triplets(asked, len(z), kind)
    jacobian = _pair_products(axes, asked, kind)
    p = triplet_probabilities(similarities(z, asked, "dot"), teacher.temperature)
    expected = np.einsum("mc,mcr->mr", p, jacobian)
    fisher = np.einsum("mc,mcr,mcs->rs", p, jacobian, jacobian) - expected.T @ expected
    precision = fisher / teacher.temperature**2 + np.eye(jacobian.shape[2]) / posterior.prior_sd**2
    cholesky = np.linalg.cholesky(precision)  # a draw L^-T e has covariance precision^-1
    noise = np.random.default_rng(posterior.seed).standard_normal((jacobian.shape[2], posterior.samples))
    shifts = np.linalg.solve(cholesky.T, noise)  # [r, K]
    base = similarities(z, pool, "dot")
    products = _pair_products(axes, pool, kind)
    return [triplet_probabilities(base + products @ shift, teacher.temperature) for shift in shifts.T]


def score_pool(
    strategy: str,
    pool,
    members: Sequence[Member],
    kind: Kind = "triplet",
    *,
    asked=None,
    posterior: Posterior = Posterior(),
) -> np.ndarray:
    """Each candidate's score under ``strategy`` (higher = more worth asking). ``information`` scores with
    the first member (the teacher) and needs ``asked``: the rows answered so far (an empty array: none)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    if strategy == RANDOM:
        return np.zeros(len(pool))
    if not members:
        raise ValueError(f"strategy {strategy!r} needs at least one scoring member (a fitted teacher)")
    pool = check_triplets(pool, len(members[0].embedding), kind)
    if strategy == "information":
        if asked is None:
            raise ValueError("strategy 'information' needs the asked rows (the teacher's answered triplets)")
        return disagreement(laplace_samples(members[0], pool, asked, kind, posterior))
    probs = [member.probabilities(pool, kind) for member in members]
    return predictive_entropy(probs) if strategy == "uncertainty" else disagreement(probs)


def _plane(embedding: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Orthonormal basis [D, 2] of the plane spanned by a row's differences from its first item."""
    z = np.asarray(embedding[row], dtype=np.float64)
    basis, _ = np.linalg.qr(np.stack([z[1] - z[0], z[2] - z[0]], axis=1))
    return basis


def plane_overlap(plane: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Mean squared cosine of the principal angles between ``plane`` [D, 2] and each of ``others``
    [k, D, 2]: 1 for the same plane, 0 for orthogonal ones."""
    if not len(others):
        return np.zeros(0)
    cross = np.einsum("da,kdb->kab", plane, others)
    return (cross**2).sum(axis=(1, 2)) / 2


@dataclass(frozen=True)
class BatchRule:
    """How a batch is put together (see the module docstring)."""

    random_share: float = 0.2
    max_direction_overlap: float = 0.9

    def __post_init__(self):
        if not 0 <= self.random_share <= 1 or not 0 < self.max_direction_overlap <= 1:
            raise ValueError(
                "BatchRule needs 0 <= random_share <= 1 and 0 < max_direction_overlap <= 1; got "
                f"{self.random_share}, {self.max_direction_overlap}"
            )


def max_image_uses(n: int, pool: np.ndarray) -> int:
    """Uses of one image allowed per batch: 1, or as few more as a batch of ``n`` needs from the pool's
    images."""
    n_images = len(np.unique(pool))
    return max(1, int(np.ceil(3 * n / max(n_images, 1))))


def select_batch(
    pool,
    scores: np.ndarray,
    n: int,
    *,
    strategy: str,
    rng: np.random.Generator,
    rule: BatchRule = BatchRule(),
    embedding: np.ndarray | None = None,
    teacher_run: str = "",
) -> list[ChosenTriplet]:
    """``n`` candidates of ``pool`` to ask next: the random share first (uniform over the pool), then the
    highest ``scores`` under the decorrelation rule (the direction check needs ``embedding``). Fewer than
    ``n`` only when the pool has fewer candidates: when too few pass the rule, the batch is completed
    with the best of the rest rather than returned short."""
    pool = np.asarray(pool, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if pool.ndim != 2 or pool.shape[1] != 3 or len(scores) != len(pool):
        raise ValueError(f"pool must be [m, 3] with one score per row; got {pool.shape} and {scores.shape}")
    n = min(n, len(pool))
    n_random = n if strategy == RANDOM else int(round(rule.random_share * n))
    random_rows = rng.choice(len(pool), size=n_random, replace=False)
    chosen = [_chosen(pool, r, 0.0, RANDOM, teacher_run) for r in random_rows]
    if n_random < n:
        taken = set(random_rows.tolist())
        order = [r for r in np.lexsort((rng.random(len(pool)), -scores)) if r not in taken]
        limit = max_image_uses(n, pool)
        compacted = None if embedding is None else compact(embedding)
        picked = _decorrelated(pool, random_rows, order, n - n_random, rule, compacted, limit)
        chosen += [_chosen(pool, r, scores[r], strategy, teacher_run) for r in picked]
    return chosen


def _chosen(pool: np.ndarray, row: int, score: float, strategy: str, run: str) -> ChosenTriplet:
    i, j, k = (int(x) for x in pool[row])
    return ChosenTriplet((i, j, k), int(row), float(score), strategy, run)


def _decorrelated(
    pool: np.ndarray,
    already: np.ndarray,
    order: list[int],
    n: int,
    rule: BatchRule,
    embedding: np.ndarray | None,
    image_limit: int,
) -> list[int]:
    """The first ``n`` rows of ``order`` that pass the rule against the batch so far (``already``: the
    random share, which is drawn blind to keep it unbiased); if too few pass, the best of the rest."""
    uses: Counter[int] = Counter(pool[already].ravel().tolist())
    planes = [_plane(embedding, pool[row]) for row in already] if embedding is not None else []
    picked: list[int] = []
    for row in order:
        if len(picked) == n:
            return picked
        if any(uses[i] >= image_limit for i in pool[row]):
            continue
        if embedding is not None:
            plane = _plane(embedding, pool[row])
            overlaps = plane_overlap(plane, np.asarray(planes).reshape(-1, *plane.shape))
            if (overlaps > rule.max_direction_overlap).any():
                continue
            planes.append(plane)
        picked.append(row)
        uses.update(pool[row].tolist())
    kept = set(picked)
    return picked + [row for row in order if row not in kept][: n - len(picked)]
