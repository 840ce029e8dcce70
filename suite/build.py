"""What a run is built from: its device, its (sub)sets of the data, its model (compiled or not), its optimizer
from the registry, the closure every optimizer is stepped with, and evaluation. The loop (``suite.harness``),
the step-cost probe (``suite.probe``), the sweep's construction check and the sharpness command all build
through these functions, so a run, a probe and a measurement see the same model, data and precision.

Random streams: ``seeded_generator(seed, stream)`` gives each purpose its own generator (batch order,
augmentation, probes, examples an optimizer samples); torch's global RNG is seeded only to build the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from baselines.core import Meter, ModelClosure
from suite import registry
from suite.config import RunConfig, TrainConfig
from suite.data import Augment, Dataset, Split, class_balanced_subset, validation_split, with_label_noise
from suite.models import build_model
from suite.streaming import streamed

SUBSET_SEED = 0  # the data subset is the same for every run of a profile, whatever its seed
VALIDATION_SEED = 1  # so is the validation split carved from it: the same for every seed, method and trial
COMPILE_STEPS = 4  # throwaway steps before a compiled probe or run is timed (compilation, CUDA graphs)
RECOMPILE_LIMIT = 64  # dynamo's recompilations of the model's forward per process before a compiled run fails


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


def warmup_linear(total_steps: int, warmup: float = 0.23, start: float = 0.2,
                  end: float = 0.07) -> Callable[[int], float]:
    """airbench94's schedule (its legacy/airbench94.py ``get_lr``): the LR factor rises linearly from ``start`` to 1
    over the first ``int(warmup * total_steps)`` steps, then falls linearly to ``end`` at the last."""
    up = int(total_steps * warmup)

    def factor(t: int) -> float:
        if t < up:
            return start + (1.0 - start) * t / up
        return 1.0 + (end - 1.0) * (min(t, total_steps) - up) / max(total_steps - up, 1)
    return factor


def schedule_for(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The LR factor per step of ``cfg.schedule`` over a run of ``total_steps``."""
    if cfg.schedule == "cosine":
        return cosine(total_steps)
    if cfg.schedule == "warmup-linear":
        return warmup_linear(total_steps)
    return lambda t: 1.0


def subsets(dataset: Dataset, train: TrainConfig) -> tuple[Split, Split]:
    """(what the run trains on, what it is scored on). The training (sub)set, then its label noise, then —
    with ``validation_fraction`` — the validation split carved from it (``suite.data.validation_split``): so
    the examples a run with validation trains on are some of those a run without it trains on, with the same
    noisy labels, and the validation labels are as noisy as a practitioner's would be. Scored on: that
    validation split, or without one the test (sub)set; a run with validation never touches the test set."""
    train_split = class_balanced_subset(dataset.train, train.train_subset, SUBSET_SEED)
    noisy = with_label_noise(train_split, train.label_noise, dataset.num_classes, SUBSET_SEED)
    if train.validation_fraction > 0:
        return validation_split(noisy, train.validation_fraction, VALIDATION_SEED)
    return noisy, class_balanced_subset(dataset.test, train.test_subset, SUBSET_SEED)


def scored_on(train: TrainConfig) -> str:
    """What a run is scored on, as its metrics are named: "val" (a validation split) or "test"."""
    return "val" if train.validation_fraction > 0 else "test"


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
        model.parameters(), inputs_for(model, steps_per_epoch, cfg, seed, total_steps, sample=sample,
                                       train_size=len(train_split)),
        **dict(config.hparams))
    return model, optimizer


def inputs_for(model: nn.Module, steps_per_epoch: int, cfg: TrainConfig, seed: int,
               total_steps: int | None = None, sample: Callable | None = None,
               train_size: int | None = None) -> dict[str, Any]:
    """What the harness may hand an optimizer at construction (``registry.INPUTS``); ``train_size``: the
    training examples the run's indices number (SAF's memory)."""
    return {"model": model, "total_steps": total_steps or steps_per_epoch * cfg.epochs_for(steps_per_epoch),
            "steps_per_epoch": steps_per_epoch, "seed": seed, "sample_examples": sample, "train_size": train_size}


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
                meter: Meter | None = None, scaler: torch.amp.GradScaler | None = None,
                indices: torch.Tensor | None = None, optimizer: torch.optim.Optimizer | None = None) -> ModelClosure:
    """The closure every optimizer is stepped with: the profile's micro-batches and precision (fp16: the
    run's gradient scaler scales each backward); for an ``optimizer`` that shapes the loss (its ``objective``:
    SAF, MESA), that objective with ``indices``, each example's index in the training split."""
    objective = getattr(optimizer, "objective", None)
    return ModelClosure(model, x, y, meter=meter, accumulate=cfg.accumulate, autocast=AUTOCAST[cfg.precision],
                        scaler=scaler, indices=indices if objective is not None else None, objective=objective)


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

