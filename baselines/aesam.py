"""AE-SAM (Jiang, Yang, Zhang and Kwok, ICLR 2023, "An Adaptive Policy to Employ Sharpness-Aware Minimization",
https://arxiv.org/abs/2304.14647): SAM's step where the loss is sharp, judged by the squared norm of the step's
own stochastic gradient against its running mean and standard deviation; the base optimizer's step elsewhere.

    g = grad L(w)                                       the first pass: the whole batch, synchronised
    mu_t   = delta * mu_{t-1}   + (1 - delta) * ||g||^2           mu_{-1} = var_{-1} = 0
    var_t  = delta * var_{t-1}  + (1 - delta) * (||g||^2 - mu_t)^2
    c_t    = (t / T) * lambda1 + (1 - t / T) * lambda2           t the step from 0, T = total_steps (t / T <= 1)
    ||g||^2 >= mu_t + c_t * sqrt(var_t):   w <- base_step(w, grad L(w + rho * g / ||g||))     (SAM)
    otherwise:                             w <- base_step(w, g)                               (SGD's step)

The threshold moves linearly from lambda2 standard deviations above the mean at the start to lambda1 at the
end (delta 0.9, lambda1 -1, lambda2 1: docs/peers.md says where they come from). A SAM step costs two passes,
another one. Because the decision reads the step's own gradient, the first pass is SGD's pass (whole batch,
synchronised across replicas, BatchNorm statistics moving): every replica sees the same ||g||^2 and takes the
same kind of step, and under several processes a SAM step perturbs with the replicas' mean gradient rather
than each its own. The running statistics and the step count travel in ``state_dict``. No official code was
found; ``tests/test_peers.py`` checks the rule against a hand transcription of these lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .core.checks import check_int, check_number
from .core.closure import call_closure
from .core.two_pass import Closure, TwoPassOptimizer


class AESAM(TwoPassOptimizer):
    """``AESAM(params, base_optimizer=torch.optim.SGD, rho=0.05, delta=0.9, lambda1=-1.0, lambda2=1.0,
    total_steps=None, adaptive=False, **base_kwargs)``: ``total_steps`` (the run's steps, T) is required; the
    suite hands it from the run's plan. ``delta``, ``lambda1``, ``lambda2`` and ``total_steps`` are one value for
    all groups (a step is SAM's or not as a whole)."""

    shared_hparams = ("ascent_fraction", "sam_every", "delta", "lambda1", "lambda2", "total_steps")

    # The share of SAM steps expected over a run, declared before it: which steps are SAM's depends on the
    # gradients, so nothing known in advance says it exactly. With c_t linear from lambda2 = 1 to lambda1 = -1
    # and ||g||^2 about normal around its running mean, a step is SAM's with probability P(Z >= c_t), from about
    # 0.16 to 0.84 and 0.5 averaged over the run (the schedule is symmetric). This is a model, not a measurement:
    # a FLOP or time budget plans a run's steps with it, and the record prices the run with the share it realised
    # (docs/harness.md, "Steps of two kinds").
    EXPECTED_SAM_SHARE = 0.5

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05, delta: float = 0.9, lambda1: float = -1.0, lambda2: float = 1.0,
        total_steps: int | None = None, adaptive: bool = False, **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive,
                         extra_defaults={"delta": delta, "lambda1": lambda1, "lambda2": lambda2,
                                         "total_steps": total_steps}, **base_kwargs)
        self.mean, self.var = 0.0, 0.0  # of ||g||^2, before any step
        self._sam_now = True

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("delta", group["delta"], 0, 1, high_open=True)
        check_number("lambda1", group["lambda1"])
        check_number("lambda2", group["lambda2"])
        check_int("total_steps (AE-SAM's threshold schedule)", group["total_steps"])
        if group["ascent_fraction"] != 1 or group["sam_every"] != 1:
            raise ValueError(f"AE-SAM decides each step from its whole batch's gradient: ascent_fraction="
                             f"{group['ascent_fraction']} and sam_every={group['sam_every']} must stay 1")

    def expected_sam_share(self) -> float:
        """``EXPECTED_SAM_SHARE``, for the symmetric default schedule (lambda1 = -lambda2); with other lambdas, the
        share a normal ||g||^2 gives on average over the linear threshold, P(Z >= c) averaged over c."""
        lam1, lam2 = self.shared("lambda1"), self.shared("lambda2")
        if lam1 == -lam2:
            return self.EXPECTED_SAM_SHARE
        cs = [lam2 + (lam1 - lam2) * (i + 0.5) / 1000 for i in range(1000)]  # midpoints of c_t over the run
        return sum(0.5 * math.erfc(c / math.sqrt(2)) for c in cs) / len(cs)

    def first_pass(self, closure: Closure) -> torch.Tensor:
        """SGD's pass: the gradient a step without SAM descends with, the same on every replica."""
        return call_closure(closure)

    @torch.no_grad()
    def prepare(self) -> None:
        """Update the running mean and variance of ||g||^2 with this step's, and decide the step's kind."""
        grads = [p.grad for p in self.all_params() if p.grad is not None]
        if not grads:
            self._sam_now = False
            return
        sq = float(torch.stack([g.norm() for g in grads]).norm()) ** 2
        delta = self.shared("delta")
        self.mean = delta * self.mean + (1 - delta) * sq
        self.var = delta * self.var + (1 - delta) * (sq - self.mean) ** 2
        self._sam_now = sq >= self.mean + self.threshold() * math.sqrt(self.var)

    def threshold(self) -> float:
        """c_t, linear from lambda2 at step 0 to lambda1 at step T (and after it)."""
        t = self.steps_taken - 1  # the step under way: step() counted it before its first pass
        frac = min(t / self.shared("total_steps"), 1.0)
        return frac * self.shared("lambda1") + (1 - frac) * self.shared("lambda2")

    def second_pass_needed(self) -> bool:
        return self._sam_now

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["ae_sam"] = {"mean": self.mean, "var": self.var}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("ae_sam")
        super().load_state_dict(state_dict)
        self.mean, self.var = own["mean"], own["var"]
