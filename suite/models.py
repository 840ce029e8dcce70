"""Models by name: CIFAR ResNets (He et al. 2016) for CPU profiles, CIFAR ResNet-18 and
WideResNet-28-10 for GPU profiles, airbench94's small fast network (``FastNet``) for the gpu-fast profile, and any
timm model as ``timm:NAME``.

Every model takes the data set's channel count for its stem (``in_channels``, timm's ``in_chans``), so
grayscale data sets train without being copied to three channels. The stem is still created first:
for ``in_channels=3`` the same seed gives the same weights as before the argument existed."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """3x3-3x3 residual block; a 1x1 convolution projects the shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: a 3x3 stem, then stages of BasicBlocks, global pooling, linear."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class WideBlock(nn.Module):
    """Pre-activation wide block (Zagoruyko & Komodakis 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, c_in = [], widths[0]
        for i, c_out in enumerate(widths[1:]):
            for j in range(n):
                layers.append(WideBlock(c_in, c_out, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers, nn.BatchNorm2d(c_in), nn.ReLU())
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class ShiftNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1 and whose shift is learned, stored divided by ``scale``: a step of size lr on
    the stored value moves the shift by scale**2 * lr, so one learning rate for every parameter gives the shifts
    scale**2 times the others' (with weight decay, the same relative decay), as a separate parameter group would."""

    def __init__(self, channels: int, momentum: float, scale: float) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum, affine=False)
        self.shift = nn.Parameter(torch.zeros(channels))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + (self.scale * self.shift).view(1, -1, 1, 1)


def _identity_start(conv: nn.Conv2d) -> nn.Conv2d:
    """Its first in_channels filters pass their input channel through (torch's dirac init): the rest stay random."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: conv.in_channels])
    return conv


class FastGroup(nn.Module):
    """conv 3x3, max-pool 2, norm, GELU, conv 3x3, norm, GELU."""

    def __init__(self, c_in: int, c_out: int, momentum: float, shift_scale: float) -> None:
        super().__init__()
        self.conv1 = _identity_start(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
        self.norm1 = ShiftNorm(c_out, momentum, shift_scale)
        self.conv2 = _identity_start(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False))
        self.norm2 = ShiftNorm(c_out, momentum, shift_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """The small fast network of airbench94 (Jordan 2024, arXiv 2404.00498), written from its description: a 2x2
    stem convolution with bias (2 * 4 * in_channels filters), GELU, three groups of widths 64, 256, 256, a 3x3
    max-pool down to 1x1, a linear layer without bias, logits scaled by 1/9. BatchNorm: eps 1e-12, running
    statistics moved by 0.4 a step (airbench's 0.6 is the old statistics' share), scale fixed at 1, shift learned
    at 64 times the learning rate (``ShiftNorm``, scale 8). Airbench initialises its stem from the whitening of
    training patches and freezes it; here the stem is an ordinary trainable convolution (a model is built from
    (classes, channels) alone, without data): see docs/gpu-fast.md."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, int, int] = (64, 256, 256),
                 momentum: float = 0.4, shift_scale: float = 8.0, logit_scale: float = 1 / 9) -> None:
        super().__init__()
        stem = 2 * in_channels * 2 * 2
        self.stem = nn.Conv2d(in_channels, stem, 2, padding=0, bias=True)
        groups, c_in = [], stem
        for c_out in widths:
            groups.append(FastGroup(c_in, c_out, momentum, shift_scale))
            c_in = c_out
        self.groups = nn.Sequential(*groups)
        self.fc = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.stem(x)))
        x = F.adaptive_max_pool2d(x, 1)  # 3x3 left at 32x32 input: airbench's max-pool of 3
        return self.logit_scale * self.fc(torch.flatten(x, 1))


def _cifar_resnet(n: int) -> Callable[[int, int], nn.Module]:
    return lambda k, c: CifarResNet([n, n, n], [16, 32, 64], k, c)


MODELS: dict[str, Callable[[int, int], nn.Module]] = {  # (num_classes, in_channels) -> model
    "resnet8": _cifar_resnet(1),
    "resnet20": _cifar_resnet(3),
    "resnet32": _cifar_resnet(5),
    "resnet56": _cifar_resnet(9),
    "resnet18": lambda k, c: CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], k, c),
    "wrn28_10": lambda k, c: WideResNet(28, 10, k, c),
    "airbench94": lambda k, c: FastNet(k, c),  # the gpu-fast profile's network (docs/gpu-fast.md)
    # no BatchNorm: with it, processes that each normalise their slice compute another function than one
    # process does; without it a torchrun run can be checked against one process, step for step (tests)
    "tiny-nobn": lambda k, c: nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                            nn.Flatten(), nn.Linear(8, k)),
}


def known_models() -> str:
    return ", ".join([*MODELS, "timm:<name>"])


def check_model_name(name: str) -> None:
    if name in MODELS:
        return
    if name.startswith("timm:"):
        import timm

        if timm.is_model(name[5:]):
            return
    raise ValueError(f"unknown model {name!r}; known: {known_models()}")


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Weights come from torch's global RNG: seed it first for the same initial weights."""
    check_model_name(name)
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False, num_classes=num_classes, in_chans=in_channels)
    return MODELS[name](num_classes, in_channels)
