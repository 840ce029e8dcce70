"""Late-phase SAM (Zhou, Wang, Mao, Li and Yan, ICLR 2025, "Sharpness-Aware Minimization Efficiently Selects
Flatter Minima Late in Training", https://arxiv.org/abs/2410.10373; code: github.com/zzp1012/SAM-in-Late-Phase,
MIT): the base optimizer's steps for the first part of training, SAM's steps from a fixed fraction of it on.

    t < ceil(switch_at * T):   w <- base_step(w, grad L(w))                         one pass
    otherwise:                 w <- base_step(w, grad L(w + rho * g / ||g||))        two passes (SAM)

t is the step from 0, T = total_steps (the run's planned steps, handed by the suite). switch_at 0.875 is the
paper's Figure 1: SGD to epoch 175 of 200, then SAM; its script switches at an epoch (``start_SAM <= epoch``),
which is the same step when T is a whole number of epochs. The step count is the skeleton's, saved in
``state_dict``, so a resumed run switches at the same step. One base optimizer runs throughout, so its momentum
carries across the switch (the reference script builds a second SGD for the SAM phase, whose momentum starts
at zero: docs/peers.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_int, check_number
from .core.two_pass import TwoPassOptimizer


class LateSAM(TwoPassOptimizer):
    """``LateSAM(params, base_optimizer=torch.optim.SGD, rho=0.05, switch_at=0.875, total_steps=None,
    adaptive=False, ascent_fraction=1.0, **base_kwargs)``: ``total_steps`` (T) is required; the suite hands it
    from the run's plan. ``switch_at`` and ``total_steps`` are one value for all groups."""

    shared_hparams = ("ascent_fraction", "sam_every", "switch_at", "total_steps")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05, switch_at: float = 0.875, total_steps: int | None = None, adaptive: bool = False,
        ascent_fraction: float = 1.0, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, ascent_fraction=ascent_fraction,
                         extra_defaults={"switch_at": switch_at, "total_steps": total_steps}, **base_kwargs)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("switch_at", group["switch_at"], 0, 1)
        check_int("total_steps (late-phase SAM's switch)", group["total_steps"])
        if group["sam_every"] != 1:
            raise ValueError(f"late-phase SAM switches once (sam_every={group['sam_every']} would be ignored)")

    def first_sam_step(self, total_steps: int | None = None) -> int:
        """ceil(switch_at * T), the first step that is SAM's (a product like 0.7 * 10 = 7.000000000000001 is 7);
        T the run's ``total_steps`` unless another is given (the suite asks it of a run it is still planning)."""
        total = self.shared("total_steps") if total_steps is None else total_steps
        return math.ceil(round(self.shared("switch_at") * total, 9))

    def sam_steps_in(self, total_steps: int) -> int:
        """How many of a run's ``total_steps`` steps are SAM's: the schedule says it exactly, before the run."""
        return max(0, total_steps - self.first_sam_step(total_steps))

    def two_passes(self) -> bool:
        return self.steps_taken >= self.first_sam_step()
