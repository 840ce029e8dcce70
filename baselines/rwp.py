"""Random weight perturbation, the adaptive one-pass form (ARWP: Li, Tao, Yan, Lei, Wu, Fang, He and Huang, TMLR
2024, "Revisiting Random Weight Perturbation for Efficiently Improving Generalization",
https://arxiv.org/abs/2404.00357; code: github.com/nblt/mARWP, class ``ARWP`` in ``utils.py``, run by
``train_rwp_cos.py``). The gradient is taken at the weights plus Gaussian noise scaled by each filter's norm and
shrunk where a running second moment of the gradient is large; one forward and one backward per step.

    sigma_t = rho * (1 + increase * (1 - cos(pi * min(t / T, 1))) / 2)     t the step from 0, T = total_steps
    e_ij    = sigma_t * ||W_i|| * z_ij / sqrt(1 + eta * F_ij)               z ~ N(0, 1), the optimizer's own draws
    g       = grad L(w + e)                     the step's one pass (BatchNorm statistics move, as in the code)
    w      <- base_step(w, g)                   from w: the weights are restored bit for bit first
    m      <- beta * m + g^2                    a running second moment of the perturbed gradient, m = 0 at first

For a tensor of two or more dimensions W_i is its filter i (its slice along dim 0) and F_ij the sum of m over
that filter; for a vector (BatchNorm's weights, biases) W_i is the whole vector and F_ij = m_ij, entry by entry:
the code's rule, which perturbs every parameter, BatchNorm's and biases included. rho is the paper's sigma (the
code's ``--std``): noise relative to the weights' scale, not SAM's radius. The defaults are the authors' CIFAR
command (``scripts/run_rwp.sh``: std 0.001, inc 10, eta 0.1, beta 0.99), so sigma rises from 0.001 to 0.011 along
a half cosine over the run (the code's ``CosineInc``). ``increase = 0`` keeps it constant and needs no T.

Only this one-pass form is here: the paper's m-ARWP (``train_marwp.py``) mixes a clean gradient into every
update at twice the passes per update. The draws come from the optimizer's generator (seeded with the run's seed,
the same on every replica), saved with the running moment and the step count in ``state_dict``, so a resumed
run draws the same noise. docs/peers.md lists what differs from the code and why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_int, check_number
from .core.two_pass import Closure, TwoPassOptimizer


class RWP(TwoPassOptimizer):
    """``RWP(params, base_optimizer=torch.optim.SGD, rho=0.001, eta=0.1, beta=0.99, increase=10.0,
    total_steps=None, seed=0, **base_kwargs)``: ``total_steps`` (T) is required where ``increase > 0``; the suite
    hands it from the run's plan. ``rho``, ``eta``, ``beta`` and ``increase`` may differ per group."""

    shared_hparams = ("ascent_fraction", "sam_every", "total_steps")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.001, eta: float = 0.1, beta: float = 0.99, increase: float = 10.0,
        total_steps: int | None = None, seed: int = 0, **base_kwargs: Any,
    ) -> None:
        check_int("seed", seed, minimum=0)
        super().__init__(params, base_optimizer, rho=rho,
                         extra_defaults={"eta": eta, "beta": beta, "increase": increase, "total_steps": total_steps},
                         **base_kwargs)
        device = next((p.device for p in self.all_params()), torch.device("cpu"))
        self.generator = torch.Generator(device=device).manual_seed(seed)  # where the weights are: no copies

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("eta", group["eta"], low=0)
        check_number("beta", group["beta"], 0, 1)
        check_number("increase", group["increase"], low=0)
        if group["increase"] > 0 or group["total_steps"] is not None:
            check_int("total_steps (RWP's noise schedule)", group["total_steps"])
        if group["adaptive"] or group["ascent_fraction"] != 1 or group["sam_every"] != 1:
            raise ValueError(f"RWP has one pass and filter-normalised noise: adaptive={group['adaptive']}, "
                             f"ascent_fraction={group['ascent_fraction']} and sam_every={group['sam_every']} "
                             "must stay False, 1 and 1")

    def two_passes(self) -> bool:
        return False

    def sigma(self, group: dict[str, Any]) -> float:
        """sigma_t for the step under way (``step()`` counted it before its pass), rising from rho to
        rho * (1 + increase) over T steps and staying there after."""
        if group["increase"] == 0:
            return group["rho"]
        t = max(self.steps_taken - 1, 0)
        rise = 0.5 - 0.5 * math.cos(math.pi * min(t / self.shared("total_steps"), 1.0))
        return group["rho"] * (1 + group["increase"] * rise)

    def one_pass(self, closure: Closure) -> torch.Tensor:
        return self.at_perturbed_weights(closure)

    @torch.no_grad()
    def perturb(self) -> None:
        """w <- w + e for every parameter of a group with sigma_t > 0, w kept to restore."""
        for group in self.param_groups:
            sigma = self.sigma(group)
            if sigma == 0:
                continue
            for p in group["params"]:
                anchor = self._anchors.get(p)
                if anchor is None:
                    anchor = self._anchors[p] = torch.empty_like(p)
                anchor.copy_(p)
                p.add_(self.noise(p, group, sigma))
                self._perturbed.append(p)

    def noise(self, p: torch.Tensor, group: dict[str, Any], sigma: float) -> torch.Tensor:
        """e for one tensor: N(0, 1) draws times sigma * ||W_i|| / sqrt(1 + eta * F_ij)."""
        filters = p.dim() > 1
        shape = (-1,) + (1,) * (p.dim() - 1)  # one value per filter, broadcast over it
        scale = sigma * (p.flatten(1).norm(dim=1).view(shape) if filters else p.norm())
        moment = self.state[p].get("moment")
        if moment is not None:
            shrink = moment.flatten(1).sum(dim=1).view(shape) if filters else moment
            scale = scale / torch.sqrt(1 + group["eta"] * shrink)
        z = torch.randn(p.shape, generator=self.generator, device=self.generator.device, dtype=p.dtype)
        return z.to(p.device) * scale

    @torch.no_grad()
    def reuse(self) -> None:
        """After the pass (its gradient unscaled under fp16), before the base step: m <- beta * m + g^2."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                moment = self.state[p].get("moment")
                if moment is None:
                    self.state[p]["moment"] = p.grad.square()
                else:
                    moment.mul_(group["beta"]).add_(p.grad.square())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["rwp"] = {"generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("rwp")
        super().load_state_dict(state_dict)
        self.generator.set_state(own["generator"])
