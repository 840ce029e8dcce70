"""The one training loop. Every optimizer is stepped as ``loss = opt.step(closure)`` and nothing else.

Per seed, every optimizer sees the same initial weights (torch's RNG seeded before the model is
built), the same batch order and the same augmentation (two generators owned by the loop, never
touched by optimizers). The first ``W`` steps are counted by ``FlopCounterMode`` and left out of the
clock, with ``W`` = the profile's ``flop_steps`` or the optimizer's declared period, whichever is
larger; the first of them is the discarded warm-up. Evaluation runs outside the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from baselines.closure import Meter, ModelClosure
from suite import budget, registry, store
from suite.config import COMMON_HPARAMS, RunConfig, TrainConfig
from suite.data import Augment, Dataset, Split, class_balanced_subset, epoch_batches
from suite.measure import FlopMeter, PeakMemory, StepClock, environment, sync
from suite.models import build_model
from suite.store import SCHEMA

SUBSET_SEED = 0  # the data subset is the same for every run of a profile, whatever its seed
PROBE_FLOP_STEPS = 16  # at most this many steps are FLOP-counted to price a step (see budget.amortised)
PROBE_TIME_STEPS = 5  # timed steps (after one discarded) to price a step in seconds
_COSTS: dict[tuple, float] = {}  # probed cost per step, per configuration without its seed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(name)


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """Independent random streams per purpose (0: batch order, 1: augmentation)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def cosine(total_steps: int) -> Callable[[int], float]:
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps))


def subsets(dataset: Dataset, train: TrainConfig) -> tuple[Split, Split]:
    return (
        class_balanced_subset(dataset.train, train.train_subset, SUBSET_SEED),
        class_balanced_subset(dataset.test, train.test_subset, SUBSET_SEED),
    )


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, augment: Augment, cfg: TrainConfig, device: torch.device):
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), cfg.eval_batch_size):
        x = _to_device(augment.normalise(split.images[i : i + cfg.eval_batch_size]), device, cfg)
        y = split.labels[i : i + cfg.eval_batch_size].to(device)
        out = model(x)
        loss_sum += torch.nn.functional.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train()
    return loss_sum / len(split), correct / len(split)


def _to_device(x: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return x.to(device, non_blocking=True).contiguous(memory_format=fmt)


def _model(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> nn.Module:
    """Weights come from torch's global RNG: the caller seeds it."""
    model = build_model(cfg.model, dataset.num_classes).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _augment(cfg: TrainConfig, dataset: Dataset) -> Augment:
    return Augment(dataset.mean, dataset.std, cfg.crop_padding, cfg.flip, cfg.cutout, cfg.cutout_p)


def warm_up(config: RunConfig, dataset: Dataset, steps: int = 3) -> None:
    """A few throwaway SGD steps at the profile's shapes, so that the first timed run does not pay
    for the process's one-off costs (kernel selection, allocator growth)."""
    cfg = config.train
    device = resolve_device(cfg.device)
    model = _model(cfg, dataset, device)
    augment = _augment(cfg, dataset)
    n = min(cfg.batch_size, len(dataset.train))
    x = _to_device(augment(dataset.train.images[:n], torch.Generator().manual_seed(0)), device, cfg)
    closure = ModelClosure(model, x, dataset.train.labels[:n].to(device))
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
            _COSTS[key] = _probe(config, dataset, kind)
    return _COSTS[key]


def _probe(config: RunConfig, dataset: Dataset, kind: str) -> float:
    if kind == "time":  # one throwaway step first: the timed step 0 then pays its periodic work only
        _probe_steps(config, dataset, "time", 1)
    return _probe_steps(config, dataset, kind, 0)


def _probe_steps(config: RunConfig, dataset: Dataset, kind: str, steps: int) -> float:
    cfg = config.train
    spec = registry.get(config.optimizer)
    device = resolve_device(cfg.device)
    train_split, _ = subsets(dataset, cfg)
    torch.manual_seed(0)
    model = _model(cfg, dataset, device)
    inputs = _inputs(model, train_split, cfg, 0)
    optimizer = spec.build(model.parameters(), inputs, **dict(config.hparams))
    window = _flop_window(spec, cfg, inputs, dict(config.hparams))
    if not steps:
        steps = min(window, PROBE_FLOP_STEPS) if kind == "flops" else PROBE_TIME_STEPS + 1
    augment, gen = _augment(cfg, dataset), seeded_generator(0, 2)
    order = torch.randperm(len(train_split), generator=gen)
    clock, costs = StepClock(device), []
    for i in range(steps):
        idx = order[(i * cfg.batch_size) % (len(order) - cfg.batch_size + 1):][: cfg.batch_size]
        x = _to_device(augment(train_split.images[idx], gen), device, cfg)
        closure = ModelClosure(model, x, train_split.labels[idx].to(device))
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
    # Step 0 carries the period's extra work (SSAM-F's Fisher pass); the others' median resists noise.
    rest = sorted(costs[1:])
    median = rest[len(rest) // 2] if rest else costs[0]
    return median if window == 1 else budget.amortised([costs[0], median], window)


def reference_config(config: RunConfig) -> RunConfig:
    """The budget's reference optimizer on the same training settings, with its registered defaults."""
    train = config.train
    spec = registry.get(train.budget_reference)
    hparams = spec.resolved_hparams({k: getattr(train, k) for k in COMMON_HPARAMS}, {})
    return RunConfig(config.profile, spec.name, config.seed, train, tuple(sorted(hparams.items())))


def plan_budget(config: RunConfig, dataset: Dataset, steps_per_epoch: int) -> dict[str, Any]:
    cfg = config.train
    if cfg.budget == "epochs":
        return budget.plan("epochs", cfg.epochs, steps_per_epoch)
    return budget.plan(cfg.budget, cfg.epochs, steps_per_epoch, reference=cfg.budget_reference,
                       reference_cost=step_cost(reference_config(config), dataset, cfg.budget),
                       own_cost=step_cost(config, dataset, cfg.budget))


def _inputs(model: nn.Module, train_split: Split, cfg: TrainConfig, seed: int, total_steps: int | None = None):
    steps_per_epoch = len(train_split) // cfg.batch_size
    return {"model": model, "total_steps": total_steps or steps_per_epoch * cfg.epochs,
            "steps_per_epoch": steps_per_epoch, "seed": seed}


def _flop_window(spec: registry.OptimizerSpec, cfg: TrainConfig, inputs: dict, hparams: dict) -> int:
    return max(cfg.flop_steps, spec.flop_window({**inputs, **hparams}) if spec.flop_window else 1)


def _snapshot(config: RunConfig, plan: dict, trainer: dict[str, Any], ledger: dict[str, Any]) -> dict[str, Any]:
    """Everything a run needs to go on where it stopped; ``trainer`` holds the stateful objects."""
    return {
        "run_id": config.run_id, "plan": plan, "torch_rng": torch.get_rng_state(), "ledger": ledger,
        **{name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
           for name, obj in trainer.items()},
    }


def _restore(trainer: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """Load a snapshot into the freshly built ``trainer`` objects; returns the snapshot's ledger."""
    for name, obj in trainer.items():
        (obj.set_state if isinstance(obj, torch.Generator) else obj.load_state_dict)(saved[name])
    torch.set_rng_state(saved["torch_rng"])
    return saved["ledger"]


def run(config: RunConfig, dataset: Dataset, progress: bool = True, checkpoint: Path | None = None,
        on_checkpoint: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train one configuration and return its record (not yet written).

    With ``checkpoint``, the run saves its whole state there after every epoch but the last (atomically)
    and, if the file exists when it starts, resumes from it: model, optimizer (masks, generators),
    LR schedule, the data-order and augmentation generators, torch's RNG, the counters and the budget.
    A resumed run ends bit-identical to one never interrupted (all but the wall-clock figures).
    ``on_checkpoint`` is called after each save (the CLI refreshes its claim there)."""
    cfg, seed = config.train, config.seed
    spec = registry.get(config.optimizer)
    hparams = dict(config.hparams)
    device = resolve_device(cfg.device)
    train_split, test_split = subsets(dataset, cfg)
    if len(train_split) < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({len(train_split)})")
    saved = store.load_checkpoint(checkpoint, config.run_id) if checkpoint is not None else None
    # probes (if any) run before the seed is set: they touch no run state; a resumed run keeps its plan
    steps_per_epoch = len(train_split) // cfg.batch_size
    plan = saved["plan"] if saved else plan_budget(config, dataset, steps_per_epoch)

    torch.manual_seed(seed)
    model = _model(cfg, dataset, device)
    total_steps = plan["steps"]
    inputs = _inputs(model, train_split, cfg, seed, total_steps)
    optimizer = spec.build(model.parameters(), inputs, **hparams)
    schedule = cosine(total_steps) if cfg.schedule == "cosine" else (lambda t: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order_gen, aug_gen = seeded_generator(seed, 0), seeded_generator(seed, 1)
    augment = _augment(cfg, dataset)

    window = _flop_window(spec, cfg, inputs, hparams)
    untimed = min(window, max(total_steps - 1, 1))
    meter, clock, flops, memory = Meter(), StepClock(device), FlopMeter(), PeakMemory(device)
    passes = {"forward": 0, "backward": 0, "forward_samples": 0, "backward_samples": 0}
    epochs: list[dict[str, Any]] = []
    status, diverged_at, last_finite = "finished", None, None
    env = environment(device)  # before training: the commit that starts the run is the one that ran
    started, t_start = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
    step, wall_before, resumed, saving = 0, 0.0, [], {"seconds": 0.0, "count": 0}
    trainer = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "order_gen": order_gen,
               "aug_gen": aug_gen}
    if saved:
        led = _restore(trainer, saved)
        step, epochs, passes, started, wall_before = (led["step"], led["epochs"], led["passes"], led["started"],
                                                       led["wall_seconds"])
        clock.timed_seconds, clock.timed_steps, clock.all_seconds = led["clock"]
        flops.flops, flops.steps = led["flops"]
        resumed, saving = led["resumed"] + [len(epochs)], led["saving"]
    model.train()
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    for epoch in range(len(epochs) + 1, n_epochs + 1):
        epoch_seconds, loss_sum, finite_steps = 0.0, 0.0, 0
        batches = epoch_batches(len(train_split), cfg.batch_size, order_gen)[: total_steps - step]
        bar = tqdm(batches, desc=f"{config.optimizer} seed {seed} epoch {epoch}/{n_epochs}", unit="step",
                   leave=False, disable=None if progress else True)
        for idx in bar:
            x = _to_device(augment(train_split.images[idx], aug_gen), device, cfg)
            y = train_split.labels[idx].to(device, non_blocking=True)
            closure = ModelClosure(model, x, y, meter=meter)
            meter.reset()
            clock.start()
            with flops.counting(step < untimed):
                loss = optimizer.step(closure)
            epoch_seconds += clock.stop(timed=step >= untimed)
            scheduler.step()
            passes["forward"] += meter.forward_passes
            passes["backward"] += meter.backward_passes
            passes["forward_samples"] += meter.forward_samples
            passes["backward_samples"] += meter.backward_samples
            step += 1
            value = float(loss)
            if not math.isfinite(value):
                status, diverged_at = "diverged", step
                break
            last_finite = value
            loss_sum += value
            finite_steps += 1
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        bar.close()
        test_loss, test_acc = evaluate(model, test_split, augment, cfg, device)
        epochs.append({
            "epoch": epoch,
            "step": step,
            "epochs_done": step / steps_per_epoch,
            "train_loss": loss_sum / finite_steps if finite_steps else None,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "train_seconds": epoch_seconds,
            "lr": optimizer.param_groups[0]["lr"],
        })
        if status != "finished":
            break
        if checkpoint is not None and epoch < n_epochs:
            t0 = time.perf_counter()
            store.save_checkpoint(checkpoint, _snapshot(config, plan, trainer, {
                "step": step, "epochs": epochs, "passes": passes, "started": started,
                "wall_seconds": wall_before + time.monotonic() - t_start, "resumed": resumed,
                "clock": [clock.timed_seconds, clock.timed_steps, clock.all_seconds],
                "flops": [flops.flops, flops.steps],
                "saving": {**saving, "count": saving["count"] + 1},  # this save included
            }))
            saving["seconds"] += time.perf_counter() - t0
            saving["count"] += 1
            if on_checkpoint is not None:
                on_checkpoint()

    timed = clock.timed_steps
    metrics = {
        "status": status,
        "diverged_at_step": diverged_at,
        "last_finite_loss": last_finite,
        "test_acc": epochs[-1]["test_acc"],
        "test_loss": epochs[-1]["test_loss"],
        "best_test_acc_on_test_set": max(e["test_acc"] for e in epochs),
        "train_loss": epochs[-1]["train_loss"],
        "steps": step,
        "timed_steps": timed,
        "flop_counted_steps": flops.steps,
        "train_seconds": clock.all_seconds,
        "time_per_step_s": clock.timed_seconds / timed if timed else None,
        "samples_per_s": cfg.batch_size * timed / clock.timed_seconds if timed else None,
        "flops_per_step": flops.per_step,
        "forward_passes_per_step": passes["forward"] / step,
        "backward_passes_per_step": passes["backward"] / step,
        "forward_samples_per_step": passes["forward_samples"] / step,
        "backward_samples_per_step": passes["backward_samples"] / step,
        "peak_memory_mb": memory.read_mb(),
        "peak_memory_kind": memory.kind,
        "checkpoints": saving["count"],
        "checkpoint_seconds": saving["seconds"],
    }
    metrics["budget"] = budget.spent(plan, step, steps_per_epoch, metrics["flops_per_step"], metrics["time_per_step_s"])
    return {
        "schema": SCHEMA,
        "run_id": config.run_id,
        "config": config.as_dict(),
        "optimizer": {"name": spec.name, "alias_of": spec.alias_of, "description": spec.description,
                      "passes_per_step": spec.passes_per_step},
        "data": {"dataset": dataset.name, "source": dataset.source, "train_size": len(train_split),
                 "test_size": len(test_split)},
        "env": env,
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall_before + time.monotonic() - t_start,
        "resumed_after_epochs": resumed,
        "metrics": metrics,
        "epochs": epochs,
    }
