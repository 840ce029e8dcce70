"""Empirical Fisher scores for SSAM-F: sum over N_F single examples of squared gradients of the loss
with the true label (Mi et al. 2023, eq. for SSAM-F).

``fisher_vectorised`` computes every example's gradient in one vectorised pass (``torch.func.vmap``
over ``grad``) on the closure's batch; ``fisher_loop`` is the paper's batch-of-one loop, kept as the
reference the tests compare against. Both treat each example as a batch of one with BatchNorm
statistics frozen, so they agree exactly up to floating-point summation order, and neither moves the
running statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from baselines.core import BATCH, SUBSET, call_closure, frozen_bn_stats, has_features


def _check(closure: Callable, n: int, feature: str) -> int:
    if not has_features(closure, feature):
        raise RuntimeError(f"the Fisher mask needs a closure with the '{feature}' feature "
                           "(use baselines.ModelClosure(model, inputs, targets))")
    batch = int(closure.targets.shape[0])
    if n > batch:
        raise ValueError(f"fisher_samples={n} is larger than the batch ({batch})")
    return batch


def fisher_vectorised(closure: Callable, params: list[torch.Tensor], n: int,
                      chunk_size: int = 16) -> list[torch.Tensor]:
    """The first ``n`` examples of the closure's batch, each a batch of one, in chunks of ``chunk_size``."""
    from torch.func import functional_call, grad, vmap

    _check(closure, n, BATCH)
    model, loss_fn = closure.model, closure.loss_fn
    weights = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_of_one(w: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (w, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0)).sum()

    subset = torch.arange(n)
    x, y = closure.inputs[subset], closure.targets[subset]
    with frozen_bn_stats(model):
        per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(weights, x, y)
    closure.count(int(y.shape[0]), backward=True)
    by_name = dict(model.named_parameters())
    squares = {by_name[name]: g.square().sum(0) for name, g in per_example.items()}
    return [squares[p] if p in squares else torch.zeros_like(p) for p in params]


def fisher_loop(closure: Callable, params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    _check(closure, n, SUBSET)
    total = [torch.zeros_like(p) for p in params]
    for i in range(n):
        call_closure(closure, subset=torch.tensor([i]), freeze_bn=True)
        for acc, p in zip(total, params):
            if p.grad is not None:
                acc.add_(p.grad.square())
    return total


FISHER = {"vmap": fisher_vectorised, "loop": fisher_loop}
