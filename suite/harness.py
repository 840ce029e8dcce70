"""The one training loop. Every optimizer is stepped as ``loss = opt.step(closure)`` and nothing else
(``suite.build.optimizer_step``; under fp16 a one-pass optimizer such as SGD takes torch's GradScaler path instead:
the closure, then ``scaler.step`` — the scaler takes no closure).

A run reads top to bottom in ``run``: its context (what it reads and never changes), its state (what
it changes, saved by the checkpoint), then per epoch ``train_epoch`` and ``evaluate_epoch``, and at
the end ``make_record``, whose metrics are the ones declared in ``suite.metrics``.

Per seed, every optimizer sees the same initial weights (torch's RNG seeded before the model is
built), the same batch order and the same augmentation (two generators owned by the loop, never
touched by optimizers). The first ``W`` steps are counted by ``FlopCounterMode`` and left out of the
clock, with ``W`` = the profile's ``flop_steps`` or the optimizer's declared period, whichever is
larger; the first of them is the discarded warm-up. Evaluation runs outside the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from baselines.core import Meter
from suite import metrics, registry, store
from suite.build import (
    COMPILE_STEPS,
    build,
    closure_for,
    compiled,
    evaluate,
    flop_window,
    make_augment,
    optimizer_step,
    resolve_device,
    schedule_for,
    scored_on,
    seeded_generator,
    subsets,
    to_device,
)
from suite.config import RunConfig, TrainConfig
from suite.data import Augment, Dataset, DeviceData, Split, epoch_batches
from suite.distributed import ONE_PROCESS, World, mean_of
from suite.measure import FlopMeter, PeakMemory, StepClock, environment
from suite.probe import plan_budget
from suite.store import SCHEMA
from suite.streaming import streamed


@dataclass
class RunContext:
    """What a run reads and never changes."""

    config: RunConfig
    info: registry.OptimizerInfo
    dataset: Dataset
    device: torch.device
    train_split: Split  # the profile's (sub)set of the training images, with its label noise
    eval_split: Split  # what it is scored on: the test (sub)set, or its validation split (``build.subsets``)
    augment: Augment
    steps_per_epoch: int
    env: dict[str, Any]
    world: World = ONE_PROCESS  # the processes this run is one of (torchrun); each trains a slice of every batch
    on_device: DeviceData | None = None  # the training split held on the device (``TrainConfig.device_data``)

    def replica_slice(self) -> slice:
        """This replica's part of a global batch: rank r of N takes the r-th of N equal parts, in order."""
        per = self.config.train.batch_size // self.world.size
        return slice(self.world.rank * per, (self.world.rank + 1) * per)


def context(config: RunConfig, dataset: Dataset, world: World = ONE_PROCESS) -> RunContext:
    """What a run reads: its device, its (sub)sets of the data, its augmentation and environment."""
    cfg = config.train
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    train, held = subsets(dataset, cfg)
    check_batch(cfg, train)
    check_replicas(cfg, world.size)
    # the environment before training: the commit that starts the run is the one that ran, checked for the
    # profile files it was configured from too
    env = environment(device, config.source.files if config.source is not None else ())
    augment = make_augment(cfg, dataset)
    on_device = DeviceData(train, augment, device) if cfg.device_data else None
    return RunContext(config, registry.get(config.optimizer), dataset, device, train, held,
                      augment, len(train) // cfg.batch_size, env, world, on_device)


def check_batch(cfg: TrainConfig, train_split: Split) -> None:
    """A batch is drawn from the training (sub)set without replacement: it cannot be larger."""
    if len(train_split) < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({len(train_split)})")


def check_replicas(cfg: TrainConfig, replicas: int) -> None:
    """A run is planned for the number of processes it runs in (``TrainConfig.replicas``, set by the CLI)."""
    if cfg.replicas != replicas:
        raise ValueError(f"this run is configured for {cfg.replicas} processes (replicas) but runs in {replicas}")


class RunState:
    """Everything a run changes, and its ``state_dict``/``load_state_dict``: a run restored from a
    checkpoint goes on bit-identical to one never interrupted (all but the wall-clock figures)."""

    TRAINER = ("model", "optimizer", "scheduler")  # torch objects with their own state_dict
    GENERATORS = ("order_gen", "aug_gen", "sample_gen")
    COUNTERS = ("step", "epochs", "status", "diverged_at", "last_finite", "started", "resumed", "saving")

    def __init__(self, ctx: RunContext, plan: dict[str, Any]) -> None:
        cfg, seed = ctx.config.train, ctx.config.seed
        self.plan = plan
        self.sample_gen = seeded_generator(seed, 3)  # examples an optimizer draws for itself (SSAM-F's Fisher)
        self.model, self.optimizer = build(ctx.config, ctx.dataset, ctx.train_split, ctx.device, seed,
                                           plan["steps"], self.sample_gen)
        # what the closure steps: the model itself, or under torchrun its DistributedDataParallel wrapper
        # (rank 0's weights and buffers broadcast to every replica at the start and before every forward)
        self.replica = self.model if not ctx.world.distributed else nn.parallel.DistributedDataParallel(
            self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule_for(cfg, plan["steps"]))
        self.order_gen, self.aug_gen = seeded_generator(seed, 0), seeded_generator(seed, 1)
        self.untimed = min(flop_window(ctx.info, cfg, self.optimizer), max(plan["steps"] - 1, 1))
        self.fast = compiled(self.replica, cfg)  # the timed steps' (the FLOP-counted ones run the module itself)
        # compiled steps left untimed after every start or resume: compilation and CUDA-graph recording
        left = max(plan["steps"] - 1 - self.untimed, 0)
        self.cold = 0 if cfg.compile == "none" else min(COMPILE_STEPS, left)
        self.passes, self.clock, self.flops = Meter(), StepClock(ctx.device, deferred=True), FlopMeter(ctx.world.size)
        self.memory = PeakMemory(ctx.device)
        # fp16: the loss scale, checkpointed with the rest (a resumed run continues at the scale it reached)
        self.scaler = torch.amp.GradScaler(ctx.device.type) if cfg.precision == "fp16" else None
        self.step, self.epochs, self.resumed = 0, [], []
        self.status, self.diverged_at, self.last_finite = "finished", None, None
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.saving = {"seconds": 0.0, "count": 0}
        self.data_seconds = 0.0  # waiting for the next batch: augmentation, or the loader's workers
        self.wall_before, self._t0 = 0.0, time.monotonic()

    def wall_seconds(self) -> float:
        return self.wall_before + time.monotonic() - self._t0

    def state_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name).state_dict() for name in self.TRAINER},
            **{name: getattr(self, name).get_state() for name in self.GENERATORS},
            **{name: getattr(self, name) for name in self.COUNTERS},
            "torch_rng": torch.get_rng_state(), "plan": self.plan, "wall_seconds": self.wall_seconds(),
            "data_seconds": self.data_seconds,
            "passes": vars(self.passes).copy(), "clock": self.clock.state_dict(), "flops": self.flops.state_dict(),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for name in self.TRAINER:
            getattr(self, name).load_state_dict(saved[name])
        for name in self.GENERATORS:
            getattr(self, name).set_state(saved[name])
        for name in self.COUNTERS:
            setattr(self, name, saved[name])
        torch.set_rng_state(saved["torch_rng"])
        self.plan, self.wall_before, self._t0 = saved["plan"], saved["wall_seconds"], time.monotonic()
        self.data_seconds = saved.get("data_seconds", 0.0)  # absent from checkpoints written before it was
        self.passes = Meter(**saved["passes"])
        self.clock.load_state_dict(saved["clock"])
        self.flops.load_state_dict(saved["flops"])
        if self.scaler is not None:
            self.scaler.load_state_dict(saved["scaler"])
        self.resumed = self.resumed + [len(self.epochs)]


def train_epoch(ctx: RunContext, state: RunState, epoch: int, n_epochs: int, progress: bool) -> dict[str, Any]:
    """One epoch's steps (fewer where the budget ends); returns the epoch's training figures."""
    cfg, first, losses = ctx.config.train, state.step, []
    batches = epoch_batches(len(ctx.train_split), cfg.batch_size, state.order_gen)[: state.plan["steps"] - state.step]
    bar = tqdm(batches, desc=f"{ctx.config.optimizer} seed {ctx.config.seed} epoch {epoch}/{n_epochs}",
               unit="step", leave=False, disable=None if progress else True)
    meter = Meter()
    on_device = device_batches(ctx, state, batches)
    for _ in bar:
        waited = time.perf_counter()
        x, y, idx = next(on_device)
        state.data_seconds += time.perf_counter() - waited
        compiled_step = state.step >= state.untimed  # past the FLOP-counted steps: the compiled model, if any
        timed = compiled_step and not state.cold
        closure = closure_for(state.fast if compiled_step else state.replica, x, y, cfg, meter=meter,
                              scaler=state.scaler, indices=idx, optimizer=state.optimizer)
        meter.reset()
        state.clock.start()
        with state.flops.counting(state.step < state.untimed):
            loss = optimizer_step(state.optimizer, closure, state.scaler)
        state.clock.stop(timed=timed)  # on CUDA no wait for the device: its events are read once, below
        if compiled_step and state.cold:
            state.cold -= 1
        state.scheduler.step()
        state.passes += meter
        state.step += 1
        losses.append(loss.detach().float())  # not read here: a read would wait for the step to finish
    bar.close()
    return {"train_loss": read_losses(state, first, losses), "train_seconds": state.clock.settle()}


def read_losses(state: RunState, first: int, losses: list[torch.Tensor]) -> float | None:
    """The epoch's mean training loss over its finite steps, read from the device once per epoch (one
    all-reduce under torchrun: the global batches' losses, so every replica takes the same decision).
    A loss that is NaN or inf marks the run diverged at that step, with the loss before it as its last
    finite one: the figures a read after every step gave. The steps after it in the same epoch have run
    (on weights that are no longer finite) and are counted as run; the run stops at the epoch's end."""
    values = mean_of(torch.stack(losses)).tolist() if losses else []
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), len(values))
    if bad < len(values):
        state.status, state.diverged_at = "diverged", first + bad + 1
    if bad:
        state.last_finite = values[bad - 1]
    # summed in step order from 0.0, as the per-step reads were: the same float
    return sum(values[:bad], 0.0) / bad if bad else None


def device_batches(ctx: RunContext, state: RunState, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
    """Each step's (inputs, targets, indices in the training split), this replica's slice of each global batch:
    inputs and targets on the device, indices on the CPU (a loss-shaping objective moves them to its memory); with
    ``device_data`` the same batches from the split held on the device (``suite.data.DeviceData``). Every
    replica draws the whole batch's augmentation from the run's generator and keeps its slice: the same examples and
    draws as one process, whatever the number of processes. Streamed from disk (``suite.streaming``): a
    seed per example from that generator, its random resized crop and flip in the loader's workers."""
    cfg, mine, train = ctx.config.train, ctx.replica_slice(), ctx.train_split
    if ctx.on_device is not None:  # the same batches and draws, from images already on the device
        for x, y, idx in ctx.on_device.epoch(batches, state.aug_gen, mine):
            yield to_device(x, ctx.device, cfg), y, idx
        return
    if not streamed(train.images):
        for idx in batches:
            x = to_device(ctx.augment(train.images[idx], state.aug_gen)[mine], ctx.device, cfg)
            yield x, train.labels[idx][mine].to(ctx.device, non_blocking=True), idx[mine]
        return
    seeds = [torch.randint(0, 2**62, (len(idx),), generator=state.aug_gen)[mine] for idx in batches]
    images = train.images.train_batches([idx[mine] for idx in batches], seeds, cfg.loader_workers,
                                        pin=ctx.device.type == "cuda")
    for idx, x in zip(batches, images):
        yield ctx.augment.normalise(to_device(x, ctx.device, cfg)), train.labels[idx][mine].to(ctx.device), idx[mine]


def evaluate_epoch(ctx: RunContext, state: RunState, epoch: int, trained: dict[str, Any]) -> dict[str, Any]:
    """The epoch's row: where training stands and the loss and accuracy on what the run is scored on (the
    test set: ``test_loss``, ``test_acc``; a validation split: ``val_loss``, ``val_acc``)."""
    loss, acc = evaluate(state.model, ctx.eval_split, ctx.augment, ctx.config.train, ctx.device)
    on = scored_on(ctx.config.train)
    return {"epoch": epoch, "step": state.step, "epochs_done": state.step / ctx.steps_per_epoch,
            "train_loss": trained["train_loss"], f"{on}_loss": loss, f"{on}_acc": acc,
            "train_seconds": trained["train_seconds"], "lr": state.optimizer.param_groups[0]["lr"]}


def save_checkpoint(state: RunState, path: Path, run_id: str) -> None:
    t0 = time.perf_counter()
    state.saving["count"] += 1  # the saved state counts the save it is in
    store.save_checkpoint(path, {"run_id": run_id, **state.state_dict()})
    state.saving["seconds"] += time.perf_counter() - t0


def make_record(ctx: RunContext, state: RunState) -> dict[str, Any]:
    info, config = ctx.info, ctx.config
    return {
        "schema": SCHEMA,
        "run_id": config.run_id,
        "config": config.as_dict(),
        "references": list(config.references),
        # what the profile said (its resolved content's sha256) and which files said it: not the run's identity
        "profile": config.source.as_record() if config.source is not None else None,
        "optimizer": {"name": info.name, "description": info.description, "origin": info.provenance,
                      "passes_per_step": info.passes_per_step,
                      "hparams": _jsonable(state.optimizer.defaults)},
        "data": _data_record(ctx),
        "env": ctx.env,
        "started_at": state.started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": state.wall_seconds(),
        "resumed_after_epochs": state.resumed,
        "metrics": metrics.measure(metrics.Finished(ctx, state)),
        "epochs": state.epochs,
        **({"distributed": _distributed_record(ctx)} if ctx.world.distributed else {}),
    }


def _distributed_record(ctx: RunContext) -> dict[str, Any]:
    """How the processes shared the run (a one-process record has no such entry)."""
    import torch.distributed as dist

    return {"world_size": ctx.world.size, "per_replica_batch": ctx.config.train.batch_size // ctx.world.size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "ascent": "per replica: the first pass of a two-pass optimizer is not all-reduced",
            "batchnorm": "per replica: each normalises its slice; rank 0's running statistics are broadcast "
                         "before every forward and are the ones kept",
            "masks": "broadcast from rank 0 whenever they change"}


def _data_record(ctx: RunContext) -> dict[str, Any]:
    """The data set as described by its loader, with the sizes of the (sub)sets the run used (with a validation
    split: its size, and no test size, as the test set was not used)."""
    data = ctx.dataset.describe()
    data["train_available"], data["test_available"] = data.pop("train_size"), data.pop("test_size")
    return {**data, "train_size": len(ctx.train_split), f"{scored_on(ctx.config.train)}_size": len(ctx.eval_split)}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's resolved hyper-parameters that a record can hold (numbers, strings, flags, None)."""
    return {k: v for k, v in values.items() if v is None or isinstance(v, (bool, int, float, str))}


def run(config: RunConfig, dataset: Dataset, progress: bool = True, checkpoint: Path | None = None,
        on_checkpoint: Callable[[], None] | None = None, weights: Path | None = None,
        world: World = ONE_PROCESS) -> dict[str, Any]:
    """Train one configuration and return its record (not yet written); with ``weights``, the final
    model's state is saved there (``store.save_weights``).

    With ``checkpoint``, the run saves its state there after every epoch but the last (atomically)
    and, if the file exists when it starts, resumes from it. ``on_checkpoint`` is called after each
    save (the sweep refreshes the run's lease there). Under torchrun (``world``) every process calls this with
    the same arguments; rank 0 alone saves checkpoints and weights."""
    ctx, state = fit(config, dataset, progress, checkpoint, on_checkpoint, world)
    if weights is not None and world.main:
        store.save_weights(weights, config.run_id, state.model)
    return make_record(ctx, state)


def fit(config: RunConfig, dataset: Dataset, progress: bool = True, checkpoint: Path | None = None,
          on_checkpoint: Callable[[], None] | None = None, world: World = ONE_PROCESS) -> tuple[RunContext, RunState]:
    """The run's epochs, from its checkpoint if there is one; its context and final state."""
    ctx = context(config, dataset, world)
    # every rank reads the checkpoint before the first collective (DistributedDataParallel's construction),
    # so rank 0 cannot have replaced it yet
    saved = store.load_checkpoint(checkpoint, config.run_id) if checkpoint is not None else None
    # probes (if any) run before the seed is set: they touch no run state; a resumed run keeps its plan
    state = RunState(ctx, saved["plan"] if saved else plan_budget(config, dataset, ctx.steps_per_epoch))
    if saved:
        state.load_state_dict(saved)
    state.model.train()
    n_epochs = math.ceil(state.plan["steps"] / ctx.steps_per_epoch)
    for epoch in range(len(state.epochs) + 1, n_epochs + 1):
        trained = train_epoch(ctx, state, epoch, n_epochs, progress and world.main)
        state.epochs.append(evaluate_epoch(ctx, state, epoch, trained))
        if state.status != "finished":
            break
        if checkpoint is not None and epoch < n_epochs and world.main:
            save_checkpoint(state, checkpoint, config.run_id)
            if on_checkpoint is not None:
                on_checkpoint()
    return ctx, state
