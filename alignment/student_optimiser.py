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
from torch.optim.adam import adam
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

        θ ← θ − lr·λ·(θ − θ₀) is a lerp toward θ₀ with weight lr·λ; the Adam part does not depend on θ, so it
        is then applied by torch's own Adam kernel (fused where the device has one, else multi-tensor ops):
        the same arithmetic as ``torch.optim.Adam`` and, on a 2-core CPU, several times faster than
        assembling it from separate multi-tensor ops.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = group["params"]
            torch._foreach_lerp_(
                params, [self.state[p]["init"] for p in params], group["lr"] * group["decay_to_init"]
            )
            with_grad = [p for p in params if p.grad is not None]
            if with_grad:
                self._adam(with_grad, group)
        return loss

    def _adam(self, params: list[torch.Tensor], group: dict) -> None:
        """torch's functional Adam (no weight decay, no amsgrad) on ``params``, moments kept in our state."""
        states = [self.state[p] for p in params]
        for state, param in zip(states, params, strict=True):
            if "exp_avg" not in state:
                state.update(exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param), step=0)
            if not torch.is_tensor(state["step"]):  # the kernels count steps in a float tensor
                state["step"] = torch.tensor(float(state["step"]), device=param.device)
        beta1, beta2 = group["betas"]
        fused = _fused_kernel_for(params)
        adam(
            params,
            [p.grad for p in params if p.grad is not None],  # `step` passes only parameters with one
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=fused,
            foreach=not fused,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=0.0,
            eps=group["eps"],
            maximize=False,
        )


def _fused_kernel_for(params: list[torch.Tensor]) -> bool:
    """torch has fused Adam kernels for floating-point parameters on CPU and CUDA."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


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
