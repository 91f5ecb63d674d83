"""Teacher losses as small typed functions (torch). Shapes: odd-one-out sims [m, 3] ordered [s01, s02, s12],
anchor sims [m, 2] ordered [s_hc, s_hf] (``alignment.conventions``).

In both the human-chosen pair is column 0 of ``sims``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignment.conventions import HUMAN_PAIR


def _scaled(sims: torch.Tensor, temperature: float) -> torch.Tensor:
    """sims / T, without a pass over millions of sims (and its backward) when T is 1 (every fit step)."""
    return sims if temperature == 1.0 else sims / temperature


def choice_nll(sims: torch.Tensor, temperature: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Hard-label NLL of the human's pair: mean of -log softmax(sims / T)[HUMAN_PAIR]. Odd-one-out [m, 3] and
    anchor [m, 2] similarities alike (one choice model, see ``alignment.conventions``). ``dim=0``: the same
    loss of pair-major sims [3, m] (or [2, m]), which a fit uses because a softmax over 3 contiguous values
    per row is several times slower than one across m contiguous values per pair."""
    return -F.log_softmax(_scaled(sims, temperature), dim=dim).select(dim, HUMAN_PAIR).mean()


def target_log_target(target_probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """[m] sum_j q_j log q_j of human choice distributions q [m, 3] (0 log 0 = 0; ``dim=0``: q is [3, m]): the
    part of KL(q || p) that does not depend on the model, computed once per fit rather than once per step."""
    log_q = torch.where(target_probs > 0, target_probs.clamp_min(1e-30).log(), torch.zeros_like(target_probs))
    return (target_probs * log_q).sum(dim=dim)


def soft_triplet_kl(
    sims: torch.Tensor,
    target_probs: torch.Tensor,
    temperature: float = 1.0,
    q_log_q: torch.Tensor | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """Uncertainty distillation: mean KL(q || p) from human choice distributions q [m, 3] to the model's p.
    ``q_log_q``: ``target_log_target(target_probs, dim)`` when already known; ``dim=0``: pair-major [3, m]
    sims and q (see ``choice_nll``)."""
    log_p = F.log_softmax(_scaled(sims, temperature), dim=dim)
    q_log_q = target_log_target(target_probs, dim) if q_log_q is None else q_log_q
    return (q_log_q - (target_probs * log_p).sum(dim=dim)).mean()


def _off_diagonal_rows(matrix: torch.Tensor) -> torch.Tensor:
    """[B, B-1]: each row without its diagonal entry."""
    b = matrix.shape[0]
    return matrix.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """[B, B] cosine similarities between the rows of x."""
    unit = F.normalize(x, dim=1)
    return unit @ unit.T


def local_neighbourhood_loss(
    cos_reference: torch.Tensor, cos_transformed: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """gLocal's local term: keep each image's cosine-neighbourhood distribution of the backbone.

    Inputs are [B, B] cosine matrices (backbone, transformed). Per row, the cross-entropy
    H(softmax(cos_ref / tau), softmax(cos_new / tau)) over the other B-1 images, averaged.
    """
    target = F.softmax(_off_diagonal_rows(cos_reference) / tau, dim=1)
    return -(target * F.log_softmax(_off_diagonal_rows(cos_transformed) / tau, dim=1)).sum(dim=1).mean()


def identity_regulariser(weight: torch.Tensor) -> torch.Tensor:
    """||W - mean(diag W) I||_F^2: pull toward a scaled identity without constraining the scale."""
    eye = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return ((weight - weight.diagonal().mean() * eye) ** 2).sum()
