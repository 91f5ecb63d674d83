"""Decay-to-init Adam and the warm-up + cosine schedule."""

import math

import pytest
import torch

from alignment.student_optimiser import DecayToInitAdam, warmup_cosine_factor, warmup_cosine_schedule


def _moved_param(seed=0):
    generator = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(torch.randn(5, 3, generator=generator, dtype=torch.float64))
    return param


def test_zero_gradient_moves_exactly_toward_init_by_lr_lambda():
    param = _moved_param()
    theta0 = param.detach().clone()
    opt = DecayToInitAdam([param], lr=0.1, decay_to_init=0.5)
    with torch.no_grad():
        param.add_(
            torch.ones_like(param) * torch.arange(3, dtype=torch.float64)
        )  # θ − θ₀ = [0, 1, 2] per row
    before = param.detach().clone()
    param.grad = torch.zeros_like(param)
    opt.step()
    torch.testing.assert_close(param.detach(), before - 0.1 * 0.5 * (before - theta0), rtol=0, atol=1e-15)
    # a parameter without a gradient decays toward θ₀ the same way
    param.grad = None
    again = param.detach().clone()
    opt.step()
    torch.testing.assert_close(param.detach(), again - 0.05 * (again - theta0), rtol=0, atol=1e-15)


def test_without_decay_it_is_adam():
    ours, ref = _moved_param(), _moved_param()
    opt, ref_opt = DecayToInitAdam([ours], lr=0.01, decay_to_init=0.0), torch.optim.Adam([ref], lr=0.01)
    for step in range(5):
        grad = torch.sin(torch.arange(15, dtype=torch.float64).reshape(5, 3) + step)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours.detach(), ref.detach())


def test_initial_weights_survive_a_checkpoint():
    param = _moved_param()
    theta0 = param.detach().clone()
    opt = DecayToInitAdam([param], lr=0.1, decay_to_init=1.0)
    param.grad = torch.ones_like(param)
    opt.step()
    state = opt.state_dict()
    resumed_param = torch.nn.Parameter(param.detach().clone())
    resumed = DecayToInitAdam([resumed_param], lr=0.1, decay_to_init=1.0)  # would take the moved values as θ₀
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.state[resumed_param]["init"], theta0)


def test_warmup_then_cosine_to_zero():
    total, warmup = 110, 10
    factors = [warmup_cosine_factor(s, total, warmup) for s in range(total + 1)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert (
        factors[10] == 1.0
        and factors[60] == pytest.approx(0.5)
        and factors[110] == pytest.approx(0.0, abs=1e-12)
    )
    assert all(a <= b for a, b in zip(factors[:10], factors[1:11], strict=True))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert warmup_cosine_factor(35, total, warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_schedule_drives_the_optimizer_lr():
    opt = DecayToInitAdam([_moved_param()], lr=2.0)
    schedule = warmup_cosine_schedule(opt, total_steps=4, warmup_steps=1)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs == pytest.approx([1.0, 2.0, 2 * 0.75, 2 * 0.25])


@pytest.mark.parametrize("total,warmup", [(0, 0), (10, 10), (10, -1)])
def test_bad_schedule_is_refused(total, warmup):
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        warmup_cosine_factor(0, total, warmup)
