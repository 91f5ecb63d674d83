"""The teacher's optimisation loop with early stopping: full-batch L-BFGS or (mini-batch) Adam. Readable top
to bottom."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch


class EarlyStopping:
    """Keeps the parameters with the best check loss; says stop after ``patience`` flat checks."""

    def __init__(self, params: list[torch.Tensor], patience: int, min_delta: float):
        self.params, self.patience, self.min_delta = params, patience, min_delta
        self.best, self.flat = float("inf"), 0
        self.best_values: list[torch.Tensor] | None = None

    def update(self, loss: float) -> bool:
        """Record a check; True when training should stop (no progress, or a non-finite loss)."""
        if not np.isfinite(loss):
            return True
        if loss < self.best - self.min_delta:
            self.best, self.flat = loss, 0
            self.best_values = [p.detach().clone() for p in self.params]
        else:
            self.flat += 1
        return self.flat >= self.patience

    def restore(self) -> None:
        if self.best_values is not None:
            with torch.no_grad():
                for param, best in zip(self.params, self.best_values, strict=True):
                    param.copy_(best)


def lbfgs_rounds(
    params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], lr: float, every: int
) -> Iterator[int]:
    """Yield the iteration count after every ``every`` full-batch L-BFGS iterations (strong Wolfe)."""
    optimizer = torch.optim.LBFGS(
        params,
        lr=lr,
        max_iter=every,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    while True:
        optimizer.step(closure)
        yield optimizer.state[params[0]]["n_iter"]


def adam_rounds(
    params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], lr: float, every: int
) -> Iterator[int]:
    """Yield the step count after every ``every`` Adam steps; ``loss_fn`` may sample a new mini-batch."""
    optimizer = torch.optim.Adam(params, lr=lr)
    step = 0
    while True:
        for _ in range(every):
            optimizer.zero_grad()
            loss_fn().backward()
            optimizer.step()
            step += 1
        yield step


def optimise(
    rounds: Iterator[int],
    stopper: EarlyStopping,
    check: Callable[[], float],
    max_steps: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Advance ``rounds`` until early stopping or ``max_steps``; restore the best parameters."""
    history, start = [], time.perf_counter()
    stopper.update(check())
    for step in rounds:
        loss = check()
        history.append(
            {"step": int(step), "check_loss": loss, "seconds": round(time.perf_counter() - start, 3)}
        )
        if progress is not None:
            progress(min(int(step), max_steps), max_steps)
        if stopper.update(loss) or step >= max_steps:
            break
    stopper.restore()
    return history
