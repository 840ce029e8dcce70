"""The closure every optimizer is stepped with, and the meter that counts what it ran.

A closure follows the torch convention (zero grads, forward, backward, return the loss) and, when it
is a ``ModelClosure``, also takes the keyword options the two-pass family needs. Optimizers ask for
an option through :func:`call_closure`, which drops options a plain user closure does not declare, so
SAM works in anybody's training loop and measures the same way in the suite's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> per-sample losses


def per_sample_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


@dataclass
class Meter:
    """Counts passes and samples; the harness reads and resets it once per optimizer step."""

    forward_passes: int = 0
    backward_passes: int = 0
    forward_samples: int = 0
    backward_samples: int = 0

    def reset(self) -> None:
        self.forward_passes = self.backward_passes = self.forward_samples = self.backward_samples = 0

    def count(self, samples: int, backward: bool) -> None:
        self.forward_passes += 1
        self.forward_samples += samples
        if backward:
            self.backward_passes += 1
            self.backward_samples += samples


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
    """Re-evaluates ``model`` on one batch. Call options:

    - ``subset``: indices into the batch to use (data selection, per-example passes);
    - ``backward=False``: forward only, no graph;
    - ``per_sample=True``: return the per-sample losses (detached) instead of their mean;
    - ``freeze_bn=True``: BatchNorm running statistics are not updated by this pass.
    """

    features = frozenset({"subset", "backward", "per_sample", "freeze_bn", "fisher"})

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: LossFn = per_sample_cross_entropy,
        meter: Meter | None = None,
    ) -> None:
        self.model, self.inputs, self.targets, self.loss_fn = model, inputs, targets, loss_fn
        self.meter = meter if meter is not None else Meter()

    def __call__(
        self,
        subset: torch.Tensor | None = None,
        backward: bool = True,
        per_sample: bool = False,
        freeze_bn: bool = False,
    ) -> torch.Tensor:
        x, y = (self.inputs, self.targets) if subset is None else (self.inputs[subset], self.targets[subset])
        n = int(y.shape[0])
        with frozen_bn_stats(self.model) if freeze_bn else nullcontext(), torch.set_grad_enabled(backward):
            if backward:
                self.model.zero_grad(set_to_none=True)
            losses = self.loss_fn(self.model(x), y)
            loss = losses.mean()
            if backward:
                loss.backward()
        self.meter.count(n, backward)
        return losses.detach() if per_sample else loss.detach()

    def fisher(self, subset: torch.Tensor, chunk_size: int = 16) -> dict[torch.Tensor, torch.Tensor]:
        """Empirical Fisher diagonal: the sum over ``subset`` of squared per-example gradients.

        Each example is a batch of one with BatchNorm running statistics frozen, the same as calling
        ``self(subset=[i], freeze_bn=True)`` once per example, but in one vectorised pass
        (``torch.func.vmap`` over ``grad``). Leaves ``.grad`` and the statistics untouched.
        """
        from torch.func import functional_call, grad, vmap

        params = {name: p.detach() for name, p in self.model.named_parameters() if p.requires_grad}
        buffers = dict(self.model.named_buffers())

        def loss_of_one(weights: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = functional_call(self.model, (weights, buffers), (x.unsqueeze(0),))
            return self.loss_fn(out, y.unsqueeze(0)).sum()

        x, y = self.inputs[subset], self.targets[subset]
        with frozen_bn_stats(self.model):
            per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, x, y)
        self.meter.count(int(y.shape[0]), backward=True)
        by_name = dict(self.model.named_parameters())
        return {by_name[name]: g.square().sum(0) for name, g in per_example.items()}


def call_closure(closure: Callable[..., torch.Tensor], **options: object) -> torch.Tensor:
    """Call ``closure`` with those ``options`` it declares in ``closure.features``; drop the rest."""
    features = getattr(closure, "features", frozenset())
    return closure(**{k: v for k, v in options.items() if k in features})
