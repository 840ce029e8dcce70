"""Momentum-SAM (Becker, Altrock and Risse 2024, "Momentum-SAM: Sharpness Aware Minimization without
Computational Overhead", https://arxiv.org/abs/2401.12033; code: github.com/MarlonBecker/MSAM).

    v = the base optimizer's momentum buffer (torch's SGD: v <- mu * v + g + wd * w, w <- w - lr * v)
    e = -rho * v / ||v||                         the negative momentum direction: no extra pass finds it
    g = grad L(w + e)                            the one forward/backward of the step
    w <- base_step(w, g)                         from w, not from w + e

The sign is the reference code's (``optimizer/msam.py``: the weights it holds between steps are
``w - rho * v / ||v||``, with v the torch-style buffer, weight decay included); its CIFAR commands use
rho = 3 where SAM's is 0.2. One pass per step, as SGD's. The reference code keeps the weights at ``w + e``
between steps, so its users must move them back before evaluating and at the end
(``move_back_from_momentumAscent``). Here a step perturbs, takes the gradient and restores the weights bit
for bit before the base step: outside ``step`` the weights are always ``w``, and evaluation, checkpoints and
the final model need nothing. Before the base optimizer has a momentum buffer (step 0) there is no
direction: the step is plain, as in the reference code (its buffers start at zero). The one pass moves
BatchNorm running statistics at ``w + e``, as there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .core.two_pass import Closure, TwoPassOptimizer


class MSAM(TwoPassOptimizer):
    """``MSAM(params, base_optimizer=torch.optim.SGD, rho=0.3, adaptive=False, **base_kwargs)`` (rho 0.3 is the
    reference code's default): the base optimizer must keep a momentum buffer (``momentum > 0``)."""

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.3, adaptive: bool = False, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, **base_kwargs)
        for group in self.param_groups:  # the base optimizer's settings are in the groups only now
            self._check_momentum(group)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        if group["ascent_fraction"] != 1 or group["sam_every"] != 1:
            raise ValueError(f"Momentum-SAM has no ascent pass: ascent_fraction={group['ascent_fraction']} and "
                             f"sam_every={group['sam_every']} must stay 1")
        if "momentum" in group:  # a group added after construction
            self._check_momentum(group)

    @staticmethod
    def _check_momentum(group: dict[str, Any]) -> None:
        if not group.get("momentum", 0) > 0:
            raise ValueError(f"Momentum-SAM perturbs along the momentum: momentum must be > 0, got "
                             f"{group.get('momentum')!r} (the base optimizer must keep a momentum buffer)")

    def two_passes(self) -> bool:
        return False

    def direction(self, p: torch.Tensor) -> torch.Tensor | None:
        """-v: the perturbation is e = rho * direction / ||direction||."""
        v = self.base_optimizer.state.get(p, {}).get("momentum_buffer")
        return None if v is None else -v

    def one_pass(self, closure: Closure) -> torch.Tensor:
        return self.at_perturbed_weights(closure)
