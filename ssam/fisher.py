"""Empirical Fisher scores for SSAM-F: sum over N_F single examples of squared gradients of the loss
with the true label (Mi et al. 2023, eq. for SSAM-F).

``fisher_vectorised`` computes every example's gradient in one vectorised pass (``torch.func.vmap``
over ``grad``) on the closure's batch, each example with its own random draws (a Dropout mask per
example, as the loop's batch-of-one forwards draw one each; the two then agree in distribution, not bit
for bit); ``fisher_loop`` is the paper's batch-of-one loop, kept as the
reference the tests compare against. Both treat each example as a batch of one and agree exactly up
to floating-point summation order; neither moves BatchNorm's running statistics.

Under autocast (the closure's ``autocast=``, or a ``torch.autocast`` around the step) the loop's forwards
run as the closure's do, in the lower precision; the vectorised pass always runs in float32 (torch.func's
per-example gradient of BatchNorm cannot mix bfloat16 activations with float32 weights), so its scores are
the same whichever way a bfloat16 loop is written, and the same as without autocast.

BatchNorm in that batch of one (``fisher_bn``):

- ``"batch"`` (the paper's code): each example is normalised by its own statistics over its feature
  map, as a training-mode forward of one example does. Where a map is 1x1 (torchvision's ResNet-18 on
  32x32 images) a channel holds one value and has no variance: that is refused with a line naming
  the layer and the way out, before torch fails deep inside.
- ``"running"``: BatchNorm normalises with its running statistics (as in evaluation), which exists for
  every map size. The scores are then those of the network as evaluated, not as trained on a batch of
  one; early in training, while the running statistics are still near their start, the two differ most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

from baselines.core import BATCH, SUBSET, call_closure, frozen_bn_stats, has_features, unwrapped

FISHER_BN = ("batch", "running")


@contextmanager
def batch_of_one_norms(model: nn.Module, mode: str) -> Iterator[None]:
    """BatchNorm for a pass over single examples: running statistics untouched, and normalised as
    ``mode`` says (see the module's docstring)."""
    norms = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training}
    undo = []
    if mode == "running":
        for m in norms.values():
            m.train(False)
        undo.append(lambda: [m.train(True) for m in norms.values()])
    else:
        for name, m in norms.items():
            undo.append(m.register_forward_pre_hook(_one_value_check(name)).remove)
    try:
        with frozen_bn_stats(model):
            yield
    finally:
        for fn in undo:
            fn()


def _one_value_check(name: str) -> Callable:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        if x.dim() > 1 and x.numel() // x.shape[1] == 1:
            raise ValueError(
                f"SSAM-F's Fisher takes one example at a time, and BatchNorm layer {name!r} then sees one value "
                f"per channel (a {'x'.join(map(str, x.shape[2:])) or '1'} map), which has no batch statistics: "
                "pass fisher_bn='running' to normalise with its running statistics, or use a model whose "
                "feature maps stay larger than 1x1 at this input size")
    return hook


def _check(closure: Callable, n: int, *features: str) -> int:
    if not has_features(closure, *features):
        raise RuntimeError(f"the Fisher mask needs a closure with the features {', '.join(features)} "
                           "(use baselines.ModelClosure(model, inputs, targets))")
    batch = int(closure.targets.shape[0])
    if n > batch:
        raise ValueError(f"fisher_samples={n} is larger than the batch ({batch})")
    return batch


def fisher_vectorised(closure: Callable, params: list[torch.Tensor], n: int, bn: str = "batch",
                      chunk_size: int = 16) -> list[torch.Tensor]:
    """The first ``n`` examples of the closure's batch, each a batch of one, in chunks of ``chunk_size``."""
    from torch.func import functional_call, grad, vmap

    _check(closure, n, BATCH)
    model, loss_fn = unwrapped(closure.model), closure.loss_fn  # per-example gradients: no all-reduce
    weights = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_of_one(w: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (w, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0)).sum()

    subset = torch.arange(n)
    x, y = closure.inputs[subset], closure.targets[subset]
    # in float32 under a caller's torch.autocast too: torch.func's per-example gradient of BatchNorm fails on
    # bfloat16 activations with float32 weights, and the closure's own autocast= never reached this pass
    with batch_of_one_norms(model, bn), _without_autocast(x.device):
        # randomness="different": each example draws its own Dropout mask, as each batch-of-one forward
        # of the loop does; the score is then that of one random thinned network per example
        per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0), chunk_size=chunk_size,
                           randomness="different")(weights, x, y)
    closure.count(int(y.shape[0]), backward=True)
    by_name = dict(model.named_parameters())
    squares = {by_name[name]: g.square().sum(0) for name, g in per_example.items()}
    return [squares[p] if p in squares else torch.zeros_like(p) for p in params]


def _without_autocast(device: torch.device) -> AbstractContextManager:
    available = getattr(torch.amp, "is_autocast_available", lambda _: True)  # torch >= 2.4 has it
    return torch.autocast(device.type, enabled=False) if available(device.type) else nullcontext()


def fisher_loop(closure: Callable, params: list[torch.Tensor], n: int, bn: str = "batch") -> list[torch.Tensor]:
    _check(closure, n, SUBSET, BATCH)
    total = [torch.zeros_like(p) for p in params]
    with batch_of_one_norms(closure.model, bn):
        for i in range(n):
            call_closure(closure, subset=torch.tensor([i]), sync=False)  # each replica's own scores
            for acc, p in zip(total, params):
                if p.grad is not None:
                    acc.add_(p.grad.square())
    return total


FISHER = {"vmap": fisher_vectorised, "loop": fisher_loop}
