"""The triplet convention, stated once, and the odd-one-out likelihood every other module uses.

Convention (matches db/models.py and the THINGS/gLocal/AligNet code):
- a triplet is three row indices ``(i, j, k)`` into a feature matrix, the human's odd one out LAST;
- pair similarities are ordered ``[s01, s02, s12]`` (``PAIRS``), so the human choice is pair (0, 1),
  i.e. column ``HUMAN_PAIR == 0``;
- choice distributions over the three pairs use the same order: ``[p(pair 01), p(pair 02), p(pair 12)]``,
  which is the probability that item 2, 1, 0 (``ODD_ITEM_OF_PAIR``) is the odd one out;
- a prediction counts as correct only if pair (0, 1) is the unique most similar pair: ties are wrong.

Anchor judgments (2AFC, e.g. salmon/NEXT, Zappos) are rows ``(head, close, far)``: the human judged
``s(head, close) > s(head, far)``. Their similarities are ordered ``[s_hc, s_hf]`` (``ANCHOR_PAIRS``), so the
human choice is column ``HUMAN_PAIR == 0`` here too, and a prediction is correct only if ``s_hc > s_hf``
strictly. Both kinds are one choice model (Luce): the probability of a candidate pair is the softmax of the
candidates' similarities divided by one temperature T -- over three pairs for an odd-one-out triplet, over
two for an anchor triplet, where ``p(close) = sigmoid((s_hc - s_hf) / T)``. One embedding and one temperature
therefore describe both kinds, and the teacher fits them in one likelihood.

The functions accept numpy arrays or torch tensors and return the same kind, so the teacher's
training losses and the evaluation metrics share one definition of "similarity of pair (a, b)".
"""

from __future__ import annotations

from typing import Literal

import numpy as np

PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
ODD_ITEM_OF_PAIR: tuple[int, ...] = (2, 1, 0)  # the item not in PAIRS[c]
HUMAN_PAIR = 0  # the odd one out is stored last, so the chosen most-similar pair is (0, 1)
ANCHOR_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (0, 2))  # (head, close), (head, far)
Similarity = Literal["dot", "cosine"]


def check_triplets(triplets, n_items: int, kind: Literal["triplet", "anchor"] = "triplet") -> np.ndarray:
    """Return odd-one-out triplets (or anchor rows, ``kind="anchor"``) as an int64 [m, 3] array, raising
    ValueError naming the first bad row."""
    arr = np.asarray(triplets)
    layout = "(odd one out last)" if kind == "triplet" else "(head, close, far)"
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{kind}s must have shape [m, 3] {layout}; got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{kind}s must be integer row indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = np.flatnonzero(((arr < 0) | (arr >= n_items)).any(axis=1))
    if bad.size:
        raise ValueError(f"{kind} row {bad[0]} = {arr[bad[0]].tolist()} indexes outside [0, {n_items})")
    repeated = np.flatnonzero((arr[:, 0] == arr[:, 1]) | (arr[:, 0] == arr[:, 2]) | (arr[:, 1] == arr[:, 2]))
    if repeated.size:
        raise ValueError(f"{kind} row {repeated[0]} = {arr[repeated[0]].tolist()} repeats an item")
    return arr


def _normalise_rows(z):
    if isinstance(z, np.ndarray):
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    import torch.nn.functional as F

    return F.normalize(z, dim=1)


def _stack(columns):
    if isinstance(columns[0], np.ndarray):
        return np.stack(columns, axis=1)
    import torch

    return torch.stack(columns, dim=1)


# rows of judgments whose embeddings are gathered at once: a pair's gather is [rows, D], so 200k held-out
# THINGS triplets at D = 512 would otherwise hold ~1.2 GB for one product
SIMILARITY_CHUNK_ROWS = 16_384


def _concat(parts):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def _similarities(z, rows, pairs, similarity: Similarity):
    if similarity not in ("dot", "cosine"):
        raise ValueError(f"similarity must be 'dot' or 'cosine'; got {similarity!r}")
    if similarity == "cosine":
        z = _normalise_rows(z)
    if _gram_is_cheaper(z, rows):
        gram = z @ z.T
        return _stack([gram[rows[:, a], rows[:, b]] for a, b in pairs])
    if len(rows) > SIMILARITY_CHUNK_ROWS:
        return _concat(
            [
                _similarities(z, rows[start : start + SIMILARITY_CHUNK_ROWS], pairs, "dot")
                for start in range(0, len(rows), SIMILARITY_CHUNK_ROWS)
            ]
        )
    return _stack([(z[rows[:, a]] * z[rows[:, b]]).sum(-1) for a, b in pairs])


def _gram_is_cheaper(z, rows) -> bool:
    """Many rows over few images (a training step: hundreds of triplets over ~100 images): one n x n matrix
    product, then lookups, instead of gathering 2 x pairs x rows embedding vectors (and scattering their
    gradients back). The same dot products up to float rounding."""
    n, dim = z.shape
    return n <= _GRAM_MAX_IMAGES and n * n <= len(rows) * dim


_GRAM_MAX_IMAGES = 2048


def pair_similarities(z, triplets, similarity: Similarity = "dot"):
    """[m, 3] similarities ``[s01, s02, s12]`` of each triplet's pairs in embedding ``z`` [n, D]."""
    return _similarities(z, triplets, PAIRS, similarity)


def anchor_similarities(z, anchors, similarity: Similarity = "dot"):
    """[m, 2] similarities ``[s_hc, s_hf]`` of each anchor row (head, close, far) in embedding ``z``."""
    return _similarities(z, anchors, ANCHOR_PAIRS, similarity)


def triplet_probabilities(sims, temperature: float = 1.0):
    """Softmax over the candidate pairs of ``sims / temperature``: p(pair c is the most similar). Odd-one-out
    sims [m, 3] or anchor sims [m, 2] alike (one temperature convention, see the module docstring)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if isinstance(sims, np.ndarray):
        logits = sims / temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        expd = np.exp(logits)
        return expd / expd.sum(axis=1, keepdims=True)
    return (sims / temperature).softmax(dim=1)


def predicted_pair(sims: np.ndarray) -> np.ndarray:
    """Index of the most similar pair per triplet, or -1 where the maximum is not unique (a tie)."""
    sims = np.asarray(sims)
    top = sims.max(axis=1, keepdims=True)
    unique = (sims == top).sum(axis=1) == 1
    return np.where(unique, sims.argmax(axis=1), -1)


def predicted_odd_one_out(sims: np.ndarray) -> np.ndarray:
    """Position (0, 1, 2) of the predicted odd one out per triplet, -1 for ties."""
    pair = predicted_pair(sims)
    return np.where(pair >= 0, np.asarray(ODD_ITEM_OF_PAIR)[np.maximum(pair, 0)], -1)


def correct_choices(sims: np.ndarray) -> np.ndarray:
    """Bool per row: the human's pair (column 0: pair (0, 1) of a triplet, (head, close) of an anchor row) is
    the strict, unique maximum (ties count as wrong)."""
    return predicted_pair(sims) == HUMAN_PAIR


def entropy(probs):
    """Shannon entropy (nats) of each row of a [m, 3] probability array."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -terms.sum(axis=1)


def odd_one_out_counts_to_pair_probs(counts: np.ndarray) -> np.ndarray:
    """Per-triplet counts of "item 0/1/2 chosen as odd one out" as pair probabilities [p01, p02, p12]."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != 3 or (counts < 0).any():
        raise ValueError(f"counts must be a non-negative [m, 3] array; got shape {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    if (totals == 0).any():
        raise ValueError(f"triplet row {int(np.flatnonzero(totals[:, 0] == 0)[0])} has no responses")
    return counts[:, list(ODD_ITEM_OF_PAIR)] / totals
