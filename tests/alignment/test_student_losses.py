"""Student losses match hand-computed values (AligNet §4.2 forms), per triplet."""

import math

import pytest
import torch

from alignment.student_losses import get_student_loss, hard_label_loss, jsd_loss, kl_loss

# teacher distribution p = [1/2, 1/4, 1/4]; student q = softmax(student / tau) = [1/4, 1/2, 1/4] with tau = 2
TAU = 2.0
TEACHER = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]], dtype=torch.float64))
STUDENT = TAU * torch.log(torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]], dtype=torch.float64)) + 7.0


def test_kl_by_hand():
    # KL(p||q) = 1/2 ln 2 + 1/4 ln 1/2 + 0 = ln2 / 4; identical distributions give 0
    expected = torch.tensor([math.log(2) / 4, 0.0], dtype=torch.float64)
    torch.testing.assert_close(kl_loss(TEACHER, STUDENT, TAU), expected)


def test_jsd_by_hand():
    # m = [3/8, 3/8, 1/4]; KL(p||m) = KL(q||m) = 1/2 ln(4/3) + 1/4 ln(2/3)
    half = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3)
    torch.testing.assert_close(
        jsd_loss(TEACHER, STUDENT, TAU), torch.tensor([half, 0.0], dtype=torch.float64)
    )
    assert half == pytest.approx(0.0424755, abs=1e-6)


def test_hard_label_is_cross_entropy_on_pair_01_and_ignores_teacher_values():
    # -log q(pair 01): q01 = 1/4 in row 0, 1/2 in row 1
    expected = torch.tensor([math.log(4), math.log(2)], dtype=torch.float64)
    torch.testing.assert_close(hard_label_loss(TEACHER, STUDENT, TAU), expected)
    torch.testing.assert_close(hard_label_loss(TEACHER.flip(1), STUDENT, TAU), expected)


def test_temperature_scales_student_logits_only():
    # with tau = 1 the same student values are a sharper distribution: the KL changes
    assert not torch.allclose(kl_loss(TEACHER, STUDENT, 1.0), kl_loss(TEACHER, STUDENT, TAU))
    # a constant shift of the teacher logits does not change its softmax
    torch.testing.assert_close(kl_loss(TEACHER + 3.0, STUDENT, TAU), kl_loss(TEACHER, STUDENT, TAU))


def test_gradient_raises_the_target_pair():
    student = STUDENT.clone().requires_grad_(True)
    for name in ("kl", "jsd", "hard"):
        student.grad = None
        get_student_loss(name)(TEACHER, student, TAU)[0].backward()
        assert student.grad[0, 0] < 0 < student.grad[0, 1], name  # descent increases s01, decreases s02


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="'hard', 'jsd', 'kl'"):
        get_student_loss("mse")
