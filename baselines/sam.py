"""SAM: Sharpness-Aware Minimization (Foret et al., ICLR 2021, https://arxiv.org/abs/2010.01412).

    e = rho * g / ||g||                 (ASAM, Kwon et al. 2021: e = rho * T^2 g / ||T g||, T = |w| + eta)
    w <- base_step(w, grad L(w + e))

Two forward/backward passes per step; BatchNorm running statistics move in the first pass only.
Every step is the skeleton's (``core/two_pass.py``) with its default hooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_number
from .core.two_pass import DEFAULT_RHO, TwoPassOptimizer


class SAM(TwoPassOptimizer):
    """``SAM(params, base_optimizer=torch.optim.SGD, rho=DEFAULT_RHO, adaptive=False, ascent_fraction=1.0, sam_every=1,
    eta=0.0, **base_kwargs)``.

    ``base_kwargs`` (lr, momentum, weight_decay, ...) go to the base optimizer. ``step`` needs a
    closure that zeroes gradients, runs forward and backward and returns the loss. ``rho`` and
    ``adaptive`` may differ per parameter group. ``ascent_fraction < 1`` takes g from that fraction of
    the batch (``core/two_pass.py``; needs a ``ModelClosure``). ``sam_every = k > 1`` runs the second pass
    on every k-th step only (steps 0, k, 2k, ...), plain base steps between (periodic SAM, as Composer's
    ``SAM(interval=k)``). With ``adaptive=True``, ``eta`` is ASAM's constant in ``T_w = |w| + eta`` (its code:
    0.01, on every parameter whose name has "weight"; an optimizer sees no names, so here on every parameter of
    the group: put biases in a group with ``adaptive=False`` for the code's exact rule).
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = DEFAULT_RHO,
        adaptive: bool = False,
        ascent_fraction: float = 1.0,
        sam_every: int = 1,
        eta: float = 0.0,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, ascent_fraction=ascent_fraction,
                         sam_every=sam_every, extra_defaults={"eta": eta}, **base_kwargs)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("eta", group["eta"], low=0)

    def weight_scale(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return p.abs() + group["eta"] if group["eta"] else p.abs()
