"""GSAM: Surrogate Gap Guided Sharpness-Aware Minimization (Zhuang et al., ICLR 2022,
https://arxiv.org/abs/2203.08065; code: github.com/juntang-zhuang/GSAM).

    g   = grad L(w)                          the first pass
    g_s = grad L(w + rho_t * g / ||g||)      the second pass (SAM's gradient)
    g_perp = g - (<g, g_s> / ||g_s||^2) g_s  the part of g orthogonal to g_s
    w <- base_step(w, g_s - alpha * g_perp)  descend on the perturbed loss, and also lower the surrogate gap

The ascent radius follows the learning rate, as in the paper's code (its ``rho_scheduler``):
``rho_t = rho_min + (rho - rho_min) * lr_t / lr_0`` with ``lr_0`` the group's ``initial_lr`` (what torch's LR
schedulers set) and the schedule ending at learning rate 0; without a scheduler ``rho_t = rho``. With
``alpha = 0`` and ``rho_min = rho`` the step is SAM's. Inner products and norms run over all parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_number
from .core.two_pass import TwoPassOptimizer, average_over_replicas


class GSAM(TwoPassOptimizer):
    """``GSAM(params, base_optimizer=torch.optim.SGD, rho=0.05, rho_min=None, alpha=0.2, adaptive=False,
    ascent_fraction=1.0, sam_every=1, **base_kwargs)``: ``rho`` is the radius at the initial learning rate
    (the paper's rho_max), ``rho_min`` the radius the schedule reaches at learning rate 0 (None: ``rho``, a
    constant radius, as the reference code's CIFAR example, whose alpha was 0.2 and is 0.4 now: docs/peers.md);
    both and ``alpha`` may differ per group."""

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05, rho_min: float | None = None, alpha: float = 0.2, adaptive: bool = False,
        ascent_fraction: float = 1.0, sam_every: int = 1, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive,
                         extra_defaults={"alpha": alpha, "rho_min": rho_min},
                         ascent_fraction=ascent_fraction, sam_every=sam_every, **base_kwargs)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("alpha", group["alpha"], low=0)
        if group["rho_min"] is not None:
            check_number("rho_min", group["rho_min"], 0, group["rho"])

    def radius(self, group: dict[str, Any]) -> float:
        """rho_t for ``group``: linear in its current learning rate, from ``rho`` at ``initial_lr`` down to
        ``rho_min`` at 0."""
        rho, low, lr0 = group["rho"], group["rho_min"], group.get("initial_lr")
        if low is None or not lr0:
            return rho
        return low + (rho - low) * float(group["lr"]) / float(lr0)

    def perturbation(self, p: torch.Tensor, group: dict[str, Any], scale: torch.Tensor) -> torch.Tensor | None:
        e = super().perturbation(p, group, scale)  # scale = rho / ||g||
        return e if group["rho"] == 0 else e * (self.radius(group) / group["rho"])

    keeps_first_gradient = True  # g, for the decomposition after the second pass

    @torch.no_grad()
    def descent(self) -> None:
        """p.grad <- g_s - alpha * (g - (<g, g_s> / ||g_s||^2) g_s)."""
        params, firsts, inner, _, s_sq = self.both_gradients()
        coef = inner / s_sq.clamp_min(1e-24)
        alphas = {id(p): group["alpha"] for group in self.param_groups for p in group["params"]}
        for p, g in zip(params, firsts):
            perp = g - coef * p.grad
            p.grad.sub_(perp, alpha=alphas[id(p)])
        # g is each replica's own under several processes: the mean direction on all (the reference code
        # all-reduces the final gradients too, summing them)
        average_over_replicas([p.grad for p in params])
