"""Student distillation losses over one triplet's three pairs (AligNet §4.2), per triplet, no reduction.

Shapes: ``teacher`` and ``student`` are [B, 3] pair similarities ordered ``[s01, s02, s12]`` (odd one out
last). ``teacher`` is already divided by the teacher temperature, so ``softmax(teacher)`` is the target
distribution; ``student`` holds raw pair dot products of the triplet head, divided here by ``tau``.
Every function returns a [B] tensor so callers choose the reduction (the distributed loop sums and divides by
the global triplet count).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from alignment.conventions import HUMAN_PAIR


def _kl(p: Tensor, log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row; 0·log 0 = 0."""
    return (torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))).sum(dim=1)


def kl_loss(teacher: Tensor, student: Tensor, tau: float) -> Tensor:
    """KL(softmax(teacher) || softmax(student / tau)): the student matches the teacher's uncertainty."""
    log_p = teacher.log_softmax(dim=1)
    return _kl(log_p.exp(), log_p, (student / tau).log_softmax(dim=1))


def jsd_loss(teacher: Tensor, student: Tensor, tau: float) -> Tensor:
    """Jensen-Shannon divergence ½KL(p||m) + ½KL(q||m), m = (p+q)/2 (the released AligNet config)."""
    log_p = teacher.log_softmax(dim=1)
    log_q = (student / tau).log_softmax(dim=1)
    p, q = log_p.exp(), log_q.exp()
    log_m = ((p + q) / 2).clamp_min(torch.finfo(p.dtype).tiny).log()
    return 0.5 * _kl(p, log_p, log_m) + 0.5 * _kl(q, log_q, log_m)


def hard_label_loss(teacher: Tensor, student: Tensor, tau: float) -> Tensor:
    """Cross-entropy with pair (0, 1) as the label: -s01/tau + logsumexp(s/tau). Ignores teacher values."""
    del teacher  # rows are sorted so the teacher's most similar pair is (0, 1)
    logits = student / tau
    return torch.logsumexp(logits, dim=1) - logits[:, HUMAN_PAIR]


STUDENT_LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "kl": kl_loss,
    "jsd": jsd_loss,
    "hard": hard_label_loss,
}


def get_student_loss(name: str) -> Callable[[Tensor, Tensor, float], Tensor]:
    """Look up a loss by name, with a message listing the choices."""
    if name not in STUDENT_LOSSES:
        raise ValueError(f"unknown student loss {name!r}; expected one of {sorted(STUDENT_LOSSES)}")
    return STUDENT_LOSSES[name]
