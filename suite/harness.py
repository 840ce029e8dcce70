"""The one training loop. Every optimizer is stepped as ``loss = opt.step(closure)`` and nothing else
(``optimizer_step``; under fp16 a one-pass optimizer such as SGD takes torch's GradScaler path instead:
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
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from baselines.core import Meter, ModelClosure
from suite import budget, metrics, registry, store
from suite.config import RunConfig, TrainConfig, resolve_hparams
from suite.data import Augment, Dataset, Split, class_balanced_subset, epoch_batches, with_label_noise
from suite.distributed import ONE_PROCESS, World, mean_of
from suite.measure import FlopMeter, PeakMemory, StepClock, environment, sync
from suite.models import build_model
from suite.store import SCHEMA
from suite.streaming import streamed

SUBSET_SEED = 0  # the data subset is the same for every run of a profile, whatever its seed
PROBE_FLOP_STEPS = 16  # at most this many steps are FLOP-counted to price a step (see budget.amortised)
PROBE_TIME_STEPS = 5  # timed steps (after one discarded) to price a step in seconds
PROBE_COMPILE_STEPS = 4  # throwaway steps before a compiled probe or run is timed (compilation, CUDA graphs)
RECOMPILE_LIMIT = 64  # dynamo's recompilations of the model's forward per process before a compiled run fails
_COSTS: dict[tuple, float] = {}  # probed cost per step, per configuration without its seed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(name)


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """Independent random streams per purpose (0: batch order, 1: augmentation, 2: probes, 3: examples an
    optimizer samples)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def cosine(total_steps: int) -> Callable[[int], float]:
    """The closed form of a cosine decay to 0 (torch's ``CosineAnnealingLR`` computes it recursively,
    which drifts from this in the last bits; ``LambdaLR`` with the closed form keeps runs bit-identical)."""
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps))


def subsets(dataset: Dataset, train: TrainConfig) -> tuple[Split, Split]:
    train_split = class_balanced_subset(dataset.train, train.train_subset, SUBSET_SEED)
    return (
        with_label_noise(train_split, train.label_noise, dataset.num_classes, SUBSET_SEED),
        class_balanced_subset(dataset.test, train.test_subset, SUBSET_SEED),
    )


def to_device(x: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return x.to(device, non_blocking=True).contiguous(memory_format=fmt)


def make_model(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> nn.Module:
    """Weights come from torch's global RNG: the caller seeds it."""
    model = build_model(cfg.model, dataset.num_classes, in_channels=dataset.channels).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def compiled(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """What the timed steps' closures call: ``model`` itself, or ``torch.compile(model, mode=cfg.compile)``,
    which shares its parameters and buffers (the optimizer steps them as before). Dynamo keys its compiled
    code on the model's class, so a second model of the same class (the next probe, the next run in the
    process) reuses the first one's kernels; "reduce-overhead" records its CUDA graphs anew for a model whose
    parameters live elsewhere."""
    if cfg.compile == "none":
        return model
    # A method that changes what dynamo guards on at every step (ESAM's random choice of trainable tensors)
    # recompiles every step; past torch's limit of 8 dynamo would run the model eagerly without a word, and
    # the time would be reported as compiled. The limit is raised to 64 and hitting it is an error.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(model, mode=cfg.compile)


def make_augment(cfg: TrainConfig, dataset: Dataset) -> Augment:
    return Augment(dataset.mean, dataset.std, cfg.crop_padding, cfg.flip, cfg.cutout, cfg.cutout_p)


def build(config: RunConfig, dataset: Dataset, train_split: Split, device: torch.device, seed: int,
          total_steps: int | None = None,
          sample_gen: torch.Generator | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of ``config`` — the one way a run, a probe, the sweep's construction check
    and the cost command build them: torch's RNG seeded with ``seed``, the model built, then the optimizer
    from its registry entry with the profile's hyper-parameters and the inputs the harness hands it
    (``registry.INPUTS``; SSAM-F's training examples are drawn from ``sample_gen``, by default the seed's
    stream 3). ``total_steps`` defaults to the profile's epochs of ``train_split``."""
    cfg = config.train
    torch.manual_seed(seed)
    model = make_model(cfg, dataset, device)
    sample = example_sampler(train_split, make_augment(cfg, dataset), cfg, device,
                             sample_gen if sample_gen is not None else seeded_generator(seed, 3))
    steps_per_epoch = max(1, len(train_split) // cfg.batch_size)
    optimizer = registry.get(config.optimizer).build(
        model.parameters(), inputs_for(model, steps_per_epoch, cfg, seed, total_steps, sample=sample),
        **dict(config.hparams))
    return model, optimizer


def inputs_for(model: nn.Module, steps_per_epoch: int, cfg: TrainConfig, seed: int,
               total_steps: int | None = None, sample: Callable | None = None) -> dict[str, Any]:
    """What the harness may hand an optimizer at construction (``registry.INPUTS``)."""
    return {"model": model, "total_steps": total_steps or steps_per_epoch * cfg.epochs_for(steps_per_epoch),
            "steps_per_epoch": steps_per_epoch, "seed": seed, "sample_examples": sample}


def example_sampler(split: Split, augment: Augment, cfg: TrainConfig, device: torch.device,
                    gen: torch.Generator) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``n -> (inputs, targets)``: n distinct random training examples with the run's augmentation, drawn
    from ``gen`` (its own stream, so batch order and augmentation are untouched). SSAM-F's
    ``fisher_data="train"`` scores such a draw, as the paper's code does."""
    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(split), generator=gen)[:n]
        return to_device(augment(split.images[idx], gen), device, cfg), split.labels[idx].to(device)
    return sample


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def closure_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                meter: Meter | None = None, scaler: torch.amp.GradScaler | None = None) -> ModelClosure:
    """The closure every optimizer is stepped with: the profile's micro-batches and precision (fp16: the
    run's gradient scaler scales each backward)."""
    return ModelClosure(model, x, y, meter=meter, accumulate=cfg.accumulate, autocast=AUTOCAST[cfg.precision],
                        scaler=scaler)


def autocast(cfg: TrainConfig, device: torch.device):
    """The forward's precision outside the closure (evaluation): the run's own."""
    dtype = AUTOCAST[cfg.precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def optimizer_step(optimizer: torch.optim.Optimizer, closure: ModelClosure,
                   scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """``loss = optimizer.step(closure)``; under fp16 with the scaler around it: a two-pass optimizer unscales
    each of its passes itself (``unscales_itself``); a one-pass optimizer (SGD) runs the closure, then
    ``scaler.step`` (torch's GradScaler takes no closure: it must unscale between backward and step). Then
    ``scaler.update()`` lowers the scale after an overflow, or grows it."""
    if scaler is None:
        return optimizer.step(closure)
    if getattr(optimizer, "unscales_itself", False):
        loss = optimizer.step(closure)
    else:
        loss = closure()
        scaler.step(optimizer)
    scaler.update()
    return loss


def flop_window(info: registry.OptimizerInfo, cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> int:
    return max(cfg.flop_steps, info.flop_window(optimizer) if info.flop_window else 1)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, augment: Augment, cfg: TrainConfig,
             device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) on ``split``, in eval mode; the model is left in training mode."""
    model.eval()
    sums, size = [], cfg.eval_batch_size
    chunks = (split.images.batches(size, cfg.loader_workers) if streamed(split.images)  # read by workers
              else (split.images[i : i + size] for i in range(0, len(split), size)))
    for i, images in zip(range(0, len(split), size), chunks):
        x = augment.normalise(to_device(images, device, cfg))
        y = split.labels[i : i + size].to(device)
        with autocast(cfg, device):
            out = model(x)
        # kept on the device and read once below: a read per batch would wait for each batch's forward
        sums.append(torch.stack([torch.nn.functional.cross_entropy(out.float(), y, reduction="sum"),
                                 (out.argmax(1) == y).sum().float()]))
    model.train()
    # summed on the host in batch order, in double precision, as the per-batch reads did (the same figures)
    per_batch = torch.stack(sums).tolist() if sums else []
    loss_sum, correct = sum(b[0] for b in per_batch), sum(int(b[1]) for b in per_batch)
    return loss_sum / len(split), correct / len(split)


# ----- budgets: a step's cost, probed before the run ------------------------------------------------------
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
        _probe_steps(config, dataset, "time", 1 if config.train.compile == "none" else PROBE_COMPILE_STEPS)
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
        steps = min(window, PROBE_FLOP_STEPS) if kind == "flops" else max(PROBE_TIME_STEPS + 1,
                                                                          min(window, PROBE_FLOP_STEPS))
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


# ----- one run: its context, its state, its epochs, its record ---------------------------------------------
@dataclass
class RunContext:
    """What a run reads and never changes."""

    config: RunConfig
    info: registry.OptimizerInfo
    dataset: Dataset
    device: torch.device
    train_split: Split  # the profile's (sub)set of the training images, with its label noise
    test_split: Split
    augment: Augment
    steps_per_epoch: int
    env: dict[str, Any]
    world: World = ONE_PROCESS  # the processes this run is one of (torchrun); each trains a slice of every batch

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
    train, test = subsets(dataset, cfg)
    check_batch(cfg, train)
    check_replicas(cfg, world.size)
    # the environment before training: the commit that starts the run is the one that ran, checked for the
    # profile files it was configured from too
    env = environment(device, config.source.files if config.source is not None else ())
    return RunContext(config, registry.get(config.optimizer), dataset, device, train, test,
                      make_augment(cfg, dataset), len(train) // cfg.batch_size, env, world)


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
        schedule = cosine(plan["steps"]) if cfg.schedule == "cosine" else (lambda t: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.order_gen, self.aug_gen = seeded_generator(seed, 0), seeded_generator(seed, 1)
        self.untimed = min(flop_window(ctx.info, cfg, self.optimizer), max(plan["steps"] - 1, 1))
        self.fast = compiled(self.replica, cfg)  # the timed steps' (the FLOP-counted ones run the module itself)
        # compiled steps left untimed after every start or resume: compilation and CUDA-graph recording
        self.cold = 0 if cfg.compile == "none" else min(PROBE_COMPILE_STEPS, max(plan["steps"] - 1 - self.untimed, 0))
        self.passes, self.clock, self.flops = Meter(), StepClock(ctx.device), FlopMeter(ctx.world.size)
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
    cfg, seconds, first, losses = ctx.config.train, 0.0, state.step, []
    batches = epoch_batches(len(ctx.train_split), cfg.batch_size, state.order_gen)[: state.plan["steps"] - state.step]
    bar = tqdm(batches, desc=f"{ctx.config.optimizer} seed {ctx.config.seed} epoch {epoch}/{n_epochs}",
               unit="step", leave=False, disable=None if progress else True)
    meter = Meter()
    on_device = device_batches(ctx, state, batches)
    for _ in bar:
        waited = time.perf_counter()
        x, y = next(on_device)
        state.data_seconds += time.perf_counter() - waited
        compiled_step = state.step >= state.untimed  # past the FLOP-counted steps: the compiled model, if any
        timed = compiled_step and not state.cold
        closure = closure_for(state.fast if compiled_step else state.replica, x, y, cfg, meter=meter,
                              scaler=state.scaler)
        meter.reset()
        state.clock.start()
        with state.flops.counting(state.step < state.untimed):
            loss = optimizer_step(state.optimizer, closure, state.scaler)
        seconds += state.clock.stop(timed=timed)
        if compiled_step and state.cold:
            state.cold -= 1
        state.scheduler.step()
        state.passes += meter
        state.step += 1
        losses.append(loss.detach().float())  # not read here: a read would wait for the step to finish
    bar.close()
    return {"train_loss": read_losses(state, first, losses), "train_seconds": seconds}


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
    """Each step's (inputs, targets) on the device, this replica's slice of each global batch. Every replica
    draws the whole batch's augmentation from the run's generator and keeps its slice: the same examples and
    draws as one process, whatever the number of processes. Streamed from disk (``suite.streaming``): a
    seed per example from that generator, its random resized crop and flip in the loader's workers."""
    cfg, mine, train = ctx.config.train, ctx.replica_slice(), ctx.train_split
    if not streamed(train.images):
        for idx in batches:
            x = to_device(ctx.augment(train.images[idx], state.aug_gen)[mine], ctx.device, cfg)
            yield x, train.labels[idx][mine].to(ctx.device, non_blocking=True)
        return
    seeds = [torch.randint(0, 2**62, (len(idx),), generator=state.aug_gen)[mine] for idx in batches]
    images = train.images.train_batches([idx[mine] for idx in batches], seeds, cfg.loader_workers,
                                        pin=ctx.device.type == "cuda")
    for idx, x in zip(batches, images):
        yield ctx.augment.normalise(to_device(x, ctx.device, cfg)), train.labels[idx][mine].to(ctx.device)


def evaluate_epoch(ctx: RunContext, state: RunState, epoch: int, trained: dict[str, Any]) -> dict[str, Any]:
    """The epoch's row: where training stands and the test loss and accuracy."""
    test_loss, test_acc = evaluate(state.model, ctx.test_split, ctx.augment, ctx.config.train, ctx.device)
    return {"epoch": epoch, "step": state.step, "epochs_done": state.step / ctx.steps_per_epoch,
            "train_loss": trained["train_loss"], "test_loss": test_loss, "test_acc": test_acc,
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
    """The data set as described by its loader, with the sizes of the (sub)sets the run used."""
    data = ctx.dataset.describe()
    data["train_available"], data["test_available"] = data.pop("train_size"), data.pop("test_size")
    return {**data, "train_size": len(ctx.train_split), "test_size": len(ctx.test_split)}


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
    save (the CLI refreshes its claim there). Under torchrun (``world``) every process calls this with
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
