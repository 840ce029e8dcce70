"""The closure every optimizer is stepped with, the names of its options, and the meter that counts
what it ran.

A closure follows the torch convention (zero grads, forward, backward, return the loss). A
``ModelClosure`` also offers the features below, which the two-pass family asks for through
:func:`call_closure`; a plain user closure declares none, so SAM works in anybody's training loop and
is measured the same way in the suite's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ----- the closure's features: defined here once, used by name everywhere -----------------------------
SUBSET = "subset"  # call option: indices of the batch to use (data selection, per-example passes)
BACKWARD = "backward"  # call option: False runs a forward only, without a graph
PER_SAMPLE = "per_sample"  # call option: return the per-sample losses (detached) instead of their mean
FREEZE_BN = "freeze_bn"  # call option: this pass leaves BatchNorm running statistics untouched
BATCH = "batch"  # attributes: model, inputs, targets, loss_fn, and count() for passes run outside a call
SCALER = "scaler"  # attribute: the torch.amp.GradScaler its backward scales the loss by (None: unscaled)
# call option: False keeps this pass's gradients on this replica (DistributedDataParallel's no_sync): the
# ascent pass of a two-pass optimizer, whose perturbation is per replica (SAM's m-sharpness)
SYNC = "sync"
# attributes: ``indices`` (each example's index in the training set) and ``objective`` (the loss-shaping method's
# ``Objective``, or None): the closure evaluates that objective in place of its ``loss_fn`` (SAF, MESA)
OBJECTIVE = "objective"
FEATURES = frozenset({SUBSET, BACKWARD, PER_SAMPLE, FREEZE_BN, BATCH, SCALER, SYNC, OBJECTIVE})
OPTIONS = FEATURES - {BATCH, SCALER, OBJECTIVE}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> per-sample losses


def per_sample_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


class Objective:
    """A training loss that reads more than a batch's outputs and targets: which examples they are (their
    indices in the training set) and their inputs. The declared extension of the closure contract for
    loss-shaping methods (SAF's and MESA's trajectory losses, ``baselines/saf.py``): an optimizer that has one
    exposes it as ``optimizer.objective``; the training loop hands it, with each batch's example indices, to
    the closure (``ModelClosure(model, x, y, indices=idx, objective=optimizer.objective)``), which calls it in
    place of its ``loss_fn`` on every pass, sub-batch and micro-batch alike. A new loss-shaping method is one
    file: an ``Objective`` and the optimizer that owns it; the loop does not change.

    ``__call__`` returns the per-sample losses whose mean is the training loss. ``extra_forwards``: forward passes
    of the same examples the objective runs itself per call (MESA's teacher: 1), which the closure's meter
    counts, so FLOPs and passes per step stay true."""

    extra_forwards = 0

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, inputs: torch.Tensor,
                 loss_fn: LossFn) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class Meter:
    """Counts passes and samples. The harness resets one per optimizer step and adds it to a total."""

    forward_passes: int = 0
    backward_passes: int = 0
    forward_samples: int = 0
    backward_samples: int = 0

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)

    def count(self, samples: int, backward: bool) -> None:
        self.forward_passes += 1
        self.forward_samples += samples
        if backward:
            self.backward_passes += 1
            self.backward_samples += samples

    def __iadd__(self, other: Meter) -> Meter:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Normalise with batch statistics but leave running statistics (and their counter) untouched.

    With ``track_running_stats`` off in training mode, BatchNorm uses the batch's statistics and
    skips the running update, so the perturbed pass of SAM-like methods does not move them.
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


class ModelClosure:
    """Re-evaluates ``model`` on one batch; takes every option in ``OPTIONS`` and exposes its batch.

    ``accumulate = K`` runs each call over K micro-batches (the batch, or the subset asked for, split in
    order into K near-equal parts), each backward weighted by its share, so that the gradient is that of
    the whole batch's mean loss, up to floating point: every optimizer, in every pass, sees the same
    gradient as with one pass, with a K-th of the activations in memory. BatchNorm then normalises each
    micro-batch by its own statistics (and moves its running statistics once per micro-batch): a network
    with BatchNorm is not the same function under accumulation. ``autocast``: a dtype (``torch.bfloat16``,
    ``torch.float16``) for the forward passes (``torch.autocast`` on the inputs' device); the backward runs
    outside it. ``scaler``: a ``torch.amp.GradScaler`` whose scale multiplies the loss before each
    backward (fp16); a two-pass optimizer unscales each pass itself (``TwoPassOptimizer.step``). With ``model``
    a ``DistributedDataParallel``, a call's backward all-reduces the gradients once, after its last
    micro-batch; ``sync=False`` keeps them on this replica."""

    features = FEATURES

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: LossFn = per_sample_cross_entropy,
        meter: Meter | None = None,
        accumulate: int = 1,
        autocast: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
        indices: torch.Tensor | None = None,
        objective: Objective | None = None,
    ) -> None:
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"accumulate must be an integer >= 1, got {accumulate!r}")
        if objective is not None and (indices is None or indices.shape != targets.shape[:1]):
            raise ValueError(f"{type(objective).__name__} needs each example's index in the training set: pass "
                             f"indices=, one per target ({tuple(targets.shape[:1])}), got "
                             f"{None if indices is None else tuple(indices.shape)}")
        self.model, self.inputs, self.targets, self.loss_fn = model, inputs, targets, loss_fn
        self.meter = meter if meter is not None else Meter()
        self.accumulate, self.autocast, self.scaler = accumulate, autocast, scaler
        self.indices, self.objective = indices, objective

    def __call__(
        self,
        subset: torch.Tensor | None = None,
        backward: bool = True,
        per_sample: bool = False,
        freeze_bn: bool = False,
        sync: bool = True,
    ) -> torch.Tensor:
        x, y, idx = self.inputs, self.targets, self.indices
        if subset is not None:
            x, y, idx = x[subset], y[subset], None if idx is None else idx[subset.to(idx.device)]
        n = int(y.shape[0])
        with frozen_bn_stats(self.model) if freeze_bn else nullcontext(), torch.set_grad_enabled(backward):
            if backward:
                self.model.zero_grad(set_to_none=True)
            split = (lambda t: t.tensor_split(self.accumulate)) if self.accumulate > 1 else (lambda t: (t,))
            parts = [(xs, ys, ids) for xs, ys, ids in zip(split(x), split(y), split(idx) if idx is not None
                                                           else (None,) * len(split(y))) if ys.shape[0]]
            pieces = []
            for i, (xs, ys, ids) in enumerate(parts):
                reduce = backward and sync and i == len(parts) - 1  # one all-reduce, after the last micro-batch
                with nullcontext() if reduce or not _replicated(self.model) else self.model.no_sync():
                    pieces.append(self._part(xs, ys, ids, n, backward, per_sample))
        self.count(n, backward)
        for _ in range(self.objective.extra_forwards if self.objective is not None else 0):
            self.count(n, False)
        if len(pieces) == 1:
            return pieces[0]
        return torch.cat(pieces) if per_sample else torch.stack(pieces).sum()

    def _part(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None, n: int, backward: bool,
              per_sample: bool) -> torch.Tensor:
        """One micro-batch: its per-sample losses (detached) where asked, else its share of the batch's mean."""
        k = int(y.shape[0])
        with torch.autocast(x.device.type, dtype=self.autocast) if self.autocast else nullcontext():
            outputs = self.model(x)
            losses = self.loss_fn(outputs, y) if self.objective is None else \
                self.objective(outputs, y, idx, x, self.loss_fn)
        if per_sample and losses.shape != (k,):  # a reduced loss has no per-sample values to select from
            raise ValueError(f"per_sample=True needs loss_fn to return one loss per sample (shape ({k},), "
                             f"e.g. cross_entropy(..., reduction='none')), got shape {tuple(losses.shape)}")
        share = losses.float().mean()
        if k != n:
            share = share * (k / n)  # its part of the whole batch's mean
        if backward:
            (self.scaler.scale(share) if self.scaler is not None else share).backward()
        return losses.detach().float() if per_sample else share.detach()

    def count(self, samples: int, backward: bool) -> None:
        """Meter a pass an optimizer ran on this batch by other means (e.g. a vectorised per-example pass)."""
        self.meter.count(samples, backward)


def several_processes() -> bool:
    """Whether this process is one of several in a torch.distributed group (torchrun): where the two-pass
    family must agree across replicas (SSAM's masks, fp16 overflows)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _inner(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (its ``_orig_mod``), else the model itself."""
    return getattr(model, "_orig_mod", model)


def _replicated(model: nn.Module) -> bool:
    return isinstance(_inner(model), nn.parallel.DistributedDataParallel)


def unwrapped(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` or a ``torch.compile`` wrapper holds (the model itself
    otherwise): for passes that must not communicate, such as functional per-example gradients, and that run
    eagerly (a compiled model would recompile for them inside a timed step)."""
    inner = _inner(model)
    return inner.module if isinstance(inner, nn.parallel.DistributedDataParallel) else inner


def has_features(closure: Callable[..., torch.Tensor], *names: str) -> bool:
    return set(names) <= getattr(closure, "features", frozenset())


def call_closure(closure: Callable[..., torch.Tensor], **options: object) -> torch.Tensor:
    """Call ``closure`` with those ``options`` it declares in ``closure.features``; drop the rest."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(f"unknown closure options {sorted(unknown)}; known: {sorted(OPTIONS)}")
    features = getattr(closure, "features", frozenset())
    return closure(**{k: v for k, v in options.items() if k in features})
