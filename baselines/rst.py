"""RST: randomized sharpness-aware training (Zhao, Zhang and Hu 2022, "Randomized Sharpness-Aware Training for
Boosting Computational Efficiency in Deep Learning", https://arxiv.org/abs/2203.09962).

    each step: with probability p a SAM step (two passes), else the base optimizer's step on grad L(w)

A step costs (1 + p) passes on average. The draws come from the optimizer's own generator (seeded with the
run's seed), so runs repeat and a restart continues the same sequence. The probability here is constant,
the paper's main setting (it also schedules p over training).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_number
from .core.two_pass import TwoPassOptimizer


class RST(TwoPassOptimizer):
    """``RST(params, base_optimizer=torch.optim.SGD, rho=0.05, probability=0.5, seed=0, adaptive=False,
    ascent_fraction=1.0, **base_kwargs)``: ``probability`` is one value for all groups (a step is SAM's or
    not as a whole)."""

    shared_hparams = ("ascent_fraction", "sam_every", "probability")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05, probability: float = 0.5, seed: int = 0, adaptive: bool = False,
        ascent_fraction: float = 1.0, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive,
                         extra_defaults={"probability": probability}, ascent_fraction=ascent_fraction,
                         **base_kwargs)
        self.generator = torch.Generator().manual_seed(seed)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("probability", group["probability"], 0, 1)
        if group["sam_every"] != 1:
            raise ValueError(f"RST draws which steps are SAM's (sam_every={group['sam_every']} would be ignored)")

    def expected_sam_share(self) -> float:
        """The share of SAM steps a run takes on average: p. A run's own draws are counted as it runs."""
        return float(self.shared("probability"))

    def two_passes(self) -> bool:
        """A Bernoulli draw with this step's probability (one draw every step, whatever p)."""
        return bool(torch.rand((), generator=self.generator) < self.shared("probability"))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["rst"] = {"generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("rst")
        super().load_state_dict(state_dict)
        self.generator.set_state(own["generator"])
