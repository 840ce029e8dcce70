"""Empirical Fisher scores for SSAM-F: sum over N_F single examples of squared gradients of the loss
with the true label (Mi et al. 2023, eq. for SSAM-F).

``fisher_vectorised`` asks the closure for one vectorised per-example pass (``ModelClosure.fisher``);
``fisher_loop`` is the paper's batch-of-one loop, kept as the reference the tests compare against.
Both treat each example as a batch of one with BatchNorm statistics frozen, so they agree exactly up
to floating-point summation order, and neither moves the running statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from baselines.closure import call_closure


def _check(closure: Callable, n: int, feature: str) -> int:
    if feature not in getattr(closure, "features", ()):
        raise RuntimeError(f"the Fisher mask needs a closure with the '{feature}' feature "
                           "(use baselines.ModelClosure(model, inputs, targets))")
    batch = int(closure.targets.shape[0])
    if n > batch:
        raise ValueError(f"fisher_samples={n} is larger than the batch ({batch})")
    return batch


def fisher_vectorised(closure: Callable, params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    _check(closure, n, "fisher")
    sq = closure.fisher(torch.arange(n))
    return [sq[p] if p in sq else torch.zeros_like(p) for p in params]


def fisher_loop(closure: Callable, params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    _check(closure, n, "subset")
    total = [torch.zeros_like(p) for p in params]
    for i in range(n):
        call_closure(closure, subset=torch.tensor([i]), freeze_bn=True)
        for acc, p in zip(total, params):
            if p.grad is not None:
                acc.add_(p.grad.square())
    return total


FISHER = {"vmap": fisher_vectorised, "loop": fisher_loop}
