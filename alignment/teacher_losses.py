"""Teacher losses as small typed functions (torch). Shapes: odd-one-out sims [m, 3] ordered [s01, s02, s12],
anchor sims [m, 2] ordered [s_hc, s_hf] (``alignment.conventions``).

In both the human-chosen pair is column 0 of ``sims``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignment.conventions import HUMAN_PAIR


def choice_nll(sims: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hard-label NLL of the human's pair: mean of -log softmax(sims / T)[HUMAN_PAIR]. Odd-one-out [m, 3] and
    anchor [m, 2] similarities alike (one choice model, see ``alignment.conventions``)."""
    return -F.log_softmax(sims / temperature, dim=1)[:, HUMAN_PAIR].mean()


def soft_triplet_kl(sims: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Uncertainty distillation: mean KL(q || p) from human choice distributions q [m, 3] to the model's p."""
    log_p = F.log_softmax(sims / temperature, dim=1)
    log_q = torch.where(target_probs > 0, target_probs.clamp_min(1e-30).log(), torch.zeros_like(target_probs))
    return (target_probs * (log_q - log_p)).sum(dim=1).mean()


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
