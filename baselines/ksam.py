"""K-SAM (Ni, Chiang, Geiping, Goldblum, Wilson and Goldstein 2022, "K-SAM: Sharpness-Aware Minimization at the
Speed of SGD", https://arxiv.org/abs/2210.12864): SAM whose two gradients are both taken on the k examples of
the batch with the highest loss ("we propose to compute gradients in both stages of SAM on only the top-k samples
with highest loss", the abstract). No code by the authors was found.

    l_i = loss of example i at w, i in the batch B       a forward pass over B, no graph
    S   = the k = ceil(k_fraction * |B|) examples with the largest l_i
    g   = grad L_S(w)                                    L_S = (1/k) sum_{i in S} l_i: a mean over the k
    e   = rho * g / ||g||                                (ASAM's rule with adaptive=True)
    w  <- base_step(w, grad L_S(w + e))                  the same S

A step runs one forward over the whole batch and two forward/backward passes over k examples: about
``1/3 + 2 * k_fraction`` of SGD's FLOPs (a backward costs about two forwards), SGD's cost at a third of the batch,
the default (the paper's own k could not be read here: docs/peers.md). BatchNorm running statistics move in the
ranking forward, over the whole batch as SGD's pass moves them; both passes on S leave them. With
``k_fraction = 1`` no ranking forward runs and the step is SAM's, bit for bit.

Ranking needs a closure that takes ``per_sample``, ``subset`` and ``backward`` (``baselines.ModelClosure``): with
another closure ``k_fraction < 1`` fails in one line at the first step, as ESAM's data selection does; it is not
silently run as SAM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_number
from .core.closure import BACKWARD, PER_SAMPLE, SUBSET, call_closure, has_features
from .core.two_pass import DEFAULT_RHO, Closure, TwoPassOptimizer

# A third of the batch: 1/3 + 2/3 of SGD's FLOPs, the title's "speed of SGD" (docs/peers.md says why this and
# not the paper's own k, which could not be read here)
K_FRACTION = 1 / 3


class KSAM(TwoPassOptimizer):
    """``KSAM(params, base_optimizer=torch.optim.SGD, rho=DEFAULT_RHO, k_fraction=1/3, adaptive=False,
    ascent_fraction=1.0, sam_every=1, **base_kwargs)``. ``k_fraction`` selects examples of the whole batch, so it
    is one value for all groups; ``ascent_fraction < 1`` (an ascent on a random part of the batch) works with
    ``k_fraction = 1`` only."""

    shared_hparams = ("k_fraction", "ascent_fraction", "sam_every")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = DEFAULT_RHO, k_fraction: float = K_FRACTION, adaptive: bool = False,
        ascent_fraction: float = 1.0, sam_every: int = 1, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, ascent_fraction=ascent_fraction,
                         sam_every=sam_every, extra_defaults={"k_fraction": k_fraction}, **base_kwargs)
        self._subset: torch.Tensor | None = None  # this step's S, from the first pass to the second

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("k_fraction", group["k_fraction"], 0, 1, low_open=True)
        if group["k_fraction"] < 1 and group["ascent_fraction"] < 1:
            raise ValueError(f"K-SAM takes both gradients on the k examples with the highest loss (k_fraction="
                             f"{group['k_fraction']} < 1); ascent_fraction={group['ascent_fraction']} < 1 works "
                             f"with k_fraction=1 only")

    def selected(self, batch: int) -> int:
        """k = ceil(k_fraction * B), at least 1 (a product like 0.7 * 10 = 7.000000000000001 is 7)."""
        return max(1, min(batch, math.ceil(round(self.shared("k_fraction") * batch, 9))))

    # ----- hooks of the two-pass skeleton -------------------------------------------------------
    def first_pass(self, closure: Closure) -> torch.Tensor:
        self._subset = None
        if self.shared("k_fraction") == 1:
            return self.ascent_call(closure)  # SAM's first pass: no ranking
        losses = self._rank_forward(closure)
        k = self.selected(losses.numel())
        if k < losses.numel():
            self._subset = torch.topk(losses, k, sorted=False).indices.sort().values
        self.ascent_call(closure, subset=self._subset, freeze_bn=True)
        return losses.mean()  # the whole batch's loss at w, as SGD's step reports it

    def _rank_forward(self, closure: Closure) -> torch.Tensor:
        """Each example's loss at w: a forward over the batch without a graph (BatchNorm statistics move here)."""
        if not has_features(closure, PER_SAMPLE, SUBSET, BACKWARD):
            raise ValueError(f"K-SAM with k_fraction={self.shared('k_fraction')} < 1 ranks the batch by each "
                             "example's loss: its closure must take per_sample, subset and backward (use "
                             "baselines.ModelClosure), or set k_fraction=1")
        losses = call_closure(closure, backward=False, per_sample=True)
        if losses.dim() != 1:  # ranking one number would silently keep the whole batch
            raise ValueError(f"K-SAM ranks the batch by each example's loss: the closure must return one loss per "
                             f"example when called with per_sample=True, got shape {tuple(losses.shape)}")
        return losses

    def second_pass(self, closure: Closure, first_loss: torch.Tensor) -> torch.Tensor:
        subset, self._subset = self._subset, None
        return call_closure(closure, subset=subset, freeze_bn=True)
