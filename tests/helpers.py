"""Tiny models and batches shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from baselines.core import ModelClosure


class TinyNet(nn.Module):
    """Conv + BatchNorm + linear: small, but has every kind of parameter the optimizers meet."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2, bias=False)  # reduction 3*2*2 = 12 and fc's 36: N:M with m=4 fits
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


# The checkout these tests belong to: its results/, README and docs are found from here, never from the suite's
# own location (under tox the suite is an installed wheel in site-packages, where no results/ is).
REPO = Path(__file__).resolve().parent.parent

# Set, with OMP_NUM_THREADS, where tests/conftest.py gave a pytest-xdist worker its share of the cores.
SHARE = "SUITE_TEST_THREAD_SHARE"


def machine_threads_env() -> dict[str, str]:
    """The environment for a subprocess that must run with the threads a user's process would have (a
    published record's, to reproduce it bit for bit), not the share of an xdist worker."""
    env = dict(os.environ)
    if env.pop(SHARE, None) is not None:
        env.pop("OMP_NUM_THREADS", None)
    return env


def toy_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 4, 4, generator=g) * 0.5 + y.float().view(-1, 1, 1, 1)
    return x, y


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet()


def closure_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ModelClosure:
    return ModelClosure(model, x, y)


# The training examples a test's batches number (SAF's memory rows): toy batches' indices are 0..n-1 (n <= 64)
TRAIN_SIZE = 64


def shaped(opt: torch.optim.Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **options) -> ModelClosure:
    """The closure a test steps any registered ``opt`` with, as the harness builds it (``suite.build.closure_for``):
    a loss-shaping optimizer's objective (SAF, MESA) with the batch's examples numbered 0..n-1."""
    objective = getattr(opt, "objective", None)
    return ModelClosure(model, x, y, indices=torch.arange(len(y)) if objective is not None else None,
                        objective=objective, **options)


def run_config(name: str, train, seed: int = 0, profile: str = "test", **overrides):
    """A RunConfig as the command line resolves it: the profile's common settings, the registry
    entry's changes, then ``overrides``."""
    from suite import registry
    from suite.config import RunConfig, resolve_hparams

    info = registry.get(name)
    hparams = resolve_hparams(info, train, overrides)
    return RunConfig(profile, info.name, seed, train, tuple(sorted(hparams.items())))


def squash(markdown: str) -> str:
    """A Markdown table without the padding tabulate aligns its columns with."""
    import re

    return re.sub(r" {2,}", " ", markdown)


def interleaved_medians(ways: dict, steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each way (a callable running ``steps`` steps), timed round after round,
    interleaved and rotating which goes first, so that a drift of the machine hits every way alike; each
    way runs once untimed first (warm-up) when more than one round is asked for."""
    import statistics
    import time

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    if rounds > 1:
        for fn in ways.values():
            fn()
    times: dict[str, list[float]] = {w: [] for w in ways}
    order = list(ways)
    for i in range(rounds):
        for w in order[i % len(order):] + order[: i % len(order)]:
            times[w].append(timed(ways[w]) / steps)
    return {w: statistics.median(t) for w, t in times.items()}


def refused_in_one_line(capsys, argv: list[str], message: str, results) -> None:
    """``python -m suite ARGV`` exits 2 with one line on stderr that says ``message``, and writes no
    results directory."""
    from suite.cli import main

    assert main([*argv, "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err
    assert not results.exists()
