"""Losses against hand-computed values on tiny cases."""

import math

import pytest
import torch

from alignment.teacher_losses import (
    choice_nll,
    cosine_matrix,
    identity_regulariser,
    local_neighbourhood_loss,
    soft_triplet_kl,
)


def test_choice_nll_targets_pair_01():
    sims = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    # p01 = 2/4 for the first triplet, 1/3 for the second
    assert choice_nll(sims).item() == pytest.approx((math.log(2) + math.log(3)) / 2)
    # temperature 0.5 doubles the logits: p01 = 4/6
    assert choice_nll(sims[:1], temperature=0.5).item() == pytest.approx(-math.log(4 / 6))


def test_choice_nll_of_an_anchor_row_is_the_logistic_loss_of_close_over_far():
    sims = torch.tensor([[1.0, -0.5]])  # [s_hc, s_hf]
    assert choice_nll(sims, temperature=2.0).item() == pytest.approx(math.log1p(math.exp(-0.75)))


def test_soft_kl_is_zero_at_the_target_and_hand_computed_otherwise():
    q = torch.tensor([[0.5, 0.25, 0.25]])
    assert soft_triplet_kl(torch.tensor([[math.log(2.0), 0.0, 0.0]]), q).item() == pytest.approx(
        0.0, abs=1e-7
    )
    uniform = torch.zeros(1, 3)
    expected = 0.5 * math.log(0.5 * 3) + 2 * 0.25 * math.log(0.25 * 3)
    assert soft_triplet_kl(uniform, q).item() == pytest.approx(expected)


def test_soft_kl_with_one_hot_equals_hard_nll():
    sims = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    one_hot = torch.tensor([[1.0, 0.0, 0.0]]).repeat(5, 1)
    assert soft_triplet_kl(sims, one_hot).item() == pytest.approx(choice_nll(sims).item(), rel=1e-6)


def test_identity_regulariser_ignores_scale_and_counts_off_identity_mass():
    assert identity_regulariser(3.0 * torch.eye(4)).item() == 0.0
    w = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # mean diag 2 -> residual [[-1, 2], [0, 1]]
    assert identity_regulariser(w).item() == pytest.approx(1 + 4 + 0 + 1)


def test_local_loss_hand_computed_for_three_points():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cos = (ref / ref.norm(dim=1, keepdim=True)) @ (ref / ref.norm(dim=1, keepdim=True)).T
    expected = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        p = torch.softmax(cos[i, others], dim=0)
        expected += -(p * torch.log_softmax(cos[i, others], dim=0)).sum().item() / 3
    assert local_neighbourhood_loss(cos, cosine_matrix(ref)).item() == pytest.approx(expected, rel=1e-6)
    # rescaling keeps the neighbourhoods; swapping them costs more
    assert local_neighbourhood_loss(cos, cosine_matrix(ref * 5.0)).item() == pytest.approx(expected, rel=1e-6)
    shuffled = cosine_matrix(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    assert local_neighbourhood_loss(cos, shuffled).item() > expected
