"""Optimisation for the student: Adam with decay toward the initial weights, and warm-up + cosine schedule.

AligNet (kauldron ``decay_to_init``) updates θ ← θ − lr·(Adam(g) + λ·(θ − θ₀)), with θ₀ the pretrained
weights (and, for the new head, its random init). AdamW would decay toward zero instead, which destroys the
pretrained representation, hence this optimiser. θ₀ lives in the optimiser state, so resuming from a
checkpoint keeps pulling toward the original weights, not the resumed ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR


class DecayToInitAdam(torch.optim.Optimizer):
    """Adam (no bias-corrected weight decay) plus ``decay_to_init·(θ − θ₀)`` added before the lr scaling."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 3e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decay_to_init: float = 1.0,
    ):
        if lr < 0 or eps <= 0 or decay_to_init < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"invalid DecayToInitAdam settings lr={lr} betas={betas} eps={eps} "
                f"decay_to_init={decay_to_init}"
            )
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "decay_to_init": decay_to_init})
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param]["init"] = param.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):
        """One update; a parameter without a gradient still decays toward its initial value.

        θ ← θ − lr·λ·(θ − θ₀) is a lerp toward θ₀ with weight lr·λ; the Adam part is then added as in
        ``torch.optim.Adam`` (multi-tensor ops: few kernel launches, which matters on a shared CPU).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = group["params"]
            with_grad = [p for p in params if p.grad is not None]
            denominators, numerators, step_sizes = (
                self._adam_terms(with_grad, group) if with_grad else ([], [], [])
            )
            torch._foreach_lerp_(
                params, [self.state[p]["init"] for p in params], group["lr"] * group["decay_to_init"]
            )
            if with_grad:
                torch._foreach_addcdiv_(with_grad, numerators, denominators, step_sizes)
        return loss

    def _adam_terms(self, params: list[torch.Tensor], group: dict):
        """Update the moments; return (√v̂-style denominators, first moments, −lr/bias-correction) per
        tensor."""
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        for state, param in zip(states, params, strict=True):
            if "exp_avg" not in state:
                state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
            state["step"] += 1
        grads = [p.grad for p in params if p.grad is not None]  # `step` passes only parameters with one
        exp_avg, exp_avg_sq = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denominators, [math.sqrt(1 - beta2 ** s["step"]) for s in states])
        torch._foreach_add_(denominators, group["eps"])
        return denominators, exp_avg, [-group["lr"] / (1 - beta1 ** s["step"]) for s in states]


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """lr multiplier: linear ramp to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``.

    The shape of optax ``warmup_cosine_decay_schedule`` (the decay length includes the warm-up), except that
    the ramp is (step + 1)/(warmup + 1), so the first step already learns instead of using lr = 0.
    """
    if total_steps <= 0 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps; got {warmup_steps}, {total_steps}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> LambdaLR:
    """A LambdaLR applying :func:`warmup_cosine_factor` to every group's base lr (checkpointable)."""
    warmup_cosine_factor(0, total_steps, warmup_steps)  # validate now, not at the first step
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps))
