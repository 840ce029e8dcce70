"""LookSAM (Liu et al., CVPR 2022, "Towards Efficient and Scalable Sharpness-Aware Minimization",
https://arxiv.org/abs/2203.02714, Algorithm 1): SAM's second pass every k-th step only; the steps between
reuse the part of SAM's gradient that is orthogonal to the plain gradient.

    every k-th step (0, k, 2k, ...):  g = grad L(w),  g_s = grad L(w + rho * g / ||g||)
                                      g_v = g_s - (<g_s, g> / ||g||^2) g         (stored)
                                      w <- base_step(w, g_s)
    the other steps:                  g = grad L(w)
                                      w <- base_step(w, g + alpha * ||g|| / ||g_v|| * g_v)

Norms and inner products run over all parameters at once, as the paper writes them (its layer-wise
variant, Look-LayerSAM, is for large-batch training with LAMB and is not this). Before the first
sharpness-aware step nothing is stored, and a step is the base optimizer's. Under several processes g is
each replica's own (the ascent pass is not all-reduced) and g_v their mean. There is no official code;
``tests/test_peers.py`` checks the rule against a transcription of the paper's algorithm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_number
from .core.two_pass import TwoPassOptimizer, average_over_replicas


class LookSAM(TwoPassOptimizer):
    """``LookSAM(params, base_optimizer=torch.optim.SGD, rho=0.05, alpha=0.7, sam_every=5, adaptive=False,
    ascent_fraction=1.0, **base_kwargs)``: ``sam_every`` is the paper's k; ``alpha`` (per group) weighs the
    reused direction."""

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05, alpha: float = 0.7, sam_every: int = 5, adaptive: bool = False,
        ascent_fraction: float = 1.0, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, extra_defaults={"alpha": alpha},
                         ascent_fraction=ascent_fraction, sam_every=sam_every, **base_kwargs)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("alpha", group["alpha"], low=0)

    keeps_first_gradient = True  # g, for the decomposition after the second pass

    @torch.no_grad()
    def descent(self) -> None:
        """g_v = g_s - (<g_s, g> / ||g||^2) g, stored for the steps until the next second pass."""
        params, firsts, inner, g_sq, _ = self.both_gradients()
        coef = inner / g_sq.clamp_min(1e-24)
        for p, g in zip(params, firsts):
            self.state[p]["g_v"] = p.grad - coef * g
        # g is each replica's own under several processes: one g_v for all, or their weights would part
        average_over_replicas([self.state[p]["g_v"] for p in params])

    @torch.no_grad()
    def reuse(self) -> None:
        """g <- g + alpha * ||g|| / ||g_v|| * g_v, with this step's g and the stored g_v."""
        params = [p for p in self.all_params() if p.grad is not None and "g_v" in self.state[p]]
        if not params:
            return  # no sharpness-aware step yet: the base optimizer's step
        g_norm = torch.stack([p.grad.norm() for p in params]).norm()
        v_norm = torch.stack([self.state[p]["g_v"].norm() for p in params]).norm()
        ratio = g_norm / v_norm.clamp_min(1e-12)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and "g_v" in self.state[p]:
                    p.grad.add_(self.state[p]["g_v"] * ratio, alpha=group["alpha"])
