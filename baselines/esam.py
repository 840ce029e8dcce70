"""ESAM: Efficient Sharpness-Aware Minimization (Du et al., ICLR 2022, https://arxiv.org/abs/2110.03141).

    SWP  draw a random part of the weights, each with probability beta; only they are perturbed:
         e = rho * g_c / (beta * ||g_c||)       g_c: the first-pass gradient of the drawn part
    SDS  l_before, l_after = per-sample losses at w and at w + e (a no-grad forward)
         S = the ceil(gamma * B) samples with the largest l_after - l_before
    w <- base_step(w, grad L_S(w + e))          the second forward/backward runs on S only

``swp="tensor"`` (the default) draws whole tensors, as the authors' code does, and the drawn-out
tensors get no weight-gradient in the first backward: the only form in which SWP saves work.
``swp="element"`` draws single weights; the first backward stays dense (it saves nothing) and the
norm is over the whole gradient, so that ``E[e] = rho * g / ||g||``. With ``beta = gamma = 1`` the
step is SAM's, bit for bit (no selection forward runs when every sample is kept). ``beta`` and
``swp`` may differ per parameter group; ``gamma`` selects samples of the whole batch, so it is one
value for all groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_choice, check_number
from .core.closure import BACKWARD, PER_SAMPLE, SUBSET, call_closure, has_features
from .core.two_pass import Closure, TwoPassOptimizer

SWP = ("tensor", "element")


class ESAM(TwoPassOptimizer):
    """``ESAM(params, base_optimizer=torch.optim.SGD, rho=0.05, beta=0.6, gamma=0.5, swp="tensor",
    seed=0, adaptive=False, ascent_fraction=1.0, sam_every=1, **base_kwargs)``. Data selection (``gamma < 1``)
    needs a closure that takes ``per_sample``, ``subset`` and ``backward`` (``baselines.ModelClosure``)."""

    shared_hparams = ("gamma", "ascent_fraction", "sam_every")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05, beta: float = 0.6, gamma: float = 0.5, swp: str = "tensor", seed: int = 0,
        adaptive: bool = False, ascent_fraction: float = 1.0, sam_every: int = 1, **base_kwargs: Any,
    ) -> None:
        extra = dict(beta=beta, gamma=gamma, swp=swp)
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, extra_defaults=extra,
                         ascent_fraction=ascent_fraction, sam_every=sam_every, **base_kwargs)
        self.generator = torch.Generator().manual_seed(seed)
        self._before: torch.Tensor | None = None  # per-sample losses of the first pass
        self._frozen: list[torch.Tensor] = []  # this step's drawn-out tensors (swp="tensor")

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("beta", group["beta"], 0, 1, low_open=True)
        check_number("gamma", group["gamma"], 0, 1, low_open=True)
        check_choice("swp", group["swp"], SWP)
        if group["gamma"] < 1 and group["ascent_fraction"] < 1:
            raise ValueError(f"ESAM's data selection (gamma={group['gamma']} < 1) compares each example's loss "
                             f"before and after the perturbation over the whole batch; ascent_fraction="
                             f"{group['ascent_fraction']} < 1 works with gamma=1 only")

    # ----- hooks of the two-pass skeleton -------------------------------------------------------
    def first_pass(self, closure: Closure) -> torch.Tensor:
        per_sample = self.shared("gamma") < 1
        if per_sample and not has_features(closure, PER_SAMPLE, SUBSET, BACKWARD):
            raise ValueError("ESAM with gamma < 1 selects samples: its closure must take per_sample, subset "
                             "and backward (use baselines.ModelClosure), or set gamma=1")
        self._frozen, nothing_drawn = self._draw_frozen_tensors(closure)
        try:  # the drawn-out tensors get no weight-gradient (not_perturbed)
            losses = self.ascent_call(closure, backward=not nothing_drawn,  # e = 0: a forward is enough
                                      per_sample=per_sample)
        finally:
            self._frozen = []
        if per_sample and losses.dim() != 1:  # selecting from one number would silently keep the whole batch
            raise ValueError(f"ESAM with gamma < 1 selects samples: the closure must return one loss per sample "
                             f"when called with per_sample=True, got shape {tuple(losses.shape)}")
        self._before = losses if per_sample else None
        return losses.mean() if losses.dim() else losses

    def not_perturbed(self) -> list[torch.Tensor]:
        return self._frozen

    def perturbation(self, p: torch.Tensor, group: dict[str, Any], scale: torch.Tensor) -> torch.Tensor | None:
        e = super().perturbation(p, group, scale)
        if group["beta"] == 1:
            return e
        if group["swp"] == "element":
            keep = torch.rand(p.shape, generator=self.generator) < group["beta"]
            e = e * keep.to(p.device)
        return e / group["beta"]

    def second_pass(self, closure: Closure, first_loss: torch.Tensor) -> torch.Tensor:
        before, self._before = self._before, None
        if before is None or self.selected(before.numel()) == before.numel():
            return call_closure(closure, freeze_bn=True)
        after = call_closure(closure, backward=False, per_sample=True, freeze_bn=True)
        return call_closure(closure, subset=self.select(after - before), freeze_bn=True)

    # ----- the two ESAM draws -------------------------------------------------------------------
    def selected(self, batch: int) -> int:
        """ceil(gamma * B), at least 1 (a float product like 0.7 * 10 = 7.000000000000001 is not 8)."""
        return max(1, min(batch, math.ceil(round(self.shared("gamma") * batch, 9))))

    def select(self, sharpness: torch.Tensor) -> torch.Tensor:
        """Indices (ascending) of the ceil(gamma * B) samples whose loss rose most."""
        return torch.topk(sharpness, self.selected(sharpness.numel()), sorted=False).indices.sort().values

    def _draw_frozen_tensors(self, closure: Closure) -> tuple[list[torch.Tensor], bool]:
        """The tensors left out of this step (in groups with ``swp="tensor"``, each tensor is kept
        with its group's probability beta), and whether that is every trainable tensor."""
        frozen, trainable = [], 0
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            trainable += len(params)
            if group["swp"] == "tensor" and group["beta"] < 1:
                # drawn on the CPU from the CPU generator: tolist() reads host memory and never waits for a GPU
                keep = torch.rand(len(params), generator=self.generator) < group["beta"]
                frozen += [p for p, k in zip(params, keep.tolist()) if not k]
        if not (frozen and len(frozen) == trainable):
            return frozen, False
        if not has_features(closure, BACKWARD):
            return [], False  # a plain closure always runs backward, which needs something to differentiate
        return frozen, True

    # ----- state: the generator continues where it was ---------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["esam"] = {"generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("esam")
        super().load_state_dict(state_dict)
        self.generator.set_state(own["generator"])
