"""A step's cost, probed before a run: FLOPs (amortised over the optimizer's period) or seconds, on a
throwaway model and optimizer built like the run's (seed 0, the first batches of its training subset). The
equal-FLOPs and equal-time budgets plan a run's steps from these probes (``plan_budget``); ``suite cost``
repeats them, interleaved, to price every method's step without training.

A method whose steps mix the base optimizer's and SAM's in a share no period repeats (``registry.StepMix``:
late-phase SAM, RST, AE-SAM) is priced by kind: a one-pass step and a SAM step, each probed with the kind forced,
weighted by the share of SAM steps expected over the run (``expected_share``); a run's record weights the same
two by the share it realised (``suite.metrics``).
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


def step_cost(config: RunConfig, dataset: Dataset, kind: str, two_passes: bool | None = None) -> float:
    """A step's cost in FLOPs (``kind="flops"``) or seconds (``"time"``), probed on a throwaway model
    built like the run's, with seed 0, on the first batches of the training subset. Cached per process.
    ``two_passes``: a step of that kind only (``kind_costs``)."""
    key = (kind, config.optimizer, config.hparams, config.train, two_passes)
    if key not in _COSTS:
        with torch.random.fork_rng(devices=[]):
            _COSTS[key] = (fresh_step_cost(config, dataset, kind) if two_passes is None
                           else fresh_step_cost(config, dataset, kind, two_passes))
    return _COSTS[key]


def fresh_step_cost(config: RunConfig, dataset: Dataset, kind: str, two_passes: bool | None = None) -> float:
    """``step_cost`` measured anew (no cache): the cost command repeats it. For a method whose steps mix two
    kinds (``registry.StepMix``), each kind is probed on its own and weighted by the share of SAM steps
    expected over a run of the profile's epochs (``expected_share``): its first steps would price the wrong
    mix (late-phase SAM's are all SGD's). ``two_passes`` True or False: that kind of step alone."""
    if two_passes is None and registry.get(config.optimizer).step_mix is not None:
        one, sam = (fresh_step_cost(config, dataset, kind, two) for two in (False, True))
        return budget.weighted(one, sam, expected_share(config, dataset))
    if kind == "time":  # one throwaway step first: the timed step 0 then pays its periodic work only
        # compiled: a few, so that the shapes an optimizer's passes take (a sub-batch ascent's) are compiled
        _probe_steps(config, dataset, "time", 1 if config.train.compile == "none" else COMPILE_STEPS, two_passes)
    return _probe_steps(config, dataset, kind, 0, two_passes)


def kind_costs(config: RunConfig, dataset: Dataset, kind: str) -> tuple[float, float]:
    """(a one-pass step's cost, a SAM step's) of a method whose steps mix the two, each probed with the kind forced
    (``step_kind``) on the same throwaway model and batches; cached per process."""
    return step_cost(config, dataset, kind, False), step_cost(config, dataset, kind, True)


def planned_steps(config: RunConfig, dataset: Dataset) -> int:
    """The steps of a run of the profile's epochs (an ``epochs`` budget): the T the cost table prices."""
    spe = max(1, len(subsets(dataset, config.train)[0]) // config.train.batch_size)
    return spe * config.train.epochs_for(spe)


def expected_sam_steps(config: RunConfig, dataset: Dataset) -> Callable[[int], float]:
    """T -> the SAM steps expected in a run of T steps (``registry.StepMix.sam_steps``), read from an optimizer
    built as the run's is (its hyper-parameters: late-phase SAM's ``switch_at``, RST's p)."""
    mix = registry.get(config.optimizer).step_mix
    if mix is None:
        raise ValueError(f"{config.optimizer}: its steps are of one kind (no step_mix)")
    with torch.random.fork_rng(devices=[]):
        _, optimizer = build(config, dataset, subsets(dataset, config.train)[0], torch.device("cpu"), seed=0)
    return lambda steps: mix.sam_steps(optimizer, steps)


def expected_share(config: RunConfig, dataset: Dataset, steps: int | None = None) -> float:
    """The share of SAM steps expected over a run of ``steps`` steps (default: the profile's epochs)."""
    steps = steps or planned_steps(config, dataset)
    return expected_sam_steps(config, dataset)(steps) / steps


@dataclass
class Probe:
    """A throwaway model and optimizer built like a run's (seed 0), and the closures of its probe steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    window: int  # steps over which a step's cost varies periodically
    device: torch.device
    # (n, timed) -> the closures of n steps, in order; timed: they call the compiled model (``compiled``)
    closures: Callable[..., Iterator[ModelClosure]]


def probe_setup(config: RunConfig, dataset: Dataset, two_passes: bool | None = None) -> Probe:
    """A throwaway model and optimizer; ``two_passes`` True or False: every step it takes is of that kind."""
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
                              train_split.labels[idx].to(device), cfg, indices=idx, optimizer=optimizer)

    if two_passes is not None:
        optimizer.forced_kind = bool(two_passes)  # TwoPassOptimizer.step_kind, held for the probe's life
    return Probe(model, optimizer, flop_window(registry.get(config.optimizer), cfg, optimizer), device, closures)


def _probe_steps(config: RunConfig, dataset: Dataset, kind: str, steps: int, two_passes: bool | None = None) -> float:
    return probe_cost(probe_setup(config, dataset, two_passes), kind, steps)


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
    """A run's budget. A method whose steps mix two kinds gets the most steps whose expected cost fits: each kind
    probed, weighted by the share expected over those steps (exact for late-phase SAM's schedule, p for RST, the
    declared share for AE-SAM, whose gradients decide: ``registry.StepMix``); its record then says what the
    share it realised spent (``budget_spent_ratio``)."""
    cfg = config.train
    if cfg.budget == "epochs":
        return budget.plan("epochs", cfg.epochs_for(steps_per_epoch), steps_per_epoch)
    reference_cost = step_cost(reference_config(config), dataset, cfg.budget)
    if registry.get(config.optimizer).step_mix is not None:
        one, sam = kind_costs(config, dataset, cfg.budget)
        mix = budget.Mix(one, sam, expected_sam_steps(config, dataset))
        return budget.plan(cfg.budget, cfg.epochs_for(steps_per_epoch), steps_per_epoch,
                           reference=cfg.budget_reference, reference_cost=reference_cost, mix=mix)
    return budget.plan(cfg.budget, cfg.epochs_for(steps_per_epoch), steps_per_epoch, reference=cfg.budget_reference,
                       reference_cost=reference_cost, own_cost=step_cost(config, dataset, cfg.budget))


