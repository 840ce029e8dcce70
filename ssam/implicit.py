"""Implicit sparse perturbation: during SSAM's first pass, every masked Conv2d/Linear propagates its
input-gradient through the masked weight, ``dX = dY (W * M)^T``, while its forward output and its own
weight-gradient ``dW = X^T dY`` stay exact. Layers below a sparse layer therefore see the gradient of
a sparsified network, and the perturbation is computed from it.

``MaskedBackward(model, masks)`` is a context manager: inside it the modules' ``forward`` is swapped
for the masked-backward one; outside, the model is untouched. Usable from any training loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def _as(grad_out: torch.Tensor, *saved: torch.Tensor) -> list[torch.Tensor]:
    """The saved tensors in the gradient's dtype: under autocast the forward ran in bfloat16 on float32
    weights, and the backward computes in bfloat16 as autocast's own would (autograd casts each returned
    gradient back to its input's dtype). Without autocast nothing changes."""
    return [t.to(grad_out.dtype) for t in saved]


class _MaskedConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mask, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight, mask)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mask = _as(grad_out, *ctx.saved_tensors)
        stride, padding, dilation, groups, has_bias = ctx.conf
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        # weight-gradient does not depend on the weight, so one call with W*M gives the exact dW
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_out, x, weight * mask, [weight.shape[0]] if has_bias else None,
            stride, padding, dilation, False, [0, 0], groups, needs,
        )
        return gx, gw, gb, None, None, None, None, None


class _MaskedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mask):
        ctx.save_for_backward(x, weight, mask)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mask = _as(grad_out, *ctx.saved_tensors)
        rows = grad_out.reshape(-1, grad_out.shape[-1])
        gx = grad_out @ (weight * mask) if ctx.needs_input_grad[0] else None
        gw = rows.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def _conv_forward(module: nn.Conv2d, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise ValueError(f"implicit form supports Conv2d with numeric zero padding, not {module}")
    return lambda x: _MaskedConv2d.apply(x, module.weight, module.bias, mask.to(module.weight.dtype),
                                         module.stride, module.padding, module.dilation, module.groups)


def _linear_forward(module: nn.Linear, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: _MaskedLinear.apply(x, module.weight, module.bias, mask.to(module.weight.dtype))


def masked_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]


class MaskedBackward:
    """``with MaskedBackward(model, mask_of): loss = closure()`` — the forward and the backward both
    run inside (the forward records the masked layers); ``mask_of(weight)`` gives the weight's mask
    (or None to leave that layer dense)."""

    def __init__(self, model: nn.Module, mask_of: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        self.model, self.mask_of = model, mask_of
        self._swapped: list[nn.Module] = []

    def __enter__(self) -> MaskedBackward:
        for module in masked_layers(self.model):
            mask = self.mask_of(module.weight)
            if mask is None:
                continue
            make = _conv_forward if isinstance(module, nn.Conv2d) else _linear_forward
            module.forward = make(module, mask)  # instance attribute shadows the class's forward
            self._swapped.append(module)
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self._swapped:
            del module.forward
        self._swapped.clear()
