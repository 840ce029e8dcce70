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
from collections.abc import Sequence
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


def plan(kind: str, epochs: int, steps_per_epoch: int, reference: str | None = None,
         reference_cost: float | None = None, own_cost: float | None = None) -> dict[str, Any]:
    """The budget of one run: its kind, unit, amount and the number of steps that fit."""
    if kind == "epochs":
        return {"kind": kind, "unit": UNITS[kind], "amount": epochs, "reference": None,
                "steps": epochs * steps_per_epoch}
    if kind not in UNITS or reference_cost is None or own_cost is None:
        raise ValueError(f"budget {kind!r} needs the reference's and the optimizer's cost per step")
    amount = reference_cost * epochs * steps_per_epoch
    return {"kind": kind, "unit": UNITS[kind], "amount": amount, "reference": reference,
            "reference_epochs": epochs, "reference_cost_per_step": reference_cost,
            "probed_cost_per_step": own_cost, "steps": steps_within(amount, own_cost)}


def spent(budget: dict[str, Any], steps: int, steps_per_epoch: int, flops_per_step: float | None,
          time_per_step: float | None) -> dict[str, Any]:
    """The budget, completed with what the run spent, measured on the run itself."""
    flops = flops_per_step * steps if flops_per_step is not None else None
    seconds = time_per_step * steps if time_per_step is not None else None
    used = {"epochs": steps / steps_per_epoch, "flops": flops, "time": seconds}[budget["kind"]]
    return {**budget, "steps_run": steps, "epochs_run": steps / steps_per_epoch, "spent": used,
            "spent_ratio": used / budget["amount"] if used is not None else None,
            "train_flops": flops, "train_seconds_at_timed_rate": seconds}
