"""A step's cost, probed before a run: FLOPs (amortised over the optimizer's period) or seconds, on a
throwaway model and optimizer built like the run's (seed 0, the first batches of its training subset). The
equal-FLOPs and equal-time budgets plan a run's steps from these probes (``plan_budget``); ``suite cost``
repeats them, interleaved, to price every method's step without training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from baselines.core import ModelClosure
from suite import budget, registry
from suite.build import (
    COMPILE_STEPS,
    build,
    closure_for,
    compiled,
    evaluate,
    flop_window,
    make_augment,
    make_model,
    resolve_device,
    seeded_generator,
    subsets,
    to_device,
)
from suite.config import RunConfig, resolve_hparams
from suite.data import Dataset, Split
from suite.measure import FlopMeter, StepClock, sync

FLOP_STEPS = 16  # at most this many steps are FLOP-counted to price a step (see budget.amortised)
TIME_STEPS = 5  # timed steps (after one discarded) to price a step in seconds
_COSTS: dict[tuple, float] = {}  # probed cost per step, per configuration without its seed


def warm_up(config: RunConfig, dataset: Dataset, steps: int = 3) -> None:
    """A few throwaway forward/backward passes and an evaluation batch at the profile's shapes, so that
    the first timed run does not pay for the process's one-off costs (kernel selection, allocator growth)."""
    cfg = config.train
    device = resolve_device(cfg.device)
    model = make_model(cfg, dataset, device)
    augment = make_augment(cfg, dataset)
    n = min(cfg.batch_size, len(dataset.train))
    x = to_device(augment(dataset.train.images[:n], torch.Generator().manual_seed(0)), device, cfg)
    closure = closure_for(model, x, dataset.train.labels[:n].to(device), cfg)
    for _ in range(steps):
        closure()
    evaluate(model, Split(dataset.test.images[: cfg.eval_batch_size], dataset.test.labels[: cfg.eval_batch_size]),
             augment, cfg, device)
    sync(device)


def step_cost(config: RunConfig, dataset: Dataset, kind: str) -> float:
    """A step's cost in FLOPs (``kind="flops"``) or seconds (``"time"``), probed on a throwaway model
    built like the run's, with seed 0, on the first batches of the training subset. Cached per process."""
    key = (kind, config.optimizer, config.hparams, config.train)
    if key not in _COSTS:
        with torch.random.fork_rng(devices=[]):
            _COSTS[key] = fresh_step_cost(config, dataset, kind)
    return _COSTS[key]


def fresh_step_cost(config: RunConfig, dataset: Dataset, kind: str) -> float:
    """``step_cost`` measured anew (no cache): the cost command repeats it."""
    if kind == "time":  # one throwaway step first: the timed step 0 then pays its periodic work only
        # compiled: a few, so that the shapes an optimizer's passes take (a sub-batch ascent's) are compiled
        _probe_steps(config, dataset, "time", 1 if config.train.compile == "none" else COMPILE_STEPS)
    return _probe_steps(config, dataset, kind, 0)


@dataclass
class Probe:
    """A throwaway model and optimizer built like a run's (seed 0), and the closures of its probe steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    window: int  # steps over which a step's cost varies periodically
    device: torch.device
    # (n, timed) -> the closures of n steps, in order; timed: they call the compiled model (``compiled``)
    closures: Callable[..., Iterator[ModelClosure]]


def probe_setup(config: RunConfig, dataset: Dataset) -> Probe:
    cfg = config.train
    device = resolve_device(cfg.device)
    train_split, _ = subsets(dataset, cfg)
    model, optimizer = build(config, dataset, train_split, device, seed=0)
    augment, gen = make_augment(cfg, dataset), seeded_generator(0, 2)
    order = torch.randperm(len(train_split), generator=gen)
    fast = compiled(model, cfg)

    def closures(n: int, timed: bool = False) -> Iterator[ModelClosure]:
        for i in range(n):
            idx = order[(i * cfg.batch_size) % (len(order) - cfg.batch_size + 1):][: cfg.batch_size]
            yield closure_for(fast if timed else model, to_device(augment(train_split.images[idx], gen), device, cfg),
                              train_split.labels[idx].to(device), cfg)

    return Probe(model, optimizer, flop_window(registry.get(config.optimizer), cfg, optimizer), device, closures)


def _probe_steps(config: RunConfig, dataset: Dataset, kind: str, steps: int) -> float:
    return probe_cost(probe_setup(config, dataset), kind, steps)


def probe_cost(probe: Probe, kind: str, steps: int = 0) -> float:
    """Step ``probe``'s optimizer and price a step: FLOPs amortised over its window, or seconds."""
    optimizer, window = probe.optimizer, probe.window
    if not steps:  # time: at least the FLOP count's steps of a period, so a drawn schedule (RST) is priced alike
        steps = min(window, FLOP_STEPS) if kind == "flops" else max(TIME_STEPS + 1,
                                                                          min(window, FLOP_STEPS))
    clock, costs = StepClock(probe.device), []
    for closure in probe.closures(steps, timed=kind == "time"):
        if kind == "flops":
            flops = FlopMeter()
            with flops.counting(True):
                optimizer.step(closure)
            costs.append(float(flops.flops))
        else:
            clock.start()
            optimizer.step(closure)
            costs.append(clock.stop(timed=True))
    if kind == "flops":
        return budget.amortised(costs, window)
    if window > 1:  # the period's extra work (SSAM-F's Fisher pass) is in one of the probed steps
        return budget.amortised(costs, window)
    rest = sorted(costs[1:])  # the first step is discarded, the others' median resists noise
    return rest[len(rest) // 2] if rest else costs[0]


def reference_config(config: RunConfig) -> RunConfig:
    """The budget's reference optimizer on the same training settings, with the hyper-parameters the
    profile gives it (``RunConfig.reference_hparams``, set by the sweep; else its registered defaults)."""
    info = registry.get(config.train.budget_reference)
    hparams = config.reference_hparams or tuple(sorted(resolve_hparams(info, config.train, {}).items()))
    return RunConfig(config.profile, info.name, config.seed, config.train, hparams)


def plan_budget(config: RunConfig, dataset: Dataset, steps_per_epoch: int) -> dict[str, Any]:
    cfg = config.train
    if cfg.budget == "epochs":
        return budget.plan("epochs", cfg.epochs_for(steps_per_epoch), steps_per_epoch)
    return budget.plan(cfg.budget, cfg.epochs_for(steps_per_epoch), steps_per_epoch, reference=cfg.budget_reference,
                       reference_cost=step_cost(reference_config(config), dataset, cfg.budget),
                       own_cost=step_cost(config, dataset, cfg.budget))


