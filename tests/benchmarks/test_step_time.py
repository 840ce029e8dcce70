"""pytest-benchmark: one optimizer step of every registered optimizer, ResNet-8, batch 128, CPU.

    tox -e test -- tests/benchmarks --benchmark-enable --benchmark-group-by=param:model

Ratios between rows of one run are what to quote (the machines are shared and noisy). In the default
test run (--benchmark-disable) each body runs once, as a test that the step works at full size.
"""

from __future__ import annotations

import pytest
import torch

from baselines.core import ModelClosure
from suite import registry
from suite.models import build_model


@pytest.mark.parametrize("model", ["resnet8"])
@pytest.mark.parametrize("name", registry.names())
def test_step(benchmark, name, model):
    torch.manual_seed(0)
    net = build_model(model, 10).to(memory_format=torch.channels_last)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    inputs = {"model": net, "total_steps": 1000, "steps_per_epoch": 100, "train_size": 128}
    opt = registry.get(name).build(net.parameters(), inputs, lr=0.05, momentum=0.9, weight_decay=5e-4)
    objective = getattr(opt, "objective", None)  # SAF, MESA: as the harness builds their closure
    closure = ModelClosure(net, x, y, indices=torch.arange(128) if objective is not None else None,
                           objective=objective)
    for _ in range(2):  # warm-up, outside the measurement
        opt.step(closure)
    loss = benchmark.pedantic(opt.step, args=(closure,), rounds=10, iterations=1)
    assert torch.isfinite(loss)
