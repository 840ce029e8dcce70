"""Equal budgets: how many steps an optimizer gets, and what it spent.

- ``epochs``: every optimizer trains ``epochs`` epochs.
- ``flops``: every optimizer gets the training FLOPs that the reference optimizer (``sgd`` unless the
  profile says otherwise) spends in ``epochs`` epochs, so SGD runs about twice SAM's epochs.
- ``time``: the same with wall-clock seconds of training steps.

A step's cost is probed before the run, on a throwaway copy of the model (FLOPs are exact and
repeatable; seconds are noisy). The step count is fixed before training, so the LR schedule, and
SSAM-D's drop-rate schedule, span exactly the budget. What the run then really spent, measured on the
run itself, goes into the record next to the budget.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

UNITS = {"epochs": "epochs", "flops": "FLOP", "time": "s"}


def amortised(per_step: Sequence[float], window: int) -> float:
    """Mean cost per step over a period of ``window`` steps from ``len(per_step)`` probed steps.

    If fewer steps than the period were probed, the period's extra work (a mask refresh) is taken to
    fall on one of the probed steps, whichever it is (the suite's SSAM-F refreshes at step 0, the paper's
    timing after step 0, i.e. in step 1's call), and the period's other steps to cost what a typical
    probed step costs (the lower median: extra work only adds).
    """
    if not per_step:
        raise ValueError("no probed steps")
    if len(per_step) >= window or len(per_step) == 1:
        return sum(per_step[:window]) / min(window, len(per_step))
    return (sum(per_step) + (window - len(per_step)) * statistics.median_low(per_step)) / window


def steps_within(amount: float, cost_per_step: float) -> int:
    """The most whole steps whose cost fits in ``amount`` (at least one)."""
    if not (cost_per_step > 0 and math.isfinite(cost_per_step)):
        raise ValueError(f"a step's cost must be a positive number, got {cost_per_step!r}")
    return max(1, math.floor(amount / cost_per_step + 1e-9))


@dataclass(frozen=True)
class Mix:
    """The cost of a method whose steps are of two kinds (``registry.StepMix``): each kind's, probed on its own,
    and how many of a run's T steps are expected to be SAM's (``sam_steps(T)``)."""

    one_pass: float  # a step of the base optimizer's kind
    sam: float  # a SAM step (both passes)
    sam_steps: Callable[[int], float]

    def total(self, steps: int) -> float:
        """What ``steps`` steps are expected to cost."""
        n = self.sam_steps(steps)
        return (steps - n) * self.one_pass + n * self.sam

    def per_step(self, steps: int) -> float:
        """A step's cost over a run of ``steps`` steps: ``(1 - s) * one_pass + s * sam``, s the expected share."""
        return weighted(self.one_pass, self.sam, self.sam_steps(steps) / steps)


def weighted(one_pass: float, sam: float, share: float) -> float:
    """A step's cost when ``share`` of the steps are SAM's and the rest the base optimizer's."""
    return (1 - share) * one_pass + share * sam


def steps_within_mixed(amount: float, mix: Mix) -> int:
    """The most whole steps whose expected cost fits in ``amount`` (at least one). The share of SAM steps may
    depend on the run's length (late-phase SAM switches at ceil(0.875 T)), so the length is solved for, not
    divided out: the total grows with every step, so the largest T that fits lies between the all-SAM and the
    all-one-pass counts, found by bisection."""
    low, high = steps_within(amount, max(mix.one_pass, mix.sam)), steps_within(amount, min(mix.one_pass, mix.sam))
    while low < high:
        mid = (low + high + 1) // 2
        if mix.total(mid) <= amount * (1 + 1e-9):
            low = mid
        else:
            high = mid - 1
    return low


def plan(kind: str, epochs: int, steps_per_epoch: int, reference: str | None = None,
         reference_cost: float | None = None, own_cost: float | None = None, mix: Mix | None = None) -> dict[str, Any]:
    """The budget of one run: its kind, unit, amount and the number of steps that fit. ``mix``: the optimizer's
    steps are of two kinds, priced each and weighted by the share expected over the planned steps; the plan then
    also says that share and each kind's cost."""
    if kind == "epochs":
        return {"kind": kind, "unit": UNITS[kind], "amount": epochs, "reference": None,
                "steps": epochs * steps_per_epoch}
    if kind not in UNITS or reference_cost is None or (own_cost is None and mix is None):
        raise ValueError(f"budget {kind!r} needs the reference's and the optimizer's cost per step")
    amount = reference_cost * epochs * steps_per_epoch
    out = {"kind": kind, "unit": UNITS[kind], "amount": amount, "reference": reference,
           "reference_epochs": epochs, "reference_cost_per_step": reference_cost}
    if mix is None:
        return {**out, "probed_cost_per_step": own_cost, "steps": steps_within(amount, own_cost)}
    steps = steps_within_mixed(amount, mix)
    return {**out, "probed_cost_per_step": mix.per_step(steps), "steps": steps,
            "planned_sam_share": mix.sam_steps(steps) / steps, "probed_cost_one_pass_step": mix.one_pass,
            "probed_cost_sam_step": mix.sam}


def spent(budget: dict[str, Any], steps: int, steps_per_epoch: int, flops_per_step: float | None,
          time_per_step: float | None) -> dict[str, Any]:
    """The budget, completed with what the run spent, measured on the run itself."""
    flops = flops_per_step * steps if flops_per_step is not None else None
    seconds = time_per_step * steps if time_per_step is not None else None
    used = {"epochs": steps / steps_per_epoch, "flops": flops, "time": seconds}[budget["kind"]]
    return {**budget, "steps_run": steps, "epochs_run": steps / steps_per_epoch, "spent": used,
            "spent_ratio": used / budget["amount"] if used is not None else None,
            "train_flops": flops, "train_seconds_at_timed_rate": seconds}
